//! The probe port's routes: `/livez`, `/readyz` and `/metrics`, served by
//! the admin server ([`crate::runtime::admin`]).
//!
//! Kept off the TLS port so kubelet and Prometheus need no certificates, and
//! so a flood on the webhook port cannot fail the liveness probe.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;

use super::metrics::Metrics;
use crate::store::Store;

/// What readiness depends on. There is no certificate condition: the server
/// does not start without a serving certificate (`server::start` loads it
/// before the probe port opens), and a failed reload keeps the last good one.
pub struct Health {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// Set when shutdown begins: the Service stops sending us requests.
    pub shutting_down: AtomicBool,
}

impl Health {
    /// Why the server is not ready, if it is not.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.shutting_down.load(Ordering::Acquire) {
            Some("shutting down")
        } else if !self.store.is_synced() {
            Some("store has not synced with the API server yet")
        } else {
            None
        }
    }
}

/// The probe router.
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(health)
}

async fn readyz(State(h): State<Arc<Health>>) -> Response {
    match h.not_ready_reason() {
        None => "ok\n".into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(h): State<Arc<Health>>) -> Response {
    let snap = h.store.snapshot();
    h.metrics.store_configs.set(snap.config_count() as i64);
    h.metrics
        .store_repositories
        .set(snap.repository_count() as i64);
    crate::runtime::admin::openmetrics(h.metrics.encode())
}
