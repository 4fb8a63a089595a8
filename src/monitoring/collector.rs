//! The reconciler's series on the probe port's `/metrics`: a
//! prometheus-client [`Collector`] that, on each scrape, reads the index and
//! the BackupSession controller's cache (no API call) and encodes
//! [`super::series`].
//!
//! Only the leading replica exports them. Every replica exports
//! `stash_reconciler_leader` (1 while it leads, else 0); the per-backup
//! series come only from the leader, once its BackupSession cache has listed
//! (before that "no session" would look like "never backed up"). During a
//! hand-over two replicas may export for a scrape or two, so the alerts take
//! `max by (namespace, backupconfiguration)`, which is right with one
//! exporter or two.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use kube::runtime::reflector;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::api::BackupSession;
use crate::store::Store;

use super::series::{ConfigSeries, RepositorySeries, Series, series};

/// The metric names, without the registry's `stash_` prefix.
pub mod names {
    pub const LEADER: &str = "reconciler_leader";
    pub const CONFIG_INFO: &str = "backupconfiguration_info";
    pub const CREATED: &str = "backupconfiguration_created_timestamp_seconds";
    pub const PAUSED: &str = "backupconfiguration_paused";
    pub const PAUSED_SINCE: &str = "backupconfiguration_paused_since_timestamp_seconds";
    pub const INTERVAL: &str = "backupconfiguration_schedule_interval_seconds";
    pub const LAST_SUCCESS: &str = "backup_last_success_timestamp_seconds";
    pub const LAST_SESSION_PHASE: &str = "backup_last_session_phase";
    pub const LAST_SESSION_TIME: &str = "backup_last_session_timestamp_seconds";
    pub const SESSIONS: &str = "backup_sessions";
    pub const INTEGRITY: &str = "repository_integrity";
    pub const SIZE: &str = "repository_size_bytes";
    pub const SNAPSHOTS: &str = "repository_snapshots";
    pub const LAST_BACKUP: &str = "repository_last_backup_timestamp_seconds";
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfigLabels {
    namespace: String,
    backupconfiguration: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    namespace: String,
    backupconfiguration: String,
    repository: String,
    target_kind: String,
    target_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    namespace: String,
    backupconfiguration: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepositoryLabels {
    namespace: String,
    repository: String,
}

type IntGauge = Gauge<i64, AtomicI64>;

/// What a leading reconciler reads its series from.
struct Source {
    index: Arc<Store>,
    sessions: reflector::Store<BackupSession>,
    /// The sessions' cache has listed once.
    listed: Arc<AtomicBool>,
}

/// The slot the leading reconciler fills while it leads; shared by the
/// registry's collector and the reconciler.
#[derive(Clone, Default)]
pub struct Leading(Arc<Mutex<Option<Source>>>);

impl std::fmt::Debug for Leading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leading")
            .field("leading", &self.is_leading())
            .finish()
    }
}

impl Leading {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Source>> {
        // The slot holds handles only: a panic elsewhere leaves it usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a reconciler leads (and exports) in this process.
    pub fn is_leading(&self) -> bool {
        self.slot().is_some()
    }

    /// Exports from `index` and `sessions` until the guard is dropped
    /// (leadership lost, the controller stopped); series appear once
    /// [`Exporting::listed`] is called.
    pub fn lead(&self, index: Arc<Store>, sessions: reflector::Store<BackupSession>) -> Exporting {
        let listed = Arc::new(AtomicBool::new(false));
        *self.slot() = Some(Source {
            index,
            sessions,
            listed: listed.clone(),
        });
        Exporting {
            leading: self.clone(),
            listed,
        }
    }

    /// The series now, when leading with every cache listed.
    pub fn series(&self, now: jiff::Timestamp) -> Option<Series> {
        let slot = self.slot();
        let source = slot.as_ref()?;
        if !source.listed.load(Ordering::Acquire) || !source.index.is_synced() {
            return None;
        }
        let snapshot = source.index.snapshot();
        let sessions = source.sessions.state();
        drop(slot);
        Some(series(&snapshot, &sessions, now))
    }
}

/// Held by the leading BackupSession controller; clears the slot on drop.
pub struct Exporting {
    leading: Leading,
    listed: Arc<AtomicBool>,
}

impl Exporting {
    /// The BackupSession cache has listed: export the series.
    pub fn listed(&self) {
        self.listed.store(true, Ordering::Release);
    }
}

impl Drop for Exporting {
    /// Clears the slot, unless a newer term already took it over.
    fn drop(&mut self) {
        let mut slot = self.leading.slot();
        if slot
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(&s.listed, &self.listed))
        {
            *slot = None;
        }
    }
}

