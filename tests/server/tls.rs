//! The webhook port over real sockets: HTTP/1.1 and HTTP/2 over rustls,
//! curl, mutual TLS, certificate chains, and what must be refused (plain
//! HTTP, TLS 1.1).

use stash_testkit::tls as common;

use std::time::Duration;

use common::*;
use http::{StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn http1_and_http2_clients_get_the_review_answered() {
    let pki = Pki::new();
    let server = start(pki.config()).await;
    for (alpn, version) in [
        (&[&b"h2"[..], b"http/1.1"][..], Version::HTTP_2),
        (&[&b"http/1.1"[..]][..], Version::HTTP_11),
    ] {
        let mut conn = Conn::open(server.addr, client_config(&pki.ca_pem(), alpn, None))
            .await
            .unwrap();
        // Several requests on one kept-alive connection.
        for i in 0..3 {
            let uid = format!("uid-{version:?}-{i}");
            let reply = conn
                .post(
                    "/mutate/workloads?timeout=10s",
                    deployment_review(&uid).to_string(),
                )
                .await
                .unwrap();
            assert_eq!(reply.version, version);
            assert_review_answer(&reply, &uid, Expected::GUIDE_DEPLOYMENT);
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn tls12_clients_are_served() {
    let pki = Pki::new();
    let server = start(pki.config()).await;
    let config = client_config_versions(
        &pki.ca_pem(),
        &[b"http/1.1"],
        None,
        &[&rustls::version::TLS12],
    );
    let mut conn = Conn::open(server.addr, config).await.unwrap();
    assert_review_answer(
        &conn
            .post("/mutate/workloads", deployment_review("tls12").to_string())
            .await
            .unwrap(),
        "tls12",
        Expected::GUIDE_DEPLOYMENT,
    );
    server.shutdown().await;
}

#[tokio::test]
async fn disabling_http2_leaves_only_http11_in_alpn() {
    let pki = Pki::new();
    let mut config = pki.config();
    config.tls.http2 = false;
    let server = start(config).await;
    let mut conn = Conn::open(
        server.addr,
        client_config(&pki.ca_pem(), &[b"h2", b"http/1.1"], None),
    )
    .await
    .unwrap();
    let reply = conn
        .post("/mutate/workloads", deployment_review("h1").to_string())
        .await
        .unwrap();
    assert_eq!(reply.version, Version::HTTP_11);
    assert_review_answer(&reply, "h1", Expected::GUIDE_DEPLOYMENT);
    // A client that speaks only h2 finds no common protocol.
    assert!(
        tls(server.addr, client_config(&pki.ca_pem(), &[b"h2"], None))
            .await
            .is_err()
    );
    server.shutdown().await;
}

async fn curl(args: &[&str]) -> (String, String) {
    let out = tokio::process::Command::new("curl")
        .args(args)
        .output()
        .await
        .expect("curl must be installed for this test");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn curl_posts_a_review_over_http11_and_http2() {
    let pki = Pki::new();
    let server = start(pki.config()).await;
    let ca = pki.dir.path().join("ca.crt");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let body = pki.dir.path().join("review.json");
    std::fs::write(&body, deployment_review("curl-uid").to_string()).unwrap();
    let url = format!("https://127.0.0.1:{}/mutate/workloads", server.addr.port());
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (stdout, stderr) = curl(&[
            "-sS",
            flag,
            "--cacert",
            ca.to_str().unwrap(),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", body.display()),
            "-w",
            "\n%{http_code} %{http_version}",
            &url,
        ])
        .await;
        let (json, status) = stdout
            .rsplit_once('\n')
            .unwrap_or_else(|| panic!("{stdout} {stderr}"));
        assert_eq!(status, format!("200 {version}"), "{stderr}");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["response"]["uid"], "curl-uid");
    }
    // Without the CA, curl refuses the certificate: nothing is trusted by accident.
    let (stdout, _) = curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]).await;
    assert_eq!(stdout, "000");
    server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_accepts_a_good_client_and_refuses_others() {
    let pki = Pki::new();
    let client_ca = stash::certs::Authority::new("API server client CA").unwrap();
    let ca_file = pki.dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, client_ca.cert_pem()).unwrap();
    let mut config = pki.config();
    config.tls.client_ca = Some(ca_file);
    let server = start(config).await;

    let good = client_ca.client("kube-apiserver").unwrap();
    let mut conn = Conn::open(
        server.addr,
        client_config(&pki.ca_pem(), &[b"h2"], Some(&good)),
    )
    .await
    .unwrap();
    assert_review_answer(
        &conn
            .post("/mutate/workloads", deployment_review("mtls").to_string())
            .await
            .unwrap(),
        "mtls",
        Expected::GUIDE_DEPLOYMENT,
    );

    let stranger = stash::certs::Authority::new("someone else")
        .unwrap()
        .client("kube-apiserver")
        .unwrap();
    for client in [None, Some(&stranger)] {
        // TLS 1.3 lets the client finish first; the refusal shows on first use.
        let refused = match Conn::open(
            server.addr,
            client_config(&pki.ca_pem(), &[b"http/1.1"], client),
        )
        .await
        {
            Err(_) => true,
            Ok(mut c) => c
                .post("/mutate/workloads", deployment_review("x").to_string())
                .await
                .is_err(),
        };
        assert!(
            refused,
            "client with {:?} was served",
            client.map(|_| "a foreign certificate")
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn certificate_chains_are_served_whole() {
    let pki = Pki::new();
    let intermediate = pki.ca.intermediate("stash intermediate").unwrap();
    pki.write(&intermediate.server(&stash::certs::dev_names()).unwrap());
    let server = start(pki.config()).await;
    // The client trusts only the root: the server must send the intermediate.
    let stream = tls(
        server.addr,
        client_config(&pki.ca_pem(), &[b"http/1.1"], None),
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.peer_certificates().unwrap().len(), 2);
    let mut conn = Conn::open(server.addr, client_config(&pki.ca_pem(), &[b"h2"], None))
        .await
        .unwrap();
    assert_review_answer(
        &conn
            .post("/mutate/workloads", deployment_review("chain").to_string())
            .await
            .unwrap(),
        "chain",
        Expected::GUIDE_DEPLOYMENT,
    );
    server.shutdown().await;
}

async fn read_reply(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    out
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_refused() {
    let pki = Pki::new();
    let server = start(pki.config()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"POST /mutate/workloads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let reply = read_reply(&mut s).await;
    assert!(
        !reply.starts_with(b"HTTP/"),
        "plain HTTP was answered: {:?}",
        String::from_utf8_lossy(&reply)
    );
    // The server is unharmed.
    let mut conn = Conn::open(server.addr, client_config(&pki.ca_pem(), &[b"h2"], None))
        .await
        .unwrap();
    assert_review_answer(
        &conn
            .post("/mutate/workloads", deployment_review("after").to_string())
            .await
            .unwrap(),
        "after",
        Expected::GUIDE_DEPLOYMENT,
    );
    server.shutdown().await;
}

/// A ClientHello without supported_versions, byte by byte: `minor` 2 is
/// TLS 1.1, 3 is TLS 1.2. Everything else (AEAD suites the server has, groups,
/// signature schemes) is acceptable, so only the version can be the problem.
fn client_hello(minor: u8) -> Vec<u8> {
    let mut body = vec![0x03, minor]; // client_version
    body.extend([0x42; 32]); // random
    body.push(0); // session id
    let suites: [u16; 4] = [0xc02b, 0xc02f, 0xcca9, 0xcca8];
    body.extend(((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]); // compression: null
    let mut ext = Vec::new();
    ext.extend([0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17]); // supported_groups: secp256r1
    ext.extend([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]); // ec_point_formats
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    ext.extend([
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01,
    ]);
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![0x01];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((hs.len() as u16).to_be_bytes());
    record.extend(hs);
    record
}

#[tokio::test]
async fn tls11_is_refused() {
    let pki = Pki::new();
    let server = start(pki.config()).await;
    // The same hello as TLS 1.2 gets a ServerHello: the probe is sound.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&client_hello(3)).await.unwrap();
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(
        first[0], 0x16,
        "TLS 1.2 hello was not answered with a handshake"
    );

    let held = s;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&client_hello(2)).await.unwrap();
    let reply = read_reply(&mut s).await;
    // No ServerHello (a handshake record, 0x16); at most an alert (0x15)
    // saying protocol_version (70).
    assert_ne!(
        reply.first(),
        Some(&0x16),
        "the server answered a TLS 1.1 hello with a handshake"
    );
    if !reply.is_empty() {
        assert_eq!(reply[0], 0x15, "{reply:?}");
        assert_eq!(
            reply.get(6),
            Some(&70),
            "alert is not protocol_version: {reply:?}"
        );
    }
    assert_eq!(
        {
            let mut conn = Conn::open(
                server.addr,
                client_config(&pki.ca_pem(), &[b"http/1.1"], None),
            )
            .await
            .unwrap();
            conn.post("/mutate/workloads", deployment_review("ok").to_string())
                .await
                .unwrap()
                .status
        },
        StatusCode::OK
    );
    // A client stuck mid-handshake (`held`) does not hold up shutdown.
    let t = std::time::Instant::now();
    server.shutdown().await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "shutdown waited {:?}",
        t.elapsed()
    );
    drop(held);
}

#[tokio::test]
async fn the_documented_fixtures_are_answered() {
    // README ("Ask the server") and docs/serve.md post these with curl:
    // each gets the answer they show.
    let pki = Pki::new();
    let server = start(pki.config()).await;
    let mut conn = Conn::open(server.addr, client_config(&pki.ca_pem(), &[b"h2"], None))
        .await
        .unwrap();
    let session_labels = Expected::Patched {
        ops: GUIDE_SESSION_PATCH,
    };
    for (file, answers) in [
        (
            "deployment-create.json",
            &[("/mutate/workloads", Expected::GUIDE_DEPLOYMENT)][..],
        ),
        (
            "backupsession-create.json",
            &[
                ("/mutate/backupsessions", session_labels),
                ("/validate/backupsessions", Expected::ALLOWED),
            ][..],
        ),
    ] {
        let (body, uid) = served_fixture(file);
        for (path, expected) in answers {
            assert_review_answer(
                &conn.post(path, body.clone()).await.unwrap(),
                &uid,
                *expected,
            );
        }
    }
    server.shutdown().await;
}

/// A fixture of `tests/fixtures/serve` and its review's uid.
fn served_fixture(file: &str) -> (String, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/serve");
    let body = std::fs::read_to_string(dir.join(file)).unwrap();
    let uid = serde_json::from_str::<serde_json::Value>(&body).unwrap()["request"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    (body, uid)
}

/// README's second server, whose store is the guide's configuration paused
/// (`serve --offline tests/fixtures/store/paused`): the instant session is
/// allowed with the warning, and denied 403 under
/// `--paused-session-policy reject`.
#[tokio::test]
async fn a_paused_configurations_session_is_answered_as_the_readme_shows() {
    let (body, uid) = served_fixture("backupsession-create.json");
    let pki = Pki::new();
    for (policy, expected) in [
        (
            stash::settings::PausedSessionPolicy::Skip,
            Expected::Allowed {
                warnings: &[
                    "Backup Configuration demo/pause-backup is paused; this BackupSession will be Skipped",
                ],
            },
        ),
        (
            stash::settings::PausedSessionPolicy::Reject,
            Expected::Denied {
                code: 403,
                message: "Backup Configuration demo/pause-backup is paused",
            },
        ),
    ] {
        let mut config = pki.config();
        config.settings.paused_session_policy = policy;
        let server = stash::server::start(config, store_of("tests/fixtures/store/paused"))
            .await
            .unwrap();
        let mut conn = Conn::open(server.addr, client_config(&pki.ca_pem(), &[b"h2"], None))
            .await
            .unwrap();
        let reply = conn
            .post("/validate/backupsessions", body.clone())
            .await
            .unwrap();
        assert_review_answer(&reply, &uid, expected);
        server.shutdown().await;
    }
}
