//! The thin Kubernetes layer: watch this invoker's BackupSessions, decide
//! per session ([`super::session::decide`]), back up with
//! [`super::engine::backup_host`], and report (status, events, metrics).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
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

use super::cluster::{write_host_stats, write_repository_totals};
use super::engine::{HostBackupOutcome, LockHolders, NoLockHolders, backup_host_with};
use super::leader::Turns;
use super::locks::PodLockHolders;
use super::metrics::{Labels, Metrics};
use super::repository::ResticSettings;
use super::session::{Decision, decide, settled};
use crate::recorder::{EventType, Recorder};

/// What happened to one session.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// Nothing to do.
    Ignored(&'static str),
    /// Skipped because the invoker is paused (counted in the metrics; the
    /// BackupSession controller marks it Skipped and records the event).
    Skipped,
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
            skipped: Mutex::new(HashSet::new()),
        }
    }

    /// Sets this pod's name (see [`super::locks::PodLockHolders`]).
    pub fn with_pod_name(mut self, pod_name: &str) -> Self {
        self.pod_name = Some(pod_name.to_string());
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

    /// Watches this invoker's BackupSessions and handles each, one at a time.
    pub async fn watch(&self) -> anyhow::Result<()> {
        let api: Api<BackupSession> = Api::namespaced(self.client.clone(), &self.namespace);
        let config = watcher::Config::default().labels(&session_selector(&self.invoker_name));
        let mut sessions = watcher(api, config)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(item) = sessions.next().await {
            match item {
                Ok(session) => {
                    let name = session.name_any();
                    match self.handle(&session).await {
                        Ok(Handled::Ignored(why)) => {
                            tracing::debug!(session = %name, why, "ignored")
                        }
                        Ok(Handled::Skipped) => {
                            tracing::info!(session = %name, "skipped: Backup Configuration is paused")
                        }
                        Ok(Handled::BackedUp(o)) => {
                            tracing::info!(session = %name, phase = ?o.stats.phase, "reported")
                        }
                        Err(e) => {
                            tracing::error!(session = %name, error = %format!("{e:#}"), "cannot handle BackupSession")
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching BackupSessions"),
            }
        }
        anyhow::bail!("the BackupSession watch ended")
    }

    /// Handles one session: ignore, skip (paused) or back up and report.
    pub async fn handle(&self, session: &BackupSession) -> anyhow::Result<Handled> {
        // Finished sessions (most of what a restart replays) cost no API call.
        if let Some(why) = settled(session, &self.invoker_name) {
            return Ok(Handled::Ignored(why));
        }
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
            return Ok(Handled::Ignored("the BackupConfiguration does not exist"));
        };
        if let Some(target) = &config.spec.target
            && (target.target_ref.kind != self.target_kind
                || target.target_ref.name != self.target_name)
        {
            return Ok(Handled::Ignored(
                "the BackupConfiguration targets another workload",
            ));
        }
        let host = self.host_for(&config);
        match decide(session, &config, &host) {
            Decision::Ignore(why) => Ok(Handled::Ignored(why)),
            Decision::Skip => {
                // The guide's one `BackupSessionSkipped` event is the
                // BackupSession controller's, written with the Skipped
                // phase; a second one from here would make `kubectl
                // describe` depend on which watch saw the session first.
                let uid = session.uid().unwrap_or_else(|| session.name_any());
                if self.skipped.lock().await.insert(uid) {
                    let repo = config
                        .spec
                        .repository
                        .as_ref()
                        .map(|r| r.name.clone())
                        .unwrap_or_default();
                    self.metrics.record_skip(&self.labels(&host, &repo));
                }
                Ok(Handled::Skipped)
            }
            Decision::Backup => {
                let outcome = match &self.turns {
                    Some(turns) => match turns.hold(self.back_up(&config, &host)).await {
                        Ok(o) => o,
                        Err(e) => failed(&host, e.to_string()),
                    },
                    None => self.back_up(&config, &host).await,
                };
                self.report(session, &config, &host, &outcome).await?;
                Ok(Handled::BackedUp(Box::new(outcome)))
            }
        }
    }

    async fn back_up(&self, config: &BackupConfiguration, host: &str) -> HostBackupOutcome {
        let Some(repo_name) = config.spec.repository.as_ref().map(|r| r.name.clone()) else {
            return failed(host, "the BackupConfiguration names no repository".into());
        };
        let repos: Api<Repository> = Api::namespaced(self.client.clone(), &self.namespace);
        let repository = match repos.get_opt(&repo_name).await {
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
        let started = Instant::now();
        let judge = self.pod_name.as_ref().map(|own| PodLockHolders {
            pods: Api::namespaced(self.client.clone(), &self.namespace),
            own_pod: own.clone(),
            target_name: self.target_name.clone(),
        });
        let holders: &dyn LockHolders = match &judge {
            Some(j) => j,
            None => &NoLockHolders,
        };
        let outcome = backup_host_with(
            config,
            &repository,
            &self.secret_dir,
            host,
            &self.settings,
            holders,
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
        session: &BackupSession,
        config: &BackupConfiguration,
        host: &str,
        outcome: &HostBackupOutcome,
    ) -> anyhow::Result<()> {
        let name = session.name_any();
        let sessions: Api<BackupSession> = Api::namespaced(self.client.clone(), &self.namespace);
        write_host_stats(&sessions, &name, &outcome.stats)
            .await
            .map_err(|e| anyhow::anyhow!("cannot write the status of BackupSession {name}: {e}"))?;
        if let (Some(totals), Some(repo)) = (&outcome.totals, &config.spec.repository) {
            let repos: Api<Repository> = Api::namespaced(self.client.clone(), &self.namespace);
            if let Err(e) = write_repository_totals(&repos, &repo.name, totals).await {
                tracing::error!(repository = %repo.name, error = %e, "cannot write the Repository status");
            }
        }
        let (type_, reason, message) = if outcome.succeeded() {
            (
                EventType::Normal,
                REASON_HOST_BACKUP_SUCCEEDED,
                host_backup_succeeded_message(host),
            )
        } else {
            (
                EventType::Warning,
                REASON_HOST_BACKUP_FAILED,
                host_backup_failed_message(
                    host,
                    outcome.stats.error.as_deref().unwrap_or("unknown"),
                ),
            )
        };
        self.recorder
            .publish_or_log(&session.object_ref(&()), type_, reason, &message)
            .await;
        Ok(())
    }
}

fn failed(host: &str, error: String) -> HostBackupOutcome {
    HostBackupOutcome {
        stats: HostBackupStats {
            hostname: host.to_string(),
            phase: Some(HostBackupPhase::Failed),
            error: Some(error),
            ..Default::default()
        },
        totals: None,
        initialized: false,
        summaries: Vec::new(),
    }
}
