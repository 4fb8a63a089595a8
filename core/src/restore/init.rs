//! The `stash-init` restore init container: what a workload's pod template
//! must carry for the RestoreSession that targets it, as a JSON patch.
//!
//! A sibling of [`crate::sidecar::plan`], pure in the same way, and called
//! from the same places: the mutating webhook composes the two (this plan is
//! computed on the workload as the sidecar's patch leaves it), and the
//! RestoreSession controller back-fills with it alone. Its rules mirror the
//! sidecar's:
//!
//! - a workload whose pod template is its controller's (a Deployment's
//!   ReplicaSets, see `workload::template_controller`) is never
//!   patched: the init container reaches those pods through the owner;
//! - exactly one live RestoreSession (not being deleted) targets the workload
//!   and its Repository exists: `stash-init` is inserted first among the init
//!   containers (so the user's own init containers see the restored data), the
//!   volumes it needs are added, and the workload (not its pod template) is
//!   annotated with the session's name. The pod template changes only by the
//!   init container and its volumes;
//! - no live RestoreSession: what stash injected for restore goes — the
//!   container, the owned volumes no other container mounts (the backup
//!   sidecar keeps its own), and the annotation;
//! - several: nothing changes, a warning names them.
//!
//! The volumes are the sidecar's, by name (`stash-podinfo`,
//! `stash-secret-volume`, `tmp-dir`, `stash-local-backend`): when the sidecar
//! is there its volumes are shared, and neither plan removes a volume the
//! other container still mounts. A shared `stash-secret-volume` or
//! `stash-local-backend` that points elsewhere (a RestoreSession reading a
//! Repository other than the backup's) is a conflict, reported as a warning.

use std::collections::BTreeSet;
use std::sync::Arc;

use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::{Container, VolumeMount};
use serde_json::{Value, json};

use crate::api::{
    ANNOTATION_LAST_APPLIED_RESTORE, RESTORE_INIT_CONTAINER, Repository, RestoreSession,
    SIDECAR_CONTAINER,
};
use crate::patch::{Op, Shared};
use crate::plan::{Part, Plan, covers, follow, read_then};
use crate::settings::Settings;
use crate::sidecar::{
    MountsFor, OWNED_VOLUMES, SECRET_DIR, VOLUME_LOCAL_BACKEND, VOLUME_SECRET, field_env,
    mounts_and_volumes, to_json,
};
use crate::store::Snapshot;
use crate::targeting;
use crate::workload::patch::{
    INIT_CONTAINERS, META, VOLUMES, add, add_volumes, indexed, ptr, remove, remove_owned_volumes,
    remove_volumes, replace, set_annotation, unset_annotation,
};
use crate::workload::privilege::{self, Role};
use crate::workload::{View, name_of};

/// What the restore decision wants done to one workload: the shared
/// [`Plan`], its `applied` the RestoreSession whose init container the
/// workload carries after the patch.
pub type InitPlan<O = PatchOperation> = Plan<O>;

/// The container this planner puts in place.
const PART: Part = Part::Init;

/// Whether the workload JSON may need this planner: a RestoreSession is
/// known, or the pod template carries `stash-init` (so it may have to go).
/// The webhook's fast path: without either, [`plan`] is always empty.
pub fn relevant(workload: &Value, snap: &Snapshot) -> bool {
    snap.has_restores()
        || has_init_container(workload.pointer("/spec/template").unwrap_or(&Value::Null))
}

/// [`relevant`], of a workload's view.
pub(crate) fn relevant_view(view: &View, snap: &Snapshot) -> bool {
    snap.has_restores() || init_index(view).is_some()
}

/// Whether a pod template (`spec.template` JSON) carries the `stash-init` container.
pub fn has_init_container(pod_template: &Value) -> bool {
    PART.carried_by(pod_template)
}

/// Plans the `stash-init` container of an apps/v1 workload (raw JSON).
pub fn plan(workload: &Value, snap: &Snapshot, settings: &Settings) -> InitPlan {
    plan_ops(workload, snap, settings).into_json_patch()
}

