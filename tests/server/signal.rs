//! The built binary: SIGTERM drains an in-flight request and exits 0, SIGHUP
//! re-reads the certificate and keeps serving, the
//! embedded default creates its development certificate, and every admission
//! is one log line that carries no object content.

use stash_testkit::tls as common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::process::Server;

/// [`super::process::spawn`] without a shell prefix.
fn spawn(cwd: &Path, extra: &[&str]) -> Server {
    super::process::spawn(cwd, None, extra)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = stash::certs::generate(&stash::certs::dev_names(), Default::default()).unwrap();
    let (ca, cert, key) = (
        dir.path().join("ca.crt"),
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
    );
    stash::certs::write_bundle(&bundle, &ca, &cert, &key).unwrap();
    let mut server = spawn(
        dir.path(),
        &[
            "--offline",
            examples().to_str().unwrap(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--drain-timeout",
            "20s",
        ],
    );
    assert_eq!(probe(server.probe_addr, "/readyz").await.0, 200);

    // An in-flight request: headers and half the body sent.
    let mut review = deployment_review("in-flight-uid");
    review["request"]["object"]["metadata"]["annotations"] =
        serde_json::json!({"note": "s3cr3t-value"});
    let body = review.to_string().into_bytes();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut s = tls(
        server.addr,
        client_config(&bundle.ca_pem, &[b"http/1.1"], None),
    )
    .await
    .unwrap();
    s.write_all(
        format!("POST /mutate/workloads?timeout=10s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())
            .as_bytes(),
    )
    .await
    .unwrap();
    s.write_all(first).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    signal(&server.child, "-TERM");
    // Not ready, and no new connections, while the request is still open.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let refused = tokio::net::TcpStream::connect(server.addr).await.is_err();
        let (status, _) = probe(server.probe_addr, "/readyz").await;
        if refused {
            assert_eq!(status, 503);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "listener still open after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );

    s.write_all(rest).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("in-flight-uid"), "{text}");

    let status = wait_exit(&mut server.child, Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");

    // One log line for the admission, with what an operator needs and no
    // object content.
    std::thread::sleep(Duration::from_millis(100));
    let logs = server.logs.lock().unwrap().clone();
    let admissions: Vec<&Value> = logs
        .iter()
        .filter(|l| l["message"] == "admission")
        .collect();
    assert_eq!(admissions.len(), 1, "{logs:?}");
    let line = admissions[0];
    assert_eq!(line["uid"], "in-flight-uid");
    assert_eq!(line["kind"], "Deployment");
    assert_eq!(line["namespace"], "demo");
    assert_eq!(line["name"], "stash-demo");
    assert_eq!(line["operation"], "CREATE");
    assert!(line["decision"] == "allowed" || line["decision"] == "denied");
    assert!(line["patch_bytes"].is_u64());
    assert!(line["latency_us"].is_u64());
    let all = serde_json::to_string(&logs).unwrap();
    assert!(!all.contains("s3cr3t-value"), "object content was logged");
    assert!(logs.iter().any(|l| l["message"] == "drained"), "{logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_creates_a_dev_certificate_and_sigint_stops_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn(dir.path(), &["--offline", examples().to_str().unwrap()]);
    let certs = dir.path().join("certs");
    let ca = std::fs::read_to_string(certs.join("ca.crt")).unwrap();
    assert!(std::fs::metadata(certs.join("tls.crt")).is_ok());
    let mode = std::fs::metadata(certs.join("tls.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let logs = server.logs.lock().unwrap().clone();
    assert!(
        logs.iter().any(|l| l["ca"] == "certs/ca.crt"),
        "CA path not logged: {logs:?}"
    );

    let mut conn = Conn::open(server.addr, client_config(&ca, &[b"h2"], None))
        .await
        .unwrap();
    assert_review_answer(
        &conn
            .post("/mutate/workloads", deployment_review("dev").to_string())
            .await
            .unwrap(),
        "dev",
        Expected::GUIDE_DEPLOYMENT,
    );
    drop(conn);
    signal(&server.child, "-INT");
    assert!(wait_exit(&mut server.child, Duration::from_secs(15)).success());

    // A second start serves the same certificate rather than minting another.
    let before = std::fs::read(certs.join("tls.crt")).unwrap();
    let mut again = spawn(dir.path(), &["--offline", examples().to_str().unwrap()]);
    assert_eq!(std::fs::read(certs.join("tls.crt")).unwrap(), before);
    signal(&again.child, "-TERM");
    assert!(wait_exit(&mut again.child, Duration::from_secs(15)).success());
}

#[test]
fn cluster_mode_without_a_cluster_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stash"))
        .current_dir(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--probe-listen",
            "127.0.0.1:0",
        ])
        .env("HOME", dir.path())
        .env("KUBECONFIG", dir.path().join("missing"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--offline"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_re_reads_the_certificate_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let ca = stash::certs::Authority::new("test CA").unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let write = |leaf: &stash::certs::Leaf| {
        stash::certs::write_atomic(&key, leaf.key_pem.as_bytes(), true).unwrap();
        stash::certs::write_atomic(&cert, leaf.cert_pem.as_bytes(), false).unwrap();
    };
    let first = ca.server(&stash::certs::dev_names()).unwrap();
    write(&first);
    let mut server = spawn(
        dir.path(),
        &[
            "--offline",
            examples().to_str().unwrap(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--cert-poll-interval",
            "1h",
        ],
    );
    let ca_pem = ca.cert_pem().to_string();
    let hups = |logs: &[Value]| {
        logs.iter()
            .filter(|l| l["signal"] == "SIGHUP" && l["new_certificate"].is_boolean())
            .count()
    };
    signal(&server.child, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while hups(&server.logs.lock().unwrap()) < 1 {
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "SIGHUP stopped the server"
        );
        assert!(Instant::now() < deadline, "SIGHUP was not logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "SIGHUP stopped the server"
    );
    assert_eq!(probe(server.probe_addr, "/readyz").await.0, 200);
    assert_eq!(
        served_serial(server.addr, &ca_pem).await,
        serial_of_pem(&first.cert_pem)
    );

    // A new pair, then SIGHUP: served (file events may see it first).
    let second = ca.server(&stash::certs::dev_names()).unwrap();
    write(&second);
    signal(&server.child, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_serial(server.addr, &ca_pem).await != serial_of_pem(&second.cert_pem) {
        assert!(
            Instant::now() < deadline,
            "the new pair was not served after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&server.child, "-TERM");
    assert!(wait_exit(&mut server.child, Duration::from_secs(15)).success());
    let logs = server.logs.lock().unwrap().clone();
    assert!(logs.iter().any(|l| l["message"] == "drained"), "{logs:?}");
}
