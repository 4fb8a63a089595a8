//! The webhook port's HTTP layer: routes, limits, deadlines and error answers.
//!
//! Every failure is a well-formed HTTP answer with a one-line `text/plain`
//! reason: unknown path 404, wrong method 405, a Content-Type other than JSON
//! 415, a body over the limit 413 (refused from `Content-Length` before
//! reading, and capped while streaming when the length is not declared), a
//! body that is not an AdmissionReview 400, a missed deadline 504, a panic
//! 500. The decision itself is the library's pure `admission::handle`.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures::FutureExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};

use super::metrics::Metrics;
use crate::admission::{self, Answer, Endpoint, ReviewError, Settings};
use crate::store::{Snapshot, Store};

/// Largest body accepted: the API server's own request limit is 3 MiB for
/// objects, and an AdmissionReview carries up to two of them plus metadata.
pub const MAX_BODY: usize = 7 * 1024 * 1024;

/// Bodies above this size are decided on the blocking pool, so a large
/// review never holds up the runtime threads that serve everyone else.
const INLINE_DECISION_LIMIT: usize = 256 * 1024;

/// The function that answers a review: `admission::handle` in production;
/// tests substitute one that panics or sleeps.
pub type Decider =
    Arc<dyn Fn(Endpoint, &[u8], &Snapshot, &Settings) -> Result<Answer, ReviewError> + Send + Sync>;

/// The production decider.
pub fn default_decider() -> Decider {
    Arc::new(admission::handle)
}

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body: usize,
    /// Deadline when the request names none, and the cap on `?timeout=`.
    pub max_request_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: MAX_BODY,
            max_request_time: Duration::from_secs(30),
        }
    }
}

/// What the handlers share.
pub struct AppState {
    pub store: Arc<Store>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub decider: Decider,
}

/// An answer of the webhook port.
pub type Answered = Response<Full<Bytes>>;

/// The webhook port as a service: the five endpoints of docs/design.md. Routing
/// is a match on the path, so the request path holds nothing but the work.
#[derive(Clone)]
pub struct Webhooks {
    state: Arc<AppState>,
}

/// The webhook service over `state`.
pub fn router(state: Arc<AppState>) -> Webhooks {
    Webhooks { state }
}

impl<B> tower::Service<Request<B>> for Webhooks
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Response = Answered;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answered, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move { Ok(count(&state, req).await) })
    }
}

/// Counts in-flight requests and answers by code, and turns a panic anywhere
/// below into a 500.
async fn count<B>(state: &Arc<AppState>, req: Request<B>) -> Answered
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let metrics = &state.metrics;
    metrics.in_flight.inc();
    let _guard = InFlight(metrics);
    let response = match AssertUnwindSafe(route(state, req)).catch_unwind().await {
        Ok(r) => r,
        Err(_) => {
            metrics.panics.inc();
            tracing::error!("request handler panicked");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the handler panicked",
            )
        }
    };
    metrics.count_response(response.status().as_u16());
    response
}

async fn route<B>(state: &Arc<AppState>, req: Request<B>) -> Answered
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Endpoint::from_path(req.uri().path()) {
        None => {
            let path = req.uri().path().chars().take(200).collect::<String>();
            plain(StatusCode::NOT_FOUND, format!("no webhook at {path:?}"))
        }
        Some(_) if req.method() != Method::POST => {
            let mut r = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {} not allowed: webhooks take POST", req.method()),
            );
            r.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
            r
        }
        Some(endpoint) => admit(state, endpoint, req).await,
    }
}

struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// A one-line `text/plain` answer.
pub fn plain(status: StatusCode, reason: impl Into<String>) -> Answered {
    let mut line = admission::wire::one_line(&reason.into());
    line.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(line)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Whether a Content-Type names JSON (`application/json`, any parameters).
fn is_json(value: Option<&HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// The `timeout` query parameter the API server appends (`?timeout=10s`).
fn requested_timeout(query: Option<&str>) -> Option<Duration> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "timeout")
        .and_then(|(_, v)| super::duration::parse(v).ok())
}

