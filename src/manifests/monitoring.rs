//! `stash manifests --monitoring`: what the Prometheus Operator and Grafana
//! need to watch the backups, appended to the install: a `PrometheusRule`
//! with [`crate::monitoring::rules`], a `ServiceMonitor` scraping the
//! `metrics` port of the webhook Service (the probe port, where `/metrics`
//! is), and the dashboard in a ConfigMap labelled `grafana_dashboard: "1"`.
//!
//! The Prometheus Operator's kinds have no maintained Rust types, so the two
//! are built as JSON values with their `monitoring.coreos.com/v1` schema's
//! field names; the tests check the fields the operator needs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};

use super::names::{LABEL_NAME, METRICS_PORT_NAME};
use super::{Object, Options, metadata, selector_labels};
use crate::monitoring::rules::{RuleOptions, groups};

/// Name of the PrometheusRule, the ServiceMonitor and the dashboard's ConfigMap.
pub const NAME: &str = "stash-backups";
/// The label Grafana's dashboard sidecar loads ConfigMaps by.
pub const GRAFANA_DASHBOARD_LABEL: (&str, &str) = ("grafana_dashboard", "1");
/// The dashboard's key in its ConfigMap.
pub const DASHBOARD_KEY: &str = "stash-backups.json";

/// The three objects, in apply order.
pub fn objects(options: &Options, rules: &RuleOptions) -> Vec<Object> {
    vec![
        Object::Custom(prometheus_rule(options, rules)),
        Object::Custom(service_monitor(options)),
        Object::ConfigMap(dashboard_config_map(options)),
    ]
}

fn labels() -> Value {
    json!({ LABEL_NAME.0: LABEL_NAME.1 })
}

/// The `PrometheusRule` holding the alerts.
pub fn prometheus_rule(options: &Options, rules: &RuleOptions) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": NAME, "namespace": options.namespace, "labels": labels()},
        "spec": groups(rules),
    })
}

/// The `ServiceMonitor` selecting the webhook Service's `metrics` port.
pub fn service_monitor(options: &Options) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": NAME, "namespace": options.namespace, "labels": labels()},
        "spec": {
            "selector": {"matchLabels": selector_labels()},
            "namespaceSelector": {"matchNames": [options.namespace]},
            "endpoints": [{
                "port": METRICS_PORT_NAME,
                "path": "/metrics",
                "scheme": "http",
                "interval": "30s",
            }],
        },
    })
}

/// The Grafana dashboard, as a ConfigMap the dashboard sidecar picks up.
pub fn dashboard_config_map(options: &Options) -> ConfigMap {
    let mut meta = metadata(NAME, Some(&options.namespace));
    meta.labels.get_or_insert_with(BTreeMap::new).insert(
        GRAFANA_DASHBOARD_LABEL.0.into(),
        GRAFANA_DASHBOARD_LABEL.1.into(),
    );
    let json = serde_json::to_string_pretty(&crate::monitoring::dashboard::dashboard())
        .unwrap_or_default();
    ConfigMap {
        metadata: meta,
        data: Some(BTreeMap::from([(DASHBOARD_KEY.to_string(), json)])),
        ..ConfigMap::default()
    }
}
