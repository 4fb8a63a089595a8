//! Bad input, answered and survived: every rejection of the webhook port, the
//! header and request deadlines, panics, and a fuzz of arbitrary bytes and
//! mutated AdmissionReviews through the router and over the socket.

use stash_testkit::tls as common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::*;
use http::{Method, StatusCode};
use proptest::prelude::*;
use serde_json::{Value, json};
use stash::server::http::{AppState, Decider, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Asserts a one-line text/plain rejection with `status`.
fn assert_rejected(reply: &Reply, status: StatusCode, mentions: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert!(
        reply.headers[http::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = reply.text();
    assert_eq!(text.matches('\n').count(), 1, "not one line: {text:?}");
    assert!(text.ends_with('\n'));
    assert!(
        text.to_lowercase().contains(&mentions.to_lowercase()),
        "{text:?} should mention {mentions:?}"
    );
}

async fn healthy(server: &stash::server::Running, ca: &str) {
    assert_eq!(probe(server.probe_addr, "/livez").await.0, 200);
    assert_eq!(probe(server.probe_addr, "/readyz").await.0, 200);
    let mut conn = Conn::open(server.addr, client_config(ca, &[b"h2"], None))
        .await
        .unwrap();
    assert_review_answer(
        &conn
            .post(
                "/mutate/workloads",
                deployment_review("healthy").to_string(),
            )
            .await
            .unwrap(),
        "healthy",
        Expected::GUIDE_DEPLOYMENT,
    );
}

#[tokio::test]
async fn every_bad_request_gets_its_status_over_http1_and_http2() {
    let pki = Pki::new();
    let server = start(pki.config()).await;
    let ca = pki.ca_pem();
    let review = deployment_review("u").to_string();
    let mut beta = deployment_review("u");
    beta["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let no_request =
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string();
    // (method, path, content type, body, expected status, the reason mentions)
    type Case<'a> = (
        Method,
        &'a str,
        Option<&'a str>,
        String,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            Method::GET,
            "/mutate/workloads",
            None,
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "POST",
        ),
        (
            Method::PUT,
            "/validate/repositories",
            Some("application/json"),
            review.clone(),
            StatusCode::METHOD_NOT_ALLOWED,
            "POST",
        ),
        (
            Method::POST,
            "/mutate/pods",
            Some("application/json"),
            review.clone(),
            StatusCode::NOT_FOUND,
            "/mutate/pods",
        ),
        (
            Method::GET,
            "/",
            None,
            String::new(),
            StatusCode::NOT_FOUND,
            "no webhook",
        ),
        (
            Method::POST,
            "/mutate/workloads",
            Some("text/plain"),
            review.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        ),
        (
            Method::POST,
            "/mutate/workloads",
            Some("application/yaml"),
            review.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        ),
        (
            Method::POST,
            "/mutate/workloads",
            None,
            review.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        ),
        (
            Method::POST,
            "/mutate/workloads",
            Some("application/json"),
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "not JSON",
        ),
        (
            Method::POST,
            "/mutate/workloads",
            Some("application/json"),
            String::new(),
            StatusCode::BAD_REQUEST,
            "not JSON",
        ),
        (
            Method::POST,
            "/validate/backupsessions",
            Some("application/json"),
            r#"{"kind":"Pod","apiVersion":"v1"}"#.into(),
            StatusCode::BAD_REQUEST,
            "not an AdmissionReview",
        ),
        (
            Method::POST,
            "/validate/backupsessions",
            Some("application/json"),
            beta.to_string(),
            StatusCode::BAD_REQUEST,
            "admission.k8s.io/v1",
        ),
        (
            Method::POST,
            "/mutate/backupsessions",
            Some("application/json"),
            no_request,
            StatusCode::BAD_REQUEST,
            "no request",
        ),
    ];
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut conn = Conn::open(server.addr, client_config(&ca, &[alpn], None))
            .await
            .unwrap();
        for (method, path, ct, body, status, mentions) in &cases {
            let reply = conn
                .send(request(
                    method.clone(),
                    path,
                    *ct,
                    Bytes::from(body.clone()),
                ))
                .await
                .unwrap();
            assert_rejected(&reply, *status, mentions);
            if *status == StatusCode::METHOD_NOT_ALLOWED {
                assert_eq!(reply.headers[http::header::ALLOW], "POST");
            }
        }
        // The same connection still serves.
        assert_review_answer(
            &conn
                .post("/validate/repositories", review.clone())
                .await
                .unwrap(),
            "u",
            // Not a Repository: nothing for that webhook to say.
            Expected::ALLOWED,
        );
    }
    let (_, metrics) = probe(server.probe_addr, "/metrics").await;
    assert_eq!(
        metric(&metrics, r#"stash_http_requests_total{code="400"}"#),
        Some(10.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, r#"stash_http_requests_total{code="415"}"#),
        Some(6.0)
    );
    assert_eq!(
        metric(&metrics, "stash_http_requests_in_flight "),
        Some(0.0)
    );
    healthy(&server, &ca).await;
    server.shutdown().await;
}

/// A raw TLS connection speaking HTTP/1.1 by hand.
async fn raw(
    server: &stash::server::Running,
    ca: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls(server.addr, client_config(ca, &[b"http/1.1"], None))
        .await
        .unwrap()
}

async fn read_all(
    stream: &mut (impl AsyncReadExt + Unpin),
    within: Duration,
) -> Result<String, &'static str> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut out)).await {
        Ok(_) => Ok(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => Err("connection still open"),
    }
}

#[tokio::test]
async fn oversized_bodies_get_413_declared_or_streamed() {
    let pki = Pki::new();
    let server = start(pki.config()).await;
    let ca = pki.ca_pem();

    // Declared: refused from the header alone, before any body byte is sent.
    let mut s = raw(&server, &ca).await;
    s.write_all(b"POST /mutate/workloads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7340033\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");

    // Streamed without a length: cut off once past the limit.
    let s = raw(&server, &ca).await;
    let (mut r, mut w) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        w.write_all(b"POST /mutate/workloads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await?;
        let chunk = vec![b' '; 1024 * 1024];
        for _ in 0..16 {
            w.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            w.write_all(&chunk).await?;
            w.write_all(b"\r\n").await?;
        }
        w.write_all(b"0\r\n\r\n").await?;
        Ok::<_, std::io::Error>(())
    });
    let mut head = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), r.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
    writer.abort();

    // Exactly at the limit is fine as far as size goes (it is not JSON: 400).
    let mut conn = Conn::open(server.addr, client_config(&ca, &[b"h2"], None))
        .await
        .unwrap();
    let reply = conn
        .post("/mutate/workloads", vec![b' '; 7 * 1024 * 1024])
        .await
        .unwrap();
    assert_rejected(&reply, StatusCode::BAD_REQUEST, "not JSON");
    let reply = conn
        .post("/mutate/workloads", vec![b' '; 7 * 1024 * 1024 + 1])
        .await
        .unwrap();
    assert_rejected(&reply, StatusCode::PAYLOAD_TOO_LARGE, "7 MiB");
    healthy(&server, &ca).await;
    server.shutdown().await;
}

