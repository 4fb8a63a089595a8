//! Which one object a workload's pod template follows: the choice the
//! sidecar planner ([`crate::sidecar::plan`], BackupConfigurations) and the
//! `stash-init` planner ([`crate::restore::init::plan`], RestoreSessions)
//! share, kept in one place so the two can never disagree on it.
//!
//! The rule, in order:
//! 1. a workload whose pod template is a copy of its controller's (a
//!    Deployment's ReplicaSet, see `workload::template_controller`)
//!    is never patched: changing the copy makes the owner's controller make
//!    another copy, for ever; a warning says so when an object targets it;
//! 2. objects being deleted, or naming another apiVersion, do not count;
//! 3. none left: what stash injected is removed; exactly one: it is applied;
//!    several: nothing changes (whichever we picked could be the wrong one and
//!    every choice restarts the pods), and a warning names them all.
//!
//! Then the chosen object's Repository ([`repository`]): missing, nothing is
//! injected and a warning says what to do.

use std::sync::Arc;

use crate::api::{BackupConfiguration, Repository, RestoreSession, TargetRef};
use crate::store::Snapshot;

/// The Repository `repository_name` that `owner` (`BackupConfiguration`,
/// its name) names, in `namespace`; else the warning that `part` (`stash
/// sidecar`) was not injected into `workload()` (`Deployment demo/app`).
/// The messages are built only when there is one to give.
pub fn repository<'s>(
    snap: &'s Snapshot,
    namespace: &str,
    repository_name: Option<&str>,
    owner: (&str, &str),
    part: &str,
    workload: impl Fn() -> String,
) -> Result<&'s Arc<Repository>, String> {
    let (kind, owner_name) = owner;
    let Some(name) = repository_name else {
        return Err(format!(
            "{kind} {namespace}/{owner_name} names no repository; the {part} was not injected into {}: set spec.repository.name",
            workload()
        ));
    };
    snap.repository(namespace, name).ok_or_else(|| {
        format!(
            "Repository {namespace}/{name} of {kind} {namespace}/{owner_name} does not exist; the {part} was not injected into {}: create the Repository",
            workload()
        )
    })
}

/// A stash object that targets a workload.
pub trait Targets {
    fn target_ref(&self) -> Option<&TargetRef>;
    fn is_deleting(&self) -> bool;
    fn name(&self) -> &str;
}

impl Targets for BackupConfiguration {
    fn target_ref(&self) -> Option<&TargetRef> {
        BackupConfiguration::target_ref(self)
    }
    fn is_deleting(&self) -> bool {
        BackupConfiguration::is_deleting(self)
    }
    fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
}

/// The index holds objects behind `Arc`s; choosing among those hands back
/// the `Arc` (the sidecar's memo keys on it).
impl<T: Targets> Targets for std::sync::Arc<T> {
    fn target_ref(&self) -> Option<&TargetRef> {
        (**self).target_ref()
    }
    fn is_deleting(&self) -> bool {
        (**self).is_deleting()
    }
    fn name(&self) -> &str {
        (**self).name()
    }
}

impl Targets for RestoreSession {
    fn target_ref(&self) -> Option<&TargetRef> {
        RestoreSession::target_ref(self)
    }
    fn is_deleting(&self) -> bool {
        RestoreSession::is_deleting(self)
    }
    fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
}

/// The workload, as far as the choice reads it.
pub struct Workload<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// (kind, name) of the controller that owns its pod template, if any.
    pub controller: Option<(&'a str, &'a str)>,
}

/// How the warnings name what is (not) changed.
pub struct Words {
    /// What stash puts in the pod template: `sidecar`, `stash-init container`.
    pub part: &'static str,
    /// The targeting kind, plural: `BackupConfigurations`, `RestoreSessions`.
    pub kinds: &'static str,
}

/// The choice.
#[derive(Debug, PartialEq)]
pub enum Choice<'a, T> {
    /// Leave the pod template as it is, for these reasons (maybe none).
    Leave(Vec<String>),
    /// Nothing targets the workload: remove what stash injected.
    Remove,
    /// Exactly one live object targets it: apply it.
    Apply(&'a T),
}