/// The registry's collector of the reconciler's series.
#[derive(Debug, Clone, Default)]
pub struct BackupCollector {
    pub leading: Leading,
}

impl Collector for BackupCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let leader = IntGauge::default();
        leader.set(i64::from(self.leading.is_leading()));
        leader.encode(encoder.encode_descriptor(
            names::LEADER,
            "1 while this replica leads the reconciler and exports the backup series, else 0",
            None,
            leader.metric_type(),
        )?)?;
        match self.leading.series(jiff::Timestamp::now()) {
            Some(s) => encode_series(&s, &mut encoder),
            None => Ok(()),
        }
    }
}

/// Encodes `s` (also used by tests to read the exposition of a snapshot).
pub fn encode_series(s: &Series, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let mut configs = ConfigFamilies::default();
    for c in &s.configs {
        configs.add(c);
    }
    let mut repositories = RepositoryFamilies::default();
    for r in &s.repositories {
        repositories.add(r);
    }
    encode_families(&configs.described(), encoder)?;
    encode_families(&repositories.described(), encoder)
}

/// A family with its name and help text, in exposition order.
type Described<'f> = (&'static str, &'static str, &'f dyn EncodeMetric);

fn encode_families(
    families: &[Described<'_>],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    for &(name, help, family) in families {
        family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)?;
    }
    Ok(())
}

/// The per-BackupConfiguration series.
#[derive(Default)]
struct ConfigFamilies {
    info: Family<InfoLabels, IntGauge>,
    created: Family<ConfigLabels, IntGauge>,
    paused: Family<ConfigLabels, IntGauge>,
    paused_since: Family<ConfigLabels, IntGauge>,
    interval: Family<ConfigLabels, IntGauge>,
    last_success: Family<ConfigLabels, IntGauge>,
    last_phase: Family<PhaseLabels, IntGauge>,
    last_time: Family<ConfigLabels, IntGauge>,
    sessions: Family<PhaseLabels, IntGauge>,
}

