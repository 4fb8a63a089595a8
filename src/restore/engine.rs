//! One host's restore, without Kubernetes: the rule, the Repository and the
//! mounted Secret in, this host's `status.stats[]` entry out. The restic
//! environment is built exactly as `run-backup` builds it
//! ([`crate::backup::repository::prepare`]), so a repository the sidecar
//! can write, the init container can read.
//!
//! Locks and stops as in the backup: every restic command runs through
//! [`crate::backup::locks::retry_on_lock`] (a lock left by a pod that is
//! gone is removed, a live holder is waited for), and a stop of the process
//! interrupts restic so that it removes its own lock.

use std::path::Path;
use std::time::Instant;

use crate::api::{HostRestorePhase, HostRestoreStats, Repository, RestoreRule};
use crate::backup::ResticSettings;
use crate::backup::locks::{LockHolders, NoLockHolders, retry_on_lock};
use crate::backup::repository::prepare;
use crate::backup::restic::{Restic, format_duration, parse_snapshots};

use super::decide::{Selection, latest_per_path_args, restore_args, selections};

/// Restores `rule` for `host` into `target` (`/` in a pod: restic recreates
/// each snapshot's absolute paths under it). Every failure is one line in the
/// returned entry's `error`.
pub async fn restore_host(
    rule: &RestoreRule,
    repository: &Repository,
    secret_dir: &Path,
    host: &str,
    settings: &ResticSettings,
    target: &Path,
) -> HostRestoreStats {
    restore_host_with(
        rule,
        repository,
        secret_dir,
        host,
        settings,
        target,
        &NoLockHolders,
    )
    .await
}

/// [`restore_host`], with `holders` to judge locks left by other hosts.
pub async fn restore_host_with(
    rule: &RestoreRule,
    repository: &Repository,
    secret_dir: &Path,
    host: &str,
    settings: &ResticSettings,
    target: &Path,
    holders: &dyn LockHolders,
) -> HostRestoreStats {
    let started = Instant::now();
    let result = run(
        rule, repository, secret_dir, host, settings, target, holders,
    )
    .await;
    let (phase, error) = match result {
        Ok(()) => (HostRestorePhase::Succeeded, None),
        Err(e) => (HostRestorePhase::Failed, Some(e)),
    };
    HostRestoreStats {
        hostname: host.to_string(),
        phase: Some(phase),
        duration: Some(format_duration(started.elapsed())),
        error,
    }
}

async fn run(
    rule: &RestoreRule,
    repository: &Repository,
    secret_dir: &Path,
    host: &str,
    settings: &ResticSettings,
    target: &Path,
    holders: &dyn LockHolders,
) -> Result<(), String> {
    let restic = prepare(&repository.spec.backend, secret_dir, settings)
        .map_err(|e| format!("cannot set up restic: {e}"))?;
    let target = target.to_string_lossy();
    let wait = settings.lock_wait;
    for selection in selections(rule, host) {
        match selection {
            Selection::Snapshot(id) => {
                run_restore(
                    &restic,
                    holders,
                    wait,
                    restore_args(&id, &target, None, None),
                )
                .await?;
            }
            Selection::LatestOfPath { host, path } => {
                run_restore(
                    &restic,
                    holders,
                    wait,
                    restore_args("latest", &target, Some(&host), Some(&path)),
                )
                .await?;
            }
            Selection::LatestOfHost(source) => {
                let out = restic
                    .run(&latest_per_path_args(&source))
                    .await
                    .map_err(|e| e.to_string())?;
                let snapshots = parse_snapshots(&out)
                    .map_err(|e| format!("cannot read the output of restic snapshots: {e}"))?;
                if snapshots.is_empty() {
                    return Err(format!(
                        "the repository holds no snapshot of host {source} (set the rule's sourceHost, paths or snapshots)"
                    ));
                }
                for s in snapshots {
                    run_restore(
                        &restic,
                        holders,
                        wait,
                        restore_args(&s.id, &target, None, None),
                    )
                    .await?;
                }
            }
        }
    }
    Ok(())
}

/// One `restic restore`, through the lock judge; a failure (an
/// interruption included) as one line.
async fn run_restore(
    restic: &Restic,
    holders: &dyn LockHolders,
    wait: std::time::Duration,
    args: Vec<String>,
) -> Result<(), String> {
    retry_on_lock(restic, holders, wait, || restic.run(&args))
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}