/// Chooses among `targeting` (the objects whose `target.ref` names the
/// workload's kind and name in its namespace, sorted by name).
pub fn choose<'a, T: Targets>(
    workload: &Workload<'_>,
    targeting: &[&'a T],
    words: &Words,
) -> Choice<'a, T> {
    let display = format!("{} {}/{}", workload.kind, workload.namespace, workload.name);
    if let Some((owner_kind, owner_name)) = workload.controller {
        let warnings = (!targeting.is_empty())
            .then(|| {
                format!(
                    "{display} is controlled by {owner_kind} {}/{owner_name}, which owns its pod template; stash left its {} unchanged: target the {owner_kind} instead",
                    workload.namespace, words.part
                )
            })
            .into_iter()
            .collect();
        return Choice::Leave(warnings);
    }
    let live: Vec<&'a T> = targeting
        .iter()
        .copied()
        .filter(|t| {
            !t.is_deleting()
                && t.target_ref()
                    .is_some_and(|r| r.api_version == workload.api_version)
        })
        .collect();
    match live.as_slice() {
        [] => Choice::Remove,
        [one] => Choice::Apply(one),
        several => {
            let names: Vec<&str> = several.iter().map(|t| t.name()).collect();
            Choice::Leave(vec![format!(
                "{display} is targeted by several {} ({}); stash left its {} unchanged: delete all but one of them",
                words.kinds,
                names.join(", "),
                words.part
            )])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RestoreSessionSpec, RestoreTarget};

    fn session(name: &str, api_version: &str, deleting: bool) -> RestoreSession {
        let mut rs = RestoreSession::new(
            name,
            RestoreSessionSpec {
                target: Some(RestoreTarget {
                    target_ref: TargetRef {
                        api_version: api_version.into(),
                        kind: "Deployment".into(),
                        name: "stash-demo".into(),
                    },
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        if deleting {
            rs.metadata.deletion_timestamp =
                Some(serde_json::from_value(serde_json::json!("2026-01-01T00:00:00Z")).unwrap());
        }
        rs
    }

    const RESTORE: Words = Words {
        part: "stash-init container",
        kinds: "RestoreSessions",
    };

    fn deployment(controller: Option<(&'static str, &'static str)>) -> Workload<'static> {
        Workload {
            api_version: "apps/v1",
            kind: "Deployment",
            namespace: "demo",
            name: "stash-demo",
            controller,
        }
    }

    #[test]
    fn one_live_object_is_applied_none_removes_several_leave() {
        let (a, b) = (
            session("a", "apps/v1", false),
            session("b", "apps/v1", false),
        );
        let gone = session("gone", "apps/v1", true);
        let other = session("other", "extensions/v1beta1", false);
        let w = deployment(None);
        assert_eq!(choose::<RestoreSession>(&w, &[], &RESTORE), Choice::Remove);
        assert_eq!(choose(&w, &[&gone, &other], &RESTORE), Choice::Remove);
        assert_eq!(choose(&w, &[&a, &gone], &RESTORE), Choice::Apply(&a));
        assert_eq!(
            choose(&w, &[&a, &b], &RESTORE),
            Choice::Leave(vec![
                "Deployment demo/stash-demo is targeted by several RestoreSessions (a, b); stash left its stash-init container unchanged: delete all but one of them".into()
            ])
        );
    }

    #[test]
    fn a_controlled_template_is_left_and_said_so_only_when_targeted() {
        let a = session("a", "apps/v1", false);
        let w = deployment(Some(("Rollout", "demo-rollout")));
        assert_eq!(
            choose(&w, &[&a], &RESTORE),
            Choice::Leave(vec![
                "Deployment demo/stash-demo is controlled by Rollout demo/demo-rollout, which owns its pod template; stash left its stash-init container unchanged: target the Rollout instead".into()
            ])
        );
        assert_eq!(
            choose::<RestoreSession>(&w, &[], &RESTORE),
            Choice::Leave(vec![])
        );
    }
}
