//! The thin Kubernetes layer: reconcile this invoker's BackupSessions,
//! decide per session on its latest state ([`super::session::decide`]),
//! claim the host, back up with [`super::engine::backup_host`], and report
//! (status, events, metrics).
//!
//! Exactly one restic run per (session, host): the claim (this host's
//! entry with `phase: Running`) is written with the resourceVersion the
//! decision was made on, so a second look at the session, from a late,
//! duplicated or replayed event, finds the host taken. A claim found with
//! no run behind it (the sidecar restarted, the previous leader went away)
//! is reported Failed as interrupted and not run again (see
//! [`super::session::Decision::Interrupted`]).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::Mutex;

use crate::api::events::{
    REASON_HOST_BACKUP_FAILED, REASON_HOST_BACKUP_SUCCEEDED, host_backup_failed_message,
    host_backup_succeeded_message,
};
use crate::api::{
    BackupConfiguration, BackupSession, HostBackupPhase, HostBackupStats,
    LABEL_BACKUP_CONFIGURATION, Repository,
};

use super::cluster::{WRITE_ATTEMPTS, report_over_claim, write_entry, write_repository_totals};
use super::engine::{HostBackupOutcome, NoLockHolders, backup_host_with, check_integrity};
use super::locks::{PodLockHolders, ReportWaits};
use super::metrics::{Labels, Metrics};
use super::repository::ResticSettings;
use super::session::{Decision, INTERRUPTED, deadline, decide, runs_integrity_check, settled};
use super::status::{DEFAULT_CHECK_INTERVAL, integrity_check_due};
use crate::recorder::{EventType, Recorder};
use crate::runtime::lease::Turns;

/// What happened to one session.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// Nothing to do.
    Ignored(&'static str),
    /// Skipped because the invoker is paused (counted in the metrics; the
    /// BackupSession controller marks it Skipped and records the event).
    Skipped,
    /// This host's claim had no run behind it: reported Failed, restic not run.
    Interrupted,
    /// Backed up (successfully or not) and reported.
    BackedUp(Box<HostBackupOutcome>),
}

/// Everything the session loop needs.
pub struct Sidecar {
    pub client: kube::Client,
    pub namespace: String,
    pub invoker_name: String,
    pub target_kind: String,
    pub target_name: String,
    pub host: String,
    pub secret_dir: PathBuf,
    pub settings: ResticSettings,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Set for StatefulSet/DaemonSet: hold the Lease around each backup.
    pub turns: Option<Turns>,
    /// This pod's name; with it, locks left by deleted pods of the workload are cleared.
    pub pod_name: Option<String>,
    /// `restic check` runs at most once per this long per Repository
    /// (`--check-interval`; zero: after every session).
    pub check_interval: Duration,
    skipped: Mutex<HashSet<String>>,
}

/// The label selector of this invoker's sessions.
pub fn session_selector(invoker_name: &str) -> String {
    format!("{LABEL_BACKUP_CONFIGURATION}={invoker_name}")
}

