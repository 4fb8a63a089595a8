//! A BackupSession nothing can run does not stay `Running` for ever: the
//! BackupSession controller on the fake cluster of `tests/support`, driven
//! with an explicit clock (`reconcile_at`) from the session's creation on.
//!
//! The case from a real cluster: the install's policy refused the sidecar
//! patch, so the target's pods had no `stash` container and the session sat
//! `Running` for as long as it was watched.

use stash_testkit as support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use stash::api::{BackupSession, BackupSessionPhase, HostBackupPhase};
use stash::backup::cluster::report_over_claim;
use stash::reconcile::backup_session::{Context, reconcile_at};
use support::{Cluster, Identity, PatchBody};

use super::config::{bc, deployment, repository};

const NS: &str = "demo";
const SESSIONS: &str = "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupsessions";
const BC: &str =
    "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupconfigurations/pause-backup";
const EVENTS: &str = "/api/v1/namespaces/demo/events";

/// The guide's configuration (with `spec` changed by `edit`), its Repository,
/// and the Deployment as a policy left it: no `stash` container.
fn cluster_with(edit: impl FnOnce(&mut Value)) -> Cluster {
    let cluster = Cluster::new();
    let mut config = bc();
    edit(&mut config["spec"]);
    cluster.seed(config);
    cluster.seed(repository());
    cluster.seed(deployment());
    cluster
}

/// `kubectl create` of an instant BackupSession (through the webhooks).
fn create_session(cluster: &Cluster, name: &str) -> Timestamp {
    let written = cluster
        .create(
            Identity::admin(),
            json!({
                "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"invoker": {"apiGroup": "stash.appscode.com",
                                     "kind": "BackupConfiguration", "name": "pause-backup"}}
            }),
        )
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
    written.object["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn read(cluster: &Cluster, name: &str) -> BackupSession {
    cluster.typed(&format!("{SESSIONS}/{name}"))
}

/// One reconcile of session `name` as stored now, at `at`.
async fn reconcile(cluster: &Cluster, name: &str, at: Timestamp) -> Action {
    let ctx = Context::new(cluster.client(Identity::reconciler()));
    reconcile_at(&read(cluster, name), &ctx, at)
        .await
        .unwrap_or_else(|e| panic!("reconcile {name}: {e}"))
}

fn minutes(n: i64) -> SignedDuration {
    SignedDuration::from_mins(n)
}

/// `(type, reason, source, message)` of every event on session `name`.
fn events(cluster: &Cluster, name: &str) -> Vec<(String, String, String, String)> {
    cluster
        .list(EVENTS, None)
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == name)
        .map(|e| {
            let s = |p: &str| {
                e.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            (
                s("/type"),
                s("/reason"),
                s("/source/component"),
                s("/message"),
            )
        })
        .collect()
}

/// The sidecar's claim (or result) for `host` in the session's
/// `status.stats[]` (written out of band: the sidecar is not under test here).
fn host_writes(cluster: &Cluster, name: &str, host: &str, phase: &str) {
    cluster.edit(&format!("{SESSIONS}/{name}"), |s| {
        let mut stats: Vec<Value> = s["status"]["stats"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|h| h["hostname"] != host)
            .collect();
        stats.push(json!({"hostname": host, "phase": phase}));
        s["status"]["stats"] = json!(stats);
    });
}

fn condition<'a>(s: &'a BackupSession, type_: &str) -> Option<&'a stash::api::Condition> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

