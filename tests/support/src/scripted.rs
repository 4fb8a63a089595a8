//! A scripted API server, for tests that assert each request in turn: the
//! code under test runs on a `kube::Client` whose transport is a
//! `tower_test` mock, and the test answers each request after checking its
//! verb, path, query and body (`expect`, `next`, `done`). Use it where the
//! exact sequence of calls is the point and a test must craft one answer
//! (a 409, a 403); use [`super::Cluster`] for anything that needs a cluster
//! that behaves. Every wait is bounded, so a missing or extra request fails
//! the test instead of hanging it.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

const WAIT: Duration = Duration::from_secs(10);

/// The test's side of the mock API server.
pub struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// One request the code under test made, waiting for its answer.
pub struct Exchange {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string ("" when none).
    pub query: String,
    /// Parsed JSON body (`Value::Null` when empty).
    pub body: Value,
    /// Content-Type of the request.
    pub content_type: String,
    respond: SendResponse<Response<Body>>,
}

/// A client wired to a fresh mock API server.
pub fn client() -> (kube::Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), ApiServer { handle })
}

impl ApiServer {
    /// Waits for the next request and checks its verb and path.
    pub async fn expect(&mut self, method: &str, path: &str) -> Exchange {
        let ex = self.next().await;
        assert_eq!(
            (ex.method.as_str(), ex.path.as_str()),
            (method, path),
            "unexpected request (query {:?}, body {})",
            ex.query,
            ex.body
        );
        ex
    }

    /// Waits for the next request, whatever it is.
    pub async fn next(&mut self) -> Exchange {
        let (req, respond) = tokio::time::timeout(WAIT, self.handle.next_request())
            .await
            .expect("timed out waiting for a request")
            .expect("the client went away before making the expected request");
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = req.into_body().collect_bytes().await.expect("request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        };
        Exchange {
            method,
            path,
            query,
            body,
            content_type,
            respond,
        }
    }

    /// Asserts the client made no further request before it was dropped.
    pub async fn done(mut self) {
        match tokio::time::timeout(WAIT, self.handle.next_request()).await {
            Ok(None) => {}
            Ok(Some((req, _))) => panic!("unexpected extra request {} {}", req.method(), req.uri()),
            Err(_) => panic!("the client was not dropped"),
        }
    }
}

impl Exchange {
    /// A query parameter's decoded value.
    pub fn param(&self, key: &str) -> Option<String> {
        super::objects::param(&self.query, key)
    }

    /// Answers 200 with `body`.
    pub fn ok(self, body: Value) {
        self.reply(StatusCode::OK, body)
    }

    /// Answers 201 with `body`.
    pub fn created(self, body: Value) {
        self.reply(StatusCode::CREATED, body)
    }

    /// Answers 404 NotFound as the API server does.
    pub fn not_found(self) {
        self.status(404, "NotFound", "not found")
    }

    /// Answers with a Status error.
    pub fn status(self, code: u16, reason: &str, message: &str) {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code
        });
        self.reply(StatusCode::from_u16(code).expect("status code"), body)
    }

    fn reply(self, code: StatusCode, body: Value) {
        let bytes = serde_json::to_vec(&body).expect("serialize");
        let resp = Response::builder()
            .status(code)
            .body(Body::from(bytes))
            .expect("response");
        self.respond.send_response(resp);
    }
}
