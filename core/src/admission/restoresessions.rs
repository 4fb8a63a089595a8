//! `POST /validate/restoresessions`: a RestoreSession whose rules say, for
//! every host, exactly one thing to restore.
//!
//! Denied (one line naming what to change): no repository, a target that is
//! not an apps/v1 workload stash can inject into, at most one rule may leave
//! `targetHosts` empty (the rule for every other host), no host named by two
//! rules, `snapshots` and `paths` not both in one rule, relative paths, a
//! volumeMount without a name or an absolute mountPath; and on UPDATE a
//! changed spec (the restore may already have run with the old one). Warned:
//! the Repository does not exist yet, unknown fields.

use std::collections::BTreeMap;

use super::validate::{self, Ctx, Validated};
use super::{Decision, Request};
use k8s_openapi::api::core::v1::VolumeMount;

use crate::api::{RestoreRule, RestoreSession, TargetRef, WORKLOAD_API_VERSION, WORKLOAD_KINDS};
use crate::settings::Settings;
use crate::store::Snapshot;

/// Validates a RestoreSession on CREATE and UPDATE.
pub fn validate(req: &Request, snap: &Snapshot, settings: &Settings) -> Decision {
    validate::admit::<RestoreSession>(req, snap, settings)
}

impl Validated for RestoreSession {
    const KIND: &'static str = "RestoreSession";

    fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// An unchanged spec is allowed, a changed one denied: the restore may
    /// already have run with the old one.
    fn on_update(old: Option<&Self>, new: &Self, me: &str) -> Option<Decision> {
        old.map(|old| {
            if old.spec == new.spec {
                Decision::allow()
            } else {
                Decision::deny(format!(
                    "{me}: spec is immutable (the restore may already have run); delete it and create a new RestoreSession"
                ))
            }
        })
    }

    fn rule(&self, ctx: &Ctx<'_>) -> Result<Vec<String>, String> {
        let (me, ns) = (ctx.me, ctx.namespace);
        check(self, me)?;
        let mut warnings = Vec::new();
        if let Some(repo) = self.repository_name()
            && ctx.snap.repository(ns, repo).is_none()
        {
            warnings.push(format!(
                "Repository {ns}/{repo} of {me} does not exist yet; nothing is restored until it does"
            ));
        }
        Ok(warnings)
    }
}

/// The rules a RestoreSession must follow; the error is one line.
pub fn check(rs: &RestoreSession, me: &str) -> Result<(), String> {
    if rs.repository_name().is_none() {
        return Err(format!(
            "{me} names no repository: set spec.repository.name"
        ));
    }
    let Some(target) = &rs.spec.target else {
        return Err(format!("{me} has no target: set spec.target.ref"));
    };
    check_target_ref(&target.target_ref, me)?;
    check_volume_mounts(&target.volume_mounts, me)?;
    check_rules(&target.rules, me)
}

/// The target is an apps/v1 workload stash can inject into, with a name.
fn check_target_ref(t: &TargetRef, me: &str) -> Result<(), String> {
    if t.api_version != WORKLOAD_API_VERSION || !WORKLOAD_KINDS.contains(&t.kind.as_str()) {
        return Err(format!(
            "{me} targets {} {}, which stash cannot restore into: use apiVersion apps/v1 and kind Deployment, StatefulSet, DaemonSet or ReplicaSet",
            if t.api_version.is_empty() {
                "(no apiVersion)"
            } else {
                &t.api_version
            },
            if t.kind.is_empty() {
                "(no kind)"
            } else {
                &t.kind
            },
        ));
    }
    if t.name.is_empty() {
        return Err(format!(
            "{me} targets a {} without a name: set spec.target.ref.name",
            t.kind
        ));
    }
    Ok(())
}

/// Every volumeMount has a name and an absolute mountPath.
fn check_volume_mounts(mounts: &[VolumeMount], me: &str) -> Result<(), String> {
    for (i, m) in mounts.iter().enumerate() {
        if m.name.is_empty() {
            return Err(format!("{me}: spec.target.volumeMounts[{i}] has no name"));
        }
        if !m.mount_path.starts_with('/') {
            return Err(format!(
                "{me}: spec.target.volumeMounts[{i}].mountPath {:?} is not an absolute path",
                m.mount_path
            ));
        }
    }
    Ok(())
}

/// Each rule is well formed, at most one leaves `targetHosts` empty, and no
/// host is named by two rules.
fn check_rules(rules: &[RestoreRule], me: &str) -> Result<(), String> {
    let mut catch_all: Option<usize> = None;
    let mut named: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, rule) in rules.iter().enumerate() {
        check_rule(rule, i, me)?;
        if rule.target_hosts.is_empty() {
            if let Some(first) = catch_all {
                return Err(format!(
                    "{me}: spec.target.rules[{first}] and rules[{i}] both have empty targetHosts; only one rule may apply to every other host"
                ));
            }
            catch_all = Some(i);
        }
        for host in &rule.target_hosts {
            if host.is_empty() {
                return Err(format!(
                    "{me}: spec.target.rules[{i}].targetHosts has an empty host name"
                ));
            }
            if let Some(first) = named.insert(host, i)
                && first != i
            {
                return Err(format!(
                    "{me}: host {host:?} is named by spec.target.rules[{first}] and rules[{i}]; name each host in one rule"
                ));
            }
        }
    }
    Ok(())
}

/// Rule `i` restores either snapshots or paths, absolute paths, no empty
/// snapshot id.
fn check_rule(rule: &RestoreRule, i: usize, me: &str) -> Result<(), String> {
    if !rule.snapshots.is_empty() && !rule.paths.is_empty() {
        return Err(format!(
            "{me}: spec.target.rules[{i}] sets both snapshots and paths; keep one (snapshots restore whole snapshots, paths the latest snapshot of each path)"
        ));
    }
    if let Some(p) = rule.paths.iter().find(|p| !p.starts_with('/')) {
        return Err(format!(
            "{me}: spec.target.rules[{i}].paths has {p:?}, which is not an absolute path"
        ));
    }
    if rule.snapshots.iter().any(String::is_empty) {
        return Err(format!(
            "{me}: spec.target.rules[{i}].snapshots has an empty snapshot id"
        ));
    }
    Ok(())
}
