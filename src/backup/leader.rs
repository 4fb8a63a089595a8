//! Leader election on the coordination.k8s.io/v1 Lease
//! `lock-<kind>-<name>-backup`, identity POD_NAME (kube-lease-manager).
//!
//! Two uses, see [`super::host::Election`]:
//! - [`while_leader`]: Deployment/ReplicaSet replicas compete; the holder runs
//!   the session loop, and stops it if the Lease is lost (another replica then
//!   takes over).
//! - [`Turns::hold`]: StatefulSet/DaemonSet pods take the Lease around each
//!   backup and release it after, so restic runs one pod at a time.

use std::future::Future;

use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};

/// Lease timing: a dead holder is replaced after `duration` seconds; the
/// holder renews `grace` seconds before that.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    pub duration: u64,
    pub grace: u64,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            duration: 15,
            grace: 5,
        }
    }
}

async fn manager(
    client: kube::Client,
    namespace: &str,
    lease: &str,
    identity: &str,
    timing: LeaseTiming,
) -> anyhow::Result<LeaseManager> {
    LeaseManagerBuilder::new(client, lease)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(timing.duration)
        .with_grace(timing.grace)
        .with_field_manager(format!("stash-backup-{identity}"))
        .build()
        .await
        .map_err(|e| anyhow::anyhow!("cannot use Lease {namespace}/{lease}: {e}"))
}

/// Runs `work` whenever this pod holds the Lease; stops it when the Lease is
/// lost and waits to win it again. Returns only if `work` returns.
pub async fn while_leader<F, Fut>(
    client: kube::Client,
    namespace: &str,
    lease: &str,
    identity: &str,
    timing: LeaseTiming,
    mut work: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let manager = manager(client, namespace, lease, identity, timing).await?;
    let (mut leading, task) = manager.watch().await;
    tracing::info!(lease, identity, "waiting for the backup Lease");
    loop {
        while !*leading.borrow_and_update() {
            if leading.changed().await.is_err() {
                return Err(lease_task_error(task).await);
            }
        }
        tracing::info!(
            lease,
            identity,
            "holding the backup Lease; watching BackupSessions"
        );
        enum Stop {
            Done(anyhow::Result<()>),
            Lost,
            ManagerGone,
        }
        let stop = tokio::select! {
            result = work() => Stop::Done(result),
            gone = async {
                loop {
                    if leading.changed().await.is_err() { return true; }
                    if !*leading.borrow_and_update() { return false; }
                }
            } => if gone { Stop::ManagerGone } else { Stop::Lost },
        };
        match stop {
            Stop::Done(result) => {
                drop(leading);
                let _ = task.await;
                return result;
            }
            Stop::ManagerGone => return Err(lease_task_error(task).await),
            Stop::Lost => {
                tracing::warn!(lease, identity, "lost the backup Lease; stopped watching");
            }
        }
    }
}

async fn lease_task_error(
    task: tokio::task::JoinHandle<kube_lease_manager::Result<LeaseManager>>,
) -> anyhow::Error {
    match task.await {
        Ok(Err(e)) => anyhow::anyhow!("Lease manager stopped: {e}"),
        Ok(Ok(_)) => anyhow::anyhow!("Lease manager stopped"),
        Err(e) => anyhow::anyhow!("Lease manager task failed: {e}"),
    }
}

/// A Lease held only around each backup.
pub struct Turns {
    manager: LeaseManager,
    lease: String,
}

impl Turns {
    /// Prepares the Lease (creating it if needed).
    pub async fn new(
        client: kube::Client,
        namespace: &str,
        lease: &str,
        identity: &str,
        timing: LeaseTiming,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            manager: manager(client, namespace, lease, identity, timing).await?,
            lease: lease.to_string(),
        })
    }

    /// Waits for the Lease, runs `work` while renewing it, then releases it.
    /// If the Lease is lost mid-way, `work` is dropped (restic is killed) and
    /// an error returned.
    pub async fn hold<T>(&self, work: impl Future<Output = T>) -> anyhow::Result<T> {
        while !self
            .manager
            .changed()
            .await
            .map_err(|e| anyhow::anyhow!("cannot take Lease {}: {e}", self.lease))?
        {}
        let result = tokio::select! {
            value = work => Ok(value),
            lost = async {
                loop {
                    match self.manager.changed().await {
                        Ok(true) => continue,
                        Ok(false) => return anyhow::anyhow!("lost Lease {} during the backup", self.lease),
                        Err(e) => return anyhow::anyhow!("cannot renew Lease {}: {e}", self.lease),
                    }
                }
            } => Err(lost),
        };
        if let Err(e) = self.manager.release().await {
            tracing::warn!(lease = %self.lease, error = %e, "cannot release the Lease");
        }
        result
    }
}
