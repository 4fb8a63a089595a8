//! The RestoreSession controller: puts the `stash-init` container into the
//! target (the webhook's own planner, [`crate::restore::init::plan`], so the
//! two never disagree — this back-fills a workload admitted while the webhook
//! was down), binds the target's ServiceAccount to ClusterRole
//! `stash-sidecar`, and drives the phase: Pending → Running (with
//! `totalHosts`) → Succeeded / Failed / Unknown once every host has reported,
//! with `sessionDuration` and the events `RestoreSession Running`,
//! `RestoreSession Succeeded`, `RestoreSession Failed` from `RestoreSession
//! Controller`. On deletion (finalizer) the init container is taken out of the
//! workload, then the finalizer is released.
//!
//! Every status write carries the resourceVersion of the session the decision
//! was made on, so a decision on a stale store copy fails with 409 and is
//! made again on the latest state (quietly: a lost race is logged at DEBUG);
//! a pass on a copy this controller's own writes superseded does nothing
//! ([`OwnWrites`]). Events are written only after the state change they
//! describe. A paused BackupConfiguration of the same workload is
//! not an input: pause never blocks a restore, and nothing here creates a
//! BackupSession.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::Event;
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;

use super::apply::{
    ApiError, Backoff, Retries, ensure, error_policy, get_workload, key, patch_params,
    with_finalizer, workload_api,
};
use super::desired::{LABEL_MANAGED_BY, go_duration, guarded_patch, workload_service_account};
use super::own_writes::OwnWrites;
use super::transition::{self, Transition, TransitionEvent};
use crate::api::events::{
    COMPONENT_RESTORESESSION_CONTROLLER, REASON_RESTORESESSION_FAILED,
    REASON_RESTORESESSION_RUNNING, REASON_RESTORESESSION_SUCCEEDED,
    RESTORESESSION_SUCCEEDED_MESSAGE, restoresession_failed_message,
    restoresession_running_message,
};
use crate::api::{
    HostRestorePhase, RestoreSession, RestoreSessionPhase, WORKLOAD_API_VERSION, namespace_of,
};
use crate::recorder::{EventType, Recorder};
use crate::restore::init;
use crate::runtime::feed::Kind;
use crate::settings::Settings;
use crate::store::Store;

/// ClusterRole the init container's ServiceAccount is bound to (the sidecar's).
const INIT_ROLE: &str = stash_core::names::SIDECAR_ROLE;

/// What the controller shares between reconciles.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    /// The index the webhooks read: every RestoreSession and Repository.
    pub index: Arc<Store>,
    pub recorder: Recorder,
    pub backoff: Backoff,
    /// The sessions' versions this controller's own writes superseded.
    pub own_writes: OwnWrites,
}

impl Context {
    pub fn new(client: Client, settings: Settings, index: Arc<Store>) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), COMPONENT_RESTORESESSION_CONTROLLER),
            client,
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

/// The next status step of a session (pure).
#[derive(Debug, Clone, PartialEq)]
pub enum RestoreStep {
    /// Nothing to write now.
    Wait,
    /// Pending → Running with this many hosts.
    Run { total_hosts: i32 },
    /// Every host reported: the final phase, duration, and failed hosts.
    Finish {
        phase: RestoreSessionPhase,
        duration: String,
        failed: Vec<String>,
    },
}

/// How many hosts restore: one for a Deployment or ReplicaSet (the replicas
/// share the volume), `spec.replicas` for a StatefulSet, the scheduled pods
/// of a DaemonSet. None when it cannot be known yet.
pub fn total_hosts(kind: &str, workload: Option<&Value>) -> Option<i32> {
    let read = |p: &str| workload.and_then(|w| w.pointer(p)).and_then(Value::as_i64);
    match kind {
        "Deployment" | "ReplicaSet" => Some(1),
        "StatefulSet" => {
            workload?;
            i32::try_from(read("/spec/replicas").unwrap_or(1)).ok()
        }
        "DaemonSet" => read("/status/desiredNumberScheduled")
            .filter(|n| *n > 0)
            .and_then(|n| i32::try_from(n).ok()),
        _ => None,
    }
}

