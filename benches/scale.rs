//! What `stash serve`'s reconciler costs as the cluster grows (issue 21):
//! peak and settled memory (heap bytes counted by this binary's global
//! allocator, and process RSS), the API requests, writes and conflicts per
//! new BackupConfiguration on the first pass, and the time to converge.
//!
//! `cargo bench --bench scale`; `STASH_SCALE_QUICK=1` runs small sizes (a
//! test can afford it). Scenarios: N Deployments each backed up by its own
//! configuration (one shared Repository), for N = 10, 1,000 and 10,000; and
//! 10 backed-up Deployments beside 10,000 untargeted ones, each with 10
//! ReplicaSets (100,000), whose cost per untargeted object is its heap
//! beside the 10 alone.
//!
//! Why three processes: the fake cluster of `tests/support` holds every
//! object (and its history) in memory, which would drown the reconciler's.
//! So the driver (this `main`) starts, per scenario, a reconciler process,
//! which starts the fake cluster as a third process serving HTTP on
//! 127.0.0.1, and measures only itself. The processes talk over stdin and
//! stdout, one line per step: the API server says `ready <addr>`; the
//! reconciler asks `quiet` (answered when no request came for a second:
//! the initial lists are done), then `apply` (every configuration is
//! created at once, as `kubectl apply -f configs/`), answered `converged
//! <ms>` once every configuration's `status.phase` is Ready and `settled
//! <requests> <writes> <409s> <422s>` once the passes have run out.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stash_testkit::{Cluster, Identity, alloc};

/// Counts the heap in use and its peak.
#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

const ROLE: &str = "STASH_SCALE_ROLE";
const SCENARIO: &str = "STASH_SCALE_SCENARIO";
/// Namespace of the backed-up Deployments and their configurations.
const NS: &str = "scale";
/// Untargeted Deployments per namespace.
const PER_NAMESPACE: usize = 1000;

/// One cluster shape.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    /// Deployments each targeted by its own configuration.
    targeted: usize,
    /// Deployments nobody backs up.
    untargeted: usize,
    /// ReplicaSets per untargeted Deployment (the deployment controller keeps 10 old ones).
    replica_sets: usize,
}

impl Scenario {
    fn encode(self) -> String {
        format!(
            "{},{},{}",
            self.targeted, self.untargeted, self.replica_sets
        )
    }

    fn decode(s: &str) -> Scenario {
        let n: Vec<usize> = s.split(',').map(|x| x.parse().expect("a count")).collect();
        Scenario {
            targeted: n[0],
            untargeted: n[1],
            replica_sets: n[2],
        }
    }

    fn label(self) -> String {
        match self.untargeted {
            0 => format!("{} backed-up Deployments", self.targeted),
            u => format!(
                "{} backed-up + {u} untargeted Deployments, {} ReplicaSets",
                self.targeted,
                u * self.replica_sets
            ),
        }
    }
}

fn scenarios() -> Vec<Scenario> {
    let quick = std::env::var_os("STASH_SCALE_QUICK").is_some();
    let (small, big, untargeted) = if quick {
        (50, 300, 300)
    } else {
        (1_000, 10_000, 10_000)
    };
    let s = |targeted, untargeted, replica_sets| Scenario {
        targeted,
        untargeted,
        replica_sets,
    };
    vec![
        s(10, 0, 0),
        s(small, 0, 0),
        s(big, 0, 0),
        s(10, untargeted, 10),
    ]
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("apiserver") => api_server(scenario_from_env()),
        Ok("reconciler") => reconciler(scenario_from_env()),
        _ => driver(),
    }
}

fn scenario_from_env() -> Scenario {
    Scenario::decode(&std::env::var(SCENARIO).expect("the scenario"))
}

fn spawn(role: &str, scenario: Scenario) -> Child {
    Command::new(std::env::current_exe().expect("this bench"))
        .env(ROLE, role)
        // A heap profiler of the reconciler (heaptrack) profiles it alone.
        .env_remove("LD_PRELOAD")
        .env(SCENARIO, scenario.encode())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn a scale process")
}

// ---- the driver ------------------------------------------------------------

