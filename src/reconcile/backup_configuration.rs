//! The BackupConfiguration controller: keeps everything a configuration
//! implies in place.
//!
//! For each configuration: the finalizer `stash.appscode.com`; the CronJob
//! `stash-backup-<bc>` with its own ServiceAccount and RoleBinding (ClusterRole
//! `stash-cron-job`); the target workload carrying the current sidecar (the
//! webhook's own pure planner decides the patch, so the two never disagree —
//! this back-fills workloads admitted while the webhook was down); the
//! RoleBinding `stash-sidecar-<kind>-<workload>` for the workload's
//! ServiceAccount; and `status` (observedGeneration + conditions). On deletion
//! it removes the sidecar, then releases the finalizer; ownerReferences let the
//! garbage collector take the rest. Re-triggered by changes to the CronJobs,
//! ServiceAccounts and RoleBindings it owns, to Repositories and to the four
//! workload kinds.
//!
//! Configurations and Repositories are read from the index the webhooks read
//! ([`crate::runtime::feed`]), never fetched again: the two decide on the same state.
//! The status also says whether the Repository's storage Secret holds
//! `RESTIC_PASSWORD` (one GET: Secrets are not watched, so a missing one is
//! checked again a minute later) and whether the configuration passes the
//! validating webhook's own rule; `status.phase` sums the conditions up
//! ([`super::desired::invoker_phase`]). A condition that goes `False` is told once
//! as a Warning event, after the status saying so is written
//! ([`super::desired::condition_events`]).
//!
//! Memory stays bounded by what stash manages, not by the cluster: the
//! workloads and the objects it owns are watched as metadata only
//! (`PartialObjectMeta`, the API server sends no spec), nothing of them is
//! cached (a watch only triggers), and every initial list is paginated
//! ([`PAGE_SIZE`]): `any_semantic` would let the API server answer from its
//! watch cache, which ignores `limit` and sends the whole cluster's
//! Deployments and ReplicaSets in one body (docs/performance.md).
//!
//! The controller's cache lags its own writes; a pass handed a copy this
//! controller has already written past does nothing ([`OwnWrites`]), and a
//! write that loses a real race is retried quietly ([`super::apply::log_failure`]).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, Patch};
use kube::core::PartialObjectMeta as Meta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::Event;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::apply::{
    ApiError, Backoff, Retries, ensure, error_policy, get_workload, is_not_found, key,
    patch_params, with_finalizer, workload_api,
};
use super::desired::{
    BackendSecret, LABEL_MANAGED_BY, Observations, RESTIC_PASSWORD, TargetState, condition_events,
    cron_role_binding, cron_service_account, cronjob, desired_status, guarded_patch,
    sidecar_role_binding, workload_service_account,
};
use super::own_writes::OwnWrites;
use crate::api::events::COMPONENT_BACKUPCONFIGURATION_CONTROLLER;
use crate::api::{
    BackupConfiguration, BackupConfigurationStatus, Repository, WORKLOAD_API_VERSION, namespace_of,
};
use crate::recorder::{EventType, Recorder};
use crate::runtime::feed::Feed;
use crate::settings::Settings;
use crate::sidecar;
use crate::store::Store;

/// How soon a configuration whose backend Secret is missing is checked
/// again (Secrets are not watched: the reconciler may only `get` them).
pub const SECRET_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Objects per page of an initial list (a quorum read, which the API server
/// paginates; kube-runtime's default too, named here because memory depends on it).
pub const PAGE_SIZE: u32 = 500;

/// What the BackupConfiguration controller shares between reconciles.
pub struct Context {
    pub client: Client,
    /// Image of the CronJob's container.
    pub image: String,
    /// The webhook's settings (sidecar image, …) for the shared planner.
    pub settings: Settings,
    /// The index the webhooks read too: every configuration (so the planner
    /// sees all that target a workload) and every Repository.
    pub index: Arc<Store>,
    pub backoff: Backoff,
    /// Publishes the Warning events of failed conditions.
    pub recorder: Recorder,
    /// The configurations' versions this controller's own writes superseded.
    pub own_writes: OwnWrites,
}

impl Context {
    pub fn new(client: Client, image: String, settings: Settings, index: Arc<Store>) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), COMPONENT_BACKUPCONFIGURATION_CONTROLLER),
            client,
            image,
            settings,
            index,
            backoff: Backoff::default(),
            own_writes: OwnWrites::default(),
        }
    }
}

