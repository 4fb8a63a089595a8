//! run-backup's metrics port: the admin server (`stash::runtime::admin`)
//! answers `/metrics` in OpenMetrics text, 404 elsewhere, and closes an idle
//! connection instead of holding it for ever.

use std::time::Duration;

use stash::backup::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start() -> std::net::SocketAddr {
    // A free port: bound, read, released, then bound again by the server.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    tokio::spawn(Metrics::new().serve(addr));
    // Up to 10 s: on a loaded 2-core machine the spawned server may take a
    // while to be polled.
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_ok() {
            return addr;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the metrics port {addr} never opened")
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("an answer")
        .unwrap();
    out
}

#[tokio::test]
async fn metrics_are_openmetrics_text_and_other_paths_are_404() {
    let addr = start().await;
    let metrics = get(addr, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{metrics}"
    );
    assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");
    let other = get(addr, "/").await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let addr = start().await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    // The header read timeout (10 s) closes it; never a connection held open.
    let read = tokio::time::timeout(Duration::from_secs(15), idle.read(&mut buf))
        .await
        .expect("the server closes a silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
