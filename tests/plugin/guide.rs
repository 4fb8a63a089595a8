//! The guide's "Pause Backup" story told with `kubectl stash`, on the fake
//! cluster with the real pieces running: `stash serve`'s feed and both
//! controllers (the BackupConfiguration one makes the CronJob and injects the
//! sidecar into the guide's Deployment), the injected sidecar's session loop
//! and a real restic backing up into a local repository. The fake cluster
//! runs no kubelet: the Deployment's three pods are seeded as the guide's
//! `kubectl get pod` shows them once the sidecar is in. Prints the terminal
//! session (`cargo test --test plugin guide -- --nocapture`).
//!
//! The guide's objects, names and what the user sees are the testkit's
//! (`stash_testkit::guide`), shared with `tests/guide.rs` and the real-cluster
//! walk: the YAMLs (the Repository and the backed-up path in the temp dir),
//! `kubectl get`'s columns, `kubectl describe`'s events, the conditions, the
//! reason a paused configuration backs nothing up. The steps are not the
//! guide's `PauseBackupGuide` sections: `kubectl stash pause`, `trigger` and
//! `resume` replace its `kubectl patch` and `kubectl apply -f
//! backupsession.yaml`, and the schedule never fires.

use std::sync::Arc;

use serde_json::{Value, json};
use stash::api::events::COMPONENT_PLUGIN;
use stash::api::{BackupConfiguration, BackupSession};
use stash::reconcile::{backup_configuration, backup_session};
use stash_testkit::guide::{self, BC, CRONJOB, HOST, REPO};
use stash_testkit::restic::{Env, NS};
use stash_testkit::{Cluster, Identity};

use super::{BCS, REPOS, Ran, SESSIONS, kubectl_stash};

/// A pod of the guide's Deployment with the injected sidecar, running.
fn with_sidecar(name: &str, labels: &Value) -> Value {
    let status =
        |c: &str| json!({"name": c, "ready": true, "restartCount": 0, "image": c, "imageID": ""});
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
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
    // The guide's objects: deployment.yaml, the Secret, repository.yaml and
    // backupconfiguration.yaml, on this machine's paths.
    let (pvc, deployment) = guide::pvc_and_deployment(NS);
    let labels = deployment["spec"]["selector"]["matchLabels"].clone();
    c.seed(pvc);
    c.seed(deployment);
    c.seed(guide::secret(NS));
    c.seed(guide::repository_on(NS, &env.p("repo")));
    c.seed(guide::configuration_on(NS, &env.p("source/data")));
    for pod in ["jctj4", "mfqps", "zp8c5"] {
        c.seed(with_sidecar(
            &format!("{}-7489fcb7f5-{pod}", guide::DEPLOY),
            &labels,
        ));
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
    let bc_path = format!("{BCS}/{BC}");
    // Verify CronJob: the CronJob, the configuration Ready.
    c.wait_until("the CronJob exists", |c| {
        c.get(&format!(
            "/apis/batch/v1/namespaces/{NS}/cronjobs/{CRONJOB}"
        ))
        .is_some()
    })
    .await;
    c.wait_until("the configuration's conditions all True", |c| {
        guide::conditions(&c.object(&bc_path)) == guide::ready_conditions()
    })
    .await;
    // $ kubectl get backupconfiguration -n demo
    assert_eq!(
        guide::printed_columns::<BackupConfiguration>(&c.object(&bc_path)),
        guide::configuration_columns("")
    );
    c.wait_for_open_watches(5).await;

    // Pause Scheduled Backup, with the plugin.
    let mut t = String::new();
    step(
        &mut t,
        &c,
        &format!("pause backup -n {NS} --backupconfig {BC}"),
    )
    .await
    .ok();
    assert_eq!(
        guide::printed_columns::<BackupConfiguration>(&c.object(&bc_path)),
        guide::configuration_columns("true")
    );
    // A backup now is skipped, and says why where the guide's CronJob does.
    let skipped = step(&mut t, &c, &format!("trigger -n {NS} {BC}")).await;
    assert!(
        skipped
            .error()
            .starts_with(&format!("backup skipped: {}", guide::paused_reason(NS))),
        "{}",
        skipped.error()
    );
    assert!(c.list(SESSIONS, None).is_empty());
    // $ kubectl describe backupconfiguration -n demo pause-backup: the
    // guide's event, from the plugin instead of the CronJob.
    let (type_, reason, _cronjob, message) = guide::backup_skipped_event(NS);
    assert_eq!(
        guide::fake_events(&c, "BackupConfiguration", BC),
        [guide::event(&type_, &reason, COMPONENT_PLUGIN, &message)]
    );

    // Resume Backup, with the plugin; the backup runs.
    step(
        &mut t,
        &c,
        &format!("resume backup -n {NS} --backupconfig {BC}"),
    )
    .await
    .ok();
    assert_eq!(
        guide::printed_columns::<BackupConfiguration>(&c.object(&bc_path)),
        guide::configuration_columns("false")
    );
    let waited = step(
        &mut t,
        &c,
        &format!("trigger -n {NS} {BC} --wait --timeout 60s"),
    )
    .await;
    let out = waited.ok();
    assert!(out.contains("phase Running (1 host)\n"), "{out}");
    assert!(out.contains(&format!("{HOST}: Succeeded in ")), "{out}");
    assert!(
        out.lines().last().unwrap().ends_with(" Succeeded") || out.contains(" Succeeded in "),
        "{out}"
    );
    let sessions = c.list(SESSIONS, None);
    assert_eq!(sessions.len(), 1, "one BackupSession");
    let session = &sessions[0];
    let name = session["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(session["metadata"]["labels"], guide::session_labels());
    // $ kubectl get backupsession -n demo
    assert_eq!(
        guide::printed_columns::<BackupSession>(session),
        guide::session_columns("Succeeded")
    );
    // $ kubectl describe backupsession -n demo <name>
    c.wait_until("the events of the Succeeded session", |c| {
        let mut seen = guide::fake_events(c, "BackupSession", &name);
        seen.sort();
        seen == guide::backup_succeeded_events()
    })
    .await;
    assert_eq!(env.snapshots().len(), 1);
    step(&mut t, &c, &format!("check -n {NS} {REPO}"))
        .await
        .ok();
    assert_eq!(
        c.object(&format!("{REPOS}/{REPO}"))["status"]["integrity"],
        json!(true)
    );
    let dest = env.p("downloaded");
    step(
        &mut t,
        &c,
        &format!("download -n {NS} {REPO} --destination {}", dest.display()),
    )
    .await
    .ok();
    let debug = step(&mut t, &c, &format!("debug backup -n {NS} {BC}")).await;
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
