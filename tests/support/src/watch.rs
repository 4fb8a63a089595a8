//! Watches as kube's `watcher` and `Api::watch` use them: `GET
//! <collection>?watch=true&resourceVersion=<rv>` streams newline-delimited
//! `{"type": "ADDED|MODIFIED|DELETED|BOOKMARK|ERROR", "object": …}`.
//!
//! Unlike a fake that hands over the latest object, a watch here delivers
//! every intermediate state, in resourceVersion order, each no earlier than
//! [`WatchKnobs::delay`] after it was written. A test can hold events and
//! release them several at once (a burst, as a slow informer sees them), and
//! force a relist: every open watch ends with `410 Gone` ("too old resource
//! version") and a watch from an older resourceVersion is refused the same
//! way, so the watcher lists again and sees only the latest state.
//!
//! Label and field selectors apply, with the API server's transitions: an
//! object that stops matching is reported DELETED, one that starts is ADDED.
//! `resourceVersion=0` (or none) starts with a synthetic ADDED per object;
//! `sendInitialEvents=true` ends those with the `k8s.io/initial-events-end`
//! BOOKMARK. The stream ends after `timeoutSeconds`, as the API server's does.
//! A metadata-only watch (`Accept: …;as=PartialObjectMetadata;…`) carries
//! each object's `metadata` alone, as `meta.k8s.io/v1` PartialObjectMetadata.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use serde_json::{Value, json};

use super::api_server::{Body, ChangeKind, Shared};
use super::objects::{LabelSelector, Target, field_selector_matches, kind_of, param};

/// How watches deliver events; set through [`super::Cluster`].
#[derive(Debug, Clone, Default)]
pub struct WatchKnobs {
    /// Each event is delivered no earlier than this long after its write.
    pub delay: Duration,
    /// Events with a resourceVersion above this are held back.
    pub gate: Option<u64>,
    /// Watches from a resourceVersion below this get 410 Gone.
    pub compacted: u64,
    /// Bumped by a forced relist: open watches end with 410 Gone.
    pub epoch: u64,
    /// Watches currently streaming.
    pub open: usize,
}

struct Params {
    resource_version: Option<u64>,
    initial_events: bool,
    labels: Option<LabelSelector>,
    fields: Option<String>,
    timeout: Duration,
    meta_only: bool,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes =
        serde_json::to_vec(&json!({"type": kind, "object": object})).expect("serialize");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn gone(from: u64, now: u64) -> Bytes {
    line(
        "ERROR",
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from} ({now})"),
                "reason": "Expired", "code": 410}),
    )
}

/// What a metadata-only request gets of `object`.
pub fn partial_metadata(object: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
           "metadata": object["metadata"]})
}

/// Starts streaming a watch of `target`'s collection (metadata only when `meta_only`).
pub fn serve(shared: Arc<Shared>, target: Target, query: &str, meta_only: bool) -> Body {
    let rv = param(query, "resourceVersion").unwrap_or_default();
    let params = Params {
        resource_version: match rv.as_str() {
            "" | "0" => None,
            other => Some(other.parse().expect("a numeric resourceVersion")),
        },
        initial_events: param(query, "sendInitialEvents").as_deref() == Some("true"),
        labels: param(query, "labelSelector").map(|s| LabelSelector::parse(&s)),
        fields: param(query, "fieldSelector"),
        timeout: Duration::from_secs(
            param(query, "timeoutSeconds")
                .and_then(|s| s.parse().ok())
                .unwrap_or(1800),
        ),
        meta_only,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(run(shared, target, params, tx));
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    });
    StreamBody::new(frames).boxed_unsync()
}

struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.with(|s| s.watch.open -= 1);
    }
}

async fn run(
    shared: Arc<Shared>,
    target: Target,
    params: Params,
    tx: tokio::sync::mpsc::UnboundedSender<Bytes>,
) {
    let mut ticks = shared.tick.subscribe();
    let deadline = tokio::time::Instant::now() + params.timeout;
    let line = |kind: &str, obj: &Value| match params.meta_only {
        true => line(kind, &partial_metadata(obj)),
        false => line(kind, obj),
    };
    let matches = |obj: &Value| {
        params.labels.as_ref().is_none_or(|l| l.matches(obj))
            && params
                .fields
                .as_deref()
                .is_none_or(|f| field_selector_matches(f, obj))
    };
    // Where the stream starts, what it sends first.
    let start = shared.with(|s| {
        s.watch.open += 1;
        if let Some(rv) = params.resource_version
            && rv < s.watch.compacted
        {
            return Err(gone(rv, s.rv));
        }
        let mut first = Vec::new();
        let from = match params.resource_version {
            Some(rv) => rv,
            None => {
                for obj in s.select(&target, "") {
                    if matches(&obj) {
                        first.push(line("ADDED", &obj));
                    }
                }
                s.rv
            }
        };
        if params.initial_events {
            let kind = kind_of(&target.plural).unwrap_or("Unknown");
            first.push(line(
                "BOOKMARK",
                &json!({"kind": kind, "apiVersion": target.api_version(),
                        "metadata": {"resourceVersion": from.to_string(),
                                     "annotations": {"k8s.io/initial-events-end": "true"}}}),
            ));
        }
        Ok((from, s.watch.epoch, first))
    });
    let _open = Open(shared.clone());
    let (mut last, epoch, first) = match start {
        Ok(x) => x,
        Err(error) => {
            let _ = tx.send(error);
            return;
        }
    };
    for b in first {
        if tx.send(b).is_err() {
            return;
        }
    }
    loop {
        let (batch, relist, delay) = shared.read(|s| {
            if s.watch.epoch != epoch {
                return (Vec::new(), Some(gone(last, s.rv)), s.watch.delay);
            }
            let mut batch = Vec::new();
            // The history is in resourceVersion order.
            let from = s.history.partition_point(|c| c.rv <= last);
            for change in &s.history[from..] {
                if s.watch.gate.is_some_and(|g| change.rv > g) {
                    break;
                }
                let Some(t) = Target::parse(&change.path) else {
                    continue;
                };
                if !target.contains(&t) {
                    batch.push((change.rv, change.at, None));
                    continue;
                }
                let now = matches(&change.object);
                let before = change.previous.as_ref().is_some_and(&matches);
                let kind = match (change.kind, before, now) {
                    (ChangeKind::Deleted, true, _) => Some("DELETED"),
                    (ChangeKind::Deleted, false, _) => None,
                    (_, false, true) => Some("ADDED"),
                    (ChangeKind::Added, _, true) => Some("ADDED"),
                    (ChangeKind::Modified, true, true) => Some("MODIFIED"),
                    (ChangeKind::Modified, true, false) => Some("DELETED"),
                    (_, _, false) => None,
                };
                batch.push((change.rv, change.at, kind.map(|k| line(k, &change.object))));
            }
            (batch, None, s.watch.delay)
        });
        if let Some(error) = relist {
            let _ = tx.send(error);
            return;
        }
        let progressed = !batch.is_empty();
        for (rv, at, bytes) in batch {
            if let Some(bytes) = bytes {
                let due = at + delay;
                if due > Instant::now() {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due.into()) => {}
                        _ = tx.closed() => return,
                    }
                }
                if tx.send(bytes).is_err() {
                    return;
                }
            }
            last = rv;
        }
        if progressed {
            continue;
        }
        tokio::select! {
            changed = ticks.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
        }
    }
}
