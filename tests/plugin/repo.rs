//! `unlock`, `check` and `download` with this machine's restic on a local
//! repository in a temp dir (its mountPath exists here, so the plugin
//! reaches it); the Secret's password is read from the fake cluster.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use stash_testkit::restic::{Env, PASSWORD, local_repository};
use stash_testkit::{Cluster, Identity};

use super::{Captured, REPOS, kubectl_stash, kubectl_stash_as};

/// The cluster with Repository `gcs-repo` on `env`'s repo dir and its Secret.
fn cluster(env: &Env) -> Cluster {
    let c = Cluster::new();
    c.seed(local_repository(&env.p("repo")));
    c.seed(secret(PASSWORD));
    c
}

fn secret(password: &str) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(password);
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "gcs-secret", "namespace": "demo"},
           "data": {"RESTIC_PASSWORD": b64}})
}

fn restic(env: &Env) -> Command {
    let mut cmd = Command::new("restic");
    cmd.env_clear()
        .env("RESTIC_REPOSITORY", env.p("repo"))
        .env("RESTIC_PASSWORD", PASSWORD)
        .env("HOME", env.p("tmp"))
        .arg("--no-cache");
    cmd
}

fn run(env: &Env, args: &[&str]) -> String {
    let out = restic(env).args(args).output().expect("restic runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An initialized repository with one snapshot of `source/data` by `host-0`.
fn backed_up(env: &Env) {
    run(env, &["init"]);
    let data = env.p("source/data").display().to_string();
    run(env, &["backup", "--host", "host-0", &data]);
}

/// A restic process holding a (shared) lock until it is killed:
/// `backup --stdin` waits for input that never comes.
fn lock_holder(env: &Env) -> Child {
    let before = lock_files(env);
    let child = restic(env)
        .args([
            "backup",
            "--stdin",
            "--stdin-filename",
            "x",
            "--host",
            "holder",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("restic starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lock_files(env) <= before {
        assert!(std::time::Instant::now() < deadline, "restic took no lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn lock_files(env: &Env) -> usize {
    std::fs::read_dir(env.p("repo/locks")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn unlock_removes_stale_locks_and_keeps_live_ones() {
    let env = Env::new();
    backed_up(&env);
    let c = cluster(&env);
    let ran = kubectl_stash(&c, "unlock -n demo gcs-repo").await;
    assert!(
        ran.ok()
            .ends_with("repository.stash.appscode.com/gcs-repo has no locks\n"),
        "{}",
        ran.out
    );
    assert!(
        ran.out
            .starts_with("note: repository \"gcs-repo\" has a local backend; using "),
        "{}",
        ran.out
    );

    // A restic killed mid-run on this host: its lock is stale.
    let mut dead = lock_holder(&env);
    dead.kill().unwrap();
    dead.wait().unwrap();
    // A restic running now: its lock is not.
    let mut live = lock_holder(&env);
    let ran = kubectl_stash(&c, "unlock -n demo gcs-repo").await;
    let out = ran.ok();
    assert!(out.contains("removed stale lock "), "{out}");
    assert!(out.contains("kept lock "), "{out}");
    assert!(
        out.ends_with("repository.stash.appscode.com/gcs-repo: 1 stale lock(s) removed, 1 kept\n"),
        "{out}"
    );
    assert_eq!(lock_files(&env), 1);

    // --remove-all asks first; no is no.
    let ran = kubectl_stash_as(
        &c,
        Identity::admin(),
        "unlock -n demo gcs-repo --remove-all",
        "n\n",
        Captured::default(),
    )
    .await;
    assert_eq!(ran.error(), "aborted: no lock removed");
    assert!(
        ran.out
            .contains("Remove all 1 lock(s) of repository \"gcs-repo\""),
        "{}",
        ran.out
    );
    assert_eq!(lock_files(&env), 1);
    let ran = kubectl_stash_as(
        &c,
        Identity::admin(),
        "unlock -n demo gcs-repo --remove-all",
        "y\n",
        Captured::default(),
    )
    .await;
    assert!(
        ran.ok()
            .ends_with("repository.stash.appscode.com/gcs-repo: 1 lock(s) removed\n"),
        "{}",
        ran.out
    );
    assert_eq!(lock_files(&env), 0);
    live.kill().unwrap();
    live.wait().unwrap();
}

#[tokio::test]
async fn check_reports_integrity_in_the_repository_status() {
    let env = Env::new();
    backed_up(&env);
    let c = cluster(&env);
    let ran = kubectl_stash(&c, "check -n demo gcs-repo").await;
    assert!(
        ran.ok().ends_with("repository.stash.appscode.com/gcs-repo: no errors were found (status.integrity: true)\n"),
        "{}",
        ran.out
    );
    let status = &c.object(&format!("{REPOS}/gcs-repo"))["status"];
    assert_eq!(status["integrity"], json!(true));

    // A truncated pack file: the data is damaged.
    let pack = walk(&env.p("repo/data"))
        .into_iter()
        .next()
        .expect("a pack file");
    let f = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
    f.set_len(8).unwrap();
    let ran = kubectl_stash(&c, "check -n demo gcs-repo").await;
    let err = ran.error();
    assert!(
        err.starts_with("repository \"gcs-repo\" contains errors (status.integrity: false): "),
        "{err}"
    );
    assert_eq!(
        c.object(&format!("{REPOS}/gcs-repo"))["status"]["integrity"],
        json!(false)
    );
}

#[tokio::test]
async fn a_check_that_cannot_run_leaves_integrity_alone() {
    let env = Env::new();
    backed_up(&env);
    let c = cluster(&env);
    c.edit("/api/v1/namespaces/demo/secrets/gcs-secret", |s| {
        *s = secret("wrong")
    });
    let ran = kubectl_stash(&c, "check -n demo gcs-repo").await;
    let err = ran.error();
    assert!(err.contains("wrong password"), "{err}");
    assert!(err.ends_with("status.integrity left as it was"), "{err}");
    assert!(
        c.object(&format!("{REPOS}/gcs-repo"))
            .get("status")
            .is_none()
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

#[tokio::test]
async fn download_restores_the_hosts_latest_snapshot_here() {
    let env = Env::new();
    backed_up(&env);
    let c = cluster(&env);
    let dest = env.p("restored");
    let ran = kubectl_stash(
        &c,
        &format!("download -n demo gcs-repo --destination {}", dest.display()),
    )
    .await;
    let out = ran.ok();
    assert!(out.contains("restored snapshot "), "{out}");
    assert!(out.contains("(host host-0, "), "{out}");
    let data = env.p("source/data").display().to_string();
    let restored = dest.join(data.trim_start_matches('/')).join("data.txt");
    assert_eq!(std::fs::read_to_string(&restored).unwrap(), "sample_data\n");

    // By snapshot id; and a host the repository does not hold.
    let id = run(&env, &["snapshots", "--json", "--no-lock"]);
    let id: Vec<Value> = serde_json::from_str(&id).unwrap();
    let id = id[0]["short_id"].as_str().unwrap().to_string();
    let other = env.p("by-id");
    let ran = kubectl_stash(
        &c,
        &format!(
            "download -n demo gcs-repo --destination {} --snapshots {id}",
            other.display()
        ),
    )
    .await;
    assert!(
        ran.ok().contains(&format!("restored snapshot {id} into ")),
        "{}",
        ran.out
    );
    assert!(
        other
            .join(data.trim_start_matches('/'))
            .join("data.txt")
            .is_file()
    );
    let ran = kubectl_stash(
        &c,
        &format!(
            "download -n demo gcs-repo --destination {} --host host-9",
            other.display()
        ),
    )
    .await;
    assert_eq!(
        ran.error(),
        "repository \"gcs-repo\": the repository holds no snapshot of host \"host-9\" (hosts: host-0)"
    );
}

#[tokio::test]
async fn unreachable_local_backend_missing_restic_and_missing_secret_are_one_line() {
    let env = Env::new();
    let c = cluster(&env);
    c.seed(json!({
        "apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
        "metadata": {"name": "pod-only", "namespace": "demo"},
        "spec": {"backend": {"local": {"mountPath": "/safe/data", "hostPath": {"path": "/data/stash"}},
                             "storageSecretName": "gcs-secret"}}
    }));
    let ran = kubectl_stash(&c, "unlock -n demo pod-only").await;
    assert_eq!(
        ran.error(),
        "repository \"pod-only\" has a local backend (/safe/data), reachable only from pods that mount its volume: run restic in one, e.g. kubectl exec -n demo <pod with the stash sidecar> -c stash -- restic -r /safe/data --password-file /etc/stash/repository/secret/RESTIC_PASSWORD unlock"
    );
    let ran = kubectl_stash(
        &c,
        "check -n demo gcs-repo --restic-binary /nonexistent/restic",
    )
    .await;
    assert!(
        ran.error()
            .starts_with("restic not found (/nonexistent/restic): install restic"),
        "{}",
        ran.error()
    );
    c.remove("/api/v1/namespaces/demo/secrets/gcs-secret");
    let ran = kubectl_stash(&c, "check -n demo gcs-repo").await;
    assert_eq!(
        ran.error(),
        "secret \"gcs-secret\" not found in namespace \"demo\""
    );
    let ran = kubectl_stash(&c, "check -n demo nope").await;
    assert_eq!(
        ran.error(),
        "repository \"nope\" not found in namespace \"demo\""
    );
}

#[tokio::test]
async fn a_check_whose_result_cannot_be_written_says_both() {
    let env = Env::new();
    backed_up(&env);
    let c = cluster(&env);
    let message = "repositories.stash.appscode.com \"gcs-repo\" is forbidden: User \"jane\" cannot patch resource \"repositories/status\" in API group \"stash.appscode.com\" in the namespace \"demo\"";
    c.refuse_writes(
        &format!("{REPOS}/gcs-repo"),
        stash_testkit::Status::new(403, "Forbidden", message),
    );
    let ran = kubectl_stash(&c, "check -n demo gcs-repo").await;
    assert_eq!(
        ran.error(),
        format!(
            "restic check: no errors were found; but no permission to patch repositories.stash.appscode.com/status \"gcs-repo\" in namespace \"demo\": {message}"
        )
    );
}
