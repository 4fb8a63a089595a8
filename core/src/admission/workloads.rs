//! `POST /mutate/workloads`: inject, update or remove the `stash` sidecar and
//! the `stash-init` restore container.
//!
//! A thin adapter over [`crate::sidecar::plan`] and
//! [`crate::restore::init::plan`], the functions the reconcilers call too. A user's
//! workload is never blocked because of stash: whatever goes wrong here, the
//! answer is "allowed", at worst with a warning.

use kube::core::admission::Operation;
use serde_json::Value;

use super::{Decision, Request};
use crate::api::WORKLOAD_KINDS;
use crate::patch;
use crate::restore::init as restore_init;
use crate::settings::Settings;
use crate::sidecar;
use crate::store::Snapshot;
use crate::workload::View;

/// Decides the sidecar patch for an apps/v1 workload.
pub fn mutate(req: &Request, snap: &Snapshot, settings: &Settings) -> Decision {
    if !matches!(req.operation, Operation::Create | Operation::Update)
        || req.sub_resource.is_some()
        || req.kind.group != "apps"
        || !WORKLOAD_KINDS.contains(&req.kind.kind.as_str())
    {
        return Decision::allow();
    }
    let Some(object) = &req.object else {
        return Decision::allow();
    };
    // The fast path, every ordinary review: the view read straight from the
    // review's text, and the sidecar alone to plan.
    match View::parse(object.raw.get(), req.namespace.as_deref()) {
        Ok(None) => return Decision::allow(),
        Ok(Some(view)) if !restore_init::relevant_view(&view, snap) => {
            let plan = sidecar::plan_view(&view, snap, settings);
            let mut decision = Decision::allow().with_patch(plan.ops);
            decision.warnings = plan.warnings;
            return decision;
        }
        _ => {}
    }
    // Both planners, or an object the view could not read: the planners run
    // on a JSON tree of only the fields they read (see `view`; the rest of a
    // large object is scanned, never built), so that the init container can
    // be planned on the workload as the sidecar's patch leaves it.
    let mut workload = match super::view::workload(object.raw) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return Decision::allow().warn(format!(
                "stash cannot read {} {}: the stash sidecar was left untouched",
                req.kind.kind, req.name
            ));
        }
    };
    // On CREATE the object's namespace may be unset (it comes from the
    // request); the patch paths never touch it, so filling it is safe.
    if let Some(meta) = workload.get_mut("metadata").and_then(Value::as_object_mut)
        && meta
            .get("namespace")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        && let Some(ns) = &req.namespace
    {
        meta.insert("namespace".into(), Value::String(ns.clone()));
    }
    let plan = sidecar::plan_ops(&workload, snap, settings);
    let mut ops = plan.ops;
    let mut warnings = plan.warnings;
    // The restore init container, planned on the workload as the sidecar's
    // patch leaves it, so the two patches apply one after the other.
    if restore_init::relevant(&workload, snap) {
        let mut patched = workload;
        if ops.is_empty() || json_patch::patch(&mut patched, &patch::to_json_patch(&ops)).is_ok() {
            let init = restore_init::plan_ops(&patched, snap, settings);
            ops.extend(init.ops);
            warnings.extend(init.warnings);
        }
    }
    let mut decision = Decision::allow().with_patch(ops);
    decision.warnings = warnings;
    decision
}
