//! What the two containers stash puts in a workload's pod template have in
//! common: the backup sidecar (`stash`, [`crate::sidecar::plan`], for the
//! BackupConfiguration that targets the workload) and the restore init
//! container (`stash-init`, [`crate::restore::init::plan`], for the
//! RestoreSession). Both planners answer with the one [`Plan`] type, take
//! the same steps to get there (`read_then`, `follow`) and name their
//! container in their messages through its [`Part`].
//!
//! What stays with each planner is what differs: the container it builds,
//! where it goes (appended to the containers, or first among the init
//! containers) and which annotations mark it as stash's.

use std::sync::Arc;

use json_patch::PatchOperation;
use serde_json::Value;

use crate::api::Repository;
use crate::api::{
    ANNOTATION_CONFIG_HASH, ANNOTATION_LAST_APPLIED, ANNOTATION_LAST_APPLIED_RESTORE,
    RESTORE_INIT_CONTAINER, SIDECAR_CONTAINER,
};
use crate::patch::{self, Op};
use crate::store::Snapshot;
use crate::targeting::{self, Choice, Words};
use crate::workload::{View, name_of};

/// What one planner wants done to one workload. `O` is how the patch's
/// operations are held: json-patch's own for the reconcilers (and anyone
/// applying them), stash's shared [`Op`] for the webhook's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<O = PatchOperation> {
    /// JSON patch against exactly the workload given to the planner; empty:
    /// nothing to do.
    pub ops: Vec<O>,
    /// Soft problems for the user (admission warnings, reconciler events
    /// and conditions).
    pub warnings: Vec<String>,
    /// The object whose container the workload carries after the patch (the
    /// BackupConfiguration for the sidecar, the RestoreSession for
    /// `stash-init`); `None` when removing, leaving it as it is, or untargeted.
    pub applied: Option<String>,
}

impl<O> Default for Plan<O> {
    fn default() -> Self {
        Self {
            ops: Vec::new(),
            warnings: Vec::new(),
            applied: None,
        }
    }
}

impl<O> Plan<O> {
    /// Nothing to do, for these reasons (maybe none).
    pub fn leave(warnings: Vec<String>) -> Self {
        Self {
            warnings,
            ..Self::default()
        }
    }
}

impl Plan<Op> {
    /// The same plan, its operations as json-patch's own.
    pub fn into_json_patch(self) -> Plan {
        Plan {
            ops: patch::to_json_patch(&self.ops),
            warnings: self.warnings,
            applied: self.applied,
        }
    }
}

/// Which of stash's containers a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The backup sidecar `stash`, among the containers.
    Sidecar,
    /// The restore container `stash-init`, among the init containers.
    Init,
}

impl Part {
    /// The container's name.
    pub const fn container(self) -> &'static str {
        match self {
            Part::Sidecar => SIDECAR_CONTAINER,
            Part::Init => RESTORE_INIT_CONTAINER,
        }
    }

    /// The container as the messages name it.
    pub const fn display(self) -> &'static str {
        match self {
            Part::Sidecar => "stash sidecar",
            Part::Init => "stash-init container",
        }
    }

    /// How the shared choice's warnings name the container and its owners.
    pub(crate) const fn words(self) -> Words {
        match self {
            Part::Sidecar => Words {
                part: "sidecar",
                kinds: "BackupConfigurations",
            },
            Part::Init => Words {
                part: "stash-init container",
                kinds: "RestoreSessions",
            },
        }
    }

    /// What did not happen when the container could not be put in place.
    const fn outcome(self) -> &'static str {
        match self {
            Part::Sidecar => "the stash sidecar was not injected",
            Part::Init => "the restore was not set up",
        }
    }

    /// The pod template's list that holds the container, as a JSON pointer
    /// under the template, and as the messages name it.
    const fn list(self) -> (&'static str, &'static str) {
        match self {
            Part::Sidecar => ("/spec/containers", "a container"),
            Part::Init => ("/spec/initContainers", "an init container"),
        }
    }

    /// Whether a pod template (`spec.template` JSON) carries the container.
    pub fn carried_by(self, pod_template: &Value) -> bool {
        pod_template
            .pointer(self.list().0)
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| name_of(c) == Some(self.container())))
    }

    /// Whether stash's annotations say it injected the container.
    pub(crate) fn injected_by_stash(self, view: &View) -> bool {
        match self {
            Part::Sidecar => {
                view.annotated(ANNOTATION_LAST_APPLIED)
                    || view.template_annotated(ANNOTATION_CONFIG_HASH)
            }
            Part::Init => view.annotated(ANNOTATION_LAST_APPLIED_RESTORE),
        }
    }

    /// The container in the workload's pod template: its index in its list
    /// and its JSON.
    pub(crate) fn found<'v>(self, view: &'v View) -> Option<(usize, &'v Value)> {
        let (list, i) = match self {
            Part::Sidecar => (&view.containers, view.container_index(self.container())?),
            Part::Init => (&view.init_containers, view.init_index(self.container())?),
        };
        Some((i, list[i].value()))
    }

    /// The warning when the workload has a container of this name that stash
    /// did not inject and that differs from `want`: overwriting it would
    /// break the user's pods, so nothing is put in place.
    pub(crate) fn name_taken(self, view: &View, want: &Value) -> Option<String> {
        let (_, have) = self.found(view)?;
        (!self.injected_by_stash(view) && !covers(have, want)).then(|| {
            format!(
                "{} already has {} named {:?} that stash did not inject; {}: rename that container",
                view.display(),
                self.list().1,
                self.container(),
                self.outcome()
            )
        })
    }

    /// The Repository `owner` (kind, name) names, from the snapshot; else
    /// the plan that does nothing and says why (no name, no such Repository).
    pub(crate) fn repository<'s>(
        self,
        view: &View,
        snap: &'s Snapshot,
        owner: (&str, &str),
        repository_name: Option<&str>,
    ) -> Result<&'s Arc<Repository>, Plan<Op>> {
        targeting::repository(
            snap,
            &view.namespace,
            repository_name,
            owner,
            self.display(),
            || view.display(),
        )
        .map_err(|warning| Plan::leave(vec![warning]))
    }

    /// The warning when the user's containers mount a volume `name` that the
    /// container needs in another shape.
    pub(crate) fn volume_taken(self, view: &View, name: &str) -> String {
        format!(
            "{} already uses a volume named {name:?}, which the {} needs; {}: rename that volume",
            view.display(),
            self.display(),
            self.outcome()
        )
    }
}

