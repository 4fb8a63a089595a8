//! `stash serve`, assembled: the flags, the store (offline YAML or the
//! cluster's, fed by watches), the serving certificate, the webhook server
//! (`crate::server`), and in cluster mode the feed and the leader-elected
//! reconciler, all stopped by one drain on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;

use crate::cli::PausedSessionPolicyArg;
use crate::runtime::conn;
use crate::runtime::drain;
use crate::server::http;
use crate::server::{Config, DEFAULT_CERT_FILE, DEFAULT_KEY_FILE, Running, start};
use crate::settings::{DEFAULT_IMAGE, Settings};
use crate::store::Store;
use stash_core::duration;

/// Last resort only: longest wait, once the ports have stopped, for the
/// tasks holding a handle on the drain (the feed, the reconciler, the SIGHUP
/// handler) to release it. Each bounds its own drain well within it (the
/// reconciler: [`crate::runtime::lease::WORK_DRAIN_LIMIT`] for its work, then the Lease's
/// release), and it started draining with the webhook port; this only keeps
/// a task that never lets go from holding the pod until the kubelet kills
/// it (`terminationGracePeriodSeconds` 30, a 5 s preStop pause included).
const RELEASE_LIMIT: Duration = Duration::from_secs(20);

/// Command-line arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of the HTTPS webhook port.
    #[arg(long, env = "STASH_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP probe and metrics port.
    #[arg(long, env = "STASH_PROBE_LISTEN", default_value = "0.0.0.0:8080")]
    pub probe_listen: SocketAddr,
    /// Serving certificate (PEM; may hold a chain, leaf first).
    #[arg(long, env = "STASH_TLS_CERT_FILE", default_value = DEFAULT_CERT_FILE)]
    pub tls_cert_file: PathBuf,
    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "STASH_TLS_KEY_FILE", default_value = DEFAULT_KEY_FILE)]
    pub tls_key_file: PathBuf,
    /// CA for client certificates: when set, clients (the API server) must
    /// present a certificate it signed.
    #[arg(long, env = "STASH_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Read BackupConfigurations and Repositories from this directory of YAML
    /// instead of the API server (no reconciler).
    #[arg(long, env = "STASH_OFFLINE")]
    pub offline: Option<PathBuf>,
    /// What to do with a BackupSession whose invoker is paused.
    #[arg(long, env = "STASH_PAUSED_SESSION_POLICY", value_enum, default_value_t)]
    pub paused_session_policy: PausedSessionPolicyArg,
    /// Image of the injected sidecar and the backup CronJob.
    #[arg(long, env = "STASH_IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// Offer only HTTP/1.1 (no `h2` in ALPN).
    #[arg(long, env = "STASH_DISABLE_HTTP2")]
    pub disable_http2: bool,
    /// Run the reconciler (cluster mode only): `--reconcile=false` to turn off.
    #[arg(long, env = "STASH_RECONCILE", default_value_t = true, action = clap::ArgAction::Set)]
    pub reconcile: bool,
    /// Time in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "STASH_DRAIN_TIMEOUT", default_value = "25s", value_parser = duration::parse_flag)]
    pub drain_timeout: Duration,
    /// Time between turning not-ready and closing the listener on SIGTERM,
    /// so endpoints stop routing to this pod before it stops accepting.
    #[arg(long, env = "STASH_SHUTDOWN_DELAY", default_value = "0s", value_parser = duration::parse_flag)]
    pub shutdown_delay: Duration,
    /// Namespace of the reconciler's Lease (default: POD_NAMESPACE, else stash-system).
    #[arg(long, env = "STASH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Time a client gets to send a request's headers (also the idle limit
    /// of a kept-alive HTTP/1.1 connection).
    #[arg(long, env = "STASH_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration::parse_flag)]
    pub header_read_timeout: Duration,
    /// Longest time spent on one request; `?timeout=` may only shorten it.
    #[arg(long, env = "STASH_MAX_REQUEST_TIME", default_value = "30s", value_parser = duration::parse_flag)]
    pub max_request_time: Duration,
    /// Total bytes of request bodies in flight (read or being decided); a
    /// request whose body does not fit gets 429 with Retry-After.
    #[arg(long, env = "STASH_BODY_BUDGET", default_value = "64Mi", value_parser = http::parse_bytes)]
    pub body_budget: usize,
    /// How often the certificate files are re-read when no file event arrives.
    #[arg(long, env = "STASH_CERT_POLL_INTERVAL", default_value = "10s", value_parser = duration::parse_flag)]
    pub cert_poll_interval: Duration,
    /// Time a connection may stay open without a request once it has sent one.
    #[arg(long, env = "STASH_IDLE_TIMEOUT", default_value = "90s", value_parser = duration::parse_flag)]
    pub idle_timeout: Duration,
    /// Open connections at most on the webhook port (lowered to fit the
    /// open-files limit).
    #[arg(long, env = "STASH_MAX_CONNECTIONS", default_value_t = conn::DEFAULT_MAX_CONNECTIONS, value_parser = parse_cap)]
    pub max_connections: usize,
    /// Open connections at most on the probe port (lowered to fit the
    /// open-files limit).
    #[arg(long, env = "STASH_PROBE_MAX_CONNECTIONS", default_value_t = conn::DEFAULT_PROBE_MAX_CONNECTIONS, value_parser = parse_cap)]
    pub probe_max_connections: usize,
    /// Create a development CA and serving certificate at the certificate
    /// paths when neither file exists (the default with `--offline` and the
    /// default paths).
    #[arg(long, env = "STASH_DEV_CERTIFICATE")]
    pub dev_certificate: bool,
}

