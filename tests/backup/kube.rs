//! The sidecar's Kubernetes layer (`Sidecar::handle`, the Lease helpers, the
//! lock-holder judge) against the fake cluster of `tests/support`, with the
//! real restic and a local repository. Each test hands the sidecar one
//! session object, possibly stale, and checks the requests it made and what
//! the cluster holds afterwards.

use stash_testkit as support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use stash::api::{BackupSession, HostBackupPhase};
use stash::backup::controller::Handled;
use stash::runtime::lease::{LeaseTiming, Turns};
use support::restic::{Env, NS};
use support::{Cluster, Identity};

const BC_PATH: &str =
    "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupconfigurations/pause-backup";
const REPO_PATH: &str = "/apis/stash.appscode.com/v1alpha1/namespaces/demo/repositories/gcs-repo";
const SESSIONS: &str = "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupsessions";
const EVENTS: &str = "/api/v1/namespaces/demo/events";

/// A cluster holding `objects` (as if they had been there before the test)
/// and a client for the workload's sidecar (ServiceAccount `default`).
fn fake_api(objects: Vec<(&str, Value)>) -> (kube::Client, Cluster) {
    let cluster = Cluster::new();
    for (path, obj) in objects {
        cluster.seed_at(path, obj);
    }
    (cluster.client(Identity::sidecar(NS, "default")), cluster)
}

fn session(name: &str) -> Value {
    json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
        "metadata": {"name": name, "namespace": NS, "uid": format!("{name}-uid"),
                     "labels": {"stash.appscode.com/backup-configuration": "pause-backup"}},
        "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "pause-backup"}}
    })
}

fn requests(cluster: &Cluster) -> Vec<(String, String)> {
    cluster
        .log()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect()
}

fn bodies(cluster: &Cluster, method: Method, path: &str) -> Vec<Value> {
    cluster
        .log()
        .into_iter()
        .filter(|r| r.method == method.as_str() && r.path == path)
        .map(|r| r.body)
        .collect()
}

fn typed_session(cluster: &Cluster, name: &str) -> BackupSession {
    cluster.typed(&format!("{SESSIONS}/{name}"))
}

