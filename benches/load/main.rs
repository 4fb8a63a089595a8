//! End-to-end load benchmark of `stash serve` against a floor server.
//!
//! `cargo bench --bench load` (release build). Over TLS on loopback, a
//! Deployment CREATE review at 1, 16 and 64 concurrent requests, HTTP/1.1
//! keep-alive (one connection per client) and HTTP/2 (one connection, many
//! streams, as the API server does), against (a) the built `stash serve
//! --offline manifests/examples` and (b) the floor in `floor.rs`. Each
//! server is its own process. Then resident memory with 10,000
//! BackupConfigurations in the store, and the cost of a lookup and a whole
//! decision at 10 vs 10,000 configurations.
//!
//! `STASH_BENCH_SECONDS` (default 5) sets the length of each run;
//! `STASH_BENCH_BIN=target/dist/stash` measures the image's build instead.

mod floor;

use stash_testkit::big;
use stash_testkit::tls as common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::{Conn, client_config, deployment_review, request};
use http::Method;

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    H1,
    H2,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::H1 => "HTTP/1.1",
            Proto::H2 => "HTTP/2",
        }
    }
}

struct Stats {
    ok: usize,
    errors: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_line(log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(log)
            && let Some(line) = text.lines().find(|l| l.contains(needle))
        {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `stash serve` with default (info, JSON) logging to a file, as a kubelet
/// would collect it.
fn spawn_stash(dir: &Path, offline: &Path, cert: &Path, key: &Path, name: &str) -> Proc {
    // Logs beside, not inside, the certificate directory.
    let log = dir.join("logs").join(format!("{name}.log"));
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    // STASH_BENCH_BIN measures another build of the same binary (the
    // image's, `cargo build --profile dist`), else this bench's own.
    let bin =
        std::env::var("STASH_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stash").into());
    let child = Command::new(bin)
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--probe-listen",
            "127.0.0.1:0",
            "--offline",
        ])
        .arg(offline)
        .arg("--tls-cert-file")
        .arg(cert)
        .arg("--tls-key-file")
        .arg(key)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let line = wait_for_line(&log, "serving webhooks");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    Proc {
        child,
        addr: v["addr"].as_str().unwrap().parse().unwrap(),
    }
}

fn spawn_floor(dir: &Path, cert: &Path, key: &Path) -> Proc {
    let out = dir.join("floor.out");
    let child = Command::new(std::env::current_exe().unwrap())
        .env("STASH_BENCH_ROLE", "floor")
        .arg(cert)
        .arg(key)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = wait_for_line(&out, "listening ");
    Proc {
        child,
        addr: line
            .trim_start_matches("listening ")
            .trim()
            .parse()
            .unwrap(),
    }
}

