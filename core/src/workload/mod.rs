//! The parts of an apps/v1 workload (Deployment, StatefulSet, DaemonSet,
//! ReplicaSet) that the sidecar and `stash-init` planners read, borrowed from
//! its JSON text: one reading of the object, with one set of shape checks,
//! for both, so they can never disagree about what a workload holds.
//!
//! The planners answer with a JSON patch against exactly that JSON (indices
//! into its lists, maps it lacks), and a workload the API server admitted may
//! carry fields no typed struct of ours knows; so the view keeps the order of
//! the containers and volumes and the presence of each map, and reads only
//! names, mounts, stash's annotations and the owner references
//! (`shape`). The containers and volumes that are stash's own are read
//! whole: the planners compare them with what they want.
//!
//! The webhook reads the view straight from the review's text; the
//! reconciler, which holds the stored object as a JSON tree, writes it out
//! first (`View::parse` is the one reading for both).

pub mod patch;
pub mod privilege;
mod shape;

use std::borrow::Cow;

use k8s_openapi::api::core::v1::VolumeMount;
use serde_json::Value;

use crate::api::{
    DEFAULT_NAMESPACE, RESTORE_INIT_CONTAINER, SIDECAR_CONTAINER, WORKLOAD_API_VERSION,
    WORKLOAD_KINDS,
};
use crate::lenient::{Entries, List, Obj};
use crate::names::OWNED_VOLUMES;
use crate::targeting;
use privilege::{Identity, Ids, Member};

/// A workload's identity and pod template, borrowed from its JSON text.
pub(crate) struct View<'a> {
    pub api_version: Cow<'a, str>,
    pub kind: Cow<'a, str>,
    pub namespace: Cow<'a, str>,
    pub name: Cow<'a, str>,
    /// `metadata`, when it is an object.
    pub meta: Option<Meta<'a>>,
    /// `spec.template.metadata`, when it is an object.
    pub template_meta: Option<Meta<'a>>,
    pub containers: Vec<Item<'a>>,
    pub init_containers: Vec<Item<'a>>,
    /// `spec.template.spec.volumes`, when the pod has the list.
    pub volumes: Option<Vec<Item<'a>>>,
    /// StatefulSet `volumeClaimTemplates` names: mountable like pod volumes.
    pub claim_templates: Vec<Cow<'a, str>>,
    /// (kind, name) of the controller that stamps out this workload's pod
    /// template (see [`template_controller`]), if any.
    pub controller: Option<(Cow<'a, str>, Cow<'a, str>)>,
    /// The identity fields of `spec.template.spec.securityContext`.
    pub pod_identity: Ids,
}

/// An object's metadata as the planners read it: whether it has an
/// `annotations` map, and that map's entries (values as raw text).
pub(crate) struct Meta<'a> {
    annotations: Option<Entries<'a>>,
}

impl Meta<'_> {
    /// Whether `metadata.annotations` is a map.
    pub fn has_annotations(&self) -> bool {
        self.annotations.is_some()
    }

    /// The annotation `key`, when it is a string.
    pub fn annotation(&self, key: &str) -> Option<Cow<'_, str>> {
        self.annotations.as_ref()?.string(key)
    }

    pub fn annotated(&self, key: &str) -> bool {
        self.annotations.as_ref().is_some_and(|a| a.contains(key))
    }

    /// How many annotations there are.
    pub fn annotation_count(&self) -> usize {
        self.annotations.as_ref().map_or(0, |a| a.len())
    }
}

/// A container, init container or volume of the pod template.
pub(crate) struct Item<'a> {
    name: Option<Cow<'a, str>>,
    /// The names of a container's volume mounts.
    mounts: Vec<Cow<'a, str>>,
    /// The whole element, for those stash owns (by name).
    whole: Option<Value>,
    /// A container's `securityContext` identity fields (a volume's: none).
    identity: Ids,
}

impl Item<'_> {
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The whole element when it is one of stash's (else `null`).
    pub fn value(&self) -> &Value {
        static NULL: Value = Value::Null;
        self.whole.as_ref().unwrap_or(&NULL)
    }

    pub fn mounts(&self, volume: &str) -> bool {
        self.mounts.iter().any(|m| m == volume)
    }
}