#[tokio::test]
async fn a_session_ends_with_restic_snapshot_ids_and_repository_totals() {
    let env = Env::new();
    let s1 = format!("{SESSIONS}/pause-backup-1564659789");
    let (client, cluster) = fake_api(vec![
        (BC_PATH, env.config(false)),
        (REPO_PATH, env.repository()),
        (&s1, session("pause-backup-1564659789")),
    ]);
    // The claim meets a conflict (the reconciler wrote after the sidecar's
    // copy was taken): the session is read again and the decision made on
    // the latest state.
    let seen = typed_session(&cluster, "pause-backup-1564659789");
    cluster.edit(&s1, |o| {
        o["status"] = json!({"phase": "Running", "totalHosts": 1})
    });
    let sidecar = env.sidecar(client, None);

    let handled = sidecar.handle(&seen).await.unwrap();
    let Handled::BackedUp(outcome) = handled else {
        panic!("expected a backup, got {handled:?}")
    };
    assert_eq!(
        outcome.stats.phase,
        Some(HostBackupPhase::Succeeded),
        "{:?}",
        outcome.stats.error
    );

    assert_eq!(
        requests(&cluster),
        [
            ("GET", BC_PATH.to_string()),
            ("PUT", format!("{s1}/status")),
            ("GET", s1.clone()),
            ("PUT", format!("{s1}/status")),
            ("GET", REPO_PATH.to_string()),
            ("GET", format!("{s1}/status")),
            ("PUT", format!("{s1}/status")),
            // The only host, so the last to finish: it runs `restic check`.
            ("GET", REPO_PATH.to_string()),
            ("GET", format!("{REPO_PATH}/status")),
            ("PATCH", format!("{REPO_PATH}/status")),
            ("POST", EVENTS.to_string()),
        ]
        .map(|(m, p)| (m.to_string(), p))
    );

    // The session's status holds restic's real snapshot id for host-0; the phase is the reconciler's.
    let stored = typed_session(&cluster, "pause-backup-1564659789");
    let status = stored.status.unwrap();
    assert_eq!(status.phase, Some(stash::api::BackupSessionPhase::Running));
    assert_eq!(status.stats.len(), 1);
    let host = &status.stats[0];
    assert_eq!(host.hostname, "host-0");
    assert_eq!(host.phase, Some(HostBackupPhase::Succeeded));
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(
        host.snapshots[0].name,
        snaps[0]["short_id"].as_str().unwrap()
    );
    assert_eq!(snaps[0]["hostname"], "host-0");
    assert_eq!(
        host.snapshots[0].path,
        env.p("source/data").display().to_string()
    );

    // The Repository patch: totals, times, guarded by the resourceVersion read just before.
    let patch = &bodies(&cluster, Method::PATCH, &format!("{REPO_PATH}/status"))[0];
    assert_eq!(patch["status"]["snapshotCount"], 1);
    assert_eq!(patch["status"]["snapshotsRemovedOnLastCleanup"], 0);
    assert!(patch["status"]["firstBackupTime"].is_string());
    assert_eq!(
        patch["status"]["firstBackupTime"],
        patch["status"]["lastBackupTime"]
    );
    assert!(patch["metadata"]["resourceVersion"].is_string());
    // INTEGRITY: `restic check` found no errors.
    assert_eq!(patch["status"]["integrity"], true);

    // Each status write sends the whole status back with the resourceVersion
    // it decided on: the claim (refused once, then made), then the result.
    let puts = bodies(&cluster, Method::PUT, &format!("{s1}/status"));
    assert_eq!(puts.len(), 3, "a refused claim, the claim, the result");
    for put in &puts {
        assert_ne!(put["metadata"]["resourceVersion"], Value::Null);
    }
    assert_eq!(puts[1]["status"]["stats"][0]["hostname"], "host-0");
    assert_eq!(puts[1]["status"]["stats"][0]["phase"], "Running");
    assert_eq!(puts[2]["status"]["stats"][0]["hostname"], "host-0");
    assert_eq!(puts[2]["status"]["stats"][0]["phase"], "Succeeded");

    let event = &bodies(&cluster, Method::POST, EVENTS)[0];
    // A core/v1 Event without eventTime: the API server checks reportingController
    // only on new-style events, and "Backup Sidecar" (with a space) would fail it.
    assert!(event.get("eventTime").is_none() && event.get("reportingComponent").is_none());
    assert_eq!(event["reason"], "Host Backup Succeeded");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["message"], "backup succeeded for host host-0");
    assert_eq!(event["source"]["component"], "Backup Sidecar");
    assert_eq!(event["involvedObject"]["kind"], "BackupSession");
    assert_eq!(event["involvedObject"]["name"], "pause-backup-1564659789");

    // A second pass over the same session (e.g. the watch replays it) does nothing.
    let again = sidecar
        .handle(&typed_session(&cluster, "pause-backup-1564659789"))
        .await
        .unwrap();
    assert_eq!(again, Handled::Ignored("this host has already reported"));
    assert_eq!(env.snapshots().len(), 1);

    // A new session adds a second snapshot and the Repository count follows.
    let s2 = format!("{SESSIONS}/pause-backup-2");
    cluster.seed_at(&s2, session("pause-backup-2"));
    let Handled::BackedUp(second) = sidecar
        .handle(&typed_session(&cluster, "pause-backup-2"))
        .await
        .unwrap()
    else {
        panic!("expected a backup")
    };
    assert!(second.succeeded());
    // Every request the sidecar made is one the install's ClusterRole allows.
    assert_eq!(cluster.forbidden_requests(), Vec::<String>::new());
    let repo = cluster.object(REPO_PATH);
    assert_eq!(repo["status"]["snapshotCount"], 2);
    assert_eq!(repo["status"]["integrity"], true);
    assert_ne!(
        repo["status"]["firstBackupTime"],
        repo["status"]["lastBackupTime"]
    );
}

