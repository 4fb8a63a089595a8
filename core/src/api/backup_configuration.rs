//! `BackupConfiguration` (stash.appscode.com/v1beta1): what to back up, where
//! to, how often, and whether scheduled backups are paused.

use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, LocalObjectReference, ResourceRequirements, SecurityContext, Toleration,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

// The rarely-set parts are boxed: the webhook's store holds every
// configuration of the cluster, and an absent box costs 8 bytes where the
// inline struct would cost its full size (about 900 bytes in all). (A plain
// comment: doc comments become the CRD's schema descriptions.)
/// Spec of a BackupConfiguration.
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stash.appscode.com",
    version = "v1beta1",
    kind = "BackupConfiguration",
    namespaced,
    status = "BackupConfigurationStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "bc",
    category = "stash",
    category = "appscode",
    doc = "BackupConfiguration schedules backups of a workload's volumes into a Repository.",
    printcolumn(name = "Task", type_ = "string", json_path = ".spec.task.name"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused"),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupConfigurationSpec {
    /// The Repository (same namespace) the backups go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<LocalObjectReference>,
    /// Cron schedule of the backup CronJob, e.g. `*/5 * * * *`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// While true, scheduled and instant backups are skipped; nothing is deleted or restarted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// The workload and paths to back up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupTarget>,
    /// How many snapshots to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<Box<RetentionPolicy>>,
    /// Task reference; unused by the sidecar model, shown in the TASK column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Box<TaskRef>>,
    /// Settings for the injected container and the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_settings: Option<Box<RuntimeSettings>>,
    /// Settings of the emptyDir mounted at /tmp in the sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_dir: Option<Box<EmptyDirSettings>>,
    /// How many finished BackupSessions to keep (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_history_limit: Option<i32>,
    /// Longest a BackupSession may run, a Go duration such as `30m` or `2h`
    /// (default 24h); a session still unfinished then is marked Failed with
    /// the condition DeadlineExceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_out: Option<String>,
}

/// Default number of finished BackupSessions kept per configuration (as in Stash).
pub const DEFAULT_BACKUP_HISTORY_LIMIT: i32 = 1;

/// The workload to back up and what to back up of it.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupTarget {
    /// The workload.
    #[serde(rename = "ref")]
    pub target_ref: TargetRef,
    /// Volumes of the workload to mount into the sidecar.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Paths (inside the sidecar) to back up; one restic snapshot each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// restic exclude patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// The restic host identity instead of `host-0`/`host-<ordinal>`/node name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Number of replicas to back up (StatefulSet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
}

/// Reference to a workload.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// apiVersion of the workload, `apps/v1`.
    #[serde(default)]
    pub api_version: String,
    /// Kind of the workload: Deployment, StatefulSet, DaemonSet or ReplicaSet.
    #[serde(default)]
    pub kind: String,
    /// Name of the workload.
    #[serde(default)]
    pub name: String,
}

/// restic retention policy (`restic forget` flags).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicy {
    /// Name of the policy.
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
    /// Run `restic forget --prune`.
    #[serde(default)]
    pub prune: bool,
    /// Run `restic forget --dry-run`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

impl RetentionPolicy {
    /// Every keep count as `(field name, restic flag, value)`: the one list
    /// both the validating webhook and the sidecar's `restic forget` read.
    pub fn keep_counts(&self) -> [(&'static str, &'static str, Option<i64>); 6] {
        [
            ("keepLast", "--keep-last", self.keep_last),
            ("keepHourly", "--keep-hourly", self.keep_hourly),
            ("keepDaily", "--keep-daily", self.keep_daily),
            ("keepWeekly", "--keep-weekly", self.keep_weekly),
            ("keepMonthly", "--keep-monthly", self.keep_monthly),
            ("keepYearly", "--keep-yearly", self.keep_yearly),
        ]
    }

    /// The keep rules that are set and non-zero, as `(restic flag, value)`.
    pub fn keep_flags(&self) -> Vec<(&'static str, i64)> {
        self.keep_counts()
            .into_iter()
            .filter_map(|(_, flag, v)| v.filter(|n| *n != 0).map(|n| (flag, n)))
            .collect()
    }

    /// Whether any keep rule (count or tag) is set.
    pub fn has_keep_rule(&self) -> bool {
        !self.keep_flags().is_empty() || !self.keep_tags.is_empty()
    }
}

/// Reference to a Task (job model; shown in the TASK column).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
}

/// A task parameter.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
pub struct Param {
    pub name: String,
    pub value: String,
}

/// Settings for the injected container and its pod.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerRuntimeSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRuntimeSettings>,
}

/// Settings for the `stash` container.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRuntimeSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Nice adjustment for restic (`NICE_ADJUSTMENT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nice: Option<NiceSettings>,
    /// IO nice settings for restic (`IONICE_CLASS`, `IONICE_CLASS_DATA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ionice: Option<IoNiceSettings>,
}

/// CPU nice settings.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
pub struct NiceSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjustment: Option<i32>,
}

/// IO nice settings.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IoNiceSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_data: Option<i32>,
}

/// Pod-level settings (used by the CronJob's pod; the sidecar lives in the workload's pod).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodRuntimeSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Settings of the sidecar's `/tmp` emptyDir.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
    /// When true the sidecar runs restic with `--no-cache` (`--enable-cache=false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_caching: bool,
}

/// Status of a BackupConfiguration, written by the reconciler.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupConfigurationStatus {
    /// Ready, NotReady or Invalid, from the conditions (Stash's CalculateBackupInvokerPhase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupInvokerPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Phase of a backup invoker (`status.phase`), as Stash v0.18+ computes it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
pub enum BackupInvokerPhase {
    /// Valid, its CronJob, Repository and backend Secret in place.
    Ready,
    /// Something it needs is missing or failed (see the conditions).
    NotReady,
    /// It breaks a validation rule (condition `ValidationPassed`).
    Invalid,
}

impl BackupInvokerPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupInvokerPhase::Ready => "Ready",
            BackupInvokerPhase::NotReady => "NotReady",
            BackupInvokerPhase::Invalid => "Invalid",
        }
    }
}

/// A status condition (kmodules `Condition` shape).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl BackupConfiguration {
    /// The workload this configuration targets, if any.
    pub fn target_ref(&self) -> Option<&TargetRef> {
        self.spec.target.as_ref().map(|t| &t.target_ref)
    }

    /// The Repository's name, if set.
    pub fn repository_name(&self) -> Option<&str> {
        self.spec
            .repository
            .as_ref()
            .map(|r| r.name.as_str())
            .filter(|n| !n.is_empty())
    }

    /// Whether the configuration is being deleted.
    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }
}
