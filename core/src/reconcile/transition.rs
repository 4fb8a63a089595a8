//! One phase change of a session (a BackupSession or a RestoreSession),
//! written one way: a merge patch of `status` guarded by the resourceVersion
//! the decision was made on, then the event that describes it.
//!
//! The two session controllers decide their next step in pure functions
//! ([`super::desired::session_step`], `restore_step` (the `stash` crate's RestoreSession controller))
//! and turn it into a [`Transition`]; only the `stash` crate's `reconcile::transition::write` touches the API. The
//! order is the rule: the event is published only after the phase is written,
//! so a retried reconcile (the write failed, or a conflict sent it round
//! again) never repeats an event for a change that did not happen, and a
//! stale copy's decision fails with 409 instead of overwriting a newer state.

use serde_json::{Value, json};

use crate::api::events::EventType;

/// The event a transition records on its session.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionEvent {
    pub type_: EventType,
    pub reason: &'static str,
    pub message: String,
}

/// A phase change, decided: the `status` fields to merge and the event.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The new phase, for errors and the log (`Running`, `Succeeded`, …).
    pub phase: &'static str,
    /// The `status` fields to merge (the phase among them).
    pub status: Value,
    /// The event to record once the status is written, if any.
    pub event: Option<TransitionEvent>,
}

impl TransitionEvent {
    pub fn new(type_: EventType, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            reason,
            message: message.into(),
        }
    }
}

impl Transition {
    /// The session starts: `phase` (its kind's Running) with `totalHosts`,
    /// and `event` if any.
    pub fn running(phase: &'static str, total_hosts: i32, event: Option<TransitionEvent>) -> Self {
        Self {
            phase,
            status: json!({"phase": phase, "totalHosts": total_hosts}),
            event,
        }
    }

    /// Every host has reported: `phase` with `sessionDuration`, and the
    /// Normal `succeeded` event (reason, message) when no host failed, else
    /// the Warning `failed` one (reason, message naming the failed hosts).
    pub fn finished(
        phase: &'static str,
        duration: &str,
        failed: &[String],
        succeeded: (&'static str, &str),
        failure: (&'static str, fn(&[String]) -> String),
    ) -> Self {
        let event = if failed.is_empty() {
            TransitionEvent::new(EventType::Normal, succeeded.0, succeeded.1)
        } else {
            TransitionEvent::new(EventType::Warning, failure.0, (failure.1)(failed))
        };
        Self {
            phase,
            status: json!({"phase": phase, "sessionDuration": duration}),
            event: Some(event),
        }
    }

    /// The merge patch: `status` and the resourceVersion precondition.
    pub fn patch(&self, resource_version: Option<&str>) -> Value {
        json!({
            "metadata": {"resourceVersion": resource_version},
            "status": self.status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_carries_the_precondition_and_only_the_status() {
        let t = Transition {
            phase: "Running",
            status: json!({"phase": "Running", "totalHosts": 1}),
            event: None,
        };
        assert_eq!(
            t.patch(Some("42")),
            json!({"metadata": {"resourceVersion": "42"},
                   "status": {"phase": "Running", "totalHosts": 1}})
        );
        // No resourceVersion (an object never read from a server) is sent as
        // null, which a merge patch ignores: no precondition then.
        assert_eq!(t.patch(None)["metadata"]["resourceVersion"], Value::Null);
    }
}