/// Why an object of a workload kind cannot be planned for.
#[derive(Debug)]
pub(crate) struct Unreadable {
    /// `Deployment demo/app`, as far as it could be read.
    pub what: String,
    pub problem: String,
}

impl Unreadable {
    /// The planners' warning, naming what was left as it was (`stash
    /// sidecar`, `stash-init container`).
    pub fn warning(&self, part: &str) -> String {
        format!(
            "stash cannot read {}: {}; the {part} was left untouched",
            self.what, self.problem
        )
    }
}

impl<'a> View<'a> {
    /// [`View::parse`] of a JSON tree (the reconciler's stored object): its
    /// text is written into `text` first, and the view borrows from it.
    pub fn read(obj: &Value, text: &'a mut String) -> Result<Option<Self>, Unreadable> {
        *text = obj.to_string();
        Self::parse(text, None)
    }

    /// `Ok(None)` for objects that are not an apps/v1 workload kind; `Err`
    /// when the object is one but its shape cannot be read. `namespace` is
    /// the request's, used when the object names none (on CREATE it may not).
    pub fn parse(text: &'a str, namespace: Option<&str>) -> Result<Option<Self>, Unreadable> {
        let object = match serde_json::from_str::<Obj<shape::Object>>(text) {
            Ok(Obj::Is(o)) => o,
            Ok(_) => return Ok(None),
            Err(e) => {
                return Err(Unreadable {
                    what: describe_text(text),
                    problem: one_line(&e.to_string()),
                });
            }
        };
        let api_version = object.api_version.0.unwrap_or_default();
        let kind = object.kind.0.unwrap_or_default();
        if api_version != WORKLOAD_API_VERSION || !WORKLOAD_KINDS.contains(&kind.as_ref()) {
            return Ok(None);
        }
        let metadata_wrong = matches!(object.metadata, Obj::Wrong);
        let meta = object.metadata.get();
        let (name, namespace) = name_and_namespace(meta.as_ref(), namespace);
        let fail = |problem: String| Unreadable {
            what: format!("{kind} {namespace}/{name}"),
            problem,
        };
        if metadata_wrong {
            return Err(fail("metadata is not an object".into()));
        }
        let (meta, owners) = match meta {
            Some(m) => {
                let annotations = annotations(m.annotations, "metadata.annotations");
                (Some(annotations.map_err(fail)?), m.owner_references.items())
            }
            None => (None, Vec::new()),
        };
        let spec = object.spec.get();
        let claim_templates = spec.as_ref().map_or_else(Vec::new, |s| claim_names(s));
        let Some(template) = spec.and_then(|s| s.template.get()) else {
            return Err(fail("spec.template is missing or not an object".into()));
        };
        let pod = PodTemplate::read(template).map_err(fail)?;
        Ok(Some(Self {
            controller: template_controller(&kind, owners),
            api_version,
            kind,
            namespace,
            name,
            meta,
            template_meta: pod.meta,
            containers: pod.containers,
            init_containers: pod.init_containers,
            volumes: pod.volumes,
            claim_templates,
            pod_identity: pod.identity,
        }))
    }

    /// `Deployment demo/app`, for messages.
    pub fn display(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// What the shared choice among targeting objects reads.
    pub fn target(&self) -> targeting::Workload<'_> {
        targeting::Workload {
            api_version: &self.api_version,
            kind: &self.kind,
            namespace: &self.namespace,
            name: &self.name,
            controller: self
                .controller
                .as_ref()
                .map(|(kind, name)| (kind.as_ref(), name.as_ref())),
        }
    }

    /// Whether the workload's own annotations hold `key`.
    pub fn annotated(&self, key: &str) -> bool {
        self.meta.as_ref().is_some_and(|m| m.annotated(key))
    }

    /// Whether the pod template's annotations hold `key`.
    pub fn template_annotated(&self, key: &str) -> bool {
        self.template_meta
            .as_ref()
            .is_some_and(|m| m.annotated(key))
    }

    /// Index of the container `name` in `spec.template.spec.containers`.
    pub fn container_index(&self, name: &str) -> Option<usize> {
        self.containers.iter().position(|c| c.name() == Some(name))
    }

    /// Index of the init container `name`.
    pub fn init_index(&self, name: &str) -> Option<usize> {
        self.init_containers
            .iter()
            .position(|c| c.name() == Some(name))
    }

