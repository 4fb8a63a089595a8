//! The sidecar (`Sidecar::watch`, a kube-runtime Controller) and the
//! BackupSession controller of `stash serve`, both running for real against
//! the fake cluster of `tests/support`, whose watches deliver every
//! intermediate state late, in bursts, and relist on demand; restic is real
//! and backs up into a local repository.
//!
//! What a user checks: each BackupSession ends `Succeeded` with one restic
//! snapshot, whatever the watches deliver; a sidecar killed in the middle of
//! a backup leaves a session that ends `Failed` ("interrupted"), is not run
//! again, and the next session backs up as usual.

use stash_testkit as support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use stash::api::{BackupSession, BackupSessionPhase, HostBackupPhase};
use stash::backup::controller::Sidecar;
use stash::backup::session::INTERRUPTED;
use stash::reconcile::backup_session;
use support::restic::{Env, NS};
use support::{Cluster, Identity};

const SESSIONS: &str = "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupsessions";
/// How long one restic session may take on a loaded 2-core machine.
const BACKUP_WAIT: Duration = Duration::from_secs(60);

/// The guide's BackupConfiguration and Repository, pointed at the temp dir.
fn seed(env: &Env, cluster: &Cluster) {
    cluster.seed(env.config(false));
    cluster.seed(env.repository());
}

/// The injected sidecar's session loop, as `run-backup` builds it.
fn sidecar(env: &Env, cluster: &Cluster) -> Arc<Sidecar> {
    Arc::new(env.sidecar(cluster.client(Identity::sidecar(NS, "default")), None))
}

/// The guide's instant BackupSession, as `kubectl create` sends it (the
/// mutating webhook adds the invoker label).
fn session(name: &str) -> Value {
    json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "pause-backup"}}
    })
}

fn path(name: &str) -> String {
    format!("{SESSIONS}/{name}")
}

fn read(cluster: &Cluster, name: &str) -> BackupSession {
    cluster.typed(&path(name))
}

