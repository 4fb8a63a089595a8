//! `RestoreSession` (stash.appscode.com/v1beta1): restore a workload's volumes
//! from a Repository, shaped as in Stash v0.9. The `stash-init` init container
//! that the mutating webhook injects into the target does the restore, one
//! host at a time; the RestoreSession controller drives the phase.

use k8s_openapi::api::core::v1::{LocalObjectReference, VolumeMount};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup_configuration::{Condition, RuntimeSettings, TargetRef};

/// Spec of a RestoreSession.
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stash.appscode.com",
    version = "v1beta1",
    kind = "RestoreSession",
    namespaced,
    status = "RestoreSessionStatus",
    derive = "PartialEq",
    derive = "Default",
    category = "stash",
    category = "appscode",
    doc = "RestoreSession restores a workload's volumes from a Repository.",
    printcolumn(
        name = "Repository",
        type_ = "string",
        json_path = ".spec.repository.name"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSessionSpec {
    /// The Repository (same namespace) the data is restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<LocalObjectReference>,
    /// The workload to restore into and what to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RestoreTarget>,
    /// Settings of the `stash-init` container, as Stash's: its
    /// `container.securityContext` is used verbatim (else stash chooses one
    /// from the workload, docs/restore.md), `container.resources`, `env` and
    /// `envFrom` are the container's; `pod` and nice/ionice are not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_settings: Option<Box<RuntimeSettings>>,
}

/// The workload a RestoreSession restores into.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    /// The workload.
    #[serde(rename = "ref")]
    pub target_ref: TargetRef,
    /// Volumes of the workload mounted into the `stash-init` container (where the data goes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// What each host restores; a rule with no `targetHosts` applies to every host no other rule names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RestoreRule>,
}

/// What some hosts restore.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRule {
    /// Hosts this rule applies to; empty: every host no other rule names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_hosts: Vec<String>,
    /// The host whose backed-up data is restored; empty: the restoring host itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_host: Option<String>,
    /// Paths to restore from the latest snapshot of each (not with `snapshots`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// restic snapshot ids to restore, whole (not with `paths`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
}

/// Phase of a RestoreSession.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, JsonSchema)]
pub enum RestoreSessionPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl RestoreSessionPhase {
    /// Whether no more work happens in this phase.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Unknown)
    }

    /// The phase as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Unknown => "Unknown",
        }
    }
}

/// Phase of one host's restore: Running is the init container's claim,
/// Succeeded/Failed its result, Unknown a host no rule names.
// `Running` is written with a resourceVersion precondition before restic
// starts, under the workload's restore Lease: an init container that finds
// a `Running` entry while it holds the Lease knows that no run is behind it
// (the claimer stopped) and reports it interrupted instead of restoring twice.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, JsonSchema)]
pub enum HostRestorePhase {
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl HostRestorePhase {
    /// Whether the host has reported its result.
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Running)
    }
}

/// Status of a RestoreSession.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSessionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestoreSessionPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_hosts: Option<i32>,
    /// Wall time from creation to completion, Go duration style (`1m2.3s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stats: Vec<HostRestoreStats>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One host's restore.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostRestoreStats {
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<HostRestorePhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RestoreSession {
    /// The phase, an absent one read as Pending.
    pub fn phase(&self) -> RestoreSessionPhase {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(RestoreSessionPhase::Pending)
    }

    /// The target workload, if set.
    pub fn target_ref(&self) -> Option<&TargetRef> {
        self.spec.target.as_ref().map(|t| &t.target_ref)
    }

    /// The Repository's name, if set and not empty.
    pub fn repository_name(&self) -> Option<&str> {
        self.spec
            .repository
            .as_ref()
            .map(|r| r.name.as_str())
            .filter(|n| !n.is_empty())
    }

    /// Whether the session is being deleted.
    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// This host's entry, if any.
    pub fn host_stats(&self, host: &str) -> Option<&HostRestoreStats> {
        self.status
            .as_ref()?
            .stats
            .iter()
            .find(|s| s.hostname == host)
    }
}