/// The write a step makes (pure): `None` for [`RestoreStep::Wait`].
pub fn transition(step: &RestoreStep) -> Option<Transition> {
    match step {
        RestoreStep::Wait => None,
        RestoreStep::Run { total_hosts } => Some(Transition::running(
            RestoreSessionPhase::Running.as_str(),
            *total_hosts,
            Some(TransitionEvent::new(
                EventType::Normal,
                REASON_RESTORESESSION_RUNNING,
                restoresession_running_message(*total_hosts),
            )),
        )),
        RestoreStep::Finish {
            phase,
            duration,
            failed,
        } => Some(Transition::finished(
            phase.as_str(),
            duration,
            failed,
            (
                REASON_RESTORESESSION_SUCCEEDED,
                RESTORESESSION_SUCCEEDED_MESSAGE,
            ),
            (REASON_RESTORESESSION_FAILED, restoresession_failed_message),
        )),
    }
}

/// Decides the status step on `rs` as it is; `hosts` is [`total_hosts`].
pub fn restore_step(rs: &RestoreSession, hosts: Option<i32>, now: jiff::Timestamp) -> RestoreStep {
    match rs.phase() {
        RestoreSessionPhase::Pending => match hosts {
            Some(total_hosts) => RestoreStep::Run { total_hosts },
            None => RestoreStep::Wait,
        },
        RestoreSessionPhase::Running => {
            let status = rs.status.clone().unwrap_or_default();
            let total = status.total_hosts.unwrap_or(1).max(1);
            let reported: Vec<_> = status
                .stats
                .iter()
                .filter(|s| s.phase.is_some_and(HostRestorePhase::is_finished))
                .collect();
            if i32::try_from(reported.len()).unwrap_or(i32::MAX) < total {
                return RestoreStep::Wait;
            }
            let failed: Vec<String> = reported
                .iter()
                .filter(|s| s.phase == Some(HostRestorePhase::Failed))
                .map(|s| s.hostname.clone())
                .collect();
            let phase = if !failed.is_empty() {
                RestoreSessionPhase::Failed
            } else if reported
                .iter()
                .any(|s| s.phase == Some(HostRestorePhase::Unknown))
            {
                RestoreSessionPhase::Unknown
            } else {
                RestoreSessionPhase::Succeeded
            };
            let created = rs
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(now);
            let seconds = now.duration_since(created).as_secs().max(0);
            RestoreStep::Finish {
                phase,
                duration: go_duration(seconds),
                failed,
            }
        }
        _ => RestoreStep::Wait,
    }
}

/// Runs the controller until the returned future is dropped; the sessions
/// come from `restores` (the index's own watch).
pub async fn run(ctx: Arc<Context>, restores: Kind<RestoreSession>) {
    run_until(ctx, restores, std::future::pending()).await
}

/// [`run`] until `stop` resolves: then no new reconcile starts, the ones in
/// flight finish, and the future returns.
pub async fn run_until(
    ctx: Arc<Context>,
    restores: Kind<RestoreSession>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    Controller::for_shared_stream(restores.subscribe(), restores.reader())
        .with_config(super::controller_config())
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "RestoreSession reconcile failed");
            }
        })
        .await;
}

/// One level-triggered pass over one session.
pub async fn reconcile(rs: Arc<RestoreSession>, ctx: Arc<Context>) -> Result<Action, ApiError> {
    reconcile_at(&rs, &ctx, jiff::Timestamp::now()).await
}

/// [`reconcile`] with the clock passed in.
pub async fn reconcile_at(
    rs: &RestoreSession,
    ctx: &Context,
    now: jiff::Timestamp,
) -> Result<Action, ApiError> {
    let api = api(ctx, namespace_of(rs));
    let action = with_finalizer(&api, rs, &ctx.own_writes, |event| async move {
        match event {
            Event::Apply(rs) => apply(&rs, ctx, now).await,
            Event::Cleanup(rs) => cleanup(&rs, ctx).await,
        }
    })
    .await?;
    ctx.backoff.succeeded(&key(rs));
    Ok(action)
}

