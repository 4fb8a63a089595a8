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

/// A task's handle on the drain signal; cheap to clone.
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

    /// [`Drain::signaled`] on a handle of its own, as an owned future.
    pub async fn into_signaled(mut self) {
        self.signaled().await
    }

    /// The handle as a watch receiver that turns `true` on drain, for APIs
    /// that take one.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.0.clone()
    }
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
