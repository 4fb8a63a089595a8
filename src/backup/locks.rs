//! restic locks held by someone else: whose they are, whether their holder
//! is gone for good, and waiting for the ones that are not. One judge and one
//! retry loop ([`retry_on_lock`]), used by `run-backup` and `stash restore`.
//!
//! restic (0.14, and up to 0.17) fails at once with `unable to create lock
//! in backend: repository is already locked [exclusively] by PID … on <host>`
//! when a lock it conflicts with is there; it has no `--retry-lock`, and it
//! treats a lock as stale only if its host is this very host and its process
//! is gone, or if it is older than 30 minutes. Inside a pod restic's host is
//! the pod name, so a lock left by a pod that was killed (a rollout, an
//! eviction, a drained node) blocks every restore, `check` and
//! `forget --prune` of that repository for half an hour. restic 0.14 cannot
//! remove one lock either: only all of them (`unlock --remove-all`).
//!
//! So on a lock conflict: restic's own `unlock` first (its stale rule), then
//! every remaining lock is judged ([`LockHolders`]):
//! - its host is gone for good ([`Holder::Gone`]): this very pod (which runs
//!   one restic at a time, and none while judging), a pod of the workload
//!   (`<target>-…`) that no longer exists in the namespace, or one of that
//!   name created after the lock was taken (a StatefulSet pod recreated
//!   under its old name); when **every** lock's host is gone, all locks are
//!   removed and the command runs again at once;
//! - otherwise ([`Holder::Live`]: a live pod, another workload's pod, a
//!   person's laptop, a pod we cannot read): the lock is never removed; the
//!   command is retried with back-off until `--lock-wait` has passed, and the
//!   wait is reported once per holder (`waiting for the repository lock
//!   held by <host> (pid N) since <time>`).
//!
//! The decisions ([`judge_pod`], [`next_step`], [`backoff`],
//! [`waiting_message`]) are pure; the I/O is [`PodLockHolders`] and
//! [`retry_on_lock`].

use std::future::Future;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use super::restic::{LockInfo, Restic, ResticError};
use crate::recorder::{EventType, Recorder};

/// How long a command waits, by default, for a lock held by a live host.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(300);
/// Longest pause between two tries while waiting for a lock.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How much later than the lock a pod must have been created to be judged a
/// new pod under the holder's name: the lock's time is the holder node's
/// clock, the pod's `creationTimestamp` the API server's.
pub const CLOCK_SKEW: jiff::SignedDuration = jiff::SignedDuration::from_secs(10);
/// How many times one command removes locks of gone holders before giving up
/// (each removal is followed by a new try; a judge that is wrong must not
/// make a loop).
const MAX_REMOVALS: u32 = 3;
/// Reason of the event that reports a wait.
pub const REASON_WAITING_FOR_LOCK: &str = "Waiting For Repository Lock";

/// The verdict on one lock's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// The holder certainly runs no restic any more (why, for the log).
    Gone(String),
    /// The holder may still run restic (why, for the log).
    Live(String),
}

/// What the API server says about the pod named like a lock's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// No pod of that name in the namespace.
    Missing,
    /// A pod of that name, created then.
    Created(Option<jiff::Timestamp>),
    /// It could not be read (the error).
    Unreadable(String),
}

/// Whether `hostname` can be the name of a pod of workload `target_name`.
pub fn may_be_workload_pod(hostname: &str, target_name: &str) -> bool {
    hostname
        .strip_prefix(target_name)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|rest| !rest.is_empty())
}

/// When the lock was taken (restic writes RFC 3339 with the node's offset).
pub fn lock_time(lock: &LockInfo) -> Option<jiff::Timestamp> {
    lock.time.parse().ok()
}

/// Judges a lock's holder from what is known of the pod named like its host:
/// `pod` is `None` when no pod was looked up (the name is not one of the
/// workload's pods, or it is this pod).
pub fn judge_pod(
    lock: &LockInfo,
    own_pod: &str,
    target_name: &str,
    pod: Option<&PodState>,
) -> Holder {
    let host = &lock.hostname;
    if host == own_pod {
        return Holder::Gone(format!(
            "{host} is this pod, which runs one restic at a time"
        ));
    }
    if !may_be_workload_pod(host, target_name) {
        return Holder::Live(format!(
            "{host} is not a pod of {target_name}: another workload or machine may share the repository"
        ));
    }
    match pod {
        None => Holder::Live(format!("pod {host} was not looked up")),
        Some(PodState::Missing) => Holder::Gone(format!("pod {host} no longer exists")),
        Some(PodState::Unreadable(e)) => Holder::Live(format!("cannot read pod {host}: {e}")),
        Some(PodState::Created(created)) => match (created, lock_time(lock)) {
            (Some(created), Some(taken)) if *created > taken + CLOCK_SKEW => Holder::Gone(format!(
                "pod {host} was created at {created}, after the lock was taken ({taken}): the holder was an earlier pod of that name"
            )),
            _ => Holder::Live(format!("pod {host} exists")),
        },
    }
}

