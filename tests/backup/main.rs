//! The backup side: the sidecar against a real restic and a local repository
//! (`restic`), on a scripted API server (`kube`), with the BackupSession
//! controller on the fake cluster (`cluster`), the CronJob's trigger, and the sidecar's metrics port
//! (`metrics`).
//!
//! One test binary per topic (each binary is a link on a small machine);
//! the shared fake cluster and helpers are the `stash-testkit` crate
//! (`tests/support`).

mod cluster;
mod kube;
mod metrics;
mod process;
mod restic;
mod stop;
mod trigger;