#[tokio::test]
async fn a_session_no_sidecar_can_run_fails_at_the_claim_deadline_saying_why() {
    let cluster = cluster_with(|_| {});
    let created = create_session(&cluster, "nobody-runs-it");

    // Running, with its deadline, and the controller wakes itself for the
    // claim deadline 10 minutes on.
    let action = reconcile(&cluster, "nobody-runs-it", created).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(600)));
    let s = read(&cluster, "nobody-runs-it");
    let status = s.status.clone().unwrap();
    assert_eq!(status.phase, Some(BackupSessionPhase::Running));
    assert_eq!(status.total_hosts, Some(1));
    assert_eq!(
        status.session_deadline.map(|t| t.0),
        Some(created + SignedDuration::from_hours(24)),
        "sessionDeadline: created + the default timeout"
    );

    // Before the deadline nothing is written; it looks again at the deadline.
    let mark = cluster.mark();
    let action = reconcile(&cluster, "nobody-runs-it", created + minutes(4)).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(360)));
    assert_eq!(cluster.writes_since(mark), vec![]);

    // At the deadline: Failed, with the reason in operator terms.
    reconcile(&cluster, "nobody-runs-it", created + minutes(10)).await;
    let s = read(&cluster, "nobody-runs-it");
    let why = "no pod of Deployment demo/stash-demo runs the stash sidecar (its pod template has no stash container; see the BackupConfiguration's StashSidecarInjected condition): 0 of 1 hosts claimed the session within 10m";
    assert_eq!(s.phase(), BackupSessionPhase::Failed, "{s:?}");
    let status = s.status.clone().unwrap();
    assert_eq!(status.session_duration.as_deref(), Some("10m0s"));
    let c = condition(&s, "DeadlineExceeded").expect("the DeadlineExceeded condition");
    assert_eq!(c.status, "True");
    assert_eq!(c.reason.as_deref(), Some("NoHostClaimedWithinDeadline"));
    assert_eq!(c.message.as_deref(), Some(why));
    assert_eq!(status.stats.len(), 1);
    assert_eq!(status.stats[0].hostname, "host-0");
    assert_eq!(status.stats[0].phase, Some(HostBackupPhase::Failed));
    assert_eq!(status.stats[0].error.as_deref(), Some(why));
    assert_eq!(
        events(&cluster, "nobody-runs-it"),
        vec![(
            "Warning".to_string(),
            "BackupSession Failed".to_string(),
            "BackupSession Controller".to_string(),
            format!("Backup session failed to complete. Reason: {why}"),
        )]
    );

    // Finished: a later pass writes nothing and records no second event.
    let mark = cluster.mark();
    reconcile(&cluster, "nobody-runs-it", created + minutes(60)).await;
    assert_eq!(cluster.writes_since(mark), vec![]);
    assert_eq!(events(&cluster, "nobody-runs-it").len(), 1);
    // The reconciler's reads and writes are all within its ClusterRole.
    assert_eq!(cluster.forbidden_requests(), Vec::<String>::new());
}

#[tokio::test]
async fn a_session_whose_host_claimed_and_reported_in_time_is_unaffected() {
    let cluster = cluster_with(|_| {});
    let created = create_session(&cluster, "runs");
    reconcile(&cluster, "runs", created).await;
    host_writes(&cluster, "runs", "host-0", "Running");

    // Claimed: the claim deadline no longer applies; next is the session's.
    let mark = cluster.mark();
    let action = reconcile(&cluster, "runs", created + minutes(10)).await;
    assert_eq!(cluster.writes_since(mark), vec![]);
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(24 * 3600 - 600)),
        "woken at the session deadline"
    );
    assert_eq!(read(&cluster, "runs").phase(), BackupSessionPhase::Running);

    // It reports (a long backup: 25 hours on) before the controller looked
    // again: every host reported, so it finishes as usual, past the deadline or not.
    host_writes(&cluster, "runs", "host-0", "Succeeded");
    reconcile(&cluster, "runs", created + minutes(25 * 60)).await;
    let s = read(&cluster, "runs");
    assert_eq!(s.phase(), BackupSessionPhase::Succeeded, "{s:?}");
    assert!(condition(&s, "DeadlineExceeded").is_none());
    assert_eq!(
        events(&cluster, "runs")
            .into_iter()
            .map(|e| e.1)
            .collect::<Vec<_>>(),
        ["BackupSession Succeeded"]
    );
    assert_eq!(cluster.forbidden_requests(), Vec::<String>::new());
}

#[tokio::test]
async fn a_skipped_session_never_expires_and_a_pause_does_not_spare_a_running_one() {
    let cluster = cluster_with(|_| {});
    let created = create_session(&cluster, "started");
    reconcile(&cluster, "started", created).await;
    assert_eq!(
        read(&cluster, "started").phase(),
        BackupSessionPhase::Running
    );

    // Paused while it runs: the session was accepted before the pause, and
    // a running session is never skipped; it still fails at its deadline.
    cluster
        .patch(
            Identity::admin(),
            BC,
            PatchBody::Merge(json!({"spec": {"paused": true}})),
        )
        .unwrap();
    let paused_at = create_session(&cluster, "while-paused");

    reconcile(&cluster, "started", created + minutes(10)).await;
    let s = read(&cluster, "started");
    assert_eq!(s.phase(), BackupSessionPhase::Failed, "{s:?}");
    assert!(condition(&s, "DeadlineExceeded").is_some());

    // Created while paused, looked at only days later: Skipped with the
    // guide's event, never Failed, and no deadline is written.
    reconcile(&cluster, "while-paused", paused_at + minutes(3 * 24 * 60)).await;
    let s = read(&cluster, "while-paused");
    assert_eq!(s.phase(), BackupSessionPhase::Skipped, "{s:?}");
    assert!(s.status.as_ref().unwrap().session_deadline.is_none());
    assert!(condition(&s, "DeadlineExceeded").is_none());
    assert_eq!(
        events(&cluster, "while-paused"),
        vec![(
            "Warning".to_string(),
            "BackupSessionSkipped".to_string(),
            "BackupSession Controller".to_string(),
            "Backup Configuration is paused".to_string(),
        )]
    );
    let mark = cluster.mark();
    let action = reconcile(&cluster, "while-paused", paused_at + minutes(30 * 24 * 60)).await;
    assert_eq!(action, Action::await_change());
    assert_eq!(cluster.writes_since(mark), vec![]);
}

