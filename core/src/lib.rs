//! stash's decision core: what the webhooks answer and what the reconciler
//! wants, as pure functions over the API types and an in-memory store.
//!
//! Why a crate of its own: its Cargo.toml lists no tokio, hyper/axum, clap or
//! kube client/runtime, so nothing here can do I/O, wait or parse a command
//! line — the build enforces what was once only a habit. The `stash` crate
//! feeds the store from watches, serves the webhooks over TLS and writes to
//! the API server; every rule it applies lives here, once, so the webhook and
//! the reconciler can never disagree.
//!
//! Layers, lowest first (a module's code uses only those before it; its
//! doc links may point later, as `targeting`'s do to the planners that call
//! it):
//! `text`, `duration`, `lenient`, `patch`, `settings`, `names`, `api`, `store`,
//! `targeting`, `workload`, `plan`, `sidecar`, `restore`, `admission`, `backup`,
//! `reconcile`.

pub mod admission;
pub mod api;
pub mod backup;
pub mod duration;
#[doc(hidden)]
pub mod lenient;
pub mod names;
pub mod patch;
pub mod plan;
pub mod reconcile;
pub mod restore;
pub mod settings;
pub mod sidecar;
pub mod store;
pub mod targeting;
pub mod text;
pub mod workload;