#[tokio::test]
async fn slow_and_idle_clients_are_cut_off_without_stalling_others() {
    let pki = Pki::new();
    let mut config = pki.config();
    config.header_read_timeout = Duration::from_secs(2);
    config.handshake_timeout = Duration::from_secs(2);
    let server = start(config).await;
    let ca = pki.ca_pem();

    // Half a header, then nothing.
    let mut slow = raw(&server, &ca).await;
    slow.write_all(b"POST /mutate/workloads HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A TCP connection that never starts TLS.
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // A kept-alive connection that goes quiet after one request.
    let mut quiet = Conn::open(server.addr, client_config(&ca, &[b"http/1.1"], None))
        .await
        .unwrap();
    assert_review_answer(
        &quiet
            .post("/mutate/workloads", deployment_review("q").to_string())
            .await
            .unwrap(),
        "q",
        Expected::GUIDE_DEPLOYMENT,
    );

    // Others are served meanwhile: before the slow client is even cut off.
    healthy(&server, &ca).await;
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(10), slow.read(&mut byte))
            .await
            .is_err(),
        "the slow client was cut off before others were served"
    );

    let reply = read_all(&mut slow, Duration::from_secs(5)).await.unwrap();
    assert!(!reply.contains(" 200 "), "{reply}");
    assert_eq!(
        read_all(&mut idle, Duration::from_secs(5)).await.unwrap(),
        ""
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        quiet
            .post("/mutate/workloads", deployment_review("q").to_string())
            .await
            .is_err()
    );
    healthy(&server, &ca).await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_api_servers_timeout_is_honoured() {
    let pki = Pki::new();
    let server = start(pki.config()).await;
    let ca = pki.ca_pem();
    // Headers promise 100 bytes; 10 arrive; the request asked for 1 s.
    let mut s = raw(&server, &ca).await;
    s.write_all(b"POST /mutate/workloads?timeout=1s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"kind\":\"A")
        .await
        .unwrap();
    let started = Instant::now();
    healthy(&server, &ca).await;
    let mut head = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 504");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    server.shutdown().await;
}

