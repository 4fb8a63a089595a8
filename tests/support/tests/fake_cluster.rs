//! The fake cluster itself: the API-server behaviour the other tests rely
//! on (watches late, in order, in bursts, relisted; preconditions;
//! subresources; pruning; webhook denials; finalizers, also through
//! kube-runtime's helper; pagination and metadata-only requests) checked
//! once here, so a test that passes on the fake means something on a
//! cluster. (They were the reconcile binary's `fake_cluster` module.)

use stash_testkit as support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::{Value, json};
use support::{Cluster, Identity, PatchBody, WAIT};

const CM: &str = "/api/v1/namespaces/demo/configmaps/c";
const BC: &str =
    "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupconfigurations/pause-backup";

fn config_map(n: i32) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "c", "namespace": "demo", "labels": {"app": "x"}},
           "data": {"n": n.to_string()}})
}

fn set(c: &Cluster, n: i32) {
    c.patch(
        Identity::admin(),
        CM,
        PatchBody::Merge(json!({"data": {"n": n.to_string()}})),
    )
    .expect("patched");
}

/// The next `want` values of `data.n` that a kube watcher applies.
async fn seen<S>(stream: &mut S, want: usize) -> Vec<String>
where
    S: futures::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>> + Unpin,
{
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, async {
        while out.len() < want {
            match stream
                .next()
                .await
                .expect("the watch goes on")
                .expect("no error")
            {
                watcher::Event::Apply(cm) | watcher::Event::InitApply(cm) => {
                    out.push(cm.data.unwrap()["n"].clone())
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("saw only {out:?}"));
    out
}

#[tokio::test]
async fn watches_deliver_every_state_late_in_order_in_bursts_and_relist() {
    let c = Cluster::new();
    c.create(Identity::admin(), config_map(0)).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(c.client(Identity::admin()), "demo");
    let mut stream = watcher(api, watcher::Config::default().labels("app=x")).boxed();
    // The list; the watch opens from its resourceVersion when polled next.
    assert_eq!(seen(&mut stream, 1).await, ["0"]);

    // Every intermediate state, in order, none before the delay.
    c.set_watch_delay(Duration::from_millis(200));
    let written = Instant::now();
    for n in 1..=3 {
        set(&c, n);
    }
    assert_eq!(seen(&mut stream, 3).await, ["1", "2", "3"]);
    assert!(written.elapsed() >= Duration::from_millis(200));
    c.set_watch_delay(Duration::ZERO);

    // Held, then released at once.
    c.hold_watch_events();
    set(&c, 4);
    set(&c, 5);
    let nothing = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
    assert!(nothing.is_err(), "a held event was delivered: {nothing:?}");
    c.release_watch_events();
    assert_eq!(seen(&mut stream, 2).await, ["4", "5"]);

    // A forced relist: 410 Gone, then the latest state only.
    c.hold_watch_events();
    set(&c, 6);
    set(&c, 7);
    c.force_relist();
    c.release_watch_events();
    let mut after = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.next().await.unwrap() {
                Err(_) => after.push("error".to_string()),
                Ok(watcher::Event::Init) => after.push("init".into()),
                Ok(watcher::Event::InitApply(cm)) => {
                    after.push(cm.data.unwrap()["n"].clone());
                    break;
                }
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("relisted");
    assert_eq!(after, ["error", "init", "7"]);

    // A label selector: an object that stops matching is deleted for the watch.
    c.patch(
        Identity::admin(),
        CM,
        PatchBody::Merge(json!({"metadata": {"labels": {"app": "y"}}})),
    )
    .unwrap();
    let event = tokio::time::timeout(WAIT, async {
        loop {
            match stream.next().await.unwrap().unwrap() {
                watcher::Event::Delete(cm) => break cm,
                watcher::Event::InitDone => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("a delete");
    assert_eq!(event.metadata.name.as_deref(), Some("c"));
}

#[test]
fn writes_behave_like_the_api_server() {
    let c = Cluster::new();
    let first = c.create(Identity::admin(), config_map(0)).unwrap().object;
    assert!(first["metadata"]["uid"].is_string());
    let again = c.create(Identity::admin(), config_map(0)).unwrap_err();
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));

    // A stale resourceVersion precondition is a Conflict; a no-op write keeps it.
    set(&c, 1);
    let mut stale = config_map(2);
    stale["metadata"]["resourceVersion"] = first["metadata"]["resourceVersion"].clone();
    let conflict = c.put(Identity::admin(), stale).unwrap_err();
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    let rv = c.resource_version();
    set(&c, 1);
    assert_eq!(c.resource_version(), rv, "a write that changes nothing");

    // Status subresource and generation on a Deployment.
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "demo"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "x", "image": "x"}]}}},
        "status": {"replicas": 9}});
    let stored = c.create(Identity::admin(), deploy).unwrap().object;
    assert_eq!(stored.get("status"), None, "create ignores status");
    assert_eq!(stored["metadata"]["generation"], 1);
    let path = "/apis/apps/v1/namespaces/demo/deployments/d";
    c.patch(
        Identity::admin(),
        &format!("{path}/status"),
        PatchBody::Merge(json!({"spec": {"replicas": 5}, "status": {"replicas": 1}})),
    )
    .unwrap();
    let d = c.object(path);
    assert_eq!(
        (
            d["spec"]["replicas"].clone(),
            d["status"]["replicas"].clone()
        ),
        (json!(1), json!(1))
    );
    c.patch(
        Identity::admin(),
        path,
        PatchBody::Merge(json!({"spec": {"replicas": 2}, "status": {"replicas": 7}})),
    )
    .unwrap();
    let d = c.object(path);
    assert_eq!(
        (
            d["spec"]["replicas"].clone(),
            d["status"]["replicas"].clone()
        ),
        (json!(2), json!(1))
    );
    assert_eq!(d["metadata"]["generation"], 2);
    let failed_test = c
        .patch(
            Identity::admin(),
            path,
            PatchBody::Json(
                json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}]),
            ),
        )
        .unwrap_err();
    assert_eq!(failed_test.code, 422);
}

