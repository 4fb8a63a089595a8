//! `stash run-backup`: the injected sidecar that backs up with restic.
//!
//! Layers, from the bottom:
//! - [`restic`]: restic's argument lists and JSON (pure) and running it;
//! - [`repository`]: `RESTIC_REPOSITORY`, credentials and flags from the
//!   Repository's backend and the mounted Secret;
//! - [`engine::backup_host`]: one host's backup for one session, no cluster;
//! - [`session`], [`status`], [`host`]: pure decisions (act on which session,
//!   what to write, who am I);
//! - [`controller`], [`cluster`], [`crate::recorder`], [`crate::runtime::lease`], [`metrics`]: the
//!   thin Kubernetes layer (watch, status writes, events, Lease, /metrics).

pub mod cluster;
pub mod controller;
pub mod engine;
pub mod locks;
pub mod metrics;
pub mod repository;
pub mod restic;
pub mod status;
pub mod unreadable;

pub use stash_core::backup::{host, session};

use std::net::SocketAddr;

use anyhow::Context as _;

pub use engine::{
    HostBackupOutcome, LockHolders, NoLockHolders, RepositoryTotals, backup_host, backup_host_with,
};
pub use repository::ResticSettings;

use crate::api::INVOKER_KIND_BACKUP_CONFIGURATION;
use crate::api::events::COMPONENT_SIDECAR;
use crate::cli::InjectedArgs;
use crate::runtime::lease::LeaseTiming;
use crate::runtime::stop::Stop;

/// Command-line arguments (the injected container passes the first six).
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("namespace", |a| a.help("Namespace of the workload (downward API)")))]
pub struct Args {
    /// Kind of the invoker; only BackupConfiguration exists in the sidecar model.
    #[arg(long, env = "STASH_INVOKER_KIND", default_value = INVOKER_KIND_BACKUP_CONFIGURATION)]
    pub invoker_kind: String,
    /// Name of the BackupConfiguration whose sessions this sidecar runs.
    #[arg(long, env = "STASH_INVOKER_NAME")]
    pub invoker_name: String,
    /// Kind of the workload: Deployment, StatefulSet, DaemonSet or ReplicaSet.
    #[arg(long, env = "STASH_TARGET_KIND")]
    pub target_kind: String,
    /// Name of the workload.
    #[arg(long, env = "STASH_TARGET_NAME")]
    pub target_name: String,
    /// The Secret, restic and this pod, as `stash restore` has them.
    #[command(flatten)]
    pub pod: InjectedArgs,
    /// Where to serve Prometheus metrics; `off` disables them.
    #[arg(long, env = "STASH_METRICS_LISTEN", default_value = "0.0.0.0:56790")]
    pub metrics_listen: String,
    /// Lease duration in seconds (a dead leader is replaced after this long).
    #[arg(long, env = "STASH_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration: u64,
    /// Seconds a restic command waits for a repository lock held by a live
    /// host (a lock whose host is gone is removed at once).
    #[arg(long, env = "STASH_LOCK_WAIT", default_value_t = locks::DEFAULT_LOCK_WAIT.as_secs())]
    pub lock_wait: u64,
    /// Seconds between two `restic check` runs of one Repository (0: after
    /// every session).
    #[arg(long, env = "STASH_CHECK_INTERVAL", default_value_t = status::DEFAULT_CHECK_INTERVAL.as_secs())]
    pub check_interval: u64,
}

/// Runs the subcommand.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.invoker_kind != INVOKER_KIND_BACKUP_CONFIGURATION {
        anyhow::bail!(
            "--invoker-kind={} is not supported (only {INVOKER_KIND_BACKUP_CONFIGURATION})",
            args.invoker_kind
        );
    }
    let election = host::election(&args.target_kind)?;
    // First, so that a SIGTERM during start-up is a stop, not a kill.
    let stop = Stop::on_signals();
    let client = kube::Client::try_default()
        .await
        .context("cannot connect to the Kubernetes API server")?;
    let metrics = serve_metrics(&args.metrics_listen)?;
    // Checked before the Lease is taken, so a misconfigured sidecar fails at once.
    let first = sidecar_with_stop(&args, client.clone(), metrics.clone(), None, &stop)?;
    tracing::info!(
        invoker = %args.invoker_name, target = %format!("{}/{}", args.target_kind, args.target_name),
        host = %first.host, lease = %host::lease_name(&args.target_kind, &args.target_name),
        "starting run-backup"
    );
    let work = async {
        match election {
            host::Election::Leader => lead(&args, client, first, &stop).await,
            host::Election::TakeTurns => take_turns(&args, client, metrics, &stop).await,
        }
    };
    tokio::select! {
        result = work => {
            if let Some(signal) = stop.reason() {
                tracing::info!(signal, "stopped");
            }
            result
        }
        () = stop.budget_spent() => {
            tracing::warn!(budget = ?crate::runtime::stop::STOP_BUDGET, "the stop took too long; exiting without waiting further");
            Ok(())
        }
    }
}