fn panicking_decider() -> Decider {
    Arc::new(|endpoint, body: &[u8], snap: &_, settings: &_| {
        if body.windows(4).any(|w| w == b"boom") {
            panic!("boom");
        }
        stash::admission::handle(endpoint, body, snap, settings)
    })
}

#[tokio::test]
async fn a_panic_is_caught_counted_and_answered_500() {
    let pki = Pki::new();
    let mut config = pki.config();
    config.decider = panicking_decider();
    let server = start(config).await;
    let ca = pki.ca_pem();
    let mut conn = Conn::open(server.addr, client_config(&ca, &[b"h2"], None))
        .await
        .unwrap();
    let small = deployment_review("boom").to_string();
    let mut large = deployment_review("boom");
    large["request"]["object"]["metadata"]["annotations"] = json!({"big": "x".repeat(512 * 1024)});
    for body in [small, large.to_string()] {
        let reply = conn.post("/mutate/workloads", body).await.unwrap();
        assert_rejected(&reply, StatusCode::INTERNAL_SERVER_ERROR, "panicked");
    }
    let (_, metrics) = probe(server.probe_addr, "/metrics").await;
    assert_eq!(
        metric(&metrics, "stash_handler_panics_total"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, r#"stash_http_requests_total{code="500"}"#),
        Some(2.0)
    );
    healthy(&server, &ca).await;
    server.shutdown().await;
}

#[tokio::test]
async fn probes_and_metrics() {
    let pki = Pki::new();
    let server = start(pki.config()).await;
    let mut conn = Conn::open(server.addr, client_config(&pki.ca_pem(), &[b"h2"], None))
        .await
        .unwrap();
    conn.post("/mutate/workloads", deployment_review("m").to_string())
        .await
        .unwrap();
    assert_eq!(
        probe(server.probe_addr, "/livez").await,
        (200, "ok\n".into())
    );
    assert_eq!(
        probe(server.probe_addr, "/readyz").await,
        (200, "ok\n".into())
    );
    let (status, text) = probe(server.probe_addr, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        r#"stash_admission_duration_seconds_count{webhook="mutate/workloads",kind="Deployment",operation="CREATE",allowed="true","#,
        r#"stash_http_requests_total{code="200"} 1"#,
        "stash_http_requests_in_flight 0",
        "stash_handler_panics_total 0",
        r#"stash_certificate_not_after_seconds{expiring="false"} "#,
        "stash_store_backupconfigurations 1",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    let not_after = metric(&text, "stash_certificate_not_after_seconds").unwrap();
    assert_eq!(not_after as i64, server.tls.served().not_after);
    assert_eq!(probe(server.probe_addr, "/nope").await.0, 404);
    server.begin_shutdown();
    assert_eq!(probe(server.probe_addr, "/readyz").await.0, 503);
    server.shutdown().await;
}

#[tokio::test]
async fn readyz_waits_for_the_store_to_sync() {
    let pki = Pki::new();
    let store = Arc::new(stash::store::Store::default());
    let server = stash::server::start(pki.config(), store.clone())
        .await
        .unwrap();
    let (status, body) = probe(server.probe_addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("synced"), "{body}");
    store.mark_synced();
    assert_eq!(probe(server.probe_addr, "/readyz").await.0, 200);
    server.shutdown().await;
}

// ---- fuzz ----

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn app() -> stash::server::http::Webhooks {
    stash::server::http::router(Arc::new(AppState {
        store: example_store(),
        settings: Default::default(),
        metrics: Arc::new(stash::server::metrics::Metrics::new()),
        limits: Limits::default(),
        decider: stash::server::http::default_decider(),
    }))
}

/// Every JSON pointer in `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
        Just(json!("CREATE")),
        Just(json!("DELETE")),
        Just(json!("Deployment")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A review with `mutations` applied: (which pointer, delete or replace, value).
fn mutated_review(mutations: &[(usize, bool, Value)]) -> Vec<u8> {
    let mut doc = deployment_review("fuzz");
    for (pick, delete, value) in mutations {
        let mut all = Vec::new();
        pointers(&doc, String::new(), &mut all);
        if all.is_empty() {
            doc = value.clone();
            continue;
        }
        let p = &all[pick % all.len()];
        let (parent, last) = p.rsplit_once('/').unwrap();
        let last = last.replace("~1", "/").replace("~0", "~");
        match doc.pointer_mut(if parent.is_empty() { "" } else { parent }) {
            Some(Value::Object(m)) if *delete => {
                m.remove(&last);
            }
            Some(Value::Array(a)) if *delete => {
                if let Ok(i) = last.parse::<usize>()
                    && i < a.len()
                {
                    a.remove(i);
                }
            }
            _ => {
                if let Some(slot) = doc.pointer_mut(p) {
                    *slot = value.clone();
                }
            }
        }
    }
    serde_json::to_vec(&doc).unwrap()
}

fn endpoint_path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/mutate/workloads".to_string()),
        Just("/mutate/backupsessions".to_string()),
        Just("/validate/backupsessions".to_string()),
        Just("/validate/backupconfigurations".to_string()),
        Just("/validate/repositories".to_string()),
        Just("/mutate/workloads?timeout=10s".to_string()),
        "/[a-z/]{0,20}",
    ]
}

async fn through_router(
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String, Vec<u8>) {
    use tower::ServiceExt;
    let mut req = http::Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        req = req.header(http::header::CONTENT_TYPE, ct);
    }
    let req = req.body(axum::body::Body::from(body)).unwrap();
    let resp = app().oneshot(req).await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, ct, body)
}

