//! Leader election on coordination.k8s.io/v1 Leases, in one place.
//!
//! Three roles take a Lease, and all of them go through this module so that
//! the Lease is built, held, lost and released the same way everywhere
//! (kube-runtime 5 has no leader election of its own; the Lease is run by
//! kube-lease-manager):
//!
//! - `stash serve`'s reconciler: [`run_while_leader`] on Lease
//!   [`crate::reconcile::LEASE_NAME`]. Every replica serves webhooks; only the
//!   holder reconciles. It competes forever, and a [`Watchdog`] re-reads the
//!   Lease so that a replica cut off from the API server (whose kube-lease-manager
//!   channel never reports the loss, since it never *sees* another holder)
//!   stops reconciling a margin before another replica may take over. On drain
//!   it tells the work to stop (a [`Drain`] of its own), waits for it to
//!   finish what it is doing and return, and then releases the Lease.
//! - `run-backup` in a Deployment/ReplicaSet: [`while_leader`] on
//!   `lock-<kind>-<name>-backup`; the holder runs the session loop and stops
//!   it when the Lease is lost.
//! - `run-backup` in a StatefulSet/DaemonSet and `stash restore`: [`Turns::hold`],
//!   the Lease taken around each run and released after, so restic runs one
//!   pod at a time.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::runtime::drain::{self, Drain};

/// Lease timing: a dead holder is replaced after `duration` seconds; the
/// holder renews `grace` seconds before that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub duration: u64,
    pub grace: u64,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            duration: LEASE_DURATION_SECONDS,
            grace: LEASE_GRACE_SECONDS,
        }
    }
}

/// Seconds a renewal is valid for, by default.
pub const LEASE_DURATION_SECONDS: u64 = 15;
/// Seconds before expiry the holder renews, by default.
pub const LEASE_GRACE_SECONDS: u64 = 5;
/// The watched work stops this long before the confirmed Lease expires.
pub const STOP_MARGIN: Duration = Duration::from_secs(3);
/// How often the watchdog re-reads the Lease.
pub const WATCHDOG_PERIOD: Duration = Duration::from_secs(2);
/// Longest wait for one read of the Lease.
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause before competing again after an error or a loss (reconciler).
const RETRY: Duration = Duration::from_secs(5);
/// Longest wait for kube-lease-manager to release the Lease and end.
pub const RELEASE_TIMEOUT: Duration = RETRY;
/// Longest wait, on drain, for the leader's work to finish what it is doing
/// and return; past it the work is aborted (with a WARN). The Lease stays
/// renewed and watched meanwhile: losing it aborts the work at once.
pub const WORK_DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// One Lease and who competes for it.
#[derive(Clone)]
pub struct Candidate {
    pub client: kube::Client,
    pub namespace: String,
    pub lease: String,
    pub identity: String,
    pub timing: LeaseTiming,
    /// Server-side-apply field manager; `None` is kube-lease-manager's own
    /// (`kube-lease-manager-<identity>`).
    pub field_manager: Option<String>,
}

impl Candidate {
    /// Builds the manager (creating the Lease if needed).
    async fn manager(&self) -> anyhow::Result<LeaseManager> {
        let mut builder = LeaseManagerBuilder::new(self.client.clone(), &self.lease)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(self.timing.duration)
            .with_grace(self.timing.grace);
        if let Some(fm) = &self.field_manager {
            builder = builder.with_field_manager(fm);
        }
        builder
            .build()
            .await
            .map_err(|e| anyhow::anyhow!("cannot use Lease {}/{}: {e}", self.namespace, self.lease))
    }

    /// The candidate `run-backup` and `stash restore` use.
    pub fn backup(
        client: kube::Client,
        namespace: &str,
        lease: &str,
        identity: &str,
        timing: LeaseTiming,
    ) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            lease: lease.to_string(),
            identity: identity.to_string(),
            timing,
            field_manager: Some(format!("stash-backup-{identity}")),
        }
    }
}

/// Waits until the channel says we hold the Lease; `false` if the manager
/// went away first.
async fn until_leading(leading: &mut watch::Receiver<bool>) -> bool {
    loop {
        if *leading.borrow_and_update() {
            return true;
        }
        if leading.changed().await.is_err() {
            return false;
        }
    }
}

/// Why holding ended.
enum Stop<T> {
    /// The work returned.
    Done(T),
    /// The channel said the Lease is someone else's.
    Lost,
    /// The manager's channel closed.
    ManagerGone,
    /// The watchdog could not confirm the Lease in time.
    Unconfirmed,
    /// The drain signal came.
    Drained,
}

