//! The webhook port's HTTP layer: routes, limits, deadlines and error answers.
//!
//! Every failure is a well-formed HTTP answer with a one-line `text/plain`
//! reason: unknown path 404, wrong method 405, a Content-Type other than JSON
//! 415, a body over the limit 413 (refused from `Content-Length` before
//! reading, and capped while streaming when the length is not declared), a
//! body that is not an AdmissionReview 400, a missed deadline 504, a panic
//! 500. The decision itself is the library's pure `admission::handle`.
//!
//! Memory is bounded by the bodies in flight: each request reserves its
//! body's bytes from one budget (`--body-budget`, default 64 MiB) before
//! reading it, and holds them until its decision is done; a request whose
//! bytes do not fit is answered 429 with `Retry-After` at once. (Waiting
//! instead would stall HTTP/2: the unread bodies of waiting streams fill the
//! connection's flow-control window, and the streams being served starve.) The decision itself reads only a view of the object
//! (`admission::view`), so a request's working memory is about its body.

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
use http_body_util::{BodyExt, Full};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::metrics::Metrics;
use crate::admission::{self, Answer, Endpoint, ReviewError};
use crate::settings::Settings;
use crate::store::{Snapshot, Store};

/// Largest body accepted: the API server's own request limit is 3 MiB for
/// objects, and an AdmissionReview carries up to two of them plus metadata.
pub const MAX_BODY: usize = 7 * 1024 * 1024;

/// Default total bytes of request bodies in flight (`--body-budget`).
pub const DEFAULT_BODY_BUDGET: usize = 64 * 1024 * 1024;

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
    /// Total bytes of request bodies read or being decided at once.
    pub body_budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: MAX_BODY,
            max_request_time: Duration::from_secs(30),
            body_budget: DEFAULT_BODY_BUDGET,
        }
    }
}

/// A byte count as a flag takes it: `67108864`, `64Mi`, `512Ki`, `1Gi`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let s = text.trim();
    let (number, scale) = [("Ki", 1usize << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)]
        .into_iter()
        .find_map(|(suffix, scale)| s.strip_suffix(suffix).map(|n| (n, scale)))
        .unwrap_or((s, 1));
    match number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
    {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a byte count of at least 1 (such as 64Mi, 512Ki or 1048576)"
        )),
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
    budget: Arc<Budget>,
}

/// The webhook service over `state`.
pub fn router(state: Arc<AppState>) -> Webhooks {
    let budget = Arc::new(Budget::new(state.limits.body_budget));
    Webhooks { state, budget }
}

/// Bytes of request bodies in flight, shared by every request of a port.
pub struct Budget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl Budget {
    /// A budget of `total` bytes (at least one).
    pub fn new(total: usize) -> Self {
        let total = total.clamp(1, u32::MAX as usize);
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Reserves `n` bytes if they are free now. A body larger than the
    /// whole budget takes all of it, so it is still served (alone).
    pub fn reserve(&self, n: usize) -> Option<Reserved> {
        let n = n.min(self.total) as u32;
        if n == 0 {
            return Some(Reserved(None));
        }
        self.bytes
            .clone()
            .try_acquire_many_owned(n)
            .ok()
            .map(|p| Reserved(Some(p)))
    }
}

/// Bytes held from a [`Budget`]; given back when dropped.
pub struct Reserved(Option<OwnedSemaphorePermit>);

impl Reserved {
    fn add(&mut self, more: Reserved) {
        match (&mut self.0, more.0) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (_, None) => {}
        }
    }
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
        let (state, budget) = (self.state.clone(), self.budget.clone());
        Box::pin(async move { Ok(count(&state, &budget, req).await) })
    }
}

/// Counts in-flight requests and answers by code, and turns a panic anywhere
/// below into a 500.
async fn count<B>(state: &Arc<AppState>, budget: &Budget, req: Request<B>) -> Answered
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let metrics = &state.metrics;
    metrics.in_flight.inc();
    let _guard = InFlight(metrics);
    let response = match AssertUnwindSafe(route(state, budget, req))
        .catch_unwind()
        .await
    {
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

async fn route<B>(state: &Arc<AppState>, budget: &Budget, req: Request<B>) -> Answered
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
        Some(endpoint) => admit(state, budget, endpoint, req).await,
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
        .and_then(|(_, v)| crate::duration::parse(v).ok())
}

