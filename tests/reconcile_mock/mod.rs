//! A scripted Kubernetes API server for tests: the code under test runs on a
//! `kube::Client` whose transport is a `tower_test` mock, and the test answers
//! each request in turn after asserting its verb, path, query and body.
//! Every wait is bounded, so a missing or extra request fails the test
//! instead of hanging it.

#![allow(dead_code)]

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
    /// A query parameter's value.
    pub fn param(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| {
                v.replace("%2F", "/")
                    .replace("%3D", "=")
                    .replace("%2C", ",")
            })
        })
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

/// A request the fake world served.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Recorded {
    /// A query parameter's value.
    pub fn param(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| v.to_string())
        })
    }
}

impl ApiServer {
    /// Serves a little in-memory API server until the client is dropped:
    /// objects live in `world` keyed by their URL path. GET reads (a
    /// `/status` path reads the object; a collection path lists it,
    /// filtered by an equality `labelSelector`); POST creates as the API
    /// server does (uid, resourceVersion, generation, creationTimestamp;
    /// 409 when the name is taken); PUT replaces; server-side apply stores
    /// the body; JSON and merge patches are applied. Writes to a `/status`
    /// path change only `status`; other writes keep `status` and bump
    /// `metadata.generation` when `spec` changes, like the status
    /// subresource. A `metadata.resourceVersion` in a PUT or merge-patch
    /// body is a precondition (409 when stale). DELETE removes. A key
    /// `refuse <path>` makes every write to `<path>` answer 403, and a key
    /// `change-after-get <path>` bumps the object's resourceVersion right
    /// after each GET of it, as a concurrent writer would. Returns every
    /// request in order and the final world.
    pub async fn serve(self, world: World) -> (Vec<Recorded>, World) {
        let shared = std::sync::Arc::new(std::sync::Mutex::new(world));
        let log = self.serve_shared(shared.clone()).await;
        let world = std::mem::take(&mut *shared.lock().unwrap());
        (log, world)
    }

    /// [`ApiServer::serve`] over a world the test may change while it runs.
    pub async fn serve_shared(
        self,
        shared: std::sync::Arc<std::sync::Mutex<World>>,
    ) -> Vec<Recorded> {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        self.serve_logged(shared, log.clone()).await;
        std::mem::take(&mut *log.lock().unwrap())
    }

    /// [`ApiServer::serve_shared`], appending each request to `log` as it
    /// arrives, so a test can look at the requests of one step at a time.
    pub async fn serve_logged(
        mut self,
        shared: std::sync::Arc<std::sync::Mutex<World>>,
        log: std::sync::Arc<std::sync::Mutex<Vec<Recorded>>>,
    ) {
        loop {
            let next = tokio::time::timeout(WAIT, self.handle.next_request())
                .await
                .expect("the client neither made a request nor went away");
            let Some((req, respond)) = next else { break };
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
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("request body is JSON")
            };
            let recorded = Recorded {
                method: method.clone(),
                path: path.clone(),
                query: query.clone(),
                content_type: content_type.clone(),
                body: body.clone(),
            };
            log.lock().unwrap().push(recorded.clone());
            let mut guard = shared.lock().unwrap();
            let world = &mut *guard;
            let ex = Exchange {
                method: method.clone(),
                path: path.clone(),
                query,
                body: body.clone(),
                content_type: content_type.clone(),
                respond,
            };
            let is_status = path.ends_with("/status");
            let object_path = path.strip_suffix("/status").unwrap_or(&path).to_string();
            if method != "GET" && world.contains_key(&format!("refuse {object_path}")) {
                ex.status(
                    403,
                    "Forbidden",
                    "cronjobs.batch is forbidden: no RBAC for this test",
                );
                continue;
            }
            match method.as_str() {
                "GET" => match world.get(&object_path).cloned() {
                    Some(obj) => {
                        ex.ok(obj);
                        // Someone else writes right after our read.
                        if world.contains_key(&format!("change-after-get {path}"))
                            && let Some(live) = world.get_mut(&path)
                        {
                            bump(live);
                        }
                    }
                    None if is_collection(&path) => {
                        let selector = recorded.param("labelSelector").map(|s| decode(&s));
                        ex.ok(list(world, &path, selector.as_deref()))
                    }
                    None => ex.not_found(),
                },
                "PATCH" if content_type.starts_with("application/apply-patch") => {
                    let mut obj = body.clone();
                    if let Some(uid) = world
                        .get(&object_path)
                        .and_then(|o| o.pointer("/metadata/uid"))
                    {
                        obj["metadata"]["uid"] = uid.clone();
                    }
                    bump(&mut obj);
                    world.insert(object_path, obj.clone());
                    ex.ok(obj)
                }
                "PATCH" | "PUT" => {
                    let Some(old) = world.get(&object_path).cloned() else {
                        ex.not_found();
                        continue;
                    };
                    let mut obj = old.clone();
                    if content_type == "application/json-patch+json" {
                        let p: json_patch::Patch =
                            serde_json::from_value(body).expect("JSON patch");
                        if let Err(e) = json_patch::patch(&mut obj, &p) {
                            ex.status(422, "Invalid", &e.to_string());
                            continue;
                        }
                    } else {
                        if let Some(rv) = body.pointer("/metadata/resourceVersion")
                            && obj.pointer("/metadata/resourceVersion") != Some(rv)
                        {
                            ex.status(409, "Conflict", "the object has been modified");
                            continue;
                        }
                        if method == "PUT" {
                            obj = body;
                        } else {
                            json_patch::merge(&mut obj, &body);
                        }
                    }
                    let obj = settle_write(&old, obj, is_status);
                    world.insert(object_path, obj.clone());
                    ex.ok(obj)
                }
                "POST" => {
                    let name = body
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("x");
                    let key = format!("{path}/{name}");
                    if world.contains_key(&key) {
                        ex.status(409, "AlreadyExists", &format!("{name} already exists"));
                        continue;
                    }
                    let obj = created(body.clone(), world.len());
                    world.insert(key, obj.clone());
                    ex.created(obj)
                }
                "DELETE" => {
                    world.remove(&path);
                    ex.ok(json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}))
                }
                other => panic!("unexpected verb {other}"),
            }
        }
    }
}

