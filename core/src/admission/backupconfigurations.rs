//! `POST /validate/backupconfigurations`: schedule, target, retention,
//! `timeOut`, one configuration per workload.
//!
//! Everything that would only fail later — a CronJob the API server refuses, a
//! sidecar that cannot be injected, `restic forget --prune` with nothing to
//! keep — is refused here, at `kubectl apply` time, in one line that says what
//! to change. A Repository that does not exist yet is only a warning: users
//! often apply the configuration first.

use super::validate::{self, Ctx, Validated};
use super::{Decision, Request, cron};
use crate::api::{
    BackupConfiguration, BackupTarget, RetentionPolicy, WORKLOAD_API_VERSION, WORKLOAD_KINDS,
    timeout,
};
use crate::settings::Settings;
use crate::store::Snapshot;

/// Validates a BackupConfiguration on CREATE and UPDATE.
pub fn validate(req: &Request, snap: &Snapshot, settings: &Settings) -> Decision {
    validate::admit::<BackupConfiguration>(req, snap, settings)
}

impl Validated for BackupConfiguration {
    const KIND: &'static str = "BackupConfiguration";

    fn is_deleting(&self) -> bool {
        // A configuration being deleted only loses finalizers: never block that.
        self.metadata.deletion_timestamp.is_some()
    }

    fn on_update(old: Option<&Self>, new: &Self, _me: &str) -> Option<Decision> {
        // Labels, annotations, finalizers: the spec was judged before.
        old.filter(|o| o.spec == new.spec)
            .map(|_| Decision::allow())
    }

    fn rule(&self, ctx: &Ctx<'_>) -> Result<Vec<String>, String> {
        let (me, namespace, name) = (ctx.me, ctx.namespace, ctx.name);
        check_spec(self, me)?;
        if let Some(target) = self.target_ref() {
            let others: Vec<String> = ctx
                .snap
                .configs_for_target(namespace, &target.kind, &target.name)
                .into_iter()
                .filter(|o| !o.is_deleting() && o.metadata.name.as_deref() != Some(name))
                .filter_map(|o| o.metadata.name.clone())
                .collect();
            if !others.is_empty() {
                let list: Vec<String> = others
                    .iter()
                    .map(|o| format!("BackupConfiguration {namespace}/{o}"))
                    .collect();
                return Err(format!(
                    "{me} targets {} {namespace}/{}, which {} already targets; a workload can have only one BackupConfiguration: delete {} or target another workload",
                    target.kind,
                    target.name,
                    list.join(" and "),
                    if others.len() == 1 {
                        "that one"
                    } else {
                        "those"
                    },
                ));
            }
        }
        let mut warnings = Vec::new();
        if let Some(repo) = self.repository_name()
            && ctx.snap.repository(namespace, repo).is_none()
        {
            warnings.push(format!(
                "Repository {namespace}/{repo} does not exist; the stash sidecar is injected once it does"
            ));
        }
        if self
            .spec
            .target
            .as_ref()
            .is_some_and(|t| t.paths.is_empty())
        {
            warnings.push(format!(
                "{me} has no target.paths; its backups will hold nothing"
            ));
        }
        Ok(warnings)
    }
}

/// The first rule `bc` breaks, as a one-line denial.
fn check_spec(bc: &BackupConfiguration, me: &str) -> Result<(), String> {
    let spec = &bc.spec;
    let Some(schedule) = spec.schedule.as_deref() else {
        return Err(format!(
            "{me} has no spec.schedule: set a cron schedule such as \"*/5 * * * *\""
        ));
    };
    if let Err(e) = cron::validate(schedule) {
        return Err(format!(
            "{me} has an invalid spec.schedule {schedule:?}: {e}; {}",
            e.fix()
        ));
    }
    if bc.repository_name().is_none() {
        return Err(format!(
            "{me} has no spec.repository.name: set it to the Repository the backups go to"
        ));
    }
    let Some(target) = &spec.target else {
        return Err(format!(
            "{me} has no spec.target: set target.ref to the apps/v1 workload to back up"
        ));
    };
    check_target(target, me)?;
    if let Some(policy) = &spec.retention_policy {
        check_retention(policy, me)?;
    }
    if let Some(n) = spec.backup_history_limit.filter(|n| *n < 0) {
        return Err(format!(
            "{me} has backupHistoryLimit: {n}: it cannot be negative"
        ));
    }
    if let (Some(text), Err(why)) = (spec.time_out.as_deref(), timeout::time_out(bc)) {
        return Err(format!(
            "{me} has an invalid spec.timeOut {text:?}: {why}; use a Go duration such as \"30m\" or \"2h\""
        ));
    }
    Ok(())
}

/// The target: an apps/v1 workload with a name, mounts with a volume name
/// and an absolute mountPath, absolute paths.
fn check_target(target: &BackupTarget, me: &str) -> Result<(), String> {
    let r = &target.target_ref;
    if r.api_version != WORKLOAD_API_VERSION || !WORKLOAD_KINDS.contains(&r.kind.as_str()) {
        return Err(format!(
            "{me} targets {:?} {:?}, which stash cannot inject into: set target.ref to apiVersion {WORKLOAD_API_VERSION} and kind {}",
            r.api_version,
            r.kind,
            WORKLOAD_KINDS.join(", ")
        ));
    }
    if r.name.is_empty() {
        return Err(format!(
            "{me} has no target.ref.name: set it to the workload's name"
        ));
    }
    if let Some(i) = target
        .volume_mounts
        .iter()
        .position(|m| m.name.is_empty() || !m.mount_path.starts_with('/'))
    {
        return Err(format!(
            "{me} has target.volumeMounts[{i}] without a volume name or an absolute mountPath: set both"
        ));
    }
    if let Some(p) = target.paths.iter().find(|p| !p.starts_with('/')) {
        return Err(format!(
            "{me} has target path {p:?}, which is not absolute: start it with /"
        ));
    }
    Ok(())
}

/// The retention policy: named, no negative keep count, no prune that
/// would delete every snapshot.
fn check_retention(policy: &RetentionPolicy, me: &str) -> Result<(), String> {
    if policy.name.is_empty() {
        return Err(format!(
            "{me} has a retentionPolicy without a name: set retentionPolicy.name (e.g. keep-last-5)"
        ));
    }
    if let Some((field, n)) = policy
        .keep_counts()
        .into_iter()
        .find_map(|(f, _, v)| v.filter(|n| *n < 0).map(|n| (f, n)))
    {
        return Err(format!(
            "{me} has retentionPolicy.{field}: {n}: keep counts cannot be negative"
        ));
    }
    if policy.prune && !policy.has_keep_rule() {
        return Err(format!(
            "{me} has retentionPolicy {:?} with prune: true but no keep rule, which would delete every snapshot: add keepLast (or another keep rule) or set prune: false",
            policy.name
        ));
    }
    Ok(())
}
