//! The backup of one host for one session, without Kubernetes: configuration,
//! repository and secret directory in, this host's stats and the repository
//! totals out. The watch/lease loop is a thin layer on top of this.
//!
//! Sequence (as Stash rc.2, issue 5): open the repository (`unlock`, which
//! also clears locks left by killed runs; `init` when it does not exist yet),
//! one `backup` per path, `forget` with the retention policy, `stats`.
//! Every failure ends the run with a Failed host entry whose error is one
//! complete line.
//!
//! Locks: `restic unlock` removes locks whose process is gone *on this host*
//! or that are older than 30 minutes. A lock left by another pod that was
//! killed mid-backup (a Deployment's old leader, a drained node) survives
//! that and blocks `forget` for half an hour. So when a step fails and the
//! repository holds locks, each lock's holder is judged ([`LockHolders`]);
//! if every holder is gone for good, the locks are removed and the step is
//! tried once more. With no judge (plain [`backup_host`]) nothing beyond
//! restic's own rule is removed.

use std::path::Path;
use std::time::Instant;

use futures::future::BoxFuture;

use crate::api::{
    BackupConfiguration, FileStats, HostBackupPhase, HostBackupStats, Repository, SnapshotStats,
};

use super::repository::{ResticSettings, prepare};
use super::restic::{
    BackupSummary, Integrity, Restic, ResticError, format_bytes, format_duration, item_errors,
};

/// Repository figures after a successful run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RepositoryTotals {
    /// Bytes stored in the repository (`restic stats --mode raw-data`).
    pub size_bytes: u64,
    /// Snapshots in the repository after retention.
    pub snapshot_count: u64,
    /// Snapshots `forget` removed (or would remove, with `dryRun`); `None` without a policy.
    pub snapshots_removed: Option<u64>,
    /// What `restic check` found; `None` when this host did not check (see
    /// [`check_integrity`]) or the check could not run.
    pub integrity: Option<bool>,
}

/// The result of [`backup_host`].
#[derive(Debug, Clone, PartialEq)]
pub struct HostBackupOutcome {
    /// This host's entry for `BackupSession.status.stats[]`.
    pub stats: HostBackupStats,
    /// Repository totals; `None` when the run failed before `stats`.
    pub totals: Option<RepositoryTotals>,
    /// Whether this run created the repository.
    pub initialized: bool,
    /// Raw per-path figures, for metrics.
    pub summaries: Vec<BackupSummary>,
}

impl HostBackupOutcome {
    /// Whether the host's backup succeeded.
    pub fn succeeded(&self) -> bool {
        self.stats.phase == Some(HostBackupPhase::Succeeded)
    }
}

fn snapshot_stats(path: &str, s: &BackupSummary) -> SnapshotStats {
    let count = |n: u64| Some(i64::try_from(n).unwrap_or(i64::MAX));
    SnapshotStats {
        name: s.snapshot_id.clone(),
        path: path.to_string(),
        size: Some(format_bytes(s.total_bytes_processed)),
        uploaded: Some(format_bytes(s.data_added)),
        processing_time: Some(format_duration(std::time::Duration::from_secs_f64(
            s.total_duration.max(0.0),
        ))),
        file_stats: Some(FileStats {
            total_files: count(s.total_files_processed),
            new_files: count(s.files_new),
            modified_files: count(s.files_changed),
            unmodified_files: count(s.files_unmodified),
        }),
    }
}

/// Opens the repository, creating it when it does not exist yet, and clears
/// stale locks. `restic unlock` doubles as the existence and password check
/// (each restic command pays a key derivation, so one probe instead of
/// `snapshots` + `unlock` saves about half a second per run). Returns whether
/// the repository was created.
async fn open_repository(restic: &Restic) -> Result<bool, String> {
    match restic.unlock().await {
        Ok(()) => Ok(false),
        Err(ResticError::NoRepository { message, .. }) => match restic.init().await {
            Ok(()) => Ok(true),
            Err(e) => Err(format!("{e} (restic unlock said: {message})")),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// Judges whether the holder of a restic lock (the lock's hostname) is gone
/// for good, so that its locks can be removed.
pub trait LockHolders: Sync {
    /// True only when `hostname` certainly runs no restic any more.
    fn is_gone<'a>(&'a self, hostname: &'a str) -> BoxFuture<'a, bool>;
}

/// Judges no holder gone: only restic's own stale rule applies.
pub struct NoLockHolders;

impl LockHolders for NoLockHolders {
    fn is_gone<'a>(&'a self, _hostname: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async { false })
    }
}

/// Removes every lock if there are some and all their holders are gone.
/// Returns whether locks were removed.
async fn clear_abandoned_locks(restic: &Restic, holders: &dyn LockHolders) -> bool {
    let Ok(ids) = restic.list_locks().await else {
        return false;
    };
    if ids.is_empty() {
        return false;
    }
    let mut names = Vec::new();
    for id in &ids {
        let Ok(lock) = restic.lock_info(id).await else {
            return false;
        };
        if !holders.is_gone(&lock.hostname).await {
            return false;
        }
        names.push(lock.hostname);
    }
    match restic.remove_all_locks().await {
        Ok(()) => {
            tracing::warn!(holders = ?names, "removed restic locks left by pods that are gone");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot remove abandoned restic locks");
            false
        }
    }
}

/// `restic check` of `repository` for its INTEGRITY column: `Some(true)` when
/// no errors were found, `Some(false)` when restic found errors (logged with
/// restic's report), `None` when the check could not run at all (a lock held
/// by someone else, an unreachable backend: logged; the column keeps its
/// previous value, since such a failure says nothing about the data).
pub async fn check_integrity(
    repository: &Repository,
    secret_dir: &Path,
    settings: &ResticSettings,
) -> Option<bool> {
    let name = repository.metadata.name.as_deref().unwrap_or_default();
    let restic = match prepare(&repository.spec.backend, secret_dir, settings) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(repository = name, error = %e, "integrity check not run: cannot set up restic");
            return None;
        }
    };
    match restic.check().await {
        Ok(Integrity::Intact) => {
            tracing::info!(repository = name, "integrity check: no errors were found");
            Some(true)
        }
        Ok(Integrity::Damaged(report)) => {
            tracing::error!(repository = name, report = %report, "integrity check: the repository contains errors");
            Some(false)
        }
        Err(e) => {
            tracing::warn!(repository = name, error = %e, "integrity check could not run; INTEGRITY left as it was");
            None
        }
    }
}

