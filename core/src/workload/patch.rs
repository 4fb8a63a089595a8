//! JSON patch operations against a workload's JSON, as both planners write
//! them: paths into the pod template, and setting or removing one of stash's
//! annotations while creating (or dropping) the maps around it.

use std::sync::Arc;

use json_patch::jsonptr::PointerBuf;
use serde_json::json;

use super::{Meta, View};
use crate::patch::{Json, Op, Shared};

pub(crate) const CONTAINERS: [&str; 4] = ["spec", "template", "spec", "containers"];
pub(crate) const INIT_CONTAINERS: [&str; 4] = ["spec", "template", "spec", "initContainers"];
pub(crate) const VOLUMES: [&str; 4] = ["spec", "template", "spec", "volumes"];
pub(crate) const TEMPLATE_META: [&str; 3] = ["spec", "template", "metadata"];
pub(crate) const META: [&str; 1] = ["metadata"];

pub(crate) fn ptr(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

pub(crate) fn add(path: PointerBuf, value: impl Into<Json>) -> Op {
    Op::add(path, value)
}

pub(crate) fn replace(path: PointerBuf, value: impl Into<Json>) -> Op {
    Op::replace(path, value)
}

pub(crate) fn remove(path: PointerBuf) -> Op {
    Op::remove(path)
}

pub(crate) fn indexed(base: &[&str], i: usize) -> PointerBuf {
    let mut p = ptr(base);
    p.push_back(i);
    p
}

/// Sets `key` in `<base>/annotations`, creating `base` or its annotations map when missing.
pub(crate) fn set_annotation(
    meta: Option<&Meta>,
    base: &[&str],
    key: &str,
    value: &str,
    ops: &mut Vec<Op>,
) {
    let Some(meta) = meta else {
        ops.push(add(ptr(base), json!({"annotations": {key: value}})));
        return;
    };
    let mut annotations = ptr(base);
    annotations.push_back("annotations");
    if !meta.has_annotations() {
        ops.push(add(annotations, json!({key: value})));
        return;
    }
    if meta.annotation(key).as_deref() == Some(value) {
        return;
    }
    let exists = meta.annotated(key);
    annotations.push_back(key);
    ops.push(if exists {
        replace(annotations, json!(value))
    } else {
        add(annotations, json!(value))
    });
}

/// Removes `key` from `<base>/annotations`, and the map itself when `key` was its only entry.
pub(crate) fn unset_annotation(meta: Option<&Meta>, base: &[&str], key: &str, ops: &mut Vec<Op>) {
    if !meta.is_some_and(|m| m.annotated(key)) {
        return;
    }
    let mut path = ptr(base);
    path.push_back("annotations");
    if meta.is_some_and(|m| m.annotation_count() > 1) {
        path.push_back(key);
    }
    ops.push(remove(path));
}

/// Removes the pod volumes at `indices` (any order): the last first, so each
/// index still points where it did.
pub(crate) fn remove_volumes(mut indices: Vec<usize>, ops: &mut Vec<Op>) {
    indices.sort_unstable_by(|a, b| b.cmp(a));
    ops.extend(indices.into_iter().map(|i| remove(indexed(&VOLUMES, i))));
}

/// Appends `adds` to the pod's volumes, or adds them as the list when the
/// pod has none.
pub(crate) fn add_volumes(view: &View, adds: Vec<Arc<Shared>>, ops: &mut Vec<Op>) {
    if view.volumes.is_none() {
        if !adds.is_empty() {
            ops.push(add(ptr(&VOLUMES), Json::List(adds)));
        }
        return;
    }
    let mut end = ptr(&VOLUMES);
    end.push_back("-");
    ops.extend(adds.into_iter().map(|v| add(end.clone(), v)));
}

/// Removes the volumes named in `owned` that the pod has and `removable`
/// allows; the whole list when they are all it holds (the injection made it).
pub(crate) fn remove_owned_volumes(
    view: &View,
    owned: &[&str],
    removable: impl Fn(&str) -> bool,
    ops: &mut Vec<Op>,
) {
    let Some(existing) = &view.volumes else {
        return;
    };
    let found: Vec<usize> = owned
        .iter()
        .filter(|n| removable(n))
        .filter_map(|n| view.volume_index(n))
        .collect();
    if !found.is_empty() && found.len() == existing.len() {
        ops.push(remove(ptr(&VOLUMES)));
    } else {
        remove_volumes(found, ops);
    }
}
