//! The server's Prometheus metrics, served as text on the probe port.
//!
//! Label values that come from requests are bounded before they reach a
//! metric: an object kind outside the endpoint's known kinds is counted as
//! `other`, so no client can grow the registry without limit.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::admission::Endpoint;
use crate::monitoring::collector::BackupCollector;

/// Labels of one admission.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub webhook: &'static str,
    pub kind: &'static str,
    pub operation: &'static str,
    pub allowed: bool,
    pub mutated: bool,
}

/// Labels of an HTTP answer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: u16,
}

/// Labels of a certificate reload.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

/// Labels of the served certificate's expiry.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExpiryLabels {
    /// True from 30 days before not-after.
    pub expiring: bool,
}

/// Labels of a port.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    pub port: &'static str,
}

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    pub admission_duration: Family<AdmissionLabels, Histogram>,
    pub requests: Family<CodeLabels, Counter>,
    pub in_flight: Gauge,
    pub panics: Counter,
    pub cert_reloads: Family<ReloadLabels, Counter>,
    pub cert_not_after: Family<ExpiryLabels, Gauge<i64, AtomicI64>>,
    pub store_configs: Gauge<i64, AtomicI64>,
    pub store_repositories: Gauge<i64, AtomicI64>,
    pub connections: Family<PortLabels, Gauge>,
    /// The reconciler's per-backup series, exported while this replica leads
    /// ([`crate::monitoring::collector`]).
    pub backups: BackupCollector,
}

/// Latency buckets in seconds: 50 µs to 10 s.
const BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("stash");
        let admission_duration = Family::<AdmissionLabels, Histogram>::new_with_constructor(
            histogram as fn() -> Histogram,
        );
        let requests = Family::<CodeLabels, Counter>::default();
        let in_flight = Gauge::default();
        let panics = Counter::<u64, AtomicU64>::default();
        let cert_reloads = Family::<ReloadLabels, Counter>::default();
        let cert_not_after = Family::<ExpiryLabels, Gauge<i64, AtomicI64>>::default();
        let store_configs = Gauge::<i64, AtomicI64>::default();
        let store_repositories = Gauge::<i64, AtomicI64>::default();
        let connections = Family::<PortLabels, Gauge>::default();
        registry.register(
            "admission_duration_seconds",
            "Time to answer an AdmissionReview, from the request's arrival to the answer",
            admission_duration.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered on the webhook port, by status code",
            requests.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being answered on the webhook port",
            in_flight.clone(),
        );
        registry.register(
            "handler_panics",
            "Panics caught in request handlers (each answered with 500)",
            panics.clone(),
        );
        registry.register(
            "certificate_reloads",
            "Attempts to load a changed serving certificate, by result",
            cert_reloads.clone(),
        );
        registry.register(
            "certificate_not_after_seconds",
            "Expiry of the served certificate, Unix seconds; expiring=\"true\" from 30 days before",
            cert_not_after.clone(),
        );
        registry.register(
            "store_backupconfigurations",
            "BackupConfigurations in the in-memory store",
            store_configs.clone(),
        );
        registry.register(
            "store_repositories",
            "Repositories in the in-memory store",
            store_repositories.clone(),
        );
        registry.register(
            "open_connections",
            "Open connections, by port (webhook or probe)",
            connections.clone(),
        );
        let backups = BackupCollector::default();
        registry.register_collector(Box::new(backups.clone()));
        Self {
            registry,
            backups,
            admission_duration,
            requests,
            in_flight,
            panics,
            cert_reloads,
            cert_not_after,
            store_configs,
            store_repositories,
            connections,
        }
    }

    /// Sets the served certificate's expiry: one series, labelled whether it
    /// is within 30 days of it.
    pub fn set_cert_not_after(&self, not_after: i64, expiring: bool) {
        let labels = ExpiryLabels { expiring };
        if self.cert_not_after.get(&labels).is_none() {
            self.cert_not_after.clear();
        }
        self.cert_not_after.get_or_create(&labels).set(not_after);
    }

    /// The gauge of open connections of `port`.
    pub fn open_connections(&self, port: &'static str) -> Gauge {
        self.connections.get_or_create(&PortLabels { port }).clone()
    }

    /// Records one answered admission.
    pub fn observe_admission(
        &self,
        endpoint: Endpoint,
        kind: &str,
        operation: &'static str,
        allowed: bool,
        mutated: bool,
        elapsed: Duration,
    ) {
        self.admission_duration
            .get_or_create(&AdmissionLabels {
                webhook: endpoint.label(),
                kind: bounded_kind(endpoint, kind),
                operation,
                allowed,
                mutated,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one HTTP answer.
    pub fn count_response(&self, code: u16) {
        self.requests.get_or_create(&CodeLabels { code }).inc();
    }

    /// Counts a certificate reload attempt.
    pub fn count_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.cert_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The kinds an endpoint serves; anything else is reported as `other`.
fn bounded_kind(endpoint: Endpoint, kind: &str) -> &'static str {
    let known: &[&'static str] = match endpoint {
        Endpoint::MutateWorkloads => &crate::api::WORKLOAD_KINDS,
        Endpoint::MutateBackupSessions | Endpoint::ValidateBackupSessions => &["BackupSession"],
        Endpoint::ValidateBackupConfigurations => &["BackupConfiguration"],
        Endpoint::ValidateRepositories => &["Repository"],
        Endpoint::ValidateRestoreSessions => &["RestoreSession"],
    };
    known
        .iter()
        .copied()
        .find(|k| *k == kind)
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_do_not_grow_the_registry() {
        let m = Metrics::new();
        for i in 0..100 {
            m.observe_admission(
                Endpoint::MutateWorkloads,
                &format!("Kind{i}"),
                "CREATE",
                true,
                false,
                Duration::from_millis(1),
            );
        }
        m.observe_admission(
            Endpoint::MutateWorkloads,
            "Deployment",
            "CREATE",
            true,
            true,
            Duration::ZERO,
        );
        let text = m.encode();
        assert!(text.contains(r#"kind="other""#), "{text}");
        assert!(text.contains(r#"kind="Deployment""#));
        assert!(!text.contains("Kind7"));
        assert!(text.contains("stash_admission_duration_seconds_bucket"));
    }
}
