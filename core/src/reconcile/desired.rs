//! Desired state, as pure functions: what the CronJob, its ServiceAccount and
//! RoleBinding, the sidecar's RoleBinding and the configuration's status should
//! be, and which step a BackupSession takes next.
//!
//! The controllers only fetch what exists, call these, and write the
//! difference, so every rule is here once and is table-tested without a
//! cluster. Nothing here reads `spec.paused` except the session step and the
//! status's `Paused` condition (when the pause began, for the metrics):
//! pausing changes neither the CronJob, nor the RBAC, nor the workload.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::{Resource, ResourceExt};
use serde_json::Value;

use crate::api::{
    BackupConfiguration, BackupConfigurationStatus, BackupInvokerPhase, BackupSession,
    BackupSessionPhase, Condition, DEFAULT_BACKUP_HISTORY_LIMIT, HostBackupPhase,
    INVOKER_KIND_BACKUP_CONFIGURATION,
};
use crate::names::{CRON_JOB_ROLE, LABEL_COMPONENT_BACKUP, SIDECAR_ROLE};

/// The one field manager of every write the reconciler makes.
pub const FIELD_MANAGER: &str = "stash";
/// Label marking what the reconciler manages.
pub const LABEL_MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "stash.appscode.com");
/// Longest CronJob name Kubernetes accepts (its Jobs append 11 characters).
pub const MAX_CRONJOB_NAME: usize = 52;

/// Condition types on a BackupConfiguration.
pub const CONDITION_REPOSITORY_FOUND: &str = "RepositoryFound";
pub const CONDITION_BACKUP_TARGET_FOUND: &str = "BackupTargetFound";
pub const CONDITION_CRONJOB_CREATED: &str = "CronJobCreated";
pub const CONDITION_SIDECAR_INJECTED: &str = "StashSidecarInjected";
pub const CONDITION_BACKEND_SECRET_FOUND: &str = "BackendSecretFound";
pub const CONDITION_VALIDATION_PASSED: &str = "ValidationPassed";
/// Present (`True`) only while `spec.paused` is true: its
/// `lastTransitionTime` is when the pause began, which the reconciler's
/// metrics export and the `StashBackupPausedTooLong` alert measures.
pub const CONDITION_PAUSED: &str = "Paused";

/// The key the Repository's storage Secret must hold (restic's password).
pub const RESTIC_PASSWORD: &str = "RESTIC_PASSWORD";

/// `stash-backup-<bc>`, cut to the 52 characters a CronJob name may have and
/// without a trailing `-` or `.` left by the cut. Also the name of the
/// CronJob's ServiceAccount and RoleBinding.
pub fn cronjob_name(bc_name: &str) -> String {
    let full = format!("stash-backup-{bc_name}");
    let cut: String = full.chars().take(MAX_CRONJOB_NAME).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

/// `stash-sidecar-<lowercase kind>-<workload>`.
pub fn sidecar_role_binding_name(kind: &str, workload: &str) -> String {
    format!("stash-sidecar-{}-{workload}", kind.to_lowercase())
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            LABEL_MANAGED_BY.0.to_string(),
            LABEL_MANAGED_BY.1.to_string(),
        ),
        (
            LABEL_COMPONENT_BACKUP.0.to_string(),
            LABEL_COMPONENT_BACKUP.1.to_string(),
        ),
    ])
}