/// A connection cap: a whole number of at least 1.
fn parse_cap(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

/// Creates the development CA and serving certificate next to `cert` when
/// neither `cert` nor `key` exists (the embedded default).
fn bootstrap_dev_certificate(cert: &Path, key: &Path) -> anyhow::Result<()> {
    let dir = cert
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let ca_path = dir.join(crate::certs::CA_FILE);
    let bundle = crate::certs::generate(
        &crate::certs::dev_names(),
        crate::certs::Validity::default(),
    )?;
    crate::certs::write_bundle(&bundle, &ca_path, cert, key)?;
    tracing::info!(
        ca = %ca_path.display(),
        cert = %cert.display(),
        "created a development CA and serving certificate for localhost, 127.0.0.1 and ::1; trust it with curl --cacert {}",
        ca_path.display()
    );
    Ok(())
}

/// Checks that the serving pair exists, creating the development pair where
/// that is allowed: only the embedded default (`--offline` with the default
/// paths) or `--dev-certificate` may create certificates; any other missing
/// file is an error, never replaced by a self-made CA.
fn ensure_certificate(args: &Args) -> anyhow::Result<()> {
    let (cert, key) = (&args.tls_cert_file, &args.tls_key_file);
    let embedded_default = args.offline.is_some()
        && cert.as_path() == Path::new(DEFAULT_CERT_FILE)
        && key.as_path() == Path::new(DEFAULT_KEY_FILE);
    match (cert.exists(), key.exists()) {
        (true, true) => Ok(()),
        (false, false) if embedded_default || args.dev_certificate => {
            bootstrap_dev_certificate(cert, key)
        }
        (false, false) => anyhow::bail!(
            "no serving certificate at {} and {} (create them with `stash certs`, mount the webhook's TLS Secret, or pass --dev-certificate for a development pair)",
            cert.display(),
            key.display()
        ),
        (true, false) => anyhow::bail!(
            "the private key {} does not exist (its certificate {} does)",
            key.display(),
            cert.display()
        ),
        (false, true) => anyhow::bail!(
            "the certificate {} does not exist (its private key {} does)",
            cert.display(),
            key.display()
        ),
    }
}

fn pod_identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "stash-webhook".to_string())
}

/// Runs the subcommand.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let hup = drain::hangup();
    // Admission log lines are written off the request path; dropping the
    // guard on return writes out what is queued.
    let _logs = crate::telemetry::background();
    let settings = Settings {
        paused_session_policy: args.paused_session_policy.into(),
        image: args.image.clone(),
    };
    let (store, client) = load_store(args.offline.as_deref()).await?;
    ensure_certificate(&args)?;
    let running = start(config_from(&args, &settings), store.clone()).await?;
    // Every task drains itself on the server's one drain signal, holding its
    // handle until it has; none is aborted.
    let mut background = Vec::new();
    if let Some(hup) = hup {
        background.push((
            "the SIGHUP handler",
            crate::server::hangup::reload_on_hangup(
                hup,
                running.tls.clone(),
                running.metrics.clone(),
                running.drain(),
            ),
        ));
    }
    if let Some(client) = client {
        background.extend(spawn_cluster_tasks(
            &running, client, store, &args, settings,
        ));
    }
    let signal = drain::signal().await;
    tracing::info!(signal, delay = ?args.shutdown_delay, "shutting down: not ready, then draining in-flight requests");
    running.begin_shutdown();
    wait_shutdown_delay(args.shutdown_delay).await;
    let draining = running.drain_ports().await;
    wait_released(&draining, &background).await;
    tracing::info!("stopped");
    Ok(())
}

/// The store: the YAML of `--offline DIR`, or an empty one the feed fills
/// from the API server (with the client for it).
async fn load_store(offline: Option<&Path>) -> anyhow::Result<(Arc<Store>, Option<kube::Client>)> {
    match offline {
        Some(dir) => {
            let loaded = crate::store::offline::load(dir)?;
            for problem in &loaded.problems {
                tracing::warn!(%problem, "offline store");
            }
            tracing::info!(
                dir = %dir.display(),
                backupconfigurations = loaded.snapshot.config_count(),
                repositories = loaded.snapshot.repository_count(),
                "offline store loaded"
            );
            Ok((Arc::new(Store::from_snapshot(loaded.snapshot)), None))
        }
        None => {
            let client = kube::Client::try_default().await.context(
                "cannot reach the API server (use --offline DIR to run without a cluster)",
            )?;
            Ok((Arc::new(Store::default()), Some(client)))
        }
    }
}

