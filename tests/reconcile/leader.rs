//! Leader election against the fake cluster of `tests/support`: the replica takes the
//! free Lease and starts reconciling; when another identity shows up as the
//! holder, it stops reconciling.

use stash_testkit as support;

use std::time::Duration;

use serde_json::json;
use stash::reconcile::LEASE_NAME;
use stash::runtime::drain::Drain;
use stash::runtime::lease::run_while_leader;
use support::{Cluster, Identity};
use tokio::sync::mpsc;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/stash-system/leases/stash-reconciler";

/// Signals when dropped, i.e. when the reconciler's task ends or is aborted.
struct Stopped(mpsc::UnboundedSender<&'static str>);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.send("stopped");
    }
}

#[tokio::test]
async fn takes_a_free_lease_reconciles_and_stops_when_it_is_taken_away() {
    assert_eq!(LEASE_NAME, "stash-reconciler");
    let cluster = Cluster::new();
    let client = cluster.client(Identity::reconciler());

    let (tx, mut rx) = mpsc::unbounded_channel();
    let elector = tokio::spawn(async move {
        run_while_leader(
            stash::reconcile::candidate(client, "stash-system", "stash-webhook-a"),
            move |_stop| {
                let tx = tx.clone();
                async move {
                    let _guard = Stopped(tx.clone());
                    let _ = tx.send("started");
                    std::future::pending::<()>().await;
                }
            },
            std::future::pending(),
        )
        .await
    });

    let wait = Duration::from_secs(20);
    let first = tokio::time::timeout(wait, rx.recv())
        .await
        .expect("never became leader");
    assert_eq!(first, Some("started"));
    {
        let lease = cluster.object(LEASE);
        assert_eq!(lease["spec"]["holderIdentity"], "stash-webhook-a");
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);
    }

    // Another replica holds the Lease now (as after a partition): the
    // watchdog reads it and stops the reconciler.
    cluster.edit(LEASE, |lease| {
        lease["spec"]["holderIdentity"] = json!("stash-webhook-b");
        lease["spec"]["renewTime"] = json!(jiff::Timestamp::now().to_string());
    });
    let next = tokio::time::timeout(wait, rx.recv())
        .await
        .expect("kept reconciling");
    assert_eq!(next, Some("stopped"));

    elector.abort();
    let _ = elector.await;
    let log = cluster.log();
    // Every write to the Lease went through the Lease API of its namespace.
    assert!(
        log.iter().filter(|r| r.method != "GET").all(|r| r
            .path
            .starts_with("/apis/coordination.k8s.io/v1/namespaces/stash-system/leases")),
        "{log:#?}"
    );
    assert_eq!(cluster.forbidden_requests(), Vec::<String>::new());
}

#[tokio::test]
async fn on_drain_stops_reconciling_and_releases_the_lease() {
    let cluster = Cluster::new();
    let client = cluster.client(Identity::reconciler());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let elector = tokio::spawn(async move {
        run_while_leader(
            stash::reconcile::candidate(client, "stash-system", "stash-webhook-a"),
            move |stop: Drain| {
                let tx = tx.clone();
                async move {
                    let _guard = Stopped(tx.clone());
                    let _ = tx.send("started");
                    stop.into_signaled().await;
                }
            },
            async {
                let _ = drain_rx.await;
            },
        )
        .await
    });

    let wait = Duration::from_secs(20);
    let first = tokio::time::timeout(wait, rx.recv())
        .await
        .expect("never became leader");
    assert_eq!(first, Some("started"));
    assert_eq!(
        cluster.object(LEASE)["spec"]["holderIdentity"],
        "stash-webhook-a"
    );

    drain_tx.send(()).unwrap();
    let next = tokio::time::timeout(wait, rx.recv())
        .await
        .expect("kept reconciling");
    assert_eq!(next, Some("stopped"));
    // The election ends by itself, the Lease released for the next replica.
    let result = tokio::time::timeout(wait, elector)
        .await
        .expect("the election did not end on drain")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    let lease = cluster.object(LEASE);
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .is_none_or(|h| h != "stash-webhook-a"),
        "{lease:#}"
    );
    assert_eq!(cluster.forbidden_requests(), Vec::<String>::new());
}

/// On drain the work in flight is told to stop and finishes (it is not
/// aborted), the Lease still ours while it does; the Lease is released
/// after it has returned, and the election ends.
#[tokio::test]
async fn on_drain_the_work_in_flight_finishes_before_the_lease_is_released() {
    let cluster = Cluster::new();
    let client = cluster.client(Identity::reconciler());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let seen = cluster.clone();
    let elector = tokio::spawn(async move {
        run_while_leader(
            stash::reconcile::candidate(client, "stash-system", "stash-webhook-a"),
            move |mut stop: Drain| {
                let (tx, seen) = (tx.clone(), seen.clone());
                async move {
                    let _guard = Stopped(tx.clone());
                    let _ = tx.send("started");
                    stop.signaled().await;
                    // A reconcile still in flight when the stop comes.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let holder = seen.object(LEASE)["spec"]["holderIdentity"].clone();
                    if holder == "stash-webhook-a" {
                        let _ = tx.send("finished while holding the Lease");
                    }
                }
            },
            async {
                let _ = drain_rx.await;
            },
        )
        .await
    });

    let wait = Duration::from_secs(20);
    let first = tokio::time::timeout(wait, rx.recv())
        .await
        .expect("never became leader");
    assert_eq!(first, Some("started"));
    drain_tx.send(()).unwrap();
    let result = tokio::time::timeout(wait, elector)
        .await
        .expect("the election did not end on drain")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    assert_eq!(events, ["finished while holding the Lease", "stopped"]);
    let lease = cluster.object(LEASE);
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .is_none_or(|h| h != "stash-webhook-a"),
        "{lease:#}"
    );
    assert_eq!(cluster.forbidden_requests(), Vec::<String>::new());
}
