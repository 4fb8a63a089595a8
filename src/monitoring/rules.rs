//! The alerting rules on the reconciler's metrics, built once as data and
//! written two ways: inside a Prometheus Operator `PrometheusRule`
//! (`stash manifests --monitoring`) and as a plain Prometheus rules file
//! (`manifests/monitoring/stash-rules.yaml`, which `promtool` checks and
//! unit-tests; a test keeps it equal to this module's output).
//!
//! Every expression takes `max by (namespace, backupconfiguration)` (or
//! `repository`) first: only the leading replica exports these series, but
//! during a hand-over two may, and the result must not depend on how many.
//! `StashBackupMissing` measures against the schedule's own interval (twice
//! it), not a fixed day, and leaves paused configurations to
//! `StashBackupPausedTooLong`.

use std::time::Duration;

use serde_json::{Value, json};

/// Where each alert's `runbook_url` points by default: docs/operate.md, whose
/// section `#<alert in lower case>` says what to do. An install sets the URL
/// its operators read it at (`stash manifests --runbook-base-url`).
pub const DEFAULT_RUNBOOK_BASE: &str = "docs/operate.md";

/// The alerts, in the order they are rendered.
pub const ALERTS: [&str; 4] = [
    "StashBackupFailed",
    "StashBackupMissing",
    "StashBackupPausedTooLong",
    "StashRepositoryIntegrityFailed",
];

/// What the rules depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleOptions {
    /// `StashBackupPausedTooLong` fires once a pause is older than this.
    pub paused_alert_after: Duration,
    /// docs/operate.md as the operators read it; `#<alert>` is appended.
    pub runbook_base: String,
}

impl Default for RuleOptions {
    fn default() -> Self {
        Self {
            paused_alert_after: Duration::from_secs(7 * 24 * 3600),
            runbook_base: DEFAULT_RUNBOOK_BASE.to_string(),
        }
    }
}

const BY_CONFIG: &str = "max by (namespace, backupconfiguration)";

/// `{"groups": [...]}`: the body of a rules file and of a PrometheusRule's spec.
pub fn groups(options: &RuleOptions) -> Value {
    let runbook = |alert: &str| format!("{}#{}", options.runbook_base, alert.to_lowercase());
    let paused_after = options.paused_alert_after.as_secs();
    let rules = vec![
        json!({
            "alert": "StashBackupFailed",
            "expr": format!("{BY_CONFIG} (stash_backup_last_session_phase{{phase=\"Failed\"}}) == 1"),
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Backup {{ $labels.namespace }}/{{ $labels.backupconfiguration }} failed",
                "description": "The last BackupSession of BackupConfiguration {{ $labels.namespace }}/{{ $labels.backupconfiguration }} is Failed. See its hosts' errors: kubectl stash debug backup -n {{ $labels.namespace }} {{ $labels.backupconfiguration }}",
                "runbook_url": runbook("StashBackupFailed"),
            }
        }),
        json!({
            "alert": "StashBackupMissing",
            "expr": format!(
                "(\n  (time() - {BY_CONFIG} (stash_backup_last_success_timestamp_seconds))\n  or\n  (time() - {BY_CONFIG} (stash_backupconfiguration_created_timestamp_seconds))\n)\n> 2 * {BY_CONFIG} (stash_backupconfiguration_schedule_interval_seconds)\nunless on (namespace, backupconfiguration)\n  ({BY_CONFIG} (stash_backupconfiguration_paused) == 1)\n"
            ),
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "No successful backup of {{ $labels.namespace }}/{{ $labels.backupconfiguration }} within two scheduled intervals",
                "description": "BackupConfiguration {{ $labels.namespace }}/{{ $labels.backupconfiguration }} last backed up successfully {{ $value | humanizeDuration }} ago (or was created that long ago and never was), more than twice its schedule's interval, and it is not paused.",
                "runbook_url": runbook("StashBackupMissing"),
            }
        }),
        json!({
            "alert": "StashBackupPausedTooLong",
            "expr": format!("time() - {BY_CONFIG} (stash_backupconfiguration_paused_since_timestamp_seconds) > {paused_after}"),
            "labels": {"severity": "info"},
            "annotations": {
                "summary": format!("Backup {{{{ $labels.namespace }}}}/{{{{ $labels.backupconfiguration }}}} paused for more than {}", short(paused_after)),
                "description": format!("BackupConfiguration {{{{ $labels.namespace }}}}/{{{{ $labels.backupconfiguration }}}} has been paused for {{{{ $value | humanizeDuration }}}}, longer than {}: nothing is backed up while it is. Resume it with: kubectl stash resume backup -n {{{{ $labels.namespace }}}} {{{{ $labels.backupconfiguration }}}}", short(paused_after)),
                "runbook_url": runbook("StashBackupPausedTooLong"),
            }
        }),
        json!({
            "alert": "StashRepositoryIntegrityFailed",
            "expr": "max by (namespace, repository) (stash_repository_integrity) == 0",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "Repository {{ $labels.namespace }}/{{ $labels.repository }} failed its integrity check",
                "description": "restic check found errors in Repository {{ $labels.namespace }}/{{ $labels.repository }} (status.integrity is false): its snapshots may not restore.",
                "runbook_url": runbook("StashRepositoryIntegrityFailed"),
            }
        }),
    ];
    json!({"groups": [{"name": "stash-backups", "rules": rules}]})
}

/// `7d`, `36h`, `5m`, `90s`: a threshold as a person reads it.
fn short(seconds: u64) -> String {
    match seconds {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The plain Prometheus rules file.
pub fn rules_file(options: &RuleOptions) -> Result<String, serde_yaml::Error> {
    let mut out = String::from(
        "# Alerting rules on stash's reconciler metrics (docs/operate.md, \"Alerts\").\n# Generated by src/monitoring/rules.rs with its defaults; a test keeps it current.\n# Check: promtool check rules manifests/monitoring/stash-rules.yaml\n",
    );
    out.push_str(&serde_yaml::to_string(&groups(options))?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alert_has_its_annotations_and_runbook() {
        let g = groups(&RuleOptions::default());
        let rules = g["groups"][0]["rules"].as_array().unwrap();
        let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
        assert_eq!(names, ALERTS);
        for r in rules {
            for a in ["summary", "description", "runbook_url"] {
                assert!(
                    r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                    "{r}"
                );
            }
            let runbook = r["annotations"]["runbook_url"].as_str().unwrap();
            assert!(runbook.contains("docs/operate.md#stash"), "{runbook}");
        }
    }

    #[test]
    fn the_pause_threshold_is_the_option() {
        let g = groups(&RuleOptions {
            paused_alert_after: Duration::from_secs(5),
            ..RuleOptions::default()
        });
        let expr = g["groups"][0]["rules"][2]["expr"].as_str().unwrap();
        assert!(expr.ends_with("> 5"), "{expr}");
        let g = groups(&RuleOptions::default());
        let expr = g["groups"][0]["rules"][2]["expr"].as_str().unwrap();
        assert!(expr.ends_with("> 604800"), "{expr}");
    }
}
