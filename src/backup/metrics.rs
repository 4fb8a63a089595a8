//! Prometheus metrics of the last backup, served by the sidecar itself on
//! `GET /metrics` (`--metrics-listen`, default `:56790`). A pull endpoint
//! needs no Pushgateway and reports the last result for as long as the pod
//! lives; scrape it with a PodMonitor or the `prometheus.io/*` annotations.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::engine::HostBackupOutcome;

/// Labels of every series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Labels {
    pub namespace: String,
    pub invoker: String,
    pub host: String,
    pub repository: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The sidecar's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    success: Family<Labels, Gauge>,
    duration: Family<Labels, FloatGauge>,
    processed: Family<Labels, Gauge>,
    uploaded: Family<Labels, Gauge>,
    files_total: Family<Labels, Gauge>,
    files_new: Family<Labels, Gauge>,
    files_modified: Family<Labels, Gauge>,
    files_unmodified: Family<Labels, Gauge>,
    finished: Family<Labels, Gauge>,
    repo_size: Family<Labels, Gauge>,
    repo_snapshots: Family<Labels, Gauge>,
    repo_removed: Family<Labels, Gauge>,
    repo_integrity: Family<Labels, Gauge>,
    skipped: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The gauges, by name and help, in the order [`Metrics::new`] binds them.