fn driver() {
    // cargo bench passes `--bench`; nothing else is understood.
    let mut rows = Vec::new();
    for scenario in scenarios() {
        eprintln!("scale: {} …", scenario.label());
        let child = spawn("reconciler", scenario);
        let out = child.wait_with_output().expect("the reconciler process");
        let text = String::from_utf8_lossy(&out.stdout);
        let result = text
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .unwrap_or_else(|| panic!("no result for {}: {text}", scenario.label()));
        let row: Value = serde_json::from_str(result).expect("a JSON result");
        eprintln!("scale: {row}");
        rows.push((scenario, row));
    }
    print_table(&rows);
}

fn mib(bytes: &Value) -> String {
    format!("{:.1}", bytes.as_f64().unwrap_or(0.0) / (1024.0 * 1024.0))
}

fn print_table(rows: &[(Scenario, Value)]) {
    println!(
        "| cluster | heap peak / settled (MiB) | RSS peak / settled (MiB) | requests / writes per config | 409 + 422 | WARN | converged (s) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (s, r) in rows {
        let n = s.targeted as f64;
        println!(
            "| {} | {} / {} | {} / {} | {:.1} / {:.1} | {} | {} | {:.1} |",
            s.label(),
            mib(&r["heap_peak"]),
            mib(&r["heap_settled"]),
            mib(&r["rss_peak"]),
            mib(&r["rss_settled"]),
            r["requests"].as_f64().unwrap_or(0.0) / n,
            r["writes"].as_f64().unwrap_or(0.0) / n,
            r["conflicts"].as_u64().unwrap_or(0) + r["invalid"].as_u64().unwrap_or(0),
            r["warnings"],
            r["converged_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        );
    }
    let baseline = rows
        .iter()
        .find(|(s, _)| s.targeted == 10 && s.untargeted == 0);
    let crowded = rows.iter().find(|(s, _)| s.untargeted > 0);
    if let (Some((_, base)), Some((s, crowd))) = (baseline, crowded) {
        let objects = (s.untargeted * (1 + s.replica_sets)) as f64;
        let per = |k: &str| {
            (crowd[k].as_f64().unwrap_or(0.0) - base[k].as_f64().unwrap_or(0.0)) / objects
        };
        println!(
            "\nper untargeted object (beside 10 backed-up alone): heap settled {:.0} B, heap peak {:.0} B, RSS settled {:.0} B",
            per("heap_settled"),
            per("heap_peak"),
            per("rss_settled"),
        );
    }
}

// ---- the reconciler process -------------------------------------------------

/// Resident set size now and at its highest (VmRSS, VmHWM), in bytes.
fn rss() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<usize>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The API server process's side of the conversation.
struct Peer {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn ask(&mut self, what: &str) -> String {
        writeln!(self.stdin, "{what}").expect("the API server listens");
        self.read()
    }

    fn read(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("the API server answers");
        assert!(!line.is_empty(), "the API server process ended");
        line.trim_end().to_string()
    }
}

/// Counts the WARN events stash logs.
struct WarnCounter(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for WarnCounter {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if *event.metadata().level() <= tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn reconciler(scenario: Scenario) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    let warnings = Arc::new(AtomicUsize::new(0));
    // WARN lines are counted, and shown on stderr.
    let shown = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(tracing_subscriber::filter::LevelFilter::WARN);
    let subscriber = tracing_subscriber::registry()
        .with(WarnCounter(warnings.clone()))
        .with(shown);
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber");

    let mut child = spawn("apiserver", scenario);
    let mut peer = Peer {
        stdin: child.stdin.take().expect("stdin"),
        stdout: BufReader::new(child.stdout.take().expect("stdout")),
        _child: child,
    };
    let ready = peer.read();
    let addr = ready
        .strip_prefix("ready ")
        .expect("ready <addr>")
        .to_string();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let base = alloc::current();
    let config = kube::Config::new(format!("http://{addr}").parse().expect("a URL"));
    let client = {
        let _in_runtime = runtime.enter();
        kube::Client::try_from(config).expect("a client")
    };
    let (signal, drain) = stash::runtime::drain::channel();
    let started = Instant::now();
    runtime.spawn(serve(client, drain));
    // The initial lists: until the API server has been quiet for a second.
    let quiet = peer.ask("quiet");
    let idle_heap = alloc::current() - base;
    let idle_rss = rss().0;
    eprintln!("scale: lists done in {:?} ({quiet})", started.elapsed());

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rss_peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, rss_peak) = (stop.clone(), rss_peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                rss_peak.fetch_max(rss().0, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let applied = peer.ask("apply");
    let converged = peer.read();
    let settled = peer.read();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("the sampler");
    let (rss_settled, hwm) = rss();
    let heap_settled = alloc::current() - base;
    let heap_peak = alloc::peak() - base;
    let counts: Vec<u64> = settled
        .strip_prefix("settled ")
        .expect("settled <counts>")
        .split(' ')
        .map(|x| x.parse().expect("a count"))
        .collect();
    let result = json!({
        "applied": applied,
        "idle_heap": idle_heap,
        "idle_rss": idle_rss,
        "heap_peak": heap_peak,
        "heap_settled": heap_settled,
        "rss_peak": rss_peak.load(Ordering::Relaxed).max(hwm),
        "rss_settled": rss_settled,
        "converged_ms": converged.strip_prefix("converged ").and_then(|m| m.parse::<u64>().ok()),
        "requests": counts[0],
        "writes": counts[1],
        "conflicts": counts[2],
        "invalid": counts[3],
        "warnings": warnings.load(Ordering::Relaxed),
    });
    println!("RESULT {result}");
    std::io::stdout().flush().expect("stdout");
    // Exit with everything still held: under a heap profiler (heaptrack),
    // what is "leaked" is what the settled reconciler holds. The API server
    // process ends when its stdin closes.
    drop(signal);
    std::process::exit(0);
}

/// `stash serve`'s cluster side: the feed and the leader-elected reconciler.
async fn serve(client: kube::Client, drain: stash::runtime::drain::Drain) {
    let settings = stash::settings::Settings::default();
    let (feed, feeder) = stash::runtime::feed::new(Arc::default());
    tokio::spawn(feeder.run(client.clone(), drain.clone()));
    let config = stash::reconcile::ReconcilerConfig {
        image: settings.image.clone(),
        namespace: "stash-system".into(),
        identity: "stash-0".into(),
        settings,
        // As `stash serve` runs it: the leader exports the backup metrics.
        metrics: Some(stash::monitoring::collector::Leading::default()),
    };
    let mut drain = drain;
    let stopped = async move { drain.signaled().await };
    if let Err(e) = stash::reconcile::run(client, config, feed, stopped).await {
        eprintln!("scale: the reconciler stopped: {e:#}");
    }
}

// ---- the API server process ---------------------------------------------------

fn api_server(scenario: Scenario) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let c = Cluster::new();
        seed(&c, scenario);
        let addr = c.listen(Identity::reconciler()).await.expect("listen");
        println!("ready {addr}");
        let mut lines =
            tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
        while let Ok(Some(line)) = lines.next_line().await {
            match line.as_str() {
                "quiet" => {
                    let n = quiet(&c).await;
                    println!("quiet {n} requests");
                }
                "apply" => {
                    let mark = c.mark();
                    let applied_at = Instant::now();
                    for i in 0..scenario.targeted {
                        c.create(Identity::admin(), config(i)).expect("admitted");
                    }
                    println!("applied {}", scenario.targeted);
                    converge(&c, scenario.targeted).await;
                    println!("converged {}", applied_at.elapsed().as_millis());
                    quiet(&c).await;
                    let n = count(&c.log_since(mark));
                    println!("settled {} {} {} {}", n[0], n[1], n[2], n[3]);
                }
                _ => {
                    println!("bye");
                    break;
                }
            }
        }
    });
    // The reconciler's watches would keep a graceful shutdown waiting.
    std::process::exit(0);
}

/// Waits until no request came for a second; the requests served so far.
async fn quiet(c: &Cluster) -> usize {
    let mut last = c.mark();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = c.mark();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Waits until every configuration's phase is Ready.
async fn converge(c: &Cluster, n: usize) {
    let collection =
        format!("/apis/stash.appscode.com/v1beta1/namespaces/{NS}/backupconfigurations");
    loop {
        let ready = c
            .list(&collection, None)
            .iter()
            .filter(|bc| bc["status"]["phase"] == "Ready")
            .count();
        if ready == n {
            return;
        }
        // Listing costs the fake what it holds: poll less often when big.
        tokio::time::sleep(Duration::from_millis(100.max(n as u64 / 5))).await;
    }
}

/// The reconciler's requests in [`NS`] (watches and lists left out):
/// requests, writes, 409s, 422s.
fn count(log: &[stash_testkit::Recorded]) -> [u64; 4] {
    let mut n = [0; 4];
    for r in log
        .iter()
        .filter(|r| r.path.contains(&format!("/namespaces/{NS}/")))
    {
        let collection = r.method == "GET" && r.path.rsplit('/').nth(1) == Some(NS);
        if r.is_watch() || collection || r.user == Identity::admin().username {
            continue;
        }
        n[0] += 1;
        n[1] += u64::from(r.is_write());
        n[2] += u64::from(r.code == 409);
        n[3] += u64::from(r.code == 422);
    }
    n
}

// ---- the cluster's objects --------------------------------------------------------

fn seed(c: &Cluster, s: Scenario) {
    c.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}));
    c.seed(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": "repo-secret", "namespace": NS},
                  "data": {"RESTIC_PASSWORD": "Y2hhbmdlaXQ="}}),
    );
    c.seed(
        json!({"apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
                  "metadata": {"name": "repo", "namespace": NS},
                  "spec": {"backend": {"gcs": {"bucket": "b", "prefix": "/p"},
                                       "storageSecretName": "repo-secret"}}}),
    );
    for i in 0..s.targeted {
        c.seed(deployment(NS, &format!("app-{i}")));
    }
    for i in 0..s.untargeted {
        let ns = format!("other-{}", i / PER_NAMESPACE);
        let name = format!("web-{i}");
        let d = c.seed(deployment(&ns, &name));
        for r in 0..s.replica_sets {
            c.seed(replica_set(&d, r));
        }
    }
}