/// The sidecar's metrics, served on `listen` (`host:port`, or `off`) in
/// the background: a port clash with the workload must not stop backups, so
/// a failure to serve is logged and backups go on.
fn serve_metrics(listen: &str) -> anyhow::Result<metrics::Metrics> {
    let metrics = metrics::Metrics::new();
    if listen != "off" {
        let addr: SocketAddr = listen
            .parse()
            .with_context(|| format!("--metrics-listen={listen} is not host:port"))?;
        let m = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = m.serve(addr).await {
                tracing::error!(error = %format!("{e:#}"), "metrics disabled");
            }
        });
    }
    Ok(metrics)
}

/// The Lease timing of `--lease-duration` (seconds, at least 3), renewed a
/// third of it before expiry: `run-backup`'s and `restore`'s.
pub fn lease_timing(seconds: u64) -> LeaseTiming {
    LeaseTiming {
        duration: seconds.max(3),
        grace: (seconds / 3).max(1),
    }
}

/// One pod backs up for the workload: `sidecar` watches sessions while
/// this pod holds the workload's Lease, until `stop`.
async fn lead(
    args: &Args,
    client: kube::Client,
    sidecar: controller::Sidecar,
    stop: &Stop,
) -> anyhow::Result<()> {
    let sidecar = std::sync::Arc::new(sidecar);
    let candidate = crate::runtime::lease::Candidate::backup(
        client,
        &args.pod.namespace,
        &host::lease_name(&args.target_kind, &args.target_name),
        &args.pod.pod_name,
        lease_timing(args.lease_duration),
    );
    let stopped = async {
        stop.stopped().await;
    };
    crate::runtime::lease::while_leader_until(candidate, || sidecar.clone().watch(), stopped).await
}

/// Every pod backs up its own host, one at a time: the workload's Lease is
/// taken for each backup.
async fn take_turns(
    args: &Args,
    client: kube::Client,
    metrics: metrics::Metrics,
    stop: &Stop,
) -> anyhow::Result<()> {
    let turns = crate::runtime::lease::Turns::new(
        client.clone(),
        &args.pod.namespace,
        &host::lease_name(&args.target_kind, &args.target_name),
        &args.pod.pod_name,
        lease_timing(args.lease_duration),
    )
    .await?;
    std::sync::Arc::new(sidecar_with_stop(args, client, metrics, Some(turns), stop)?)
        .watch()
        .await
}

/// restic as `pod`'s flags and `--lock-wait` set it up, interrupted on
/// `stop`: `run-backup`'s and `restore`'s. A missing restic is a one-line
/// error.
pub fn restic_settings(
    pod: &InjectedArgs,
    lock_wait: u64,
    stop: &Stop,
) -> anyhow::Result<ResticSettings> {
    let binary = restic::resolve_binary(&pod.restic_binary, std::env::var_os("PATH").as_deref())
        .with_context(|| {
            format!(
                "restic executable {} not found (install restic or set --restic-binary)",
                pod.restic_binary.display()
            )
        })?;
    Ok(ResticSettings {
        binary,
        scratch_dir: pod.scratch_dir.clone(),
        enable_cache: pod.enable_cache,
        stop: stop.clone(),
        lock_wait: std::time::Duration::from_secs(lock_wait),
    })
}

/// The session loop `run-backup` runs for `args`: this pod's default restic
/// host, the restic executable and scratch directory, the `Backup Sidecar`
/// event recorder. No API call; an unknown target kind or a missing restic
/// is a one-line error.
pub fn sidecar(
    args: &Args,
    client: kube::Client,
    metrics: metrics::Metrics,
    turns: Option<crate::runtime::lease::Turns>,
) -> anyhow::Result<controller::Sidecar> {
    sidecar_with_stop(args, client, metrics, turns, &Stop::new())
}

/// [`sidecar`], its restic runs interrupted on `stop`.
pub fn sidecar_with_stop(
    args: &Args,
    client: kube::Client,
    metrics: metrics::Metrics,
    turns: Option<crate::runtime::lease::Turns>,
    stop: &Stop,
) -> anyhow::Result<controller::Sidecar> {
    let node = args.pod.node();
    // The configuration's alias (if any) is read per session; the default identity is fixed.
    let alias_free_host = host::host_name(&args.target_kind, Some(&args.pod.pod_name), node, None)?;
    let settings = restic_settings(&args.pod, args.lock_wait, stop)?;
    let recorder = crate::recorder::Recorder::new(client.clone(), COMPONENT_SIDECAR)
        .on_host(node.map(String::from));
    Ok(controller::Sidecar::new(
        client,
        args.pod.namespace.clone(),
        args.invoker_name.clone(),
        args.target_kind.clone(),
        args.target_name.clone(),
        alias_free_host,
        args.pod.secret_dir.clone(),
        settings,
        recorder,
        metrics,
        turns,
    )
    .with_pod_name(&args.pod.pod_name)
    .with_check_interval(std::time::Duration::from_secs(args.check_interval)))
}
