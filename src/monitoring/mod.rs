//! The reconciler's metrics and the alerts and dashboard built on them.
//!
//! Backups are judged from one place, the replica leading the reconciler:
//! the sidecars only know their own pod, and a scrape of each replica of
//! `stash serve` must not double count. [`collector`] exports, on the probe
//! port's `/metrics`, per configuration and per Repository series computed
//! by [`series`] from the index and the BackupSession controller's cache;
//! [`interval`] turns a cron schedule into the interval the
//! `StashBackupMissing` alert measures against; [`rules`] and
//! [`dashboard`] render what `stash manifests --monitoring` adds to the
//! install (docs/operate.md, "Monitoring").

pub mod collector;
pub mod dashboard;
pub mod interval;
pub mod rules;
pub mod series;
