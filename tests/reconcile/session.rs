//! The BackupSession controller's API calls against the scripted API server of `tests/support`.

use stash_testkit as support;

use support::scripted as mock;

use serde_json::{Value, json};
use stash::api::BackupSession;
use stash::reconcile::apply::ApiError;
use stash::reconcile::backup_session::{Context, reconcile_at};

const BC: &str =
    "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupconfigurations/pause-backup";
const SESSIONS: &str = "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupsessions";

fn bc(paused: bool, kind: &str) -> Value {
    json!({
        "apiVersion": "stash.appscode.com/v1beta1",
        "kind": "BackupConfiguration",
        "metadata": {"name": "pause-backup", "namespace": "demo", "uid": "bc-uid"},
        "spec": {
            "repository": {"name": "gcs-repo"},
            "schedule": "*/5 * * * *",
            "paused": paused,
            "target": {"ref": {"apiVersion": "apps/v1", "kind": kind, "name": "stash-demo"}},
            "retentionPolicy": {"name": "keep-last-5", "keepLast": 5, "prune": true}
        }
    })
}

fn session(name: &str, created: i64, status: Value) -> Value {
    json!({
        "apiVersion": "stash.appscode.com/v1beta1",
        "kind": "BackupSession",
        "metadata": {
            "name": name, "namespace": "demo", "uid": format!("{name}-uid"), "resourceVersion": "11",
            "creationTimestamp": jiff::Timestamp::from_second(created).unwrap().to_string(),
            "labels": {"stash.appscode.com/backup-configuration": "pause-backup"}
        },
        "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "pause-backup"}},
        "status": status
    })
}

const NOW: i64 = 1_564_660_000;

fn start(
    obj: Value,
) -> (
    tokio::task::JoinHandle<Result<(), ApiError>>,
    mock::ApiServer,
) {
    let (client, server) = mock::client();
    let s: BackupSession = serde_json::from_value(obj).unwrap();
    let task = tokio::spawn(async move {
        let ctx = Context::new(client);
        reconcile_at(&s, &ctx, jiff::Timestamp::from_second(NOW).unwrap())
            .await
            .map(|_| ())
    });
    (task, server)
}

fn assert_status_patch(ex: &mock::Exchange, name: &str) {
    assert_eq!(ex.path, format!("{SESSIONS}/{name}/status"));
    assert_eq!(ex.param("fieldManager").as_deref(), Some("stash"));
    assert_eq!(ex.content_type, "application/merge-patch+json");
}

#[tokio::test]
async fn pending_session_of_paused_invoker_is_skipped_with_one_warning_event() {
    let (task, mut server) = start(session("instant-backupsession", NOW - 5, json!(null)));
    server.expect("GET", BC).await.ok(bc(true, "Deployment"));

    let patch = server.next().await;
    assert_eq!(patch.method, "PATCH");
    assert_status_patch(&patch, "instant-backupsession");
    assert_eq!(
        patch.body,
        json!({"metadata": {"resourceVersion": "11"}, "status": {"phase": "Skipped"}})
    );
    patch.ok(session(
        "instant-backupsession",
        NOW - 5,
        json!({"phase": "Skipped"}),
    ));

    let ev = server
        .expect("POST", "/api/v1/namespaces/demo/events")
        .await;
    assert_eq!(ev.body["type"], "Warning");
    assert_eq!(ev.body["reason"], "BackupSessionSkipped");
    assert_eq!(ev.body["message"], "Backup Configuration is paused");
    assert_eq!(ev.body["source"]["component"], "BackupSession Controller");
    assert_eq!(ev.body["involvedObject"]["kind"], "BackupSession");
    assert_eq!(ev.body["involvedObject"]["name"], "instant-backupsession");
    let body = ev.body.clone();
    ev.created(body);

    task.await.unwrap().unwrap();
    server.done().await;
}

