//! The webhook's decisions, in process: every endpoint's answer to the captured
//! and hand-written AdmissionReviews, `stash review` as a user runs it, and the
//! sidecar planner's properties (idempotent injection and removal).
//!
//! One test binary per topic (each binary is a link on a small machine);
//! the shared fake cluster and helpers are the `stash-testkit` crate
//! (`tests/support`).

mod review;
mod sidecar_props;
mod webhooks;
