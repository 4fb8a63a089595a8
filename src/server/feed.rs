//! Cluster mode's store feed: watchers over all namespaces for
//! BackupConfigurations, Repositories and RestoreSessions, applied to the [`Store`].
//!
//! The handlers read only the store, never the API server. A (re)list is
//! collected in full and swapped in at once, so a handler never sees half a
//! list; the store is marked synced after the first full list of every kind,
//! which is when `/readyz` may turn true.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};

use super::shutdown::Drain;
use crate::api::{BackupConfiguration, Repository, RestoreSession};
use crate::store::{Snapshot, Store};

/// How one kind enters the store.
trait Fed:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const BIT: u8;
    fn upsert(s: &mut Snapshot, obj: Self);
    fn remove(s: &mut Snapshot, namespace: &str, name: &str);
    fn replace(store: &Store, all: Vec<Self>);
}

impl Fed for BackupConfiguration {
    const BIT: u8 = 1;
    fn upsert(s: &mut Snapshot, obj: Self) {
        s.upsert_config(obj);
    }
    fn remove(s: &mut Snapshot, namespace: &str, name: &str) {
        s.remove_config(namespace, name);
    }
    fn replace(store: &Store, all: Vec<Self>) {
        store.replace_configs(all);
    }
}

impl Fed for Repository {
    const BIT: u8 = 2;
    fn upsert(s: &mut Snapshot, obj: Self) {
        s.upsert_repository(obj);
    }
    fn remove(s: &mut Snapshot, namespace: &str, name: &str) {
        s.remove_repository(namespace, name);
    }
    fn replace(store: &Store, all: Vec<Self>) {
        store.replace_repositories(all);
    }
}

impl Fed for RestoreSession {
    const BIT: u8 = 4;
    fn upsert(s: &mut Snapshot, obj: Self) {
        s.upsert_restore(obj);
    }
    fn remove(s: &mut Snapshot, namespace: &str, name: &str) {
        s.remove_restore(namespace, name);
    }
    fn replace(store: &Store, all: Vec<Self>) {
        store.replace_restores(all);
    }
}

/// Feeds `store` until `drain` fires.
pub async fn run(client: Client, store: Arc<Store>, mut drain: Drain) {
    let listed = Arc::new(AtomicU8::new(0));
    let feeds = async {
        tokio::join!(
            feed::<BackupConfiguration>(Api::all(client.clone()), store.clone(), listed.clone()),
            feed::<Repository>(Api::all(client.clone()), store.clone(), listed.clone()),
            feed::<RestoreSession>(Api::all(client), store, listed),
        )
    };
    tokio::select! {
        _ = feeds => {}
        () = drain.signaled() => tracing::debug!("store feed stopped"),
    }
}

async fn feed<K: Fed>(api: Api<K>, store: Arc<Store>, listed: Arc<AtomicU8>) {
    let kind = K::kind(&());
    let mut buffer: Vec<K> = Vec::new();
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(obj)) => store.update(|s| K::upsert(s, obj)),
            Ok(Event::Delete(obj)) => {
                let (ns, name) = (crate::api::namespace_of(&obj).to_owned(), obj.name_any());
                store.update(|s| K::remove(s, &ns, &name));
            }
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(obj)) => buffer.push(obj),
            Ok(Event::InitDone) => {
                let count = buffer.len();
                K::replace(&store, std::mem::take(&mut buffer));
                tracing::info!(kind = %kind, count, "listed");
                let seen = listed.fetch_or(K::BIT, Ordering::AcqRel) | K::BIT;
                if seen == 7 && !store.is_synced() {
                    store.mark_synced();
                    tracing::info!("store synced with the API server");
                }
            }
            Err(e) => {
                tracing::warn!(kind = %kind, error = %e, "watch failed; retrying with backoff")
            }
        }
    }
}