#[tokio::test]
async fn explicit_pending_phase_is_skipped_too() {
    let (task, mut server) = start(session("s", NOW, json!({"phase": "Pending"})));
    server.expect("GET", BC).await.ok(bc(true, "Deployment"));
    let patch = server
        .expect("PATCH", &format!("{SESSIONS}/s/status"))
        .await;
    assert_eq!(patch.body["status"], json!({"phase": "Skipped"}));
    patch.ok(session("s", NOW, json!({"phase": "Skipped"})));
    let ev = server
        .expect("POST", "/api/v1/namespaces/demo/events")
        .await;
    let body = ev.body.clone();
    ev.created(body);
    task.await.unwrap().unwrap();
    server.done().await;
}

#[tokio::test]
async fn a_concurrent_change_stops_the_skip_before_any_event() {
    let (task, mut server) = start(session("s", NOW, json!(null)));
    server.expect("GET", BC).await.ok(bc(true, "Deployment"));
    server
        .expect("PATCH", &format!("{SESSIONS}/s/status"))
        .await
        .status(409, "Conflict", "the object has been modified");
    let err = task.await.unwrap().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("mark BackupSession demo/s Skipped: "),
        "{err}"
    );
    server.done().await;
}

#[tokio::test]
async fn pending_session_of_active_deployment_runs_with_one_host() {
    let (task, mut server) = start(session("pause-backup-1564659789", NOW, json!(null)));
    server.expect("GET", BC).await.ok(bc(false, "Deployment"));
    let patch = server.next().await;
    assert_eq!(patch.method, "PATCH");
    assert_status_patch(&patch, "pause-backup-1564659789");
    assert_eq!(
        patch.body,
        json!({"metadata": {"resourceVersion": "11"},
               "status": {"phase": "Running", "totalHosts": 1,
                          // created at NOW, plus the default timeout of 24h
                          "sessionDeadline": "2019-08-02T11:46:40Z"}})
    );
    patch.ok(session(
        "pause-backup-1564659789",
        NOW,
        json!({"phase": "Running", "totalHosts": 1}),
    ));
    task.await.unwrap().unwrap();
    server.done().await;
}

#[tokio::test]
async fn statefulset_hosts_come_from_its_replicas() {
    let (task, mut server) = start(session("s", NOW, json!(null)));
    server.expect("GET", BC).await.ok(bc(false, "StatefulSet"));
    server
        .expect(
            "GET",
            "/apis/apps/v1/namespaces/demo/statefulsets/stash-demo",
        )
        .await
        .ok(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                   "metadata": {"name": "stash-demo", "namespace": "demo"},
                   "spec": {"replicas": 3}}));
    let patch = server
        .expect("PATCH", &format!("{SESSIONS}/s/status"))
        .await;
    assert_eq!(
        patch.body["status"],
        json!({"phase": "Running", "totalHosts": 3, "sessionDeadline": "2019-08-02T11:46:40Z"})
    );
    patch.ok(session(
        "s",
        NOW,
        json!({"phase": "Running", "totalHosts": 3}),
    ));
    task.await.unwrap().unwrap();
    server.done().await;
}

#[tokio::test]
async fn running_session_of_paused_invoker_is_not_skipped() {
    let (task, mut server) = start(session(
        "s",
        NOW,
        json!({"phase": "Running", "totalHosts": 1}),
    ));
    server.expect("GET", BC).await.ok(bc(true, "Deployment"));
    task.await.unwrap().unwrap();
    server.done().await;
}

#[tokio::test]
async fn finished_sessions_cost_no_request() {
    for phase in ["Skipped", "Succeeded", "Failed"] {
        let (task, server) = start(session("s", NOW, json!({"phase": phase})));
        task.await.unwrap().unwrap();
        server.done().await;
    }
}