/// The controller reference every object the configuration owns carries, so
/// garbage collection removes them with it and its controller is re-triggered
/// when they change.
pub fn owner_reference(bc: &BackupConfiguration) -> OwnerReference {
    OwnerReference {
        api_version: BackupConfiguration::api_version(&()).into_owned(),
        kind: BackupConfiguration::kind(&()).into_owned(),
        name: bc.name_any(),
        uid: bc.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

fn owned_meta(bc: &BackupConfiguration, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: bc.namespace(),
        labels: Some(labels()),
        owner_references: Some(vec![owner_reference(bc)]),
        ..Default::default()
    }
}

/// The CronJob's own ServiceAccount.
pub fn cron_service_account(bc: &BackupConfiguration) -> ServiceAccount {
    ServiceAccount {
        metadata: owned_meta(bc, cronjob_name(&bc.name_any())),
        ..Default::default()
    }
}

/// Binds the CronJob's ServiceAccount to ClusterRole `stash-cron-job`.
pub fn cron_role_binding(bc: &BackupConfiguration) -> RoleBinding {
    let name = cronjob_name(&bc.name_any());
    RoleBinding {
        metadata: owned_meta(bc, name.clone()),
        role_ref: cluster_role(CRON_JOB_ROLE),
        subjects: Some(vec![service_account_subject(&name, bc.namespace())]),
    }
}

/// Binds the workload's ServiceAccount to ClusterRole `stash-sidecar`.
pub fn sidecar_role_binding(
    bc: &BackupConfiguration,
    kind: &str,
    workload: &str,
    service_account: &str,
) -> RoleBinding {
    RoleBinding {
        metadata: owned_meta(bc, sidecar_role_binding_name(kind, workload)),
        role_ref: cluster_role(SIDECAR_ROLE),
        subjects: Some(vec![service_account_subject(
            service_account,
            bc.namespace(),
        )]),
    }
}

fn cluster_role(name: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: "ClusterRole".into(),
        name: name.into(),
    }
}

fn service_account_subject(name: &str, namespace: Option<String>) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: name.into(),
        namespace,
        api_group: None,
    }
}

/// The ServiceAccount a workload's pods run as (`default` when unset).
pub fn workload_service_account(workload: &Value) -> String {
    workload
        .pointer("/spec/template/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string()
}

/// Why no CronJob can be made for a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronJobProblem {
    NoSchedule,
}

impl std::fmt::Display for CronJobProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CronJobProblem::NoSchedule => f.write_str("spec.schedule is not set"),
        }
    }
}

