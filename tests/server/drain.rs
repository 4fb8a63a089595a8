//! The drain knows when its tasks have finished: shutting down waits until
//! every task given a handle on it (the reconciler, the SIGHUP handler, the
//! store feed) has released it, not a fixed time.

use stash_testkit::tls as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// A task that, told to drain, still has `work` to finish before it lets go
/// of its handle.
fn finishing(mut drain: stash::runtime::drain::Drain, work: Duration) -> Arc<AtomicBool> {
    let finished = Arc::new(AtomicBool::new(false));
    let done = finished.clone();
    tokio::spawn(async move {
        drain.signaled().await;
        tokio::time::sleep(work).await;
        done.store(true, Ordering::SeqCst);
        drain.release();
    });
    finished
}

#[tokio::test]
async fn shutdown_waits_for_every_handle_on_the_drain_to_be_released() {
    let pki = Pki::new();
    let server = start(pki.config()).await;
    // One on each stage: drained with the webhook port (the reconciler) and
    // after it (the store feed).
    let reconciler = finishing(server.drain(), Duration::from_millis(600));
    let feed = finishing(server.after_webhooks(), Duration::from_millis(300));
    let began = Instant::now();
    server.shutdown().await;
    assert!(
        reconciler.load(Ordering::SeqCst),
        "returned before the reconciler drained"
    );
    assert!(
        feed.load(Ordering::SeqCst),
        "returned before the feed drained"
    );
    // Released as soon as the last handle was, not after a fixed time.
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn the_ports_stop_first_and_the_drain_reports_the_handles_still_held() {
    let pki = Pki::new();
    let server = start(pki.config()).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut held = server.drain();
    let task = tokio::spawn(async move {
        held.signaled().await;
        let _ = rx.await;
        held.release();
    });
    let draining = server.drain_ports().await;
    assert_eq!(draining.held(), 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), draining.released())
            .await
            .is_err(),
        "released while a task still held its handle"
    );
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), draining.released())
        .await
        .expect("not released once the handle was");
    assert_eq!(draining.held(), 0);
    task.await.unwrap();
}