/// The server's [`Config`] from the flags, connection caps fitted to the
/// open-files limit.
fn config_from(args: &Args, settings: &Settings) -> Config {
    let mut config = Config::new(
        args.listen,
        args.probe_listen,
        args.tls_cert_file.clone(),
        args.tls_key_file.clone(),
    );
    config.tls.client_ca = args.client_ca_file.clone();
    config.tls.http2 = !args.disable_http2;
    config.settings = settings.clone();
    config.limits.max_request_time = args.max_request_time;
    config.limits.body_budget = args.body_budget;
    config.header_read_timeout = args.header_read_timeout;
    config.drain_timeout = args.drain_timeout;
    config.cert_poll_interval = args.cert_poll_interval;
    config.idle_timeout = args.idle_timeout;
    (config.max_connections, config.probe_max_connections) = connection_caps(args);
    config
}

/// `--max-connections` and `--probe-max-connections`, lowered (with a
/// warning) to fit the open-files limit once it is raised as far as allowed.
fn connection_caps(args: &Args) -> (usize, usize) {
    let asked = (args.max_connections, args.probe_max_connections);
    let Some(limit) = conn::raise_fd_limit() else {
        return asked;
    };
    let fitted = conn::fit_caps(limit, asked.0, asked.1);
    if fitted != asked {
        tracing::warn!(
            open_files_limit = limit,
            max_connections = fitted.0,
            probe_max_connections = fitted.1,
            "connection caps lowered to fit the open-files limit"
        );
    }
    fitted
}

/// A task holding a handle on the drain, named for the log.
type Background = (&'static str, JoinHandle<()>);

/// Cluster mode: the store feed and, unless `--reconcile=false`, the
/// reconciler, each on its own task with its handle on the drain, held
/// until the task has drained.
fn spawn_cluster_tasks(
    running: &Running,
    client: kube::Client,
    store: Arc<Store>,
    args: &Args,
    settings: Settings,
) -> Vec<Background> {
    let (feed, feeder) = crate::runtime::feed::new(store);
    let mut tasks = vec![(
        "the store feed",
        tokio::spawn(feeder.run(client.clone(), running.after_webhooks())),
    )];
    if args.reconcile {
        let rc = crate::reconcile::ReconcilerConfig {
            image: args.image.clone(),
            namespace: reconciler_namespace(args.namespace.clone()),
            identity: pod_identity(),
            settings,
            metrics: Some(running.metrics.backups.leading.clone()),
        };
        // `run` is told to drain by a handle of its own; this one is held
        // until it has returned, its work finished and its Lease released.
        let held = running.drain();
        let drain = held.clone().into_signaled();
        let reconciler = tokio::spawn(async move {
            if let Err(e) = crate::reconcile::run(client, rc, feed, drain).await {
                tracing::error!(
                    error = format!("{e:#}"),
                    "reconciler stopped; webhooks keep serving"
                );
            }
            held.release();
        });
        tasks.push(("the reconciler", reconciler));
    }
    tasks
}

/// Namespace of the reconciler's Lease: `--namespace`, else POD_NAMESPACE,
/// else stash-system.
fn reconciler_namespace(flag: Option<String>) -> String {
    flag.or_else(|| {
        std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|s| !s.is_empty())
    })
    .unwrap_or_else(|| "stash-system".to_string())
}

/// `--shutdown-delay` between turning not-ready and closing the listener; a
/// second SIGTERM/SIGINT cuts it short.
async fn wait_shutdown_delay(delay: Duration) {
    if delay.is_zero() {
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        second = drain::signal() => tracing::info!(signal = second, "second signal: skipping the delay"),
    }
}

/// Waits for every handle on the drain to be released (the background
/// tasks have drained: the reconciler has released its Lease); past
/// [`RELEASE_LIMIT`], names what still holds on and gives up on it.
async fn wait_released(draining: &crate::server::Draining, background: &[Background]) {
    if tokio::time::timeout(RELEASE_LIMIT, draining.released())
        .await
        .is_ok()
    {
        return;
    }
    let still_running: Vec<&str> = background
        .iter()
        .filter(|(_, task)| !task.is_finished())
        .map(|(name, _)| *name)
        .collect();
    tracing::warn!(
        limit = ?RELEASE_LIMIT,
        handles_held = draining.held(),
        ?still_running,
        "the drain was not released in time; exiting anyway"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::lease;

    #[test]
    fn the_reconciler_releases_its_drain_within_the_last_resort() {
        // Its work's drain, then the Lease's release, both bounded by the
        // Lease code, fit in the last-resort bound with room to spare.
        assert!(lease::WORK_DRAIN_LIMIT + lease::RELEASE_TIMEOUT < RELEASE_LIMIT);
    }
}
