//! The backup side: the sidecar against a real restic and a local repository
//! (`restic`), on a scripted API server (`kube`), with the BackupSession
//! controller on the fake cluster (`cluster`), and the CronJob's trigger.
//!
//! One test binary per topic (each binary is a link on a small machine);
//! the shared fake cluster and helpers are the `stash-testkit` crate
//! (`tests/support`).

mod cluster;
mod kube;
mod restic;
mod trigger;