impl ConfigFamilies {
    /// One BackupConfiguration's samples.
    fn add(&mut self, c: &ConfigSeries) {
        let key = ConfigLabels {
            namespace: c.namespace.clone(),
            backupconfiguration: c.name.clone(),
        };
        let phase_key = |phase: &str| PhaseLabels {
            namespace: c.namespace.clone(),
            backupconfiguration: c.name.clone(),
            phase: phase.to_owned(),
        };
        self.info
            .get_or_create(&InfoLabels {
                namespace: c.namespace.clone(),
                backupconfiguration: c.name.clone(),
                repository: c.repository.clone(),
                target_kind: c.target_kind.clone(),
                target_name: c.target_name.clone(),
            })
            .set(1);
        if let Some(t) = c.created {
            self.created.get_or_create(&key).set(t);
        }
        self.paused.get_or_create(&key).set(i64::from(c.paused));
        if let Some(t) = c.paused_since {
            self.paused_since.get_or_create(&key).set(t);
        }
        if let Some(i) = c.interval_seconds {
            self.interval
                .get_or_create(&key)
                .set(i64::try_from(i).unwrap_or(i64::MAX));
        }
        if let Some(t) = c.last_success {
            self.last_success.get_or_create(&key).set(t);
        }
        if let Some((phase, t)) = c.last_session {
            for p in super::series::SESSION_PHASES {
                self.last_phase
                    .get_or_create(&phase_key(p.as_str()))
                    .set(i64::from(p == phase));
            }
            self.last_time.get_or_create(&key).set(t);
        }
        for (phase, n) in &c.sessions {
            self.sessions
                .get_or_create(&phase_key(phase))
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    fn described(&self) -> [Described<'_>; 9] {
        [
            (
                names::CONFIG_INFO,
                "1 per BackupConfiguration, labelled with its Repository and target",
                &self.info,
            ),
            (
                names::CREATED,
                "When the BackupConfiguration was created, Unix seconds",
                &self.created,
            ),
            (
                names::PAUSED,
                "1 while spec.paused is true, else 0",
                &self.paused,
            ),
            (
                names::PAUSED_SINCE,
                "When the current pause began (the Paused condition's lastTransitionTime), Unix seconds; only while paused",
                &self.paused_since,
            ),
            (
                names::INTERVAL,
                "The schedule's expected interval: the smallest gap between its next 64 fire times, seconds",
                &self.interval,
            ),
            (
                names::LAST_SUCCESS,
                "When the newest Succeeded BackupSession still kept finished, Unix seconds",
                &self.last_success,
            ),
            (
                names::LAST_SESSION_PHASE,
                "1 for the newest BackupSession's phase, 0 for the other phases",
                &self.last_phase,
            ),
            (
                names::LAST_SESSION_TIME,
                "When the newest BackupSession was created, Unix seconds",
                &self.last_time,
            ),
            (
                names::SESSIONS,
                "BackupSessions present (kept by backupHistoryLimit), by phase",
                &self.sessions,
            ),
        ]
    }
}

/// The per-Repository series.
#[derive(Default)]
struct RepositoryFamilies {
    integrity: Family<RepositoryLabels, IntGauge>,
    size: Family<RepositoryLabels, IntGauge>,
    snapshots: Family<RepositoryLabels, IntGauge>,
    last_backup: Family<RepositoryLabels, IntGauge>,
}

impl RepositoryFamilies {
    /// One Repository's samples.
    fn add(&mut self, r: &RepositorySeries) {
        let key = RepositoryLabels {
            namespace: r.namespace.clone(),
            repository: r.name.clone(),
        };
        if let Some(ok) = r.integrity {
            self.integrity.get_or_create(&key).set(i64::from(ok));
        }
        if let Some(b) = r.size_bytes {
            self.size
                .get_or_create(&key)
                .set(i64::try_from(b).unwrap_or(i64::MAX));
        }
        if let Some(n) = r.snapshots {
            self.snapshots.get_or_create(&key).set(n);
        }
        if let Some(t) = r.last_backup {
            self.last_backup.get_or_create(&key).set(t);
        }
    }

    fn described(&self) -> [Described<'_>; 4] {
        [
            (
                names::INTEGRITY,
                "The Repository's status.integrity: 1 when the last check found no error, 0 when it found errors; absent when never checked",
                &self.integrity,
            ),
            (
                names::SIZE,
                "The Repository's size as its status reports it, bytes",
                &self.size,
            ),
            (
                names::SNAPSHOTS,
                "Snapshots in the Repository, as its status reports them",
                &self.snapshots,
            ),
            (
                names::LAST_BACKUP,
                "The Repository's status.lastBackupTime, Unix seconds",
                &self.last_backup,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackupConfiguration, Repository};
    use crate::store::Snapshot;
    use prometheus_client::registry::Registry;
    use serde_json::json;

    fn config(name: &str, paused: bool, status: serde_json::Value) -> BackupConfiguration {
        serde_json::from_value(json!({
            "apiVersion": "stash.appscode.com/v1beta1",
            "kind": "BackupConfiguration",
            "metadata": {"name": name, "namespace": "demo", "creationTimestamp": "2026-12-01T00:00:00Z"},
            "spec": {
                "repository": {"name": "gcs-repo"},
                "schedule": "*/5 * * * *",
                "paused": paused,
                "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "stash-demo"}},
            },
            "status": status,
        }))
        .unwrap()
    }

    fn session(
        name: &str,
        invoker: &str,
        created: &str,
        status: serde_json::Value,
    ) -> Arc<BackupSession> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "stash.appscode.com/v1beta1",
                "kind": "BackupSession",
                "metadata": {"name": name, "namespace": "demo", "creationTimestamp": created},
                "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": invoker}},
                "status": status,
            }))
            .unwrap(),
        )
    }

    fn exposition(s: &Series) -> String {
        #[derive(Debug)]
        struct Fixed(Series);
        impl Collector for Fixed {
            fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                encode_series(&self.0, &mut encoder)
            }
        }
        let mut registry = Registry::with_prefix("stash");
        registry.register_collector(Box::new(Fixed(s.clone())));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    fn snapshot() -> Snapshot {
        let mut snap = Snapshot::default();
        snap.upsert_config(config("db", false, json!({})));
        snap.upsert_config(config(
            "paused",
            true,
            json!({"conditions": [{"type": "Paused", "status": "True", "lastTransitionTime": "2026-12-02T00:00:00Z"}]}),
        ));
        snap.upsert_repository(
            serde_json::from_value::<Repository>(json!({
                "apiVersion": "stash.appscode.com/v1alpha1",
                "kind": "Repository",
                "metadata": {"name": "gcs-repo", "namespace": "demo"},
                "spec": {"backend": {"local": {"mountPath": "/safe/data"}}},
                "status": {"integrity": false, "size": "1.5 KiB", "snapshotCount": 7, "lastBackupTime": "2026-12-03T00:00:00Z"},
            }))
            .unwrap(),
        );
        snap
    }

    #[test]
    fn one_series_set_per_configuration_from_a_snapshot() {
        let sessions = vec![
            session(
                "db-1",
                "db",
                "2026-12-03T10:00:00Z",
                json!({"phase": "Succeeded", "sessionDuration": "1m30s"}),
            ),
            session(
                "db-2",
                "db",
                "2026-12-03T10:05:00Z",
                json!({"phase": "Failed"}),
            ),
            session(
                "gone-1",
                "gone",
                "2026-12-03T10:05:00Z",
                json!({"phase": "Failed"}),
            ),
        ];
        let now: jiff::Timestamp = "2026-12-03T10:07:00Z".parse().unwrap();
        let text = exposition(&series(&snapshot(), &sessions, now));
        for line in [
            r#"stash_backupconfiguration_info{namespace="demo",backupconfiguration="db",repository="gcs-repo",target_kind="Deployment",target_name="stash-demo"} 1"#,
            r#"stash_backupconfiguration_paused{namespace="demo",backupconfiguration="db"} 0"#,
            r#"stash_backupconfiguration_paused{namespace="demo",backupconfiguration="paused"} 1"#,
            // 2026-12-02T00:00:00Z
            r#"stash_backupconfiguration_paused_since_timestamp_seconds{namespace="demo",backupconfiguration="paused"} 1796169600"#,
            r#"stash_backupconfiguration_schedule_interval_seconds{namespace="demo",backupconfiguration="db"} 300"#,
            // created 10:00 + 1m30s
            r#"stash_backup_last_success_timestamp_seconds{namespace="demo",backupconfiguration="db"} 1796292090"#,
            r#"stash_backup_last_session_phase{namespace="demo",backupconfiguration="db",phase="Failed"} 1"#,
            r#"stash_backup_last_session_phase{namespace="demo",backupconfiguration="db",phase="Succeeded"} 0"#,
            r#"stash_backup_sessions{namespace="demo",backupconfiguration="db",phase="Failed"} 1"#,
            r#"stash_backup_sessions{namespace="demo",backupconfiguration="paused",phase="Succeeded"} 0"#,
            r#"stash_repository_integrity{namespace="demo",repository="gcs-repo"} 0"#,
            r#"stash_repository_size_bytes{namespace="demo",repository="gcs-repo"} 1536"#,
            r#"stash_repository_snapshots{namespace="demo",repository="gcs-repo"} 7"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // a paused-since only while paused; no phase before a first session;
        // nothing of a configuration the index does not hold
        assert!(!text.contains(
            r#"paused_since_timestamp_seconds{namespace="demo",backupconfiguration="db"}"#
        ));
        assert!(
            !text.contains(r#"last_session_phase{namespace="demo",backupconfiguration="paused""#)
        );
        assert!(!text.contains("gone"), "{text}");
    }

    #[test]
    fn a_deleted_configuration_leaves_no_series() {
        let now: jiff::Timestamp = "2026-12-03T10:07:00Z".parse().unwrap();
        let mut snap = snapshot();
        assert!(exposition(&series(&snap, &[], now)).contains(r#"backupconfiguration="paused""#));
        snap.remove_config("demo", "paused");
        assert!(!exposition(&series(&snap, &[], now)).contains(r#"backupconfiguration="paused""#));
    }

    #[test]
    fn only_the_leader_exports_and_only_once_listed() {
        let index = Arc::new(Store::from_snapshot(snapshot()));
        index.mark_synced();
        let (reader, _writer) = reflector::store::<BackupSession>();
        let collector = BackupCollector::default();
        let mut registry = Registry::with_prefix("stash");
        registry.register_collector(Box::new(collector.clone()));
        let scrape = || {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out
        };
        assert!(scrape().contains("stash_reconciler_leader 0"));
        assert!(!scrape().contains("backupconfiguration_paused"));
        let exporting = collector.leading.lead(index, reader);
        assert!(scrape().contains("stash_reconciler_leader 1"));
        assert!(
            !scrape().contains("backupconfiguration_paused"),
            "not before the sessions listed"
        );
        exporting.listed();
        assert!(scrape().contains("backupconfiguration_paused{"));
        drop(exporting);
        assert!(scrape().contains("stash_reconciler_leader 0"));
        assert!(!scrape().contains("backupconfiguration_paused"));
    }

    #[test]
    fn an_old_term_ending_late_leaves_the_new_one_exporting() {
        let index = Arc::new(Store::default());
        let (reader, _writer) = reflector::store::<BackupSession>();
        let leading = Leading::default();
        let old = leading.lead(index.clone(), reader.clone());
        let new = leading.lead(index, reader);
        drop(old);
        assert!(leading.is_leading());
        drop(new);
        assert!(!leading.is_leading());
    }
}
