//! The reconciler on the fake cluster: BackupConfiguration (`config`) and
//! BackupSession (`session`, `deadline`) controllers, the Lease (`leader`), desired state
//! as pure functions (`desired`), rollouts through the deployment controller
//! (`rollout`). The fake cluster's own behaviour is tested in the
//! testkit (`cargo test -p stash-testkit`).
//!
//! One test binary per topic (each binary is a link on a small machine);
//! the shared fake cluster and helpers are the `stash-testkit` crate
//! (`tests/support`).

mod alerts;
mod burst;
mod config;
mod deadline;
mod desired;
mod feed;
mod leader;
mod rollout;
mod session;
mod shutdown;
