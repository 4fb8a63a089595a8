//! SIGHUP re-reads the certificate files and never stops the server.

use std::sync::Arc;

use super::metrics::Metrics;
use super::tls::TlsState;
use crate::runtime::drain::Drain;

/// On each SIGHUP, re-reads the certificate files at once (as a file event
/// would) and logs what came of it; stops on drain.
pub fn reload_on_hangup(
    mut hup: tokio::signal::unix::Signal,
    tls: Arc<TlsState>,
    metrics: Arc<Metrics>,
    mut drain: Drain,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = hup.recv() => if got.is_none() { break },
                () = drain.signaled() => break,
            }
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