fn api(ctx: &Context, ns: &str) -> Api<RestoreSession> {
    Api::namespaced(ctx.client.clone(), ns)
}

/// On deletion, before the finalizer is released: the session carries a
/// deletionTimestamp, so the planner removes the init container.
async fn cleanup(rs: &RestoreSession, ctx: &Context) -> Result<Action, ApiError> {
    sync_init(rs, ctx).await?;
    tracing::info!(restoresession = %key(rs), "removed the stash-init container");
    Ok(Action::await_change())
}

/// Brings the target's `stash-init` container in line with the planner;
/// returns the workload as read (None: no such workload or kind).
async fn sync_init(rs: &RestoreSession, ctx: &Context) -> Result<Option<Value>, ApiError> {
    let ns = namespace_of(rs).to_owned();
    let Some(t) = rs
        .target_ref()
        .filter(|t| t.api_version == WORKLOAD_API_VERSION)
    else {
        return Ok(None);
    };
    let Some(workload) = get_workload(ctx.client.clone(), &ns, &t.kind, &t.name).await? else {
        return Ok(None);
    };
    // Every session and Repository as the index (and so the webhook) has
    // them; this session as handed in, at least as fresh as the index.
    let mut snap = ctx.index.snapshot();
    snap.ensure_restore(rs);
    let plan = init::plan(&workload, &snap, &ctx.settings);
    for w in &plan.warnings {
        tracing::warn!(restoresession = %key(rs), warning = %w, "stash-init container");
    }
    if !plan.ops.is_empty() {
        let rv = workload
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(wapi) = workload_api(ctx.client.clone(), &ns, &t.kind) {
            wapi.patch(
                &t.name,
                &patch_params(),
                &Patch::Json::<()>(guarded_patch(plan.ops, rv)),
            )
            .await
            .map_err(|e| {
                ApiError::new(
                    format!(
                        "patch the stash-init container of {} {ns}/{}",
                        t.kind, t.name
                    ),
                    e,
                )
            })?;
            tracing::info!(restoresession = %key(rs), workload = %format!("{}/{}", t.kind, t.name), "patched the workload's stash-init container");
        }
    }
    Ok(Some(workload))
}

/// RoleBinding `stash-restore-<kind>-<workload>`: the init container's
/// ServiceAccount may read the session, write its status, take the Lease.
pub fn init_role_binding(rs: &RestoreSession, kind: &str, workload: &str, sa: &str) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("stash-restore-{}-{workload}", kind.to_lowercase())),
            namespace: rs.namespace(),
            labels: Some(
                [(
                    LABEL_MANAGED_BY.0.to_string(),
                    LABEL_MANAGED_BY.1.to_string(),
                )]
                .into(),
            ),
            owner_references: Some(vec![OwnerReference {
                api_version: RestoreSession::api_version(&()).into_owned(),
                kind: RestoreSession::kind(&()).into_owned(),
                name: rs.name_any(),
                uid: rs.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: INIT_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: sa.into(),
            namespace: rs.namespace(),
            api_group: None,
        }]),
    }
}

