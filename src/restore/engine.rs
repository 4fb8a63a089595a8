//! One host's restore, without Kubernetes: the rule, the Repository and the
//! mounted Secret in, this host's `status.stats[]` entry out. The restic
//! environment is built exactly as `run-backup` builds it
//! ([`crate::backup::repository::prepare`]), so a repository the sidecar
//! can write, the init container can read.

use std::path::Path;
use std::time::Instant;

use crate::api::{HostRestorePhase, HostRestoreStats, Repository, RestoreRule};
use crate::backup::ResticSettings;
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
    let started = Instant::now();
    let result = run(rule, repository, secret_dir, host, settings, target).await;
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
) -> Result<(), String> {
    let restic = prepare(&repository.spec.backend, secret_dir, settings)
        .map_err(|e| format!("cannot set up restic: {e}"))?;
    let target = target.to_string_lossy();
    for selection in selections(rule, host) {
        match selection {
            Selection::Snapshot(id) => {
                run_restore(&restic, &restore_args(&id, &target, None, None)).await?;
            }
            Selection::LatestOfPath { host, path } => {
                run_restore(
                    &restic,
                    &restore_args("latest", &target, Some(&host), Some(&path)),
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
                    run_restore(&restic, &restore_args(&s.id, &target, None, None)).await?;
                }
            }
        }
    }
    Ok(())
}

async fn run_restore(restic: &Restic, args: &[String]) -> Result<(), String> {
    restic.run(args).await.map(drop).map_err(|e| e.to_string())
}
