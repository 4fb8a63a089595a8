//! Pure decisions of `stash restore`: which rule applies to this host, which
//! restic commands that rule means, and what to do with the session as it is
//! now. No I/O, so every case is a table test.
//!
//! The init container decides while it holds the workload's restore Lease
//! (`lock-<kind>-<name>-restore`), so a `Running` entry for its host can only
//! be a claim whose run stopped (the claimer holds the Lease for as long as it
//! restores): that is reported interrupted, never run again, exactly as the
//! backup sidecar treats its own claims.

use crate::api::{HostRestorePhase, HostRestoreStats, RestoreRule, RestoreSession};

/// Reported on a host whose claim had no run behind it.
pub const INTERRUPTED: &str = "the restore was interrupted (the init container stopped before it reported); delete and re-create the RestoreSession to restore again";

/// What to do for this host now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'a> {
    /// Nothing to restore; the pod may start (why).
    Done(&'static str),
    /// This host failed before; the pod stays in Init (the recorded error).
    Failed(String),
    /// No rule names this host: report it `Unknown` and let the pod start.
    NoRule,
    /// Claim the host and restore with this rule.
    Restore(&'a RestoreRule),
    /// A claim with no run behind it: report Failed as interrupted.
    Interrupted,
}

/// The rule that applies to `host`: the first that names it in
/// `targetHosts`, else the first with no `targetHosts` (every other host).
pub fn rule_for<'a>(rs: &'a RestoreSession, host: &str) -> Option<&'a RestoreRule> {
    let rules = rs
        .spec
        .target
        .as_ref()
        .map(|t| t.rules.as_slice())
        .unwrap_or(&[]);
    rules
        .iter()
        .find(|r| r.target_hosts.iter().any(|h| h == host))
        .or_else(|| rules.iter().find(|r| r.target_hosts.is_empty()))
}

/// Decides on the session's latest state, for `host`.
pub fn decide<'a>(rs: &'a RestoreSession, host: &str) -> Decision<'a> {
    if rs.is_deleting() {
        return Decision::Done("the RestoreSession is being deleted");
    }
    match rs.host_stats(host).and_then(|s| s.phase) {
        Some(HostRestorePhase::Succeeded) => Decision::Done("this host has already restored"),
        Some(HostRestorePhase::Unknown) => {
            Decision::Done("no rule of the RestoreSession names this host")
        }
        Some(HostRestorePhase::Failed) => Decision::Failed(
            rs.host_stats(host)
                .and_then(|s| s.error.clone())
                .unwrap_or_else(|| "the restore failed".to_string()),
        ),
        Some(HostRestorePhase::Running) => Decision::Interrupted,
        None => match rule_for(rs, host) {
            Some(rule) => Decision::Restore(rule),
            None => Decision::NoRule,
        },
    }
}

/// How restic is asked for one rule (one entry per restic run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// `restic restore <id>`: a snapshot named in `snapshots`.
    Snapshot(String),
    /// `restic restore latest --host <host> --path <path>`: the latest snapshot of one path.
    LatestOfPath { host: String, path: String },
    /// Every path's latest snapshot of `host` (a rule with neither paths nor snapshots).
    LatestOfHost(String),
}

/// What a rule restores on `host`: its `snapshots`, or the latest snapshot
/// of each of its `paths` from `sourceHost` (default: `host` itself), or, with
/// neither, the latest snapshot of every path `sourceHost` backed up.
pub fn selections(rule: &RestoreRule, host: &str) -> Vec<Selection> {
    let source = rule
        .source_host
        .as_deref()
        .filter(|h| !h.is_empty())
        .unwrap_or(host)
        .to_string();
    if !rule.snapshots.is_empty() {
        return rule
            .snapshots
            .iter()
            .cloned()
            .map(Selection::Snapshot)
            .collect();
    }
    if rule.paths.is_empty() {
        return vec![Selection::LatestOfHost(source)];
    }
    rule.paths
        .iter()
        .map(|p| Selection::LatestOfPath {
            host: source.clone(),
            path: p.clone(),
        })
        .collect()
}

/// `restic restore` for one snapshot (id or `latest`) into `target`, with
/// the snapshot filters restic 0.14 uses to resolve `latest`.
pub fn restore_args(
    snapshot: &str,
    target: &str,
    host: Option<&str>,
    path: Option<&str>,
) -> Vec<String> {
    let mut args = vec![
        "restore".to_string(),
        snapshot.to_string(),
        "--target".to_string(),
        target.to_string(),
    ];
    if let Some(h) = host {
        args.extend(["--host".to_string(), h.to_string()]);
    }
    if let Some(p) = path {
        args.extend(["--path".to_string(), p.to_string()]);
    }
    args
}

/// `restic snapshots` listing the latest snapshot of each path of `host`.
pub fn latest_per_path_args(host: &str) -> Vec<String> {
    [
        "snapshots",
        "--json",
        "--no-lock",
        "--latest",
        "1",
        "--host",
        host,
    ]
    .map(String::from)
    .to_vec()
}