fn check_answer(status: StatusCode, ct: &str, body: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(
        [200, 400, 404, 405, 413, 415].contains(&status.as_u16()),
        "unexpected status {status}: {}",
        String::from_utf8_lossy(body)
    );
    if status == StatusCode::OK {
        prop_assert_eq!(ct, "application/json");
        let v: Value =
            serde_json::from_slice(body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&v["kind"], "AdmissionReview");
        prop_assert!(v["response"]["allowed"].is_boolean());
    } else {
        prop_assert!(ct.starts_with("text/plain"));
        let text = String::from_utf8_lossy(body);
        prop_assert_eq!(text.matches('\n').count(), 1, "not one line: {:?}", text);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_requests_get_well_formed_answers(
        method in prop_oneof![Just(Method::POST), Just(Method::GET), Just(Method::PUT), Just(Method::DELETE)],
        path in endpoint_path(),
        content_type in prop_oneof![Just(Some("application/json")), Just(None), Just(Some("text/plain")), Just(Some("application/json; charset=utf-8"))],
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let (status, ct, out) = runtime().block_on(through_router(method, &path, content_type, body));
        check_answer(status, &ct, &out)?;
    }

    #[test]
    fn mutated_reviews_get_well_formed_answers(
        path in endpoint_path(),
        mutations in prop::collection::vec((any::<usize>(), any::<bool>(), json_value()), 1..6),
    ) {
        let body = mutated_review(&mutations);
        let (status, ct, out) = runtime().block_on(through_router(Method::POST, &path, Some("application/json"), body));
        check_answer(status, &ct, &out)?;
    }
}

#[tokio::test]
async fn garbage_over_the_socket_leaves_the_server_healthy() {
    let pki = Pki::new();
    let mut config = pki.config();
    config.header_read_timeout = Duration::from_millis(300);
    config.handshake_timeout = Duration::from_millis(300);
    let server = start(config).await;
    let ca = pki.ca_pem();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let blobs = prop::collection::vec(prop::collection::vec(any::<u8>(), 1..2048), 60);
    let blobs = proptest::strategy::ValueTree::current(&blobs.new_tree(&mut runner).unwrap());
    for (i, blob) in blobs.iter().enumerate() {
        if i % 2 == 0 {
            // Before TLS.
            let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            let _ = s.write_all(blob).await;
            let _ = read_all(&mut s, Duration::from_secs(3)).await;
        } else {
            // After TLS, as HTTP/1.1 bytes.
            let mut s = raw(&server, &ca).await;
            let _ = s.write_all(blob).await;
            let _ = read_all(&mut s, Duration::from_secs(3)).await;
        }
    }
    // Arbitrary bodies on one HTTP/2 connection.
    let mut conn = Conn::open(server.addr, client_config(&ca, &[b"h2"], None))
        .await
        .unwrap();
    for blob in &blobs {
        let reply = conn
            .post("/validate/backupconfigurations", blob.clone())
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    }
    healthy(&server, &ca).await;
    let (_, metrics) = probe(server.probe_addr, "/metrics").await;
    assert_eq!(metric(&metrics, "stash_handler_panics_total"), Some(0.0));
    server.shutdown().await;
}
