//! End to end: a real Prometheus (the `prometheus` binary, on 127.0.0.1, in
//! a temp dir) scrapes the probe port's `/metrics` of a process running
//! `stash serve`'s feed and BackupConfiguration and BackupSession
//! controllers on the fake cluster, with the alerting rules of
//! `stash manifests --prometheus-rules` at a 5 s pause threshold, and
//! `StashBackupPausedTooLong` fires for the paused configuration. Bounded
//! (60 s); Prometheus is killed when the test ends, whatever way it ends.

use stash_testkit as support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::Value;
use stash::monitoring::rules::{RuleOptions, rules_file};
use stash::runtime::drain::channel;
use stash::server::metrics::Metrics;
use stash::server::probes::{Health, router};
use support::{Cluster, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::{bc, deployment, repository, secret};
use super::feed::start_feed;

/// How long the alert may take to fire: Prometheus' start, the 5 s
/// threshold, a few 1 s scrape and evaluation rounds.
const FIRING_WITHIN: Duration = Duration::from_secs(60);

/// The prometheus binary, or a failure saying how to get it.
fn prometheus_binary() -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("prometheus"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "prometheus is not on PATH: this test runs the alerting rules in a real \
                 Prometheus. Install it with `apt-get install -y prometheus` (scripts/test does)"
            )
        })
}

/// A port free now on 127.0.0.1 (Prometheus binds it itself).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `GET path` over HTTP/1.0: the status line's code and the body.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn paused_bc() -> Value {
    let mut b = bc();
    b["spec"]["paused"] = Value::Bool(true);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_stash_backup_paused_too_long() {
    let prometheus = prometheus_binary();
    let c = Cluster::new();
    c.seed(paused_bc());
    c.seed(deployment());
    c.seed(repository());
    c.seed(secret());
    let (feed, _feed_signal) = start_feed(&c).await;

    // The serve process's metrics and probe port.
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health {
        store: feed.store.clone(),
        metrics: metrics.clone(),
        shutting_down: AtomicBool::new(false),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the probe port");
    let probe = listener.local_addr().expect("addr");
    let (_probe_signal, probe_drain) = channel();
    tokio::spawn(stash::runtime::admin::serve(
        "probe",
        listener,
        router(health),
        stash::runtime::admin::DEFAULT_LIMITS,
        metrics.open_connections("probe"),
        probe_drain,
    ));

    // The leader's controllers, exporting into `metrics`.
    let configs = tokio::spawn(stash::reconcile::backup_configuration::run(
        c.client(Identity::reconciler()),
        c.settings().image.clone(),
        c.settings(),
        feed.clone(),
    ));
    let mut ctx = stash::reconcile::backup_session::Context::new(c.client(Identity::reconciler()));
    ctx.metrics = Some((metrics.backups.leading.clone(), feed.store.clone()));
    let sessions = tokio::spawn(stash::reconcile::backup_session::run(
        Arc::new(ctx),
        feed.configs.clone(),
    ));
    c.wait_until("the Paused condition is written", |c| {
        c.get("/apis/stash.appscode.com/v1beta1/namespaces/demo/backupconfigurations/pause-backup")
            .and_then(|b| b["status"]["conditions"].as_array().cloned())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Paused" && c["status"] == "True")
            })
    })
    .await;

    // Prometheus, scraping and evaluating every second.
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = RuleOptions {
        paused_alert_after: Duration::from_secs(5),
        ..RuleOptions::default()
    };
    write(
        &dir.path().join("rules.yaml"),
        &rules_file(&rules).expect("rules"),
    );
    write(
        &dir.path().join("prometheus.yml"),
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - rules.yaml\n\
             scrape_configs:\n  - job_name: stash\n    static_configs:\n      - targets: ['{probe}']\n"
        ),
    );
    let port = free_port();
    let web: SocketAddr = ([127, 0, 0, 1], port).into();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
    let mut child = tokio::process::Command::new(prometheus)
        .current_dir(dir.path())
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Killed when the test ends, passing or failing.
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");

    let fired = tokio::time::timeout(FIRING_WITHIN, async {
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("prometheus exited: {status}"));
            }
            if let Some((200, body)) = get(web, "/api/v1/alerts").await {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                let firing = v["data"]["alerts"].as_array().and_then(|alerts| {
                    alerts
                        .iter()
                        .find(|a| {
                            a["labels"]["alertname"] == "StashBackupPausedTooLong"
                                && a["state"] == "firing"
                        })
                        .cloned()
                });
                if let Some(alert) = firing {
                    return Ok(alert);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let alert = match fired {
        Ok(Ok(alert)) => alert,
        outcome => {
            let scraped = get(probe, "/metrics")
                .await
                .map(|(_, b)| b)
                .unwrap_or_default();
            let alerts = get(web, "/api/v1/alerts")
                .await
                .map(|(_, b)| b)
                .unwrap_or_default();
            let log =
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
            panic!(
                "StashBackupPausedTooLong did not fire within {FIRING_WITHIN:?} ({outcome:?})\n\
                 alerts: {alerts}\n/metrics:\n{scraped}\nprometheus log:\n{log}"
            );
        }
    };
    assert_eq!(alert["labels"]["namespace"], "demo");
    assert_eq!(alert["labels"]["backupconfiguration"], "pause-backup");
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "docs/operate.md#stashbackuppausedtoolong"
    );
    eprintln!("firing: {alert}");

    // Only the paused configuration's alert: nothing failed, nothing is missing yet.
    let (_, body) = get(web, "/api/v1/alerts").await.expect("alerts");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let names: Vec<&str> = v["data"]["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|a| a["labels"]["alertname"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, ["StashBackupPausedTooLong"], "{body}");

    child.kill().await.expect("stop prometheus");
    configs.abort();
    sessions.abort();
}