impl Retries for Context {
    fn backoff(&self) -> &Backoff {
        &self.backoff
    }
}

/// Runs the controller until the returned future is dropped. The
/// configurations and Repositories come from `feed` (the index's own watch);
/// the objects it writes and the workloads, from watches of its own.
pub async fn run(client: Client, image: String, settings: Settings, feed: Feed) {
    run_until(client, image, settings, feed, std::future::pending()).await
}

/// [`run`] until `stop` resolves: then no new reconcile starts, the ones in
/// flight finish, and the future returns.
pub async fn run_until(
    client: Client,
    image: String,
    settings: Settings,
    feed: Feed,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let managed = format!("{}={}", LABEL_MANAGED_BY.0, LABEL_MANAGED_BY.1);
    let owned = || {
        watcher::Config::default()
            .labels(&managed)
            .page_size(PAGE_SIZE)
    };
    let index = feed.store.clone();
    let by_repo = index.clone();
    let controller = Controller::for_shared_stream(feed.configs.subscribe(), feed.configs.reader())
        .owns(Api::<Meta<CronJob>>::all(client.clone()), owned())
        .owns(Api::<Meta<ServiceAccount>>::all(client.clone()), owned())
        .owns(Api::<Meta<RoleBinding>>::all(client.clone()), owned())
        .watches_shared_stream(feed.repositories.subscribe(), move |repo| {
            let (ns, name) = (namespace_of(&*repo).to_owned(), repo.name_any());
            by_repo
                .snapshot()
                .configs()
                .filter(|bc| {
                    namespace_of(&***bc) == ns && bc.repository_name() == Some(name.as_str())
                })
                .map(|bc| ObjectRef::from_obj(&**bc))
                .collect::<Vec<_>>()
        });
    let controller = watch_workload::<Deployment>(controller, &client, &index);
    let controller = watch_workload::<StatefulSet>(controller, &client, &index);
    let controller = watch_workload::<DaemonSet>(controller, &client, &index);
    let controller = watch_workload::<ReplicaSet>(controller, &client, &index);
    let ctx = Arc::new(Context::new(client, image, settings, index));
    controller
        .with_config(super::controller_config())
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "BackupConfiguration reconcile failed");
            }
        })
        .await;
}

/// Re-triggers the configurations that target a workload of kind `W` when
/// it changes. Metadata only (name and namespace are all the mapping reads),
/// paginated, and not kept: an untargeted workload costs a moment of one page.
fn watch_workload<W>(
    controller: Controller<BackupConfiguration>,
    client: &Client,
    index: &Arc<Store>,
) -> Controller<BackupConfiguration>
where
    W: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let index = index.clone();
    controller.watches(
        Api::<Meta<W>>::all(client.clone()),
        watcher::Config::default().page_size(PAGE_SIZE),
        move |w| {
            index
                .snapshot()
                .configs_for_target(namespace_of(&w), &W::kind(&()), &w.name_any())
                .into_iter()
                .map(|bc| ObjectRef::from_obj(&**bc))
                .collect::<Vec<_>>()
        },
    )
}

/// One level-triggered pass over one configuration.
pub async fn reconcile(
    bc: Arc<BackupConfiguration>,
    ctx: Arc<Context>,
) -> Result<Action, ApiError> {
    reconcile_at(&bc, &ctx, jiff::Timestamp::now()).await
}

/// [`reconcile`] with the clock passed in (condition transition times).
pub async fn reconcile_at(
    bc: &BackupConfiguration,
    ctx: &Context,
    now: jiff::Timestamp,
) -> Result<Action, ApiError> {
    let api = configs_api(ctx, namespace_of(bc));
    let action = with_finalizer(&api, bc, &ctx.own_writes, |event| async move {
        match event {
            Event::Apply(bc) => apply(&bc, ctx, now).await,
            Event::Cleanup(bc) => cleanup(&bc, ctx).await,
        }
    })
    .await?;
    ctx.backoff.succeeded(&key(bc));
    Ok(action)
}

fn configs_api(ctx: &Context, ns: &str) -> Api<BackupConfiguration> {
    Api::namespaced(ctx.client.clone(), ns)
}