    /// Index of the pod volume `name`.
    pub fn volume_index(&self, name: &str) -> Option<usize> {
        self.volumes
            .as_ref()?
            .iter()
            .position(|v| v.name() == Some(name))
    }

    /// Whether a container of the pod may mount volume `name`.
    pub fn has_volume(&self, name: &str) -> bool {
        self.volume_index(name).is_some() || self.claim_templates.iter().any(|c| c == name)
    }

    /// Who stash's containers run as for a target with these
    /// `volumeMounts` ([`privilege::identity`]): the workload's own
    /// containers and init containers count, stash's do not.
    pub fn identity(&self, target: &[VolumeMount]) -> Identity {
        let members = self
            .containers
            .iter()
            .chain(&self.init_containers)
            .filter(|c| !c.name().is_some_and(stash_container))
            .map(|c| Member {
                ids: c.identity,
                mounts_target: target.iter().any(|m| c.mounts(&m.name)),
            });
        privilege::identity(self.pod_identity, members)
    }

    /// Every container and init container, with whether it mounts volume `name`.
    pub fn mounting<'s>(&'s self, name: &'s str) -> impl Iterator<Item = (&'s Item<'a>, bool)> {
        self.containers
            .iter()
            .chain(&self.init_containers)
            .map(move |c| (c, c.mounts(name)))
    }
}

/// Whether a container is one stash writes (read whole).
/// The object's name, and its namespace: its own, else the request's
/// (`request`), else `default`.
fn name_and_namespace<'a>(
    meta: Option<&shape::Meta<'a>>,
    request: Option<&str>,
) -> (Cow<'a, str>, Cow<'a, str>) {
    let (name, own_namespace) =
        meta.map_or((None, None), |m| (m.name.0.clone(), m.namespace.0.clone()));
    let namespace = match (own_namespace, request) {
        (Some(n), _) if !n.is_empty() => n,
        (_, Some(request)) => Cow::Owned(request.to_owned()),
        (Some(n), None) => n,
        (None, None) => Cow::Borrowed(DEFAULT_NAMESPACE),
    };
    (name.unwrap_or_default(), namespace)
}

/// The pod template's parts the view keeps.
struct PodTemplate<'a> {
    /// `spec.template.metadata`, when it is an object.
    meta: Option<Meta<'a>>,
    containers: Vec<Item<'a>>,
    init_containers: Vec<Item<'a>>,
    volumes: Option<Vec<Item<'a>>>,
    /// The identity fields of `spec.template.spec.securityContext`.
    identity: Ids,
}

impl<'a> PodTemplate<'a> {
    /// `spec.template` read; `Err` names the first field of the wrong shape.
    fn read(template: shape::Template<'a>) -> Result<Self, String> {
        let meta = match template.metadata {
            Obj::Wrong => return Err("spec.template.metadata is not an object".into()),
            Obj::Is(m) => Some(annotations(
                m.annotations,
                "spec.template.metadata.annotations",
            )?),
            _ => None,
        };
        let Some(pod) = template.spec.get() else {
            return Err("spec.template.spec is missing or not an object".into());
        };
        let identity = ids(pod.security_context.get().unwrap_or_default());
        let containers = items(
            pod.containers,
            "spec.template.spec.containers",
            stash_container,
        )?;
        let init_containers = items(
            pod.init_containers,
            "spec.template.spec.initContainers",
            stash_container,
        )?;
        let volumes = items(pod.volumes, "spec.template.spec.volumes", |n| {
            OWNED_VOLUMES.contains(&n)
        })?;
        Ok(Self {
            meta,
            containers: containers.unwrap_or_default(),
            init_containers: init_containers.unwrap_or_default(),
            volumes,
            identity,
        })
    }
}

fn stash_container(name: &str) -> bool {
    name == SIDECAR_CONTAINER || name == RESTORE_INIT_CONTAINER
}

/// A metadata's annotations: `Err` when they are not a map.
fn annotations<'a>(field: Obj<Entries<'a>>, what: &str) -> Result<Meta<'a>, String> {
    match field {
        Obj::Wrong => Err(format!("{what} is not an object")),
        Obj::Is(entries) => Ok(Meta {
            annotations: Some(entries),
        }),
        _ => Ok(Meta { annotations: None }),
    }
}