/// [`plan`], in stash's own patch operations (what the webhook answers with).
pub fn plan_ops(workload: &Value, snap: &Snapshot, settings: &Settings) -> InitPlan<Op> {
    read_then(PART, workload, |view| plan_view(view, snap, settings))
}

fn plan_view(view: &View, snap: &Snapshot, settings: &Settings) -> InitPlan<Op> {
    let targeting = snap.restores_for_target(&view.namespace, &view.kind, &view.name);
    let targeting: Vec<&RestoreSession> = targeting.iter().map(|rs| rs.as_ref()).collect();
    follow(
        targeting::choose(&view.target(), &targeting, &PART.words()),
        || removal_ops(view),
        |rs| inject(view, rs, snap, settings),
    )
}

fn init_index(view: &View) -> Option<usize> {
    PART.found(view).map(|(i, _)| i)
}

/// Containers other than `stash-init` that mount volume `name`:
/// (mounted by the user's containers, mounted by the backup sidecar).
fn other_users(view: &View, name: &str) -> (bool, bool) {
    let (mut user, mut sidecar) = (false, false);
    for (c, mounts) in view.mounting(name) {
        match c.name() {
            Some(RESTORE_INIT_CONTAINER) => {}
            Some(SIDECAR_CONTAINER) => sidecar |= mounts,
            _ => user |= mounts,
        }
    }
    (user, sidecar)
}

/// The `stash-init` container and the volumes it needs for `rs`.
fn desired(
    view: &View,
    rs: &RestoreSession,
    rs_name: &str,
    repo: &Repository,
    settings: &Settings,
    warnings: &mut Vec<String>,
) -> (Value, Vec<Arc<Shared>>) {
    let what = MountsFor {
        owner: format!("RestoreSession {}/{rs_name}", view.namespace),
        container: "stash-init container",
        reaches: "the stash-init container",
        target_mounts: what_mounts(rs),
        tmp: Default::default(),
    };
    let (mounts, volumes) = mounts_and_volumes(
        &view.namespace,
        |name| view.has_volume(name),
        &view.display(),
        repo,
        what,
        warnings,
    );
    let rt = rs
        .spec
        .runtime_settings
        .as_ref()
        .and_then(|r| r.container.as_ref());
    let user = rt.and_then(|c| c.security_context.as_ref());
    let identity = view.identity(what_mounts(rs));
    let mut env = vec![
        field_env("NODE_NAME", "spec.nodeName"),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
    ];
    env.extend(rt.iter().flat_map(|c| c.env.iter().cloned()));
    let container = Container {
        name: RESTORE_INIT_CONTAINER.into(),
        image: Some(settings.image.clone()),
        args: Some(vec![
            "restore".to_string(),
            format!("--restoresession={rs_name}"),
            format!("--secret-dir={SECRET_DIR}"),
        ]),
        env: Some(env),
        env_from: rt.map(|c| c.env_from.clone()).filter(|e| !e.is_empty()),
        resources: rt.and_then(|c| c.resources.clone()),
        security_context: Some(privilege::choose(user, identity, Role::Restore)),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    (
        to_json(&container),
        volumes.iter().map(|v| Shared::new(to_json(v))).collect(),
    )
}

/// The RestoreSession's `target.volumeMounts`.
fn what_mounts(rs: &RestoreSession) -> &[VolumeMount] {
    rs.spec
        .target
        .as_ref()
        .map_or(&[], |t| t.volume_mounts.as_slice())
}

fn inject(view: &View, rs: &RestoreSession, snap: &Snapshot, settings: &Settings) -> InitPlan<Op> {
    let rs_name = rs.metadata.name.clone().unwrap_or_default();
    let owner = ("RestoreSession", rs_name.as_str());
    let repo = match PART.repository(view, snap, owner, rs.repository_name()) {
        Ok(repo) => repo,
        Err(unplanned) => return unplanned,
    };
    let mut plan = Plan::default();
    let repo_name = repo.metadata.name.as_deref().unwrap_or_default();
    let (container, volumes) = desired(view, rs, &rs_name, repo, settings, &mut plan.warnings);
    if let Some(taken) = PART.name_taken(view, &container) {
        plan.warnings.push(taken);
        return plan;
    }
    let mut ops = container_ops(view, container);
    match volume_ops(view, &volumes, &rs_name, repo_name) {
        Ok(volume_ops) => ops.extend(volume_ops),
        Err(conflict) => {
            plan.warnings.push(conflict);
            return plan;
        }
    }
    set_annotation(
        view.meta.as_ref(),
        &META,
        ANNOTATION_LAST_APPLIED_RESTORE,
        &rs_name,
        &mut ops,
    );
    plan.ops = ops;
    plan.applied = Some(rs_name);
    plan
}

/// The `stash-init` container put in place: a new one goes in front of the
/// user's init containers.
fn container_ops(view: &View, container: Value) -> Vec<Op> {
    let list = &view.init_containers;
    match init_index(view) {
        Some(i) if covers(list[i].value(), &container) => Vec::new(),
        Some(i) => vec![replace(indexed(&INIT_CONTAINERS, i), container)],
        None if !list.is_empty() => vec![add(indexed(&INIT_CONTAINERS, 0), container)],
        None => vec![add(ptr(&INIT_CONTAINERS), json!([container]))],
    }
}

/// The volumes the container needs, added or brought up to date, and the
/// owned ones no longer needed removed; `Err` is the warning when a volume
/// of the same name is someone else's.
fn volume_ops(
    view: &View,
    volumes: &[Arc<Shared>],
    rs_name: &str,
    repo_name: &str,
) -> Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    let mut adds = Vec::new();
    for want in volumes {
        let name = name_of(want.value()).unwrap_or("");
        match (&view.volumes, view.volume_index(name)) {
            (Some(existing), Some(i)) if !covers(existing[i].value(), want.value()) => {
                if replaceable(view, name, rs_name, repo_name)? {
                    ops.push(replace(indexed(&VOLUMES, i), want.clone()));
                }
            }
            (_, Some(_)) => {}
            (_, None) => adds.push(want.clone()),
        }
    }
    let wanted: BTreeSet<&str> = volumes.iter().filter_map(|v| name_of(v.value())).collect();
    let stale: Vec<usize> = OWNED_VOLUMES
        .iter()
        .filter(|n| !wanted.contains(*n) && other_users(view, n) == (false, false))
        .filter_map(|n| view.volume_index(n))
        .collect();
    remove_volumes(stale, &mut ops);
    add_volumes(view, adds, &mut ops);
    Ok(ops)
}

