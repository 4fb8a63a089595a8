//! The BackupSession controller: drives each session's `status.phase`.
//!
//! An empty or Pending session whose invoker is paused becomes `Skipped` with
//! one Warning event `BackupSessionSkipped` from `BackupSession Controller`;
//! otherwise it becomes `Running` with `totalHosts`, and once every host has
//! written its result into `status.stats[]` (the sidecar does that) it becomes
//! `Succeeded` or `Failed` with `sessionDuration`, an event, and the invoker's
//! finished sessions beyond `backupHistoryLimit` are deleted. The decision is
//! [`super::desired::session_step`]; this module only reads and writes.
//!
//! A session nothing runs does not stay `Running` for ever: marking it
//! Running writes `status.sessionDeadline`, the controller requeues itself
//! for the next deadline, and a session still unfinished then is marked
//! `Failed` with the condition `DeadlineExceeded` and the reason
//! ([`deadline`] decides; [`crate::api::timeout`] has the values and why).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::apply::{ApiError, Backoff, Retries, error_policy, get_workload, is_not_found, key};
use super::deadline::{self, Deadlines, Due, SidecarSeen, TargetView};
use super::desired::{InvokerView, SessionStep, session_step, sessions_to_delete, total_hosts};
use super::transition::{self, Transition, TransitionEvent};
use crate::api::events::{
    BACKUPSESSION_SKIPPED_MESSAGE, BACKUPSESSION_SUCCEEDED_MESSAGE,
    COMPONENT_BACKUPSESSION_CONTROLLER, REASON_BACKUPSESSION_FAILED, REASON_BACKUPSESSION_SKIPPED,
    REASON_BACKUPSESSION_SUCCEEDED, backupsession_failed_message,
};
use crate::api::{
    BackupConfiguration, BackupSession, BackupSessionPhase, INVOKER_KIND_BACKUP_CONFIGURATION,
    LABEL_BACKUP_CONFIGURATION, timeout,
};
use crate::monitoring::collector::Leading;
use crate::recorder::{EventType, Recorder};
use crate::runtime::feed::Kind;
use crate::store::{Store, slim};

/// How long to wait before looking again at a session whose target's host
/// count is not known yet (a StatefulSet not yet created, a DaemonSet not yet
/// scheduled). Changes to the invoker re-trigger sooner.
const RECHECK: Duration = Duration::from_secs(60);

/// What the BackupSession controller shares between reconciles.
pub struct Context {
    pub client: Client,
    /// Reporting component `BackupSession Controller`, created once.
    pub recorder: Recorder,
    pub backoff: Backoff,
    /// Where the leading controller's cache is exported for the metrics,
    /// with the index they read ([`crate::monitoring::collector`]).
    pub metrics: Option<(Leading, Arc<Store>)>,
}

impl Context {
    pub fn new(client: Client) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), COMPONENT_BACKUPSESSION_CONTROLLER),
            client,
            backoff: Backoff::default(),
            metrics: None,
        }
    }
}

impl Retries for Context {
    fn backoff(&self) -> &Backoff {
        &self.backoff
    }
}

/// Runs the controller until the returned future is dropped. Configuration
/// changes come from `configs` (the index's own watch).
pub async fn run(ctx: Arc<Context>, configs: Kind<BackupConfiguration>) {
    run_until(ctx, configs, std::future::pending()).await
}

/// [`run`] until `stop` resolves: then no new reconcile starts, the ones in
/// flight finish, and the future returns (ending the metrics export).
pub async fn run_until(
    ctx: Arc<Context>,
    configs: Kind<BackupConfiguration>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // Paginated, and cached without managedFields and kubectl's copy
    // (docs/performance.md): sessions accumulate with every backup.
    let (sessions, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher::watcher(
            Api::<BackupSession>::all(ctx.client.clone()),
            watcher::Config::default().page_size(super::backup_configuration::PAGE_SIZE),
        )
        .default_backoff()
        .modify(|s| slim(s.meta_mut())),
    )
    .touched_objects();
    let controller = Controller::for_stream(stream, sessions.clone());
    // The metrics read this cache while the controller runs (it leads).
    let exporting = ctx
        .metrics
        .as_ref()
        .map(|(leading, index)| leading.lead(index.clone(), sessions.clone()));
    let listed = sessions.clone();
    let export = async move {
        if let Some(exporting) = &exporting
            && listed.wait_until_ready().await.is_ok()
        {
            exporting.listed();
        }
        // `exporting` is held until the controller stops: dropping it ends the export.
        std::future::pending::<()>().await;
    };
    let control = controller
        // A configuration appearing or changing re-evaluates its unfinished sessions.
        .watches_shared_stream(configs.subscribe(), move |bc| {
            let (ns, name) = (bc.namespace(), bc.name_any());
            sessions
                .state()
                .into_iter()
                .filter(|s| {
                    s.namespace() == ns
                        && s.spec.invoker.kind == INVOKER_KIND_BACKUP_CONFIGURATION
                        && s.spec.invoker.name == name
                        && !s.phase().is_finished()
                })
                .map(|s| ObjectRef::from_obj(&*s))
                .collect::<Vec<_>>()
        })
        .with_config(super::controller_config())
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "BackupSession reconcile failed");
            }
        });
    tokio::select! {
        () = control => {}
        () = export => {}
    }
}

