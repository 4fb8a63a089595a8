//! What `stash manifests` and `stash crds` render: the install (`install`),
//! its admission policies evaluated as CEL (`policy`), the CRDs (`crds`),
//! and the docs' copies of them (`docs`).
//!
//! One test binary per topic (each binary is a link on a small machine);
//! the shared fake cluster and helpers are the `stash-testkit` crate
//! (`tests/support`).

mod crds;
mod docs;
mod install;
mod monitoring;
mod policy;
