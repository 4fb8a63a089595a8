//! Signals: SIGTERM (kubelet) and SIGINT (a terminal) stop the server with
//! a drain; SIGHUP re-reads the certificate files and never stops it.

use std::sync::Arc;

use super::metrics::Metrics;
use super::tls::TlsState;

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

/// On each SIGHUP, re-reads the certificate files at once (as a file event
/// would) and logs what came of it.
pub fn reload_on_hangup(
    mut hup: tokio::signal::unix::Signal,
    tls: Arc<TlsState>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let (tls, metrics) = (tls.clone(), metrics.clone());
            let changed = tokio::task::spawn_blocking(move || {
                let changed = tls.reload_if_changed(&metrics);
                tls.check_expiry(&metrics);
                changed
            })
            .await
            .unwrap_or(false);
            tracing::info!(
                signal = "SIGHUP",
                new_certificate = changed,
                "re-read the certificate files; not stopping"
            );
        }
    })
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