#[tokio::test]
async fn a_damaged_repository_turns_integrity_false_and_the_backup_still_succeeds() {
    let env = Env::new();
    let (client, cluster) = fake_api(vec![
        (BC_PATH, env.config(false)),
        (REPO_PATH, env.repository()),
    ]);
    // `restic check` runs at most once per --check-interval (a day by
    // default); with 0 after every session.
    let daily = env.sidecar(client.clone(), None);
    let every_session = env
        .sidecar(client, None)
        .with_check_interval(Duration::ZERO);
    let sessions = [
        (1, false, &daily, true),
        // Damaged, but checked less than a day ago: not checked again.
        (2, true, &daily, true),
        (3, false, &every_session, false),
    ];
    let mut checked_at = serde_json::Value::Null;
    for (i, damage, sidecar, intact) in sessions {
        if damage {
            // A truncated pack file: restic writes new packs and reads only
            // the index, so the backup succeeds; `restic check` finds the
            // damage (after restic's own read retries: ~45 s).
            std::fs::write(first_pack(&env.p("repo/data")), b"damaged").unwrap();
        }
        let name = format!("pause-backup-{i}");
        cluster.seed_at(&format!("{SESSIONS}/{name}"), session(&name));
        let Handled::BackedUp(o) = sidecar
            .handle(&typed_session(&cluster, &name))
            .await
            .unwrap()
        else {
            panic!("expected a backup")
        };
        assert!(o.succeeded(), "{:?}", o.stats.error);
        let repo = cluster.object(REPO_PATH);
        assert_eq!(repo["status"]["integrity"], intact, "{}", repo["status"]);
        assert_eq!(repo["status"]["snapshotCount"], i);
        let at = repo["status"]["lastIntegrityCheckTime"].clone();
        assert!(at.is_string(), "{}", repo["status"]);
        if i == 2 {
            assert_eq!(at, checked_at, "not checked again within the interval");
        }
        checked_at = at;
    }
}

/// The first pack file under a local repository's `data/`.
fn first_pack(data: &std::path::Path) -> std::path::PathBuf {
    let mut packs: Vec<_> = std::fs::read_dir(data)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .collect();
    packs.sort();
    packs.into_iter().next().expect("a pack file")
}

#[tokio::test]
async fn a_paused_invoker_skips_without_touching_the_repository() {
    let env = Env::new();
    let s = format!("{SESSIONS}/instant-backupsession");
    let (client, cluster) = fake_api(vec![
        (BC_PATH, env.config(true)),
        (REPO_PATH, env.repository()),
        (&s, session("instant-backupsession")),
    ]);
    let sidecar = env.sidecar(client, None);
    let session = typed_session(&cluster, "instant-backupsession");
    assert_eq!(sidecar.handle(&session).await.unwrap(), Handled::Skipped);
    // One read; the skip event is the BackupSession controller's (with the
    // Skipped phase), so `kubectl describe` shows it once whoever is first.
    assert_eq!(
        requests(&cluster),
        [("GET".to_string(), BC_PATH.to_string())]
    );
    assert!(
        std::fs::read_dir(env.p("repo")).unwrap().next().is_none(),
        "repository untouched"
    );
    assert!(
        typed_session(&cluster, "instant-backupsession")
            .status
            .is_none(),
        "no status written"
    );

    // Seen again (e.g. an update event): still skipped, still nothing written.
    assert_eq!(sidecar.handle(&session).await.unwrap(), Handled::Skipped);
    assert!(bodies(&cluster, Method::POST, EVENTS).is_empty());
    assert!(requests(&cluster).iter().all(|(m, _)| m == "GET"));
}

