//! The `stash` sidecar: what a workload's pod template must carry for the
//! BackupConfiguration that targets it, as a JSON patch against the workload.
//!
//! This is the one pure function the mutating webhook and the reconciler
//! share ([`plan`]), so an admitted workload and a reconciled one can never
//! disagree. The patch is targeted: it adds, replaces or removes only the
//! `stash` container, the volumes stash owns (`stash-*`, `tmp-dir`) and the
//! two annotations, creating parent maps and arrays when they are missing;
//! the user's own containers, volumes and annotations are never rewritten.
//!
//! Comparisons are by *coverage*: an existing container or volume is up to
//! date when every field we want is there with our value, whatever the API
//! server added by defaulting (`terminationMessagePath`, `defaultMode`, ...).
//! That is what makes a second pass over a stored object yield no patch.

mod memo;

use std::collections::BTreeSet;
use std::sync::Arc;

use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ObjectFieldSelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::{
    ANNOTATION_CONFIG_HASH, ANNOTATION_LAST_APPLIED, BackupConfiguration, ContainerRuntimeSettings,
    INVOKER_KIND_BACKUP_CONFIGURATION, LocalSpec, Repository, SIDECAR_CONTAINER,
};
use crate::patch::{Json, Op, Shared};
use crate::plan::{Part, Plan, follow, read_then};
use crate::settings::Settings;
use crate::store::Snapshot;
use crate::targeting;
use crate::workload::patch::{
    CONTAINERS, META, TEMPLATE_META, VOLUMES, add, add_volumes, indexed, ptr, remove,
    remove_owned_volumes, remove_volumes, replace, set_annotation, unset_annotation,
};
use crate::workload::privilege::{self, Identity, Role};
use crate::workload::{View as Workload, name_of};

pub use crate::names::{
    OWNED_VOLUMES, PODINFO_DIR, SECRET_DIR, TMP_DIR, VOLUME_LOCAL_BACKEND, VOLUME_PODINFO,
    VOLUME_SECRET, VOLUME_TMP,
};
pub use crate::plan::covers;

/// What the sidecar decision wants done to one workload: the shared
/// [`Plan`], its `applied` the BackupConfiguration's name.
pub type SidecarPlan<O = PatchOperation> = Plan<O>;

/// The container this planner puts in place.
const PART: Part = Part::Sidecar;

/// `workload` is the raw JSON of an apps/v1 Deployment/StatefulSet/DaemonSet/ReplicaSet
/// (kind and metadata.namespace/name read from it). Returns the JSON patch (against exactly
/// this JSON) that injects, updates or removes the sidecar; empty ops = nothing to do.
///
/// Rules:
/// - exactly one live configuration (no `deletionTimestamp`, same namespace,
///   `target.ref` equal to the workload's apiVersion/kind/name) and its
///   Repository exists: the sidecar is injected or brought up to date;
/// - that configuration's Repository is missing: nothing changes, a warning names it;
/// - several live configurations: nothing changes (neither injected, switched
///   nor removed — whichever we picked could be the wrong one and every
///   choice restarts the pods), a warning names them all;
/// - none: a sidecar stash injected (recognised by its annotations) is
///   removed with its volumes and annotations; anything else is left alone;
/// - before all of these: a workload whose pod template is a copy of its
///   controller's (`template_controller`, e.g. a Deployment's ReplicaSet)
///   is never patched; a warning says so when a configuration targets it.
pub fn plan(workload: &Value, snap: &Snapshot, settings: &Settings) -> SidecarPlan {
    plan_ops(workload, snap, settings).into_json_patch()
}

/// [`plan`], its operations holding the memoized sidecar as shared,
/// pre-serialized values (what the webhook writes into its answer).
pub fn plan_ops(workload: &Value, snap: &Snapshot, settings: &Settings) -> SidecarPlan<Op> {
    read_then(PART, workload, |view| plan_view(view, snap, settings))
}

/// [`plan_ops`] on a view already read (the webhook reads it from the
/// review's text).
pub(crate) fn plan_view(view: &Workload, snap: &Snapshot, settings: &Settings) -> SidecarPlan<Op> {
    let targeting = snap.configs_for_target(&view.namespace, &view.kind, &view.name);
    follow(
        targeting::choose(&view.target(), &targeting, &PART.words()),
        || removal_ops(view),
        |bc| inject(view, bc, snap, settings),
    )
}

/// Whether a pod template (`spec.template` JSON) carries the stash container.
pub fn has_sidecar(pod_template: &Value) -> bool {
    PART.carried_by(pod_template)
}