#[tokio::test]
async fn all_hosts_reported_succeeds_records_and_cleans_history() {
    let stats = json!([{"hostname": "host-0", "phase": "Succeeded", "duration": "3s"}]);
    let (task, mut server) = start(session(
        "pause-backup-1564659789",
        NOW - 49,
        json!({"phase": "Running", "totalHosts": 1, "stats": stats}),
    ));
    server.expect("GET", BC).await.ok(bc(false, "Deployment"));

    let patch = server.next().await;
    assert_eq!(patch.method, "PATCH");
    assert_status_patch(&patch, "pause-backup-1564659789");
    assert_eq!(
        patch.body,
        json!({"metadata": {"resourceVersion": "11"},
               "status": {"phase": "Succeeded", "sessionDuration": "49s"}})
    );
    patch.ok(session(
        "pause-backup-1564659789",
        NOW - 49,
        json!({"phase": "Succeeded"}),
    ));

    let ev = server
        .expect("POST", "/api/v1/namespaces/demo/events")
        .await;
    assert_eq!(ev.body["type"], "Normal");
    assert_eq!(ev.body["reason"], "BackupSession Succeeded");
    assert_eq!(ev.body["source"]["component"], "BackupSession Controller");
    let body = ev.body.clone();
    ev.created(body);

    let list = server.expect("GET", SESSIONS).await;
    assert_eq!(
        list.param("labelSelector").as_deref(),
        Some("stash.appscode.com/backup-configuration=pause-backup")
    );
    list.ok(json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSessionList", "metadata": {},
        "items": [
            session("pause-backup-1564659789", NOW - 49, json!({"phase": "Succeeded"})),
            session("instant-backupsession", NOW - 600, json!({"phase": "Skipped"})),
            session("pause-backup-1564659000", NOW - 900, json!({"phase": "Succeeded"})),
            session("pause-backup-1564659999", NOW - 10, json!({"phase": "Running"})),
        ]
    }));
    // default backupHistoryLimit 1: the newest finished stays, older finished go
    let del = server
        .expect("DELETE", &format!("{SESSIONS}/instant-backupsession"))
        .await;
    assert_eq!(del.body["propagationPolicy"], "Background");
    del.ok(json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}));
    server
        .expect("DELETE", &format!("{SESSIONS}/pause-backup-1564659000"))
        .await
        .not_found();

    task.await.unwrap().unwrap();
    server.done().await;
}

#[tokio::test]
async fn a_failed_host_fails_the_session() {
    let stats = json!([
        {"hostname": "host-0", "phase": "Succeeded"},
        {"hostname": "host-1", "phase": "Failed", "error": "restic: repository locked"}
    ]);
    let (task, mut server) = start(session(
        "s",
        NOW - 125,
        json!({"phase": "Running", "totalHosts": 2, "stats": stats}),
    ));
    server.expect("GET", BC).await.ok(bc(false, "StatefulSet"));
    let patch = server
        .expect("PATCH", &format!("{SESSIONS}/s/status"))
        .await;
    assert_eq!(
        patch.body["status"],
        json!({"phase": "Failed", "sessionDuration": "2m5s"})
    );
    patch.ok(session("s", NOW - 125, json!({"phase": "Failed"})));
    let ev = server
        .expect("POST", "/api/v1/namespaces/demo/events")
        .await;
    assert_eq!(ev.body["type"], "Warning");
    assert_eq!(ev.body["reason"], "BackupSession Failed");
    assert_eq!(
        ev.body["message"],
        "Backup session failed to complete. Reason: backup failed for host(s) host-1"
    );
    let body = ev.body.clone();
    ev.created(body);
    server.expect("GET", SESSIONS).await.ok(
        json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSessionList",
                   "metadata": {}, "items": []}),
    );
    task.await.unwrap().unwrap();
    server.done().await;
}

#[tokio::test]
async fn missing_invoker_waits_without_writing() {
    let (task, mut server) = start(session("s", NOW, json!(null)));
    server.expect("GET", BC).await.not_found();
    task.await.unwrap().unwrap();
    server.done().await;
}
