//! Many configurations applied at once, reconciled by the real controller
//! on the fake cluster's real watches, until it converges: the controller
//! must never conflict with itself. Its reflector cache lags its own writes
//! (the finalizer patch, the status, the CronJob it created each trigger a
//! pass), and a pass on a copy older than what the previous pass wrote used
//! to fail its resourceVersion-guarded writes with 409 (status) or 422 (the
//! finalizer patch's `test`), and log a WARN per retry (issue 19).

use stash_testkit as support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Cluster, Identity, Recorded};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

use super::feed::start_feed;

const NS: &str = "burst";
const N: usize = 50;

fn deployment(i: usize) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": format!("app-{i}"), "namespace": NS},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": format!("app-{i}")}},
                    "template": {"metadata": {"labels": {"app": format!("app-{i}")}},
                                 "spec": {"containers": [{"name": "busybox", "image": "busybox"}]}}}})
}

fn config(i: usize) -> Value {
    json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
           "metadata": {"name": format!("bc-{i}"), "namespace": NS},
           "spec": {"repository": {"name": "repo"}, "schedule": "*/5 * * * *",
                    "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": format!("app-{i}")},
                               "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                               "paths": ["/data"]},
                    "retentionPolicy": {"name": "keep-last-5", "keepLast": 5, "prune": true}}})
}

/// The Repository every configuration uses, and its storage Secret.
fn seed_storage(c: &Cluster) {
    c.seed(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": "repo-secret", "namespace": NS},
                  "data": {"RESTIC_PASSWORD": "Y2hhbmdlaXQ="}}),
    );
    c.seed(
        json!({"apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
                  "metadata": {"name": "repo", "namespace": NS},
                  "spec": {"backend": {"gcs": {"bucket": "b", "prefix": "/p"},
                                       "storageSecretName": "repo-secret"}}}),
    );
}

/// WARN lines logged by stash while the test runs, naming namespace [`NS`]
/// (the one global subscriber of this binary: other tests' lines are left out).
fn warnings() -> &'static Arc<Mutex<Vec<String>>> {
    static LINES: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || Line(sink.clone()))
            .with_filter(LevelFilter::WARN);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        lines
    })
}

/// A writer that appends each formatted line to the shared list.
struct Line(Arc<Mutex<Vec<String>>>);

impl std::io::Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf).trim_end().to_string();
        if text.contains(&format!("{NS}/")) {
            self.0.lock().unwrap().push(text);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn converged(c: &Cluster) -> bool {
    (0..N).all(|i| {
        let Some(bc) = c.get(&format!(
            "/apis/stash.appscode.com/v1beta1/namespaces/{NS}/backupconfigurations/bc-{i}"
        )) else {
            return false;
        };
        let conds = bc["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        ["CronJobCreated", "StashSidecarInjected"].iter().all(|t| {
            conds
                .iter()
                .any(|c| c["type"] == *t && c["status"] == "True")
        })
    })
}

/// The reconciler's requests (watches and lists left out), by outcome.
#[derive(Debug, Default)]
struct Counts {
    requests: usize,
    writes: usize,
    conflicts: usize,
    invalid: usize,
    /// Writes per configuration's own object (finalizer + status).
    own_writes: BTreeMap<String, usize>,
}

fn count(log: &[Recorded]) -> Counts {
    let me = Identity::reconciler().username;
    let mut n = Counts::default();
    for r in log
        .iter()
        .filter(|r| r.user == me && r.path.contains(&format!("/namespaces/{NS}/")))
    {
        let collection = r.method == "GET" && r.path.rsplit('/').nth(1) == Some(NS);
        if r.is_watch() || collection {
            continue;
        }
        n.requests += 1;
        if r.is_write() {
            n.writes += 1;
            if let Some(name) = r.path.split("/backupconfigurations/").nth(1) {
                let name = name.split('/').next().unwrap_or_default().to_string();
                *n.own_writes.entry(name).or_default() += 1;
            }
        }
        n.conflicts += usize::from(r.code == 409);
        n.invalid += usize::from(r.code == 422);
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_new_configurations_converge_without_a_single_conflict() {
    let warned = warnings().clone();
    let c = Cluster::new();
    // Watches a little late, as a loaded API server's are.
    c.set_watch_delay(Duration::from_millis(20));
    seed_storage(&c);
    for i in 0..N {
        c.seed(deployment(i));
    }
    let (feed, _signal) = start_feed(&c).await;
    let mark = c.mark();
    let controller = tokio::spawn(stash::reconcile::backup_configuration::run(
        c.client(Identity::reconciler()),
        // The install's image: what its policies let the CronJob run.
        c.settings().image.clone(),
        c.settings(),
        feed,
    ));
    // $ kubectl apply -f configs/ (all at once)
    for i in 0..N {
        c.create(Identity::admin(), config(i)).expect("admitted");
    }
    c.wait_until("every configuration converged", converged)
        .await;
    // Let every pass the writes triggered run out.
    let mut last = c.mark();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = c.mark();
        if now == last {
            break;
        }
        last = now;
    }
    controller.abort();
    let n = count(&c.log_since(mark));
    eprintln!(
        "{N} configurations: {} requests, {} writes, {} x 409, {} x 422, {} WARN lines",
        n.requests,
        n.writes,
        n.conflicts,
        n.invalid,
        warned.lock().unwrap().len()
    );
    if let Some(first) = warned.lock().unwrap().first() {
        eprintln!("first WARN: {first}");
    }
    assert_eq!((n.conflicts, n.invalid), (0, 0), "{n:?}");
    // finalizer, ServiceAccount, RoleBinding, CronJob, sidecar, its
    // RoleBinding, status: seven writes each, none repeated.
    assert!(n.writes <= 7 * N, "{n:?}");
    // The reads of the passes its own writes trigger (about 20 each).
    assert!(n.requests <= 30 * N, "{n:?}");
    assert!(n.own_writes.values().all(|w| *w <= 2), "{n:?}");
    for i in 0..N {
        let bc = c.object(&format!(
            "/apis/stash.appscode.com/v1beta1/namespaces/{NS}/backupconfigurations/bc-{i}"
        ));
        assert_eq!(bc["status"]["phase"], "Ready", "bc-{i}: {}", bc["status"]);
    }
    let lines = warned.lock().unwrap().clone();
    assert!(
        lines.is_empty(),
        "{} WARN lines: {:#?}",
        lines.len(),
        &lines[..lines.len().min(3)]
    );
}
