//! Harness of the real-cluster end-to-end test (`tests/e2e_cluster/main.rs`):
//! settings from the environment, the throwaway namespace and the install's
//! objects with their cleanup (a Drop guard), the local `stash` processes
//! (each with its own kubeconfig: the identity it has in a cluster), bounded
//! waits, and the reads `kubectl get`/`describe` would do.
//!
//! Nothing here talks to a cluster unless `STASH_E2E_KUBECONFIG` names a
//! kubeconfig (and the ignored test is run with `--ignored`).

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, DynamicObject};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::identity;
use crate::install::{self, Created};
use stash::api::{BackupConfiguration, RestoreSession};
use stash::reconcile::apply::is_not_found;
use stash_testkit::guide::{self, EventRow};

/// Why the ignored test fails when run (`--ignored`) without a cluster.
pub const NO_CLUSTER: &str = "needs a real cluster: set STASH_E2E_KUBECONFIG=<kubeconfig> (a \
     throwaway cluster, cluster-admin rights; this machine's address must be reachable from the \
     API server, see CONTRIBUTING.md \"Real-cluster end-to-end test\")";

/// How often waits poll.
pub const POLL: Duration = Duration::from_millis(500);

/// Where the test gets its cluster and how the API server reaches this machine.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `STASH_E2E_KUBECONFIG`: the kubeconfig of a throwaway cluster.
    pub kubeconfig: PathBuf,
    /// `STASH_E2E_WEBHOOK_HOST`: the address (IP or DNS name) of this machine
    /// as the API server sees it; default: the local address of the route to
    /// the API server.
    pub webhook_host: Option<String>,
    /// `STASH_E2E_WEBHOOK_PORT`: the webhook port; default: a free port.
    pub webhook_port: Option<u16>,
    /// `STASH_E2E_KEEP=1`: leave the namespace in place for inspection.
    pub keep: bool,
}

impl Settings {
    /// The settings, or `None` when `STASH_E2E_KUBECONFIG` is unset or empty.
    pub fn from_env() -> Option<Self> {
        let raw = std::env::var("STASH_E2E_KUBECONFIG").ok()?;
        let raw = raw.trim();
        if raw.is_empty() {
            return None;
        }
        let kubeconfig = match raw.strip_prefix("~/") {
            Some(rest) => {
                PathBuf::from(std::env::var("HOME").expect("HOME for ~ in STASH_E2E_KUBECONFIG"))
                    .join(rest)
            }
            None => PathBuf::from(raw),
        };
        // Absolute, so the child processes read the same file.
        let kubeconfig = std::fs::canonicalize(&kubeconfig)
            .unwrap_or_else(|e| panic!("STASH_E2E_KUBECONFIG={}: {e}", kubeconfig.display()));
        let webhook_host = std::env::var("STASH_E2E_WEBHOOK_HOST")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty());
        let webhook_port = std::env::var("STASH_E2E_WEBHOOK_PORT")
            .ok()
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                p.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("STASH_E2E_WEBHOOK_PORT={p:?} is not a port number"))
            });
        let keep = std::env::var("STASH_E2E_KEEP").is_ok_and(|v| v == "1" || v == "true");
        Some(Self {
            kubeconfig,
            webhook_host,
            webhook_port,
            keep,
        })
    }
}

/// A client for the kubeconfig (its current context), and the API server's URL.
pub async fn client(kubeconfig: &Path) -> (kube::Client, http::Uri) {
    let kc = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", kubeconfig.display()));
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot use {}: {e}", kubeconfig.display()));
    let url = config.cluster_url.clone();
    let client = kube::Client::try_from(config)
        .unwrap_or_else(|e| panic!("cannot build a client for {}: {e}", kubeconfig.display()));
    (client, url)
}

