//! The reconciler's few write patterns, each level-triggered and quiet:
//! read what exists, compare with the desired object, write only the
//! difference, always as field manager [`FIELD_MANAGER`]; the finalizer
//! ([`with_finalizer`], kube-runtime's helper); and what the three controllers
//! share around a pass: the object's [`key`], the per-object retry backoff and
//! the one [`error_policy`].

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::desired::FIELD_MANAGER;
use super::own_writes::OwnWrites;
use crate::api::FINALIZER;
use crate::sidecar::covers;

/// An API call that failed, with what it was doing.
///
/// Displayed as one line a person can act on: for an answer of the API
/// server, `<what>: <Status.message> (<code> <reason>)` — kube's own
/// `Display` of [`kube::Error::Api`] appends a `Debug` dump of the whole
/// `Status`, which is what the logs used to carry.
#[derive(Debug, thiserror::Error)]
pub struct ApiError {
    pub what: String,
    #[source]
    pub source: kube::Error,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            kube::Error::Api(s) => write!(
                f,
                "{}: {} ({} {})",
                self.what,
                s.message.trim(),
                s.code,
                s.reason
            ),
            other => write!(f, "{}: {other}", self.what),
        }
    }
}

impl ApiError {
    pub fn new(what: impl Into<String>, source: kube::Error) -> Self {
        Self {
            what: what.into(),
            source,
        }
    }

    /// Whether a guarded write lost a race: 409 Conflict (a stale
    /// `metadata.resourceVersion` precondition) or 422 from a JSON patch
    /// whose `test` of `/metadata/resourceVersion` or of a finalizer failed
    /// (the API server names the tested path in its message). Someone else
    /// wrote in between; the next pass, on the newer object, decides again.
    pub fn is_race(&self) -> bool {
        match &self.source {
            kube::Error::Api(s) => {
                s.code == 409
                    || (s.code == 422
                        && ["/metadata/resourceVersion", "/metadata/finalizers"]
                            .iter()
                            .any(|p| s.message.contains(p)))
            }
            _ => false,
        }
    }
}

/// How the controllers name an object in their logs, errors and per-object
/// memories ([`Backoff`], [`OwnWrites`]): `namespace/name`.
pub fn key<K: Resource>(obj: &K) -> String {
    crate::store::display_name(obj)
}

/// A controller context's per-object retry backoff, for [`error_policy`].
pub trait Retries {
    fn backoff(&self) -> &Backoff;
}

/// The controllers' one error policy: retry the object with its own
/// exponential backoff, logging the failure once ([`log_failure`]).
pub fn error_policy<K, C>(obj: Arc<K>, err: &ApiError, ctx: Arc<C>) -> Action
where
    K: Resource<DynamicType = ()>,
    C: Retries,
{
    Action::requeue(log_failure(&K::kind(&()), &key(&*obj), err, ctx.backoff()))
}

