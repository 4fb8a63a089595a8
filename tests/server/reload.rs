//! Certificate rotation without a restart: in-place file replacement and a
//! Kubernetes Secret volume's `..data` symlink swap, under continuous
//! requests, with zero failed requests; a broken pair is refused and the old
//! one kept.

use stash_testkit::tls as common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// Waits until fresh handshakes get `serial` (at most 15 s).
async fn wait_for_serial(addr: std::net::SocketAddr, ca: &str, serial: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if served_serial(addr, ca).await == serial {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate {serial} was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Load that runs until stopped: some clients keep one connection (HTTP/1.1
/// and HTTP/2), others open a new connection per request. Returns (ok, failed).
fn load(
    addr: std::net::SocketAddr,
    ca: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, usize)> {
    tokio::spawn(async move {
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        const H2: &[&[u8]] = &[b"h2"];
        const H1: &[&[u8]] = &[b"http/1.1"];
        for (i, alpn) in [H2, H1, H2, H1].into_iter().enumerate() {
            let (ca, stop, ok, failed) = (ca.clone(), stop.clone(), ok.clone(), failed.clone());
            let reconnect = i >= 2;
            tasks.push(tokio::spawn(async move {
                let config = client_config(&ca, alpn, None);
                let mut conn = None;
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    if conn.is_none() || reconnect {
                        conn = Conn::open(addr, config.clone()).await.ok();
                    }
                    let uid = format!("load-{i}-{n}");
                    let good = match conn.as_mut() {
                        Some(c) => matches!(
                            c.post("/mutate/workloads", deployment_review(&uid).to_string()).await,
                            Ok(r) if r.status == 200 && r.json()["response"]["uid"] == uid
                        ),
                        None => false,
                    };
                    if good {
                        ok.fetch_add(1, Ordering::Relaxed)
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed)
                    };
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_in_place_under_load_loses_no_request() {
    let pki = Pki::new();
    let server = start(pki.config()).await;
    let ca = pki.ca_pem();
    let first = served_serial(server.addr, &ca).await;
    assert_eq!(first, server.tls.served().serial);

    // A connection opened before the rotation keeps working after it.
    let mut old_conn = Conn::open(server.addr, client_config(&ca, &[b"h2"], None))
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(server.addr, ca.clone(), stop.clone());
    let mut serial = first.clone();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let leaf = pki.leaf();
        let next = serial_of_pem(&leaf.cert_pem);
        pki.write(&leaf);
        wait_for_serial(server.addr, &ca, &next).await;
        assert_ne!(next, serial);
        serial = next;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = loader.await.unwrap();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during rotation",
        ok + failed
    );
    assert!(ok > 20, "too little load to mean anything: {ok}");

    assert_review_answer(
        &old_conn
            .post("/mutate/workloads", deployment_review("old").to_string())
            .await
            .unwrap(),
        "old",
        Expected::GUIDE_DEPLOYMENT,
    );
    assert_eq!(server.tls.served().serial, serial);
    let (_, metrics) = probe(server.probe_addr, "/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"stash_certificate_reloads_total{result="success"}"#
        ),
        Some(3.0),
        "{metrics}"
    );
    server.shutdown().await;
}

/// Lays out a directory like the kubelet's Secret volume:
/// `tls.crt -> ..data/tls.crt`, `..data -> ..<version>`.
fn secret_volume_version(dir: &Path, version: &str, leaf: &stash::certs::Leaf) {
    let versioned = dir.join(version);
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(versioned.join("tls.key"), &leaf.key_pem).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_volume_symlink_swap_is_picked_up() {
    let pki = Pki::new();
    let volume = pki.dir.path().join("secret");
    std::fs::create_dir(&volume).unwrap();
    secret_volume_version(&volume, "..2026_11_28_05_00_00.1", &pki.leaf());
    for f in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), volume.join(f)).unwrap();
    }
    let mut config = pki.config();
    config.tls.cert = volume.join("tls.crt");
    config.tls.key = volume.join("tls.key");
    // Long poll: the swap must be seen through the directory watch.
    config.cert_poll_interval = Duration::from_secs(3600);
    let server = start(config).await;
    let ca = pki.ca_pem();

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(server.addr, ca.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leaf = pki.leaf();
    let next = serial_of_pem(&leaf.cert_pem);
    secret_volume_version(&volume, "..2026_11_28_06_00_00.2", &leaf);
    std::fs::remove_dir_all(volume.join("..2026_11_28_05_00_00.1")).unwrap();
    wait_for_serial(server.addr, &ca, &next).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = loader.await.unwrap();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the swap",
        ok + failed
    );
    server.shutdown().await;
}

#[tokio::test]
async fn polling_alone_finds_a_change() {
    // The poll is the fallback when file events are lost (some volume types).
    let pki = Pki::new();
    let mut config = pki.config();
    config.cert_file_events = false;
    let server = start(config).await;
    let leaf = pki.leaf();
    let next = serial_of_pem(&leaf.cert_pem);
    // No file events: only the 200 ms poll can find it.
    pki.write(&leaf);
    wait_for_serial(server.addr, &pki.ca_pem(), &next).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_broken_pair_is_refused_and_the_old_one_kept() {
    let pki = Pki::new();
    let server = start(pki.config()).await;
    let ca = pki.ca_pem();
    let first = served_serial(server.addr, &ca).await;

    // A certificate with somebody else's key.
    let a = pki.leaf();
    let b = pki.leaf();
    stash::certs::write_atomic(&pki.cert, a.cert_pem.as_bytes(), false).unwrap();
    stash::certs::write_atomic(&pki.key, b.key_pem.as_bytes(), true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, metrics) = probe(server.probe_addr, "/metrics").await;
        if metric(
            &metrics,
            r#"stash_certificate_reloads_total{result="failure"}"#,
        )
        .is_some_and(|n| n >= 1.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broken pair was never looked at"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served_serial(server.addr, &ca).await, first);
    let mut conn = Conn::open(server.addr, client_config(&ca, &[b"h2"], None))
        .await
        .unwrap();
    assert_review_answer(
        &conn
            .post("/mutate/workloads", deployment_review("kept").to_string())
            .await
            .unwrap(),
        "kept",
        Expected::GUIDE_DEPLOYMENT,
    );

    // Garbage is refused the same way; then a good pair goes into service.
    std::fs::write(&pki.cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served_serial(server.addr, &ca).await, first);
    pki.write(&a);
    stash::certs::write_atomic(&pki.key, a.key_pem.as_bytes(), true).unwrap();
    wait_for_serial(server.addr, &ca, &serial_of_pem(&a.cert_pem)).await;
    let (status, _) = probe(server.probe_addr, "/readyz").await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn unchanged_files_are_not_re_read() {
    // Reading the files is itself a file event; the watcher must not take
    // its own reads (or anyone's) for changes and spin.
    let pki = Pki::new();
    let mut config = pki.config();
    config.cert_poll_interval = Duration::from_secs(3600);
    let server = start(config).await;
    for _ in 0..5 {
        let _ = std::fs::read(&pki.cert).unwrap();
        let _ = std::fs::read(&pki.key).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first poll tick fires at once; nothing after it.
    assert!(
        server.tls.checks() <= 1,
        "files re-read {} times",
        server.tls.checks()
    );
    server.shutdown().await;
}
