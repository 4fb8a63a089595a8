//! `POST /mutate/backupsessions` and `POST /validate/backupsessions`.
use super::{Decision, Request, Settings};
use crate::store::Snapshot;

/// Adds missing invoker labels.
pub fn mutate(_req: &Request, _snap: &Snapshot, _settings: &Settings) -> Decision {
    Decision::allow()
}

/// Paused invoker and spec immutability.
pub fn validate(_req: &Request, _snap: &Snapshot, _settings: &Settings) -> Decision {
    Decision::allow()
}