/// Runs `handler` under kube-runtime's finalizer helper
/// ([`kube::runtime::finalizer::finalizer`]) with stash's finalizer
/// [`FINALIZER`]: a first pass adds it and waits for the change (the patch's
/// watch event triggers the pass that applies); a pass on a deleted object
/// runs the cleanup, then releases it; a deleted object without it costs no
/// request. Around it, what kube's helper does not know: a copy whose
/// resourceVersion `writes` says this controller has written past is skipped
/// without a request (the newer one's watch event triggers the next pass),
/// the version the finalizer patch replaced is recorded as such, and the
/// helper's errors become [`ApiError`]s naming the object.
pub async fn with_finalizer<K, Fut>(
    api: &Api<K>,
    obj: &K,
    writes: &OwnWrites,
    handler: impl FnOnce(Event<K>) -> Fut,
) -> Result<Action, ApiError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
    Fut: Future<Output = Result<Action, ApiError>>,
{
    let key = key(obj);
    let kind = K::kind(&());
    let rv = obj.meta().resource_version.as_deref();
    if writes.is_stale(&key, rv) {
        tracing::debug!(kind = %kind, object = %key, resource_version = rv, "skipped a copy this controller has already written past");
        return Ok(Action::await_change());
    }
    let ours = obj.finalizers().iter().any(|f| f == FINALIZER);
    let deleting = obj.meta().deletion_timestamp.is_some();
    match finalizer(api, FINALIZER, Arc::new(obj.clone()), handler).await {
        Ok(action) => {
            if deleting && ours {
                writes.forget(&key);
                tracing::info!(kind = %kind, object = %key, "released the finalizer");
            } else if !ours && !deleting {
                // kube's helper returns no object: the version it replaced
                // is what a lagging cache may hand the next pass.
                writes.wrote(&key, rv, None);
            }
            Ok(action)
        }
        Err(finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e)) => Err(e),
        Err(finalizer::Error::AddFinalizer(e)) => {
            Err(ApiError::new(format!("add finalizer to {kind} {key}"), e))
        }
        // Cleaned up, and already gone.
        Err(finalizer::Error::RemoveFinalizer(e)) if is_not_found(&e) => {
            writes.forget(&key);
            Ok(Action::await_change())
        }
        Err(finalizer::Error::RemoveFinalizer(e)) => Err(ApiError::new(
            format!("remove finalizer from {kind} {key}"),
            e,
        )),
        Err(other) => Err(ApiError::new(
            format!("finalizer of {kind} {key}"),
            kube::Error::Service(other.to_string().into()),
        )),
    }
}

/// Logs a failed pass the way its cause deserves and returns the retry
/// delay: a lost race at DEBUG (it is retried and is no news), anything
/// else as one WARN line carrying the API server's message — once: the
/// same failure again on the retries behind the backoff is logged at DEBUG
/// (the object's conditions and its one Warning event keep saying it).
pub fn log_failure(kind: &str, key: &str, err: &ApiError, backoff: &Backoff) -> Duration {
    let text = err.to_string();
    let retry = backoff.failed(key, &text);
    let delay = retry.delay;
    if err.is_race() {
        tracing::debug!(object = %key, error = %text, retry_in = ?delay, "{kind} changed meanwhile; reconciling again");
    } else if retry.repeated {
        tracing::debug!(object = %key, error = %text, retry_in = ?delay, "{kind} reconcile still failing");
    } else {
        tracing::warn!(object = %key, error = %text, retry_in = ?delay, "{kind} reconcile failed");
    }
    delay
}

/// Whether an error is the API server's 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// The live object already matched; nothing was written.
    Unchanged,
    /// Created or updated through server-side apply.
    Applied,
}

/// Makes the named object hold `desired`: GET, and server-side apply (forced,
/// field manager `stash`) only when the live object lacks part of it.
pub async fn ensure<K>(api: &Api<K>, desired: &K) -> Result<Ensured, ApiError>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let what = |verb: &str| format!("{verb} {} {name}", K::kind(&()));
    // k8s-openapi and kube-derive types serialize their apiVersion and kind,
    // so both sides compare like for like and the body is a valid apply.
    let want = serde_json::to_value(desired)
        .map_err(|e| ApiError::new(what("serialize"), kube::Error::SerdeError(e)))?;
    if let Some(live) = api
        .get_opt(&name)
        .await
        .map_err(|e| ApiError::new(what("get"), e))?
    {
        let live = serde_json::to_value(&live)
            .map_err(|e| ApiError::new(what("serialize"), kube::Error::SerdeError(e)))?;
        if covers(&live, &want) {
            return Ok(Ensured::Unchanged);
        }
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&want),
    )
    .await
    .map_err(|e| ApiError::new(what("apply"), e))?;
    Ok(Ensured::Applied)
}

/// Parameters for merge patches (status, finalizers) by field manager `stash`.
pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

/// A dynamic API for an `apps/v1` workload kind, or None for another kind.
pub fn workload_api(client: Client, namespace: &str, kind: &str) -> Option<Api<DynamicObject>> {
    if !crate::api::WORKLOAD_KINDS.contains(&kind) {
        return None;
    }
    let gvk = GroupVersionKind::gvk("apps", "v1", kind);
    let plural = format!("{}s", kind.to_lowercase());
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
    Some(Api::namespaced_with(client, namespace, &ar))
}

