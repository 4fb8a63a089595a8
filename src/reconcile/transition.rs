//! One phase change of a session (a BackupSession or a RestoreSession),
//! written one way: a merge patch of `status` guarded by the resourceVersion
//! the decision was made on, then the event that describes it.
//!
//! The two session controllers decide their next step in pure functions
//! ([`super::desired::session_step`], [`super::restore_session::restore_step`])
//! and turn it into a [`Transition`]; only [`write()`] touches the API. The
//! order is the rule: the event is published only after the phase is written,
//! so a retried reconcile (the write failed, or a conflict sent it round
//! again) never repeats an event for a change that did not happen, and a
//! stale copy's decision fails with 409 instead of overwriting a newer state.

use kube::api::{Api, Patch};
use kube::{Resource, ResourceExt};

use super::apply::{ApiError, patch_params};
use crate::recorder::Recorder;

pub use stash_core::reconcile::transition::{Transition, TransitionEvent};

/// Writes `transition` onto `session` (as read: its resourceVersion is the
/// precondition), then records its event. Returns the resourceVersion the
/// write left the session at (a controller remembers the one it superseded).
pub async fn write<K>(
    api: &Api<K>,
    session: &K,
    transition: &Transition,
    recorder: &Recorder,
) -> Result<Option<String>, ApiError>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = session.name_any();
    let ns = crate::api::namespace_of(session);
    let kind = K::kind(&());
    let patch = transition.patch(session.meta().resource_version.as_deref());
    let written = api
        .patch_status(&name, &patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(|e| ApiError::new(format!("mark {kind} {ns}/{name} {}", transition.phase), e))?;
    if let Some(event) = &transition.event {
        recorder
            .publish(
                &session.object_ref(&()),
                event.type_,
                event.reason,
                &event.message,
            )
            .await
            .map_err(|e| {
                ApiError::new(
                    format!(
                        "record the {} event on {kind} {ns}/{name}",
                        transition.phase
                    ),
                    e,
                )
            })?;
    }
    tracing::info!(kind = %kind, session = %format!("{ns}/{name}"), phase = transition.phase, "session phase written");
    Ok(written.meta().resource_version.clone())
}