fn guide_configuration() -> Value {
    json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
           "metadata": {"name": "pause-backup", "namespace": "demo"},
           "spec": {"repository": {"name": "gcs-repo"}, "schedule": "*/5 * * * *",
                    "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "stash-demo"}},
                    "retentionPolicy": {"name": "keep-last-5", "keepLast": 5, "prune": true}}})
}

#[test]
fn custom_resources_are_pruned_to_their_schema_and_validated_by_the_webhooks() {
    let c = Cluster::new();
    let mut bc = guide_configuration();
    bc["spec"]["pausd"] = json!(true);
    let written = c.create(Identity::admin(), bc).unwrap();
    assert_eq!(written.object["spec"].get("pausd"), None);
    assert!(
        written.warnings.iter().any(|w| w.contains("spec.pausd")),
        "{:?}",
        written.warnings
    );
    assert!(c.object(BC)["spec"].get("pausd").is_none());

    // A bad schedule is denied by /validate/backupconfigurations.
    let denied = c
        .patch(
            Identity::admin(),
            BC,
            PatchBody::Merge(json!({"spec": {"schedule": "not a schedule"}})),
        )
        .unwrap_err();
    assert!(denied.code >= 400, "{denied:?}");
    assert!(
        denied.message.starts_with(
            "admission webhook \"backupconfigurations.validate.stash.appscode.com\" denied the request: "
        ),
        "{denied:?}"
    );
    assert_eq!(c.object(BC)["spec"]["schedule"], "*/5 * * * *");
}

#[test]
fn finalizers_hold_a_deletion_until_they_are_gone() {
    let c = Cluster::new();
    let mut bc = guide_configuration();
    bc["metadata"]["finalizers"] = json!(["stash.appscode.com"]);
    c.create(Identity::admin(), bc).unwrap();
    c.delete(Identity::admin(), BC).unwrap();
    assert!(c.object(BC)["metadata"]["deletionTimestamp"].is_string());
    c.patch(
        Identity::admin(),
        BC,
        PatchBody::Json(json!([{"op": "remove", "path": "/metadata/finalizers/0"}])),
    )
    .unwrap();
    assert_eq!(c.get(BC), None);
}

