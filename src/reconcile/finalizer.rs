//! The finalizer [`FINALIZER`] (`stash.appscode.com`) on the objects the
//! reconciler cleans up after (BackupConfigurations, RestoreSessions), in one
//! place, shaped like `kube::runtime::finalizer::finalizer`: the caller hands
//! over an [`Event::Apply`] / [`Event::Cleanup`] handler and this module adds
//! the finalizer before the first apply and removes it after a successful
//! cleanup.
//!
//! Why not kube-runtime's helper itself: its patches differ on the wire from
//! what this reconciler has always sent and its tests pin down. Every write
//! here is a JSON patch guarded by a `test` of `/metadata/resourceVersion`
//! (docs/design.md: a concurrent change fails the write instead of being
//! overwritten) under the field manager `stash`, and the pass that adds the
//! finalizer goes on to apply at once, where kube's helper returns
//! `await_change` and applies on the next pass.
//!
//! It is also where a pass on a copy this controller has already moved past
//! stops ([`OwnWrites`]): both controllers that use it write their object
//! twice on a first pass (finalizer, status), and their caches lag those
//! writes.

use kube::api::{Api, Patch};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::apply::{ApiError, is_not_found, patch_params};
use super::desired::guarded_patch;
use super::own_writes::OwnWrites;
use crate::api::FINALIZER;

/// What the handler is asked to do.
pub enum Event<K> {
    /// The object lives and carries the finalizer: bring the world in line.
    Apply(K),
    /// The object is being deleted and still carries the finalizer: undo what
    /// must not outlive it. On success the finalizer is released.
    Cleanup(K),
}

/// Runs `handler` on `obj` with the finalizer in place: adds it first if
/// missing; on deletion, removes it after `handler`'s cleanup succeeded. A
/// deleted object without our finalizer costs no request, and so does a
/// copy whose resourceVersion `writes` says this controller has superseded
/// (the newer one's watch event triggers the next pass). `key` names the
/// object in errors (`namespace/name`).
pub async fn finalizer<K, Fut>(
    api: &Api<K>,
    obj: &K,
    key: &str,
    writes: &OwnWrites,
    handler: impl FnOnce(Event<K>) -> Fut,
) -> Result<Action, ApiError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    Fut: Future<Output = Result<Action, ApiError>>,
{
    let rv = obj.meta().resource_version.as_deref();
    if writes.is_stale(key, rv) {
        tracing::debug!(kind = %K::kind(&()), object = %key, resource_version = rv, "skipped a copy this controller has already written past");
        return Ok(Action::await_change());
    }
    let index = obj.finalizers().iter().position(|f| f == FINALIZER);
    if obj.meta().deletion_timestamp.is_some() {
        let Some(index) = index else {
            return Ok(Action::await_change());
        };
        let action = handler(Event::Cleanup(obj.clone())).await?;
        release(api, obj, key, index).await?;
        writes.forget(key);
        tracing::info!(kind = %K::kind(&()), object = %key, "released the finalizer");
        return Ok(action);
    }
    let obj = match index {
        Some(_) => obj.clone(),
        None => {
            let added = add(api, obj, key).await?;
            writes.wrote(key, rv, added.meta().resource_version.as_deref());
            added
        }
    };
    handler(Event::Apply(obj)).await
}

fn patch(ops: Vec<Value>, obj: &impl Resource) -> Result<json_patch::Patch, ApiError> {
    let ops: Vec<json_patch::PatchOperation> = serde_json::from_value(Value::Array(ops))
        .map_err(|e| ApiError::new("build JSON patch", kube::Error::SerdeError(e)))?;
    Ok(guarded_patch(
        ops,
        &obj.meta().resource_version.clone().unwrap_or_default(),
    ))
}

/// Adds the finalizer; returns the object as it now is.
async fn add<K>(api: &Api<K>, obj: &K, key: &str) -> Result<K, ApiError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let op = if obj.meta().finalizers.is_none() {
        json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
    } else {
        json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER})
    };
    api.patch(
        &obj.name_any(),
        &patch_params(),
        &Patch::Json::<()>(patch(vec![op], obj)?),
    )
    .await
    .map_err(|e| ApiError::new(format!("add finalizer to {} {key}", K::kind(&())), e))
}

/// Removes the finalizer at `index` (tested, so another's is never removed);
/// an object already gone is fine.
async fn release<K>(api: &Api<K>, obj: &K, key: &str, index: usize) -> Result<(), ApiError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let ops = vec![
        json!({"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": FINALIZER}),
        json!({"op": "remove", "path": format!("/metadata/finalizers/{index}")}),
    ];
    match api
        .patch(
            &obj.name_any(),
            &patch_params(),
            &Patch::Json::<()>(patch(ops, obj)?),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(ApiError::new(
            format!("remove finalizer from {} {key}", K::kind(&())),
            e,
        )),
    }
}
