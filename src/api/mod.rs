//! The custom resources of Stash's v1beta1 sidecar model, shaped as in
//! Stash v0.9.0-rc.2 (docs/design.md, "What we follow"), plus the label,
//! annotation and finalizer names every other module shares.
//!
//! Everything user-visible that is spelled as a string lives here or in
//! [`events`], so there is exactly one place per contract.

// kube's `printcolumn(..)` repeats `type_` per column, which clippy reads as
// a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

pub mod backup_configuration;
pub mod backup_session;
pub mod events;
pub mod repository;
pub mod restore_session;
pub mod unknown;

pub use backup_configuration::*;
pub use backup_session::*;
pub use repository::*;
pub use restore_session::*;

/// The API group of all three kinds.
pub const GROUP: &str = "stash.appscode.com";

/// Label on a BackupSession naming its BackupConfiguration (rc.0–rc.2 selector).
pub const LABEL_BACKUP_CONFIGURATION: &str = "stash.appscode.com/backup-configuration";
/// Label on a BackupSession naming its invoker's kind (rc.3+ selector).
pub const LABEL_INVOKER_TYPE: &str = "stash.appscode.com/invoker-type";
/// Label on a BackupSession naming its invoker (rc.3+ selector).
pub const LABEL_INVOKER_NAME: &str = "stash.appscode.com/invoker-name";

/// Pod-template annotation: hash of the parts of the configuration that shape the sidecar.
pub const ANNOTATION_CONFIG_HASH: &str = "stash.appscode.com/last-applied-backupconfiguration-hash";
/// Workload annotation: the name of the BackupConfiguration whose sidecar it carries.
pub const ANNOTATION_LAST_APPLIED: &str = "stash.appscode.com/last-applied-backupconfiguration";

/// Finalizer the reconciler puts on BackupConfigurations so the sidecar is removed on deletion.
pub const FINALIZER: &str = "stash.appscode.com";

/// Name of the injected sidecar container.
pub const SIDECAR_CONTAINER: &str = "stash";
/// Name of the restore init container a RestoreSession's target gets.
pub const RESTORE_INIT_CONTAINER: &str = "stash-init";
/// Workload annotation: the RestoreSession whose `stash-init` container it carries.
pub const ANNOTATION_LAST_APPLIED_RESTORE: &str = "stash.appscode.com/last-applied-restoresession";

/// The only invoker kind of the sidecar model.
pub const INVOKER_KIND_BACKUP_CONFIGURATION: &str = "BackupConfiguration";

/// Workload kinds (all `apps/v1`) that get the sidecar.
pub const WORKLOAD_KINDS: [&str; 4] = ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"];
/// The apiVersion every workload target must use.
pub const WORKLOAD_API_VERSION: &str = "apps/v1";