/// What to do after a lock conflict, given every lock judged.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// No lock is left (its holder has just finished): try again now.
    RetryNow,
    /// Every holder is gone: remove all locks (these hosts'), then try again.
    RemoveAll(Vec<String>),
    /// This lock's holder may be alive: wait for it.
    Wait(LockInfo),
}

/// The step after a lock conflict: remove only when every lock's holder is
/// gone; otherwise wait for the first live one.
pub fn next_step(judged: &[(LockInfo, Holder)]) -> Next {
    if judged.is_empty() {
        return Next::RetryNow;
    }
    match judged.iter().find(|(_, h)| matches!(h, Holder::Live(_))) {
        Some((lock, _)) => Next::Wait(lock.clone()),
        None => Next::RemoveAll(judged.iter().map(|(l, _)| l.hostname.clone()).collect()),
    }
}

/// The pause before try `round` + 1 (1 s, 2 s, 4 s, … at most [`MAX_BACKOFF`]).
pub fn backoff(round: u32) -> Duration {
    Duration::from_secs(1u64 << round.min(5)).min(MAX_BACKOFF)
}

/// What a wait is reported with.
pub fn waiting_message(lock: &LockInfo) -> String {
    let kind = if lock.exclusive { "exclusive " } else { "" };
    format!(
        "waiting for the repository {kind}lock held by {} (pid {}) since {}",
        lock.hostname, lock.pid, lock.time
    )
}

/// Judges whether the holder of a restic lock is gone for good.
pub trait LockHolders: Sync {
    /// The verdict on `lock`'s holder; [`Holder::Gone`] only when it
    /// certainly runs no restic any more.
    fn judge<'a>(&'a self, lock: &'a LockInfo) -> BoxFuture<'a, Holder>;

    /// Told once per holder that a command waits for `lock` (`message` from
    /// [`waiting_message`]); the default only logs, in [`retry_on_lock`].
    fn waiting<'a>(&'a self, _lock: &'a LockInfo, _message: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Whether a lock of `hostname`, of unknown time, is judged gone.
    fn is_gone<'a>(&'a self, hostname: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let lock = LockInfo {
                hostname: hostname.to_string(),
                ..Default::default()
            };
            matches!(self.judge(&lock).await, Holder::Gone(_))
        })
    }
}

/// Judges no holder gone: only restic's own stale rule applies.
pub struct NoLockHolders;

impl LockHolders for NoLockHolders {
    fn judge<'a>(&'a self, lock: &'a LockInfo) -> BoxFuture<'a, Holder> {
        Box::pin(
            async move { Holder::Live(format!("{}: no judge of lock holders", lock.hostname)) },
        )
    }
}

/// Looks lock holders up as pods in the workload's namespace (RBAC: `get`
/// pods, in ClusterRole `stash-sidecar`).
pub struct PodLockHolders {
    pub pods: Api<Pod>,
    pub own_pod: String,
    pub target_name: String,
}

impl PodLockHolders {
    async fn pod_state(&self, name: &str) -> PodState {
        match self.pods.get_opt(name).await {
            Ok(None) => PodState::Missing,
            Ok(Some(pod)) => PodState::Created(pod.metadata.creation_timestamp.map(|t| t.0)),
            Err(e) => PodState::Unreadable(e.to_string()),
        }
    }
}

impl LockHolders for PodLockHolders {
    fn judge<'a>(&'a self, lock: &'a LockInfo) -> BoxFuture<'a, Holder> {
        Box::pin(async move {
            let host = lock.hostname.as_str();
            let pod = if host != self.own_pod && may_be_workload_pod(host, &self.target_name) {
                Some(self.pod_state(host).await)
            } else {
                None
            };
            judge_pod(lock, &self.own_pod, &self.target_name, pod.as_ref())
        })
    }
}

/// A judge whose waits are also recorded as a Normal event on `regarding`
/// (the BackupSession or RestoreSession: none of their status fields has a
/// place for a host that is still running).
pub struct ReportWaits<'a> {
    pub judge: &'a dyn LockHolders,
    pub recorder: &'a Recorder,
    pub regarding: ObjectReference,
}

impl LockHolders for ReportWaits<'_> {
    fn judge<'a>(&'a self, lock: &'a LockInfo) -> BoxFuture<'a, Holder> {
        self.judge.judge(lock)
    }

    fn waiting<'a>(&'a self, lock: &'a LockInfo, message: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.judge.waiting(lock, message).await;
            self.recorder
                .publish_or_log(
                    &self.regarding,
                    EventType::Normal,
                    REASON_WAITING_FOR_LOCK,
                    message,
                )
                .await;
        })
    }
}

