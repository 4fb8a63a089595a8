//! `stash serve`'s one watch per kind (`stash::runtime::feed`) on the fake cluster:
//! the index the webhooks read and the cache the controllers reconcile from
//! hold the same objects, a change reaches a controller only after the index
//! has it, and a running BackupConfiguration controller fed by it picks up a
//! Repository created after its configuration without reading it again.

use stash_testkit as support;

use std::sync::Arc;
use std::time::Duration;

use super::config::{bc, deployment, repository};
use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use stash::api::{BackupConfiguration, Repository};
use stash::runtime::drain::{Signal, channel};
use stash::runtime::feed::{Feed, Kind};
use support::{Cluster, Identity};

const BC: &str =
    "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupconfigurations/pause-backup";
const REPO: &str = "/apis/stash.appscode.com/v1alpha1/namespaces/demo/repositories/gcs-repo";

/// The feed of `stash serve`, running against `c` as the reconciler, until
/// the returned signal is dropped; waits for its first full list.
pub(super) async fn start_feed(c: &Cluster) -> (Feed, Signal) {
    let (feed, feeder) = stash::runtime::feed::new(Arc::default());
    let (signal, drain) = channel();
    tokio::spawn(feeder.run(c.client(Identity::reconciler()), drain));
    let store = feed.store.clone();
    tokio::time::timeout(support::WAIT, async move {
        while !store.is_synced() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the feed lists every kind");
    (feed, signal)
}

async fn next<K: stash::runtime::feed::Fed>(
    changes: &mut futures::stream::BoxStream<'static, Arc<K>>,
) -> Arc<K> {
    tokio::time::timeout(support::WAIT, changes.next())
        .await
        .expect("a change in time")
        .expect("the feed is running")
}

fn name<K: kube::Resource>(obj: &K) -> String {
    obj.meta().name.clone().unwrap_or_default()
}

#[tokio::test]
async fn one_object_per_change_seen_by_the_index_before_any_controller() {
    let c = Cluster::new();
    c.seed(bc());
    let (feed, _signal) = start_feed(&c).await;

    // What exists is handed first; index and cache share the object.
    let mut configs = feed.configs.subscribe();
    let first = next(&mut configs).await;
    assert_eq!(name(&*first), "pause-backup");
    let snap = feed.store.snapshot();
    let indexed = snap.config("demo", "pause-backup").expect("indexed");
    assert!(Arc::ptr_eq(&first, indexed), "one copy of each object");
    assert!(
        first.metadata.managed_fields.is_none(),
        "stored slimmed, like the webhook's index"
    );

    // A new Repository reaches a subscriber only once the index has it.
    let mut repos: futures::stream::BoxStream<'static, Arc<Repository>> =
        feed.repositories.subscribe();
    c.create(Identity::admin(), repository()).expect("created");
    let repo = next(&mut repos).await;
    assert_eq!(name(&*repo), "gcs-repo");
    assert!(
        feed.store
            .snapshot()
            .repository("demo", "gcs-repo")
            .is_some()
    );
    let cached = feed.repositories.reader().get(&ObjectRef::from_obj(&*repo));
    assert!(cached.is_some_and(|c| Arc::ptr_eq(&c, &repo)));

    // A deletion is handed on too (mappers need it), after the index drops it.
    c.delete(Identity::admin(), REPO).expect("deleted");
    let gone = next(&mut repos).await;
    assert_eq!(name(&*gone), "gcs-repo");
    assert!(
        feed.store
            .snapshot()
            .repository("demo", "gcs-repo")
            .is_none()
    );
    assert!(feed.repositories.reader().state().is_empty());
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_gets_every_object_again() {
    let c = Cluster::new();
    c.seed(bc());
    let (feed, _signal) = start_feed(&c).await;
    let mut configs: futures::stream::BoxStream<'static, Arc<BackupConfiguration>> =
        feed.configs.subscribe();
    assert_eq!(name(&*next(&mut configs).await), "pause-backup");
    // More changes than the broadcast holds, none read meanwhile.
    let changes = stash::runtime::feed::BROADCAST_CAPACITY + 10;
    for i in 0..changes {
        c.edit(BC, |o| {
            o["metadata"]["labels"] = json!({"n": i.to_string()})
        });
    }
    let last = (changes - 1).to_string();
    let store = feed.store.clone();
    tokio::time::timeout(support::WAIT, async move {
        loop {
            let snap = store.snapshot();
            let labels = snap
                .config("demo", "pause-backup")
                .and_then(|b| b.metadata.labels.clone());
            if labels.is_some_and(|l| l.get("n") == Some(&last)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the index takes every change in");
    // The subscriber is not left without the latest state: the lag is
    // answered with every object as it is now.
    let mut latest = None;
    while let Ok(Some(obj)) = tokio::time::timeout(Duration::from_millis(500), configs.next()).await
    {
        latest = obj.metadata.labels.clone();
    }
    assert_eq!(
        latest.and_then(|l| l.get("n").cloned()),
        Some((changes - 1).to_string())
    );
}

fn condition(c: &Cluster, type_: &str) -> Option<String> {
    let bc = c.get(BC)?;
    bc["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str())
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_created_after_its_configuration_is_found_by_the_next_pass() {
    let c = Cluster::new();
    c.seed(bc());
    c.seed(deployment());
    let (feed, _signal) = start_feed(&c).await;
    let configs: Kind<BackupConfiguration> = feed.configs.clone();
    assert_eq!(configs.reader().state().len(), 1);
    let controller = tokio::spawn(stash::reconcile::backup_configuration::run(
        c.client(Identity::reconciler()),
        c.settings().image.clone(),
        c.settings(),
        feed,
    ));
    c.wait_until("RepositoryFound is False", |c| {
        condition(c, "RepositoryFound").as_deref() == Some("False")
    })
    .await;

    // Nothing but the Repository's own watch event triggers the next pass.
    c.create(Identity::admin(), repository()).expect("created");
    c.wait_until("RepositoryFound is True", |c| {
        condition(c, "RepositoryFound").as_deref() == Some("True")
    })
    .await;
    let repo_gets = c
        .log()
        .iter()
        .filter(|r| r.method == "GET" && r.path == REPO)
        .count();
    assert_eq!(repo_gets, 0, "the Repository is read from the index");
    controller.abort();
}