/// Whether a container other than the sidecar mounts volume `name`.
fn used_by_user(view: &Workload, name: &str) -> bool {
    view.mounting(name)
        .any(|(c, mounts)| mounts && c.name() != Some(SIDECAR_CONTAINER))
}

/// The sidecar container and pod volumes one configuration wants, each as
/// a value and its JSON text (see [`crate::patch`]).
pub(crate) struct Desired {
    container: Arc<Shared>,
    volumes: Vec<Arc<Shared>>,
    hash: String,
}

fn inject(
    view: &Workload,
    bc: &Arc<BackupConfiguration>,
    snap: &Snapshot,
    settings: &Settings,
) -> SidecarPlan<Op> {
    let bc_name = bc.metadata.name.clone().unwrap_or_default();
    let owner = ("BackupConfiguration", bc_name.as_str());
    let repo = match PART.repository(view, snap, owner, bc.repository_name()) {
        Ok(repo) => repo,
        Err(unplanned) => return unplanned,
    };
    let mut plan = Plan::default();
    let computed = memoized_desired(view, bc, &bc_name, repo, settings);
    plan.warnings.extend(computed.warnings.iter().cloned());
    let desired = &computed.desired;
    if let Some(conflict) = conflict(view, desired) {
        plan.warnings.push(conflict);
        return plan;
    }
    plan.ops = injection_ops(view, desired, &bc_name);
    plan.applied = Some(bc_name);
    plan
}

/// A container or volume of the user's that carries a name the sidecar needs:
/// overwriting it would break their pods, so nothing is injected.
fn conflict(view: &Workload, desired: &Desired) -> Option<String> {
    if let Some(taken) = PART.name_taken(view, desired.container.value()) {
        return Some(taken);
    }
    let existing = view.volumes.as_ref()?;
    desired.volumes.iter().find_map(|want| {
        let want = want.value();
        let name = want.get("name").and_then(Value::as_str)?;
        let i = view.volume_index(name)?;
        (used_by_user(view, name) && !covers(existing[i].value(), want))
            .then(|| PART.volume_taken(view, name))
    })
}

/// An environment variable from the downward API (`fieldRef`, apiVersion v1).
pub(crate) fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(field_ref(path)),
            ..Default::default()
        }),
        value: None,
    }
}

fn field_ref(path: &str) -> ObjectFieldSelector {
    ObjectFieldSelector {
        api_version: Some("v1".into()),
        field_path: path.into(),
    }
}

fn value_env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

/// A typed container or volume as the JSON the planners compare, hash and
/// patch with.
///
/// The `Null` arm cannot be taken: `serde_json::to_value` fails only when a
/// `Serialize` impl returns an error or a map key is not a string (or a
/// number or bool, which it stringifies). What is passed here is
/// k8s-openapi's derived `Container` and `Volume` (with their `EnvVar`,
/// `EnvFromSource`, `VolumeMount`, `ResourceRequirements`, `SecurityContext`,
/// volume sources and `Quantity`):
/// structs of strings, numbers, bools, `Option`s, `Vec`s and
/// `BTreeMap<String, _>`, whose impls never return an error.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// [`desired`], through the memo when its inputs fit the memo's key (up to
/// 64 target mounts; beyond that, computed every time).
fn memoized_desired(
    view: &Workload,
    bc: &Arc<BackupConfiguration>,
    bc_name: &str,
    repo: &Arc<Repository>,
    settings: &Settings,
) -> Arc<memo::Computed> {
    let mounts = bc
        .spec
        .target
        .as_ref()
        .map_or(&[][..], |t| t.volume_mounts.as_slice());
    let identity = privilege::case(user_security(bc), view.identity(mounts));
    let compute = || {
        let mut warnings = Vec::new();
        let desired = desired(view, bc, bc_name, repo, settings, identity, &mut warnings);
        memo::Computed { desired, warnings }
    };
    if mounts.len() > 64 {
        return Arc::new(compute());
    }
    let mounts_present = mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| view.has_volume(&m.name))
        .fold(0u64, |bits, (i, _)| bits | 1 << i);
    let inputs = memo::Inputs {
        image: &settings.image,
        kind: &view.kind,
        name: &view.name,
        mounts_present,
        identity,
    };
    memo::get_or_compute(bc, repo, inputs, compute)
}

