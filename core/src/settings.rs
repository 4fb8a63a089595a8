//! The decision core's configuration: what the admission decisions, the
//! sidecar plan, the reconciler and the `stash-init` planner depend on besides
//! the store.
//!
//! It lives here, apart from `admission`, because every one of those reads
//! it: `sidecar` must not import `admission` (which imports `sidecar`). It is
//! built once from the command line in the binary (`serve`, `review`) and
//! passed down; nothing in this module knows about flags.

/// Default image of the sidecar, the `stash-init` init container and the
/// backup CronJob: the one place it is spelled.
pub const DEFAULT_IMAGE: &str = "ghcr.io/stashed/stash-rs:0.1.0";

/// What to do with a BackupSession whose invoker is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PausedSessionPolicy {
    /// Admit it with a warning; the reconciler marks it Skipped.
    #[default]
    Skip,
    /// Deny it.
    Reject,
}

/// Settings the decisions depend on besides the store.
#[derive(Debug, Clone)]
pub struct Settings {
    pub paused_session_policy: PausedSessionPolicy,
    /// Image of the injected sidecar.
    pub image: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            paused_session_policy: PausedSessionPolicy::Skip,
            image: DEFAULT_IMAGE.to_string(),
        }
    }
}