/// A Deployment as `kubectl apply` leaves it: managedFields and the
/// last-applied annotation included (what a watch of whole objects carries).
fn deployment(ns: &str, name: &str) -> Value {
    let spec = json!({"replicas": 1, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "app", "image": "nginx:1.27",
                                              "ports": [{"containerPort": 80}],
                                              "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}});
    let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": name, "namespace": ns}, "spec": spec});
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": name},
                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied.to_string()},
                        "managedFields": [managed_fields("kubectl-client-side-apply")]},
           "spec": spec})
}

/// The `revision`-th ReplicaSet the deployment controller made for `d`.
fn replica_set(d: &Value, revision: usize) -> Value {
    let name = d["metadata"]["name"].as_str().expect("a name");
    let ns = d["metadata"]["namespace"].as_str().expect("a namespace");
    let hash = format!("{:010x}", revision * 7919 + name.len());
    let mut template = d["spec"]["template"].clone();
    template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
           "metadata": {"name": format!("{name}-{hash}"), "namespace": ns,
                        "labels": {"app": name, "pod-template-hash": hash},
                        "annotations": {"deployment.kubernetes.io/revision": (revision + 1).to_string(),
                                        "deployment.kubernetes.io/desired-replicas": "1",
                                        "deployment.kubernetes.io/max-replicas": "2"},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                             "uid": d["metadata"]["uid"], "controller": true,
                                             "blockOwnerDeletion": true}],
                        "managedFields": [managed_fields("kube-controller-manager")]},
           "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name, "pod-template-hash": hash}},
                    "template": template}})
}

fn managed_fields(manager: &str) -> Value {
    json!({"manager": manager, "operation": "Update", "apiVersion": "apps/v1",
           "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
           "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {"f:replicas": {}, "f:selector": {},
                                   "f:template": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                                                  "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {
                                                      ".": {}, "f:image": {}, "f:name": {},
                                                      "f:ports": {}, "f:resources": {}}}}}}}})
}

fn config(i: usize) -> Value {
    json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
           "metadata": {"name": format!("bc-{i}"), "namespace": NS},
           "spec": {"repository": {"name": "repo"}, "schedule": "*/5 * * * *",
                    "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": format!("app-{i}")},
                               "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                               "paths": ["/data"]},
                    "retentionPolicy": {"name": "keep-last-5", "keepLast": 5, "prune": true}}})
}
