//! The decisions about restores: what a RestoreSession's hosts have reported
//! and what it asks of restic (`decide`), and the `stash-init` init container
//! a workload gets (`init`, the planner the webhook and the reconciler share).

pub mod decide;
pub mod init;