/// What the API server fills in on create: uid, resourceVersion,
/// generation and creationTimestamp (kept when the body has them).
pub fn created(mut obj: Value, serial: usize) -> Value {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("x")
        .to_string();
    let meta = &mut obj["metadata"];
    if meta.get("uid").is_none() {
        meta["uid"] = json!(format!("{name}-uid-{serial}"));
    }
    if meta.get("creationTimestamp").is_none() {
        let now = jiff::Timestamp::now().as_second();
        let now = jiff::Timestamp::from_second(now).expect("a time of today");
        meta["creationTimestamp"] = json!(now.to_string());
    }
    meta["generation"] = json!(1);
    meta["resourceVersion"] = json!("1");
    obj
}

/// The stored result of a write: a status write changes only `status`; any
/// other write keeps `status` and moves `generation` on when `spec` changed.
fn settle_write(old: &Value, mut new: Value, to_status: bool) -> Value {
    if to_status {
        let mut obj = old.clone();
        match new.get("status") {
            Some(s) => obj["status"] = s.clone(),
            None => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        bump(&mut obj);
        return obj;
    }
    match old.get("status") {
        Some(s) => new["status"] = s.clone(),
        None => {
            if let Some(m) = new.as_object_mut() {
                m.remove("status");
            }
        }
    }
    if let Some(generation) = old.pointer("/metadata/generation").and_then(Value::as_i64)
        && old.get("spec") != new.get("spec")
    {
        new["metadata"]["generation"] = json!(generation + 1);
    }
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    bump(&mut new);
    new
}

/// Whether `path` names a namespaced collection (`…/namespaces/<ns>/<plural>`).
fn is_collection(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    matches!(
        parts.as_slice(),
        ["api", _, "namespaces", _, _] | ["apis", _, _, "namespaces", _, _]
    )
}

fn decode(s: &str) -> String {
    s.replace("%2F", "/")
        .replace("%3D", "=")
        .replace("%2C", ",")
        .replace('+', " ")
}

/// The objects directly under collection `path` whose labels match every
/// `key=value` of `selector`.
fn list(world: &World, path: &str, selector: Option<&str>) -> Value {
    let wanted: Vec<(&str, &str)> = selector
        .unwrap_or("")
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (k, v) = t
                .split_once("==")
                .or_else(|| t.split_once('='))
                .unwrap_or_else(|| panic!("the fake serves equality selectors only: {t}"));
            assert!(
                !k.ends_with('!'),
                "the fake serves equality selectors only: {t}"
            );
            (k, v)
        })
        .collect();
    let prefix = format!("{path}/");
    let items: Vec<Value> = world
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
        .map(|(_, v)| v.clone())
        .filter(|v| {
            wanted.iter().all(|(k, val)| {
                v.pointer("/metadata/labels")
                    .and_then(|l| l.get(*k))
                    .and_then(Value::as_str)
                    == Some(*val)
            })
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// Objects by URL path.
pub type World = std::collections::BTreeMap<String, Value>;

fn bump(obj: &mut Value) {
    let rv = obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    obj["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
}