/// The backup-triggering CronJob. `paused` is deliberately not read: the
/// CronJob keeps firing while paused and `create-backupsession` skips.
pub fn cronjob(bc: &BackupConfiguration, image: &str) -> Result<CronJob, CronJobProblem> {
    let schedule = bc
        .spec
        .schedule
        .clone()
        .filter(|s| !s.trim().is_empty())
        .ok_or(CronJobProblem::NoSchedule)?;
    let name = cronjob_name(&bc.name_any());
    let pod_settings = bc
        .spec
        .runtime_settings
        .as_ref()
        .and_then(|r| r.pod.as_ref());
    let pod_meta = ObjectMeta {
        labels: Some(labels()),
        ..Default::default()
    };
    let container = Container {
        name: "stash".into(),
        image: Some(image.to_string()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec![
            "create-backupsession".into(),
            format!("--invoker-kind={INVOKER_KIND_BACKUP_CONFIGURATION}"),
            format!("--invoker-name={}", bc.name_any()),
        ]),
        env: Some(vec![EnvVar {
            name: "POD_NAMESPACE".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.namespace".into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
            value: None,
        }]),
        ..Default::default()
    };
    let pod = PodSpec {
        service_account_name: Some(name.clone()),
        restart_policy: Some("Never".into()),
        containers: vec![container],
        image_pull_secrets: pod_settings.and_then(|p| non_empty(&p.image_pull_secrets)),
        node_selector: pod_settings
            .map(|p| p.node_selector.clone())
            .filter(|m| !m.is_empty()),
        tolerations: pod_settings.and_then(|p| non_empty(&p.tolerations)),
        priority_class_name: pod_settings.and_then(|p| p.priority_class_name.clone()),
        ..Default::default()
    };
    Ok(CronJob {
        metadata: owned_meta(bc, name),
        spec: Some(CronJobSpec {
            schedule,
            job_template: JobTemplateSpec {
                metadata: Some(pod_meta.clone()),
                spec: Some(JobSpec {
                    template: PodTemplateSpec {
                        metadata: Some(pod_meta),
                        spec: Some(pod),
                    },
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

fn non_empty<T: Clone>(v: &[T]) -> Option<Vec<T>> {
    (!v.is_empty()).then(|| v.to_vec())
}

/// Prepends a `test` of `/metadata/resourceVersion` to a patch, so that a
/// concurrent change makes it fail (and the reconcile retry on fresh state)
/// instead of applying operations computed against an older object.
pub fn guarded_patch(
    ops: Vec<json_patch::PatchOperation>,
    resource_version: &str,
) -> json_patch::Patch {
    let mut all = Vec::with_capacity(ops.len() + 1);
    all.push(json_patch::PatchOperation::Test(
        json_patch::TestOperation {
            path: json_patch::jsonptr::PointerBuf::from_tokens(["metadata", "resourceVersion"]),
            value: Value::String(resource_version.to_string()),
        },
    ));
    all.extend(ops);
    json_patch::Patch(all)
}

/// What the BackupConfiguration controller found, for its conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observations {
    /// `namespace/name` of the Repository and whether it exists (None: not set in spec).
    pub repository: Option<(String, bool)>,
    /// `kind/name` of the target and what became of it (None: no target in spec).
    pub target: Option<(String, TargetState)>,
    /// The CronJob is in place, or why not.
    pub cronjob: Result<(), String>,
    /// The target carries this configuration's sidecar, or why not.
    pub sidecar: Result<(), String>,
    /// The Repository's storage Secret.
    pub secret: BackendSecret,
    /// The validating webhook's verdict on the configuration, or its denial.
    pub validation: Result<(), String>,
}

/// What the controller found of the Repository's storage Secret
/// (`namespace/name` in each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSecret {
    /// No Repository to read its name from (condition `Unknown`: the
    /// Repository's own condition says why).
    NoRepository,
    /// The Repository (named) has no `spec.backend.storageSecretName`.
    NotNamed(String),
    /// Exists and holds `RESTIC_PASSWORD`.
    Found(String),
    /// No such Secret.
    Missing(String),
    /// Exists without `RESTIC_PASSWORD`.
    NoPassword(String),
    /// Could not be read (the API server's answer).
    Unreadable(String, String),
}

impl BackendSecret {
    /// Whether the next check must be asked for (Secrets are not watched:
    /// one appearing or changing triggers no pass).
    pub fn needs_recheck(&self) -> bool {
        matches!(
            self,
            BackendSecret::Missing(_) | BackendSecret::NoPassword(_)
        )
    }
}

/// What the controller found for the target workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    Found,
    Missing,
    /// Not an apps/v1 Deployment, StatefulSet, DaemonSet or ReplicaSet.
    Unsupported,
}

fn condition(type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { TRUE } else { FALSE }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: None,
        observed_generation: None,
    }
}

const TRUE: &str = "True";
const FALSE: &str = "False";
const UNKNOWN: &str = "Unknown";

/// `BackendSecretFound` for what was found.
fn secret_condition(secret: &BackendSecret) -> Condition {
    let t = CONDITION_BACKEND_SECRET_FOUND;
    let missing = "BackendSecretNotAvailable";
    match secret {
        BackendSecret::NoRepository => Condition {
            status: UNKNOWN.into(),
            ..condition(
                t,
                false,
                "RepositoryNotAvailable",
                "The Repository is not available, so its backend Secret cannot be checked.".into(),
            )
        },
        BackendSecret::NotNamed(repo) => condition(
            t,
            false,
            missing,
            format!(
                "Repository {repo} names no backend Secret: set its spec.backend.storageSecretName."
            ),
        ),
        BackendSecret::Found(name) => condition(
            t,
            true,
            "BackendSecretAvailable",
            format!("Backend Secret {name} exists and holds {RESTIC_PASSWORD}."),
        ),
        BackendSecret::Missing(name) => condition(
            t,
            false,
            missing,
            format!("Backend Secret {name} does not exist."),
        ),
        BackendSecret::NoPassword(name) => condition(
            t,
            false,
            missing,
            format!("Backend Secret {name} has no key {RESTIC_PASSWORD}."),
        ),
        BackendSecret::Unreadable(name, why) => condition(
            t,
            false,
            missing,
            format!("Cannot read backend Secret {name}: {why}"),
        ),
    }
}

/// `ValidationPassed` for the webhook's verdict.
fn validation_condition(verdict: &Result<(), String>) -> Condition {
    let t = CONDITION_VALIDATION_PASSED;
    match verdict {
        Ok(()) => condition(
            t,
            true,
            "ResourceValidationPassed",
            "The BackupConfiguration passes validation.".into(),
        ),
        Err(denial) => condition(t, false, "ResourceValidationFailed", denial.clone()),
    }
}

/// The six conditions for what was observed (without times).
pub fn conditions(obs: &Observations) -> Vec<Condition> {
    vec![
        repository_condition(&obs.repository),
        target_condition(&obs.target),
        cronjob_condition(&obs.cronjob),
        sidecar_condition(&obs.sidecar),
        secret_condition(&obs.secret),
        validation_condition(&obs.validation),
    ]
}

/// `RepositoryFound`: the Repository named, and whether it exists.
fn repository_condition(repository: &Option<(String, bool)>) -> Condition {
    match repository {
        Some((name, true)) => condition(
            CONDITION_REPOSITORY_FOUND,
            true,
            "RepositoryAvailable",
            format!("Repository {name} exists."),
        ),
        Some((name, false)) => condition(
            CONDITION_REPOSITORY_FOUND,
            false,
            "RepositoryNotAvailable",
            format!("Repository {name} does not exist."),
        ),
        None => condition(
            CONDITION_REPOSITORY_FOUND,
            false,
            "RepositoryNotSpecified",
            "spec.repository.name is not set.".into(),
        ),
    }
}

/// `BackupTargetFound`: the target named, and what became of it.
fn target_condition(target: &Option<(String, TargetState)>) -> Condition {
    match target {
        Some((name, TargetState::Found)) => condition(
            CONDITION_BACKUP_TARGET_FOUND,
            true,
            "TargetAvailable",
            format!("Backup target {name} found."),
        ),
        Some((name, TargetState::Missing)) => condition(
            CONDITION_BACKUP_TARGET_FOUND,
            false,
            "TargetNotAvailable",
            format!("Backup target {name} does not exist."),
        ),
        Some((name, TargetState::Unsupported)) => condition(
            CONDITION_BACKUP_TARGET_FOUND,
            false,
            "TargetNotSupported",
            format!(
                "Backup target {name} is not an apps/v1 Deployment, StatefulSet, DaemonSet or ReplicaSet."
            ),
        ),
        None => condition(
            CONDITION_BACKUP_TARGET_FOUND,
            false,
            "TargetNotSpecified",
            "spec.target.ref is not set.".into(),
        ),
    }
}

/// `CronJobCreated`: the CronJob is in place, or why not.
fn cronjob_condition(cronjob: &Result<(), String>) -> Condition {
    match cronjob {
        Ok(()) => condition(
            CONDITION_CRONJOB_CREATED,
            true,
            "CronJobCreationSucceeded",
            "Successfully created backup triggering CronJob.".into(),
        ),
        Err(why) => condition(
            CONDITION_CRONJOB_CREATED,
            false,
            "CronJobCreationFailed",
            format!("Failed to create backup triggering CronJob: {why}"),
        ),
    }
}

/// `StashSidecarInjected`: the target carries the sidecar, or why not.
fn sidecar_condition(sidecar: &Result<(), String>) -> Condition {
    match sidecar {
        Ok(()) => condition(
            CONDITION_SIDECAR_INJECTED,
            true,
            "SidecarInjectionSucceeded",
            "Successfully injected stash sidecar into the target.".into(),
        ),
        Err(why) => condition(
            CONDITION_SIDECAR_INJECTED,
            false,
            "SidecarInjectionFailed",
            format!("Failed to inject stash sidecar: {why}"),
        ),
    }
}

/// `status.phase` from the conditions, as Stash's
/// `CalculateBackupInvokerPhase`: `Invalid` when validation failed;
/// `NotReady` while the Repository or its Secret is not there; `Ready` when
/// valid with CronJob, Repository and Secret in place; else `NotReady`.
/// `paused` is not an input.
pub fn invoker_phase(conditions: &[Condition]) -> BackupInvokerPhase {
    let is = |t: &str, want: &str| conditions.iter().any(|c| c.type_ == t && c.status == want);
    let ok = |t: &str| is(t, TRUE);
    if is(CONDITION_VALIDATION_PASSED, FALSE) {
        BackupInvokerPhase::Invalid
    } else if !ok(CONDITION_REPOSITORY_FOUND) || !ok(CONDITION_BACKEND_SECRET_FOUND) {
        BackupInvokerPhase::NotReady
    } else if ok(CONDITION_VALIDATION_PASSED) && ok(CONDITION_CRONJOB_CREATED) {
        BackupInvokerPhase::Ready
    } else {
        BackupInvokerPhase::NotReady
    }
}

/// A Warning event a status change calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionEvent {
    pub reason: &'static str,
    pub message: String,
}

/// The Warning event's reason for a condition type gone `False`.
pub fn failure_reason(condition_type: &str) -> &'static str {
    match condition_type {
        CONDITION_VALIDATION_PASSED => "ValidationFailed",
        CONDITION_REPOSITORY_FOUND => "RepositoryNotFound",
        CONDITION_BACKEND_SECRET_FOUND => "BackendSecretNotFound",
        CONDITION_BACKUP_TARGET_FOUND => "BackupTargetNotFound",
        CONDITION_CRONJOB_CREATED => "CronJobCreationFailed",
        CONDITION_SIDECAR_INJECTED => "SidecarInjectionFailed",
        _ => "ConditionFailed",
    }
}

/// The events a status change from `old` to `new` calls for: one Warning
/// per condition that is `False` in `new` and was not, or was with another
/// reason or message (message = the condition's). The same status twice
/// calls for none, so a retried pass that finds its status written repeats
/// nothing.
pub fn condition_events(
    old: Option<&BackupConfigurationStatus>,
    new: &BackupConfigurationStatus,
) -> Vec<ConditionEvent> {
    let before = old.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    new.conditions
        .iter()
        .filter(|c| c.status == FALSE)
        .filter(|c| {
            !before.iter().any(|o| {
                o.type_ == c.type_
                    && o.status == c.status
                    && o.reason == c.reason
                    && o.message == c.message
            })
        })
        .map(|c| ConditionEvent {
            reason: failure_reason(&c.type_),
            message: c.message.clone().unwrap_or_default(),
        })
        .collect()
}

/// The status to hold: `observedGeneration` = the configuration's generation,
/// the phase ([`invoker_phase`]), the conditions for `obs` (and
/// [`CONDITION_PAUSED`] while paused: it is `True` or absent, so it neither
/// changes the phase nor calls for a Warning event), each keeping its old `lastTransitionTime` unless
/// its status changed (then `now`). Equal to the old status when nothing
/// changed, so the caller can skip the write.
pub fn desired_status(
    bc: &BackupConfiguration,
    obs: &Observations,
    now: jiff::Timestamp,
) -> BackupConfigurationStatus {
    let old = bc
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let generation = bc.metadata.generation;
    let paused = bc.spec.paused.then(|| {
        condition(
            CONDITION_PAUSED,
            true,
            "BackupPaused",
            "spec.paused is true: scheduled runs create no BackupSession.".into(),
        )
    });
    let conditions: Vec<Condition> = conditions(obs)
        .into_iter()
        .chain(paused)
        .map(|mut c| {
            let previous = old.iter().find(|o| o.type_ == c.type_);
            c.last_transition_time = match previous {
                Some(p) if p.status == c.status && p.last_transition_time.is_some() => {
                    p.last_transition_time.clone()
                }
                _ => Some(Time(now)),
            };
            c.observed_generation = generation;
            c
        })
        .collect();
    BackupConfigurationStatus {
        phase: Some(invoker_phase(&conditions)),
        observed_generation: generation,
        conditions,
    }
}

/// The invoker of a session, as the BackupSession controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokerView {
    /// No such BackupConfiguration (or an unsupported invoker kind).
    Missing,
    /// `spec.paused: true`.
    Paused,
    /// Not paused; `total_hosts` is None while it cannot be known yet.
    Active { total_hosts: Option<i32> },
}

/// The next step of a BackupSession.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStep {
    /// Nothing to do now.
    Wait,
    /// Mark `Skipped` and record the `BackupSessionSkipped` event.
    Skip,
    /// Mark `Running` with this many hosts.
    Run { total_hosts: i32 },
    /// Every host reported: mark `phase` with `duration`; `failed` hosts named.
    Finish {
        phase: BackupSessionPhase,
        duration: String,
        failed: Vec<String>,
    },
}