/// On deletion, before the finalizer is released: take the sidecar out of
/// the workload.
async fn cleanup(bc: &BackupConfiguration, ctx: &Context) -> Result<Action, ApiError> {
    let ns = namespace_of(bc).to_owned();
    if let Some(t) = bc.target_ref()
        && t.api_version == WORKLOAD_API_VERSION
    {
        // The configuration carries a deletionTimestamp, so the planner
        // treats it as gone and plans the sidecar's removal.
        sync_sidecar(bc, ctx, &ns, &t.kind, &t.name).await?;
    }
    tracing::info!(config = %key(bc), "removed the sidecar");
    Ok(Action::await_change())
}

/// What [`sync_sidecar`] found.
enum SidecarOutcome {
    /// No such workload.
    TargetMissing,
    /// The plan after patching: the configuration whose sidecar the workload
    /// carries, warnings, and the workload's ServiceAccount.
    Planned {
        config: Option<String>,
        warnings: Vec<String>,
        service_account: String,
    },
}

/// Brings the workload's sidecar in line with the shared planner's verdict.
async fn sync_sidecar(
    bc: &BackupConfiguration,
    ctx: &Context,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<SidecarOutcome, ApiError> {
    let Some(workload) = get_workload(ctx.client.clone(), ns, kind, name).await? else {
        return Ok(SidecarOutcome::TargetMissing);
    };
    let mut snap = ctx.index.snapshot();
    // The object this reconcile was handed is at least as fresh as the index
    // (the feed fills the controller's cache a moment before the index).
    snap.ensure_config(bc);
    // The webhook's own pure function, so the two can never disagree.
    let plan = sidecar::plan(&workload, &snap, &ctx.settings);
    if !plan.ops.is_empty() {
        let rv = workload
            .pointer("/metadata/resourceVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let patch = guarded_patch(plan.ops, rv);
        let Some(api) = workload_api(ctx.client.clone(), ns, kind) else {
            return Ok(SidecarOutcome::TargetMissing);
        };
        api.patch(name, &patch_params(), &Patch::Json::<()>(patch))
            .await
            .map_err(|e| ApiError::new(format!("patch the sidecar of {kind} {ns}/{name}"), e))?;
        tracing::info!(config = %key(bc), workload = %format!("{kind}/{name}"), "patched the workload's sidecar");
    }
    Ok(SidecarOutcome::Planned {
        config: plan.applied,
        warnings: plan.warnings,
        service_account: workload_service_account(&workload),
    })
}

/// Ensures the CronJob, the RBAC, the sidecar and the status.
async fn apply(
    bc: &BackupConfiguration,
    ctx: &Context,
    now: jiff::Timestamp,
) -> Result<Action, ApiError> {
    let ns = namespace_of(bc).to_owned();
    let mut errors = FirstError::default();
    let (repo, validation) = from_index(bc, ctx, &ns);
    let repository = bc
        .repository_name()
        .map(|name| (format!("{ns}/{name}"), repo.is_some()));
    let secret = observe_secret(ctx, &ns, repo.as_deref(), &mut errors).await;
    let cronjob = observe_cronjob(bc, ctx, &ns, &mut errors).await;
    let (target, sidecar) = observe_target(bc, ctx, &ns, &mut errors).await;
    let recheck = secret.needs_recheck();
    let obs = Observations {
        repository,
        target,
        cronjob,
        sidecar,
        secret,
        validation,
    };
    // A write that lost a race (the workload changed between its GET and
    // the guarded patch) is no failure to report: the status and its
    // events wait for the retry, which decides on the newer state. Else a
    // busy Deployment would flap StashSidecarInjected and its event.
    if !errors.raced {
        let status = desired_status(bc, &obs, now);
        if write_status(bc, ctx, &ns, &status).await? {
            record_events(bc, ctx, &status).await;
        }
    }
    errors.into_result(recheck)
}

/// What the index says: the configuration's Repository, and the validating
/// webhook's own rule on the configuration (its denial, if any). A
/// Repository that appears or changes re-triggers the pass through the feed,
/// after the index has it: no need to read it from the API server.
fn from_index(
    bc: &BackupConfiguration,
    ctx: &Context,
    ns: &str,
) -> (Option<Arc<Repository>>, Result<(), String>) {
    let mut snap = ctx.index.snapshot();
    // The object this pass was handed is at least as fresh as the index.
    snap.ensure_config(bc);
    let repo = bc
        .repository_name()
        .and_then(|name| snap.repository(ns, name).cloned());
    let validation =
        crate::admission::validate::judge(bc, ns, &bc.name_any(), &snap, &ctx.settings)
            .map(|_warnings| ());
    (repo, validation)
}

/// The Repository's storage Secret: named, there, holding `RESTIC_PASSWORD`.
/// A Secret that does not exist is an answer, not an error; any other
/// failure to read it is both.
async fn observe_secret(
    ctx: &Context,
    ns: &str,
    repo: Option<&Repository>,
    errors: &mut FirstError,
) -> BackendSecret {
    let Some(repo) = repo else {
        return BackendSecret::NoRepository;
    };
    let Some(name) = repo
        .spec
        .backend
        .storage_secret_name
        .as_deref()
        .filter(|n| !n.is_empty())
    else {
        return BackendSecret::NotNamed(format!("{ns}/{}", repo.name_any()));
    };
    let label = format!("{ns}/{name}");
    match Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get(name)
        .await
    {
        Ok(secret) => {
            let in_data = secret.data.is_some_and(|d| d.contains_key(RESTIC_PASSWORD));
            let in_string_data = secret
                .string_data
                .is_some_and(|d| d.contains_key(RESTIC_PASSWORD));
            if in_data || in_string_data {
                BackendSecret::Found(label)
            } else {
                BackendSecret::NoPassword(label)
            }
        }
        Err(e) if is_not_found(&e) => BackendSecret::Missing(label),
        Err(e) => {
            let why = errors.note(ApiError::new(format!("get Secret {label}"), e));
            BackendSecret::Unreadable(label, why)
        }
    }
}

/// One Warning event per condition the new status newly reports `False`
/// (or `False` for another reason), from `BackupConfiguration Controller`.
/// Called only once the status saying so is written, so a pass retried on
/// the same state repeats none; an event that cannot be written is logged.
async fn record_events(
    bc: &BackupConfiguration,
    ctx: &Context,
    status: &BackupConfigurationStatus,
) {
    let regarding = bc.object_ref(&());
    for event in condition_events(bc.status.as_ref(), status) {
        ctx.recorder
            .publish_or_log(&regarding, EventType::Warning, event.reason, &event.message)
            .await;
    }
}

/// The first API error of a pass (returned, so the pass is retried) while
/// every error's text goes into the conditions; and whether a write lost a
/// race (then the pass reports nothing: see [`apply`]).
#[derive(Default)]
struct FirstError {
    first: Option<ApiError>,
    raced: bool,
}

impl FirstError {
    /// Keeps `e` if it is the first, and gives its text for a condition.
    fn note(&mut self, e: ApiError) -> String {
        let msg = e.to_string();
        self.raced |= e.is_race();
        self.first.get_or_insert(e);
        msg
    }

    /// The pass's outcome: the first error, else wait for a change, or
    /// for [`SECRET_RECHECK`] when `recheck` (something not watched is missing).
    fn into_result(self, recheck: bool) -> Result<Action, ApiError> {
        match self.first {
            Some(e) => Err(e),
            None if recheck => Ok(Action::requeue(SECRET_RECHECK)),
            None => Ok(Action::await_change()),
        }
    }
}

/// The CronJob and its RBAC, made to exist. `paused` is not an input:
/// pausing changes none of it (the CronJob's `suspend` is the trigger's).
async fn observe_cronjob(
    bc: &BackupConfiguration,
    ctx: &Context,
    ns: &str,
    errors: &mut FirstError,
) -> Result<(), String> {
    let cj = cronjob(bc, &ctx.image).map_err(|problem| problem.to_string())?;
    let sa = ensure(
        &Api::<ServiceAccount>::namespaced(ctx.client.clone(), ns),
        &cron_service_account(bc),
    )
    .await;
    let rb = ensure(
        &Api::<RoleBinding>::namespaced(ctx.client.clone(), ns),
        &cron_role_binding(bc),
    )
    .await;
    let cj = ensure(&Api::<CronJob>::namespaced(ctx.client.clone(), ns), &cj).await;
    match (sa, rb, cj) {
        (Ok(_), Ok(_), Ok(_)) => Ok(()),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(errors.note(e)),
    }
}

/// The target workload, its sidecar and the sidecar's RoleBinding: the
/// target as `(kind/name, state)` and the sidecar condition's verdict.
async fn observe_target(
    bc: &BackupConfiguration,
    ctx: &Context,
    ns: &str,
    errors: &mut FirstError,
) -> (Option<(String, TargetState)>, Result<(), String>) {
    let Some(t) = bc.target_ref() else {
        return (None, Err("spec.target.ref is not set".to_string()));
    };
    let label = format!("{}/{}", t.kind, t.name);
    if t.api_version != WORKLOAD_API_VERSION
        || workload_api(ctx.client.clone(), ns, &t.kind).is_none()
    {
        let why = format!(
            "target {} {label} is not a workload the sidecar model supports (apps/v1 Deployment, StatefulSet, DaemonSet, ReplicaSet)",
            t.api_version
        );
        return (Some((label, TargetState::Unsupported)), Err(why));
    }
    match sync_sidecar(bc, ctx, ns, &t.kind, &t.name).await {
        Err(e) => (Some((label, TargetState::Found)), Err(errors.note(e))),
        Ok(SidecarOutcome::TargetMissing) => {
            let why = format!("target {label} does not exist");
            (Some((label, TargetState::Missing)), Err(why))
        }
        Ok(SidecarOutcome::Planned {
            config,
            warnings,
            service_account,
        }) => {
            let rb = sidecar_role_binding(bc, &t.kind, &t.name, &service_account);
            let state =
                match ensure(&Api::<RoleBinding>::namespaced(ctx.client.clone(), ns), &rb).await {
                    Err(e) => Err(errors.note(e)),
                    Ok(_) => sidecar_verdict(&bc.name_any(), &label, config.as_deref(), &warnings),
                };
            (Some((label, TargetState::Found)), state)
        }
    }
}

/// Whether the planner's choice for the target is this configuration's
/// sidecar (pure): `config` is the configuration whose sidecar the target
/// carries now, `warnings` the planner's reasons when it chose none.
fn sidecar_verdict(
    bc_name: &str,
    label: &str,
    config: Option<&str>,
    warnings: &[String],
) -> Result<(), String> {
    match config {
        Some(c) if c == bc_name => Ok(()),
        Some(other) => Err(format!(
            "{label} carries the sidecar of BackupConfiguration {other}"
        )),
        None if warnings.is_empty() => {
            Err("the sidecar planner chose no configuration".to_string())
        }
        None => Err(warnings.join("; ")),
    }
}

/// Writes `status` when it differs from what `bc` holds, decided on `bc` as
/// this pass read it: if it changed since, the write fails with a conflict
/// and the newer state gets its own pass. Returns whether it wrote; the
/// version written over is remembered as superseded.
async fn write_status(
    bc: &BackupConfiguration,
    ctx: &Context,
    ns: &str,
    status: &BackupConfigurationStatus,
) -> Result<bool, ApiError> {
    if bc.status.as_ref() == Some(status) {
        return Ok(false);
    }
    let body = json!({
        "metadata": {"resourceVersion": bc.resource_version()},
        "status": status
    });
    let written = configs_api(ctx, ns)
        .patch_status(&bc.name_any(), &patch_params(), &Patch::Merge(&body))
        .await
        .map_err(|e| {
            ApiError::new(
                format!("update status of BackupConfiguration {}", key(bc)),
                e,
            )
        })?;
    ctx.own_writes.wrote(
        &key(bc),
        bc.resource_version().as_deref(),
        written.resource_version().as_deref(),
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::sidecar_verdict;

    #[test]
    fn the_sidecar_condition_names_who_holds_the_target() {
        let d = "Deployment/stash-demo";
        assert_eq!(sidecar_verdict("a", d, Some("a"), &[]), Ok(()));
        assert_eq!(
            sidecar_verdict("a", d, Some("b"), &[]),
            Err("Deployment/stash-demo carries the sidecar of BackupConfiguration b".into())
        );
        assert_eq!(
            sidecar_verdict("a", d, None, &["x".into(), "y".into()]),
            Err("x; y".into())
        );
        assert_eq!(
            sidecar_verdict("a", d, None, &[]),
            Err("the sidecar planner chose no configuration".into())
        );
    }
}