/// Every lock of the repository, judged; `None` when they cannot be read.
async fn judge_locks(
    restic: &Restic,
    holders: &dyn LockHolders,
) -> Option<Vec<(LockInfo, Holder)>> {
    let ids = match restic.list_locks().await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the repository's locks");
            return None;
        }
    };
    let mut judged = Vec::with_capacity(ids.len());
    for id in &ids {
        match restic.lock_info(id).await {
            Ok(lock) => {
                let holder = holders.judge(&lock).await;
                judged.push((lock, holder));
            }
            // Removed since it was listed (its holder finished): skipped. Or
            // unreadable (another key, damaged): never judged gone, so never
            // removed.
            Err(e @ ResticError::Failed { .. }) => {
                tracing::debug!(lock = %id, error = %e, "cannot read a lock");
                if restic.list_locks().await.is_ok_and(|now| !now.contains(id)) {
                    continue;
                }
                let lock = LockInfo {
                    hostname: format!("<lock {id}, unreadable>"),
                    ..Default::default()
                };
                let holder = Holder::Live(format!("lock {id} cannot be read: {e}"));
                judged.push((lock, holder));
            }
            Err(e) => {
                tracing::warn!(lock = %id, error = %e, "cannot read a lock");
                return None;
            }
        }
    }
    Some(judged)
}

/// Runs `command` (one restic command, which may be run again) and, while it
/// fails on a lock held by someone else, deals with the locks as the module
/// says: removes them when every holder is gone, else waits up to `wait` for
/// them, retrying with back-off. A stop ends the wait at once
/// ([`ResticError::Interrupted`]). Any other failure is returned as it is.
pub async fn retry_on_lock<T, F, Fut>(
    restic: &Restic,
    holders: &dyn LockHolders,
    wait: Duration,
    mut command: F,
) -> Result<T, ResticError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ResticError>>,
{
    // The wait is counted from the first live holder seen, not from the
    // command's start: a slow command does not eat the wait.
    let mut waiting_since: Option<Instant> = None;
    let mut removals = 0;
    let mut retried_now = false;
    let mut announced: Option<String> = None;
    let mut rounds = 0u32;
    loop {
        let round = rounds;
        rounds = rounds.saturating_add(1);
        let conflict = match command().await {
            Ok(value) => return Ok(value),
            Err(e) if e.is_lock_conflict() => e,
            Err(e) => return Err(e),
        };
        if let Some(signal) = restic.stop.reason() {
            return Err(interrupted(conflict, signal));
        }
        // restic's own rule first: locks of dead processes on this host, or older than 30 min.
        if let Err(e) = restic.unlock().await {
            tracing::debug!(error = %e, "restic unlock failed");
        }
        let Some(judged) = judge_locks(restic, holders).await else {
            return Err(conflict);
        };
        for (lock, holder) in &judged {
            tracing::debug!(host = %lock.hostname, pid = lock.pid, ?holder, "lock judged");
        }
        let waiting_for = match next_step(&judged) {
            Next::RemoveAll(hosts) if removals < MAX_REMOVALS => {
                removals += 1;
                match restic.remove_all_locks().await {
                    Ok(()) => {
                        tracing::warn!(holders = ?hosts, "removed restic locks left by hosts that are gone");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot remove the locks of gone hosts");
                        return Err(conflict);
                    }
                }
            }
            Next::RemoveAll(_) => return Err(conflict),
            // The holder has just finished (or restic's `unlock` removed a dead one's lock).
            Next::RetryNow if !retried_now => {
                retried_now = true;
                continue;
            }
            Next::RetryNow => None,
            Next::Wait(lock) => Some(lock),
        };
        let waited = waiting_since.get_or_insert_with(Instant::now).elapsed();
        if waited >= wait {
            return Err(gave_up(conflict, waited));
        }
        if let Some(lock) = &waiting_for {
            let message = waiting_message(lock);
            if announced.as_deref() != Some(message.as_str()) {
                tracing::info!(host = %lock.hostname, pid = lock.pid, since = %lock.time, left = ?(wait - waited), "{message}");
                holders.waiting(lock, &message).await;
                announced = Some(message);
            }
        }
        let pause = backoff(round).min(wait - waited);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            signal = restic.stop.stopped() => return Err(interrupted(conflict, signal)),
        }
    }
}

/// The interruption of the command that met `conflict`.
fn interrupted(conflict: ResticError, signal: &'static str) -> ResticError {
    let command = match conflict {
        ResticError::Failed { command, .. } => command,
        _ => String::new(),
    };
    ResticError::Interrupted { command, signal }
}

