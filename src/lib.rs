//! stash: the Stash backup operator's sidecar model, re-implemented in Rust.
//!
//! One binary serves every role (webhook server, CronJob trigger, backup
//! sidecar). This library holds the pieces; `main.rs` only parses the command
//! line and calls into them. Pure decisions (`admission`, `sidecar`) are kept
//! apart from I/O (`server`, `reconcile`, `backup`) so that the webhook and the
//! reconciler share one function per rule and can never disagree.

// The decision core, at the paths the rest of this crate (and its tests)
// have always used.
pub use stash_core::{
    admission, api, duration, patch, settings, sidecar, store, targeting, workload,
};

pub mod backup;
pub mod certs;
pub mod cli;
pub mod cmd;
pub mod crds;
pub mod manifests;
pub mod monitoring;
pub mod plugin;
pub mod reconcile;
pub mod recorder;
pub mod restore;
pub mod review;
pub mod runtime;
pub mod server;
pub mod telemetry;
pub mod trigger;