async fn admit<B>(state: &Arc<AppState>, endpoint: Endpoint, req: Request<B>) -> Answered
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    if !is_json(req.headers().get(CONTENT_TYPE)) {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    let max = state.limits.max_body;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large(max);
    }
    let deadline = requested_timeout(req.uri().query())
        .map_or(state.limits.max_request_time, |t| {
            t.min(state.limits.max_request_time)
        });
    match tokio::time::timeout(deadline, answer(state, endpoint, req.into_body(), started)).await {
        Ok(response) => response,
        Err(_) => plain(
            StatusCode::GATEWAY_TIMEOUT,
            format!("request deadline of {deadline:?} exceeded"),
        ),
    }
}

fn too_large(max: usize) -> Answered {
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than {} MiB", max / (1024 * 1024)),
    )
}

async fn answer<B>(state: &Arc<AppState>, endpoint: Endpoint, body: B, started: Instant) -> Answered
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body: Bytes = match Limited::new(body, state.limits.max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return too_large(state.limits.max_body);
        }
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            );
        }
    };
    let snapshot = state.store.snapshot();
    let outcome = if body.len() <= INLINE_DECISION_LIMIT {
        let decider = &state.decider;
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            decider(endpoint, &body, &snapshot, &state.settings)
        }))
        .map_err(|_| ())
    } else {
        let (decider, settings) = (state.decider.clone(), state.settings.clone());
        tokio::task::spawn_blocking(move || decider(endpoint, &body, &snapshot, &settings))
            .await
            .map_err(|_| ())
    };
    match outcome {
        Ok(Ok(answer)) => {
            let elapsed = started.elapsed();
            state.metrics.observe_admission(
                endpoint,
                &answer.kind,
                answer.operation,
                answer.allowed,
                answer.mutated(),
                elapsed,
            );
            log_admission(endpoint, &answer, elapsed);
            let mut response = Response::new(Full::new(Bytes::from(answer.body)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Ok(Err(e)) => {
            tracing::info!(webhook = endpoint.label(), error = %e, "refused a body that is not an AdmissionReview");
            plain(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(()) => {
            state.metrics.panics.inc();
            tracing::error!(
                webhook = endpoint.label(),
                "decision panicked; answered 500"
            );
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the decision panicked",
            )
        }
    }
}

/// One line per admission: who, what, the decision and its cost. Never the
/// object or the patch (they may hold secrets).
fn log_admission(endpoint: Endpoint, a: &Answer, elapsed: Duration) {
    tracing::info!(
        webhook = endpoint.label(),
        uid = %a.uid,
        kind = %a.kind,
        namespace = %a.namespace,
        name = %a.name,
        operation = a.operation,
        decision = if a.allowed { "allowed" } else { "denied" },
        patch_ops = a.patch_ops,
        patch_bytes = a.patch_bytes,
        warnings = a.decision.warnings.len(),
        dry_run = a.dry_run,
        latency_us = elapsed.as_micros() as u64,
        "admission"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_must_be_json() {
        assert!(is_json(Some(&HeaderValue::from_static("application/json"))));
        assert!(is_json(Some(&HeaderValue::from_static(
            "Application/JSON; charset=utf-8"
        ))));
        assert!(!is_json(Some(&HeaderValue::from_static("text/plain"))));
        assert!(!is_json(Some(&HeaderValue::from_static(
            "application/jsonx"
        ))));
        assert!(!is_json(None));
    }

    #[test]
    fn timeout_query_is_read() {
        assert_eq!(
            requested_timeout(Some("timeout=10s")),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            requested_timeout(Some("a=b&timeout=2s")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(requested_timeout(Some("timeout=soon")), None);
        assert_eq!(requested_timeout(None), None);
    }
}
