//! The sidecar's writes to the API server: this host's entry in the
//! BackupSession status subresource and the Repository status totals, both
//! read-modify-write with the object's resourceVersion and retried on
//! conflict (and, a few times, on transient errors), so that a finished host
//! is never left unreported.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::api::{BackupSession, HostBackupStats, Repository};

use super::engine::RepositoryTotals;
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

/// Writes `entry` into `status.stats[]` of BackupSession `name` (status subresource).
pub async fn write_host_stats(
    api: &Api<BackupSession>,
    name: &str,
    entry: &HostBackupStats,
) -> Result<BackupSession, kube::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            let mut session = api.get_status(name).await?;
            session.status = Some(upsert_host(session.status.as_ref(), entry.clone()));
            api.replace_status(name, &PostParams::default(), &session)
                .await
        }
        .await;
        match result {
            Ok(s) => return Ok(s),
            Err(e) if attempt < WRITE_ATTEMPTS && retryable(&e) => {
                tracing::debug!(session = name, attempt, error = %e, "retrying status write");
                pause(attempt, &e).await;
            }
            Err(e) => return Err(e),
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
