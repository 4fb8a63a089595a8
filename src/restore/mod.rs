//! `stash restore`: the `stash-init` init container that restores a
//! workload's volumes from a RestoreSession's Repository before the pod's
//! own containers start.
//!
//! Layers, as in `run-backup`: [`mod@decide`] (pure: rule, restic selections,
//! what to do with the session's latest state), [`engine`] (one host's restic
//! restore, no cluster), [`init`] (the pure planner that injects this
//! container), and below the thin Kubernetes layer: the Lease, the claim and
//! the result written with resourceVersion preconditions, events.
//!
//! Who restores: every pod's init container takes the workload's Lease
//! `lock-<kind>-<name>-restore` in turn and decides while holding it. The
//! replicas of a Deployment or ReplicaSet share one volume and one host
//! (`host-0`): the first to get the Lease claims `host-0` and restores; the
//! others wait on the Lease and then find `host-0` Succeeded and start
//! without restoring. StatefulSet pods (`host-<ordinal>`) and DaemonSet pods
//! (the node name) each restore their own host, one at a time. A `Running`
//! entry found while holding the Lease has no run behind it (its claimer
//! holds the Lease while it restores): it is reported Failed as interrupted.
//!
//! Exit status: 0 when the host restored (now or before), when no rule names
//! it, or when the RestoreSession is gone; non-zero with the one-line reason
//! when the restore failed (the pod stays in Init, as in Stash).

pub mod engine;

pub use stash_core::restore::{decide, init};

use std::path::PathBuf;

use anyhow::Context as _;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};

use crate::api::events::{
    COMPONENT_RESTORE_INIT, REASON_HOST_RESTORE_FAILED, REASON_HOST_RESTORE_SUCCEEDED,
    host_restore_failed_message, host_restore_succeeded_message,
};
use crate::api::{HostRestorePhase, HostRestoreStats, Repository, RestoreSession};
use crate::backup::locks::{PodLockHolders, ReportWaits};
use crate::backup::{ResticSettings, host, lease_timing, restic_settings};
use crate::cli::InjectedArgs;
use crate::recorder::{EventType, Recorder};
use crate::runtime::lease::Turns;
use crate::runtime::stop::Stop;

use decide::{Decision, INTERRUPTED, decide, upsert_host};

/// Command-line arguments (the injected init container passes the first two).
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("node_name", |a| a.help("This pod's node: the host name of a DaemonSet's restores (downward API)")))]
pub struct Args {
    /// Name of the RestoreSession (in the pod's namespace).
    #[arg(long, env = "STASH_RESTORESESSION")]
    pub restoresession: String,
    /// The Secret, restic and this pod, as `stash run-backup` has them.
    #[command(flatten)]
    pub pod: InjectedArgs,
    /// Where snapshots are restored: restic recreates their absolute paths under it.
    #[arg(long, env = "STASH_RESTORE_TARGET", default_value = "/")]
    pub target_dir: PathBuf,
    /// Lease duration in seconds (a dead holder is replaced after this long).
    #[arg(long, env = "STASH_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration: u64,
    /// Seconds a restic command waits for a repository lock held by a live
    /// host (a lock whose host is gone is removed at once).
    #[arg(long, env = "STASH_LOCK_WAIT", default_value_t = crate::backup::locks::DEFAULT_LOCK_WAIT.as_secs())]
    pub lock_wait: u64,
}

/// Name of the restore Lease: `lock-<kind>-<name>-restore`, lowercase.
pub fn lease_name(kind: &str, name: &str) -> String {
    format!("lock-{kind}-{name}-restore").to_lowercase()
}

/// How this host's turn ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Nothing was restored and nothing has to be (why).
    Done(&'static str),
    /// No rule names this host; reported `Unknown`.
    NoRule,
    /// Restored now; this host's entry as written.
    Restored(HostRestoreStats),
    /// Failed, now or before: the one-line reason.
    Failed(String),
}

/// Runs the subcommand: exit 0 lets the pod start.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // First, so that a SIGTERM during start-up is a stop, not a kill.
    let stop = Stop::on_signals();
    let client = kube::Client::try_default()
        .await
        .context("cannot connect to the Kubernetes API server")?;
    tokio::select! {
        result = run_with_stop(args, client, &stop) => result,
        () = stop.budget_spent() => anyhow::bail!(
            "stopped ({}): the restore did not finish reporting within {}s",
            stop.reason().unwrap_or("stop"),
            crate::runtime::stop::STOP_BUDGET.as_secs()
        ),
    }
}

/// [`run`] on a given client (the pod's ServiceAccount): what the init
/// container does once it is connected.
pub async fn run_with(args: Args, client: kube::Client) -> anyhow::Result<()> {
    run_with_stop(args, client, &Stop::new()).await
}