/// Runs `work` while the channel says we hold the Lease (and, with a
/// watchdog, while the Lease can be confirmed), until `drain` resolves.
async fn hold<T>(
    leading: &mut watch::Receiver<bool>,
    work: impl Future<Output = T>,
    watchdog: Option<&mut Watchdog>,
    drain: impl Future<Output = ()>,
) -> Stop<T> {
    let lost = async {
        loop {
            if leading.changed().await.is_err() {
                return Stop::ManagerGone;
            }
            if !*leading.borrow_and_update() {
                return Stop::Lost;
            }
        }
    };
    let unconfirmed = async {
        match watchdog {
            Some(w) => w.run().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        value = work => Stop::Done(value),
        stop = lost => stop,
        () = unconfirmed => Stop::Unconfirmed,
        () = drain => Stop::Drained,
    }
}

/// What the watchdog concludes from one read of the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Still ours: the work may go on until this instant.
    HoldUntil(jiff::Timestamp),
    /// Someone else holds it, or our last confirmed renewal is about to run out.
    Lost,
}

/// Judges one read of the Lease (`None` when the read failed) against the
/// deadline confirmed so far.
pub fn verdict(
    lease: Option<&Lease>,
    identity: &str,
    confirmed_until: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Verdict {
    let mut until = confirmed_until;
    if let Some(spec) = lease.and_then(|l| l.spec.as_ref()) {
        if spec.holder_identity.as_deref() != Some(identity) {
            return Verdict::Lost;
        }
        if let Some(renewed) = spec.renew_time.as_ref() {
            let secs = spec
                .lease_duration_seconds
                .map_or(LEASE_DURATION_SECONDS as i64, i64::from);
            let valid = renewed.0 + jiff::SignedDuration::from_secs(secs);
            let margin = jiff::SignedDuration::try_from(STOP_MARGIN).unwrap_or_default();
            until = valid - margin;
        }
    }
    if now >= until {
        Verdict::Lost
    } else {
        Verdict::HoldUntil(until)
    }
}

/// How long to sleep before the next look: the watchdog period, or less if
/// the confirmed deadline comes sooner.
pub fn next_check(confirmed_until: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    let left = Duration::try_from(confirmed_until.duration_since(now)).unwrap_or(Duration::ZERO);
    left.min(WATCHDOG_PERIOD)
}

/// Re-reads the Lease while it is held, independently of kube-lease-manager.
pub struct Watchdog {
    leases: Api<Lease>,
    lease: String,
    identity: String,
    confirmed_until: jiff::Timestamp,
}

impl Watchdog {
    /// A watchdog for a Lease just acquired with `timing`.
    fn new(candidate: &Candidate) -> Self {
        Self {
            leases: Api::namespaced(candidate.client.clone(), &candidate.namespace),
            lease: candidate.lease.clone(),
            identity: candidate.identity.clone(),
            confirmed_until: jiff::Timestamp::now()
                + jiff::SignedDuration::from_secs(candidate.timing.duration as i64)
                - jiff::SignedDuration::try_from(STOP_MARGIN).unwrap_or_default(),
        }
    }

    /// Resolves when the Lease can no longer be confirmed as ours (and keeps
    /// what it confirmed if dropped before, to be run again).
    async fn run(&mut self) {
        loop {
            tokio::time::sleep(next_check(self.confirmed_until, jiff::Timestamp::now())).await;
            // Bounded, so a hung read cannot carry us past the deadline.
            let lease =
                match tokio::time::timeout(READ_TIMEOUT, self.leases.get_opt(&self.lease)).await {
                    Ok(Ok(l)) => l,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot read the Lease");
                        None
                    }
                    Err(_) => {
                        tracing::warn!("reading the Lease timed out");
                        None
                    }
                };
            match verdict(
                lease.as_ref(),
                &self.identity,
                self.confirmed_until,
                jiff::Timestamp::now(),
            ) {
                Verdict::HoldUntil(t) => self.confirmed_until = t,
                Verdict::Lost => return,
            }
        }
    }
}

/// The reconciler's election: competes for `candidate`'s Lease until `drain`
/// resolves; while holding it, runs `work(stop)` on its own task and aborts
/// it on loss (the channel or the [`Watchdog`]), then competes again. On
/// drain, fires `stop` and waits (up to [`WORK_DRAIN_LIMIT`], still holding
/// the Lease) for the work to finish and return, then releases the Lease and
/// returns `Ok(())`.
pub async fn run_while_leader<F, Fut>(
    candidate: Candidate,
    work: F,
    drain: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    F: Fn(Drain) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut drain = std::pin::pin!(drain);
    loop {
        let manager = tokio::select! {
            m = candidate.manager() => m,
            () = &mut drain => return Ok(()),
        };
        let turn = match manager {
            Ok(manager) => compete(&candidate, manager, &work, drain.as_mut()).await,
            Err(e) => {
                tracing::warn!(error = %e, lease = %candidate.lease, namespace = %candidate.namespace, "cannot set up leader election; retrying");
                Turn::Again
            }
        };
        if turn == Turn::Drained || !pause(RETRY, drain.as_mut()).await {
            break;
        }
    }
    tracing::info!(identity = %candidate.identity, lease = %candidate.lease, "left the leader election");
    Ok(())
}

