//! Restore: `stash restore` against a real restic (`restic`), the stash-init
//! planner's properties (`init_props`), RestoreSession validation, and
//! docs/restore.md walked on the fake cluster (`cluster`).
//!
//! One test binary per topic (each binary is a link on a small machine);
//! the shared fake cluster and helpers are the `stash-testkit` crate
//! (`tests/support`).

mod cluster;
mod init_props;
mod process;
mod restic;
mod validation;