async fn apply(
    rs: &RestoreSession,
    ctx: &Context,
    now: jiff::Timestamp,
) -> Result<Action, ApiError> {
    let ns = namespace_of(rs).to_owned();
    if rs.phase().is_finished() {
        // The init container stays until the session is deleted (a restarted
        // pod finds its host done and starts); keep it back-filled.
        sync_init(rs, ctx).await?;
        return Ok(Action::await_change());
    }
    let workload = sync_init(rs, ctx).await?;
    if let (Some(w), Some(t)) = (&workload, rs.target_ref()) {
        let rb = init_role_binding(rs, &t.kind, &t.name, &workload_service_account(w));
        ensure(
            &Api::<RoleBinding>::namespaced(ctx.client.clone(), &ns),
            &rb,
        )
        .await?;
    }
    let hosts = rs
        .target_ref()
        .and_then(|t| total_hosts(&t.kind, workload.as_ref()));
    let Some(transition) = transition(&restore_step(rs, hosts, now)) else {
        return Ok(if rs.phase() == RestoreSessionPhase::Pending {
            tracing::info!(restoresession = %key(rs), "RestoreSession waits for its target");
            Action::requeue(std::time::Duration::from_secs(30))
        } else {
            Action::await_change()
        });
    };
    let written = transition::write(&api(ctx, &ns), rs, &transition, &ctx.recorder).await?;
    ctx.own_writes.wrote(
        &key(rs),
        rs.resource_version().as_deref(),
        written.as_deref(),
    );
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{HostRestoreStats, RestoreSessionStatus};
    use serde_json::json;

    fn session(
        phase: Option<RestoreSessionPhase>,
        total: Option<i32>,
        stats: &[(&str, HostRestorePhase)],
    ) -> RestoreSession {
        let mut rs = RestoreSession::new("r", Default::default());
        rs.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(1_000).unwrap(),
            ));
        rs.status = Some(RestoreSessionStatus {
            phase,
            total_hosts: total,
            stats: stats
                .iter()
                .map(|(h, p)| HostRestoreStats {
                    hostname: h.to_string(),
                    phase: Some(*p),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        rs
    }

    #[test]
    fn pending_runs_once_the_host_count_is_known() {
        let now = jiff::Timestamp::from_second(1_042).unwrap();
        let rs = session(None, None, &[]);
        assert_eq!(restore_step(&rs, None, now), RestoreStep::Wait);
        assert_eq!(
            restore_step(&rs, Some(1), now),
            RestoreStep::Run { total_hosts: 1 }
        );
        assert_eq!(total_hosts("Deployment", None), Some(1));
        assert_eq!(
            total_hosts("StatefulSet", Some(&json!({"spec": {"replicas": 3}}))),
            Some(3)
        );
        assert_eq!(total_hosts("DaemonSet", Some(&json!({"status": {}}))), None);
    }

    #[test]
    fn running_finishes_only_when_every_host_reported() {
        let now = jiff::Timestamp::from_second(1_042).unwrap();
        let r = Some(RestoreSessionPhase::Running);
        // A claim is not a result.
        let claimed = session(r, Some(1), &[("host-0", HostRestorePhase::Running)]);
        assert_eq!(restore_step(&claimed, Some(1), now), RestoreStep::Wait);
        let done = session(r, Some(1), &[("host-0", HostRestorePhase::Succeeded)]);
        assert_eq!(
            restore_step(&done, Some(1), now),
            RestoreStep::Finish {
                phase: RestoreSessionPhase::Succeeded,
                duration: "42s".into(),
                failed: vec![]
            }
        );
        let mixed = session(
            r,
            Some(2),
            &[
                ("host-0", HostRestorePhase::Failed),
                ("host-1", HostRestorePhase::Succeeded),
            ],
        );
        assert_eq!(
            restore_step(&mixed, Some(2), now),
            RestoreStep::Finish {
                phase: RestoreSessionPhase::Failed,
                duration: "42s".into(),
                failed: vec!["host-0".into()]
            }
        );
        let unknown = session(
            r,
            Some(2),
            &[
                ("host-0", HostRestorePhase::Unknown),
                ("host-1", HostRestorePhase::Succeeded),
            ],
        );
        assert!(matches!(
            restore_step(&unknown, Some(2), now),
            RestoreStep::Finish {
                phase: RestoreSessionPhase::Unknown,
                ..
            }
        ));
        let half = session(r, Some(2), &[("host-1", HostRestorePhase::Succeeded)]);
        assert_eq!(restore_step(&half, Some(2), now), RestoreStep::Wait);
        // Finished sessions stay.
        let finished = session(Some(RestoreSessionPhase::Succeeded), Some(1), &[]);
        assert_eq!(restore_step(&finished, Some(1), now), RestoreStep::Wait);
    }
}
