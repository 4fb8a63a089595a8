//! The in-memory index of BackupConfigurations and Repositories that every
//! webhook decision reads.
//!
//! Readers take a [`Snapshot`]: a persistent (structurally shared) map, so a
//! snapshot costs a few reference-count bumps whatever the store's size, stays
//! consistent for as long as the reader holds it, and never blocks writers for
//! longer than that clone. Lookups by name and by target are hash lookups.
//!
//! Two feeds write into it: [`offline`] (a directory of YAML files) and, in
//! cluster mode, the `stash` crate's `runtime::feed`: one watch per kind, whose objects this
//! index shares (the same `Arc`s) with the cache the controllers reconcile
//! from. The webhooks and the controllers read this one index.

pub mod offline;
pub mod yaml;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use imbl::HashMap;
use kube::ResourceExt;

use crate::api::{BackupConfiguration, Repository, RestoreSession, namespace_of};

/// Namespace and name of an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Key of a namespaced object; objects without a namespace land in `default`.
    pub fn of<K: kube::Resource>(obj: &K) -> Self {
        Self::new(
            namespace_of(obj),
            obj.meta().name.clone().unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A workload as a BackupConfiguration's target names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetKey {
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

impl TargetKey {
    pub fn new(namespace: &str, kind: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            kind: kind.into(),
            name: name.into(),
        }
    }

    fn of_config(bc: &BackupConfiguration) -> Option<Self> {
        let r = bc.target_ref()?;
        Some(Self::new(namespace_of(bc), &r.kind, &r.name))
    }
}

/// A consistent, cheap-to-clone view of the store.
#[derive(Clone, Default)]
pub struct Snapshot {
    configs: HashMap<ObjectKey, Arc<BackupConfiguration>>,
    repositories: HashMap<ObjectKey, Arc<Repository>>,
    /// Target → names (sorted) of the configurations in its namespace that target it.
    by_target: HashMap<TargetKey, Vec<String>>,
    restores: HashMap<ObjectKey, Arc<RestoreSession>>,
    /// Target → names (sorted) of the RestoreSessions in its namespace that target it.
    restores_by_target: HashMap<TargetKey, Vec<String>>,
}

impl Snapshot {
    /// The BackupConfiguration `namespace/name`.
    pub fn config(&self, namespace: &str, name: &str) -> Option<&Arc<BackupConfiguration>> {
        self.configs.get(&ObjectKey::new(namespace, name))
    }

    /// The Repository `namespace/name`.
    pub fn repository(&self, namespace: &str, name: &str) -> Option<&Arc<Repository>> {
        self.repositories.get(&ObjectKey::new(namespace, name))
    }

    /// Configurations whose `target.ref` names this workload (kind and name,
    /// same namespace), sorted by name. Includes ones being deleted.
    pub fn configs_for_target(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> Vec<&Arc<BackupConfiguration>> {
        self.by_target
            .get(&TargetKey::new(namespace, kind, name))
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| self.config(namespace, n))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The RestoreSession `namespace/name`.
    pub fn restore(&self, namespace: &str, name: &str) -> Option<&Arc<RestoreSession>> {
        self.restores.get(&ObjectKey::new(namespace, name))
    }

    /// RestoreSessions whose `target.ref` names this workload (kind and name,
    /// same namespace), sorted by name. Includes ones being deleted.
    pub fn restores_for_target(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> Vec<&Arc<RestoreSession>> {
        self.restores_by_target
            .get(&TargetKey::new(namespace, kind, name))
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| self.restore(namespace, n))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether any RestoreSession is known (the workload webhook's fast path).
    pub fn has_restores(&self) -> bool {
        !self.restores.is_empty()
    }

    /// Adds or replaces a RestoreSession.
    pub fn upsert_restore(&mut self, mut rs: RestoreSession) {
        slim(&mut rs.metadata);
        self.insert_restore(Arc::new(rs));
    }

    /// Adds or replaces a RestoreSession already [`slim`]med (shared with the feed's cache).
    pub fn insert_restore(&mut self, rs: Arc<RestoreSession>) {
        let key = ObjectKey::of(&*rs);
        self.remove_restore(&key.namespace, &key.name);
        if let Some(r) = rs.target_ref() {
            let t = TargetKey::new(&key.namespace, &r.kind, &r.name);
            let mut names = self.restores_by_target.get(&t).cloned().unwrap_or_default();
            if let Err(pos) = names.binary_search(&key.name) {
                names.insert(pos, key.name.clone());
            }
            self.restores_by_target.insert(t, names);
        }
        self.restores.insert(key, rs);
    }

    /// Removes a RestoreSession; absent ones are ignored.
    pub fn remove_restore(&mut self, namespace: &str, name: &str) {
        let key = ObjectKey::new(namespace, name);
        if let Some(old) = self.restores.remove(&key)
            && let Some(r) = old.target_ref()
        {
            let t = TargetKey::new(namespace, &r.kind, &r.name);
            let mut names = self.restores_by_target.get(&t).cloned().unwrap_or_default();
            names.retain(|n| n != name);
            if names.is_empty() {
                self.restores_by_target.remove(&t);
            } else {
                self.restores_by_target.insert(t, names);
            }
        }
    }

    /// Number of BackupConfigurations.
    pub fn config_count(&self) -> usize {
        self.configs.len()
    }

    /// Number of Repositories.
    pub fn repository_count(&self) -> usize {
        self.repositories.len()
    }

    /// All configurations (unordered).
    pub fn configs(&self) -> impl Iterator<Item = &Arc<BackupConfiguration>> {
        self.configs.values()
    }

    /// All Repositories (unordered).
    pub fn repositories(&self) -> impl Iterator<Item = &Arc<Repository>> {
        self.repositories.values()
    }

    /// Adds or replaces a BackupConfiguration.
    pub fn upsert_config(&mut self, mut bc: BackupConfiguration) {
        slim(&mut bc.metadata);
        self.insert_config(Arc::new(bc));
    }

    /// Makes sure the snapshot holds `bc` as a controller was handed it: a
    /// copy goes in only when the index holds another version of it (or
    /// none), so the usual pass keeps the index's own object (and the
    /// sidecar memo keyed on it).
    pub fn ensure_config(&mut self, bc: &BackupConfiguration) {
        let key = ObjectKey::of(bc);
        if !same_version(self.config(&key.namespace, &key.name), bc) {
            self.upsert_config(bc.clone());
        }
    }

    /// [`Snapshot::ensure_config`] for a RestoreSession.
    pub fn ensure_restore(&mut self, rs: &RestoreSession) {
        let key = ObjectKey::of(rs);
        if !same_version(self.restore(&key.namespace, &key.name), rs) {
            self.upsert_restore(rs.clone());
        }
    }

    /// Adds or replaces a BackupConfiguration already [`slim`]med (shared with the feed's cache).
    pub fn insert_config(&mut self, bc: Arc<BackupConfiguration>) {
        let key = ObjectKey::of(&*bc);
        self.remove_config(&key.namespace, &key.name);
        if let Some(t) = TargetKey::of_config(&bc) {
            let mut names = self.by_target.get(&t).cloned().unwrap_or_default();
            if let Err(pos) = names.binary_search(&key.name) {
                names.insert(pos, key.name.clone());
            }
            self.by_target.insert(t, names);
        }
        self.configs.insert(key, bc);
    }

    /// Removes a BackupConfiguration; absent ones are ignored.
    pub fn remove_config(&mut self, namespace: &str, name: &str) {
        let key = ObjectKey::new(namespace, name);
        if let Some(old) = self.configs.remove(&key)
            && let Some(t) = TargetKey::of_config(&old)
        {
            let mut names = self.by_target.get(&t).cloned().unwrap_or_default();
            names.retain(|n| n != name);
            if names.is_empty() {
                self.by_target.remove(&t);
            } else {
                self.by_target.insert(t, names);
            }
        }
    }

    /// Adds or replaces a Repository.
    pub fn upsert_repository(&mut self, mut repo: Repository) {
        slim(&mut repo.metadata);
        self.insert_repository(Arc::new(repo));
    }

    /// Adds or replaces a Repository already [`slim`]med (shared with the feed's cache).
    pub fn insert_repository(&mut self, repo: Arc<Repository>) {
        self.repositories.insert(ObjectKey::of(&*repo), repo);
    }

    /// Removes a Repository; absent ones are ignored.
    pub fn remove_repository(&mut self, namespace: &str, name: &str) {
        self.repositories.remove(&ObjectKey::new(namespace, name));
    }
}

/// Whether `stored` is `obj` at the same resourceVersion (an object without
/// one is never taken for another).
fn same_version<K: kube::Resource>(stored: Option<&Arc<K>>, obj: &K) -> bool {
    let rv = obj.meta().resource_version.as_deref();
    rv.is_some() && stored.is_some_and(|s| s.meta().resource_version.as_deref() == rv)
}

/// Drops the metadata no decision reads and that can dwarf the object itself
/// (managedFields, kubectl's last-applied copy), so the store of a large
/// cluster stays small.
pub fn slim(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// The shared, updatable store. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct Store {
    current: RwLock<Snapshot>,
    synced: AtomicBool,
}

impl Store {
    /// A store holding `snapshot`, already synced (offline mode, tests).
    pub fn from_snapshot(snapshot: Snapshot) -> Self {
        Self {
            current: RwLock::new(snapshot),
            synced: AtomicBool::new(true),
        }
    }

    /// The current view. O(1): clones a few reference counts.
    pub fn snapshot(&self) -> Snapshot {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies one change under the write lock.
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }

    /// Replaces every BackupConfiguration (a watcher's re-list).
    pub fn replace_configs(&self, configs: impl IntoIterator<Item = Arc<BackupConfiguration>>) {
        self.update(|s| {
            s.configs = HashMap::new();
            s.by_target = HashMap::new();
            for bc in configs {
                s.insert_config(bc);
            }
        });
    }

    /// Replaces every Repository (a watcher's re-list).
    pub fn replace_repositories(&self, repos: impl IntoIterator<Item = Arc<Repository>>) {
        self.update(|s| {
            s.repositories = HashMap::new();
            for r in repos {
                s.insert_repository(r);
            }
        });
    }

    /// Replaces every RestoreSession (a watcher's re-list).
    pub fn replace_restores(&self, restores: impl IntoIterator<Item = Arc<RestoreSession>>) {
        self.update(|s| {
            s.restores = HashMap::new();
            s.restores_by_target = HashMap::new();
            for rs in restores {
                s.insert_restore(rs);
            }
        });
    }

    /// Marks the first full list as done (readiness).
    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    /// Whether the first full list has been seen.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

/// Name of an object for messages: `namespace/name`.
pub fn display_name<K: kube::Resource>(obj: &K) -> String {
    format!("{}/{}", namespace_of(obj), obj.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackupConfigurationSpec, BackupTarget, TargetRef};

    fn bc(ns: &str, name: &str, kind: &str, target: &str) -> BackupConfiguration {
        let mut bc = BackupConfiguration::new(
            name,
            BackupConfigurationSpec {
                target: Some(BackupTarget {
                    target_ref: TargetRef {
                        api_version: "apps/v1".into(),
                        kind: kind.into(),
                        name: target.into(),
                    },
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        bc.metadata.namespace = Some(ns.into());
        bc
    }

    #[test]
    fn indexes_by_target_and_follows_retargeting() {
        let mut s = Snapshot::default();
        s.upsert_config(bc("demo", "b", "Deployment", "app"));
        s.upsert_config(bc("demo", "a", "Deployment", "app"));
        s.upsert_config(bc("other", "c", "Deployment", "app"));
        let names: Vec<_> = s
            .configs_for_target("demo", "Deployment", "app")
            .iter()
            .map(|b| b.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);

        s.upsert_config(bc("demo", "a", "StatefulSet", "app"));
        assert_eq!(s.configs_for_target("demo", "Deployment", "app").len(), 1);
        assert_eq!(s.configs_for_target("demo", "StatefulSet", "app").len(), 1);
        s.remove_config("demo", "b");
        assert!(s.configs_for_target("demo", "Deployment", "app").is_empty());
    }

    #[test]
    fn stored_objects_drop_managed_fields_and_last_applied() {
        let mut obj = bc("demo", "a", "Deployment", "app");
        obj.metadata.managed_fields = Some(vec![Default::default()]);
        obj.metadata.annotations = Some(
            [
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{}".to_string(),
                ),
                ("team".to_string(), "x".to_string()),
            ]
            .into(),
        );
        let mut s = Snapshot::default();
        s.upsert_config(obj);
        let stored = s.config("demo", "a").unwrap();
        assert!(stored.metadata.managed_fields.is_none());
        let annotations = stored.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["team"]);
    }

    #[test]
    fn ensure_keeps_the_indexed_object_unless_the_version_differs() {
        let mut s = Snapshot::default();
        let mut v1 = bc("demo", "a", "Deployment", "app");
        v1.metadata.resource_version = Some("1".into());
        s.upsert_config(v1.clone());
        let indexed = s.config("demo", "a").unwrap().clone();
        s.ensure_config(&v1);
        assert!(Arc::ptr_eq(&indexed, s.config("demo", "a").unwrap()));
        let mut v2 = bc("demo", "a", "StatefulSet", "app");
        v2.metadata.resource_version = Some("2".into());
        s.ensure_config(&v2);
        assert_eq!(s.configs_for_target("demo", "StatefulSet", "app").len(), 1);
        // Without a resourceVersion the handed object always wins.
        let unversioned = bc("demo", "a", "DaemonSet", "app");
        s.ensure_config(&unversioned);
        assert_eq!(s.configs_for_target("demo", "DaemonSet", "app").len(), 1);
    }

    #[test]
    fn snapshots_do_not_see_later_writes() {
        let store = Store::default();
        let before = store.snapshot();
        store.update(|s| s.upsert_config(bc("demo", "a", "Deployment", "app")));
        assert_eq!(before.config_count(), 0);
        assert_eq!(store.snapshot().config_count(), 1);
    }
}