#[tokio::test]
async fn a_failed_host_is_reported_failed_with_restics_message() {
    let env = Env::new();
    std::fs::write(env.p("secret/RESTIC_PASSWORD"), "first").unwrap();
    let s = format!("{SESSIONS}/s1");
    let (client, cluster) = fake_api(vec![
        (BC_PATH, env.config(false)),
        (REPO_PATH, env.repository()),
        (&s, session("s1")),
    ]);
    let sidecar = env.sidecar(client, None);
    assert!(
        matches!(sidecar.handle(&typed_session(&cluster, "s1")).await.unwrap(), Handled::BackedUp(o) if o.succeeded())
    );

    std::fs::write(env.p("secret/RESTIC_PASSWORD"), "changed").unwrap();
    let s2 = format!("{SESSIONS}/s2");
    cluster.seed_at(&s2, session("s2"));
    let repo_patches_before = bodies(&cluster, Method::PATCH, &format!("{REPO_PATH}/status")).len();
    let Handled::BackedUp(o) = sidecar
        .handle(&typed_session(&cluster, "s2"))
        .await
        .unwrap()
    else {
        panic!("expected a report")
    };
    assert_eq!(o.stats.phase, Some(HostBackupPhase::Failed));
    let stored = typed_session(&cluster, "s2").status.unwrap();
    assert_eq!(stored.stats[0].phase, Some(HostBackupPhase::Failed));
    let err = stored.stats[0].error.clone().unwrap();
    assert!(
        err.contains("Fatal: wrong password or no key found"),
        "{err}"
    );
    assert_eq!(
        bodies(&cluster, Method::PATCH, &format!("{REPO_PATH}/status")).len(),
        repo_patches_before,
        "a failed run leaves the Repository status alone"
    );
    let events = bodies(&cluster, Method::POST, EVENTS);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "Warning");
    assert_eq!(last["reason"], "Host Backup Failed");
    assert_eq!(
        last["message"],
        format!("backup failed for host \"host-0\". Reason: {err}")
    );
}

#[tokio::test]
async fn a_missing_repository_is_reported_not_left_running() {
    let env = Env::new();
    let s = format!("{SESSIONS}/s1");
    let (client, cluster) = fake_api(vec![(BC_PATH, env.config(false)), (&s, session("s1"))]);
    let sidecar = env.sidecar(client, None);
    let Handled::BackedUp(o) = sidecar
        .handle(&typed_session(&cluster, "s1"))
        .await
        .unwrap()
    else {
        panic!("expected a report")
    };
    assert_eq!(
        o.stats.error.as_deref(),
        Some("Repository demo/gcs-repo not found")
    );
    let stored = typed_session(&cluster, "s1").status.unwrap();
    assert_eq!(stored.stats[0].phase, Some(HostBackupPhase::Failed));
}

#[tokio::test]
async fn the_watch_selects_sessions_by_the_invoker_label() {
    let env = Env::new();
    let s = format!("{SESSIONS}/instant-backupsession");
    let (client, cluster) = fake_api(vec![
        (BC_PATH, env.config(true)),
        (&s, session("instant-backupsession")),
    ]);
    let sidecar = env.sidecar(client, None);
    let watch = tokio::spawn(async move { Arc::new(sidecar).watch().await });
    // Wait (bounded) until the listed session has been handled: its invoker is read.
    let mut waited = 0;
    while !requests(&cluster).contains(&("GET".to_string(), BC_PATH.to_string())) {
        assert!(waited < 300, "the listed session was never handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    watch.abort();
    let log = cluster.log();
    let list = &log[0];
    assert_eq!(list.method, "GET");
    assert_eq!(list.path, SESSIONS);
    assert!(
        list.query
            .contains("labelSelector=stash.appscode.com%2Fbackup-configuration%3Dpause-backup"),
        "{}",
        list.query
    );
}

#[tokio::test]
async fn take_turns_holds_the_lease_only_around_the_backup() {
    let lease_path =
        "/apis/coordination.k8s.io/v1/namespaces/demo/leases/lock-statefulset-db-backup";
    let (client, cluster) = fake_api(vec![]);
    let turns = Turns::new(
        client,
        NS,
        "lock-statefulset-db-backup",
        "db-0",
        LeaseTiming::default(),
    )
    .await
    .unwrap();
    // Created on first use.
    assert!(cluster.get(lease_path).is_some());
    let holder_during = turns
        .hold(async { cluster.object(lease_path)["spec"]["holderIdentity"].clone() })
        .await
        .unwrap();
    assert_eq!(holder_during, "db-0");
    let after = cluster.object(lease_path);
    assert!(
        after["spec"].get("holderIdentity").is_none(),
        "released after the backup: {after}"
    );
    let log = cluster.log();
    assert!(log.iter().all(|s| {
        s.path
            .starts_with("/apis/coordination.k8s.io/v1/namespaces/demo/leases")
    }));
    let apply = log
        .iter()
        .find(|s| s.method == "PATCH" && s.query.contains("fieldManager=stash-backup-db-0"))
        .expect("the Lease is taken with our field manager");
    assert_eq!(apply.body["spec"]["holderIdentity"], "db-0");
    assert_eq!(apply.body["spec"]["leaseDurationSeconds"], 15);
}

#[tokio::test]
async fn a_deployment_replica_works_only_while_it_leads() {
    use stash::runtime::lease::while_leader;
    let lease_path =
        "/apis/coordination.k8s.io/v1/namespaces/demo/leases/lock-deployment-stash-demo-backup";
    // Another replica holds a fresh Lease: this one must wait.
    let now = k8s_openapi::jiff::Timestamp::now();
    let other = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "lock-deployment-stash-demo-backup", "namespace": NS},
        "spec": {"holderIdentity": "stash-demo-other", "leaseDurationSeconds": 3,
                 "acquireTime": now.to_string(), "renewTime": now.to_string()}
    });
    let (client, cluster) = fake_api(vec![(lease_path, other)]);
    let started = std::time::Instant::now();
    let shared = cluster.clone();
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        while_leader(
            client,
            NS,
            "lock-deployment-stash-demo-backup",
            "stash-demo-me",
            LeaseTiming {
                duration: 3,
                grace: 1,
            },
            || {
                let holder = shared.object(lease_path)["spec"]["holderIdentity"].clone();
                async move {
                    anyhow::ensure!(
                        holder == "stash-demo-me",
                        "working without the Lease: {holder}"
                    );
                    Ok(())
                }
            },
        ),
    )
    .await
    .expect("the expired Lease is taken over");
    result.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited for the other holder's Lease to expire"
    );
}

