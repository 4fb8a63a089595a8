//! `stash run-backup` as a process, stopped the way Kubernetes stops its
//! container (issue 20): SIGTERM while restic holds the repository's lock;
//! the container's other processes are killed once `stash` has exited. The
//! sidecar must interrupt restic so that it removes its lock, report its
//! host Failed within the stop budget, and leave a repository that the next
//! restore and backup use at once.

use stash_testkit as support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use stash::api::{BackupSession, HostBackupPhase};
use stash::backup::ResticSettings;
use stash::backup::restic::resolve_binary;
use stash::runtime::stop::STOP_BUDGET;
use support::container::Container;
use support::locks::lock_files;
use support::restic::{Env, NS, StoppedProcessSetup};
use support::{Cluster, Identity};

fn restic_binary() -> PathBuf {
    resolve_binary(Path::new("restic"), std::env::var_os("PATH").as_deref())
        .expect("restic must be installed (apt-get install -y restic)")
}

const SESSION: &str = "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupsessions/stopped";

/// The `stash` binary under test; `STASH_TEST_BINARY` runs these tests
/// against another build (e.g. an older commit's, to see them fail there).
fn stash_binary() -> PathBuf {
    std::env::var_os("STASH_TEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_stash")))
}

/// What the kubelet allows between SIGTERM and SIGKILL by default.
const TERMINATION_GRACE: Duration = Duration::from_secs(30);

/// Any lock left behind fails a command at once.
fn settings(env: &Env) -> ResticSettings {
    env.unforgiving_settings()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_run_backup_mid_backup_leaves_no_lock_and_reports_the_host() {
    sigterm_of_run_backup_during("backup").await;
}

/// Issue 20 as seen on a cluster: the session has Succeeded, the sidecar's
/// `restic check` holds the exclusive lock, the pod is stopped; a restore
/// right after must not find the repository locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_run_backup_during_its_check_leaves_no_exclusive_lock() {
    sigterm_of_run_backup_during("check").await;
}

