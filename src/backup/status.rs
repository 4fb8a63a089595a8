//! The status the sidecar writes, computed purely from what is there now:
//! this host's entry in `BackupSession.status.stats[]`, and the totals in
//! `Repository.status`. The session's phase belongs to the reconciler and is
//! never touched here.
//!
//! The Repository's status also remembers when `restic check` last ran
//! (`lastIntegrityCheckTime`), so that it runs at most once per
//! `--check-interval` per Repository ([`integrity_check_due`]): `check`
//! takes restic's exclusive lock, which stops every other backup and restore
//! of a repository that several workloads may share.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use crate::api::{BackupSessionStatus, HostBackupStats, RepositoryStatus};

use super::engine::RepositoryTotals;
use super::restic::format_bytes;

/// How often `restic check` runs per Repository by default: once a day.
pub const DEFAULT_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Whether `restic check` is due for a Repository whose status is `status`,
/// at `now`: never checked, or last checked `interval` ago or more (a zero
/// interval: always; a check time in the future, from a skewed clock: due).
pub fn integrity_check_due(
    status: Option<&RepositoryStatus>,
    now: jiff::Timestamp,
    interval: std::time::Duration,
) -> bool {
    let Some(last) = status.and_then(|s| s.last_integrity_check_time.as_ref()) else {
        return true;
    };
    let Ok(interval) = jiff::SignedDuration::try_from(interval) else {
        return false;
    };
    let since = now.duration_since(last.0);
    since >= interval || since.is_negative()
}

/// `status` with this host's entry inserted or replaced (matched by hostname);
/// other hosts' entries and every other field are kept as they are.
pub fn upsert_host(
    status: Option<&BackupSessionStatus>,
    entry: HostBackupStats,
) -> BackupSessionStatus {
    let mut status = status.cloned().unwrap_or_default();
    match status
        .stats
        .iter_mut()
        .find(|h| h.hostname == entry.hostname)
    {
        Some(existing) => *existing = entry,
        None => status.stats.push(entry),
    }
    status
}

/// The merge patch for `Repository.status` after a successful run: size,
/// snapshot count, snapshots removed by the last cleanup, last backup time,
/// and the first backup time when there is none yet. `resource_version` makes
/// the patch fail with a conflict if the object changed since it was read.
pub fn repository_patch(
    current: Option<&RepositoryStatus>,
    totals: &RepositoryTotals,
    now: &Time,
    resource_version: Option<&str>,
) -> Value {
    let mut status = json!({
        "size": format_bytes(totals.size_bytes),
        "snapshotCount": totals.snapshot_count,
        "lastBackupTime": now,
    });
    if let Some(removed) = totals.snapshots_removed {
        status["snapshotsRemovedOnLastCleanup"] = json!(removed);
    }
    if let Some(intact) = totals.integrity {
        status["integrity"] = json!(intact);
        status["lastIntegrityCheckTime"] = json!(now);
    }
    if current.and_then(|s| s.first_backup_time.as_ref()).is_none() {
        status["firstBackupTime"] = json!(now);
    }
    let mut patch = json!({ "status": status });
    if let Some(rv) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackupSessionPhase, HostBackupPhase};

    fn entry(host: &str, phase: HostBackupPhase) -> HostBackupStats {
        HostBackupStats {
            hostname: host.into(),
            phase: Some(phase),
            ..Default::default()
        }
    }

    #[test]
    fn upsert_replaces_only_this_host_and_keeps_the_phase() {
        let before = BackupSessionStatus {
            phase: Some(BackupSessionPhase::Running),
            total_hosts: Some(2),
            stats: vec![
                entry("host-0", HostBackupPhase::Failed),
                entry("host-1", HostBackupPhase::Succeeded),
            ],
            ..Default::default()
        };
        let after = upsert_host(Some(&before), entry("host-0", HostBackupPhase::Succeeded));
        assert_eq!(after.phase, Some(BackupSessionPhase::Running));
        assert_eq!(after.total_hosts, Some(2));
        assert_eq!(after.stats.len(), 2);
        assert_eq!(after.stats[0].phase, Some(HostBackupPhase::Succeeded));
        let fresh = upsert_host(None, entry("host-3", HostBackupPhase::Failed));
        assert_eq!(fresh.stats.len(), 1);
        assert_eq!(fresh.phase, None);
    }

    #[test]
    fn repository_patch_sets_first_backup_time_once() {
        let now: Time = serde_json::from_value(json!("2026-01-02T03:04:05Z")).unwrap();
        let totals = RepositoryTotals {
            size_bytes: 1536,
            snapshot_count: 5,
            snapshots_removed: Some(1),
            integrity: None,
        };
        let p = repository_patch(None, &totals, &now, Some("42"));
        assert_eq!(
            p,
            json!({"metadata": {"resourceVersion": "42"}, "status": {
                "size": "1.5 KiB", "snapshotCount": 5, "snapshotsRemovedOnLastCleanup": 1,
                "lastBackupTime": "2026-01-02T03:04:05Z", "firstBackupTime": "2026-01-02T03:04:05Z"}})
        );
        let earlier = RepositoryStatus {
            first_backup_time: Some(serde_json::from_value(json!("2025-01-01T00:00:00Z")).unwrap()),
            ..Default::default()
        };
        let p = repository_patch(Some(&earlier), &totals, &now, None);
        assert!(p["status"].get("firstBackupTime").is_none());
        assert!(p.get("metadata").is_none());
        // No check this run: INTEGRITY keeps its value; a check writes it.
        assert!(p["status"].get("integrity").is_none());
        for intact in [true, false] {
            let checked = RepositoryTotals {
                integrity: Some(intact),
                ..totals
            };
            let p = repository_patch(None, &checked, &now, None);
            assert_eq!(p["status"]["integrity"], json!(intact));
            assert_eq!(p["status"]["lastIntegrityCheckTime"], json!(now));
        }
        assert!(p["status"].get("lastIntegrityCheckTime").is_none());
    }

    #[test]
    fn integrity_is_checked_at_most_once_per_interval() {
        let at = |s: &str| -> jiff::Timestamp { s.parse().unwrap() };
        let checked = |s: &str| RepositoryStatus {
            last_integrity_check_time: Some(Time(at(s))),
            ..Default::default()
        };
        let day = std::time::Duration::from_secs(24 * 3600);
        let now = at("2026-12-07T12:00:00Z");
        let cases = [
            ("never checked", None, day, true),
            (
                "no check time",
                Some(RepositoryStatus::default()),
                day,
                true,
            ),
            (
                "checked an hour ago",
                Some(checked("2026-12-07T11:00:00Z")),
                day,
                false,
            ),
            (
                "checked a day ago",
                Some(checked("2026-12-06T12:00:00Z")),
                day,
                true,
            ),
            (
                "checked two days ago",
                Some(checked("2026-12-05T12:00:00Z")),
                day,
                true,
            ),
            (
                "a time in the future",
                Some(checked("2026-12-08T12:00:00Z")),
                day,
                true,
            ),
            (
                "interval zero",
                Some(checked("2026-12-07T12:00:00Z")),
                std::time::Duration::ZERO,
                true,
            ),
        ];
        for (what, status, interval, due) in cases {
            assert_eq!(
                integrity_check_due(status.as_ref(), now, interval),
                due,
                "{what}"
            );
        }
    }
}
