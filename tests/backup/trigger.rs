//! `stash create-backupsession` against the scripted API server of `tests/support`: both pause
//! branches, and API errors.

use stash_testkit as support;

use support::scripted as mock;

use serde_json::json;
use stash::api::events::COMPONENT_CRONJOB;
use stash::recorder::Recorder;
use stash::trigger::{Outcome, TriggerError, trigger};

const BC_PATH: &str =
    "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupconfigurations/pause-backup";

fn bc(paused: bool) -> serde_json::Value {
    json!({
        "apiVersion": "stash.appscode.com/v1beta1",
        "kind": "BackupConfiguration",
        "metadata": {"name": "pause-backup", "namespace": "demo", "uid": "bc-uid", "resourceVersion": "7"},
        "spec": {
            "repository": {"name": "gcs-repo"},
            "schedule": "*/5 * * * *",
            "paused": paused,
            "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "stash-demo"}},
            "retentionPolicy": {"name": "keep-last-5", "keepLast": 5, "prune": true}
        }
    })
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_564_659_789).unwrap()
}

async fn run_trigger(
    kind: &'static str,
) -> (
    tokio::task::JoinHandle<Result<Outcome, TriggerError>>,
    mock::ApiServer,
) {
    let (client, server) = mock::client();
    let task = tokio::spawn(async move {
        let recorder = Recorder::new(client.clone(), COMPONENT_CRONJOB);
        trigger(client, &recorder, "demo", kind, "pause-backup", now()).await
    });
    (task, server)
}

#[tokio::test]
async fn paused_records_backup_skipped_and_creates_nothing() {
    let (task, mut server) = run_trigger("BackupConfiguration").await;
    server.expect("GET", BC_PATH).await.ok(bc(true));

    let ev = server
        .expect("POST", "/api/v1/namespaces/demo/events")
        .await;
    let e = ev.body.clone();
    assert_eq!(e["type"], "Normal");
    assert_eq!(e["reason"], "Backup Skipped");
    assert_eq!(e["source"]["component"], "Backup Triggering CronJob");
    assert_eq!(
        e["message"],
        "Skipping creating BackupSession. Reason: Backup Configuration demo/pause-backup is paused."
    );
    assert_eq!(e["involvedObject"]["kind"], "BackupConfiguration");
    assert_eq!(e["involvedObject"]["name"], "pause-backup");
    assert_eq!(e["involvedObject"]["uid"], "bc-uid");
    assert_eq!(e["metadata"]["namespace"], "demo");
    ev.created(e);

    assert_eq!(task.await.unwrap().unwrap(), Outcome::Skipped);
    server.done().await;
}

#[tokio::test]
async fn active_creates_the_session_with_labels_and_owner() {
    let (task, mut server) = run_trigger("BackupConfiguration").await;
    server.expect("GET", BC_PATH).await.ok(bc(false));

    let create = server
        .expect(
            "POST",
            "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupsessions",
        )
        .await;
    let s = create.body.clone();
    assert_eq!(s["metadata"]["name"], "pause-backup-1564659789");
    assert_eq!(
        s["metadata"]["labels"],
        json!({
            "stash.appscode.com/backup-configuration": "pause-backup",
            "stash.appscode.com/invoker-type": "BackupConfiguration",
            "stash.appscode.com/invoker-name": "pause-backup"
        })
    );
    assert_eq!(
        s["metadata"]["ownerReferences"],
        json!([{"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
                "name": "pause-backup", "uid": "bc-uid"}])
    );
    assert_eq!(
        s["spec"]["invoker"],
        json!({"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "pause-backup"})
    );
    assert!(s.get("status").is_none());
    create.created(s);

    assert_eq!(
        task.await.unwrap().unwrap(),
        Outcome::Created("pause-backup-1564659789".into())
    );
    server.done().await;
}

#[tokio::test]
async fn missing_configuration_is_a_one_line_error() {
    let (task, mut server) = run_trigger("BackupConfiguration").await;
    server.expect("GET", BC_PATH).await.not_found();
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(
        err.to_string(),
        "BackupConfiguration demo/pause-backup not found"
    );
    server.done().await;
}

#[tokio::test]
async fn forbidden_create_fails_with_the_api_message() {
    let (task, mut server) = run_trigger("BackupConfiguration").await;
    server.expect("GET", BC_PATH).await.ok(bc(false));
    server
        .expect(
            "POST",
            "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupsessions",
        )
        .await
        .status(403, "Forbidden", "backupsessions is forbidden: no RBAC");
    let err = task.await.unwrap().unwrap_err().to_string();
    assert!(
        err.starts_with("cannot create BackupSession demo/pause-backup-1564659789: "),
        "{err}"
    );
    assert!(err.contains("no RBAC"), "{err}");
    assert!(!err.contains('\n'));
    server.done().await;
}

#[tokio::test]
async fn unknown_invoker_kind_makes_no_request() {
    let (task, server) = run_trigger("BackupBatch").await;
    let err = task.await.unwrap().unwrap_err();
    assert!(matches!(err, TriggerError::UnsupportedKind(_)));
    server.done().await;
}

/// The same trigger on the fake cluster: the session it creates passes the
/// BackupSession webhooks the install registers, and every request is one
/// the CronJob's ClusterRole grants.
#[tokio::test]
async fn on_a_cluster_the_session_passes_the_webhooks_and_rbac() {
    let cluster = support::Cluster::new();
    cluster.seed(bc(false));
    let client = cluster.client(support::Identity::cron_job("demo", "pause-backup"));
    let recorder = Recorder::new(client.clone(), COMPONENT_CRONJOB);
    let outcome = trigger(
        client,
        &recorder,
        "demo",
        "BackupConfiguration",
        "pause-backup",
        now(),
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::Created("pause-backup-1564659789".into()));
    let stored = cluster.object(
        "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupsessions/pause-backup-1564659789",
    );
    assert_eq!(
        stored["metadata"]["labels"]["stash.appscode.com/invoker-name"],
        "pause-backup"
    );
    assert_eq!(stored["metadata"]["generation"], 1);
    assert_eq!(cluster.forbidden_requests(), Vec::<String>::new());

    // Paused: an event, no session.
    cluster.edit(BC_PATH, |bc| bc["spec"]["paused"] = json!(true));
    let client = cluster.client(support::Identity::cron_job("demo", "pause-backup"));
    let recorder = Recorder::new(client.clone(), COMPONENT_CRONJOB);
    let later = jiff::Timestamp::from_second(1_564_660_089).unwrap();
    let outcome = trigger(
        client,
        &recorder,
        "demo",
        "BackupConfiguration",
        "pause-backup",
        later,
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::Skipped);
    assert_eq!(
        cluster
            .list(
                "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupsessions",
                None
            )
            .len(),
        1
    );
    let events = cluster.list("/api/v1/namespaces/demo/events", None);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["reason"], "Backup Skipped");
    assert_eq!(cluster.forbidden_requests(), Vec::<String>::new());
}