#[tokio::test]
async fn lock_holders_are_gone_only_when_their_pod_is() {
    use stash::backup::LockHolders;
    use stash::backup::locks::PodLockHolders;
    let pods = "/api/v1/namespaces/demo/pods";
    let alive = format!("{pods}/stash-demo-69f9-alive");
    let (client, cluster) = fake_api(vec![(
        &alive,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stash-demo-69f9-alive", "namespace": NS}}),
    )]);
    let judge = PodLockHolders {
        pods: kube::Api::namespaced(client, NS),
        own_pod: "stash-demo-69f9-me".into(),
        target_name: "stash-demo".into(),
    };
    assert!(
        judge.is_gone("stash-demo-69f9-me").await,
        "our own pod runs no restic now"
    );
    assert!(
        !judge.is_gone("other-app-1").await,
        "not our workload: left alone"
    );
    assert!(!judge.is_gone("stash-demo-69f9-alive").await);
    assert!(judge.is_gone("stash-demo-69f9-deleted").await);
    assert_eq!(
        requests(&cluster),
        [
            ("GET".to_string(), alive.clone()),
            ("GET".to_string(), format!("{pods}/stash-demo-69f9-deleted")),
        ]
    );
}

#[tokio::test]
async fn finished_sessions_cost_no_api_call() {
    let env = Env::new();
    let mut done = session("old");
    done["status"] = json!({"phase": "Succeeded"});
    let (client, cluster) = fake_api(vec![(&format!("{SESSIONS}/old"), done)]);
    let sidecar = env.sidecar(client, None);
    assert_eq!(
        sidecar
            .handle(&typed_session(&cluster, "old"))
            .await
            .unwrap(),
        Handled::Ignored("already finished")
    );
    assert!(requests(&cluster).is_empty());
}