fn desired(
    view: &Workload,
    bc: &BackupConfiguration,
    bc_name: &str,
    repo: &Repository,
    settings: &Settings,
    identity: Identity,
    warnings: &mut Vec<String>,
) -> Desired {
    let enable_cache = !bc.spec.temp_dir.as_ref().is_some_and(|t| t.disable_caching);
    let args = vec![
        "run-backup".to_string(),
        format!("--invoker-kind={INVOKER_KIND_BACKUP_CONFIGURATION}"),
        format!("--invoker-name={bc_name}"),
        format!("--target-kind={}", view.kind),
        format!("--target-name={}", view.name),
        format!("--secret-dir={SECRET_DIR}"),
        format!("--enable-cache={enable_cache}"),
    ];
    let rt = bc
        .spec
        .runtime_settings
        .as_ref()
        .and_then(|r| r.container.as_ref());
    let tmp = EmptyDirVolumeSource {
        medium: bc.spec.temp_dir.as_ref().and_then(|t| t.medium.clone()),
        size_limit: bc.spec.temp_dir.as_ref().and_then(|t| t.size_limit.clone()),
    };
    let what = MountsFor {
        owner: format!("BackupConfiguration {}/{bc_name}", view.namespace),
        container: "stash sidecar",
        reaches: "the sidecar",
        target_mounts: bc
            .spec
            .target
            .as_ref()
            .map_or(&[], |t| t.volume_mounts.as_slice()),
        tmp,
    };
    let (mounts, volumes) = mounts_and_volumes(
        &view.namespace,
        |name| view.has_volume(name),
        &view.display(),
        repo,
        what,
        warnings,
    );
    let security = privilege::choose(user_security(bc), identity, Role::Backup);
    let container = to_json(&container(
        settings,
        args,
        sidecar_env(rt),
        rt,
        mounts,
        security,
    ));
    let volumes: Vec<Value> = volumes.iter().map(to_json).collect();
    // The hash covers exactly what lands in the pod template, so it moves
    // when and only when the sidecar does (never for paused/schedule/retention).
    let digest = Sha256::digest(json!({"container": container, "volumes": volumes}).to_string());
    let hash = hex::encode(&digest[..8]);
    Desired {
        container: Shared::new(container),
        volumes: volumes.into_iter().map(Shared::new).collect(),
        hash,
    }
}

/// The configuration's `runtimeSettings.container.securityContext`, if set.
fn user_security(bc: &BackupConfiguration) -> Option<&SecurityContext> {
    bc.spec
        .runtime_settings
        .as_ref()?
        .container
        .as_ref()?
        .security_context
        .as_ref()
}

/// The sidecar's environment: the downward-API identity, then the
/// configuration's nice/ionice settings and its own `env`.
fn sidecar_env(rt: Option<&ContainerRuntimeSettings>) -> Vec<EnvVar> {
    let mut env = vec![
        field_env("NODE_NAME", "spec.nodeName"),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
    ];
    let Some(rt) = rt else {
        return env;
    };
    if let Some(n) = rt.nice.as_ref().and_then(|n| n.adjustment) {
        env.push(value_env("NICE_ADJUSTMENT", n.to_string()));
    }
    if let Some(io) = &rt.ionice {
        if let Some(c) = io.class {
            env.push(value_env("IONICE_CLASS", c.to_string()));
        }
        if let Some(d) = io.class_data {
            env.push(value_env("IONICE_CLASS_DATA", d.to_string()));
        }
    }
    env.extend(rt.env.iter().cloned());
    env
}

/// Who the mounts are for, for [`mounts_and_volumes`]'s warnings and volumes.
pub(crate) struct MountsFor<'a> {
    /// `BackupConfiguration demo/x`, `RestoreSession demo/y`.
    pub owner: String,
    /// The container, as the warnings name it: `stash sidecar`, `stash-init container`.
    pub container: &'static str,
    /// The container, as "… cannot reach it" names it.
    pub reaches: &'static str,
    /// The owner's `target.volumeMounts`.
    pub target_mounts: &'a [VolumeMount],
    /// The scratch volume's `emptyDir` source.
    pub tmp: EmptyDirVolumeSource,
}