/// Whether a differing volume `name` may be replaced with ours: not when
/// the user's containers mount it (`Err`), nor when the sidecar does. The
/// sidecar's podinfo and tmp-dir serve the init container as they are; its
/// secret or local backend must be the restore's own Repository (`Err`).
fn replaceable(view: &View, name: &str, rs_name: &str, repo_name: &str) -> Result<bool, String> {
    let (user, sidecar) = other_users(view, name);
    if user {
        return Err(PART.volume_taken(view, name));
    }
    if sidecar && (name == VOLUME_SECRET || name == VOLUME_LOCAL_BACKEND) {
        return Err(format!(
            "RestoreSession {}/{rs_name} reads Repository {}/{repo_name}, but the stash sidecar of {} mounts another repository as {name:?}; the restore was not set up: restore from the backup's Repository, or remove its BackupConfiguration first",
            &view.namespace,
            &view.namespace,
            view.display()
        ));
    }
    Ok(!sidecar)
}

fn removal_ops(view: &View) -> Vec<Op> {
    // Only what stash injected goes: an unannotated `stash-init` is the user's.
    if !PART.injected_by_stash(view) {
        return Vec::new();
    }
    let mut ops = Vec::new();
    if let Some(i) = init_index(view) {
        ops.push(if view.init_containers.len() == 1 {
            remove(ptr(&INIT_CONTAINERS))
        } else {
            remove(indexed(&INIT_CONTAINERS, i))
        });
    }
    let unused = |n: &str| other_users(view, n) == (false, false);
    remove_owned_volumes(view, &OWNED_VOLUMES, unused, &mut ops);
    unset_annotation(
        view.meta.as_ref(),
        &META,
        ANNOTATION_LAST_APPLIED_RESTORE,
        &mut ops,
    );
    ops
}
