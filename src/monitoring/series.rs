//! What the reconciler's metrics say, as plain data computed from the index
//! and the BackupSession controller's cache: one [`ConfigSeries`] per
//! BackupConfiguration in the index and one [`RepositorySeries`] per
//! Repository, nothing else. Computed afresh on every scrape, so memory is
//! bounded by the objects that exist and a deleted configuration's series
//! disappear with it; no API call is made.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kube::ResourceExt;

use crate::api::{
    BackupConfiguration, BackupSession, BackupSessionPhase, INVOKER_KIND_BACKUP_CONFIGURATION,
    Repository, namespace_of,
};
use crate::store::Snapshot;
use stash_core::reconcile::desired::CONDITION_PAUSED;

use super::interval::expected_interval_seconds;

/// Every phase a session is counted in, so each configuration has the same
/// series (a phase with no session is 0, not absent).
pub const SESSION_PHASES: [BackupSessionPhase; 6] = [
    BackupSessionPhase::Pending,
    BackupSessionPhase::Running,
    BackupSessionPhase::Succeeded,
    BackupSessionPhase::Failed,
    BackupSessionPhase::Skipped,
    BackupSessionPhase::Unknown,
];

/// One BackupConfiguration's values.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigSeries {
    pub namespace: String,
    pub name: String,
    /// `spec.repository.name` (empty when unset).
    pub repository: String,
    pub target_kind: String,
    pub target_name: String,
    pub created: Option<i64>,
    pub paused: bool,
    /// The `Paused` condition's `lastTransitionTime`, while paused.
    pub paused_since: Option<i64>,
    /// [`expected_interval_seconds`] of `spec.schedule`.
    pub interval_seconds: Option<u64>,
    /// When the newest `Succeeded` session finished (creation + duration).
    pub last_success: Option<i64>,
    /// The newest session's phase and creation time.
    pub last_session: Option<(BackupSessionPhase, i64)>,
    /// Sessions present (not yet removed by `backupHistoryLimit`), by phase.
    pub sessions: BTreeMap<&'static str, u64>,
}

/// One Repository's values, from the status the sidecar writes.
#[derive(Debug, Clone, PartialEq)]
pub struct RepositorySeries {
    pub namespace: String,
    pub name: String,
    pub integrity: Option<bool>,
    pub size_bytes: Option<u64>,
    pub snapshots: Option<i64>,
    pub last_backup: Option<i64>,
}

/// Everything exported, sorted by namespace and name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub configs: Vec<ConfigSeries>,
    pub repositories: Vec<RepositorySeries>,
}

/// The series for the index `snapshot` and the sessions in the
/// BackupSession controller's cache; `now` anchors the schedule's next fires.
pub fn series(
    snapshot: &Snapshot,
    sessions: &[Arc<BackupSession>],
    now: jiff::Timestamp,
) -> Series {
    let mut by_config: HashMap<(&str, &str), Vec<&BackupSession>> = HashMap::new();
    for s in sessions {
        if s.spec.invoker.kind == INVOKER_KIND_BACKUP_CONFIGURATION {
            by_config
                .entry((namespace_of(&**s), s.spec.invoker.name.as_str()))
                .or_default()
                .push(s);
        }
    }
    let mut configs: Vec<ConfigSeries> = snapshot
        .configs()
        .map(|bc| {
            let ns = namespace_of(&**bc);
            let name = bc.name_any();
            let own = by_config
                .get(&(ns, name.as_str()))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            config_series(bc, own, now)
        })
        .collect();
    configs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut repositories: Vec<RepositorySeries> = snapshot
        .repositories()
        .map(|r| repository_series(r))
        .collect();
    repositories.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Series {
        configs,
        repositories,
    }
}

fn config_series(
    bc: &BackupConfiguration,
    sessions: &[&BackupSession],
    now: jiff::Timestamp,
) -> ConfigSeries {
    let target = bc.target_ref();
    let paused_since = bc
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_PAUSED))
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.as_second());
    let mut counts: BTreeMap<&'static str, u64> =
        SESSION_PHASES.iter().map(|p| (p.as_str(), 0)).collect();
    let mut last_session: Option<(i64, &str, BackupSessionPhase)> = None;
    let mut last_success: Option<i64> = None;
    for s in sessions {
        let phase = s.phase();
        *counts.entry(phase.as_str()).or_default() += 1;
        let created = created(&s.metadata);
        let newer = match (&last_session, created) {
            (None, _) => true,
            (Some((t, n, _)), c) => {
                (c.unwrap_or(0), s.metadata.name.as_deref().unwrap_or("")) > (*t, *n)
            }
        };
        if newer {
            last_session = Some((
                created.unwrap_or(0),
                s.metadata.name.as_deref().unwrap_or(""),
                phase,
            ));
        }
        if phase == BackupSessionPhase::Succeeded
            && let Some(c) = created
        {
            let took = s
                .status
                .as_ref()
                .and_then(|st| st.session_duration.as_deref())
                .and_then(|d| crate::api::timeout::parse_go_duration(d).ok())
                .map_or(0, |d| d.as_secs().max(0));
            let finished = c.saturating_add(took);
            last_success = Some(last_success.map_or(finished, |l| l.max(finished)));
        }
    }
    ConfigSeries {
        namespace: namespace_of(bc).to_owned(),
        name: bc.name_any(),
        repository: bc.repository_name().unwrap_or_default().to_owned(),
        target_kind: target.map(|t| t.kind.clone()).unwrap_or_default(),
        target_name: target.map(|t| t.name.clone()).unwrap_or_default(),
        created: created(&bc.metadata),
        paused: bc.spec.paused,
        paused_since: paused_since.filter(|_| bc.spec.paused),
        interval_seconds: bc
            .spec
            .schedule
            .as_deref()
            .and_then(|s| expected_interval_seconds(s, now)),
        last_success,
        last_session: last_session.map(|(t, _, p)| (p, t)),
        sessions: counts,
    }
}

fn created(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<i64> {
    meta.creation_timestamp.as_ref().map(|t| t.0.as_second())
}

fn repository_series(repo: &Repository) -> RepositorySeries {
    let status = repo.status.as_ref();
    RepositorySeries {
        namespace: namespace_of(repo).to_owned(),
        name: repo.name_any(),
        integrity: status.and_then(|s| s.integrity),
        size_bytes: status.and_then(|s| s.size.as_deref()).and_then(parse_bytes),
        snapshots: status.and_then(|s| s.snapshot_count),
        last_backup: status
            .and_then(|s| s.last_backup_time.as_ref())
            .map(|t| t.0.as_second()),
    }
}

/// Bytes from the size the sidecar writes (`512 B`, `1.5 KiB`, `12.346 MiB`,
/// as [`crate::backup::restic::format_bytes`] prints it; restic's rounding
/// to three decimals is kept). None for anything else.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let (number, unit) = text.trim().split_once(' ')?;
    let value: f64 = number.parse().ok()?;
    let power = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        .iter()
        .position(|u| *u == unit.trim())?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let bytes = value * 1024f64.powi(i32::try_from(power).ok()?);
    // Saturates at u64::MAX: `as` from f64 never panics.
    Some(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_back() {
        use crate::backup::restic::format_bytes;
        for b in [0, 512, 1536, 200 * 1024 * 1024, 5 * 1024 * 1024 * 1024] {
            assert_eq!(parse_bytes(&format_bytes(b)), Some(b), "{b}");
        }
        assert_eq!(parse_bytes("12.346 MiB"), Some(12_945_719));
        for bad in ["", "12", "12 MB", "-1 KiB", "NaN KiB", "1 2 KiB"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
    }
}