/// The volume mounts of stash's container and the pod volumes it adds, the
/// same for the sidecar and the `stash-init` container: pod info, the
/// storage Secret, the scratch dir, the target's mounts (those that name a
/// volume the workload has, at a path not taken), the local backend. What is
/// left out is said in `warnings`. `has_volume` and `display` describe the
/// workload (its volumes and claim templates; `Deployment demo/x`).
pub(crate) fn mounts_and_volumes(
    namespace: &str,
    has_volume: impl Fn(&str) -> bool,
    display: &str,
    repo: &Repository,
    what: MountsFor<'_>,
    warnings: &mut Vec<String>,
) -> (Vec<VolumeMount>, Vec<Volume>) {
    let MountsFor {
        owner,
        container,
        reaches,
        target_mounts,
        tmp,
    } = what;
    let repo_name = repo.metadata.name.as_deref().unwrap_or("");
    let secret_name = repo
        .spec
        .backend
        .storage_secret_name
        .as_deref()
        .filter(|s| !s.is_empty());
    let (mut mounts, mut volumes) = stash_volumes(secret_name, tmp);
    if secret_name.is_none() {
        warnings.push(format!(
            "Repository {namespace}/{repo_name} has no spec.backend.storageSecretName; the {container} has no repository password: set storageSecretName",
        ));
    }
    let mut used_paths: BTreeSet<String> =
        [PODINFO_DIR, SECRET_DIR, TMP_DIR].map(String::from).into();
    for m in target_mounts {
        if !has_volume(&m.name) {
            warnings.push(format!(
                "{owner} mounts volume {:?}, which {display} does not have; the mount was left out of the {container}: add the volume or fix target.volumeMounts",
                m.name,
            ));
        } else if !used_paths.insert(m.mount_path.clone()) {
            warnings.push(format!(
                "{owner} mounts volume {:?} at {}, a path the {container} already uses; the mount was left out: choose another mountPath",
                m.name, m.mount_path
            ));
        } else {
            mounts.push(m.clone());
        }
    }
    if let Some(local) = &repo.spec.backend.local {
        match local_volume(local) {
            Some(volume) if used_paths.insert(local.mount_path.clone()) => {
                mounts.push(VolumeMount {
                    sub_path: local.sub_path.clone(),
                    ..mount(VOLUME_LOCAL_BACKEND, &local.mount_path)
                });
                volumes.push(volume);
            }
            Some(_) => warnings.push(format!(
                "the local backend of Repository {namespace}/{repo_name} mounts at {}, a path the {container} already uses; its volume was left out: choose another mountPath",
                local.mount_path
            )),
            None => warnings.push(format!(
                "the local backend of Repository {namespace}/{repo_name} has no volume (hostPath, persistentVolumeClaim, nfs or emptyDir); {reaches} cannot reach it: set one",
            )),
        }
    }
    (mounts, volumes)
}