impl Sidecar {
    /// A sidecar for one invoker and target in `namespace`, backing up as `host`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        namespace: String,
        invoker_name: String,
        target_kind: String,
        target_name: String,
        host: String,
        secret_dir: PathBuf,
        settings: ResticSettings,
        recorder: Recorder,
        metrics: Metrics,
        turns: Option<Turns>,
    ) -> Self {
        Self {
            client,
            namespace,
            invoker_name,
            target_kind,
            target_name,
            host,
            secret_dir,
            settings,
            recorder,
            metrics,
            turns,
            pod_name: None,
            check_interval: DEFAULT_CHECK_INTERVAL,
            skipped: Mutex::new(HashSet::new()),
        }
    }

    /// Sets this pod's name (see [`super::locks::PodLockHolders`]).
    pub fn with_pod_name(mut self, pod_name: &str) -> Self {
        self.pod_name = Some(pod_name.to_string());
        self
    }

    /// Sets how often `restic check` runs per Repository (see [`integrity_check_due`]).
    pub fn with_check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// The restic host for `config`: its target's `alias` if set, else this pod's default.
    pub fn host_for(&self, config: &BackupConfiguration) -> String {
        config
            .spec
            .target
            .as_ref()
            .and_then(|t| t.alias.as_deref())
            .filter(|a| !a.is_empty())
            .unwrap_or(&self.host)
            .to_string()
    }

    fn labels(&self, host: &str, repository: &str) -> Labels {
        Labels {
            namespace: self.namespace.clone(),
            invoker: self.invoker_name.clone(),
            host: host.to_string(),
            repository: repository.to_string(),
        }
    }

    /// Reconciles this invoker's BackupSessions until the watch ends, one
    /// session at a time (restic runs are never concurrent).
    ///
    /// kube-runtime's `Controller` reconciles by key from its store, so a
    /// burst of events for one session is one pass over its latest state;
    /// and [`Sidecar::handle`] acts only through writes that carry the
    /// resourceVersion it decided on, so a stale store costs a conflict and
    /// a fresh read, never a second restic run.
    pub async fn watch(self: Arc<Self>) -> anyhow::Result<()> {
        let api: Api<BackupSession> = Api::namespaced(self.client.clone(), &self.namespace);
        let config = watcher::Config::default().labels(&session_selector(&self.invoker_name));
        let stop = self.settings.stop.clone();
        Controller::new(api, config)
            .with_config(controller::Config::default().concurrency(1))
            // On SIGTERM: no new session; the one in hand is reported (its restic interrupted).
            .graceful_shutdown_on(async move {
                stop.stopped().await;
            })
            .run(reconcile, error_policy, self.clone())
            .for_each(|res| async move {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "BackupSession reconcile");
                }
            })
            .await;
        if self.settings.stop.is_stopping() {
            return Ok(());
        }
        anyhow::bail!("the BackupSession watch ended")
    }

    /// Handles one session: ignore, skip (paused), or claim this host, back
    /// up and report. `seen` may be stale (a watch event, a store entry):
    /// every write carries its resourceVersion, and on a conflict the
    /// session is read again and decided anew.
    pub async fn handle(&self, seen: &BackupSession) -> anyhow::Result<Handled> {
        // Finished sessions (most of what a restart replays) cost no API call.
        if let Some(why) = settled(seen, &self.invoker_name) {
            return Ok(Handled::Ignored(why));
        }
        let config = match self.own_config().await? {
            Ok(config) => config,
            Err(why) => return Ok(Handled::Ignored(why)),
        };
        let host = self.host_for(&config);
        let name = seen.name_any();
        let sessions: Api<BackupSession> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut current = seen.clone();
        for _ in 0..WRITE_ATTEMPTS {
            let entry = match decide(&current, &config, &host, jiff::Timestamp::now()) {
                Decision::Ignore(why) => return Ok(Handled::Ignored(why)),
                Decision::Skip => {
                    self.count_skip(&current, &config, &host).await;
                    return Ok(Handled::Skipped);
                }
                Decision::Backup => claim(&host),
                Decision::Interrupted => failed(&host, INTERRUPTED.to_string()),
            };
            let written = write_entry(&sessions, &current, &entry)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot write the status of BackupSession {name}: {e}")
                })?;
            let Some(written) = written else {
                // Someone wrote the session since `current` was read: decide on the latest.
                match self.read_session(&sessions, &name).await? {
                    Some(latest) => current = latest,
                    None => return Ok(Handled::Ignored("deleted")),
                }
                continue;
            };
            return self.act_on_claim(&written, &config, &host, &entry).await;
        }
        anyhow::bail!(
            "BackupSession {}/{name} kept changing while this host tried to claim it",
            self.namespace
        )
    }

    /// The invoker's BackupConfiguration, or why the session is not this
    /// sidecar's to handle (it does not exist, or targets another workload).
    async fn own_config(&self) -> anyhow::Result<Result<BackupConfiguration, &'static str>> {
        let configs: Api<BackupConfiguration> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let Some(config) = configs.get_opt(&self.invoker_name).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot read BackupConfiguration {}/{}: {e}",
                self.namespace,
                self.invoker_name
            )
        })?
        else {
            return Ok(Err("the BackupConfiguration does not exist"));
        };
        if let Some(target) = &config.spec.target
            && (target.target_ref.kind != self.target_kind
                || target.target_ref.name != self.target_name)
        {
            return Ok(Err("the BackupConfiguration targets another workload"));
        }
        Ok(Ok(config))
    }

    /// The session as it is now; `None` if it was deleted.
    async fn read_session(
        &self,
        sessions: &Api<BackupSession>,
        name: &str,
    ) -> anyhow::Result<Option<BackupSession>> {
        sessions.get_opt(name).await.map_err(|e| {
            anyhow::anyhow!("cannot read BackupSession {}/{name}: {e}", self.namespace)
        })
    }

    /// After this host's entry was written: reports an earlier run that
    /// never did as Failed, or backs up (in its turn, if turns are taken)
    /// and reports.
    async fn act_on_claim(
        &self,
        written: &BackupSession,
        config: &BackupConfiguration,
        host: &str,
        entry: &HostBackupStats,
    ) -> anyhow::Result<Handled> {
        let name = written.name_any();
        if entry.phase == Some(HostBackupPhase::Failed) {
            tracing::warn!(session = %name, host, "an earlier run of this host never reported; marked Failed, not run again");
            self.publish(written, host, entry).await;
            return Ok(Handled::Interrupted);
        }
        let by = deadline(written, config, jiff::Timestamp::now());
        tracing::info!(session = %name, host, deadline = %by, "claimed; backing up");
        let outcome = match &self.turns {
            Some(turns) => match turns
                .hold_unless(
                    self.back_up_by(written, config, host, by),
                    self.settings.stop.stopped(),
                )
                .await
            {
                Ok(o) => o,
                Err(e) => failed_outcome(host, e.to_string()),
            },
            None => self.back_up_by(written, config, host, by).await,
        };
        self.report(written, config, host, &outcome).await?;
        Ok(Handled::BackedUp(Box::new(outcome)))
    }

    /// Counts a skip once per session (the BackupSession controller writes the
    /// guide's one `BackupSessionSkipped` event with the Skipped phase; a
    /// second one from here would make `kubectl describe` depend on which
    /// watch saw the session first).
    async fn count_skip(&self, session: &BackupSession, config: &BackupConfiguration, host: &str) {
        let uid = session.uid().unwrap_or_else(|| session.name_any());
        if self.skipped.lock().await.insert(uid) {
            let repo = config
                .spec
                .repository
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_default();
            self.metrics.record_skip(&self.labels(host, &repo));
        }
    }

    /// [`Sidecar::back_up`], stopped [`STOP_GRACE`] after the session's
    /// deadline `by`: restic is killed (its child is dropped) and the host
    /// reported Failed. At the deadline itself the BackupSession controller
    /// marks the session Failed (`DeadlineExceeded`) and this host's claim
    /// with it, so the report that follows finds the claim gone and writes
    /// nothing over that verdict; the grace lets the controller say it
    /// first, and the host is still reported should the controller not run.
    /// The lock the killed restic leaves is this host's, which the next
    /// run's `restic unlock` removes.
    async fn back_up_by(
        &self,
        session: &BackupSession,
        config: &BackupConfiguration,
        host: &str,
        by: jiff::Timestamp,
    ) -> HostBackupOutcome {
        let left = Duration::try_from(by.duration_since(jiff::Timestamp::now()))
            .unwrap_or_default()
            + STOP_GRACE;
        match tokio::time::timeout(left, self.back_up(session, config, host)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::warn!(host, deadline = %by, "the session's deadline passed during the backup; restic stopped");
                failed_outcome(host, deadline_exceeded(by))
            }
        }
    }

    /// The lock judge of this sidecar (pods of the namespace, if it knows its
    /// own pod), its waits recorded as events on `session`.
    fn lock_judge<'a>(
        &'a self,
        pods: &'a Option<PodLockHolders>,
        session: &BackupSession,
    ) -> ReportWaits<'a> {
        ReportWaits {
            judge: match pods {
                Some(j) => j,
                None => &NoLockHolders,
            },
            recorder: &self.recorder,
            regarding: session.object_ref(&()),
        }
    }

    fn pod_judge(&self) -> Option<PodLockHolders> {
        self.pod_name.as_ref().map(|own| PodLockHolders {
            pods: Api::namespaced(self.client.clone(), &self.namespace),
            own_pod: own.clone(),
            target_name: self.target_name.clone(),
        })
    }

    async fn back_up(
        &self,
        session: &BackupSession,
        config: &BackupConfiguration,
        host: &str,
    ) -> HostBackupOutcome {
        let Some(repo_name) = config.spec.repository.as_ref().map(|r| r.name.clone()) else {
            return failed_outcome(host, "the BackupConfiguration names no repository".into());
        };
        let repos: Api<Repository> = Api::namespaced(self.client.clone(), &self.namespace);
        let repository = match repos.get_opt(&repo_name).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return failed_outcome(
                    host,
                    format!("Repository {}/{repo_name} not found", self.namespace),
                );
            }
            Err(e) => {
                return failed_outcome(
                    host,
                    format!("cannot read Repository {}/{repo_name}: {e}", self.namespace),
                );
            }
        };
        let started = Instant::now();
        let pods = self.pod_judge();
        let holders = self.lock_judge(&pods, session);
        let outcome = backup_host_with(
            config,
            &repository,
            &self.secret_dir,
            host,
            &self.settings,
            &holders,
        )
        .await;
        self.metrics.record(
            &self.labels(host, &repo_name),
            &outcome,
            started.elapsed().as_secs_f64(),
        );
        outcome
    }

    async fn report(
        &self,
        claimed: &BackupSession,
        config: &BackupConfiguration,
        host: &str,
        outcome: &HostBackupOutcome,
    ) -> anyhow::Result<()> {
        let name = claimed.name_any();
        let sessions: Api<BackupSession> = Api::namespaced(self.client.clone(), &self.namespace);
        let reported = report_over_claim(&sessions, &name, &outcome.stats)
            .await
            .map_err(|e| anyhow::anyhow!("cannot write the status of BackupSession {name}: {e}"))?;
        let Some(reported) = reported else {
            tracing::warn!(session = %name, host, "this host's claim was taken over while it backed up (marked interrupted by another replica); its result is not written");
            return Ok(());
        };
        if let (Some(totals), Some(repo)) = (&outcome.totals, &config.spec.repository) {
            let mut totals = *totals;
            // A stopping pod writes what it has and leaves `check` to a later session.
            if runs_integrity_check(&reported) && !self.settings.stop.is_stopping() {
                totals.integrity = self.check_integrity(&reported, &repo.name, host).await;
            }
            let repos: Api<Repository> = Api::namespaced(self.client.clone(), &self.namespace);
            if let Err(e) = write_repository_totals(&repos, &repo.name, &totals).await {
                tracing::error!(repository = %repo.name, error = %e, "cannot write the Repository status");
            }
        }
        self.publish(&reported, host, &outcome.stats).await;
        Ok(())
    }

    /// `restic check` for the Repository's INTEGRITY column, run by the
    /// session's last host to finish (see [`runs_integrity_check`]), at most
    /// once per [`Sidecar::check_interval`] per Repository (see
    /// [`integrity_check_due`]), in this process's turn like the backup itself.
    async fn check_integrity(
        &self,
        session: &BackupSession,
        repo_name: &str,
        host: &str,
    ) -> Option<bool> {
        let repos: Api<Repository> = Api::namespaced(self.client.clone(), &self.namespace);
        let repository = match repos.get_opt(repo_name).await {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(repository = repo_name, error = %e, "integrity check not run: cannot read the Repository");
                return None;
            }
        };
        if !integrity_check_due(
            repository.status.as_ref(),
            jiff::Timestamp::now(),
            self.check_interval,
        ) {
            tracing::debug!(repository = repo_name, interval = ?self.check_interval, "integrity checked recently; not checking");
            return None;
        }
        let pods = self.pod_judge();
        let holders = self.lock_judge(&pods, session);
        let check = check_integrity(&repository, &self.secret_dir, &self.settings, &holders);
        let intact = match &self.turns {
            Some(turns) => turns.hold(check).await.ok().flatten(),
            None => check.await,
        };
        if let Some(intact) = intact {
            self.metrics
                .record_integrity(&self.labels(host, repo_name), intact);
        }
        intact
    }

    /// The sidecar's event for this host's result.
    async fn publish(&self, session: &BackupSession, host: &str, entry: &HostBackupStats) {
        let (type_, reason, message) = if entry.phase == Some(HostBackupPhase::Succeeded) {
            (
                EventType::Normal,
                REASON_HOST_BACKUP_SUCCEEDED,
                host_backup_succeeded_message(host),
            )
        } else {
            (
                EventType::Warning,
                REASON_HOST_BACKUP_FAILED,
                host_backup_failed_message(host, entry.error.as_deref().unwrap_or("unknown")),
            )
        };
        self.recorder
            .publish_or_log(&session.object_ref(&()), type_, reason, &message)
            .await;
    }
}