/// GETs a workload as raw JSON; None when it does not exist.
pub async fn get_workload(
    client: Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<Option<serde_json::Value>, ApiError> {
    let Some(api) = workload_api(client, namespace, kind) else {
        return Ok(None);
    };
    let what = || format!("get {kind} {namespace}/{name}");
    let obj = api
        .get_opt(name)
        .await
        .map_err(|e| ApiError::new(what(), e))?;
    obj.map(serde_json::to_value)
        .transpose()
        .map_err(|e| ApiError::new(what(), kube::Error::SerdeError(e)))
}

/// First retry delay after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(2);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Delay before retry number `failures` (1-based): doubling from
/// [`BACKOFF_MIN`], capped at [`BACKOFF_MAX`].
pub fn backoff_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_MIN.saturating_mul(1u32 << exp).min(BACKOFF_MAX)
}

/// Consecutive failures per object, for the controllers' error policy.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, Failing>>,
}

/// How one object has been failing: consecutive failures and the last one's text.
#[derive(Default)]
struct Failing {
    count: u32,
    last: String,
}

/// What [`Backoff::failed`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// How long to wait before the next pass.
    pub delay: Duration,
    /// The previous pass failed with the very same error: no news to report.
    pub repeated: bool,
}

impl Backoff {
    /// Records a failure of `key` with `error` and returns how long to wait
    /// before retrying, and whether it is the same failure as the last one.
    pub fn failed(&self, key: &str, error: &str) -> Retry {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let f = map.entry(key.to_string()).or_default();
        f.count = f.count.saturating_add(1);
        let repeated = f.count > 1 && f.last == error;
        if !repeated {
            f.last = error.to_string();
        }
        Retry {
            delay: backoff_delay(f.count),
            repeated,
        }
    }

    /// Forgets `key`'s failures after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> ApiError {
        let status = kube::core::Status {
            code,
            reason: reason.into(),
            message: message.into(),
            ..Default::default()
        };
        ApiError::new(
            "update status of BackupConfiguration demo/a",
            kube::Error::Api(status.boxed()),
        )
    }

    #[test]
    fn an_api_error_reads_as_the_servers_message() {
        let e = api(
            403,
            "Forbidden",
            "cronjobs.batch is forbidden: denied by policy",
        );
        assert_eq!(
            e.to_string(),
            "update status of BackupConfiguration demo/a: cronjobs.batch is forbidden: denied by policy (403 Forbidden)"
        );
        assert!(!e.is_race());
    }

    #[test]
    fn lost_races_are_told_apart_from_failures() {
        assert!(api(409, "Conflict", "the object has been modified").is_race());
        // kube-apiserver's and the json-patch crate's words for a failed `test`
        assert!(
            api(
                422,
                "Invalid",
                "testing value /metadata/resourceVersion failed: test failed"
            )
            .is_race()
        );
        assert!(
            api(
                422,
                "Invalid",
                "operation '/0' failed at path '/metadata/resourceVersion': value did not match"
            )
            .is_race()
        );
        assert!(
            api(
                422,
                "Invalid",
                "testing value /metadata/finalizers/0 failed"
            )
            .is_race()
        );
        // a policy's or a schema's 422 is not a race
        assert!(!api(422, "Invalid", "spec.schedule: Invalid value").is_race());
        assert!(!api(500, "InternalError", "etcd timeout").is_race());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let got: Vec<u64> = (1..=10).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(got, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
        let b = Backoff::default();
        let first = b.failed("a", "x");
        assert_eq!((first.delay.as_secs(), first.repeated), (2, false));
        let again = b.failed("a", "x");
        assert_eq!((again.delay.as_secs(), again.repeated), (4, true));
        // Another failure is news again; the backoff goes on doubling.
        let other = b.failed("a", "y");
        assert_eq!((other.delay.as_secs(), other.repeated), (8, false));
        b.succeeded("a");
        let fresh = b.failed("a", "y");
        assert_eq!((fresh.delay.as_secs(), fresh.repeated), (2, false));
    }
}
