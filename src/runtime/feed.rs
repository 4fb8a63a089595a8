//! Cluster mode's one watch per kind: BackupConfigurations, Repositories and
//! RestoreSessions, over all namespaces, feeding the one index both the
//! webhooks and the controllers read.
//!
//! Each event goes, in this order, into
//! 1. the kube-runtime reflector cache of its kind ([`Kind::reader`]), from
//!    which a controller takes the object it reconciles by key;
//! 2. the [`Store`] index (the same `Arc`, so each object is held once), which
//!    the webhooks and the controllers' planners read by name and by target;
//! 3. the kind's change broadcast ([`Kind::subscribe`]), which triggers the
//!    controllers.
//!
//! Because a controller is triggered only after the index has taken the change
//! in, a reconcile never decides on an index older than its trigger: a
//! Repository that appears after its BackupConfiguration re-triggers that
//! configuration, whose next pass finds it.
//!
//! A (re)list is collected in full and swapped in at once, so a reader never
//! sees half a list; the store is marked synced after the first full list of
//! every kind, which is when `/readyz` may turn true. A subscriber that falls
//! behind the broadcast is handed every object again rather than losing a
//! trigger; controllers are idempotent, so repeats cost a pass and no harm.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::broadcast;

use crate::api::{BackupConfiguration, Repository, RestoreSession};
use crate::runtime::drain::Drain;
use crate::store::{Snapshot, Store, slim};

/// Changes a subscriber may fall behind by before it is handed every object again.
pub const BROADCAST_CAPACITY: usize = 1024;

/// How one kind enters the index.
pub trait Fed:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// This kind's bit in the "first list done" mask.
    const BIT: u8;
    fn insert(s: &mut Snapshot, obj: Arc<Self>);
    fn remove(s: &mut Snapshot, namespace: &str, name: &str);
    fn replace(store: &Store, all: Vec<Arc<Self>>);
}

impl Fed for BackupConfiguration {
    const BIT: u8 = 1;
    fn insert(s: &mut Snapshot, obj: Arc<Self>) {
        s.insert_config(obj);
    }
    fn remove(s: &mut Snapshot, namespace: &str, name: &str) {
        s.remove_config(namespace, name);
    }
    fn replace(store: &Store, all: Vec<Arc<Self>>) {
        store.replace_configs(all);
    }
}

impl Fed for Repository {
    const BIT: u8 = 2;
    fn insert(s: &mut Snapshot, obj: Arc<Self>) {
        s.insert_repository(obj);
    }
    fn remove(s: &mut Snapshot, namespace: &str, name: &str) {
        s.remove_repository(namespace, name);
    }
    fn replace(store: &Store, all: Vec<Arc<Self>>) {
        store.replace_repositories(all);
    }
}

impl Fed for RestoreSession {
    const BIT: u8 = 4;
    fn insert(s: &mut Snapshot, obj: Arc<Self>) {
        s.insert_restore(obj);
    }
    fn remove(s: &mut Snapshot, namespace: &str, name: &str) {
        s.remove_restore(namespace, name);
    }
    fn replace(store: &Store, all: Vec<Arc<Self>>) {
        store.replace_restores(all);
    }
}

/// Every kind's bit: the store is synced once all are set.
const ALL_KINDS: u8 = 7;

/// What the controllers get of one kind: its cache and its changes.
pub struct Kind<K: Fed> {
    reader: reflector::Store<K>,
    changes: broadcast::Sender<Arc<K>>,
}

impl<K: Fed> Clone for Kind<K> {
    fn clone(&self) -> Self {
        Self {
            reader: self.reader.clone(),
            changes: self.changes.clone(),
        }
    }
}

impl<K: Fed> Kind<K> {
    /// The kind's cache, for `Controller::for_shared_stream`.
    pub fn reader(&self) -> reflector::Store<K> {
        self.reader.clone()
    }