/// One level-triggered pass over one session.
pub async fn reconcile(session: Arc<BackupSession>, ctx: Arc<Context>) -> Result<Action, ApiError> {
    reconcile_at(&session, &ctx, jiff::Timestamp::now()).await
}

/// [`reconcile`] with the clock passed in (the session's duration is measured against `now`).
pub async fn reconcile_at(
    session: &BackupSession,
    ctx: &Context,
    now: jiff::Timestamp,
) -> Result<Action, ApiError> {
    let action = step(session, ctx, now).await?;
    ctx.backoff.succeeded(&key(session));
    Ok(action)
}

async fn step(
    session: &BackupSession,
    ctx: &Context,
    now: jiff::Timestamp,
) -> Result<Action, ApiError> {
    if session.metadata.deletion_timestamp.is_some() || session.phase().is_finished() {
        return Ok(Action::await_change());
    }
    // A namespaced kind: the API server never sends one without a namespace.
    let Some(ns) = session.namespace() else {
        return Ok(Action::await_change());
    };
    let bc = read_invoker(session, ctx, &ns).await?;
    let view = invoker_view(session, bc.as_ref(), ctx, &ns).await?;
    let step = session_step(session, &view, now);
    let deadlines = deadlines(session, bc.as_ref(), now);
    let sessions: Api<BackupSession> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(mut transition) = transition(&step) {
        if let SessionStep::Run { .. } = step {
            transition.status["sessionDeadline"] = json!(Time(deadlines.session));
        }
        transition::write(&sessions, session, &transition, &ctx.recorder).await?;
        return match (&step, &bc) {
            (SessionStep::Finish { .. }, Some(bc)) => {
                cleanup_history(&sessions, bc).await?;
                Ok(Action::await_change())
            }
            // Woken at the first deadline, should no watch event come first.
            (SessionStep::Run { .. }, _) => Ok(Action::requeue(until(now, deadlines.claim))),
            _ => Ok(Action::await_change()),
        };
    }
    match deadline::due(session, &deadlines, now) {
        Due::None => Ok(wait_action(session, &view, None)),
        Due::At(at) => Ok(wait_action(session, &view, Some(until(now, at)))),
        due => {
            let target = target_view(bc.as_ref(), ctx, &ns, due).await?;
            if let Some(failed) = deadline::expire(session, due, &deadlines, &target, now) {
                transition::write(&sessions, session, &failed, &ctx.recorder).await?;
                if let Some(bc) = &bc {
                    cleanup_history(&sessions, bc).await?;
                }
            }
            Ok(Action::await_change())
        }
    }
}

/// The session's deadlines under its invoker's `timeOut` (the default
/// when unset, unreadable, or the invoker is gone).
fn deadlines(
    session: &BackupSession,
    bc: Option<&BackupConfiguration>,
    now: jiff::Timestamp,
) -> Deadlines {
    let configured = bc.and_then(|bc| timeout::time_out(bc).ok().flatten());
    let time_out = configured.unwrap_or(timeout::DEFAULT_SESSION_TIMEOUT);
    Deadlines::of(session, time_out, configured.is_some(), now)
}

/// From `now` until `at`, at least a second (a deadline just passed is
/// looked at again at once, not in a busy loop).
fn until(now: jiff::Timestamp, at: jiff::Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now))
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

/// What an expiring session's message says of its target. The workload is
/// read (with the `get` the controller already has) only when no host
/// claimed the session: whether its pod template has the sidecar is the
/// answer an operator needs then.
async fn target_view(
    bc: Option<&BackupConfiguration>,
    ctx: &Context,
    ns: &str,
    due: Due,
) -> Result<TargetView, ApiError> {
    let Some(target) = bc.and_then(|bc| bc.spec.target.as_ref()) else {
        return Ok(TargetView {
            workload: None,
            kind: String::new(),
            alias: None,
            sidecar: SidecarSeen::Unknown,
        });
    };
    let r = &target.target_ref;
    let sidecar = match due {
        Due::NoHostClaimed => {
            let workload = get_workload(ctx.client.clone(), ns, &r.kind, &r.name).await?;
            deadline::sidecar_seen(workload.as_ref())
        }
        _ => SidecarSeen::Unknown,
    };
    Ok(TargetView {
        workload: Some(format!("{} {ns}/{}", r.kind, r.name)),
        kind: r.kind.clone(),
        alias: target.alias.clone().filter(|a| !a.is_empty()),
        sidecar,
    })
}

