//! A reconciler told to stop (the server's drain) finishes the reconcile it
//! is in the middle of before it returns: a CronJob half-applied when a
//! rollout stops the pod is written, not dropped, and the Lease is released
//! only after (tests/reconcile/leader.rs covers that part).

use stash_testkit as support;

use std::sync::Arc;
use std::time::Duration;

use super::config::{bc, deployment, repository, secret};
use super::feed::start_feed;
use support::{Cluster, Identity};
use tokio::sync::{Notify, oneshot};

const CRONJOB: &str = "/apis/batch/v1/namespaces/demo/cronjobs/stash-backup-pause-backup";

/// The reconciler's client, whose first write of a CronJob waits at a gate:
/// `entered` fires when it arrives, and it goes on to the API server only
/// once `open` is notified.
fn gated_client(c: &Cluster, entered: Arc<Notify>, open: Arc<Notify>) -> kube::Client {
    let inner = c.client(Identity::reconciler());
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (inner, entered, open) = (inner.clone(), entered.clone(), open.clone());
        async move {
            if req.method() != http::Method::GET && req.uri().path().contains("/cronjobs") {
                entered.notify_one();
                open.notified().await;
            }
            inner.send(req).await
        }
    });
    kube::Client::new(service, "default")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_stop_the_reconcile_in_flight_finishes_and_then_the_controller_returns() {
    let c = Cluster::new();
    c.seed(secret());
    c.seed(repository());
    c.seed(deployment());
    c.seed(bc());
    let (feed, _feeding) = start_feed(&c).await;
    let (entered, open) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (stop, stopped) = oneshot::channel::<()>();
    let controller = tokio::spawn(stash::reconcile::backup_configuration::run_until(
        gated_client(&c, entered.clone(), open.clone()),
        c.settings().image.clone(),
        c.settings(),
        feed,
        async move {
            let _ = stopped.await;
        },
    ));
    tokio::time::timeout(support::WAIT, entered.notified())
        .await
        .expect("the reconciler writes the CronJob");

    // Stopped in the middle of that write.
    stop.send(()).expect("the controller listens for the stop");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !controller.is_finished(),
        "the controller returned with a reconcile still in flight"
    );
    assert_eq!(c.get(CRONJOB), None, "the write is still held at the gate");

    open.notify_one();
    tokio::time::timeout(support::WAIT, controller)
        .await
        .expect("the controller returns once its reconcile has finished")
        .expect("the controller did not panic");
    let cronjob = c
        .get(CRONJOB)
        .expect("the reconcile in flight wrote its CronJob");
    assert_eq!(cronjob["spec"]["schedule"], "*/5 * * * *");
}
