//! The parts of an apps/v1 workload (Deployment, StatefulSet, DaemonSet,
//! ReplicaSet) that the sidecar and `stash-init` planners read, borrowed from
//! its JSON: one reading of the object, with one set of shape checks, for
//! both, so they can never disagree about what a workload holds.
//!
//! The planners take the object as JSON rather than typed because they
//! answer with a JSON patch against exactly that JSON (indices into its
//! lists, maps it lacks), and because a workload the API server admitted may
//! still carry fields no typed struct of ours knows.

pub mod patch;

use serde_json::{Map, Value};

use crate::api::{WORKLOAD_API_VERSION, WORKLOAD_KINDS, namespace_in};
use crate::targeting;

/// A workload's identity and pod template, borrowed from its JSON.
pub(crate) struct View<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub meta: Option<&'a Map<String, Value>>,
    pub template_meta: Option<&'a Map<String, Value>>,
    pub containers: &'a [Value],
    pub init_containers: &'a [Value],
    pub volumes: Option<&'a [Value]>,
    /// StatefulSet `volumeClaimTemplates` names: mountable like pod volumes.
    pub claim_templates: Vec<&'a str>,
    /// (kind, name) of the controller that stamps out this workload's pod
    /// template (see [`template_controller`]), if any.
    pub controller: Option<(&'a str, &'a str)>,
}

impl<'a> View<'a> {
    /// `Ok(None)` for objects that are not an apps/v1 workload kind; `Err`
    /// when the object is one but its shape cannot be read.
    pub fn read(obj: &'a Value) -> Result<Option<Self>, String> {
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        if api_version != WORKLOAD_API_VERSION || !WORKLOAD_KINDS.contains(&kind) {
            return Ok(None);
        }
        let meta = optional_map(obj.get("metadata"), "metadata")?;
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        optional_map(
            meta.and_then(|m| m.get("annotations")),
            "metadata.annotations",
        )?;
        let template = obj
            .pointer("/spec/template")
            .and_then(Value::as_object)
            .ok_or("spec.template is missing or not an object")?;
        let template_meta = optional_map(template.get("metadata"), "spec.template.metadata")?;
        if let Some(m) = template_meta {
            optional_map(m.get("annotations"), "spec.template.metadata.annotations")?;
        }
        let pod = template
            .get("spec")
            .and_then(Value::as_object)
            .ok_or("spec.template.spec is missing or not an object")?;
        let list = |key: &str, what: &str| -> Result<Option<&'a [Value]>, String> {
            let Some(list) = optional_list(pod.get(key), what)? else {
                return Ok(None);
            };
            match list.iter().position(|v| name_of(v).is_none()) {
                Some(i) => Err(format!("{what}[{i}] has no name")),
                None => Ok(Some(list)),
            }
        };
        let containers = list("containers", "spec.template.spec.containers")?.unwrap_or(&[]);
        let init_containers =
            list("initContainers", "spec.template.spec.initContainers")?.unwrap_or(&[]);
        let volumes = list("volumes", "spec.template.spec.volumes")?;
        let claim_templates = obj
            .pointer("/spec/volumeClaimTemplates")
            .and_then(Value::as_array)
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| t.pointer("/metadata/name").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Self {
            controller: template_controller(kind, meta.and_then(|m| m.get("ownerReferences"))),
            api_version,
            kind,
            namespace: namespace_in(obj),
            name,
            meta,
            template_meta,
            containers,
            init_containers,
            volumes,
            claim_templates,
        }))
    }

    /// `Deployment demo/app`, for messages.
    pub fn display(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// What the shared choice among targeting objects reads.
    pub fn target(&self) -> targeting::Workload<'a> {
        targeting::Workload {
            api_version: self.api_version,
            kind: self.kind,
            namespace: self.namespace,
            name: self.name,
            controller: self.controller,
        }
    }

    /// Whether the workload's own annotations hold `key`.
    pub fn annotated(&self, key: &str) -> bool {
        annotations(self.meta).is_some_and(|a| a.contains_key(key))
    }

    /// Whether the pod template's annotations hold `key`.
    pub fn template_annotated(&self, key: &str) -> bool {
        annotations(self.template_meta).is_some_and(|a| a.contains_key(key))
    }

    /// Index of the container `name` in `spec.template.spec.containers`.
    pub fn container_index(&self, name: &str) -> Option<usize> {
        self.containers
            .iter()
            .position(|c| name_of(c) == Some(name))
    }

    /// Index of the init container `name`.
    pub fn init_index(&self, name: &str) -> Option<usize> {
        self.init_containers
            .iter()
            .position(|c| name_of(c) == Some(name))
    }

    /// Index of the pod volume `name`.
    pub fn volume_index(&self, name: &str) -> Option<usize> {
        self.volumes?.iter().position(|v| name_of(v) == Some(name))
    }

    /// Whether a container of the pod may mount volume `name`.
    pub fn has_volume(&self, name: &str) -> bool {
        self.volume_index(name).is_some() || self.claim_templates.contains(&name)
    }

    /// Every container and init container, with whether it mounts volume `name`.
    pub fn mounting(&self, name: &'a str) -> impl Iterator<Item = (&'a Value, bool)> + 'a {
        self.containers
            .iter()
            .chain(self.init_containers)
            .map(move |c| {
                let mounts = c
                    .get("volumeMounts")
                    .and_then(Value::as_array)
                    .is_some_and(|ms| ms.iter().any(|m| name_of(m) == Some(name)));
                (c, mounts)
            })
    }
}