/// restic's lock error, saying how long it was waited for (if at all).
fn gave_up(conflict: ResticError, waited: Duration) -> ResticError {
    match conflict {
        ResticError::Failed {
            command,
            code,
            message,
        } if !waited.is_zero() => ResticError::Failed {
            command,
            code,
            message: format!(
                "{message} (waited {}s for the lock; --lock-wait)",
                waited.as_secs()
            ),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(host: &str, time: &str) -> LockInfo {
        LockInfo {
            time: time.into(),
            exclusive: true,
            hostname: host.into(),
            pid: 7,
        }
    }

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn only_names_of_the_workloads_pods_qualify() {
        assert!(may_be_workload_pod(
            "stash-demo-69f9ffbbf7-bww24",
            "stash-demo"
        ));
        assert!(may_be_workload_pod("db-0", "db"));
        assert!(!may_be_workload_pod("stash-demo", "stash-demo"));
        assert!(!may_be_workload_pod("stash-demo-", "stash-demo"));
        assert!(!may_be_workload_pod("other-app-1", "stash-demo"));
        assert!(!may_be_workload_pod("stash-demox-1", "stash-demo"));
    }

    #[test]
    fn holders_are_judged_gone_only_when_certainly_gone() {
        let taken = "2026-12-07T01:00:00.123456789+01:00"; // 00:00:00Z
        let gone = |h: &Holder| matches!(h, Holder::Gone(_));
        let cases: Vec<(&str, LockInfo, Option<PodState>, bool)> = vec![
            ("this pod", lock("db-0", taken), None, true),
            (
                "another workload's pod",
                lock("web-0", taken),
                Some(PodState::Missing),
                false,
            ),
            ("a laptop", lock("vm", taken), None, false),
            (
                "a deleted pod",
                lock("db-1", taken),
                Some(PodState::Missing),
                true,
            ),
            (
                "a live pod",
                lock("db-1", taken),
                Some(PodState::Created(Some(ts("2026-12-06T23:00:00Z")))),
                false,
            ),
            (
                "recreated after the lock",
                lock("db-1", taken),
                Some(PodState::Created(Some(ts("2026-12-07T00:05:00Z")))),
                true,
            ),
            (
                "created within the clock skew",
                lock("db-1", taken),
                Some(PodState::Created(Some(ts("2026-12-07T00:00:05Z")))),
                false,
            ),
            (
                "no creation time",
                lock("db-1", taken),
                Some(PodState::Created(None)),
                false,
            ),
            (
                "unreadable lock time",
                lock("db-1", "yesterday"),
                Some(PodState::Created(Some(ts("2026-12-07T00:05:00Z")))),
                false,
            ),
            (
                "pod unreadable",
                lock("db-1", taken),
                Some(PodState::Unreadable("403".into())),
                false,
            ),
            ("not looked up", lock("db-1", taken), None, false),
        ];
        for (what, l, pod, want) in cases {
            let h = judge_pod(&l, "db-0", "db", pod.as_ref());
            assert_eq!(gone(&h), want, "{what}: {h:?}");
        }
    }

    #[test]
    fn locks_are_removed_only_when_every_holder_is_gone() {
        let a = lock("db-1", "t");
        let b = lock("vm", "t");
        assert_eq!(next_step(&[]), Next::RetryNow);
        assert_eq!(
            next_step(&[(a.clone(), Holder::Gone("x".into()))]),
            Next::RemoveAll(vec!["db-1".into()])
        );
        assert_eq!(
            next_step(&[
                (a.clone(), Holder::Gone("x".into())),
                (b.clone(), Holder::Live("y".into()))
            ]),
            Next::Wait(b)
        );
    }

    #[test]
    fn backoff_grows_to_a_cap() {
        let pauses: Vec<u64> = (0..8).map(|r| backoff(r).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn the_wait_names_the_holder() {
        assert_eq!(
            waiting_message(&lock("db-1", "2026-12-07T01:00:00+01:00")),
            "waiting for the repository exclusive lock held by db-1 (pid 7) since 2026-12-07T01:00:00+01:00"
        );
        let mut shared = lock("vm", "t");
        shared.exclusive = false;
        assert_eq!(
            waiting_message(&shared),
            "waiting for the repository lock held by vm (pid 7) since t"
        );
    }

    #[test]
    fn a_wait_that_ran_out_keeps_restics_message() {
        let conflict = ResticError::Failed {
            command: "restore".into(),
            code: 1,
            message: "unable to create lock in backend: repository is already locked exclusively by PID 7 on vm".into(),
        };
        assert!(conflict.is_lock_conflict());
        let e = gave_up(conflict, Duration::from_secs(300));
        assert_eq!(
            e.to_string(),
            "restic restore failed (exit code 1): unable to create lock in backend: repository is already locked exclusively by PID 7 on vm (waited 300s for the lock; --lock-wait)"
        );
    }
}