/// Backs up `host`'s paths of `config` into `repository`, credentials from `secret_dir`.
/// Never fails: a failure is a Failed host entry with a one-line error.
pub async fn backup_host(
    config: &BackupConfiguration,
    repository: &Repository,
    secret_dir: &Path,
    host: &str,
    settings: &ResticSettings,
) -> HostBackupOutcome {
    backup_host_with(
        config,
        repository,
        secret_dir,
        host,
        settings,
        &NoLockHolders,
    )
    .await
}

/// [`backup_host`], with `holders` to judge locks left by other hosts.
pub async fn backup_host_with(
    config: &BackupConfiguration,
    repository: &Repository,
    secret_dir: &Path,
    host: &str,
    settings: &ResticSettings,
    holders: &dyn LockHolders,
) -> HostBackupOutcome {
    let started = Instant::now();
    let mut out = HostBackupOutcome {
        stats: HostBackupStats {
            hostname: host.to_string(),
            ..Default::default()
        },
        totals: None,
        initialized: false,
        summaries: Vec::new(),
    };
    let result = run(
        config, repository, secret_dir, host, settings, holders, &mut out,
    )
    .await;
    out.stats.duration = Some(format_duration(started.elapsed()));
    match result {
        Ok(totals) => {
            out.stats.phase = Some(HostBackupPhase::Succeeded);
            out.totals = Some(totals);
        }
        Err(reason) => {
            tracing::warn!(host, error = %reason, "backup failed");
            out.stats.phase = Some(HostBackupPhase::Failed);
            out.stats.error = Some(reason.replace('\n', " "));
        }
    }
    out
}

/// The host's error for a failed `restic backup` of `path`: for files
/// restic could not read, what they are and how to let the sidecar read
/// them ([`super::unreadable`]); otherwise restic's own words.
fn backup_failure(config: &BackupConfiguration, path: &str, e: &ResticError) -> String {
    if let ResticError::Failed {
        command, message, ..
    } = e
        && command == "backup"
    {
        let items = item_errors(message);
        let name = format!(
            "{}/{}",
            config.metadata.namespace.as_deref().unwrap_or_default(),
            config.metadata.name.as_deref().unwrap_or_default()
        );
        if let Some(line) = super::unreadable::report(&items, &name) {
            return line;
        }
    }
    format!("backup of {path}: {e}")
}

async fn run(
    config: &BackupConfiguration,
    repository: &Repository,
    secret_dir: &Path,
    host: &str,
    settings: &ResticSettings,
    holders: &dyn LockHolders,
    out: &mut HostBackupOutcome,
) -> Result<RepositoryTotals, String> {
    let target = config
        .spec
        .target
        .as_ref()
        .ok_or("the BackupConfiguration has no target")?;
    if target.paths.is_empty() {
        return Err("the BackupConfiguration's target has no paths to back up".to_string());
    }
    let restic = prepare(&repository.spec.backend, secret_dir, settings)
        .map_err(|e| format!("cannot set up restic: {e}"))?;
    out.initialized = open_repository(&restic).await?;

    for path in &target.paths {
        let mut attempt = restic
            .backup(path, host, &target.exclude, settings.enable_cache)
            .await;
        if attempt.is_err() && clear_abandoned_locks(&restic, holders).await {
            attempt = restic
                .backup(path, host, &target.exclude, settings.enable_cache)
                .await;
        }
        let summary = attempt.map_err(|e| backup_failure(config, path, &e))?;
        tracing::info!(host, path = %path, snapshot = %summary.snapshot_id,
            uploaded = summary.data_added, "snapshot taken");
        out.stats.snapshots.push(snapshot_stats(path, &summary));
        out.summaries.push(summary);
    }

    let mut totals = RepositoryTotals::default();
    if let Some(policy) = &config.spec.retention_policy {
        let mut attempt = restic.forget(policy).await;
        if attempt.is_err() && clear_abandoned_locks(&restic, holders).await {
            attempt = restic.forget(policy).await;
        }
        let forget = attempt.map_err(|e| format!("retention policy {:?}: {e}", policy.name))?;
        totals.snapshots_removed = forget.map(|f| f.removed);
    }
    let stats = restic.stats().await.map_err(|e| e.to_string())?;
    totals.size_bytes = stats.total_size;
    totals.snapshot_count = stats.snapshots_count;
    Ok(totals)
}