fn annotations(meta: Option<&Map<String, Value>>) -> Option<&Map<String, Value>> {
    meta.and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
}

/// The controller whose pod template this workload copies, as (kind, name):
/// a controller ownerReference to another apps workload (a Deployment's
/// ReplicaSets), or any controller of a ReplicaSet (a ReplicaSet with a
/// controller is always a copy of that controller's template, e.g. an Argo
/// Rollout's). A Deployment, StatefulSet or DaemonSet that an operator's own
/// resource controls is still the user's to target: its controller writes it
/// from its own spec and the webhook injects on each of those writes, so its
/// stored template converges instead of multiplying.
pub fn template_controller<'a>(
    kind: &str,
    owner_references: Option<&'a Value>,
) -> Option<(&'a str, &'a str)> {
    owner_references
        .and_then(Value::as_array)?
        .iter()
        .filter(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .find_map(|r| {
            let api_version = r.get("apiVersion").and_then(Value::as_str).unwrap_or("");
            let owner_kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
            let owner_name = r.get("name").and_then(Value::as_str).unwrap_or("");
            let apps_workload = api_version.split('/').next() == Some("apps")
                && WORKLOAD_KINDS.contains(&owner_kind);
            (apps_workload || kind == "ReplicaSet").then_some((owner_kind, owner_name))
        })
}

/// The `name` of a container, volume or mount.
pub(crate) fn name_of(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

/// `Deployment demo/app` of any object's JSON, for a message about an object
/// that could not be read as a workload.
pub(crate) fn describe(obj: &Value) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("object");
    let ns = namespace_in(obj);
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{kind} {ns}/{name}")
}

fn optional_map<'a>(
    v: Option<&'a Value>,
    what: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(format!("{what} is not an object")),
    }
}

fn optional_list<'a>(v: Option<&'a Value>, what: &str) -> Result<Option<&'a [Value]>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a.as_slice())),
        Some(_) => Err(format!("{what} is not a list")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(spec: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "app", "namespace": "demo"}, "spec": spec})
    }

    fn problem(obj: &Value) -> String {
        match View::read(obj) {
            Err(p) => p,
            Ok(_) => panic!("read: {obj}"),
        }
    }

    #[test]
    fn one_reading_names_each_shape_problem() {
        let pod = |spec: Value| deployment(json!({"template": {"spec": spec}}));
        let cases = [
            (
                deployment(json!({})),
                "spec.template is missing or not an object",
            ),
            (
                deployment(json!({"template": {}})),
                "spec.template.spec is missing or not an object",
            ),
            (
                deployment(json!({"template": {"metadata": [], "spec": {}}})),
                "spec.template.metadata is not an object",
            ),
            (
                pod(json!({"containers": {}})),
                "spec.template.spec.containers is not a list",
            ),
            (
                pod(json!({"initContainers": [{"image": "x"}]})),
                "spec.template.spec.initContainers[0] has no name",
            ),
            (
                pod(json!({"volumes": [{"name": "a"}, {}]})),
                "spec.template.spec.volumes[1] has no name",
            ),
        ];
        for (obj, want) in cases {
            assert_eq!(problem(&obj), want, "{obj}");
        }
        let mut bad_meta = pod(json!({}));
        bad_meta["metadata"] = json!(5);
        assert_eq!(problem(&bad_meta), "metadata is not an object");
    }

    #[test]
    fn reads_identity_containers_and_volumes() {
        let obj = deployment(json!({"template": {"spec": {
            "containers": [{"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}],
            "initContainers": [{"name": "stash-init"}],
            "volumes": [{"name": "data", "emptyDir": {}}]}}}));
        let v = View::read(&obj).unwrap().unwrap();
        assert_eq!(v.display(), "Deployment demo/app");
        assert_eq!(v.container_index("app"), Some(0));
        assert_eq!(v.init_index("stash-init"), Some(0));
        assert!(v.has_volume("data") && !v.has_volume("other"));
        let mounting: Vec<bool> = v.mounting("data").map(|(_, m)| m).collect();
        assert_eq!(mounting, [true, false]);
        let job = json!({"apiVersion": "batch/v1", "kind": "Job"});
        assert!(View::read(&job).unwrap().is_none());
    }
}