/// Runs `stash run-backup` on a session, SIGTERMs it while restic's
/// `subcommand` holds its lock, and checks what the stop must leave.
async fn sigterm_of_run_backup_during(subcommand: &str) {
    let env = Env::new();
    let StoppedProcessSetup {
        config,
        repository,
        cluster,
        served: _served,
        kubeconfig,
        blocking,
    } = env.stopped_process_setup(subcommand).await;
    let args: Vec<String> = vec![
        "run-backup".into(),
        "--invoker-name=pause-backup".into(),
        "--target-kind=Deployment".into(),
        "--target-name=stash-demo".into(),
        format!("--secret-dir={}", env.p("secret").display()),
        "--enable-cache=false".into(),
        format!("--namespace={NS}"),
        "--pod-name=stash-demo-7c9d6b8f4d-4xk2p".into(),
        format!("--restic-binary={}", blocking.path.display()),
        format!("--scratch-dir={}", env.p("tmp").display()),
        "--metrics-listen=off".into(),
    ];
    let sidecar = Container::start(&stash_binary(), &args, &kubeconfig);

    let session = json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
        "metadata": {"name": "stopped", "namespace": NS},
        "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "pause-backup"}}
    });
    cluster.create(Identity::admin(), session).unwrap();
    // restic runs `subcommand` under its lock, held there.
    blocking.until_blocked().await;

    let (status, took) = sidecar.stop(TERMINATION_GRACE).await;
    blocking.unblock();
    assert!(
        status.is_some(),
        "run-backup exited by itself after SIGTERM"
    );
    assert!(
        took < STOP_BUDGET + Duration::from_secs(2),
        "within the stop budget: {took:?}"
    );
    assert_eq!(
        lock_files(&env.p("repo")),
        Vec::<PathBuf>::new(),
        "restic removed its lock before the container went"
    );
    let session: BackupSession = cluster.typed(SESSION);
    let host = &session.status.as_ref().unwrap().stats[0];
    let events = cluster.list("/api/v1/namespaces/demo/events", None);
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    if subcommand == "check" {
        // The host had reported before `check`; the check is left to a later session.
        assert_eq!(host.phase, Some(HostBackupPhase::Succeeded), "{host:?}");
        assert_eq!(reasons, ["Host Backup Succeeded"]);
        let repository = cluster
            .object("/apis/stash.appscode.com/v1alpha1/namespaces/demo/repositories/gcs-repo");
        assert!(
            repository["status"].get("lastIntegrityCheckTime").is_none(),
            "{}",
            repository["status"]
        );
    } else {
        assert_eq!(host.phase, Some(HostBackupPhase::Failed), "{host:?}");
        assert_eq!(
            host.error.as_deref(),
            Some(
                format!("interrupted: the pod is stopping (SIGTERM) during restic {subcommand}")
                    .as_str()
            )
        );
        assert!(
            events
                .iter()
                .any(|e: &Value| e["reason"] == "Host Backup Failed"
                    && e["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("interrupted")),
            "{events:?}"
        );
    }

    // The next restore (which runs no `restic unlock` first) and backup go on at once.
    env.restore_then_backup_succeed(&config, &repository, &settings(&env))
        .await;
}

/// With no session in hand, both the leader and a replica still waiting for
/// the Lease stop at once on SIGTERM, and exit 0 (the leader releases its
/// Lease on the way out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_replicas_stop_at_once_on_sigterm() {
    let env = Env::new();
    let cluster = Cluster::new();
    cluster.seed(env.config(false));
    cluster.seed(env.repository());
    // One server per replica, so that the request log tells them apart.
    let (first, second) = (
        cluster.serve_http(Identity::sidecar(NS, "first")).await,
        cluster.serve_http(Identity::sidecar(NS, "second")).await,
    );
    for d in ["etc/first", "etc/second"] {
        std::fs::create_dir_all(env.p(d)).unwrap();
    }
    let kubeconfigs = [
        first.kubeconfig(&env.p("etc/first")),
        second.kubeconfig(&env.p("etc/second")),
    ];
    let replica = |pod: &str, kubeconfig: &Path| {
        let args: Vec<String> = vec![
            "run-backup".into(),
            "--invoker-name=pause-backup".into(),
            "--target-kind=Deployment".into(),
            "--target-name=stash-demo".into(),
            format!("--secret-dir={}", env.p("secret").display()),
            format!("--namespace={NS}"),
            format!("--pod-name={pod}"),
            format!("--restic-binary={}", restic_binary().display()),
            format!("--scratch-dir={}", env.p("tmp").display()),
            "--metrics-listen=off".into(),
        ];
        Container::start(&stash_binary(), &args, kubeconfig)
    };
    let pods = ["stash-demo-7c9d6b8f4d-aaaaa", "stash-demo-7c9d6b8f4d-bbbbb"];
    let mut a = replica(pods[0], &kubeconfigs[0]);
    let lease =
        "/apis/coordination.k8s.io/v1/namespaces/demo/leases/lock-deployment-stash-demo-backup";
    cluster
        .wait_until("the first replica leads", |c| {
            c.get(lease)
                .is_some_and(|l| l["spec"]["holderIdentity"] == pods[0])
        })
        .await;
    let b = replica(pods[1], &kubeconfigs[1]);
    // The second replica is up and waiting for the Lease (it has read it).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !cluster
        .log()
        .iter()
        .any(|r| r.path.starts_with(lease) && r.user.ends_with(":second"))
    {
        assert!(a.running(), "the leader is still running");
        assert!(
            std::time::Instant::now() < deadline,
            "the second replica never competed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, replica) in [("waiting replica", b), ("leader", a)] {
        let (status, took) = replica.stop(TERMINATION_GRACE).await;
        let status =
            status.unwrap_or_else(|| panic!("the {name} was killed after the grace period"));
        assert!(
            status.success(),
            "the {name} exits 0 on SIGTERM: {status:?}"
        );
        // Well before the stop budget (25 s), whose end would exit 0 too.
        assert!(
            took < Duration::from_secs(20),
            "the {name} stopped at once: {took:?}"
        );
    }
}
