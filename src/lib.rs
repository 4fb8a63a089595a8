//! stash: the Stash backup operator's sidecar model, re-implemented in Rust.
//!
//! One binary serves every role (webhook server, CronJob trigger, backup
//! sidecar). This library holds the pieces; `main.rs` only parses the command
//! line and calls into them. Pure decisions (`admission`, `sidecar`) are kept
//! apart from I/O (`server`, `reconcile`, `backup`) so that the webhook and the
//! reconciler share one function per rule and can never disagree.

pub mod admission;
pub mod api;
pub mod backup;
pub mod certs;
pub mod crds;
pub mod feed;
pub mod lease;
pub(crate) mod lenient;
pub mod manifests;
pub mod monitoring;
pub mod patch;
pub mod plugin;
pub mod process;
pub mod reconcile;
pub mod recorder;
pub mod restore;
pub mod review;
pub mod server;
pub mod settings;
pub mod sidecar;
pub mod stop;
pub mod store;
pub mod targeting;
pub mod telemetry;
pub mod trigger;
pub mod workload;