/// The watch events a real API server sent for one session (ADDED, Running
/// by the reconciler, this host's stats, Succeeded), rewritten to this
/// test's namespace and invoker.
fn captured_watch_events() -> Vec<(String, BackupSession)> {
    let raw = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/real-apiserver/backupsession-watch-events.json"),
    )
    .unwrap();
    let events: Vec<Value> = serde_json::from_str(&raw).unwrap();
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .unwrap()
        .to_string();
    events
        .into_iter()
        .map(|e| {
            let mut o = e["object"].clone();
            o["metadata"]["labels"] =
                json!({"stash.appscode.com/backup-configuration": "pause-backup"});
            o["spec"]["invoker"]["name"] = json!("pause-backup");
            // Replayed as if captured just now: a session created days ago
            // is past its deadline, and the sidecar would rightly not start it.
            o["metadata"]["creationTimestamp"] = json!(now);
            (
                e["type"].as_str().unwrap().to_string(),
                serde_json::from_value(o).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_captured_watch_stream_replayed_late_runs_restic_once() {
    let env = Env::new();
    let events = captured_watch_events();
    let (_, first) = &events[0];
    let name = first.metadata.name.clone().unwrap();
    let path = format!("{SESSIONS}/{name}");
    let (client, cluster) = fake_api(vec![
        (BC_PATH, env.config(false)),
        (REPO_PATH, env.repository()),
        (&path, serde_json::to_value(first).unwrap()),
    ]);
    // The reconciler marks the session Running before the sidecar looks:
    // the ADDED event the sidecar holds is already out of date.
    cluster.edit(&path, |live| {
        live["status"] = json!({"phase": "Running", "totalHosts": 1})
    });
    let sidecar = env.sidecar(client, None);
    // Every event, in order, each after the backup it would have raced:
    // the stale ADDED, the queued "Running, no stats" (the bug's trigger),
    // and the two that follow; then all of them again (a relist).
    let mut outcomes = Vec::new();
    for (_, seen) in events.iter().chain(events.iter()) {
        outcomes.push(sidecar.handle(seen).await.unwrap());
    }
    assert!(
        matches!(&outcomes[0], Handled::BackedUp(o) if o.succeeded()),
        "{:?}",
        outcomes[0]
    );
    for (i, o) in outcomes.iter().enumerate().skip(1) {
        assert!(matches!(o, Handled::Ignored(_)), "event {i}: {o:?}");
    }
    assert_eq!(env.snapshots().len(), 1, "one snapshot per session");
    let stored = typed_session(&cluster, &name);
    let hosts = stored.status.unwrap().stats;
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].phase, Some(HostBackupPhase::Succeeded));
    assert_eq!(
        bodies(&cluster, Method::POST, EVENTS).len(),
        1,
        "one Host Backup Succeeded event"
    );
}

#[tokio::test]
async fn a_restarted_sidecar_reports_its_unfinished_claim_interrupted_and_never_reruns_it() {
    let env = Env::new();
    let path = format!("{SESSIONS}/s1");
    let mut claimed = session("s1");
    // What a sidecar killed mid-backup leaves: its claim, no result.
    claimed["status"] = json!({"phase": "Running", "totalHosts": 1,
                               "stats": [{"hostname": "host-0", "phase": "Running"}]});
    let (client, cluster) = fake_api(vec![
        (BC_PATH, env.config(false)),
        (REPO_PATH, env.repository()),
        (&path, claimed),
    ]);
    let sidecar = env.sidecar(client, None);
    let seen = typed_session(&cluster, "s1");
    assert_eq!(sidecar.handle(&seen).await.unwrap(), Handled::Interrupted);
    assert!(
        std::fs::read_dir(env.p("repo")).unwrap().next().is_none(),
        "restic was not run: the repository is untouched"
    );
    let host = typed_session(&cluster, "s1").status.unwrap().stats[0].clone();
    assert_eq!(host.hostname, "host-0");
    assert_eq!(host.phase, Some(HostBackupPhase::Failed));
    assert_eq!(
        host.error.as_deref(),
        Some(stash::backup::session::INTERRUPTED)
    );
    let event = &bodies(&cluster, Method::POST, EVENTS)[0];
    assert_eq!(event["reason"], "Host Backup Failed");
    assert_eq!(event["type"], "Warning");
    // The stale event that woke it, seen again: the host has reported.
    assert_eq!(
        sidecar.handle(&seen).await.unwrap(),
        Handled::Ignored("this host has already reported")
    );
    assert_eq!(bodies(&cluster, Method::POST, EVENTS).len(), 1);
}

/// A restic lock whose host is a pod of the workload: waited for (bounded,
/// reported as an event, never removed) while that pod is alive; removed at
/// once when a pod of that name is one created after the lock (a StatefulSet
/// pod recreated under its name), or when the pod is gone.
#[tokio::test]
async fn a_lock_of_a_live_pod_is_waited_for_and_removed_once_that_pod_is_gone() {
    use stash_testkit::locks::{hold_lock, lock_files};
    let env = Env::new();
    let pod = |name: &str, created: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": NS, "creationTimestamp": created}})
    };
    let pods = "/api/v1/namespaces/demo/pods";
    let (old, other) = ("stash-demo-69f9ffbbf7-old", "stash-demo-69f9ffbbf7-other");
    let (client, cluster) = fake_api(vec![
        (BC_PATH, env.config(false)),
        (REPO_PATH, env.repository()),
        (&format!("{pods}/{old}"), pod(old, "2020-01-01T00:00:00Z")),
        (
            &format!("{pods}/{other}"),
            pod(other, "2020-01-01T00:00:00Z"),
        ),
    ]);
    let mut sidecar = env
        .sidecar(client, None)
        .with_pod_name("stash-demo-7c9d6b8f4d-4xk2p");
    sidecar.settings.lock_wait = Duration::from_secs(3);
    let run = async |name: &str| {
        cluster.seed_at(&format!("{SESSIONS}/{name}"), session(name));
        let Handled::BackedUp(o) = sidecar
            .handle(&typed_session(&cluster, name))
            .await
            .unwrap()
        else {
            panic!("expected a backup")
        };
        o
    };
    assert!(run("first").await.succeeded());
    let restic = stash::backup::restic::resolve_binary(
        Path::new("restic"),
        std::env::var_os("PATH").as_deref(),
    )
    .unwrap();
    // Pod `old` was running `restic check` (exclusive) when its node died.
    let Some(held) = hold_lock(
        &restic,
        &env.p("repo"),
        support::restic::PASSWORD,
        Some(old),
        true,
    )
    .await
    else {
        return;
    };
    held.kill();

    // The pod is there as far as the API server knows: the backup waits, then fails.
    let waited = run("while-old-lives").await;
    assert_eq!(waited.stats.phase, Some(HostBackupPhase::Failed));
    let err = waited.stats.error.unwrap();
    assert!(
        err.contains("locked exclusively by PID") && err.contains(old),
        "{err}"
    );
    assert_eq!(
        lock_files(&env.p("repo")).len(),
        1,
        "a live pod's lock is never removed"
    );
    let waits: Vec<Value> = bodies(&cluster, Method::POST, EVENTS)
        .into_iter()
        .filter(|e| e["reason"] == "Waiting For Repository Lock")
        .collect();
    assert_eq!(waits.len(), 1, "{waits:?}");
    let message = waits[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "waiting for the repository exclusive lock held by {old} (pid "
        )),
        "{message}"
    );
    assert_eq!(waits[0]["involvedObject"]["name"], "while-old-lives");

    // A pod of that name created after the lock is another pod: the lock goes.
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60)).to_string();
    cluster.edit(&format!("{pods}/{old}"), |p| {
        p["metadata"]["creationTimestamp"] = json!(later);
    });
    let recreated = run("after-old-was-recreated").await;
    assert!(recreated.succeeded(), "{:?}", recreated.stats.error);
    assert!(lock_files(&env.p("repo")).is_empty());

    // A pod that no longer exists: its lock goes too.
    let Some(held) = hold_lock(
        &restic,
        &env.p("repo"),
        support::restic::PASSWORD,
        Some(other),
        true,
    )
    .await
    else {
        return;
    };
    held.kill();
    cluster.remove(&format!("{pods}/{other}"));
    let gone = run("after-other-was-deleted").await;
    assert!(gone.succeeded(), "{:?}", gone.stats.error);
    assert!(lock_files(&env.p("repo")).is_empty());
    assert_eq!(cluster.forbidden_requests(), Vec::<String>::new());
}
