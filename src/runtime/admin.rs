//! The one plain-HTTP admin port: `stash serve`'s probe port (`/livez`,
//! `/readyz`, `/metrics`) and `stash run-backup`'s metrics port are the same
//! server with different routers.
//!
//! Plain HTTP/1.1 so kubelet and Prometheus need no certificates, under the
//! same limits as the webhook port (a connection cap, a header read timeout,
//! an idle timeout; [`crate::runtime::conn`]), so a slow or flooding client on a pod's
//! network cannot pin memory or descriptors in the process that serves it.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;

use crate::runtime::conn::{self, PortLimits};
use crate::runtime::drain::Drain;

/// The limits of an admin port that has no flags of its own (run-backup's):
/// a handful of scrapers, the webhook port's default timeouts.
pub const DEFAULT_LIMITS: PortLimits = PortLimits {
    max_connections: 16,
    header_read_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(60),
};

/// Serves `router` on `listener` until `stop`; `port` names it in the logs,
/// `open` counts its open connections.
pub async fn serve(
    port: &'static str,
    listener: TcpListener,
    router: axum::Router,
    limits: PortLimits,
    open: Gauge,
    stop: Drain,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder.http1_only());
    conn::serve(
        port,
        listener,
        limits,
        // Nothing long-running is served here: a short drain is enough.
        Duration::from_secs(1),
        open,
        stop,
        move |accepted| {
            let builder = builder.clone();
            let router = router.clone();
            async move {
                let peer = accepted.peer;
                let service = accepted.track(TowerToHyperService::new(router));
                let connection = builder.serve_connection(TokioIo::new(accepted.tcp), service);
                if let Err(e) =
                    conn::drive(connection, accepted.activity, limits, accepted.stop).await
                {
                    tracing::debug!(%peer, port, error = %e, "admin connection ended with an error");
                }
            }
        },
    )
    .await;
}

/// A Prometheus scrape answer: OpenMetrics text.
pub fn openmetrics(body: String) -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
