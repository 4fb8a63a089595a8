//! The sidecar's writes to the API server: this host's entry in the
//! BackupSession status subresource (claim, then result) and the Repository
//! status totals, all with the resourceVersion they were decided on. The
//! claim is a compare-and-swap that the caller re-decides on conflict; the
//! result and the totals are read-modify-write retried on conflict (and, a
//! few times, on transient errors), so that a finished host is never left
//! unreported.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::api::{BackupSession, HostBackupPhase, HostBackupStats, Repository};

use super::engine::RepositoryTotals;
use super::session::host_phase;
use super::status::{repository_patch, upsert_host};

/// How often a status write is tried before giving up.
pub const WRITE_ATTEMPTS: u32 = 8;

fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 409 || s.code == 429 || s.code >= 500,
        _ => true,
    }
}

async fn pause(attempt: u32, e: &kube::Error) {
    // Conflicts are retried at once; other errors back off (100 ms, 200 ms, … ≤ 5 s).
    if matches!(e, kube::Error::Api(s) if s.code == 409) {
        return;
    }
    let ms = (100u64 << attempt.min(6)).min(5_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Writes `entry` into `status.stats[]` of `current` (status subresource),
/// on the condition that the session is still at `current`'s
/// resourceVersion: `Ok(None)` when it is not (409), and the caller decides
/// again on the latest. Transient errors are retried with the same
/// precondition, so a retry never writes over a change it has not seen.
pub async fn write_entry(
    api: &Api<BackupSession>,
    current: &BackupSession,
    entry: &HostBackupStats,
) -> Result<Option<BackupSession>, kube::Error> {
    let name = current.metadata.name.as_deref().unwrap_or_default();
    let mut next = current.clone();
    next.status = Some(upsert_host(current.status.as_ref(), entry.clone()));
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api
            .replace_status(name, &PostParams::default(), &next)
            .await
        {
            Ok(s) => return Ok(Some(s)),
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(None),
            Err(e) if attempt < WRITE_ATTEMPTS && retryable(&e) => {
                tracing::debug!(session = name, attempt, error = %e, "retrying status write");
                pause(attempt, &e).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Replaces this host's claim in BackupSession `name` with its result
/// `entry`, reading the latest state first and retrying on conflict.
/// `Ok(None)` when the latest state no longer holds this host's claim
/// (another replica reported the run interrupted): the result is not
/// written over theirs.
pub async fn report_over_claim(
    api: &Api<BackupSession>,
    name: &str,
    entry: &HostBackupStats,
) -> Result<Option<BackupSession>, kube::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let latest = match api.get_status(name).await {
            Ok(s) => s,
            Err(e) if attempt < WRITE_ATTEMPTS && retryable(&e) => {
                pause(attempt, &e).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if host_phase(&latest, &entry.hostname) != Some(Some(HostBackupPhase::Running)) {
            return Ok(None);
        }
        if let Some(written) = write_entry(api, &latest, entry).await? {
            return Ok(Some(written));
        }
        if attempt >= WRITE_ATTEMPTS {
            let message = format!("BackupSession {name} kept changing");
            return Err(kube::Error::Api(
                kube::core::Status::failure(&message, "Conflict")
                    .with_code(409)
                    .boxed(),
            ));
        }
    }
}

/// Writes the totals into Repository `name`'s status.
pub async fn write_repository_totals(
    api: &Api<Repository>,
    name: &str,
    totals: &RepositoryTotals,
) -> Result<Repository, kube::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            let repo = api.get_status(name).await?;
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            let patch = repository_patch(
                repo.status.as_ref(),
                totals,
                &now,
                repo.metadata.resource_version.as_deref(),
            );
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        }
        .await;
        match result {
            Ok(r) => return Ok(r),
            Err(e) if attempt < WRITE_ATTEMPTS && retryable(&e) => {
                tracing::debug!(repository = name, attempt, error = %e, "retrying status write");
                pause(attempt, &e).await;
            }
            Err(e) => return Err(e),
        }
    }
}