/// This machine's address on the route to the API server: the source address
/// the kernel picks for a (never sent) UDP datagram to it. Right when the API
/// server runs on this machine (127.0.0.1) or reaches it without NAT; for a
/// cluster in containers (kind: the docker network's gateway) or behind NAT,
/// set `STASH_E2E_WEBHOOK_HOST`.
pub async fn route_address(api_server: &http::Uri) -> IpAddr {
    let host = api_server
        .host()
        .unwrap_or_else(|| panic!("API server URL {api_server} has no host"))
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = api_server
        .port_u16()
        .unwrap_or(if api_server.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap_or_else(|e| panic!("cannot resolve the API server {host}: {e}"))
        .next()
        .unwrap_or_else(|| panic!("the API server {host} resolves to no address"));
    let unspecified: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let socket = std::net::UdpSocket::bind(unspecified).expect("a UDP socket");
    socket
        .connect(target)
        .unwrap_or_else(|e| panic!("no route to the API server {target}: {e}"));
    socket
        .local_addr()
        .expect("the socket's local address")
        .ip()
}

/// A port nobody listens on right now.
pub fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
        .port()
}

/// `host:port` for a URL (IPv6 addresses in brackets).
pub fn host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// One local `stash` process, its output in a log file; stopped on drop
/// (SIGTERM, then SIGKILL after ten seconds).
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr into `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        let out = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().expect("log file handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Self {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of its log.
    pub fn tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Stops the process: SIGTERM (graceful: drains, releases Leases), then SIGKILL.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The test's namespace and everything around it. Dropping it (also when the
/// test panics) stops the local processes, deletes the webhook
/// configurations, releases stash's finalizers, and deletes the rest of the
/// install the test created and the namespace.
pub struct Cluster {
    /// The admin's client: what `kubectl` does in the guide, and the test's reads.
    pub client: kube::Client,
    pub settings: Settings,
    /// The test's namespace (unique).
    pub ns: String,
    /// Certificates, kubeconfigs, logs, the restic repository, the data, the pod's dirs.
    pub dir: tempfile::TempDir,
    procs: Mutex<Vec<Proc>>,
    /// The install's objects the test created, in creation order.
    installed: Mutex<Vec<Created>>,
    started: Instant,
}

impl Cluster {
    /// Creates the namespace; the returned guard deletes it.
    pub async fn create(client: kube::Client, settings: Settings) -> Self {
        let secs = jiff::Timestamp::now().as_second();
        let ns = format!("stash-e2e-{secs}-{}", std::process::id());
        let namespace: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"app.kubernetes.io/created-by": "stash-e2e"}}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&Default::default(), &namespace)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot create namespace {ns} (cluster-admin rights?): {e}")
            });
        let cluster = Self {
            client,
            settings,
            ns,
            dir: tempfile::Builder::new()
                .prefix("stash-e2e-")
                .tempdir()
                .expect("temp dir"),
            procs: Mutex::new(Vec::new()),
            installed: Mutex::new(Vec::new()),
            started: Instant::now(),
        };
        cluster.step(&format!(
            "namespace {} created; local files in {}",
            cluster.ns,
            cluster.dir.path().display()
        ));
        cluster
    }

    /// Prints a progress line (seen with `-- --nocapture`).
    pub fn step(&self, what: &str) {
        println!(
            "e2e [{:>6.1}s] {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// A path in the temp dir.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Creates one object of the rendered install (see [`install::create`])
    /// and records it for the cleanup.
    pub async fn install(&self, object: &stash::manifests::Object) {
        let created = install::create(&self.client, object)
            .await
            .unwrap_or_else(|e| panic!("install: {e:#}"));
        self.installed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(created);
    }

    /// A kubeconfig (in the temp dir, mode 0600) for ServiceAccount
    /// `ns/name`: the identity a pod running as it has.
    pub async fn kubeconfig_for(&self, ns: &str, name: &str) -> PathBuf {
        let path = identity::service_account_kubeconfig(
            &self.client,
            &self.settings.kubeconfig,
            ns,
            name,
            self.dir.path(),
        )
        .await
        .unwrap_or_else(|e| panic!("kubeconfig for ServiceAccount {ns}/{name}: {e:#}"));
        self.step(&format!(
            "kubeconfig for {} in {}",
            identity::username(ns, name),
            path.display()
        ));
        path
    }

    /// Starts a local `stash` process with `args`, `KUBECONFIG` = `kubeconfig`
    /// (the identity it runs as) and `env` on top of this process's
    /// environment (minus anything that would set one of stash's flags
    /// behind the test's back).
    pub fn spawn(&self, name: &str, kubeconfig: &Path, args: &[String], env: &[(String, String)]) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stash"));
        cmd.args(args);
        for key in flag_vars() {
            cmd.env_remove(key);
        }
        cmd.env("KUBECONFIG", kubeconfig);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let log = self.p(&format!("{name}.log"));
        self.step(&format!(
            "starting {name}: stash {} (log {})",
            args.join(" "),
            log.display()
        ));
        let proc = Proc::spawn(name, cmd, log);
        self.procs.lock().unwrap().push(proc);
    }

    /// Stops the local process `name` (if running).
    pub fn stop(&self, name: &str) {
        let proc = {
            let mut procs = self.procs.lock().unwrap();
            procs
                .iter()
                .position(|p| p.name == name)
                .map(|i| procs.remove(i))
        };
        if let Some(mut proc) = proc {
            proc.stop();
            self.step(&format!("stopped {name}"));
        }
    }

    /// The last lines of a process's log.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        tail(&self.p(&format!("{name}.log")), lines)
    }

    /// Fails the test if a local process has died.
    pub fn check_processes(&self) {
        let died = {
            let mut procs = self.procs.lock().unwrap();
            procs.iter_mut().find_map(|p| {
                p.exited()
                    .map(|status| (p.name.clone(), status, p.tail(40)))
            })
        };
        if let Some((name, status, tail)) = died {
            panic!("local process {name} exited ({status}); last lines of its log:\n{tail}");
        }
    }

    /// Polls `probe` until it returns `Ok`, at most `timeout`; fails with
    /// `what` and the last thing `probe` saw (its `Err`).
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl AsyncFnMut() -> Result<T, String>,
    ) -> T {
        let start = Instant::now();
        loop {
            self.check_processes();
            let seen = match probe().await {
                Ok(v) => return v,
                Err(seen) => seen,
            };
            if start.elapsed() >= timeout {
                panic!(
                    "timed out after {}s waiting for {what}; last seen: {seen}",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls `probe` for `duration`; fails as soon as it returns `Err`.
    pub async fn holds_for(
        &self,
        what: &str,
        duration: Duration,
        mut probe: impl AsyncFnMut() -> Result<(), String>,
    ) {
        let start = Instant::now();
        while start.elapsed() < duration {
            self.check_processes();
            if let Err(seen) = probe().await {
                panic!(
                    "{what} stopped holding {:.1}s into a {}s window: {seen}",
                    start.elapsed().as_secs_f64(),
                    duration.as_secs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// An object of a custom kind exactly as the API server returns it (no
    /// typed round trip that could drop `paused: false`).
    pub async fn raw<K>(&self, name: &str) -> Option<Value>
    where
        K: Resource<DynamicType = ()>,
    {
        let ar = ApiResource::erase::<K>(&());
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &self.ns, &ar);
        match api.get_opt(name).await {
            Ok(o) => o.map(|o| serde_json::to_value(o).expect("an object serializes")),
            Err(e) => panic!("get {} {name}: {e}", K::kind(&())),
        }
    }

    /// The core/v1 Events about `kind/name`, as `kubectl describe` lists them:
    /// (type, reason, from, message), oldest first.
    pub async fn events(&self, kind: &str, name: &str) -> Vec<EventRow> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let selector = format!("involvedObject.kind={kind},involvedObject.name={name}");
        let mut events = api
            .list(&ListParams::default().fields(&selector))
            .await
            .unwrap_or_else(|e| panic!("list events {selector}: {e}"))
            .items;
        events.sort_by_key(|e| {
            (
                e.first_timestamp.as_ref().map(|t| t.0),
                e.metadata.creation_timestamp.as_ref().map(|t| t.0),
                e.name_any(),
            )
        });
        guide::event_rows(events)
    }

    /// The ReplicaSets the Deployment with `uid` controls, oldest first.
    pub async fn replica_sets(&self, deployment_uid: &str) -> Vec<ReplicaSet> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &self.ns);
        let mut list: Vec<ReplicaSet> = api
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("list replicasets: {e}"))
            .items
            .into_iter()
            .filter(|rs| {
                rs.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == deployment_uid)
            })
            .collect();
        list.sort_by_key(|rs| {
            (
                rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
                rs.name_any(),
            )
        });
        list
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        // Processes first: the reconciler must not put finalizers back.
        let procs: Vec<Proc> = std::mem::take(
            &mut *self
                .procs
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for mut proc in procs {
            proc.stop();
            if panicking {
                eprintln!(
                    "---- last lines of {} ({}) ----\n{}",
                    proc.name,
                    proc.log.display(),
                    proc.tail(60)
                );
            }
        }
        if panicking || self.settings.keep {
            self.dir.disable_cleanup(true);
            eprintln!("e2e: kept local files in {}", self.dir.path().display());
        }
        let kubeconfig = self.settings.kubeconfig.clone();
        let ns = self.ns.clone();
        let keep = self.settings.keep;
        let installed = std::mem::take(
            &mut *self
                .installed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        // A fresh runtime and client on their own thread: this runs inside the
        // test's runtime (maybe while it unwinds), where blocking is not allowed.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup");
            rt.block_on(cleanup(&kubeconfig, &ns, keep, &installed))
        })
        .join();
        match done {
            Ok(problems) if problems.is_empty() => {}
            Ok(problems) => eprintln!("e2e cleanup: {}", problems.join("; ")),
            Err(_) => eprintln!("e2e cleanup panicked; delete namespace {} by hand", self.ns),
        }
    }
}

/// Deletes what the test made on the cluster, with the admin's rights (CRDs
/// stay: they are shared, and deleting them would delete every such object
/// cluster-wide). `STASH_E2E_KEEP` keeps the namespace and the install for
/// inspection, but not the webhook configurations.
async fn cleanup(kubeconfig: &Path, ns: &str, keep: bool, installed: &[Created]) -> Vec<String> {
    let mut problems = Vec::new();
    let (client, _) = client(kubeconfig).await;
    // The webhooks point at a process that is gone.
    let (webhooks, rest): (Vec<&Created>, Vec<&Created>) = installed
        .iter()
        .partition(|c| c.resource.kind.ends_with("WebhookConfiguration"));
    for created in webhooks {
        if let Err(e) = created.delete(&client).await {
            problems.push(e);
        }
    }
    // Nobody is left to honour stash's finalizer.
    release_finalizers(
        &Api::<BackupConfiguration>::namespaced(client.clone(), ns),
        &mut problems,
    )
    .await;
    release_finalizers(
        &Api::<RestoreSession>::namespaced(client.clone(), ns),
        &mut problems,
    )
    .await;
    if keep {
        eprintln!(
            "e2e: STASH_E2E_KEEP is set; namespace {ns} and the install ({}) left in place",
            rest.iter().map(|c| c.id()).collect::<Vec<_>>().join(", ")
        );
        return problems;
    }
    // The install in reverse order (policies and bindings before roles, the
    // install namespace last), then the test's namespace.
    for created in rest.iter().rev() {
        if let Err(e) = created.delete(&client).await {
            problems.push(e);
        }
    }
    let namespaces: Api<Namespace> = Api::all(client);
    match namespaces.delete(ns, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => problems.push(format!("delete namespace {ns}: {e}")),
    }
    // Both namespaces gone, so that the next run can create them again.
    let mut gone: Vec<String> = rest
        .iter()
        .filter(|c| c.resource.kind == "Namespace")
        .map(|c| c.name.clone())
        .collect();
    gone.push(ns.to_string());
    for name in gone {
        if let Err(e) = namespace_gone(&namespaces, &name).await {
            problems.push(e);
        }
    }
    problems
}

/// Waits (at most 120 s) for namespace `ns` to be gone.
async fn namespace_gone(namespaces: &Api<Namespace>, ns: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match namespaces.get_opt(ns).await {
            Ok(None) => {
                println!("e2e: namespace {ns} deleted");
                return Ok(());
            }
            Ok(Some(n)) if Instant::now() >= deadline => {
                let phase = n.status.and_then(|s| s.phase).unwrap_or_default();
                return Err(format!(
                    "namespace {ns} still exists after 120s (phase {phase}); it is being deleted"
                ));
            }
            Ok(Some(_)) => tokio::time::sleep(Duration::from_secs(1)).await,
            Err(e) => return Err(format!("get namespace {ns}: {e}")),
        }
    }
}

/// Drops every finalizer of the objects in `api`. For a moment after its
/// configuration went, the API server may still call the (gone) validating
/// webhook on this update: retry for a while.
async fn release_finalizers<K>(api: &Api<K>, problems: &mut Vec<String>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let Ok(list) = api.list(&ListParams::default()).await else {
        return;
    };
    for object in list.items {
        let name = object.name_any();
        let patch = json!({"metadata": {"finalizers": null}});
        for attempt in 1..=20 {
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => break,
                Err(e) if is_not_found(&e) => break,
                Err(e) if attempt == 20 => {
                    problems.push(format!("release finalizers of {name}: {e}"))
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
}

/// `GET http://<addr><path>` over a plain socket: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .map_err(|_| format!("no answer from {addr}{path} in 5s"))?
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// This process's environment variables that would set one of stash's
/// flags (or the in-cluster config) behind the test's back in a child.
fn flag_vars() -> Vec<String> {
    std::env::vars_os()
        .map(|(key, _)| key.to_string_lossy().to_string())
        .filter(|key| {
            key.starts_with("STASH_")
                || [
                    "POD_NAME",
                    "POD_NAMESPACE",
                    "NODE_NAME",
                    "KUBERNETES_SERVICE_HOST",
                ]
                .contains(&key.as_str())
        })
        .collect()
}

/// `kubectl stash ARGS` (the binary as `stash kubectl …`) with `kubeconfig`:
/// whether it exited 0, its stdout and its stderr. Bounded like [`run_stash`].
pub async fn run_plugin(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_stash"));
    cmd.arg("kubectl")
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .kill_on_drop(true)
        .stdin(Stdio::null());
    for key in flag_vars() {
        cmd.env_remove(key);
    }
    let what = format!("kubectl stash {}", args.join(" "));
    let out = tokio::time::timeout(Duration::from_secs(400), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in 400s"))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `stash <args>` to completion (at most 60 s) with `env`, as the
/// identity of `kubeconfig` (none: no cluster); its stdout, or a failure
/// with its stderr.
pub async fn run_stash(
    kubeconfig: Option<&Path>,
    args: &[String],
    env: &[(String, String)],
) -> String {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_stash"));
    cmd.args(args).kill_on_drop(true).stdin(Stdio::null());
    for key in flag_vars() {
        cmd.env_remove(key);
    }
    if let Some(k) = kubeconfig {
        cmd.env("KUBECONFIG", k);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("stash {} did not finish in 60s", args.join(" ")))
        .unwrap_or_else(|e| panic!("cannot run stash {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "stash {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}
