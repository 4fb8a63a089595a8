//! What an attacker tried against `stash serve` (issue 12), each answered:
//! the probe port's timeouts and connection cap, one port's flood never
//! stopping the other, certificate paths and validity, forged log lines.

use stash_testkit::tls as common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::process::spawn;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes; None when it is still open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
        Ok(_) => Some(out),
        Err(_) => None,
    }
}

/// A review over a fresh TLS connection, within `within`.
async fn review_answered(addr: std::net::SocketAddr, ca: &str, uid: &str, within: Duration) {
    let answer = tokio::time::timeout(within, async {
        let mut conn = Conn::open(addr, client_config(ca, &[b"h2"], None)).await?;
        conn.post("/mutate/workloads", deployment_review(uid).to_string())
            .await
            .map_err(std::io::Error::other)
    })
    .await;
    match answer {
        Ok(Ok(reply)) => assert_review_answer(&reply, uid, Expected::GUIDE_DEPLOYMENT),
        Ok(Err(e)) => panic!("the webhook port failed: {e}"),
        Err(_) => panic!("the webhook port did not answer within {within:?}"),
    }
}

#[tokio::test]
async fn probe_port_cuts_off_idle_and_half_sent_clients_and_caps_connections() {
    let pki = Pki::new();
    let mut config = pki.config();
    config.header_read_timeout = Duration::from_secs(1);
    config.probe_max_connections = 4;
    let server = start(config).await;
    let ca = pki.ca_pem();

    // Two silent connections and two that send half a request head.
    let mut held = Vec::new();
    for i in 0..4 {
        let mut s = TcpStream::connect(server.probe_addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        held.push(s);
    }
    // The cap is reached: a fifth is not served while they are open...
    let mut fifth = TcpStream::connect(server.probe_addr).await.unwrap();
    fifth
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), fifth.read(&mut byte))
            .await
            .is_err(),
        "a connection over the probe port's cap was served"
    );
    // ...while the webhook port, with its own cap, serves on.
    review_answered(server.addr, &ca, "meanwhile", Duration::from_secs(5)).await;

    // Each held connection is cut off after the header timeout.
    for (i, s) in held.iter_mut().enumerate() {
        let got = closed_within(s, Duration::from_secs(5)).await;
        let got = got.unwrap_or_else(|| panic!("probe connection {i} still open after 5 s"));
        assert!(
            !String::from_utf8_lossy(&got).contains(" 200 "),
            "connection {i} was answered 200"
        );
    }
    // Then the waiting one is answered.
    let got = closed_within(&mut fifth, Duration::from_secs(5))
        .await
        .expect("the waiting probe was not answered");
    let all = got;
    assert!(
        String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&all)
    );
    let (status, metrics) = probe(server.probe_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metric(&metrics, r#"stash_open_connections{port="probe"}"#).is_some(),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn idle_connections_on_the_webhook_port_are_closed() {
    let pki = Pki::new();
    let mut config = pki.config();
    config.header_read_timeout = Duration::from_secs(1);
    config.idle_timeout = Duration::from_secs(1);
    let server = start(config).await;
    let ca = pki.ca_pem();
    // TLS done, then not a byte (ALPN h2: the server waits for the preface).
    let mut silent = tls(server.addr, client_config(&ca, &[b"h2"], None))
        .await
        .unwrap();
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "a silent TLS connection was kept beyond 5 s");
    // An HTTP/2 connection that went quiet after a request gets GOAWAY.
    let mut quiet = Conn::open(server.addr, client_config(&ca, &[b"h2"], None))
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
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if quiet
            .post("/mutate/workloads", deployment_review("q2").to_string())
            .await
            .is_err()
        {
            break;
        }
        // A request resets the idle clock; only the wait counts.
        assert!(
            Instant::now() < deadline,
            "an idle HTTP/2 connection was kept"
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    server.shutdown().await;
}

/// A CA, certificate and key written into `dir`; returns the CA PEM and the
/// `--tls-cert-file`/`--tls-key-file` arguments.
fn dev_pair(dir: &Path) -> (String, Vec<String>) {
    let bundle = stash::certs::generate(&stash::certs::dev_names(), Default::default()).unwrap();
    let (ca, cert, key) = (dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key"));
    stash::certs::write_bundle(&bundle, &ca, &cert, &key).unwrap();
    (
        bundle.ca_pem,
        vec![
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_port_flood_at_the_fd_limit_leaves_the_webhook_port_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, mut args) = dev_pair(dir.path());
    args.extend(
        [
            "--offline",
            examples().to_str().unwrap(),
            "--header-read-timeout",
            "3s",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = spawn(dir.path(), Some("ulimit -n 1024"), &args);
    let capped = server.wait_log(Duration::from_secs(5), |l| {
        l["message"] == "connection caps lowered to fit the open-files limit"
    });
    assert_eq!(capped["open_files_limit"], 1024);

    // Up to more connections than the server has file descriptors; the
    // flood stops at the first connection the kernel no longer completes
    // (the listen backlog is full: the server stopped accepting).
    let mut flood = Vec::new();
    for _ in 0..1500 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            TcpStream::connect(server.probe_addr),
        )
        .await
        {
            Ok(Ok(s)) => flood.push(s),
            _ => break,
        }
    }
    assert!(flood.len() >= 96, "only {} connections made", flood.len());
    // The webhook port still accepts and answers.
    review_answered(server.addr, &ca, "flooded", Duration::from_secs(5)).await;
    server.wait_log(Duration::from_secs(5), |l| {
        l["message"] == "connection cap reached; not accepting until a connection closes"
            && l["port"] == "probe"
    });
    drop(flood);
    // The probe port recovers by itself once the flood is gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = tokio::time::timeout(Duration::from_secs(1), probe(server.probe_addr, "/readyz"))
            .await
            .is_ok_and(|(status, _)| status == 200);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the probe port did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `stash ARGS` in `cwd` and waits (bounded) for it to exit: (success, stderr).
fn run_to_exit(cwd: &Path, args: &[&str], within: Duration) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stash"))
        .current_dir(cwd)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("stash {args:?} still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.success(), stderr)
}

/// The last line of stderr, which must be the only `error:` line.
fn one_error_line(stderr: &str) -> String {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "{stderr}");
    errors[0].to_string()
}

#[test]
fn explicit_certificate_paths_that_do_not_exist_are_an_error_not_a_new_ca() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x");
    let (cert, key) = (x.join("tls.crt"), x.join("tls.key"));
    let examples = examples();
    let serve = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--probe-listen",
            "127.0.0.1:0",
            "--offline",
            examples.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run_to_exit(dir.path(), &args, Duration::from_secs(20))
    };
    let (ok, stderr) = serve(&[
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
    ]);
    assert!(!ok);
    let line = one_error_line(&stderr);
    assert!(line.contains(cert.to_str().unwrap()), "{line}");
    assert!(line.contains("stash certs"), "{line}");
    assert!(!x.exists(), "the server created {}", x.display());
    assert!(!dir.path().join("certs").exists());

    // Only the default certificate path given explicitly with a custom key:
    // not the embedded default either.
    let (ok, stderr) = serve(&["--tls-key-file", key.to_str().unwrap()]);
    assert!(!ok);
    one_error_line(&stderr);
    assert!(!dir.path().join("certs").exists());

    // Half a pair: the missing half is named.
    let (_, pair) = dev_pair(dir.path());
    std::fs::remove_file(dir.path().join("tls.key")).unwrap();
    let (ok, stderr) = serve(&[&pair[0], &pair[1], &pair[2], &pair[3]]);
    assert!(!ok);
    let line = one_error_line(&stderr);
    assert!(line.contains("private key"), "{line}");
    assert!(line.contains(&pair[3]), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_certificate_flag_creates_a_pair_at_explicit_paths() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x");
    let (cert, key) = (x.join("tls.crt"), x.join("tls.key"));
    let server = spawn(
        dir.path(),
        None,
        &[
            "--offline",
            examples().to_str().unwrap(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--dev-certificate",
        ],
    );
    let ca = std::fs::read_to_string(x.join("ca.crt")).unwrap();
    review_answered(server.addr, &ca, "dev", Duration::from_secs(5)).await;
}

/// Writes `leaf`'s certificate with `key_pem` as the served pair of `pki`.
fn write_pair(pki: &Pki, cert_pem: &str, key_pem: &str) {
    stash::certs::write_atomic(&pki.key, key_pem.as_bytes(), true).unwrap();
    stash::certs::write_atomic(&pki.cert, cert_pem.as_bytes(), false).unwrap();
}

#[tokio::test]
async fn expired_not_yet_valid_and_mismatched_pairs_are_refused_at_start() {
    let pki = Pki::new();
    let names = stash::certs::dev_names();
    let expired = pki.ca.server_between(&names, -30, -1).unwrap();
    let future = pki.ca.server_between(&names, 2, 30).unwrap();
    let (a, b) = (pki.leaf(), pki.leaf());
    let cases = [
        (
            &expired.cert_pem,
            &expired.key_pem,
            "has expired: valid from",
        ),
        (
            &future.cert_pem,
            &future.key_pem,
            "is not valid yet: valid from",
        ),
        (&a.cert_pem, &b.key_pem, "does not match"),
    ];
    for (cert, key, says) in cases {
        write_pair(&pki, cert, key);
        let err = match stash::server::start(pki.config(), example_store()).await {
            Ok(running) => {
                running.shutdown().await;
                panic!("served a pair that {says}");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains(says), "{err}");
        let named = if says == "does not match" {
            &pki.key
        } else {
            &pki.cert
        };
        assert!(err.contains(named.to_str().unwrap()), "{err}");
    }
}

#[test]
fn an_expired_pair_stops_the_binary_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let ca = stash::certs::Authority::new("test CA").unwrap();
    let leaf = ca
        .server_between(&stash::certs::dev_names(), -30, -1)
        .unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let examples = examples();
    let (ok, stderr) = run_to_exit(
        dir.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--probe-listen",
            "127.0.0.1:0",
            "--offline",
            examples.to_str().unwrap(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    assert!(!ok);
    let line = one_error_line(&stderr);
    assert!(line.contains(cert.to_str().unwrap()), "{line}");
    assert!(line.contains("has expired: valid from"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_refuse_bad_windows_warn_on_missing_files_and_before_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let ca = stash::certs::Authority::new("test CA").unwrap();
    let names = stash::certs::dev_names();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let write = |leaf: &stash::certs::Leaf| {
        stash::certs::write_atomic(&key, leaf.key_pem.as_bytes(), true).unwrap();
        stash::certs::write_atomic(&cert, leaf.cert_pem.as_bytes(), false).unwrap();
    };
    let first = ca.server(&names).unwrap();
    write(&first);
    let examples = examples();
    let server = spawn(
        dir.path(),
        None,
        &[
            "--offline",
            examples.to_str().unwrap(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--cert-poll-interval",
            "200ms",
        ],
    );
    let ca_pem = ca.cert_pem().to_string();
    let serial = serial_of_pem(&first.cert_pem);
    assert_eq!(served_serial(server.addr, &ca_pem).await, serial);
    let (_, metrics) = probe(server.probe_addr, "/metrics").await;
    assert!(
        metrics.contains(r#"stash_certificate_not_after_seconds{expiring="false"} "#),
        "{metrics}"
    );

    // An expired pair: an ERROR naming the file and its window, counted,
    // and the old pair kept.
    write(&ca.server_between(&names, -30, -1).unwrap());
    let line = server.wait_log(Duration::from_secs(10), |l| {
        l["level"] == "ERROR" && l["not_after"].is_string()
    });
    assert_eq!(line["file"], cert.to_str().unwrap(), "{line}");
    assert!(line["not_before"].is_string(), "{line}");
    assert!(
        line["error"].as_str().unwrap().contains("has expired"),
        "{line}"
    );
    let (_, metrics) = probe(server.probe_addr, "/metrics").await;
    assert!(
        metric(
            &metrics,
            r#"stash_certificate_reloads_total{result="failure"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert_eq!(served_serial(server.addr, &ca_pem).await, serial);

    // The files disappear: a warning, still serving.
    std::fs::remove_file(&cert).unwrap();
    std::fs::remove_file(&key).unwrap();
    let line = server.wait_log(Duration::from_secs(10), |l| {
        l["level"] == "WARN"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("disappeared"))
    });
    assert!(
        line["file"]
            .as_str()
            .is_some_and(|f| f == cert.to_str().unwrap() || f == key.to_str().unwrap()),
        "{line}"
    );
    assert_eq!(served_serial(server.addr, &ca_pem).await, serial);

    // A pair that expires in 10 days is served, with a warning and the
    // metric saying so.
    let soon = ca.server_between(&names, -1, 10).unwrap();
    write(&soon);
    let line = server.wait_log(Duration::from_secs(10), |l| {
        l["level"] == "WARN" && l["days_left"].is_u64()
    });
    assert!(line["not_after"].is_string(), "{line}");
    assert_eq!(
        served_serial(server.addr, &ca_pem).await,
        serial_of_pem(&soon.cert_pem)
    );
    let (_, metrics) = probe(server.probe_addr, "/metrics").await;
    assert!(
        metrics.contains(r#"stash_certificate_not_after_seconds{expiring="true"} "#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"expiring="false""#),
        "two not-after series: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_in_a_request_cannot_forge_a_text_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, pair) = dev_pair(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_stash"))
        .current_dir(dir.path())
        .args(["--log-format", "text", "serve", "--listen", "127.0.0.1:0"])
        .args(["--probe-listen", "127.0.0.1:0", "--offline"])
        .arg(examples())
        .args(&pair)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("serving webhooks") {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
                let _ = tx.send(addr);
            }
            sink.lock().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("server did not start: {:?}", lines.lock().unwrap()));

    let mut review = deployment_review("u1\nFORGED uid=admin decision=allowed");
    review["request"]["name"] = "n\r\nFORGED2 \u{1b}[2J".into();
    review["request"]["object"]["metadata"]["name"] = "n\r\nFORGED2 \u{1b}[2J".into();
    review["request"]["namespace"] = "demo\u{2028}FORGED3".into();
    let mut conn = Conn::open(addr, client_config(&ca, &[b"h2"], None))
        .await
        .unwrap();
    let reply = conn
        .post("/mutate/workloads", review.to_string())
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    let admission = loop {
        let found = lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(" admission "))
            .cloned();
        if let Some(l) = found {
            break l;
        }
        assert!(Instant::now() < deadline, "no admission line");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let all = lines.lock().unwrap().clone();
    for l in &all {
        assert!(
            !l.trim_start().starts_with("FORGED"),
            "a forged line: {l:?} in {all:?}"
        );
        assert!(!l.contains('\u{1b}') && !l.contains('\u{2028}'), "{l:?}");
    }
    assert!(
        admission.contains(r"u1\nFORGED uid=admin decision=allowed"),
        "{admission}"
    );
    assert!(admission.contains(r"n\r\nFORGED2 \u{1b}[2J"), "{admission}");
    assert!(admission.contains(r"demo\u{2028}FORGED3"), "{admission}");
}