/// Runs `concurrency` clients for `length`; returns the stats.
async fn load(
    addr: SocketAddr,
    ca: &str,
    proto: Proto,
    concurrency: usize,
    length: Duration,
) -> Stats {
    let alpn: &[&[u8]] = match proto {
        Proto::H1 => &[b"http/1.1"],
        Proto::H2 => &[b"h2"],
    };
    let config = client_config(ca, alpn, None);
    let body = Bytes::from(deployment_review("705ab4f5-6393-11e8-b7cc-42010a800002").to_string());
    let shared = match proto {
        Proto::H2 => Some(Conn::open(addr, config.clone()).await.unwrap()),
        Proto::H1 => None,
    };
    let mut conns = Vec::new();
    for _ in 0..concurrency {
        conns.push(match &shared {
            Some(c) => c.share().unwrap(),
            None => Conn::open(addr, config.clone()).await.unwrap(),
        });
    }
    let start = Instant::now();
    let deadline = start + length;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let body = body.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 16);
                let mut errors = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let req = request(
                        Method::POST,
                        "/mutate/workloads?timeout=10s",
                        Some("application/json"),
                        body.clone(),
                    );
                    match conn.send(req).await {
                        Ok(r) if r.status == 200 => lat.push(t.elapsed().as_micros() as u32),
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            f64::NAN
        } else {
            all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0
        }
    };
    Stats {
        ok: all.len(),
        errors,
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

/// CPU time (user + system) a process has used, in microseconds.
fn cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    fields.iter().sum::<u64>() * 10_000
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// Resets a process's peak RSS (VmHWM) to its current RSS.
fn reset_hwm(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Sends `bodies` at once on one HTTP/2 connection (as the API server
/// does): the statuses, and how long until the last answer.
async fn burst(addr: SocketAddr, ca: &str, bodies: Vec<Bytes>) -> (Vec<u16>, Duration) {
    let conn = Conn::open(addr, client_config(ca, &[b"h2"], None))
        .await
        .unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let mut conn = conn.share().unwrap();
            tokio::spawn(async move {
                let req = request(
                    Method::POST,
                    "/mutate/workloads?timeout=30s",
                    Some("application/json"),
                    body,
                );
                conn.send(req).await.map_or(0, |r| r.status.as_u16())
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    (codes, start.elapsed())
}

/// Peak and idle resident memory of `stash serve` around large reviews.
fn memory(rt: &tokio::runtime::Runtime, dir: &Path, ca: &str, cert: &Path, key: &Path) {
    let deployment = common::example_deployment();
    let update = Bytes::from(big::large_update(&deployment));
    let junk = Bytes::from(big::junk_create(&deployment, 7 * 1024 * 1024 - 1024));
    let small = Bytes::from(deployment_review("small").to_string());
    let stash = spawn_stash(dir, &common::examples(), cert, key, "stash-memory");
    let pid = stash.child.id();
    // Warm: connections, the runtime's threads, the first decision.
    rt.block_on(burst(stash.addr, ca, vec![small.clone(); 16]));
    std::thread::sleep(Duration::from_millis(500));
    let idle = vm_rss_kib(pid);

    reset_hwm(pid);
    let before = vm_rss_kib(pid);
    let (codes, took) = rt.block_on(burst(stash.addr, ca, vec![update.clone()]));
    assert_eq!(codes, [200], "the 3 MB UPDATE was not answered 200");
    let update_peak = vm_hwm_kib(pid);

    std::thread::sleep(Duration::from_millis(500));
    reset_hwm(pid);
    let before_burst = vm_rss_kib(pid);
    let (codes, burst_took) = rt.block_on(burst(stash.addr, ca, vec![junk.clone(); 16]));
    let burst_peak = vm_hwm_kib(pid);
    std::thread::sleep(Duration::from_secs(2));
    let after = vm_rss_kib(pid);
    let ok = codes.iter().filter(|c| **c == 200).count();
    let busy = codes.iter().filter(|c| **c == 429).count();
    drop(stash);

    println!("\n## Memory (VmRSS / VmHWM of `stash serve --offline manifests/examples`)\n");
    println!("| case | body | RSS before | peak RSS | rise | rise / body | answered | time |");
    println!("|---|---:|---:|---:|---:|---:|---|---:|");
    println!(
        "| idle, after 16 small reviews | | {:.1} MiB | | | | | |",
        mib(idle)
    );
    let rise = update_peak.saturating_sub(before);
    println!(
        "| one Deployment UPDATE (object + oldObject each < 1.5 MiB) | {:.2} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2} | 1/1 × 200 | {:.0} ms |",
        update.len() as f64 / 1048576.0,
        mib(before),
        mib(update_peak),
        mib(rise),
        rise as f64 * 1024.0 / update.len() as f64,
        took.as_secs_f64() * 1000.0
    );
    let rise = burst_peak.saturating_sub(before_burst);
    println!(
        "| 16 parallel 7 MiB `[{{\"a\":0}}, …]` in spec, one HTTP/2 connection | 16 × {:.2} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2} | {ok} × 200, {busy} × 429 | {:.0} ms |",
        junk.len() as f64 / 1048576.0,
        mib(before_burst),
        mib(burst_peak),
        mib(rise),
        rise as f64 * 1024.0 / (16 * junk.len()) as f64,
        burst_took.as_secs_f64() * 1000.0
    );
    println!(
        "| idle, 2 s after the burst | | {:.1} MiB | | | | | |",
        mib(after)
    );
    if ok + busy != 16 {
        println!("\nstatuses of the burst: {codes:?}");
    }
}

/// A directory with the guide's examples plus `n` more BackupConfigurations
/// (each targeting its own Deployment, 100 namespaces, 100 Repositories).
fn store_dir(root: &Path, n: usize) -> PathBuf {
    let dir = root.join(format!("store-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["backupconfiguration.yaml", "repository.yaml"] {
        std::fs::copy(common::examples().join(f), dir.join(f)).unwrap();
    }
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(dir.join("generated.yaml")).unwrap());
    for r in 0..100.min(n) {
        writeln!(
            out,
            "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata:\n  name: repo\n  namespace: ns-{r}\nspec:\n  backend:\n    gcs:\n      bucket: bucket-{r}\n      prefix: /backup\n    storageSecretName: gcs-secret\n---"
        )
        .unwrap();
    }
    for i in 0..n {
        writeln!(
            out,
            "apiVersion: stash.appscode.com/v1beta1\nkind: BackupConfiguration\nmetadata:\n  name: bc-{i}\n  namespace: ns-{ns}\nspec:\n  repository:\n    name: repo\n  schedule: \"*/5 * * * *\"\n  target:\n    ref:\n      apiVersion: apps/v1\n      kind: Deployment\n      name: app-{i}\n    volumeMounts:\n    - name: data\n      mountPath: /data\n    paths:\n    - /data\n  retentionPolicy:\n    name: keep-last-5\n    keepLast: 5\n    prune: true\n---",
            ns = i % 100
        )
        .unwrap();
    }
    dir
}

/// Mean time of `f` over `iterations`, in nanoseconds.
fn time_ns(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..iterations {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if std::env::var("STASH_BENCH_ROLE").as_deref() == Ok("floor") {
        floor::main(&args[1], &args[2]);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs this binary too; the measurement
        // is for `cargo bench` only.
        println!("load benchmark: run it with `cargo bench --bench load`");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seconds: u64 = std::env::var("STASH_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let length = Duration::from_secs(seconds);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bundle = stash::certs::generate(&stash::certs::dev_names(), Default::default()).unwrap();
    let (ca, cert, key) = (dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key"));
    stash::certs::write_bundle(&bundle, &ca, &cert, &key).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var("STASH_BENCH_ONLY").as_deref() == Ok("memory") {
        memory(&rt, dir, &bundle.ca_pem, &cert, &key);
        return;
    }

    let stash = spawn_stash(dir, &common::examples(), &cert, &key, "stash");
    let floor = spawn_floor(dir, &cert, &key);
    println!(
        "## stash serve vs floor ({seconds} s per run, TLS on loopback, Deployment CREATE review)\n"
    );
    println!(
        "| protocol | concurrency | floor req/s | floor p50 ms | floor p99 ms | stash req/s | stash p50 ms | stash p99 ms | req/s ratio | p99 ratio | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    // STASH_BENCH_ONLY=h1:16 runs one row (for profiling).
    let only = std::env::var("STASH_BENCH_ONLY").ok();
    let mut cpu_rows = Vec::new();
    for proto in [Proto::H1, Proto::H2] {
        for concurrency in [1, 16, 64] {
            let row = format!(
                "{}:{concurrency}",
                if proto == Proto::H1 { "h1" } else { "h2" }
            );
            if only.as_ref().is_some_and(|o| *o != row) {
                continue;
            }
            // Warm both (connections, caches), then measure floor and stash back to back.
            rt.block_on(load(
                floor.addr,
                &bundle.ca_pem,
                proto,
                concurrency,
                Duration::from_millis(500),
            ));
            rt.block_on(load(
                stash.addr,
                &bundle.ca_pem,
                proto,
                concurrency,
                Duration::from_millis(500),
            ));
            let c0 = cpu_us(floor.child.id());
            let f = rt.block_on(load(floor.addr, &bundle.ca_pem, proto, concurrency, length));
            let c1 = cpu_us(floor.child.id());
            let s0 = cpu_us(stash.child.id());
            let s = rt.block_on(load(stash.addr, &bundle.ca_pem, proto, concurrency, length));
            let s1 = cpu_us(stash.child.id());
            cpu_rows.push(format!(
                "| {} | {concurrency} | {:.0} | {:.0} |",
                proto.name(),
                (c1 - c0) as f64 / f.ok.max(1) as f64,
                (s1 - s0) as f64 / s.ok.max(1) as f64,
            ));
            println!(
                "| {} | {concurrency} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                proto.name(),
                f.rps,
                f.p50_ms,
                f.p99_ms,
                s.rps,
                s.p50_ms,
                s.p99_ms,
                s.rps / f.rps,
                s.p99_ms / f.p99_ms,
                f.errors + s.errors,
            );
            assert!(s.ok > 0 && f.ok > 0);
        }
    }
    println!("\n## Server CPU per request (user + system, from /proc)\n");
    println!("| protocol | concurrency | floor µs | stash µs |");
    println!("|---|---:|---:|---:|");
    for row in cpu_rows {
        println!("{row}");
    }
    let small_rss = vm_rss_kib(stash.child.id());
    drop(stash);
    drop(floor);

    // Memory with 10,000 BackupConfigurations, after serving some load.
    let big = store_dir(dir, 10_000);
    let loaded = spawn_stash(dir, &big, &cert, &key, "stash-10k");
    rt.block_on(load(
        loaded.addr,
        &bundle.ca_pem,
        Proto::H1,
        16,
        Duration::from_secs(2),
    ));
    let big_rss = vm_rss_kib(loaded.child.id());
    drop(loaded);
    memory(&rt, dir, &bundle.ca_pem, &cert, &key);
    println!("\n## Resident memory (VmRSS after load)\n");
    println!("| store | VmRSS |");
    println!("|---|---:|");
    println!(
        "| manifests/examples (1 BackupConfiguration) | {:.1} MiB |",
        small_rss as f64 / 1024.0
    );
    println!(
        "| 10,000 BackupConfigurations, 101 Repositories | {:.1} MiB |",
        big_rss as f64 / 1024.0
    );

    // Lookup and decision cost at 10 vs 10,000 configurations.
    println!("\n## Lookup cost (in process, mean of many calls)\n");
    println!("| configurations | configs_for_target | admission::handle (Deployment CREATE) |");
    println!("|---:|---:|---:|");
    let review = deployment_review("bench").to_string().into_bytes();
    let settings = stash::settings::Settings::default();
    for n in [10, 10_000] {
        let snap = stash::store::offline::load(&store_dir(dir, n))
            .unwrap()
            .snapshot;
        let lookup = time_ns(200_000, || {
            std::hint::black_box(snap.configs_for_target("demo", "Deployment", "stash-demo"));
        });
        let decision = time_ns(20_000, || {
            std::hint::black_box(
                stash::admission::handle(
                    stash::admission::Endpoint::MutateWorkloads,
                    &review,
                    &snap,
                    &settings,
                )
                .ok(),
            );
        });
        println!(
            "| {} | {lookup:.0} ns | {:.1} µs |",
            snap.config_count(),
            decision / 1000.0
        );
    }
    let wire = time_ns(20_000, || {
        std::hint::black_box(stash::admission::wire::parse(&review).ok());
    });
    let value = time_ns(20_000, || {
        std::hint::black_box(serde_json::from_slice::<serde_json::Value>(&review).ok());
    });
    println!(
        "\nParsing the {}-byte review: `admission::wire::parse` {:.1} µs; the floor's `serde_json::Value` parse {:.1} µs.",
        review.len(),
        wire / 1000.0,
        value / 1000.0
    );
}
