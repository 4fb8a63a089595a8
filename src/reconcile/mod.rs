//! The leader-elected reconciler that runs inside `stash serve` in cluster mode.
//!
//! Thin by design (docs/design.md "The reconciler"): three kube-runtime controllers,
//! [`backup_configuration`], [`backup_session`] and [`restore_session`], that read what exists,
//! compare it with what [`desired`] computes, and write only the difference.
//! [`leader`] makes sure one replica at a time runs them; [`crate::recorder`] writes
//! the guide's events; [`apply`] holds the shared write patterns.

pub mod apply;
pub mod backup_configuration;
pub mod backup_session;
pub mod desired;
pub mod leader;
pub mod restore_session;

use std::sync::Arc;

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
    pub settings: crate::admission::Settings,
}

/// Runs the reconciler until the future is dropped: competes for the Lease and
/// reconciles only while holding it.
pub async fn run(client: kube::Client, config: ReconcilerConfig) -> anyhow::Result<()> {
    if config.identity.is_empty() {
        anyhow::bail!("the reconciler needs an identity for the Lease (the pod name)");
    }
    let namespace = config.namespace.clone();
    let identity = config.identity.clone();
    leader::run_while_leader(client.clone(), &namespace, &identity, move || {
        controllers(client.clone(), config.clone())
    })
    .await
}

/// The three controllers, until dropped.
async fn controllers(client: kube::Client, config: ReconcilerConfig) {
    let sessions = Arc::new(backup_session::Context::new(client.clone()));
    let restores = Arc::new(restore_session::Context::new(
        client.clone(),
        config.settings.clone(),
    ));
    tokio::join!(
        backup_configuration::run(client, config.image, config.settings),
        backup_session::run(sessions),
        restore_session::run(restores),
    );
}
