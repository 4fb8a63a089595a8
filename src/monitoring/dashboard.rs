//! The Grafana dashboard on the reconciler's metrics, as the JSON model
//! Grafana imports (schemaVersion 39). `stash manifests --monitoring` puts
//! it into a ConfigMap labelled `grafana_dashboard: "1"`, the label
//! Grafana's dashboard sidecar (kube-prometheus-stack) loads ConfigMaps by.
//!
//! One row per question an operator asks: is every configuration backing
//! up (last success age against its interval, last phase, paused), how do
//! sessions end, and how big and healthy are the Repositories.

use serde_json::{Value, json};

/// The dashboard's uid: stable, so a re-import replaces it.
pub const UID: &str = "stash-backups";

fn datasource() -> Value {
    json!({"type": "prometheus", "uid": "${datasource}"})
}

fn target(expr: &str, legend: &str, instant: bool) -> Value {
    json!({
        "datasource": datasource(),
        "expr": expr,
        "legendFormat": legend,
        "instant": instant,
        "range": !instant,
        "format": if instant { "table" } else { "time_series" },
        "refId": "A",
    })
}

fn panel(
    id: u32,
    title: &str,
    kind: &str,
    grid: [u32; 4],
    targets: Vec<Value>,
    unit: &str,
) -> Value {
    let [x, y, w, h] = grid;
    json!({
        "id": id,
        "title": title,
        "type": kind,
        "datasource": datasource(),
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": targets,
    })
}

/// Per BackupConfiguration, the newest of its series (one per replica).
const BY: &str = "max by (namespace, backupconfiguration)";
/// The namespaces the dashboard's `namespace` variable selects.
const FILTER: &str = "{namespace=~\"$namespace\"}";

/// The dashboard's JSON model.
pub fn dashboard() -> Value {
    json!({
        "uid": UID,
        "title": "Stash backups",
        "description": "Backups judged by stash's reconciler (docs/operate.md, \"Monitoring\")",
        "tags": ["stash", "backup"],
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "refresh": "1m",
        "time": {"from": "now-7d", "to": "now"},
        "templating": {"list": variables()},
        "panels": panels(),
    })
}

/// The panels, top to bottom.
fn panels() -> Vec<Value> {
    [schedule_panels(), state_panels(), repository_panels()].concat()
}

/// The dashboard's variables: the data source, the namespaces.
fn variables() -> Value {
    json!([
        {
            "name": "datasource",
            "type": "datasource",
            "query": "prometheus",
            "label": "Data source",
        },
        {
            "name": "namespace",
            "type": "query",
            "datasource": datasource(),
            "query": {"query": "label_values(stash_backupconfiguration_info, namespace)", "refId": "namespace"},
            "definition": "label_values(stash_backupconfiguration_info, namespace)",
            "includeAll": true,
            "multi": true,
            "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "refresh": 2,
        },
    ])
}

/// How long since the last success, against the schedule's interval.
fn schedule_panels() -> Vec<Value> {
    let (by, filter) = (BY, FILTER);
    vec![
        panel(
            1,
            "Time since last successful backup",
            "table",
            [0, 0, 12, 9],
            vec![target(
                &format!("time() - {by} (stash_backup_last_success_timestamp_seconds{filter})"),
                "",
                true,
            )],
            "s",
        ),
        panel(
            2,
            "Expected interval (from the schedule)",
            "table",
            [12, 0, 12, 9],
            vec![target(
                &format!("{by} (stash_backupconfiguration_schedule_interval_seconds{filter})"),
                "",
                true,
            )],
            "s",
        ),
    ]
}

/// Failed and paused configurations, and the sessions present.
fn state_panels() -> Vec<Value> {
    let (by, filter) = (BY, FILTER);
    vec![
        panel(
            3,
            "Last session failed",
            "stat",
            [0, 9, 8, 6],
            vec![target(
                &format!(
                    "sum({by} (stash_backup_last_session_phase{{namespace=~\"$namespace\",phase=\"Failed\"}}))"
                ),
                "failed",
                false,
            )],
            "none",
        ),
        panel(
            4,
            "Paused configurations",
            "stat",
            [8, 9, 8, 6],
            vec![target(
                &format!("sum({by} (stash_backupconfiguration_paused{filter}))"),
                "paused",
                false,
            )],
            "none",
        ),
        panel(
            5,
            "Paused for",
            "table",
            [16, 9, 8, 6],
            vec![target(
                &format!(
                    "time() - {by} (stash_backupconfiguration_paused_since_timestamp_seconds{filter})"
                ),
                "",
                true,
            )],
            "s",
        ),
        panel(
            6,
            "BackupSessions present, by phase",
            "timeseries",
            [0, 15, 24, 8],
            vec![target(
                &format!(
                    "sum by (phase) (max by (namespace, backupconfiguration, phase) (stash_backup_sessions{filter}))"
                ),
                "{{phase}}",
                false,
            )],
            "none",
        ),
    ]
}

/// The Repositories' size, snapshots and integrity.
fn repository_panels() -> Vec<Value> {
    vec![
        panel(
            7,
            "Repository size",
            "timeseries",
            [0, 23, 12, 8],
            vec![target(
                "max by (namespace, repository) (stash_repository_size_bytes{namespace=~\"$namespace\"})",
                "{{namespace}}/{{repository}}",
                false,
            )],
            "bytes",
        ),
        panel(
            8,
            "Snapshots and integrity",
            "table",
            [12, 23, 12, 8],
            vec![
                target(
                    "max by (namespace, repository) (stash_repository_snapshots{namespace=~\"$namespace\"})",
                    "",
                    true,
                ),
                json!({
                    "datasource": datasource(),
                    "expr": "max by (namespace, repository) (stash_repository_integrity{namespace=~\"$namespace\"})",
                    "instant": true,
                    "range": false,
                    "format": "table",
                    "refId": "B",
                }),
            ],
            "none",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_have_unique_ids_and_query_stash_series() {
        let d = dashboard();
        let panels = d["panels"].as_array().unwrap();
        let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
        ids.dedup();
        assert_eq!(ids.len(), panels.len());
        for p in panels {
            for t in p["targets"].as_array().unwrap() {
                assert!(t["expr"].as_str().unwrap().contains("stash_"), "{p}");
            }
        }
        assert_eq!(d["uid"], UID);
    }
}