/// The session's invoker, when it is a BackupConfiguration that exists.
async fn read_invoker(
    session: &BackupSession,
    ctx: &Context,
    ns: &str,
) -> Result<Option<BackupConfiguration>, ApiError> {
    let invoker = &session.spec.invoker;
    if invoker.kind != INVOKER_KIND_BACKUP_CONFIGURATION || invoker.name.is_empty() {
        return Ok(None);
    }
    Api::<BackupConfiguration>::namespaced(ctx.client.clone(), ns)
        .get_opt(&invoker.name)
        .await
        .map_err(|e| ApiError::new(format!("get BackupConfiguration {ns}/{}", invoker.name), e))
}

/// What [`session_step`] needs to know of the invoker; reads the target
/// workload only when the host count is still to be set and depends on it.
async fn invoker_view(
    session: &BackupSession,
    bc: Option<&BackupConfiguration>,
    ctx: &Context,
    ns: &str,
) -> Result<InvokerView, ApiError> {
    let Some(bc) = bc else {
        return Ok(InvokerView::Missing);
    };
    // A session a host has claimed has started: pausing now must not turn it
    // Skipped under a running restic, so it is seen as active and finishes.
    let started = session.status.as_ref().is_some_and(|s| !s.stats.is_empty());
    if bc.spec.paused && !started {
        return Ok(InvokerView::Paused);
    }
    let total_hosts = match (needs_hosts(session), bc.target_ref()) {
        (false, _) | (true, None) => None,
        (true, Some(t)) => {
            let workload = match t.kind.as_str() {
                // One host whatever the workload holds: no need to read it.
                "Deployment" | "ReplicaSet" => None,
                _ => get_workload(ctx.client.clone(), ns, &t.kind, &t.name).await?,
            };
            total_hosts(bc, &t.kind, workload.as_ref())
        }
    };
    Ok(InvokerView::Active { total_hosts })
}

/// Whether the session's `totalHosts` is still to be set.
fn needs_hosts(session: &BackupSession) -> bool {
    session
        .status
        .as_ref()
        .and_then(|s| s.total_hosts)
        .is_none()
}

/// The write a step makes (pure): `None` for [`SessionStep::Wait`].
pub fn transition(step: &SessionStep) -> Option<Transition> {
    match step {
        SessionStep::Wait => None,
        SessionStep::Skip => Some(Transition {
            phase: BackupSessionPhase::Skipped.as_str(),
            status: json!({"phase": BackupSessionPhase::Skipped.as_str()}),
            event: Some(TransitionEvent::new(
                EventType::Warning,
                REASON_BACKUPSESSION_SKIPPED,
                BACKUPSESSION_SKIPPED_MESSAGE,
            )),
        }),
        SessionStep::Run { total_hosts } => Some(Transition::running(
            BackupSessionPhase::Running.as_str(),
            *total_hosts,
            None,
        )),
        SessionStep::Finish {
            phase,
            duration,
            failed,
        } => Some(Transition::finished(
            phase.as_str(),
            duration,
            failed,
            (
                REASON_BACKUPSESSION_SUCCEEDED,
                BACKUPSESSION_SUCCEEDED_MESSAGE,
            ),
            (REASON_BACKUPSESSION_FAILED, backupsession_failed_message),
        )),
    }
}

/// When to look again at a session that waits: at its next deadline
/// (`deadline`, from now), or sooner for a host count still unknown.
fn wait_action(session: &BackupSession, view: &InvokerView, deadline: Option<Duration>) -> Action {
    let invoker = &session.spec.invoker.name;
    let recheck = match view {
        // The workload's host count may appear without any event this
        // controller watches: look again later.
        InvokerView::Active { total_hosts: None } if needs_hosts(session) => {
            tracing::info!(session = %key(session), %invoker, "BackupSession waits for its target's host count");
            Some(RECHECK)
        }
        // A missing invoker re-triggers the session when it appears.
        InvokerView::Missing => {
            tracing::info!(session = %key(session), %invoker, "BackupSession waits for its invoker to exist");
            None
        }
        _ => None,
    };
    match (recheck, deadline) {
        (Some(a), Some(b)) => Action::requeue(a.min(b)),
        (Some(d), None) | (None, Some(d)) => Action::requeue(d),
        (None, None) => Action::await_change(),
    }
}

/// Deletes the configuration's finished sessions beyond its history limit.
async fn cleanup_history(
    sessions: &Api<BackupSession>,
    bc: &BackupConfiguration,
) -> Result<(), ApiError> {
    let selector = format!("{LABEL_BACKUP_CONFIGURATION}={}", bc.name_any());
    let list = sessions
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| ApiError::new(format!("list BackupSessions {selector}"), e))?;
    for name in sessions_to_delete(bc, &list.items) {
        match sessions.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {
                tracing::info!(session = %name, "deleted old BackupSession (backupHistoryLimit)")
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(ApiError::new(format!("delete old BackupSession {name}"), e)),
        }
    }
    Ok(())
}