/// [`run_with`], restic interrupted and this host reported Failed on `stop`.
pub async fn run_with_stop(args: Args, client: kube::Client, stop: &Stop) -> anyhow::Result<()> {
    let restorer = Restorer::new(&args, client.clone(), stop)?;
    let Some(rs) = restorer.get().await? else {
        tracing::info!(restoresession = %args.restoresession, "the RestoreSession does not exist; nothing to restore");
        return Ok(());
    };
    let target = rs.target_ref().cloned().with_context(|| {
        format!(
            "RestoreSession {}/{} has no spec.target.ref",
            args.pod.namespace, args.restoresession
        )
    })?;
    let host = host::host_name(
        &target.kind,
        Some(&args.pod.pod_name),
        args.pod.node_name.as_deref(),
        None,
    )?;
    let lease = lease_name(&target.kind, &target.name);
    let turns = Turns::new(
        client,
        &args.pod.namespace,
        &lease,
        &args.pod.pod_name,
        lease_timing(args.lease_duration),
    )
    .await?;
    tracing::info!(restoresession = %args.restoresession, host, lease, "waiting for the restore Lease");
    let judge = PodLockHolders {
        pods: Api::namespaced(restorer.client.clone(), &args.pod.namespace),
        own_pod: args.pod.pod_name.clone(),
        target_name: target.name.clone(),
    };
    let outcome = turns
        .hold_unless(restorer.turn(&host, &judge), stop.stopped())
        .await??;
    finish(&host, outcome)
}

/// The exit status of a turn: failures are an error naming the host.
pub fn finish(host: &str, outcome: Outcome) -> anyhow::Result<()> {
    match outcome {
        Outcome::Done(why) => {
            tracing::info!(host, why, "nothing to restore");
            Ok(())
        }
        Outcome::NoRule => {
            tracing::info!(
                host,
                "no rule of the RestoreSession names this host; reported Unknown"
            );
            Ok(())
        }
        Outcome::Restored(entry) => {
            tracing::info!(
                host,
                duration = entry.duration.as_deref().unwrap_or(""),
                "restored"
            );
            Ok(())
        }
        Outcome::Failed(reason) => anyhow::bail!("restore failed for host {host}: {reason}"),
    }
}

/// The Kubernetes side of one init container.
pub struct Restorer {
    pub client: kube::Client,
    pub namespace: String,
    pub name: String,
    pub secret_dir: PathBuf,
    pub settings: ResticSettings,
    pub target_dir: PathBuf,
    pub recorder: Recorder,
}

impl Restorer {
    /// The restorer for `args`; no API call. A missing restic is a one-line error.
    pub fn new(args: &Args, client: kube::Client, stop: &Stop) -> anyhow::Result<Self> {
        let settings = restic_settings(&args.pod, args.lock_wait, stop)?;
        let node = args.pod.node().map(String::from);
        Ok(Self {
            recorder: Recorder::new(client.clone(), COMPONENT_RESTORE_INIT).on_host(node),
            client,
            namespace: args.pod.namespace.clone(),
            name: args.restoresession.clone(),
            secret_dir: args.pod.secret_dir.clone(),
            settings,
            target_dir: args.target_dir.clone(),
        })
    }

    fn api(&self) -> Api<RestoreSession> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The RestoreSession as the API server has it now.
    pub async fn get(&self) -> anyhow::Result<Option<RestoreSession>> {
        self.api().get_opt(&self.name).await.with_context(|| {
            format!(
                "cannot read RestoreSession {}/{}",
                self.namespace, self.name
            )
        })
    }

    /// This host's turn, to be run while holding the restore Lease: decide on
    /// the latest state, claim with its resourceVersion (a conflict means
    /// read again and decide anew), restore, and replace the claim.
    pub async fn turn(&self, host: &str, judge: &PodLockHolders) -> anyhow::Result<Outcome> {
        for _ in 0..crate::backup::cluster::WRITE_ATTEMPTS {
            let Some(current) = self.get().await? else {
                return Ok(Outcome::Done("the RestoreSession does not exist"));
            };
            // Stopped before claiming: nothing is written, the next pod decides;
            // this one has not restored, so it does not exit 0.
            if let Some(signal) = self.settings.stop.reason() {
                anyhow::bail!(
                    "stopped ({signal}) before host {host} claimed the restore; nothing was restored or written"
                );
            }
            let (entry, outcome) = match decide(&current, host) {
                Decision::Done(why) => return Ok(Outcome::Done(why)),
                Decision::Failed(reason) => return Ok(Outcome::Failed(reason)),
                Decision::NoRule => (
                    HostRestoreStats {
                        hostname: host.to_string(),
                        phase: Some(HostRestorePhase::Unknown),
                        error: Some(
                            "no rule of the RestoreSession names this host; nothing restored"
                                .into(),
                        ),
                        ..Default::default()
                    },
                    Some(Outcome::NoRule),
                ),
                Decision::Interrupted => (
                    failed(host, INTERRUPTED.to_string()),
                    Some(Outcome::Failed(INTERRUPTED.to_string())),
                ),
                Decision::Restore(_) => (
                    HostRestoreStats {
                        hostname: host.to_string(),
                        phase: Some(HostRestorePhase::Running),
                        ..Default::default()
                    },
                    None,
                ),
            };
            let Some(claimed) = self.write_entry(&current, &entry).await? else {
                continue;
            };
            if let Some(outcome) = outcome {
                if entry.phase == Some(HostRestorePhase::Failed) {
                    self.publish(&claimed, host, &entry).await;
                }
                return Ok(outcome);
            }
            tracing::info!(restoresession = %self.name, host, "claimed; restoring");
            let result = self.restore(&claimed, host, judge).await;
            return match self.report_over_claim(&result).await? {
                Some(reported) => {
                    self.publish(&reported, host, &result).await;
                    Ok(match result.phase {
                        Some(HostRestorePhase::Succeeded) => Outcome::Restored(result),
                        _ => Outcome::Failed(result.error.unwrap_or_default()),
                    })
                }
                None => Ok(Outcome::Failed(
                    "this host's claim was taken over while it restored".to_string(),
                )),
            };
        }
        anyhow::bail!(
            "RestoreSession {}/{} kept changing while host {host} tried to claim it",
            self.namespace,
            self.name
        )
    }

