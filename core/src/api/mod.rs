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
pub mod timeout;
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

/// The labels a BackupSession of invoker `kind/name` carries: the one place
/// both the CronJob's BackupSession (`trigger`) and the mutating webhook's
/// labels of a hand-made one (`admission::backupsessions`) come from.
pub fn invoker_labels(kind: &str, name: &str) -> Vec<(&'static str, String)> {
    let mut labels = Vec::new();
    if kind == INVOKER_KIND_BACKUP_CONFIGURATION {
        labels.push((LABEL_BACKUP_CONFIGURATION, name.to_string()));
    }
    labels.push((LABEL_INVOKER_TYPE, kind.to_string()));
    labels.push((LABEL_INVOKER_NAME, name.to_string()));
    labels
}

/// The namespace Kubernetes puts a namespaced object in when it names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The namespace of a namespaced object, [`DEFAULT_NAMESPACE`] when it names
/// none.
///
/// An object read from the API server (a watch, a get, an AdmissionReview's
/// object) always carries its namespace, so the fallback only ever applies to
/// an object built by hand or read from YAML offline, which `kubectl apply`
/// would put in `default` too. It is never the empty string.
pub fn namespace_of<K: kube::Resource>(obj: &K) -> &str {
    obj.meta().namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

/// [`namespace_of`] for an object as JSON: its `metadata.namespace` when that
/// is a string, else [`DEFAULT_NAMESPACE`].
pub fn namespace_in(obj: &serde_json::Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(DEFAULT_NAMESPACE)
}

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