fn config_map_named(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "demo", "labels": {"app": "x"}},
           "data": {"big": "x".repeat(1000)}})
}

/// What the reconciler's workload watches ask of the API server: lists in
/// pages (`limit`, `continue`) and metadata only (`Api<PartialObjectMeta<K>>`
/// sends `Accept: …;as=PartialObjectMetadataList;…`), whose watch events carry
/// metadata only too.
#[tokio::test]
async fn lists_are_paginated_and_metadata_only_requests_get_metadata_only() {
    use kube::api::ListParams;
    use kube::core::PartialObjectMeta;
    let c = Cluster::new();
    for i in 0..5 {
        c.seed(config_map_named(&format!("c{i}")));
    }
    let client = c.client(Identity::admin());
    let api = Api::<ConfigMap>::namespaced(client.clone(), "demo");
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(2);
    let mut pages = 0;
    loop {
        let page = api.list_metadata(&lp).await.expect("a page");
        pages += 1;
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().map(|m| m.metadata.name.clone().unwrap()));
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);

    let meta = Api::<PartialObjectMeta<ConfigMap>>::namespaced(client, "demo");
    let mut stream = watcher::watcher(meta, watcher::Config::default().page_size(2)).boxed();
    let mut listed = 0;
    loop {
        let event = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("no error");
        match event {
            watcher::Event::InitApply(m) => {
                assert_eq!(m.metadata.labels.unwrap()["app"], "x");
                listed += 1;
            }
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(listed, 5);
    c.seed(config_map_named("c5"));
    let event = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("no error");
    let watcher::Event::Apply(m) = event else {
        panic!("an applied object: {event:?}");
    };
    assert_eq!(m.metadata.name.as_deref(), Some("c5"));
    // Metadata only: over HTTP, as kube asks, the answer carries no data.
    let addr = c.listen(Identity::admin()).await.expect("listen");
    let body = http_get(
        addr,
        "/api/v1/namespaces/demo/configmaps?limit=1",
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    )
    .await;
    assert_eq!(body["kind"], "PartialObjectMetadataList");
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["items"][0]["metadata"]["name"], "c0");
    assert!(body["items"][0].get("data").is_none(), "{body}");
    assert!(body["metadata"]["continue"].is_string());
}

/// One HTTP/1.1 GET on the fake's plain-HTTP listener, with `accept`: the
/// answer's JSON body (200 or the test fails).
async fn http_get(addr: std::net::SocketAddr, path: &str, accept: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("request sent");
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("answered in time")
        .expect("read");
    let text = String::from_utf8(out).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A chunked HTTP/1.1 body's data.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// The fake API server takes the JSON patches of kube-runtime's own
/// finalizer helper as a real one does (a `test` of the absent
/// `/metadata/finalizers` against `null`, then `add`; on deletion `test` and
/// `remove` of the index), which the reconciler's finalizer is.
#[tokio::test]
async fn kube_runtimes_finalizer_helper_works_against_the_fake() {
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event, finalizer};
    use stash::api::BackupConfiguration;
    let c = Cluster::new();
    let mut bc = guide_configuration();
    bc["metadata"]["uid"] = json!("bc-uid");
    c.seed(bc);
    let api: kube::Api<BackupConfiguration> =
        kube::Api::namespaced(c.client(Identity::reconciler()), "demo");
    let run = |obj: BackupConfiguration| {
        let api = api.clone();
        async move {
            finalizer(
                &api,
                "stash.appscode.com",
                std::sync::Arc::new(obj),
                |event| async move {
                    match event {
                        Event::Apply(_) | Event::Cleanup(_) => {
                            Ok::<_, std::io::Error>(Action::await_change())
                        }
                    }
                },
            )
            .await
        }
    };
    run(c.typed(BC)).await.unwrap();
    assert_eq!(
        c.object(BC)["metadata"]["finalizers"],
        json!(["stash.appscode.com"])
    );
    c.delete(Identity::admin(), BC).expect("deleted");
    run(c.typed(BC)).await.unwrap();
    assert_eq!(c.get(BC), None);
}
