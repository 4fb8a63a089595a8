//! The guide's "Pause Backup" story told with `kubectl stash`, on the fake
//! cluster with the real pieces running: `stash serve`'s feed and both
//! controllers (the BackupConfiguration one makes the CronJob and injects the
//! sidecar into the guide's Deployment), the injected sidecar's session loop
//! and a real restic backing up into a local repository. The fake cluster
//! runs no kubelet: the Deployment's three pods are seeded as the guide's
//! `kubectl get pod` shows them once the sidecar is in. Prints the terminal
//! session (`cargo test --test plugin guide -- --nocapture`).

use std::sync::Arc;

use base64::Engine as _;
use serde_json::json;
use stash::reconcile::{backup_configuration, backup_session};
use stash_testkit::restic::{Env, NS, PASSWORD};
use stash_testkit::{Cluster, Identity};

use super::{REPOS, Ran, SESSIONS, kubectl_stash};

/// A pod of the guide's Deployment with the injected sidecar, running.
fn with_sidecar(name: &str) -> serde_json::Value {
    let status =
        |c: &str| json!({"name": c, "ready": true, "restartCount": 0, "image": c, "imageID": ""});
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "stash-demo"}},
        "spec": {"containers": [{"name": "busybox", "image": "busybox"}, {"name": "stash", "image": "stash"}]},
        "status": {"phase": "Running", "containerStatuses": [status("busybox"), status("stash")]}})
}

/// Runs one command and appends it, as typed and as answered, to `transcript`.
async fn step(transcript: &mut String, c: &Cluster, line: &str) -> Ran {
    let ran = kubectl_stash(c, line).await;
    transcript.push_str(&format!("$ kubectl stash {line}\n{}", ran.out));
    if let Err(e) = &ran.result {
        transcript.push_str(&format!("error: {e}\n$ echo $?\n1\n"));
    }
    ran
}

struct Aborting(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Aborting {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_trigger_resume_trigger_wait() {
    let env = Env::new();
    let c = Cluster::new();
    c.seed(env.config(false));
    c.seed(env.repository());
    c.seed(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "gcs-secret", "namespace": NS},
        "data": {"RESTIC_PASSWORD": base64::engine::general_purpose::STANDARD.encode(PASSWORD)}}));

    c.seed(stash_testkit::tls::example_deployment());
    for pod in ["jctj4", "mfqps", "zp8c5"] {
        c.seed(with_sidecar(&format!("stash-demo-7489fcb7f5-{pod}")));
    }

    // stash serve's feed and both controllers, and the sidecar.
    let client = c.client(Identity::reconciler());
    let (feed, feeder) = stash::runtime::feed::new(Arc::default());
    let (_signal, drain) = stash::runtime::drain::channel();
    let feeding = tokio::spawn(feeder.run(client.clone(), drain));
    let ctx = Arc::new(backup_session::Context::new(client.clone()));
    let sessions = tokio::spawn(backup_session::run(ctx, feed.configs.clone()));
    let configs = tokio::spawn(backup_configuration::run(
        client,
        // The install's image: what its policies let the CronJob run.
        c.settings().image.clone(),
        c.settings(),
        feed,
    ));
    let sidecar = Arc::new(env.sidecar(c.client(Identity::sidecar(NS, "default")), None));
    let watching = tokio::spawn(async move {
        let _ = sidecar.watch().await;
    });
    let _running = Aborting(vec![feeding, sessions, configs, watching]);
    c.wait_until("the CronJob exists", |c| {
        c.get("/apis/batch/v1/namespaces/demo/cronjobs/stash-backup-pause-backup")
            .is_some()
    })
    .await;
    c.wait_for_open_watches(5).await;

    let mut t = String::new();
    step(
        &mut t,
        &c,
        "pause backup -n demo --backupconfig pause-backup",
    )
    .await
    .ok();
    let skipped = step(&mut t, &c, "trigger -n demo pause-backup").await;
    assert!(
        skipped
            .error()
            .starts_with("backup skipped: Backup Configuration demo/pause-backup is paused")
    );
    assert!(c.list(SESSIONS, None).is_empty());
    step(
        &mut t,
        &c,
        "resume backup -n demo --backupconfig pause-backup",
    )
    .await
    .ok();
    let waited = step(
        &mut t,
        &c,
        "trigger -n demo pause-backup --wait --timeout 60s",
    )
    .await;
    let out = waited.ok();
    assert!(out.contains("phase Running (1 host)\n"), "{out}");
    assert!(out.contains("host-0: Succeeded in "), "{out}");
    assert!(
        out.lines().last().unwrap().ends_with(" Succeeded") || out.contains(" Succeeded in "),
        "{out}"
    );
    assert_eq!(env.snapshots().len(), 1);
    step(&mut t, &c, "check -n demo gcs-repo").await.ok();
    assert_eq!(
        c.object(&format!("{REPOS}/gcs-repo"))["status"]["integrity"],
        json!(true)
    );
    let dest = env.p("downloaded");
    step(
        &mut t,
        &c,
        &format!("download -n demo gcs-repo --destination {}", dest.display()),
    )
    .await
    .ok();
    let debug = step(&mut t, &c, "debug backup -n demo pause-backup").await;
    assert!(
        debug
            .ok()
            .contains("== Findings\n  - nothing found that stops a backup\n"),
        "{}",
        debug.out
    );
    assert_eq!(c.forbidden_requests(), Vec::<String>::new());
    println!("{t}");
}