/// Decides a session's next step from its status, its invoker and the clock.
/// A finished session stays; only an empty or Pending session is skipped, so a
/// Running session is never turned Skipped.
pub fn session_step(
    session: &BackupSession,
    invoker: &InvokerView,
    now: jiff::Timestamp,
) -> SessionStep {
    let status = session.status.clone().unwrap_or_default();
    match session.phase() {
        BackupSessionPhase::Succeeded
        | BackupSessionPhase::Failed
        | BackupSessionPhase::Skipped
        | BackupSessionPhase::Unknown => SessionStep::Wait,
        BackupSessionPhase::Pending => match invoker {
            InvokerView::Paused => SessionStep::Skip,
            InvokerView::Active {
                total_hosts: Some(n),
            } => SessionStep::Run { total_hosts: *n },
            _ => SessionStep::Wait,
        },
        BackupSessionPhase::Running => {
            let Some(total) = status.total_hosts else {
                return match invoker {
                    InvokerView::Active {
                        total_hosts: Some(n),
                    } => SessionStep::Run { total_hosts: *n },
                    _ => SessionStep::Wait,
                };
            };
            let reported: Vec<_> = status
                .stats
                .iter()
                .filter(|s| s.phase.is_some_and(HostBackupPhase::is_finished))
                .collect();
            if (reported.len() as i64) < i64::from(total) {
                return SessionStep::Wait;
            }
            let failed: Vec<String> = reported
                .iter()
                .filter(|s| s.phase == Some(HostBackupPhase::Failed))
                .map(|s| s.hostname.clone())
                .collect();
            let created = session.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let seconds = created.map_or(0, |c| (now.as_second() - c.as_second()).max(0));
            SessionStep::Finish {
                phase: if failed.is_empty() {
                    BackupSessionPhase::Succeeded
                } else {
                    BackupSessionPhase::Failed
                },
                duration: go_duration(seconds),
                failed,
            }
        }
    }
}

