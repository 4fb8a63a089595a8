//! Kubernetes events from the sidecar, as `kubectl describe` shows them:
//! `From: Backup Sidecar`.
//!
//! These are core/v1 Events with `source.component` set, the way client-go's
//! event recorder (and so Stash) writes them. kube-runtime's `Recorder` writes
//! events.k8s.io/v1 Events instead, whose `reportingController` the API
//! server validates as a qualified name: a component with a space, such as
//! the guide's "Backup Sidecar", would be refused there.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// Writes events for one reporting component.
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    component: String,
    host: Option<String>,
}

/// The Event object for `regarding` (pure, so tests can check it).
pub fn build_event(
    regarding: &ObjectReference,
    component: &str,
    host: Option<&str>,
    type_: EventType,
    reason: &str,
    message: &str,
    now: Time,
) -> Event {
    let name = format!(
        "{}.{:x}",
        regarding.name.as_deref().unwrap_or("stash"),
        now.0.as_nanosecond()
    );
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: regarding.namespace.clone(),
            ..Default::default()
        },
        involved_object: regarding.clone(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        type_: Some(type_.as_str().to_string()),
        source: Some(EventSource {
            component: Some(component.to_string()),
            host: host.map(str::to_string),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    }
}

impl EventRecorder {
    /// A recorder for `component` (e.g. "Backup Sidecar") on node `host`.
    pub fn new(client: kube::Client, component: &str, host: Option<String>) -> Self {
        Self {
            client,
            component: component.to_string(),
            host,
        }
    }

    /// Records an event on `regarding`. Failures are logged, not returned:
    /// an event is never worth failing a backup for.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let event = build_event(
            regarding,
            &self.component,
            self.host.as_deref(),
            type_,
            reason,
            message,
            now,
        );
        let ns = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(reason, error = %e, "cannot record event");
        }
    }
}