/// How one round of the reconciler's election ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// The drain came: leave the election.
    Drained,
    /// Lost, stopped or failed: compete again after a pause.
    Again,
}

/// Sleeps `pause`; `false` if the drain came first.
async fn pause(pause: Duration, drain: std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(pause) => true,
        () = drain => false,
    }
}

/// One round: waits to lead, leads until loss or drain, then closes the
/// manager's channel so it releases the Lease, and waits for it to end.
async fn compete<F, Fut>(
    candidate: &Candidate,
    manager: LeaseManager,
    work: &F,
    mut drain: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Turn
where
    F: Fn(Drain) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (mut leading, task) = manager.watch().await;
    let became_leader = tokio::select! {
        l = until_leading(&mut leading) => Some(l),
        () = drain.as_mut() => None,
    };
    let turn = match became_leader {
        Some(true) => lead(candidate, &mut leading, work, drain).await,
        Some(false) => {
            tracing::warn!("leader election stopped; restarting it");
            Turn::Again
        }
        None => Turn::Drained,
    };
    // Closing the channel makes the manager release the Lease and end.
    drop(leading);
    let _ = tokio::time::timeout(RELEASE_TIMEOUT, task).await;
    turn
}

/// Runs the work while the Lease is ours: on drain it is told to stop and
/// given [`WORK_DRAIN_LIMIT`] to return; on loss it is aborted.
async fn lead<F, Fut>(
    candidate: &Candidate,
    leading: &mut watch::Receiver<bool>,
    work: &F,
    drain: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Turn
where
    F: Fn(Drain) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let identity = candidate.identity.as_str();
    tracing::info!(%identity, lease = %candidate.lease, "acquired the Lease: reconciling");
    let (stop, handle) = drain::channel();
    let mut worker = Worker::spawn(work(handle));
    let mut watchdog = Watchdog::new(candidate);
    let (turn, reason) = match hold(leading, worker.join(), Some(&mut watchdog), drain).await {
        Stop::Done(()) => (Turn::Again, "the reconciler stopped"),
        Stop::Lost | Stop::ManagerGone => (Turn::Again, "the Lease was lost"),
        Stop::Unconfirmed => (
            Turn::Again,
            "the Lease renewal could not be confirmed in time",
        ),
        Stop::Drained => {
            stop.drain();
            finish(leading, &mut worker, &mut watchdog).await;
            (Turn::Drained, "shutting down")
        }
    };
    worker.abort().await;
    tracing::warn!(%identity, %reason, "stopped reconciling");
    turn
}

/// After the stop: waits for the work to return, while the Lease is still
/// ours and for at most [`WORK_DRAIN_LIMIT`].
async fn finish(leading: &mut watch::Receiver<bool>, worker: &mut Worker, watchdog: &mut Watchdog) {
    let limit = tokio::time::sleep(WORK_DRAIN_LIMIT);
    match hold(leading, worker.join(), Some(watchdog), limit).await {
        Stop::Done(()) => tracing::debug!("the reconciler finished its work"),
        Stop::Drained => tracing::warn!(
            limit = ?WORK_DRAIN_LIMIT,
            "the reconciler did not finish its work in time; aborting it"
        ),
        Stop::Lost | Stop::ManagerGone | Stop::Unconfirmed => {
            tracing::warn!("the Lease was lost while the reconciler finished its work; aborting it")
        }
    }
}

/// The leader's work on its own task.
struct Worker {
    task: JoinHandle<()>,
    ended: bool,
}

impl Worker {
    fn spawn(work: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            task: tokio::spawn(work),
            ended: false,
        }
    }

    /// Resolves when the work has returned (or panicked); at once if it has.
    async fn join(&mut self) {
        if self.ended {
            return;
        }
        let result = (&mut self.task).await;
        self.ended = true;
        if let Err(e) = result {
            tracing::error!(error = %e, "the reconciler task ended");
        }
    }

    /// Aborts the work unless it has returned, and waits for it to end.
    async fn abort(self) {
        if !self.ended {
            self.task.abort();
            let _ = self.task.await;
        }
    }
}

/// Runs `work` whenever this pod holds the Lease; stops it when the Lease is
/// lost and waits to win it again. Returns only if `work` returns.
pub async fn while_leader<F, Fut>(
    client: kube::Client,
    namespace: &str,
    lease: &str,
    identity: &str,
    timing: LeaseTiming,
    work: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let candidate = Candidate::backup(client, namespace, lease, identity, timing);
    while_leader_until(candidate, work, std::future::pending()).await
}