/// Number of hosts that back up a target: 1 for Deployment and ReplicaSet
/// (one elected replica), `spec.replicas` for StatefulSet (or the target's
/// `replicas`), `status.desiredNumberScheduled` for DaemonSet. None when it
/// cannot be known yet (workload absent, DaemonSet not yet scheduled).
pub fn total_hosts(bc: &BackupConfiguration, kind: &str, workload: Option<&Value>) -> Option<i32> {
    let read = |p: &str| workload.and_then(|w| w.pointer(p)).and_then(Value::as_i64);
    match kind {
        "Deployment" | "ReplicaSet" => Some(1),
        "StatefulSet" => {
            let from_target = bc.spec.target.as_ref().and_then(|t| t.replicas);
            workload?;
            let n = from_target
                .map(i64::from)
                .or_else(|| read("/spec/replicas"))
                .unwrap_or(1);
            i32::try_from(n).ok()
        }
        "DaemonSet" => read("/status/desiredNumberScheduled")
            .filter(|n| *n > 0)
            .and_then(|n| i32::try_from(n).ok()),
        _ => None,
    }
}

/// A duration in whole seconds, spelled like Go's `time.Duration` (`49s`,
/// `2m0s`, `1h0m5s`), as Stash's `sessionDuration`.
pub fn go_duration(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Names of the finished sessions of invoker `bc` beyond its
/// `backupHistoryLimit` (default 1), oldest first to go: the newest are kept.
pub fn sessions_to_delete(bc: &BackupConfiguration, sessions: &[BackupSession]) -> Vec<String> {
    let limit = bc
        .spec
        .backup_history_limit
        .unwrap_or(DEFAULT_BACKUP_HISTORY_LIMIT)
        .max(0) as usize;
    let bc_name = bc.name_any();
    let mut finished: Vec<&BackupSession> = sessions
        .iter()
        .filter(|s| {
            s.spec.invoker.kind == INVOKER_KIND_BACKUP_CONFIGURATION
                && s.spec.invoker.name == bc_name
                && s.phase().is_finished()
                && s.metadata.deletion_timestamp.is_none()
        })
        .collect();
    // Newest first; ties broken by name so the choice is stable.
    finished.sort_by(|a, b| {
        let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
        tb.cmp(&ta).then_with(|| b.name_any().cmp(&a.name_any()))
    });
    finished
        .into_iter()
        .skip(limit)
        .map(|s| s.name_any())
        .collect()
}
