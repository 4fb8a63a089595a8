//! Signals: SIGTERM (kubelet) and SIGINT (a terminal) stop the server with
//! a drain; SIGHUP re-reads the certificate files and never stops it.
//!
//! One drain signal for the whole server (kubert's model): [`channel`] makes a
//! [`Signal`] and every task gets a clone of its [`Drain`] handle and drains
//! itself when it fires: the webhook port stops accepting and finishes its
//! in-flight requests, the certificate watcher and the SIGHUP handler stop,
//! the reconciler stops reconciling and releases its Lease. The probe port
//! and the store feed drain in a second stage of the same drain, once the
//! webhook port has drained (`Running::after_webhooks`), so readiness stays
//! observable and the store stays current while requests are still being
//! decided. Nothing is aborted.
//!
//! A drain also knows when it is over: every [`Drain`] handle (and every
//! receiver taken from one with [`Drain::receiver`]) keeps it open, and
//! [`Signal::released`] resolves once the last one is gone. A task holds its
//! handle until it has finished draining (its handle is dropped with it, or
//! given up with [`Drain::release`]); so whoever shuts down waits for the
//! tasks themselves, not for a fixed time.

use tokio::sync::watch;

/// Takes SIGHUP over from its default action (ending the process); call it
/// first thing, so a SIGHUP during start-up does not kill the server.
pub fn hangup() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGHUP handler");
            None
        }
    }
}

/// The sending side of the drain signal.
pub struct Signal(watch::Sender<bool>);

/// A task's handle on the drain signal; cheap to clone. Each clone keeps the
/// drain open until it is dropped ([`Signal::released`]).
#[derive(Clone)]
pub struct Drain(watch::Receiver<bool>);

/// A drain signal and the first handle on it.
pub fn channel() -> (Signal, Drain) {
    let (tx, rx) = watch::channel(false);
    (Signal(tx), Drain(rx))
}

impl Signal {
    /// Tells every [`Drain`] to drain (idempotent).
    pub fn drain(&self) {
        self.0.send_replace(true);
    }

    /// Another handle on this signal.
    pub fn handle(&self) -> Drain {
        Drain(self.0.subscribe())
    }

    /// Resolves once every handle on this signal has been released: every
    /// [`Drain`] and every [`Drain::receiver`] dropped (at once if none is
    /// left). Signal first ([`Signal::drain`]), then wait for this.
    pub async fn released(&self) {
        self.0.closed().await
    }

    /// How many handles (and receivers) are still held.
    pub fn held(&self) -> usize {
        self.0.receiver_count()
    }
}

impl Drain {
    /// Whether the drain has been signaled.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the drain is signaled (at once if it already was).
    pub async fn signaled(&mut self) {
        // An error means every Signal is gone: nobody can drain us any more,
        // which is as good as a drain for a task waiting on it.
        let _ = self.0.wait_for(|draining| *draining).await;
    }

    /// [`Drain::signaled`] on a handle of its own, as an owned future. The
    /// handle is released when the future completes (or is dropped): give it
    /// to something that stops at the signal, not to a task that has work to
    /// finish after it (that task should hold a [`Drain`] until it is done).
    pub async fn into_signaled(mut self) {
        self.signaled().await
    }

    /// The handle as a watch receiver that turns `true` on drain, for APIs
    /// that take one. The receiver keeps the drain open like a handle does.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.0.clone()
    }

    /// Gives the handle up: the task has finished draining. Dropping the
    /// handle does the same; this says so where it happens.
    pub fn release(self) {}
}

/// Resolves on the first SIGTERM or SIGINT, naming it.
pub async fn signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (t, i) => {
            tracing::error!(
                sigterm = t.is_ok(),
                sigint = i.is_ok(),
                "cannot install signal handlers; only ctrl-c will stop the server"
            );
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn released_waits_for_a_handle_still_finishing_and_no_longer() {
        let (signal, mut drain) = channel();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            drain.signaled().await;
            let _ = finished.await;
            drain.release();
        });
        signal.drain();
        let released = signal.released();
        tokio::pin!(released);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut released)
                .await
                .is_err(),
            "released while the task still held its handle"
        );
        assert_eq!(signal.held(), 1);
        finish.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), released)
            .await
            .expect("not released once the handle was dropped");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn every_clone_and_receiver_keeps_the_drain_open() {
        let (signal, drain) = channel();
        let clone = drain.clone();
        let receiver = drain.receiver();
        let owned = signal.handle().into_signaled();
        assert_eq!(signal.held(), 4);
        drop(drain);
        drop(clone);
        drop(receiver);
        assert_eq!(signal.held(), 1);
        // An owned wait gives its handle up once it has seen the signal.
        signal.drain();
        owned.await;
        assert_eq!(signal.held(), 0);
        tokio::time::timeout(Duration::from_secs(1), signal.released())
            .await
            .expect("no handle left, yet not released");
    }
}
