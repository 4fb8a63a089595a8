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
//! or that are older than 30 minutes. Every command that takes a lock runs
//! through [`super::locks::retry_on_lock`]: locks whose holders are all gone
//! for good are removed, a live holder is waited for (`--lock-wait`), never
//! removed. With no judge (plain [`backup_host`]) only restic's own rule
//! applies, and a live holder is still waited for.
//!
//! Stop: a restic command interrupted by the process's stop (SIGTERM) ends
//! the run with the host Failed, `interrupted: the pod is stopping (SIGTERM)
//! during restic <command>`; restic has removed its lock on the way out.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::api::{
    BackupConfiguration, FileStats, HostBackupPhase, HostBackupStats, Repository, SnapshotStats,
};

use super::locks::retry_on_lock;
pub use super::locks::{LockHolders, NoLockHolders};
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

/// `what: error`, but an interruption as it is (it names the command already).
pub fn in_context(what: &str, e: ResticError) -> String {
    match e {
        ResticError::Interrupted { .. } => e.to_string(),
        e => format!("{what}: {e}"),
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
    holders: &dyn LockHolders,
) -> Option<bool> {
    let name = repository.metadata.name.as_deref().unwrap_or_default();
    let restic = match prepare(&repository.spec.backend, secret_dir, settings) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(repository = name, error = %e, "integrity check not run: cannot set up restic");
            return None;
        }
    };
    // Not waited for: a live holder's lock means "check on a later session".
    match retry_on_lock(&restic, holders, Duration::ZERO, || restic.check()).await {
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
fn backup_failure(config: &BackupConfiguration, path: &str, e: ResticError) -> String {
    if let ResticError::Failed {
        command, message, ..
    } = &e
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
    in_context(&format!("backup of {path}"), e)
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

    let wait = settings.lock_wait;
    for path in &target.paths {
        let summary = retry_on_lock(&restic, holders, wait, || {
            restic.backup(path, host, &target.exclude, settings.enable_cache)
        })
        .await
        .map_err(|e| backup_failure(config, path, e))?;
        tracing::info!(host, path = %path, snapshot = %summary.snapshot_id,
            uploaded = summary.data_added, "snapshot taken");
        out.stats.snapshots.push(snapshot_stats(path, &summary));
        out.summaries.push(summary);
    }

    let mut totals = RepositoryTotals::default();
    if let Some(policy) = &config.spec.retention_policy {
        let forget = retry_on_lock(&restic, holders, wait, || restic.forget(policy))
            .await
            .map_err(|e| in_context(&format!("retention policy {:?}", policy.name), e))?;
        totals.snapshots_removed = forget.map(|f| f.removed);
    }
    let stats = retry_on_lock(&restic, holders, wait, || restic.stats())
        .await
        .map_err(|e| e.to_string())?;
    totals.size_bytes = stats.total_size;
    totals.snapshot_count = stats.snapshots_count;
    Ok(totals)
}