/// The mounts and volumes of stash's own: pod info, the storage Secret (when
/// the Repository names one), the scratch dir.
fn stash_volumes(
    secret_name: Option<&str>,
    tmp: EmptyDirVolumeSource,
) -> (Vec<VolumeMount>, Vec<Volume>) {
    let mut mounts = vec![mount(VOLUME_PODINFO, PODINFO_DIR)];
    let mut volumes = vec![Volume {
        name: VOLUME_PODINFO.into(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![DownwardAPIVolumeFile {
                path: "labels".into(),
                field_ref: Some(field_ref("metadata.labels")),
                ..Default::default()
            }]),
            default_mode: None,
        }),
        ..Default::default()
    }];
    if let Some(secret) = secret_name {
        mounts.push(VolumeMount {
            read_only: Some(true),
            ..mount(VOLUME_SECRET, SECRET_DIR)
        });
        volumes.push(Volume {
            name: VOLUME_SECRET.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.into()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    mounts.push(mount(VOLUME_TMP, TMP_DIR));
    volumes.push(Volume {
        name: VOLUME_TMP.into(),
        empty_dir: Some(tmp),
        ..Default::default()
    });
    (mounts, volumes)
}

/// The sidecar container. Only the fields set here appear in its JSON (the
/// template hash is taken over that JSON, see [`desired`]): a field added
/// here moves every workload's hash and rolls its pods once on upgrade.
fn container(
    settings: &Settings,
    args: Vec<String>,
    env: Vec<EnvVar>,
    rt: Option<&ContainerRuntimeSettings>,
    mounts: Vec<VolumeMount>,
    security: SecurityContext,
) -> Container {
    Container {
        name: SIDECAR_CONTAINER.into(),
        image: Some(settings.image.clone()),
        args: Some(args),
        env: Some(env),
        env_from: rt.map(|rt| rt.env_from.clone()).filter(|e| !e.is_empty()),
        resources: rt.and_then(|rt| rt.resources.clone()),
        security_context: Some(security),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// The pod volume of a `local` backend, if it names a source.
fn local_volume(local: &LocalSpec) -> Option<Volume> {
    let volume = Volume {
        name: VOLUME_LOCAL_BACKEND.into(),
        ..Default::default()
    };
    if let Some(s) = &local.host_path {
        Some(Volume {
            host_path: Some(s.clone()),
            ..volume
        })
    } else if let Some(s) = &local.persistent_volume_claim {
        Some(Volume {
            persistent_volume_claim: Some(s.clone()),
            ..volume
        })
    } else if let Some(s) = &local.nfs {
        Some(Volume {
            nfs: Some(s.clone()),
            ..volume
        })
    } else {
        local.empty_dir.as_ref().map(|s| Volume {
            empty_dir: Some(s.clone()),
            ..volume
        })
    }
}

fn injection_ops(view: &Workload, desired: &Desired, bc_name: &str) -> Vec<Op> {
    let mut ops = Vec::new();
    match PART.found(view) {
        Some((_, have)) if covers(have, desired.container.value()) => {}
        Some((i, _)) => ops.push(replace(indexed(&CONTAINERS, i), desired.container.clone())),
        None if view.containers.is_empty() => {
            ops.push(add(
                ptr(&CONTAINERS),
                Json::List(vec![desired.container.clone()]),
            ));
        }
        None => ops.push(add(
            ptr(&[&CONTAINERS[..], &["-"]].concat()),
            desired.container.clone(),
        )),
    }
    volume_ops(view, &desired.volumes, &mut ops);
    set_annotation(
        view.template_meta.as_ref(),
        &TEMPLATE_META,
        ANNOTATION_CONFIG_HASH,
        &desired.hash,
        &mut ops,
    );
    set_annotation(
        view.meta.as_ref(),
        &META,
        ANNOTATION_LAST_APPLIED,
        bc_name,
        &mut ops,
    );
    ops
}

fn volume_ops(view: &Workload, desired: &[Arc<Shared>], ops: &mut Vec<Op>) {
    let Some(existing) = &view.volumes else {
        ops.push(add(ptr(&VOLUMES), Json::List(desired.to_vec())));
        return;
    };
    let mut adds = Vec::new();
    for want in desired {
        let name = name_of(want.value()).unwrap_or("");
        match view.volume_index(name) {
            Some(i) if covers(existing[i].value(), want.value()) => {}
            Some(i) => ops.push(replace(indexed(&VOLUMES, i), want.clone())),
            None => adds.push(want.clone()),
        }
    }
    // Owned volumes no longer wanted (a local backend that moved to GCS).
    let wanted: BTreeSet<&str> = desired.iter().filter_map(|v| name_of(v.value())).collect();
    let stale: Vec<usize> = OWNED_VOLUMES
        .iter()
        .filter(|n| !wanted.contains(*n) && !used_by_user(view, n))
        .filter_map(|n| view.volume_index(n))
        .collect();
    remove_volumes(stale, ops);
    add_volumes(view, adds, ops);
}

fn removal_ops(view: &Workload) -> Vec<Op> {
    // Only what stash itself injected goes: a container the user named
    // `stash` on a workload stash never annotated is theirs.
    if !PART.injected_by_stash(view) {
        return Vec::new();
    }
    let mut ops = Vec::new();
    if let Some(i) = view.container_index(SIDECAR_CONTAINER) {
        ops.push(remove(indexed(&CONTAINERS, i)));
    }
    remove_owned_volumes(view, &OWNED_VOLUMES, |n| !used_by_user(view, n), &mut ops);
    unset_annotation(
        view.template_meta.as_ref(),
        &TEMPLATE_META,
        ANNOTATION_CONFIG_HASH,
        &mut ops,
    );
    unset_annotation(view.meta.as_ref(), &META, ANNOTATION_LAST_APPLIED, &mut ops);
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mounts_left_out_are_warned_in_the_containers_own_words() {
        let repo: Repository = serde_json::from_value(json!({
            "apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
            "metadata": {"name": "r", "namespace": "demo"},
            "spec": {"backend": {"local": {"mountPath": "/repo"}}}
        }))
        .unwrap();
        let mounts: Vec<VolumeMount> = serde_json::from_value(json!([
            {"name": "missing", "mountPath": "/x"},
            {"name": "data", "mountPath": TMP_DIR},
            {"name": "data", "mountPath": "/source/data"}
        ]))
        .unwrap();
        for (owner, container, reaches) in [
            ("BackupConfiguration demo/b", "stash sidecar", "the sidecar"),
            (
                "RestoreSession demo/r",
                "stash-init container",
                "the stash-init container",
            ),
        ] {
            let mut warnings = Vec::new();
            let what = MountsFor {
                owner: owner.into(),
                container,
                reaches,
                target_mounts: &mounts,
                tmp: Default::default(),
            };
            let (m, v) = mounts_and_volumes(
                "demo",
                |n| n == "data",
                "Deployment demo/d",
                &repo,
                what,
                &mut warnings,
            );
            assert_eq!(
                warnings,
                [
                    format!(
                        "Repository demo/r has no spec.backend.storageSecretName; the {container} has no repository password: set storageSecretName"
                    ),
                    format!(
                        "{owner} mounts volume \"missing\", which Deployment demo/d does not have; the mount was left out of the {container}: add the volume or fix target.volumeMounts"
                    ),
                    format!(
                        "{owner} mounts volume \"data\" at /tmp, a path the {container} already uses; the mount was left out: choose another mountPath"
                    ),
                    format!(
                        "the local backend of Repository demo/r has no volume (hostPath, persistentVolumeClaim, nfs or emptyDir); {reaches} cannot reach it: set one"
                    ),
                ]
            );
            let paths: Vec<&str> = m.iter().map(|m| m.mount_path.as_str()).collect();
            assert_eq!(paths, [PODINFO_DIR, TMP_DIR, "/source/data"]);
            let names: Vec<&str> = v.iter().map(|v| v.name.as_str()).collect();
            assert_eq!(names, [VOLUME_PODINFO, VOLUME_TMP]);
        }
    }

    fn snap(configs: &[Value], repos: &[Value]) -> Snapshot {
        let mut s = Snapshot::default();
        for c in configs {
            s.upsert_config(serde_json::from_value(c.clone()).unwrap());
        }
        for r in repos {
            s.upsert_repository(serde_json::from_value(r.clone()).unwrap());
        }
        s
    }

    fn config(name: &str, target: &str, mounts: Value) -> Value {
        json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
            "metadata": {"name": name, "namespace": "demo"},
            "spec": {"repository": {"name": "repo"}, "schedule": "@daily",
                     "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                                "volumeMounts": mounts, "paths": ["/source"]}}})
    }

    fn repo(backend: Value) -> Value {
        json!({"apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
            "metadata": {"name": "repo", "namespace": "demo"}, "spec": {"backend": backend}})
    }

    fn gcs() -> Value {
        repo(json!({"gcs": {"bucket": "b"}, "storageSecretName": "gcs-secret"}))
    }

    fn deployment(containers: Value, volumes: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "app", "namespace": "demo"},
            "spec": {"template": {"metadata": {"labels": {"app": "app"}},
                                  "spec": {"containers": containers, "volumes": volumes}}}})
    }

    fn apply(obj: &Value, p: &SidecarPlan) -> Value {
        let mut o = obj.clone();
        json_patch::patch(&mut o, &p.ops).unwrap();
        o
    }

    fn run(obj: &Value, s: &Snapshot) -> SidecarPlan {
        plan(obj, s, &Settings::default())
    }

    fn owned_by(mut obj: Value, kind: &str, api_version: &str, controller: bool) -> Value {
        obj["metadata"]["ownerReferences"] = json!([{"apiVersion": api_version, "kind": kind,
            "name": "owner", "uid": "u-1", "controller": controller, "blockOwnerDeletion": true}]);
        obj
    }

    fn replica_set_of_injected_deployment(s: &Snapshot) -> Value {
        // What the deployment controller writes: the Deployment's injected template.
        let d = deployment(json!([{"name": "app", "image": "x"}]), json!([]));
        let mut rs = apply(&d, &run(&d, s));
        rs["kind"] = json!("ReplicaSet");
        rs["metadata"]["name"] = json!("app-59f9cbf897");
        rs
    }

    #[test]
    fn a_replica_set_a_deployment_controls_is_never_patched() {
        let s = snap(&[config("bc", "app", json!([]))], &[gcs()]);
        let rs = replica_set_of_injected_deployment(&s);
        assert!(has_sidecar(&rs["spec"]["template"]));
        let owned = owned_by(rs.clone(), "Deployment", "apps/v1", true);
        // No configuration targets the ReplicaSet: without the rule this
        // strips the sidecar, and the deployment controller makes another.
        let p = run(&owned, &s);
        assert_eq!(p, SidecarPlan::default());
        // Not even once the configuration is gone: the Deployment's rollout removes it.
        assert_eq!(run(&owned, &Snapshot::default()), SidecarPlan::default());
        // The same ReplicaSet standing alone is ours to clean up.
        assert!(!run(&rs, &Snapshot::default()).ops.is_empty());
    }

    #[test]
    fn a_targeted_replica_set_with_a_controller_gets_a_warning_not_a_sidecar() {
        let mut bc = config("bc", "app-1", json!([]));
        bc["spec"]["target"]["ref"]["kind"] = json!("ReplicaSet");
        let s = snap(&[bc], &[gcs()]);
        let mut rs = deployment(json!([{"name": "app", "image": "x"}]), json!([]));
        rs["kind"] = json!("ReplicaSet");
        rs["metadata"]["name"] = json!("app-1");
        // Standalone: injected.
        let alone = run(&rs, &s);
        assert!(has_sidecar(&apply(&rs, &alone)["spec"]["template"]));
        // Controlled by a Deployment or by any other controller (an Argo Rollout): left alone.
        for (kind, api_version) in [
            ("Deployment", "apps/v1"),
            ("Rollout", "argoproj.io/v1alpha1"),
        ] {
            let p = run(&owned_by(rs.clone(), kind, api_version, true), &s);
            assert!(p.ops.is_empty(), "{kind}: {:?}", p.ops);
            assert_eq!(
                p.warnings,
                vec![format!(
                    "ReplicaSet demo/app-1 is controlled by {kind} demo/owner, which owns its pod template; stash left its sidecar unchanged: target the {kind} instead"
                )]
            );
        }
        // An owner that is not the controller changes nothing.
        let p = run(&owned_by(rs.clone(), "Deployment", "apps/v1", false), &s);
        assert_eq!(p, alone);
    }

    #[test]
    fn a_deployment_an_operator_controls_is_still_the_users_to_target() {
        let s = snap(&[config("bc", "app", json!([]))], &[gcs()]);
        let d = deployment(json!([{"name": "app", "image": "x"}]), json!([]));
        let owned = owned_by(
            d.clone(),
            "Elasticsearch",
            "elasticsearch.k8s.elastic.co/v1",
            true,
        );
        assert_eq!(run(&owned, &s).ops, run(&d, &s).ops);
        assert!(!run(&owned, &s).ops.is_empty());
        // A Deployment controlled by another apps workload is a copy too.
        let copied = owned_by(d, "StatefulSet", "apps/v1", true);
        assert!(run(&copied, &s).ops.is_empty());
    }

    #[test]
    fn a_users_tmp_dir_volume_blocks_injection_with_a_warning() {
        let d = deployment(
            json!([{"name": "app", "image": "x", "volumeMounts": [{"name": "tmp-dir", "mountPath": "/scratch"}]}]),
            json!([{"name": "tmp-dir", "hostPath": {"path": "/tmp"}}]),
        );
        let p = run(&d, &snap(&[config("bc", "app", json!([]))], &[gcs()]));
        assert!(p.ops.is_empty(), "{:?}", p.ops);
        assert!(
            p.warnings[0].contains("volume named \"tmp-dir\""),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn a_users_own_stash_container_is_neither_replaced_nor_removed() {
        let d = deployment(json!([{"name": "stash", "image": "mine"}]), json!([]));
        let p = run(&d, &snap(&[config("bc", "app", json!([]))], &[gcs()]));
        assert!(p.ops.is_empty());
        assert!(p.warnings[0].contains("container named \"stash\" that stash did not inject"));
        // Untargeted and never annotated by stash: removal leaves it too.
        assert!(run(&d, &snap(&[], &[gcs()])).ops.is_empty());
    }

    #[test]
    fn a_mount_of_a_volume_the_pod_lacks_is_left_out_with_a_warning() {
        let d = deployment(
            json!([{"name": "app", "image": "x"}]),
            json!([{"name": "data", "emptyDir": {}}]),
        );
        let mounts = json!([{"name": "nope", "mountPath": "/source/nope"}, {"name": "data", "mountPath": "/tmp"},
                            {"name": "data", "mountPath": "/source/data"}]);
        let p = run(&d, &snap(&[config("bc", "app", mounts)], &[gcs()]));
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("\"nope\""));
        assert!(p.warnings[1].contains("/tmp"));
        let obj = apply(&d, &p);
        let stash = obj.pointer("/spec/template/spec/containers/1").unwrap();
        let paths: Vec<&str> = stash["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "/etc/stash",
                "/etc/stash/repository/secret",
                "/tmp",
                "/source/data"
            ]
        );
    }

    #[test]
    fn moving_from_a_local_backend_drops_its_volume_in_place() {
        let d = deployment(
            json!([{"name": "app", "image": "x"}]),
            json!([{"name": "data", "emptyDir": {}}]),
        );
        let local = repo(
            json!({"local": {"mountPath": "/safe/data", "hostPath": {"path": "/b"}}, "storageSecretName": "s"}),
        );
        let bc = config("bc", "app", json!([]));
        let injected = apply(&d, &run(&d, &snap(std::slice::from_ref(&bc), &[local])));
        assert!(injected.to_string().contains("stash-local-backend"));
        let p = run(&injected, &snap(&[bc], &[gcs()]));
        let moved = apply(&injected, &p);
        assert!(!moved.to_string().contains("stash-local-backend"));
        assert!(moved.to_string().contains("gcs-secret"));
        // User volume stays first, unchanged.
        assert_eq!(
            moved.pointer("/spec/template/spec/volumes/0"),
            Some(&json!({"name": "data", "emptyDir": {}}))
        );
        for op in &p.ops {
            let path = serde_json::to_value(op).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_string();
            assert_ne!(
                path, "/spec/template/spec/volumes/0",
                "the user's volume is never rewritten"
            );
            assert_ne!(path, "/spec/template/spec/containers/0");
        }
    }

    #[test]
    fn a_new_image_updates_the_sidecar_and_its_hash() {
        let d = deployment(json!([{"name": "app", "image": "x"}]), json!([]));
        let s = snap(&[config("bc", "app", json!([]))], &[gcs()]);
        let injected = apply(&d, &run(&d, &s));
        let newer = Settings {
            image: "registry.example.com/stash:2".into(),
            ..Settings::default()
        };
        let p = plan(&injected, &s, &newer);
        let kinds: Vec<Value> = p
            .ops
            .iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect();
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        assert_eq!(kinds[0]["op"], "replace");
        assert_eq!(kinds[0]["path"], "/spec/template/spec/containers/1");
        assert_eq!(
            kinds[1]["path"],
            "/spec/template/metadata/annotations/stash.appscode.com~1last-applied-backupconfiguration-hash"
        );
    }

    #[test]
    fn memo_answers_as_a_fresh_computation() {
        let data = json!([{"name": "data", "mountPath": "/source/data"}]);
        let with_volume = deployment(
            json!([{"name": "app", "image": "x"}]),
            json!([{"name": "data", "emptyDir": {}}]),
        );
        let without = deployment(json!([{"name": "app", "image": "x"}]), json!([]));
        let mut s = snap(&[config("bc", "app", data.clone())], &[gcs()]);
        let fresh = |obj: &Value, s: &Snapshot| {
            // Same objects, new Arcs: nothing memoized applies.
            let mut copy = Snapshot::default();
            for bc in s.configs() {
                copy.upsert_config((**bc).clone());
            }
            copy.upsert_repository((**s.repository("demo", "repo").unwrap()).clone());
            run(obj, &copy)
        };
        // Asked twice, and for workloads that differ in what the memo keys on.
        for obj in [&with_volume, &with_volume, &without, &with_volume] {
            assert_eq!(run(obj, &s), fresh(obj, &s));
        }
        // The index swaps in a new Repository: the next answer follows it.
        let before = run(&with_volume, &s);
        s.upsert_repository(
            serde_json::from_value(repo(json!({"local": {"mountPath": "/repo",
                "hostPath": {"path": "/data/repo"}}, "storageSecretName": "gcs-secret"})))
            .unwrap(),
        );
        let after = run(&with_volume, &s);
        assert_ne!(before, after);
        assert_eq!(after, fresh(&with_volume, &s));
        // And a new image.
        let newer = Settings {
            image: "registry.example.com/stash:2".into(),
            ..Settings::default()
        };
        assert_ne!(plan(&with_volume, &s, &newer), after);
    }

    #[test]
    fn other_kinds_and_api_versions_are_not_ours() {
        let mut d = deployment(json!([{"name": "app", "image": "x"}]), json!([]));
        let s = snap(&[config("bc", "app", json!([]))], &[gcs()]);
        d["apiVersion"] = json!("extensions/v1beta1");
        assert_eq!(run(&d, &s), SidecarPlan::default());
        d["apiVersion"] = json!("apps/v1");
        d["kind"] = json!("Job");
        assert_eq!(run(&d, &s), SidecarPlan::default());
    }

    #[test]
    fn a_missing_template_is_a_warning_not_a_panic() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"}, "spec": {}});
        let p = run(&d, &snap(&[config("bc", "app", json!([]))], &[gcs()]));
        assert!(p.ops.is_empty());
        assert!(p.warnings[0].contains("spec.template is missing"));
    }
}