/// The names of a StatefulSet's volumeClaimTemplates.
fn claim_names<'a>(spec: &shape::Spec<'a>) -> Vec<Cow<'a, str>> {
    match &spec.volume_claim_templates {
        List::Is(ts) => ts
            .iter()
            .filter_map(|t| match t {
                Obj::Is(t) => match &t.metadata {
                    Obj::Is(m) => m.name.0.clone(),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A list of containers or volumes: `Ok(None)` when absent or null; `Err`
/// when it is not a list or an element has no name. Elements whose name
/// `whole` accepts are read whole.
fn items<'a>(
    list: List<Obj<Entries<'a>>>,
    what: &str,
    whole: impl Fn(&str) -> bool,
) -> Result<Option<Vec<Item<'a>>>, String> {
    let elements = match list {
        List::Absent | List::Null => return Ok(None),
        List::Wrong => return Err(format!("{what} is not a list")),
        List::Is(elements) => elements,
    };
    let mut out = Vec::with_capacity(elements.len());
    for (i, element) in elements.into_iter().enumerate() {
        let item = Item::read(element, &whole)?;
        if item.name.is_none() {
            return Err(format!("{what}[{i}] has no name"));
        }
        out.push(item);
    }
    Ok(Some(out))
}

impl<'a> Item<'a> {
    /// An element from its fields (each kept as text by the one scan of the
    /// list): its name, its mounts' names, and the whole of it when `whole`
    /// accepts the name.
    fn read(element: Obj<Entries<'a>>, whole: impl Fn(&str) -> bool) -> Result<Self, String> {
        let Obj::Is(fields) = element else {
            return Ok(Self {
                name: None,
                mounts: Vec::new(),
                whole: None,
                identity: Ids::default(),
            });
        };
        let name = fields.string("name");
        let mounts = match fields.raw("volumeMounts") {
            Some(raw) => serde_json::from_str::<List<Obj<shape::Named<'a>>>>(raw.get())
                .map_err(|e| one_line(&e.to_string()))?
                .items()
                .into_iter()
                .filter_map(|m| m.get()?.name.0)
                .collect(),
            None => Vec::new(),
        };
        let whole = match name.as_deref() {
            Some(n) if whole(n) => Some(fields.to_value().map_err(|e| one_line(&e.to_string()))?),
            _ => None,
        };
        // A securityContext of the wrong shape (the API server admits none)
        // reads as declaring nothing.
        let identity = fields
            .raw("securityContext")
            .map_or_else(Ids::default, |raw| {
                serde_json::from_str::<Obj<shape::Identity>>(raw.get())
                    .ok()
                    .and_then(Obj::get)
                    .map_or_else(Ids::default, ids)
            });
        Ok(Self {
            name,
            mounts,
            whole,
            identity,
        })
    }
}

/// The identity fields as read from a securityContext.
fn ids(read: shape::Identity) -> Ids {
    Ids {
        run_as_user: read.run_as_user.0,
        run_as_group: read.run_as_group.0,
        run_as_non_root: read.run_as_non_root.0,
    }
}

/// The controller whose pod template this workload copies, as (kind, name):
/// a controller ownerReference to another apps workload (a Deployment's
/// ReplicaSets), or any controller of a ReplicaSet (a ReplicaSet with a
/// controller is always a copy of that controller's template, e.g. an Argo
/// Rollout's). A Deployment, StatefulSet or DaemonSet that an operator's own
/// resource controls is still the user's to target: its controller writes it
/// from its own spec and the webhook injects on each of those writes, so its
/// stored template converges instead of multiplying.
fn template_controller<'a>(
    kind: &str,
    owners: Vec<Obj<shape::OwnerRef<'a>>>,
) -> Option<(Cow<'a, str>, Cow<'a, str>)> {
    owners
        .into_iter()
        .filter_map(Obj::get)
        .filter(|r| r.controller.0)
        .find_map(|r| {
            let api_version = r.api_version.0.unwrap_or_default();
            let owner_kind = r.kind.0.unwrap_or_default();
            let owner_name = r.name.0.unwrap_or_default();
            let apps_workload = api_version.split('/').next() == Some("apps")
                && WORKLOAD_KINDS.contains(&owner_kind.as_ref());
            (apps_workload || kind == "ReplicaSet").then_some((owner_kind, owner_name))
        })
}

/// The `name` of a container, volume or mount.
pub(crate) fn name_of(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

/// `Deployment demo/app` of an object's text, as far as it reads.
fn describe_text(text: &str) -> String {
    let head = serde_json::from_str::<Obj<shape::Head>>(text)
        .ok()
        .and_then(Obj::get);
    let (kind, meta) = match head {
        Some(h) => (h.kind.0, h.metadata.get()),
        None => (None, None),
    };
    let (name, namespace) = meta.map_or((None, None), |m| (m.name.0, m.namespace.0));
    format!(
        "{} {}/{}",
        kind.as_deref().unwrap_or("object"),
        namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
        name.as_deref().unwrap_or("")
    )
}

/// Folds a parser's message onto one line.
fn one_line(s: &str) -> String {
    crate::text::one_line(s)
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
        match View::read(obj, &mut String::new()) {
            Err(p) => p.problem,
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
        let mut text = String::new();
        let v = View::read(&obj, &mut text).unwrap().unwrap();
        assert_eq!(v.display(), "Deployment demo/app");
        assert_eq!(v.container_index("app"), Some(0));
        assert_eq!(v.init_index("stash-init"), Some(0));
        assert!(v.has_volume("data") && !v.has_volume("other"));
        let mounting: Vec<bool> = v.mounting("data").map(|(_, m)| m).collect();
        assert_eq!(mounting, [true, false]);
        let job = json!({"apiVersion": "batch/v1", "kind": "Job"});
        assert!(View::read(&job, &mut String::new()).unwrap().is_none());
    }

    #[test]
    fn reads_who_the_pod_and_its_containers_run_as() {
        use privilege::{Identity, Ids};
        let obj = deployment(json!({"template": {"spec": {
            "securityContext": {"runAsUser": 70, "runAsNonRoot": true, "fsGroup": 70},
            "containers": [
                {"name": "db", "securityContext": {"runAsUser": 999, "runAsGroup": 999},
                 "volumeMounts": [{"name": "data", "mountPath": "/d"}]},
                {"name": "odd", "securityContext": {"runAsUser": "999", "runAsGroup": 1.5, "runAsNonRoot": "yes"}},
                {"name": "stash", "securityContext": {"runAsUser": 0}}],
            "initContainers": [{"name": "bad", "securityContext": 5}],
            "volumes": [{"name": "data", "emptyDir": {}}]}}}));
        let mut text = String::new();
        let v = View::read(&obj, &mut text).unwrap().unwrap();
        assert_eq!(
            v.pod_identity,
            Ids {
                run_as_user: Some(70),
                run_as_group: None,
                run_as_non_root: Some(true)
            }
        );
        assert_eq!(v.containers[0].identity.run_as_user, Some(999));
        // Values of the wrong type read as absent, never as an error.
        assert_eq!(v.containers[1].identity, Ids::default());
        assert_eq!(v.init_containers[0].identity, Ids::default());
        let data = [VolumeMount {
            name: "data".into(),
            mount_path: "/source/data".into(),
            ..Default::default()
        }];
        assert_eq!(
            v.identity(&data),
            Identity::Workload {
                uid: 999,
                gid: Some(999)
            }
        );
        // No container mounts it: the pod's user; stash's own never counts.
        assert_eq!(v.identity(&[]), Identity::Workload { uid: 70, gid: None });
    }

    #[test]
    fn reads_escaped_text_and_annotations_as_a_tree_would() {
        let text = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"a\u0070p","annotations":{"x":1,"k":"v","k":"w"}},"spec":{"template":{"spec":{"containers":[{"image":"i","volumeMounts":[{"name":"m"}],"name":"stash"}]}}}}"#;
        let v = View::parse(text, None).unwrap().unwrap();
        assert_eq!(v.display(), "Deployment default/app");
        let meta = v.meta.as_ref().unwrap();
        assert_eq!(meta.annotation("k").as_deref(), Some("w"));
        assert_eq!(meta.annotation("x"), None);
        assert!(meta.annotated("x") && !meta.annotated("y"));
        assert_eq!(meta.annotation_count(), 2);
        // stash's own container is read whole, whatever the order of its fields.
        assert_eq!(v.containers[0].value()["image"], "i");
        assert!(v.mounting("m").all(|(_, m)| m));
        let in_request = View::parse(text, Some("demo")).unwrap().unwrap();
        assert_eq!(in_request.display(), "Deployment demo/app");
    }
}