/// The first step of both planners: the workload (raw JSON of an apps/v1
/// workload) read into a view and planned by `plan`. Not a workload kind:
/// nothing to do; a workload whose shape cannot be read: a warning.
pub(crate) fn read_then(
    part: Part,
    workload: &Value,
    plan: impl FnOnce(&View) -> Plan<Op>,
) -> Plan<Op> {
    let mut text = String::new();
    match View::read(workload, &mut text) {
        Ok(Some(view)) => plan(&view),
        Ok(None) => Plan::default(),
        Err(unreadable) => Plan::leave(vec![unreadable.warning(part.display())]),
    }
}

/// The shared choice among the targeting objects ([`crate::targeting::choose`])
/// as a plan: left as it is with its warnings, `remove`d, or `apply`ing the
/// one chosen.
pub(crate) fn follow<T>(
    choice: Choice<'_, T>,
    remove: impl FnOnce() -> Vec<Op>,
    apply: impl FnOnce(&T) -> Plan<Op>,
) -> Plan<Op> {
    match choice {
        Choice::Leave(warnings) => Plan::leave(warnings),
        Choice::Remove => Plan {
            ops: remove(),
            ..Plan::default()
        },
        Choice::Apply(chosen) => apply(chosen),
    }
}

/// Whether `have` holds every field of `want` with the same value (extra
/// fields, such as API-server defaults or other managers' fields, are
/// allowed; lists compare element by element and must have the same length).
/// A field `want` sets to `null` is covered by its absence. Resource
/// quantities (`resources.limits/requests`, `sizeLimit`) compare by value,
/// since the API server stores them in canonical form (`0.5` CPU comes back
/// as `500m`).
///
/// The one "already applied?" check: the sidecar and `stash-init` planners
/// use it on a stored container or volume, the reconciler
/// (`reconcile::apply::ensure`) on a live object, to skip a write that would
/// change nothing.
pub fn covers(have: &Value, want: &Value) -> bool {
    covers_at(have, want, false)
}

fn covers_at(have: &Value, want: &Value, quantities: bool) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w.iter().all(|(k, wv)| {
            let q = quantities || matches!(k.as_str(), "limits" | "requests" | "sizeLimit");
            match h.get(k) {
                Some(hv) => covers_at(hv, wv, q),
                None => wv.is_null(),
            }
        }),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len()
                && h.iter()
                    .zip(w)
                    .all(|(hv, wv)| covers_at(hv, wv, quantities))
        }
        (Value::String(h), Value::String(w)) if quantities && h != w => {
            match (quantity(h), quantity(w)) {
                (Some(a), Some(b)) => (a - b).abs() <= f64::EPSILON * 16.0 * a.abs().max(b.abs()),
                _ => false,
            }
        }
        _ => have == want,
    }
}

/// The value of a Kubernetes quantity (`500m`, `1.5Gi`, `1e3`), if it is one.
fn quantity(s: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(suffix, scale)| s.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((s, 1.0));
    let plain = number.trim_start_matches(['+', '-']);
    let mantissa = plain.split(['e', 'E']).next().unwrap_or("");
    let digits_ok = !mantissa.is_empty()
        && mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && mantissa.bytes().filter(|b| *b == b'.').count() <= 1
        && mantissa != ".";
    if !digits_ok {
        return None;
    }
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn covers_allows_api_server_defaults_only() {
        let want = json!({"name": "v", "secret": {"secretName": "s"}});
        assert!(covers(
            &json!({"name": "v", "secret": {"secretName": "s", "defaultMode": 420}}),
            &want
        ));
        assert!(!covers(
            &json!({"name": "v", "secret": {"secretName": "t"}}),
            &want
        ));
        assert!(!covers(&json!({"a": [1, 2]}), &json!({"a": [1]})));
    }

    #[test]
    fn quantities_compare_by_value_where_kubernetes_canonicalizes_them() {
        let want = json!({"resources": {"limits": {"cpu": "0.5", "memory": "1024Mi"}}});
        let stored = json!({"resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}});
        assert!(covers(&stored, &want));
        assert!(!covers(
            &json!({"resources": {"limits": {"cpu": "600m", "memory": "1Gi"}}}),
            &want
        ));
        assert!(covers(
            &json!({"emptyDir": {"sizeLimit": "1000M"}}),
            &json!({"emptyDir": {"sizeLimit": "1G"}})
        ));
        // Elsewhere strings are strings.
        assert!(!covers(&json!({"value": "1k"}), &json!({"value": "1000"})));
        assert_eq!(quantity("1.5Gi"), Some(1.5 * 1073741824.0));
        assert_eq!(quantity("2e3"), Some(2000.0));
        for not in ["", "Gi", "1.2.3", "abc", ".", "1x"] {
            assert_eq!(quantity(not), None, "{not}");
        }
    }
}
