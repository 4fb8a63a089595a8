//! The stop signal of `run-backup` and `stash restore`, and the budget the
//! stop must fit in.
//!
//! Kubernetes stops a container with SIGTERM and, `terminationGracePeriodSeconds`
//! later (30 s by default), SIGKILL. Killing restic outright leaves its lock
//! in the repository, and a lock whose host is another pod is not stale for
//! restic for 30 minutes: every restore, `check` and `forget --prune` of that
//! repository fails until then. So the process turns the first SIGTERM or
//! SIGINT into one [`Stop`] (built on the server's drain signal,
//! [`crate::runtime::drain`]), which every restic run of the process
//! watches ([`crate::backup::restic::Restic::run`]): restic gets SIGINT (on
//! which it removes its lock and exits), [`RESTIC_GRACE`] to do so, then
//! SIGKILL; the host's entry is then reported Failed, within [`STOP_BUDGET`]
//! of the signal. The split of the default 30 s grace period:
//!
//! | step | at most |
//! |---|---|
//! | restic removes its lock after SIGINT ([`RESTIC_GRACE`]) | 10 s |
//! | the host's status write and event, the Lease release | 15 s ([`STOP_BUDGET`] − [`RESTIC_GRACE`]) |
//! | margin before the kubelet's SIGKILL | 5 s |
//!
//! The signal can also be given in-process ([`Stop::trigger`]), which is how
//! tests stop a run at a chosen moment.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::runtime::drain::{self, Drain, Signal};

/// How long restic gets between SIGINT and SIGKILL.
pub const RESTIC_GRACE: Duration = Duration::from_secs(10);
/// How long the whole stop may take, from the signal to the process's exit
/// (Kubernetes' default `terminationGracePeriodSeconds` is 30).
pub const STOP_BUDGET: Duration = Duration::from_secs(25);

/// A handle on the process's stop signal; cheap to clone.
#[derive(Clone)]
pub struct Stop {
    signal: Arc<Signal>,
    drain: Drain,
    why: Arc<OnceLock<&'static str>>,
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop")
            .field("reason", &self.reason())
            .finish()
    }
}

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}

impl Stop {
    /// A stop signal that fires only through [`Stop::trigger`].
    pub fn new() -> Self {
        let (signal, drain) = drain::channel();
        Self {
            signal: Arc::new(signal),
            drain,
            why: Arc::new(OnceLock::new()),
        }
    }

    /// A stop signal fired by the process's first SIGTERM or SIGINT. The
    /// handlers are installed before this returns, so a signal that comes
    /// right after is not lost (nor kills the process).
    pub fn on_signals() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let stop = Self::new();
        let trigger = stop.clone();
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::spawn(async move {
                    let signal = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                    };
                    tracing::info!(
                        signal,
                        budget = ?STOP_BUDGET,
                        "stopping: restic is interrupted (SIGINT, then SIGKILL after {}s) and this host reported",
                        RESTIC_GRACE.as_secs()
                    );
                    trigger.trigger(signal);
                });
            }
            (term, int) => tracing::error!(
                sigterm = term.is_ok(),
                sigint = int.is_ok(),
                "cannot install signal handlers; a stop will kill restic outright"
            ),
        }
        stop
    }

    /// Fires the signal, naming why (`SIGTERM`, `SIGINT`, …); only the first
    /// reason is kept.
    pub fn trigger(&self, why: &'static str) {
        let _ = self.why.set(why);
        self.signal.drain();
    }

    /// Whether the stop has been signaled.
    pub fn is_stopping(&self) -> bool {
        self.drain.is_draining()
    }

    /// Why the process is stopping, once it is.
    pub fn reason(&self) -> Option<&'static str> {
        self.is_stopping()
            .then(|| self.why.get().copied().unwrap_or("stop"))
    }

    /// Resolves once the stop is signaled (at once if it was), with its reason.
    pub async fn stopped(&self) -> &'static str {
        self.drain.clone().signaled().await;
        self.reason().unwrap_or("stop")
    }

    /// Resolves [`STOP_BUDGET`] after the stop was signaled: the moment the
    /// process gives up on whatever is still running and exits.
    pub async fn budget_spent(&self) {
        self.stopped().await;
        tokio::time::sleep(STOP_BUDGET).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_fits_the_default_grace_period_with_a_margin() {
        assert!(RESTIC_GRACE < STOP_BUDGET);
        assert!(STOP_BUDGET + Duration::from_secs(5) <= Duration::from_secs(30));
    }

    #[tokio::test]
    async fn the_first_reason_is_kept() {
        let stop = Stop::new();
        assert_eq!(stop.reason(), None);
        let waiter = stop.clone();
        let waiting = tokio::spawn(async move { waiter.stopped().await });
        stop.trigger("SIGTERM");
        stop.trigger("SIGINT");
        assert_eq!(waiting.await.unwrap(), "SIGTERM");
        assert!(stop.is_stopping());
        assert_eq!(stop.reason(), Some("SIGTERM"));
    }
}
