//! `debug backup`: every section, the findings at the top, and a section
//! that cannot be read not hiding the others.

use serde_json::json;
use stash_testkit::Cluster;
use stash_testkit::restic::{Env, local_repository};

use super::{SESSIONS, config, kubectl_stash};

fn pod(name: &str, sidecar: bool) -> serde_json::Value {
    let mut containers = vec![json!({"name": "busybox", "image": "busybox"})];
    if sidecar {
        containers.push(json!({"name": "stash", "image": "stash"}));
    }
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "demo", "labels": {"app": "stash-demo"}},
           "spec": {"containers": containers},
           "status": {"phase": "Running", "containerStatuses": [
               {"name": "stash", "ready": true, "restartCount": 0, "image": "stash", "imageID": ""}]}})
}

/// The guide's state after "Pause Scheduled Backup", with a failed session before it.
fn cluster(env: &Env) -> Cluster {
    let c = Cluster::new();
    let mut bc = config("pause-backup", true, json!({}));
    bc["spec"]["target"]["ref"]["name"] = json!("stash-demo");
    bc["status"] = json!({"observedGeneration": 1, "conditions": [
        {"type": "RepositoryFound", "status": "True", "reason": "RepositoryAvailable"},
        {"type": "CronJobCreated", "status": "True", "reason": "CronJobCreationSucceeded"}]});
    c.seed(bc);
    c.seed(local_repository(&env.p("repo")));
    c.seed(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "gcs-secret", "namespace": "demo"},
        "data": {"RESTIC_PASSWORD": "Y2hhbmdlaXQ="}}));
    c.seed(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "stash-demo", "namespace": "demo"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "stash-demo"}},
                 "template": {"metadata": {"labels": {"app": "stash-demo"}},
                              "spec": {"containers": [{"name": "busybox", "image": "busybox"}]}}}}));
    c.seed(pod("stash-demo-7489fcb7f5-jctj4", true));
    c.seed(pod("stash-demo-69f9ffbbf7-bww24", false));
    c.seed(json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "stash-backup-pause-backup", "namespace": "demo"},
        "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
        "status": {"lastScheduleTime": "2019-08-02T06:15:00Z"}}));
    c.seed(json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
        "metadata": {"name": "pause-backup-1564659789", "namespace": "demo",
                     "labels": {"stash.appscode.com/invoker-name": "pause-backup"}},
        "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "pause-backup"}},
        "status": {"phase": "Failed", "totalHosts": 1, "stats": [
            {"hostname": "host-0", "phase": "Failed", "error": "restic backup failed (exit code 1): Fatal: unable to create lock"}]}}));
    c.seed(json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "pause-backup.1", "namespace": "demo"},
        "involvedObject": {"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration", "name": "pause-backup", "namespace": "demo"},
        "reason": "Backup Skipped", "type": "Normal", "source": {"component": "Backup Triggering CronJob"},
        "message": "Skipping creating BackupSession. Reason: Backup Configuration demo/pause-backup is paused.",
        "lastTimestamp": "2019-08-02T06:20:00Z"}));
    c.seed(json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "other.1", "namespace": "demo"},
        "involvedObject": {"kind": "BackupConfiguration", "name": "other"},
        "reason": "Noise", "type": "Normal", "message": "not ours"}));
    c
}

#[tokio::test]
async fn debug_shows_every_section_and_what_stops_the_backup() {
    let env = Env::new();
    let c = cluster(&env);
    let ran = kubectl_stash(&c, "debug backup -n demo pause-backup").await;
    let out = ran.ok();
    for section in [
        "BackupConfiguration demo/pause-backup",
        "== Findings",
        "== Configuration",
        "== Repository",
        "== CronJob",
        "== Pods",
        "== BackupSessions (newest first)",
        "== Events (oldest first)",
        "== Repository locks",
    ] {
        assert!(
            out.contains(&format!("{section}\n")),
            "no {section:?} in\n{out}"
        );
    }
    for line in [
        "  - paused: scheduled runs create no BackupSession and instant ones are Skipped; resume with kubectl stash resume backup pause-backup -n demo",
        "  - 1 of 2 pod(s) of Deployment/stash-demo run without the stash sidecar",
        "  - the last BackupSession pause-backup-1564659789 Failed: host-0: restic backup failed (exit code 1): Fatal: unable to create lock",
        "  Schedule:    */5 * * * *",
        "  Secret:      gcs-secret: keys RESTIC_PASSWORD",
        "  stash-backup-pause-backup: schedule */5 * * * *, suspend false",
        "  stash-demo-69f9ffbbf7-bww24 Running: sidecar MISSING",
        "  stash-demo-7489fcb7f5-jctj4 Running: sidecar present (ready, 0 restarts)",
        "  pause-backup-1564659789 Failed",
        "    host-0 Failed: restic backup failed (exit code 1): Fatal: unable to create lock",
        "\"Backup Skipped\" BackupConfiguration/pause-backup from \"Backup Triggering CronJob\": Skipping creating BackupSession. Reason: Backup Configuration demo/pause-backup is paused.",
    ] {
        assert!(out.contains(line), "no {line:?} in\n{out}");
    }
    assert!(!out.contains("not ours"), "{out}");
    // The repository was never initialized: restic says so in its section.
    assert!(
        out.contains("== Repository locks\n  (not reachable from this machine: "),
        "{out}"
    );
    println!("{out}");
}

#[tokio::test]
async fn missing_pieces_are_findings_not_failures() {
    let env = Env::new();
    let c = cluster(&env);
    c.remove("/apis/batch/v1/namespaces/demo/cronjobs/stash-backup-pause-backup");
    c.remove("/apis/stash.appscode.com/v1alpha1/namespaces/demo/repositories/gcs-repo");
    c.remove(&format!("{SESSIONS}/pause-backup-1564659789"));
    let ran = kubectl_stash(&c, "debug backup -n demo --backupconfig pause-backup").await;
    let out = ran.ok();
    assert!(
        out.contains("  - Repository \"gcs-repo\" not found: the sidecar has nowhere to back up"),
        "{out}"
    );
    assert!(
        out.contains("  - CronJob stash-backup-pause-backup not found: nothing fires on schedule"),
        "{out}"
    );
    assert!(
        out.contains("== CronJob\n  stash-backup-pause-backup: NOT FOUND"),
        "{out}"
    );
    assert!(
        out.contains("== BackupSessions (newest first)\n  none"),
        "{out}"
    );
    let ran = kubectl_stash(&c, "debug backup -n demo nope").await;
    assert_eq!(
        ran.error(),
        "backupconfiguration \"nope\" not found in namespace \"demo\""
    );
}
