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
use std::path::PathBuf;

use anyhow::Context as _;

pub use engine::{
    HostBackupOutcome, LockHolders, NoLockHolders, RepositoryTotals, backup_host, backup_host_with,
};
pub use repository::ResticSettings;

use crate::api::INVOKER_KIND_BACKUP_CONFIGURATION;
use crate::api::events::COMPONENT_SIDECAR;

/// Command-line arguments (the injected container passes the first six).
#[derive(Debug, Clone, clap::Args)]
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
    /// Directory holding the Repository's storage Secret, one file per key.
    #[arg(
        long,
        env = "STASH_SECRET_DIR",
        default_value = "/etc/stash/repository/secret"
    )]
    pub secret_dir: PathBuf,
    /// Keep restic's cache in the scratch directory (false: `--no-cache`).
    #[arg(long, env = "STASH_ENABLE_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_cache: bool,
    /// Namespace of the workload (downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// This pod's name: Lease identity, StatefulSet ordinal (downward API).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: String,
    /// This pod's node: the host name of a DaemonSet's backups (downward API).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// restic executable, looked up on PATH unless it is a path.
    #[arg(long, env = "STASH_RESTIC_BINARY", default_value = "restic")]
    pub restic_binary: PathBuf,
    /// Writable directory for restic's cache and temporary files (the `tmp-dir` emptyDir).
    #[arg(long, env = "STASH_SCRATCH_DIR", default_value = "/tmp")]
    pub scratch_dir: PathBuf,
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
    let stop = crate::runtime::stop::Stop::on_signals();
    let client = kube::Client::try_default()
        .await
        .context("cannot connect to the Kubernetes API server")?;

    let metrics = metrics::Metrics::new();
    if args.metrics_listen != "off" {
        let addr: SocketAddr = args.metrics_listen.parse().with_context(|| {
            format!("--metrics-listen={} is not host:port", args.metrics_listen)
        })?;
        let m = metrics.clone();
        tokio::spawn(async move {
            // A port clash with the workload must not stop backups: log and go on.
            if let Err(e) = m.serve(addr).await {
                tracing::error!(error = %format!("{e:#}"), "metrics disabled");
            }
        });
    }

    let lease = host::lease_name(&args.target_kind, &args.target_name);
    let timing = crate::runtime::lease::LeaseTiming {
        duration: args.lease_duration.max(3),
        grace: (args.lease_duration / 3).max(1),
    };
    // Checked before the Lease is taken, so a misconfigured sidecar fails at once.
    let first = sidecar_with_stop(&args, client.clone(), metrics.clone(), None, &stop)?;
    tracing::info!(
        invoker = %args.invoker_name, target = %format!("{}/{}", args.target_kind, args.target_name),
        host = %first.host, lease = %lease, "starting run-backup"
    );
    let work = async {
        match election {
            host::Election::Leader => {
                let sidecar = std::sync::Arc::new(first);
                let candidate = crate::runtime::lease::Candidate::backup(
                    client.clone(),
                    &args.namespace,
                    &lease,
                    &args.pod_name,
                    timing,
                );
                let stopped = async {
                    stop.stopped().await;
                };
                crate::runtime::lease::while_leader_until(
                    candidate,
                    || sidecar.clone().watch(),
                    stopped,
                )
                .await
            }
            host::Election::TakeTurns => {
                let turns = crate::runtime::lease::Turns::new(
                    client.clone(),
                    &args.namespace,
                    &lease,
                    &args.pod_name,
                    timing,
                )
                .await?;
                std::sync::Arc::new(sidecar_with_stop(
                    &args,
                    client,
                    metrics,
                    Some(turns),
                    &stop,
                )?)
                .watch()
                .await
            }
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
    sidecar_with_stop(
        args,
        client,
        metrics,
        turns,
        &crate::runtime::stop::Stop::new(),
    )
}

/// [`sidecar`], its restic runs interrupted on `stop`.
pub fn sidecar_with_stop(
    args: &Args,
    client: kube::Client,
    metrics: metrics::Metrics,
    turns: Option<crate::runtime::lease::Turns>,
    stop: &crate::runtime::stop::Stop,
) -> anyhow::Result<controller::Sidecar> {
    let node = args.node_name.as_deref().filter(|n| !n.is_empty());
    // The configuration's alias (if any) is read per session; the default identity is fixed.
    let alias_free_host = host::host_name(&args.target_kind, Some(&args.pod_name), node, None)?;
    let binary = restic::resolve_binary(&args.restic_binary, std::env::var_os("PATH").as_deref())
        .with_context(|| {
        format!(
            "restic executable {} not found (install restic or set --restic-binary)",
            args.restic_binary.display()
        )
    })?;
    let settings = ResticSettings {
        binary,
        scratch_dir: args.scratch_dir.clone(),
        enable_cache: args.enable_cache,
        stop: stop.clone(),
        lock_wait: std::time::Duration::from_secs(args.lock_wait),
    };
    let recorder = crate::recorder::Recorder::new(client.clone(), COMPONENT_SIDECAR)
        .on_host(node.map(String::from));
    Ok(controller::Sidecar::new(
        client,
        args.namespace.clone(),
        args.invoker_name.clone(),
        args.target_kind.clone(),
        args.target_name.clone(),
        alias_free_host,
        args.secret_dir.clone(),
        settings,
        recorder,
        metrics,
        turns,
    )
    .with_pod_name(&args.pod_name)
    .with_check_interval(std::time::Duration::from_secs(args.check_interval)))
}