/// The Controller's reconcile: the session as the store holds it now.
async fn reconcile(
    session: Arc<BackupSession>,
    sidecar: Arc<Sidecar>,
) -> Result<Action, HandleError> {
    let name = session.name_any();
    match sidecar.handle(&session).await {
        Ok(Handled::Ignored(why)) => tracing::debug!(session = %name, why, "ignored"),
        Ok(Handled::Skipped) => {
            tracing::info!(session = %name, "skipped: Backup Configuration is paused")
        }
        Ok(Handled::Interrupted) => {
            tracing::info!(session = %name, "reported interrupted")
        }
        Ok(Handled::BackedUp(o)) => {
            tracing::info!(session = %name, phase = ?o.stats.phase, "reported")
        }
        Err(e) => return Err(HandleError(format!("{e:#}"))),
    }
    Ok(Action::await_change())
}

/// A failed pass over one session, retried by `error_policy`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandleError(String);

fn error_policy(session: Arc<BackupSession>, err: &HandleError, _: Arc<Sidecar>) -> Action {
    tracing::error!(session = %session.name_any(), error = %err, "cannot handle BackupSession; retrying in 10s");
    Action::requeue(RETRY)
}

/// How long a session whose pass failed (API server unreachable, …) waits.
const RETRY: Duration = Duration::from_secs(10);

/// How long past the session's deadline restic may still run before the
/// sidecar stops it (see `Sidecar::back_up_by`).
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// This host's claim: its entry with `phase: Running`, written before restic starts.
fn claim(host: &str) -> HostBackupStats {
    HostBackupStats {
        hostname: host.to_string(),
        phase: Some(HostBackupPhase::Running),
        ..Default::default()
    }
}

/// The error of a host whose backup the session's deadline stopped.
pub fn deadline_exceeded(by: jiff::Timestamp) -> String {
    format!(
        "deadline exceeded: the session's deadline {by} passed during the backup; restic was stopped"
    )
}

fn failed_outcome(host: &str, error: String) -> HostBackupOutcome {
    HostBackupOutcome {
        stats: failed(host, error),
        totals: None,
        initialized: false,
        summaries: Vec::new(),
    }
}

fn failed(host: &str, error: String) -> HostBackupStats {
    HostBackupStats {
        hostname: host.to_string(),
        phase: Some(HostBackupPhase::Failed),
        error: Some(error),
        ..Default::default()
    }
}