    /// Every object now, then each object the index takes in (applied or
    /// deleted), in order; after falling behind, every object again.
    pub fn subscribe(&self) -> BoxStream<'static, Arc<K>> {
        let rx = self.changes.subscribe();
        let now = self.reader.state();
        let reader = self.reader.clone();
        let live = stream::unfold(rx, move |mut rx| {
            let reader = reader.clone();
            async move {
                match rx.recv().await {
                    Ok(obj) => Some((vec![obj], rx)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(kind = %K::kind(&()), missed, "subscriber fell behind; re-sending every object");
                        Some((reader.state(), rx))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            }
        })
        .flat_map(stream::iter);
        stream::iter(now).chain(live).boxed()
    }
}

/// The feed's read side: the index and each kind's cache and changes.
#[derive(Clone)]
pub struct Feed {
    pub store: Arc<Store>,
    pub configs: Kind<BackupConfiguration>,
    pub repositories: Kind<Repository>,
    pub restores: Kind<RestoreSession>,
}

/// The feed's write side: run it with [`Feeder::run`].
pub struct Feeder {
    store: Arc<Store>,
    configs: Writer<BackupConfiguration>,
    repositories: Writer<Repository>,
    restores: Writer<RestoreSession>,
}

struct Writer<K: Fed> {
    cache: reflector::store::Writer<K>,
    changes: broadcast::Sender<Arc<K>>,
}

fn kind<K: Fed>() -> (Kind<K>, Writer<K>) {
    let cache = reflector::store::Writer::<K>::default();
    let (changes, _) = broadcast::channel(BROADCAST_CAPACITY);
    let kind = Kind {
        reader: cache.as_reader(),
        changes: changes.clone(),
    };
    (kind, Writer { cache, changes })
}

/// A feed into `store`: the handles to read it, and the task that fills it.
pub fn new(store: Arc<Store>) -> (Feed, Feeder) {
    let (configs, configs_w) = kind();
    let (repositories, repositories_w) = kind();
    let (restores, restores_w) = kind();
    let feed = Feed {
        store: store.clone(),
        configs,
        repositories,
        restores,
    };
    let feeder = Feeder {
        store,
        configs: configs_w,
        repositories: repositories_w,
        restores: restores_w,
    };
    (feed, feeder)
}

impl Feeder {
    /// Watches until `drain` fires.
    pub async fn run(self, client: Client, mut drain: Drain) {
        let listed = AtomicU8::new(0);
        let store = &self.store;
        let feeds = async {
            tokio::join!(
                watch(Api::all(client.clone()), self.configs, store, &listed),
                watch(Api::all(client.clone()), self.repositories, store, &listed),
                watch(Api::all(client), self.restores, store, &listed),
            )
        };
        tokio::select! {
            _ = feeds => {}
            () = drain.signaled() => tracing::debug!("store feed stopped"),
        }
    }
}

async fn watch<K: Fed>(api: Api<K>, mut w: Writer<K>, store: &Store, listed: &AtomicU8) {
    let kind = K::kind(&());
    let reader = w.cache.as_reader();
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|obj| slim(obj.meta_mut()))
        .boxed();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(kind = %kind, error = %e, "watch failed; retrying with backoff");
                continue;
            }
        };
        w.cache.apply_watcher_event(&event);
        match event {
            Event::Apply(obj) => {
                if let Some(cached) = reader.get(&ObjectRef::from_obj(&obj)) {
                    store.update(|s| K::insert(s, cached.clone()));
                    let _ = w.changes.send(cached);
                }
            }
            Event::Delete(obj) => {
                let (ns, name) = (crate::api::namespace_of(&obj).to_owned(), obj.name_any());
                store.update(|s| K::remove(s, &ns, &name));
                let _ = w.changes.send(Arc::new(obj));
            }
            Event::Init | Event::InitApply(_) => {}
            Event::InitDone => {
                let all = reader.state();
                tracing::info!(kind = %kind, count = all.len(), "listed");
                K::replace(store, all.clone());
                for obj in all {
                    let _ = w.changes.send(obj);
                }
                let seen = listed.fetch_or(K::BIT, Ordering::AcqRel) | K::BIT;
                if seen == ALL_KINDS && !store.is_synced() {
                    store.mark_synced();
                    tracing::info!("store synced with the API server");
                }
            }
        }
    }
}