/// Waits until session `name` has a finished phase, and returns it.
async fn finished(cluster: &Cluster, name: &str) -> BackupSession {
    let done = || {
        cluster
            .get(&path(name))
            .and_then(|o| serde_json::from_value::<BackupSession>(o).ok())
            .filter(|s| s.phase().is_finished())
    };
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    let waited = tokio::time::timeout(BACKUP_WAIT, async {
        loop {
            if let Some(s) = done() {
                return s;
            }
            ticks.tick().await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| {
        panic!(
            "BackupSession {name} did not finish: {}",
            cluster.get(&path(name)).unwrap_or(Value::Null)
        )
    })
}

/// Every stats entry of `host-0` the sidecar wrote into `name`, in order.
fn host_writes(cluster: &Cluster, name: &str) -> Vec<String> {
    cluster
        .log()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path == format!("{}/status", path(name)))
        .filter(|r| r.code < 300)
        .filter_map(|r| {
            r.body["status"]["stats"]
                .as_array()?
                .iter()
                .find(|h| h["hostname"] == "host-0")
                .and_then(|h| h["phase"].as_str())
                .map(String::from)
        })
        .collect()
}

struct Running {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _feed_signal: stash::runtime::drain::Signal,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Every watch [`start`] opens: the feed's three, the BackupSession
/// controller's own and the sidecar's.
const WATCHES: usize = 5;

/// Starts the reconciler's side (the feed of `stash serve`, whose
/// BackupConfiguration watch triggers the BackupSession controller, and that
/// controller) and the sidecar.
fn start(cluster: &Cluster, env: &Env) -> (Running, tokio::task::JoinHandle<()>) {
    let client = cluster.client(Identity::reconciler());
    let (feed, feeder) = stash::runtime::feed::new(Arc::default());
    let (signal, drain) = stash::runtime::drain::channel();
    let feeding = tokio::spawn(feeder.run(client.clone(), drain));
    let ctx = Arc::new(backup_session::Context::new(client));
    let reconciler = tokio::spawn(backup_session::run(ctx, feed.configs.clone()));
    let sidecar = start_sidecar(cluster, env);
    (
        Running {
            tasks: vec![feeding, reconciler],
            _feed_signal: signal,
        },
        sidecar,
    )
}

fn start_sidecar(cluster: &Cluster, env: &Env) -> tokio::task::JoinHandle<()> {
    spawn_sidecar(sidecar(env, cluster))
}

fn spawn_sidecar(sidecar: Arc<Sidecar>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = sidecar.watch().await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_watches_back_each_session_up_exactly_once() {
    let env = Env::new();
    let cluster = Cluster::new();
    seed(&env, &cluster);
    // Every event reaches both controllers a while after it was written,
    // as from a loaded API server: the sidecar's queue holds stale states.
    cluster.set_watch_delay(Duration::from_millis(400));
    let (_running, sidecar) = start(&cluster, &env);
    cluster.wait_for_open_watches(WATCHES).await;

    for (i, name) in ["first", "second", "third"].into_iter().enumerate() {
        cluster.create(Identity::admin(), session(name)).unwrap();
        let s = finished(&cluster, name).await;
        assert_eq!(s.phase(), BackupSessionPhase::Succeeded, "{name}: {s:?}");
        let status = s.status.unwrap();
        assert_eq!(status.stats.len(), 1, "{name}");
        assert_eq!(status.stats[0].phase, Some(HostBackupPhase::Succeeded));
        assert_eq!(env.snapshots().len(), i + 1, "one snapshot per session");
        // The claim, then the result: nothing else, nothing twice.
        assert_eq!(host_writes(&cluster, name), ["Running", "Succeeded"]);
    }
    // The stale events still on their way change nothing.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(env.snapshots().len(), 3);
    for name in ["first", "second", "third"] {
        assert_eq!(host_writes(&cluster, name).len(), 2, "{name}");
    }
    assert_eq!(cluster.forbidden_requests(), Vec::<String>::new());
    sidecar.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_and_relists_back_up_once() {
    let env = Env::new();
    let cluster = Cluster::new();
    seed(&env, &cluster);
    let (_running, sidecar) = start(&cluster, &env);
    cluster.wait_for_open_watches(WATCHES).await;

    // Both controllers see the new session only in one burst, together
    // with everything the other wrote in the meantime.
    cluster.hold_watch_events();
    cluster.create(Identity::admin(), session("burst")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.release_watch_events();
    let s = finished(&cluster, "burst").await;
    assert_eq!(s.phase(), BackupSessionPhase::Succeeded, "{s:?}");
    assert_eq!(env.snapshots().len(), 1);

    // A relist hands both the latest state of every session again.
    cluster.force_relist();
    cluster.wait_for_open_watches(WATCHES).await;
    cluster
        .create(Identity::admin(), session("after-relist"))
        .unwrap();
    let s = finished(&cluster, "after-relist").await;
    assert_eq!(s.phase(), BackupSessionPhase::Succeeded, "{s:?}");
    assert_eq!(
        env.snapshots().len(),
        2,
        "the relisted session is not redone"
    );
    assert_eq!(host_writes(&cluster, "burst"), ["Running", "Succeeded"]);
    assert_eq!(
        host_writes(&cluster, "after-relist"),
        ["Running", "Succeeded"]
    );
    sidecar.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_killed_mid_backup_is_reported_interrupted_and_not_rerun() {
    let env = Env::new();
    // Enough data that restic is still at work when the sidecar is killed.
    let big: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(env.p("source/data/big.bin"), &big).unwrap();
    let cluster = Cluster::new();
    seed(&env, &cluster);
    let (_running, sidecar) = start(&cluster, &env);
    cluster.wait_for_open_watches(WATCHES).await;

    cluster
        .create(Identity::admin(), session("killed"))
        .unwrap();
    cluster
        .wait_until("host-0 has claimed the session", |c| {
            host_writes(c, "killed") == ["Running"]
        })
        .await;
    // The container dies: its watch and its restic child go with it.
    sidecar.abort();
    let _ = sidecar.await;
    let snapshots_after_kill = env.snapshots().len();
    assert!(snapshots_after_kill <= 1);

    // The restarted container finds its own claim with no run behind it.
    let restarted = start_sidecar(&cluster, &env);
    let s = finished(&cluster, "killed").await;
    assert_eq!(s.phase(), BackupSessionPhase::Failed, "{s:?}");
    let host = &s.status.as_ref().unwrap().stats[0];
    assert_eq!(host.phase, Some(HostBackupPhase::Failed));
    assert_eq!(host.error.as_deref(), Some(INTERRUPTED));
    assert_eq!(
        env.snapshots().len(),
        snapshots_after_kill,
        "restic was not run again for the interrupted session"
    );
    assert_eq!(host_writes(&cluster, "killed"), ["Running", "Failed"]);

    // The next session backs up as usual.
    cluster.create(Identity::admin(), session("next")).unwrap();
    let s = finished(&cluster, "next").await;
    assert_eq!(s.phase(), BackupSessionPhase::Succeeded, "{s:?}");
    assert_eq!(env.snapshots().len(), snapshots_after_kill + 1);
    let _ = read(&cluster, "next");
    restarted.abort();
}

/// A restic whose `backup` hangs (exec'ed `sleep`, killed with it) while
/// the file `hang` exists in the temp dir; every other command is restic's.
fn hanging_restic(env: &Env) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let which = |b: &str| {
        stash::backup::restic::resolve_binary(
            std::path::Path::new(b),
            std::env::var_os("PATH").as_deref(),
        )
        .unwrap_or_else(|| panic!("{b} on PATH"))
    };
    let script = env.p("restic-hangs");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = backup ] && [ -e {hang} ]; then : > {hung}; exec {sleep} 120; fi\ndone\nexec {restic} \"$@\"\n",
            hang = env.p("hang").display(),
            hung = env.p("hung").display(),
            sleep = which("sleep").display(),
            restic = which("restic").display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_still_running_at_its_deadline_fails_the_session_and_frees_the_sidecar() {
    let env = Env::new();
    let cluster = Cluster::new();
    let mut config = env.config(false);
    config["spec"]["timeOut"] = json!("3s");
    // Keep the failed session when the next one finishes.
    config["spec"]["backupHistoryLimit"] = json!(5);
    cluster.seed(config);
    cluster.seed(env.repository());
    std::fs::write(env.p("hang"), "").unwrap();
    let mut hangs = env.sidecar(cluster.client(Identity::sidecar(NS, "default")), None);
    hangs.settings.binary = hanging_restic(&env);

    let client = cluster.client(Identity::reconciler());
    let (feed, feeder) = stash::runtime::feed::new(Arc::default());
    let (_signal, drain) = stash::runtime::drain::channel();
    let _running = Running {
        tasks: vec![
            tokio::spawn(feeder.run(client.clone(), drain)),
            tokio::spawn(backup_session::run(
                Arc::new(backup_session::Context::new(client)),
                feed.configs.clone(),
            )),
        ],
        _feed_signal: _signal,
    };
    let sidecar = spawn_sidecar(Arc::new(hangs));
    cluster.wait_for_open_watches(WATCHES).await;

    // restic's backup is still at work when the 3 s are up: the controller
    // marks the session Failed at its deadline, restic is stopped.
    cluster.create(Identity::admin(), session("hangs")).unwrap();
    let s = finished(&cluster, "hangs").await;
    assert_eq!(s.phase(), BackupSessionPhase::Failed, "{s:?}");
    let status = s.status.clone().unwrap();
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == "DeadlineExceeded")
        .unwrap_or_else(|| panic!("no DeadlineExceeded condition: {s:?}"));
    assert_eq!(c.status, "True");
    assert!(
        c.message
            .as_deref()
            .unwrap()
            .contains("(timeOut 3s): 1 of 1 hosts had not reported: host-0 still backing up"),
        "{c:?}"
    );
    assert_eq!(status.stats[0].phase, Some(HostBackupPhase::Failed));
    assert_eq!(env.snapshots().len(), 0);

    // The sidecar is free again once restic is stopped (STOP_GRACE later);
    // its late result does not overwrite the verdict, and the next session,
    // with a timeOut that fits, backs up as usual.
    // Only once the stopped run's `restic backup` is the one hanging: on a
    // slow machine the deadline may come while that run is still in `restic
    // init`, and its backup must not find the way clear.
    let hung = env.p("hung");
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while !hung.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the stopped run's restic backup started (and hangs)");
    std::fs::remove_file(env.p("hang")).unwrap();
    cluster
        .patch(
            Identity::admin(),
            "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupconfigurations/pause-backup",
            support::PatchBody::Merge(json!({"spec": {"timeOut": "10m"}})),
        )
        .unwrap();
    cluster.create(Identity::admin(), session("next")).unwrap();
    let next = finished(&cluster, "next").await;
    assert_eq!(next.phase(), BackupSessionPhase::Succeeded, "{next:?}");
    assert_eq!(env.snapshots().len(), 1);
    assert_eq!(
        read(&cluster, "hangs"),
        s,
        "the stopped run wrote nothing more"
    );
    assert_eq!(host_writes(&cluster, "hangs"), ["Running"]);
    assert_eq!(cluster.forbidden_requests(), Vec::<String>::new());
    sidecar.abort();
}
