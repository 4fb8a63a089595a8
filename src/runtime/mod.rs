//! What every stash process runs on, whatever its job: the tokio runtime
//! and TLS provider (`process`), the one drain signal and the process
//! signals (`drain`), a stop for restic children (`stop`), HTTP connections
//! with caps and timeouts (`conn`) and the admin port on top of them
//! (`admin`), Lease-based leader election and turns (`lease`), and the feed
//! of watches into the store (`feed`).
//!
//! It sits below every job module (`server`, `reconcile`, `backup`,
//! `restore`, `plugin`) and imports none of them; `cmd` assembles them.

pub mod admin;
pub mod conn;
pub mod drain;
pub mod feed;
pub mod lease;
pub mod process;
pub mod stop;