/// `status.stats[]` with this host's entry inserted or replaced.
pub fn upsert_host(stats: &[HostRestoreStats], entry: HostRestoreStats) -> Vec<HostRestoreStats> {
    let mut out = stats.to_vec();
    match out.iter_mut().find(|h| h.hostname == entry.hostname) {
        Some(existing) => *existing = entry,
        None => out.push(entry),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RestoreSessionSpec, RestoreSessionStatus, RestoreTarget};

    fn rule(hosts: &[&str], source: Option<&str>, paths: &[&str], snaps: &[&str]) -> RestoreRule {
        RestoreRule {
            target_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            source_host: source.map(String::from),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            snapshots: snaps.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn session(rules: Vec<RestoreRule>, stats: Vec<HostRestoreStats>) -> RestoreSession {
        let mut rs = RestoreSession::new(
            "restore",
            RestoreSessionSpec {
                target: Some(RestoreTarget {
                    rules,
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        rs.status = Some(RestoreSessionStatus {
            stats,
            ..Default::default()
        });
        rs
    }

    fn entry(host: &str, phase: HostRestorePhase, error: Option<&str>) -> HostRestoreStats {
        HostRestoreStats {
            hostname: host.into(),
            phase: Some(phase),
            error: error.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn a_named_host_wins_over_the_catch_all_rule() {
        let rs = session(
            vec![
                rule(&[], None, &["/all"], &[]),
                rule(&["host-1"], Some("host-0"), &["/one"], &[]),
            ],
            vec![],
        );
        assert_eq!(rule_for(&rs, "host-1").unwrap().paths, ["/one"]);
        assert_eq!(rule_for(&rs, "host-2").unwrap().paths, ["/all"]);
        let only_named = session(vec![rule(&["host-1"], None, &["/one"], &[])], vec![]);
        assert!(rule_for(&only_named, "host-0").is_none());
        assert_eq!(decide(&only_named, "host-0"), Decision::NoRule);
    }

    #[test]
    fn the_latest_state_of_the_host_decides() {
        let r = vec![rule(&[], None, &["/d"], &[])];
        assert!(matches!(
            decide(&session(r.clone(), vec![]), "host-0"),
            Decision::Restore(_)
        ));
        let done = session(
            r.clone(),
            vec![entry("host-0", HostRestorePhase::Succeeded, None)],
        );
        assert!(matches!(decide(&done, "host-0"), Decision::Done(_)));
        // Another host's result does not count for this one.
        assert!(matches!(decide(&done, "host-1"), Decision::Restore(_)));
        let failed = session(
            r.clone(),
            vec![entry("host-0", HostRestorePhase::Failed, Some("boom"))],
        );
        assert_eq!(decide(&failed, "host-0"), Decision::Failed("boom".into()));
        let claimed = session(
            r.clone(),
            vec![entry("host-0", HostRestorePhase::Running, None)],
        );
        assert_eq!(decide(&claimed, "host-0"), Decision::Interrupted);
        let mut deleting = session(r, vec![]);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(matches!(decide(&deleting, "host-0"), Decision::Done(_)));
    }

    #[test]
    fn selections_follow_the_rule() {
        assert_eq!(
            selections(&rule(&[], None, &["/a", "/b"], &[]), "host-0"),
            [
                Selection::LatestOfPath {
                    host: "host-0".into(),
                    path: "/a".into()
                },
                Selection::LatestOfPath {
                    host: "host-0".into(),
                    path: "/b".into()
                },
            ]
        );
        assert_eq!(
            selections(&rule(&[], Some("host-3"), &["/a"], &[]), "host-0"),
            [Selection::LatestOfPath {
                host: "host-3".into(),
                path: "/a".into()
            }]
        );
        assert_eq!(
            selections(&rule(&[], Some("host-3"), &[], &["abc123"]), "host-0"),
            [Selection::Snapshot("abc123".into())]
        );
        assert_eq!(
            selections(&rule(&[], None, &[], &[]), "node-a"),
            [Selection::LatestOfHost("node-a".into())]
        );
        assert_eq!(
            restore_args("latest", "/", Some("host-0"), Some("/source/data")),
            [
                "restore",
                "latest",
                "--target",
                "/",
                "--host",
                "host-0",
                "--path",
                "/source/data"
            ]
        );
    }

    #[test]
    fn upsert_replaces_only_this_host() {
        let stats = vec![
            entry("host-0", HostRestorePhase::Running, None),
            entry("host-1", HostRestorePhase::Succeeded, None),
        ];
        let out = upsert_host(&stats, entry("host-0", HostRestorePhase::Failed, Some("x")));
        assert_eq!(out[0].phase, Some(HostRestorePhase::Failed));
        assert_eq!(out[1], stats[1]);
        assert_eq!(
            upsert_host(&[], entry("h", HostRestorePhase::Unknown, None)).len(),
            1
        );
    }
}
