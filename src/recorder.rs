//! Publishes Kubernetes Events whose `kubectl describe` "From" column reads
//! exactly as the user's guide prints it (`Backup Triggering CronJob`,
//! `BackupSession Controller`).
//!
//! Why not kube-runtime's `Recorder`: it posts `events.k8s.io/v1` Events, and
//! the API server validates their `reportingController` as a qualified name
//! (no spaces), so every one of the guide's component names would be refused
//! with 422. A `core/v1` Event without `eventTime` is validated the legacy way
//! and carries the component in `source.component`, which is what `kubectl
//! describe` shows first — the same route the original (Go) Stash took through
//! client-go's recorder. Like kube-runtime's recorder, one `Recorder` exists
//! per reporting component and is created once.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::api::DEFAULT_NAMESPACE;

pub use crate::api::events::EventType;

/// Publishes events on behalf of one reporting component.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
    /// Node the reporter runs on (`source.host`), for the sidecar.
    host: Option<String>,
}

impl Recorder {
    /// A recorder for `component` (one of `crate::api::events::COMPONENT_*`).
    pub fn new(client: Client, component: &'static str) -> Self {
        Self {
            client,
            component,
            host: None,
        }
    }

    /// The same recorder, also naming the node it runs on.
    pub fn on_host(mut self, host: Option<String>) -> Self {
        self.host = host;
        self
    }

    /// Creates one Event about `regarding` in its namespace.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let now = jiff::Timestamp::now();
        let mut event = build_event(self.component, regarding, type_, reason, message, now);
        if let Some(source) = event.source.as_mut() {
            source.host.clone_from(&self.host);
        }
        let namespace = crate::api::namespace_of(&event).to_owned();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await.map(|_| ())
    }
}

impl Recorder {
    /// Like [`Recorder::publish`], for callers to whom an event is never
    /// worth failing for (the sidecar's backup): a failure is logged.
    pub async fn publish_or_log(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(e) = self.publish(regarding, type_, reason, message).await {
            tracing::warn!(reason, error = %e, "cannot record event");
        }
    }
}

/// The Event object for one occurrence (pure, so tests can check every field).
pub fn build_event(
    component: &str,
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> Event {
    let namespace = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    let object = regarding.name.as_deref().unwrap_or("object");
    Event {
        metadata: ObjectMeta {
            // Unique per occurrence, like client-go's `<name>.<hex nanos>`.
            name: Some(format!("{object}.{:x}", now.as_nanosecond())),
            namespace: Some(namespace),
            ..Default::default()
        },
        involved_object: regarding.clone(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        type_: Some(type_.as_str().to_string()),
        source: Some(EventSource {
            component: Some(component.to_string()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_carries_the_component_as_source_and_no_event_time() {
        let r = ObjectReference {
            api_version: Some("stash.appscode.com/v1beta1".into()),
            kind: Some("BackupConfiguration".into()),
            name: Some("pause-backup".into()),
            namespace: Some("demo".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        let now = jiff::Timestamp::from_second(1_564_659_789).unwrap();
        let ev = build_event(
            "Backup Triggering CronJob",
            &r,
            EventType::Normal,
            "Backup Skipped",
            "m",
            now,
        );
        assert_eq!(
            ev.source.unwrap().component.as_deref(),
            Some("Backup Triggering CronJob")
        );
        assert_eq!(ev.metadata.namespace.as_deref(), Some("demo"));
        assert!(ev.metadata.name.unwrap().starts_with("pause-backup."));
        assert_eq!(ev.type_.as_deref(), Some("Normal"));
        // eventTime set would switch the API server to strict validation,
        // which refuses component names with spaces.
        assert!(ev.event_time.is_none());
        assert!(ev.reporting_component.is_none());
        assert_eq!(ev.involved_object, r);
    }
}