const GAUGES: [(&str, &str); 13] = [
    (
        "stash_backup_last_success",
        "1 if the last backup of this host succeeded, 0 if it failed",
    ),
    (
        "stash_backup_last_processed_bytes",
        "Bytes restic read in the last backup",
    ),
    (
        "stash_backup_last_uploaded_bytes",
        "Bytes the last backup added to the repository",
    ),
    (
        "stash_backup_last_files_total",
        "Files in the last backup's snapshots",
    ),
    (
        "stash_backup_last_files_new",
        "New files in the last backup",
    ),
    (
        "stash_backup_last_files_modified",
        "Modified files in the last backup",
    ),
    (
        "stash_backup_last_files_unmodified",
        "Unmodified files in the last backup",
    ),
    (
        "stash_backup_last_finished_timestamp_seconds",
        "Unix time the last backup finished",
    ),
    (
        "stash_repository_size_bytes",
        "Bytes stored in the repository after the last successful backup",
    ),
    (
        "stash_repository_snapshot_count",
        "Snapshots in the repository after the last successful backup",
    ),
    (
        "stash_repository_snapshots_removed",
        "Snapshots removed by the last retention run",
    ),
    (
        "stash_repository_integrity",
        "1 if the last restic check found no errors, 0 if it found errors",
    ),
    (
        "stash_backup_sessions_skipped",
        "BackupSessions skipped because the configuration is paused",
    ),
];

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let [
            success,
            processed,
            uploaded,
            files_total,
            files_new,
            files_modified,
            files_unmodified,
            finished,
            repo_size,
            repo_snapshots,
            repo_removed,
            repo_integrity,
            skipped,
        ] = GAUGES.map(|(name, help)| {
            let f = Family::<Labels, Gauge>::default();
            r.register(name, help, f.clone());
            f
        });
        let duration = Family::<Labels, FloatGauge>::default();
        r.register(
            "stash_backup_last_duration_seconds",
            "Wall time of the last backup of this host",
            duration.clone(),
        );
        Self {
            registry: Arc::new(r),
            success,
            duration,
            processed,
            uploaded,
            files_total,
            files_new,
            files_modified,
            files_unmodified,
            finished,
            repo_size,
            repo_snapshots,
            repo_removed,
            repo_integrity,
            skipped,
        }
    }

    /// Records the outcome of a backup.
    pub fn record(&self, labels: &Labels, outcome: &HostBackupOutcome, seconds: f64) {
        self.success
            .get_or_create(labels)
            .set(i64::from(outcome.succeeded()));
        self.duration.get_or_create(labels).set(seconds);
        let sum = |f: fn(&super::restic::BackupSummary) -> u64| {
            clamp(outcome.summaries.iter().map(f).sum())
        };
        self.processed
            .get_or_create(labels)
            .set(sum(|s| s.total_bytes_processed));
        self.uploaded
            .get_or_create(labels)
            .set(sum(|s| s.data_added));
        self.files_total
            .get_or_create(labels)
            .set(sum(|s| s.total_files_processed));
        self.files_new
            .get_or_create(labels)
            .set(sum(|s| s.files_new));
        self.files_modified
            .get_or_create(labels)
            .set(sum(|s| s.files_changed));
        self.files_unmodified
            .get_or_create(labels)
            .set(sum(|s| s.files_unmodified));
        self.finished
            .get_or_create(labels)
            .set(k8s_openapi::jiff::Timestamp::now().as_second());
        if let Some(t) = &outcome.totals {
            self.repo_size
                .get_or_create(labels)
                .set(clamp(t.size_bytes));
            self.repo_snapshots
                .get_or_create(labels)
                .set(clamp(t.snapshot_count));
            if let Some(removed) = t.snapshots_removed {
                self.repo_removed.get_or_create(labels).set(clamp(removed));
            }
        }
    }

    /// Records what `restic check` found.
    pub fn record_integrity(&self, labels: &Labels, intact: bool) {
        self.repo_integrity
            .get_or_create(labels)
            .set(i64::from(intact));
    }

    /// Counts a skipped session.
    pub fn record_skip(&self, labels: &Labels) {
        self.skipped.get_or_create(labels).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// Serves `/metrics` on `addr` until the future is dropped.
    pub async fn serve(self, addr: SocketAddr) -> anyhow::Result<()> {
        use crate::runtime::{admin, drain as shutdown};
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics: {e}"))?;
        tracing::info!(%addr, "serving metrics on /metrics");
        let app = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let m = self.clone();
                    async move { admin::openmetrics(m.encode()) }
                }),
            )
            .fallback(|| async { (http::StatusCode::NOT_FOUND, "not found\n") });
        // The sidecar ends with its process: its drain signal never fires.
        let (_never, stop) = shutdown::channel();
        admin::serve(
            "metrics",
            listener,
            app,
            admin::DEFAULT_LIMITS,
            Default::default(),
            stop,
        )
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{HostBackupPhase, HostBackupStats};
    use crate::backup::engine::RepositoryTotals;
    use crate::backup::restic::BackupSummary;

    #[test]
    fn the_last_backup_is_exposed_with_its_labels() {
        let m = Metrics::new();
        let labels = Labels {
            namespace: "demo".into(),
            invoker: "pause-backup".into(),
            host: "host-0".into(),
            repository: "gcs-repo".into(),
        };
        let outcome = HostBackupOutcome {
            stats: HostBackupStats {
                hostname: "host-0".into(),
                phase: Some(HostBackupPhase::Succeeded),
                ..Default::default()
            },
            totals: Some(RepositoryTotals {
                size_bytes: 4096,
                snapshot_count: 5,
                snapshots_removed: Some(1),
                integrity: Some(true),
            }),
            initialized: false,
            summaries: vec![BackupSummary {
                snapshot_id: "abc".into(),
                data_added: 100,
                total_files_processed: 3,
                ..Default::default()
            }],
        };
        m.record(&labels, &outcome, 2.5);
        let text = m.encode();
        let sel =
            r#"{namespace="demo",invoker="pause-backup",host="host-0",repository="gcs-repo"}"#;
        for line in [
            format!("stash_backup_last_success{sel} 1"),
            format!("stash_backup_last_uploaded_bytes{sel} 100"),
            format!("stash_backup_last_files_total{sel} 3"),
            format!("stash_backup_last_duration_seconds{sel} 2.5"),
            format!("stash_repository_snapshot_count{sel} 5"),
            format!("stash_repository_size_bytes{sel} 4096"),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        let failed = HostBackupOutcome {
            stats: HostBackupStats {
                phase: Some(HostBackupPhase::Failed),
                ..outcome.stats.clone()
            },
            totals: None,
            ..outcome
        };
        m.record(&labels, &failed, 1.0);
        let text = m.encode();
        assert!(text.contains(&format!("stash_backup_last_success{sel} 0")));
        assert!(
            text.contains(&format!("stash_repository_snapshot_count{sel} 5")),
            "a failure keeps the last known totals"
        );
    }
}
