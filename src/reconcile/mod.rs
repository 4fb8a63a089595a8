//! The leader-elected reconciler that runs inside `stash serve` in cluster mode.
//!
//! Thin by design (docs/design.md "The reconciler"): three kube-runtime controllers,
//! [`backup_configuration`], [`backup_session`] and [`restore_session`], that read what exists,
//! compare it with what [`desired`] computes, and write only the difference.
//! [`crate::runtime::lease`] makes sure one replica at a time runs them (Lease [`LEASE_NAME`]); [`crate::recorder`] writes
//! the guide's events; [`apply`] holds the shared write patterns, the finalizer
//! (kube-runtime's helper) and the one error policy, [`own_writes`] the versions
//! a controller's own writes superseded.

pub mod apply;
pub mod backup_configuration;
pub mod backup_session;
pub mod restore_session;
pub mod transition;

pub use stash_core::reconcile::{deadline, desired, own_writes};

use std::future::Future;
use std::sync::Arc;

use crate::runtime::feed::Feed;
use crate::runtime::lease::{Candidate, LeaseTiming};

/// Reconciles a controller runs at once. kube-runtime's default is
/// unbounded: 1,000 configurations applied together opened as many HTTP
/// connections to the API server, each holding its buffers (about 45 KiB,
/// measured with heaptrack in `benches/scale.rs`) long after, and burst the
/// API server's priority-and-fairness budget. Sixteen keep both CPU cores
/// busy on a pass that mostly waits for the API server.
pub const CONCURRENCY: u16 = 16;

/// The controllers' runtime settings ([`CONCURRENCY`]).
pub fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(CONCURRENCY)
}

/// Name of the reconciler's Lease, in the server's namespace.
pub const LEASE_NAME: &str = "stash-reconciler";

/// What the reconciler needs from `stash serve`'s flags.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// Image of the sidecar and of the backup CronJob.
    pub image: String,
    /// Namespace of the `stash-reconciler` Lease (the server's own namespace).
    pub namespace: String,
    /// Identity in the Lease (the pod name).
    pub identity: String,
    /// Settings shared with the webhooks.
    pub settings: crate::settings::Settings,
    /// Where the leader's backup metrics are exported (the server's registry).
    pub metrics: Option<crate::monitoring::collector::Leading>,
}

/// Runs the reconciler until `drain` resolves: competes for the Lease and
/// reconciles only while holding it; on drain stops reconciling and releases
/// the Lease.
pub async fn run(
    client: kube::Client,
    config: ReconcilerConfig,
    feed: Feed,
    drain: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if config.identity.is_empty() {
        anyhow::bail!("the reconciler needs an identity for the Lease (the pod name)");
    }
    crate::runtime::lease::run_while_leader(
        candidate(client.clone(), &config.namespace, &config.identity),
        move |stop| controllers(client.clone(), config.clone(), feed.clone(), stop),
        drain,
    )
    .await
}

/// The reconciler's side of Lease [`LEASE_NAME`]: default timing (15 s,
/// renewed 5 s before expiry), kube-lease-manager's own field manager.
pub fn candidate(client: kube::Client, namespace: &str, identity: &str) -> Candidate {
    Candidate {
        client,
        namespace: namespace.to_string(),
        lease: LEASE_NAME.to_string(),
        identity: identity.to_string(),
        timing: LeaseTiming::default(),
        field_manager: None,
    }
}

/// The three controllers, fed by `feed` (the index the webhooks read) for
/// the kinds it watches. When `stop` fires each stops taking new work and
/// lets the reconciles in flight finish (kube-runtime's graceful shutdown);
/// this returns once all three have, and each keeps its handle on the drain
/// until then.
async fn controllers(
    client: kube::Client,
    config: ReconcilerConfig,
    feed: Feed,
    stop: crate::runtime::drain::Drain,
) {
    let mut sessions = backup_session::Context::new(client.clone());
    sessions.metrics = config.metrics.clone().map(|l| (l, feed.store.clone()));
    let sessions = Arc::new(sessions);
    let restores = Arc::new(restore_session::Context::new(
        client.clone(),
        config.settings.clone(),
        feed.store.clone(),
    ));
    let configs = feed.configs.clone();
    let restore_kind = feed.restores.clone();
    tokio::join!(
        backup_configuration::run_until(
            client,
            config.image,
            config.settings,
            feed,
            stop.clone().into_signaled(),
        ),
        backup_session::run_until(sessions, configs, stop.clone().into_signaled()),
        restore_session::run_until(restores, restore_kind, stop.into_signaled()),
    );
}
