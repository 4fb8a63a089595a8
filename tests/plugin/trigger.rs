//! `trigger`: the CronJob's BackupSession (compared with what
//! `stash::trigger::trigger` makes on the same state), the paused path, and
//! `--wait` following a session the test drives to its end.

use std::time::Duration;

use serde_json::{Value, json};
use stash::api::events::COMPONENT_CRONJOB;
use stash::recorder::Recorder;
use stash_testkit::{Cluster, Identity};

use super::{Captured, NS, SESSIONS, config, kubectl_stash, kubectl_stash_as};

fn cluster(paused: bool) -> Cluster {
    let c = Cluster::new();
    c.seed(config("pause-backup", paused, json!({})));
    c
}

/// A stored object without what the API server fills per write.
fn comparable(mut v: Value) -> Value {
    for f in [
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "managedFields",
    ] {
        v["metadata"].as_object_mut().unwrap().remove(f);
    }
    v
}

#[tokio::test]
async fn the_session_is_the_one_the_cronjob_makes() {
    let c = cluster(false);
    let ran = kubectl_stash(&c, "trigger -n demo pause-backup").await;
    let out = ran.ok();
    let name = out
        .strip_prefix("backupsession.stash.appscode.com/")
        .and_then(|l| l.strip_suffix(" created\n"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    let seconds: i64 = name.strip_prefix("pause-backup-").unwrap().parse().unwrap();
    let by_plugin = c.object(&format!("{SESSIONS}/{name}"));

    // The CronJob's command on a cluster in the same state, at the same second.
    let cron = cluster(false);
    let client = cron.client(Identity::cron_job(NS, "pause-backup"));
    let recorder = Recorder::new(client.clone(), COMPONENT_CRONJOB);
    let outcome = stash::trigger::trigger(
        client,
        &recorder,
        NS,
        "BackupConfiguration",
        "pause-backup",
        jiff::Timestamp::from_second(seconds).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(outcome, stash::trigger::Outcome::Created(name.clone()));
    let by_cron = cron.object(&format!("{SESSIONS}/{name}"));
    pretty_assertions::assert_eq!(comparable(by_plugin), comparable(by_cron));
}

#[tokio::test]
async fn paused_creates_nothing_records_the_skip_and_fails_with_the_reason() {
    let c = cluster(true);
    let ran = kubectl_stash(&c, "trigger -n demo pause-backup").await;
    assert_eq!(
        ran.error(),
        "backup skipped: Backup Configuration demo/pause-backup is paused; no BackupSession was created (event \"Backup Skipped\" recorded). Resume it with: kubectl stash resume backup pause-backup -n demo"
    );
    assert!(c.list(SESSIONS, None).is_empty());
    let events = c.list("/api/v1/namespaces/demo/events", None);
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["reason"], "Backup Skipped");
    assert_eq!(
        e["message"],
        "Skipping creating BackupSession. Reason: Backup Configuration demo/pause-backup is paused."
    );
    // A person's trigger, not the schedule's.
    assert_eq!(e["source"]["component"], "kubectl stash");
}

#[tokio::test]
async fn a_missing_configuration_is_one_line() {
    let c = cluster(false);
    let ran = kubectl_stash(&c, "trigger -n demo nope").await;
    assert_eq!(
        ran.error(),
        "backupconfiguration \"nope\" not found in namespace \"demo\""
    );
}

/// A `trigger --wait` running in the background.
type Waiting = tokio::task::JoinHandle<super::Ran>;

/// Starts `trigger --wait` and returns the session's name once it exists.
async fn start_waiting(c: &Cluster, out: &Captured) -> (Waiting, String) {
    let task = {
        let (c, out) = (c.clone(), out.clone());
        tokio::spawn(async move {
            kubectl_stash_as(
                &c,
                Identity::admin(),
                "trigger -n demo pause-backup --wait --timeout 30s",
                "",
                out,
            )
            .await
        })
    };
    c.wait_until("the session exists", |c| !c.list(SESSIONS, None).is_empty())
        .await;
    let name = c.list(SESSIONS, None)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.wait_for_open_watches(1).await;
    (task, name)
}

/// Sets the session's status, then waits until the output shows `line`.
async fn drive(c: &Cluster, out: &Captured, name: &str, status: Value, line: &str) {
    c.edit(&format!("{SESSIONS}/{name}"), |s| s["status"] = status);
    tokio::time::timeout(Duration::from_secs(10), async {
        while !out.text().contains(line) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never printed {line:?}: {}", out.text()));
}

/// A `trigger --wait` under way on a fresh cluster, its session set
/// Running (one host) and the output showing `line`.
async fn waiting_on_a_running_session(line: &str) -> (Cluster, Captured, Waiting, String) {
    let c = cluster(false);
    let out = Captured::default();
    let (task, name) = start_waiting(&c, &out).await;
    drive(
        &c,
        &out,
        &name,
        json!({"phase": "Running", "totalHosts": 1}),
        line,
    )
    .await;
    (c, out, task, name)
}

#[tokio::test]
async fn wait_follows_each_host_to_succeeded() {
    let (c, out, task, name) = waiting_on_a_running_session("phase Running (1 host)").await;
    drive(
        &c,
        &out,
        &name,
        json!({"phase": "Running", "totalHosts": 1, "stats": [{"hostname": "host-0", "phase": "Running"}]}),
        "host-0: backing up",
    )
    .await;
    c.edit(&format!("{SESSIONS}/{name}"), |s| {
        s["status"] = json!({"phase": "Succeeded", "totalHosts": 1, "sessionDuration": "3s",
            "stats": [{"hostname": "host-0", "phase": "Succeeded", "duration": "2.1s",
                       "snapshots": [{"name": "4f3a2b1c9d8e", "path": "/source/data", "uploaded": "1.2 KiB"}]}]})
    });
    let ran = task.await.unwrap();
    assert_eq!(
        ran.ok(),
        format!(
            "backupsession.stash.appscode.com/{name} created\nphase Running (1 host)\nhost-0: backing up\nhost-0: Succeeded in 2.1s: snapshot 4f3a2b1c /source/data (1.2 KiB uploaded)\nbackupsession.stash.appscode.com/{name} Succeeded in 3s\n"
        )
    );
}

#[tokio::test]
async fn wait_exits_non_zero_with_the_hosts_error_when_it_failed() {
    let (c, _out, task, name) = waiting_on_a_running_session("phase Running").await;
    c.edit(&format!("{SESSIONS}/{name}"), |s| {
        s["status"] = json!({"phase": "Failed", "totalHosts": 1,
            "stats": [{"hostname": "host-0", "phase": "Failed", "duration": "1s",
                       "error": "backup of /source/data: restic backup failed (exit code 1): Fatal: wrong password or no key found"}]})
    });
    let ran = task.await.unwrap();
    assert_eq!(
        ran.error(),
        format!(
            "backupsession demo/{name} Failed: host-0: backup of /source/data: restic backup failed (exit code 1): Fatal: wrong password or no key found"
        )
    );
    assert!(
        ran.out
            .contains("host-0: Failed in 1s: backup of /source/data"),
        "{}",
        ran.out
    );
}

#[tokio::test]
async fn wait_reports_a_session_skipped_after_it_was_created() {
    let c = cluster(false);
    let out = Captured::default();
    let (task, name) = start_waiting(&c, &out).await;
    // Paused right after the trigger: the BackupSession controller skips it.
    c.edit(&format!("{SESSIONS}/{name}"), |s| {
        s["status"] = json!({"phase": "Skipped"})
    });
    let ran = task.await.unwrap();
    assert_eq!(
        ran.error(),
        format!(
            "backupsession demo/{name} Skipped: Backup Configuration is paused (resume it with: kubectl stash resume backup pause-backup -n demo)"
        )
    );
}

#[tokio::test]
async fn wait_fails_when_the_session_goes_or_time_runs_out() {
    let c = cluster(false);
    let out = Captured::default();
    let (task, name) = start_waiting(&c, &out).await;
    c.remove(&format!("{SESSIONS}/{name}"));
    let ran = task.await.unwrap();
    assert_eq!(
        ran.error(),
        format!(
            "backupsession \"{name}\" in namespace \"demo\" was deleted before the watch saw it finish"
        )
    );

    let c = cluster(false);
    let ran = kubectl_stash(&c, "trigger -n demo pause-backup --wait --timeout 300ms").await;
    let err = ran.error();
    assert!(
        err.starts_with("gave up waiting for backupsession \"pause-backup-"),
        "{err}"
    );
    assert!(err.contains("after 300ms (it goes on;"), "{err}");
}