/// [`while_leader`], which also returns `Ok(())` when `stop` resolves while
/// this pod waits for the Lease (a replica that is not the leader has
/// nothing to finish). Once `work` runs, `stop` is `work`'s to honour: it
/// is not dropped (restic is stopped gracefully, the host reported).
pub async fn while_leader_until<F, Fut>(
    candidate: Candidate,
    mut work: F,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let (lease, identity) = (candidate.lease.as_str(), candidate.identity.as_str());
    let manager = candidate.manager().await?;
    let (mut leading, task) = manager.watch().await;
    let mut stop = std::pin::pin!(stop);
    tracing::info!(lease, identity, "waiting for the backup Lease");
    loop {
        let leader = tokio::select! {
            l = until_leading(&mut leading) => l,
            () = &mut stop => {
                tracing::info!(lease, identity, "stopping while waiting for the backup Lease");
                drop(leading);
                let _ = tokio::time::timeout(RETRY, task).await;
                return Ok(());
            }
        };
        if !leader {
            return Err(lease_task_error(task).await);
        }
        tracing::info!(
            lease,
            identity,
            "holding the backup Lease; watching BackupSessions"
        );
        match hold(&mut leading, work(), None, std::future::pending()).await {
            Stop::Done(result) => {
                drop(leading);
                let _ = task.await;
                return result;
            }
            Stop::ManagerGone => return Err(lease_task_error(task).await),
            Stop::Lost | Stop::Unconfirmed | Stop::Drained => {
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

/// A Lease held only around each backup or restore.
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
        let candidate = Candidate::backup(client, namespace, lease, identity, timing);
        Ok(Self {
            manager: candidate.manager().await?,
            lease: lease.to_string(),
        })
    }

    /// Waits for the Lease, runs `work` while renewing it, then releases it.
    /// If the Lease is lost mid-way, `work` is dropped (restic is killed) and
    /// an error returned.
    pub async fn hold<T>(&self, work: impl Future<Output = T>) -> anyhow::Result<T> {
        self.hold_unless(work, std::future::pending()).await
    }

    /// [`Turns::hold`], giving up the wait for the Lease when `stop`
    /// resolves first (an error naming why); once `work` has started it runs
    /// to its end, whatever `stop` says (it honours the stop itself).
    pub async fn hold_unless<T>(
        &self,
        work: impl Future<Output = T>,
        stop: impl Future<Output = &'static str>,
    ) -> anyhow::Result<T> {
        let taken = async {
            while !self
                .manager
                .changed()
                .await
                .map_err(|e| anyhow::anyhow!("cannot take Lease {}: {e}", self.lease))?
            {
            }
            anyhow::Ok(())
        };
        tokio::select! {
            taken = taken => taken?,
            signal = stop => anyhow::bail!(
                "interrupted: the pod is stopping ({signal}) while waiting for its turn (Lease {})",
                self.lease
            ),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    fn lease(holder: &str, renewed: i64) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(ts(renewed))),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn verdicts() {
        // renewed at 100, valid to 115, stop at 112
        assert_eq!(
            verdict(Some(&lease("me", 100)), "me", ts(0), ts(105)),
            Verdict::HoldUntil(ts(112))
        );
        assert_eq!(
            verdict(Some(&lease("me", 100)), "me", ts(0), ts(112)),
            Verdict::Lost
        );
        assert_eq!(
            verdict(Some(&lease("other", 100)), "me", ts(200), ts(105)),
            Verdict::Lost
        );
        // the read failed: the deadline confirmed earlier still holds, then runs out
        assert_eq!(
            verdict(None, "me", ts(112), ts(110)),
            Verdict::HoldUntil(ts(112))
        );
        assert_eq!(verdict(None, "me", ts(112), ts(112)), Verdict::Lost);
    }

    #[test]
    fn checks_come_no_later_than_the_deadline() {
        assert_eq!(next_check(ts(110), ts(100)), WATCHDOG_PERIOD);
        assert_eq!(next_check(ts(110), ts(109)), Duration::from_secs(1));
        assert_eq!(next_check(ts(110), ts(111)), Duration::ZERO);
    }

    #[test]
    fn the_reconciler_stops_before_another_replica_may_take_over() {
        // The holder renews `grace` seconds before expiry; the watchdog must
        // not fire in normal operation, and must fire before expiry otherwise.
        assert!(STOP_MARGIN < Duration::from_secs(LEASE_GRACE_SECONDS));
        assert!(STOP_MARGIN > READ_TIMEOUT);
    }

    #[test]
    fn default_timing_is_fifteen_seconds_renewed_five_before() {
        assert_eq!(
            LeaseTiming::default(),
            LeaseTiming {
                duration: 15,
                grace: 5
            }
        );
    }
}
