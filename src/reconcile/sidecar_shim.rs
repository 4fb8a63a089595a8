//! TEMPORARY stand-in for `crate::sidecar` (issue: the sidecar's pure planner
//! is being written on another branch). Same signature as the agreed contract;
//! delete this file and point `super::sidecar` at `crate::sidecar` after the
//! merge. Until then it plans no change and says why, so the reconciler
//! reports `StashSidecarInjected: False` instead of guessing at a patch.

use crate::admission::Settings;
use crate::store::Snapshot;

/// What the planner decided for one workload.
#[derive(Debug, Clone, Default)]
pub struct SidecarPlan {
    pub ops: Vec<json_patch::PatchOperation>,
    pub warnings: Vec<String>,
    pub config: Option<String>,
}

/// Plans the sidecar patch for `workload` (placeholder until `crate::sidecar` lands).
pub fn plan(_workload: &serde_json::Value, _snap: &Snapshot, _settings: &Settings) -> SidecarPlan {
    SidecarPlan {
        ops: Vec::new(),
        warnings: vec!["the sidecar planner is not linked into this build yet".into()],
        config: None,
    }
}