    async fn restore(
        &self,
        rs: &RestoreSession,
        host: &str,
        judge: &PodLockHolders,
    ) -> HostRestoreStats {
        let Some(rule) = decide::rule_for(rs, host) else {
            return failed(host, "no rule of the RestoreSession names this host".into());
        };
        let Some(repo_name) = rs.repository_name() else {
            return failed(host, "the RestoreSession names no repository".into());
        };
        let repos: Api<Repository> = Api::namespaced(self.client.clone(), &self.namespace);
        let repository = match repos.get_opt(repo_name).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return failed(
                    host,
                    format!("Repository {}/{repo_name} not found", self.namespace),
                );
            }
            Err(e) => {
                return failed(
                    host,
                    format!("cannot read Repository {}/{repo_name}: {e}", self.namespace),
                );
            }
        };
        let holders = ReportWaits {
            judge,
            recorder: &self.recorder,
            regarding: rs.object_ref(&()),
        };
        engine::restore_host_with(
            rule,
            &repository,
            &self.secret_dir,
            host,
            &self.settings,
            &self.target_dir,
            &holders,
        )
        .await
    }

    /// Writes `entry` on the condition that the session is still at
    /// `current`'s resourceVersion: `Ok(None)` on a conflict.
    async fn write_entry(
        &self,
        current: &RestoreSession,
        entry: &HostRestoreStats,
    ) -> anyhow::Result<Option<RestoreSession>> {
        let mut next = current.clone();
        let mut status = current.status.clone().unwrap_or_default();
        status.stats = upsert_host(&status.stats, entry.clone());
        next.status = Some(status);
        match self
            .api()
            .replace_status(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => Ok(Some(written)),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(anyhow::anyhow!(
                "cannot write the status of RestoreSession {}/{}: {e}",
                self.namespace,
                self.name
            )),
        }
    }

    /// Replaces this host's claim with its result, reading the latest state
    /// first; `Ok(None)` if the claim is no longer there.
    async fn report_over_claim(
        &self,
        entry: &HostRestoreStats,
    ) -> anyhow::Result<Option<RestoreSession>> {
        for _ in 0..crate::backup::cluster::WRITE_ATTEMPTS {
            let Some(latest) = self.get().await? else {
                return Ok(None);
            };
            if latest.host_stats(&entry.hostname).and_then(|s| s.phase)
                != Some(HostRestorePhase::Running)
            {
                return Ok(None);
            }
            if let Some(written) = self.write_entry(&latest, entry).await? {
                return Ok(Some(written));
            }
        }
        anyhow::bail!(
            "RestoreSession {}/{} kept changing while host {} reported",
            self.namespace,
            self.name,
            entry.hostname
        )
    }

    async fn publish(&self, rs: &RestoreSession, host: &str, entry: &HostRestoreStats) {
        let (type_, reason, message) = if entry.phase == Some(HostRestorePhase::Succeeded) {
            (
                EventType::Normal,
                REASON_HOST_RESTORE_SUCCEEDED,
                host_restore_succeeded_message(host),
            )
        } else {
            (
                EventType::Warning,
                REASON_HOST_RESTORE_FAILED,
                host_restore_failed_message(host, entry.error.as_deref().unwrap_or("unknown")),
            )
        };
        self.recorder
            .publish_or_log(&rs.object_ref(&()), type_, reason, &message)
            .await;
        let _ = rs.name_any();
    }
}

fn failed(host: &str, error: String) -> HostRestoreStats {
    HostRestoreStats {
        hostname: host.to_string(),
        phase: Some(HostRestorePhase::Failed),
        error: Some(error),
        ..Default::default()
    }
}