async fn admit<B>(
    state: &Arc<AppState>,
    budget: &Budget,
    endpoint: Endpoint,
    req: Request<B>,
) -> Answered
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
    let body = req.into_body();
    let declared = declared.map(|n| n as usize);
    let work = answer(state, budget, endpoint, body, declared, started);
    match tokio::time::timeout(deadline, work).await {
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

fn over_budget(budget: &Budget) -> Answered {
    let mut r = plain(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "too many request bytes in flight (budget {} MiB): retry",
            budget.total.div_ceil(1024 * 1024)
        ),
    );
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Reads the body into one buffer, its bytes reserved from the budget: all
/// of a declared length up front, else chunk by chunk as they arrive.
async fn read_body<B>(
    budget: &Budget,
    body: B,
    declared: Option<usize>,
    max: usize,
) -> Result<(Bytes, Reserved), Answered>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut reserved = budget
        .reserve(declared.unwrap_or(0))
        .ok_or_else(|| over_budget(budget))?;
    let mut held = declared.unwrap_or(0);
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0));
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            plain(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if buf.len() + data.len() > max {
            return Err(too_large(max));
        }
        if buf.len() + data.len() > held {
            let more = buf.len() + data.len() - held;
            let got = budget.reserve(more).ok_or_else(|| over_budget(budget))?;
            reserved.add(got);
            held += more;
        }
        buf.extend_from_slice(&data);
    }
    Ok((Bytes::from(buf), reserved))
}

async fn answer<B>(
    state: &Arc<AppState>,
    budget: &Budget,
    endpoint: Endpoint,
    body: B,
    declared: Option<usize>,
    started: Instant,
) -> Answered
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let max = state.limits.max_body;
    let (body, reserved) = match read_body(budget, body, declared, max).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let snapshot = state.store.snapshot();
    let outcome = if body.len() <= INLINE_DECISION_LIMIT {
        let decider = &state.decider;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            decider(endpoint, &body, &snapshot, &state.settings)
        }))
        .map_err(|_| ());
        drop(reserved);
        outcome
    } else {
        let (decider, settings) = (state.decider.clone(), state.settings.clone());
        // The reservation goes with the work: a request whose deadline
        // passes while it is decided still holds its bytes until it is done.
        tokio::task::spawn_blocking(move || {
            let outcome = decider(endpoint, &body, &snapshot, &settings);
            drop((body, reserved));
            outcome
        })
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
        Ok(Err(e)) if e.is_internal() => {
            tracing::error!(webhook = endpoint.label(), error = %e, "answered 500");
            plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
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
pub fn log_admission(endpoint: Endpoint, a: &Answer, elapsed: Duration) {
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
    fn byte_counts_are_read() {
        assert_eq!(parse_bytes("64Mi"), Ok(64 << 20));
        assert_eq!(parse_bytes("512Ki"), Ok(512 << 10));
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        for bad in ["0", "", "-1", "64MB", "Mi", "99999999999999999999Gi"] {
            let e = parse_bytes(bad).unwrap_err();
            assert!(e.contains("not a byte count"), "{e}");
        }
    }

    #[test]
    fn the_budget_bounds_bytes_in_flight_and_gives_them_back() {
        let budget = Budget::new(10);
        let a = budget.reserve(6).expect("fits");
        assert_eq!(budget.available(), 4);
        // Does not fit while `a` is held: refused at once, nothing taken.
        assert!(budget.reserve(6).is_none());
        assert!(budget.reserve(100).is_none());
        assert_eq!(budget.available(), 4);
        drop(a);
        // Larger than the whole budget: takes all of it.
        let all = budget.reserve(100).expect("alone, it fits");
        assert_eq!(budget.available(), 0);
        drop(all);
        let mut r = budget.reserve(3).unwrap();
        r.add(budget.reserve(4).unwrap());
        r.add(budget.reserve(0).unwrap());
        assert_eq!(budget.available(), 3);
        drop(r);
        assert_eq!(budget.available(), 10);
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