#[tokio::test]
async fn the_configurations_time_out_is_honoured_and_a_late_result_is_not_written() {
    let cluster = cluster_with(|spec| spec["timeOut"] = json!("1h"));
    let created = create_session(&cluster, "slow");
    reconcile(&cluster, "slow", created).await;
    let s = read(&cluster, "slow");
    assert_eq!(
        s.status
            .as_ref()
            .unwrap()
            .session_deadline
            .as_ref()
            .map(|t| t.0),
        Some(created + minutes(60)),
        "sessionDeadline: created + timeOut"
    );
    host_writes(&cluster, "slow", "host-0", "Running");

    let action = reconcile(&cluster, "slow", created + minutes(59)).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert_eq!(read(&cluster, "slow").phase(), BackupSessionPhase::Running);

    reconcile(&cluster, "slow", created + minutes(60)).await;
    let s = read(&cluster, "slow");
    assert_eq!(s.phase(), BackupSessionPhase::Failed, "{s:?}");
    let deadline = created + minutes(60);
    let why = format!(
        "the session did not finish by its deadline {deadline} (timeOut 1h): 1 of 1 hosts had not reported: host-0 still backing up"
    );
    let c = condition(&s, "DeadlineExceeded").unwrap();
    assert_eq!(c.reason.as_deref(), Some("FailedToCompleteWithinDeadline"));
    assert_eq!(c.message.as_deref(), Some(why.as_str()));
    let host = &s.status.as_ref().unwrap().stats[0];
    assert_eq!(host.phase, Some(HostBackupPhase::Failed));
    assert_eq!(
        host.error.as_deref(),
        Some(
            format!("deadline exceeded: still backing up at the session deadline {deadline}")
                .as_str()
        )
    );
    assert_eq!(
        events(&cluster, "slow"),
        vec![(
            "Warning".to_string(),
            "BackupSession Failed".to_string(),
            "BackupSession Controller".to_string(),
            format!("Backup session failed to complete. Reason: {why}"),
        )]
    );

    // The sidecar's restic finishes after all: its result does not
    // overwrite the verdict (its claim is no longer there).
    let sidecar = kube::Api::<BackupSession>::namespaced(
        cluster.client(Identity::sidecar(NS, "default")),
        NS,
    );
    let late = stash::api::HostBackupStats {
        hostname: "host-0".into(),
        phase: Some(HostBackupPhase::Succeeded),
        ..Default::default()
    };
    assert!(
        report_over_claim(&sidecar, "slow", &late)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(read(&cluster, "slow"), s);
    assert_eq!(cluster.forbidden_requests(), Vec::<String>::new());
}

#[test]
fn the_webhook_refuses_a_time_out_that_is_not_a_duration() {
    let cluster = Cluster::new();
    cluster.seed(repository());
    for (bad, why) in [
        ("2 hours", "unknown unit \" hours\""),
        ("1d", "unknown unit \"d\""),
        ("90", "90 has no unit"),
        ("0s", "it must be longer than zero"),
        ("-30m", "it must be longer than zero"),
    ] {
        let mut config = bc();
        config["metadata"] = json!({"name": "pause-backup", "namespace": NS});
        config["spec"]["timeOut"] = json!(bad);
        let denied = cluster.create(Identity::admin(), config).expect_err(bad);
        let what = format!(
            "BackupConfiguration demo/pause-backup has an invalid spec.timeOut {bad:?}: {why}"
        );
        let how = "use a Go duration such as \"30m\" or \"2h\"";
        assert!(
            denied.message.contains(&what) && denied.message.ends_with(how),
            "{bad}: {}",
            denied.message
        );
        assert!(
            !denied.message.contains('\n'),
            "one line: {}",
            denied.message
        );
    }
    let mut config = bc();
    config["metadata"] = json!({"name": "pause-backup", "namespace": NS});
    config["spec"]["timeOut"] = json!("1h30m");
    let stored = cluster.create(Identity::admin(), config).unwrap();
    assert_eq!(
        stored.object["spec"]["timeOut"], "1h30m",
        "kept by the CRD schema"
    );
}
