//! When a Running BackupSession has waited long enough, and what it then
//! says: pure functions of the session, its deadlines, what is known of the
//! target, and the time (passed in; no clock here).
//!
//! A session nothing can run (its target's pods have no `stash` sidecar,
//! say because a policy refused the patch) used to stay `Running` for ever.
//! Now it fails at one of two deadlines (see [`crate::api::timeout`] for the
//! values and why): no host has claimed it [`CLAIM_WINDOW`] after its
//! creation, or it is unfinished at `status.sessionDeadline`. It is marked
//! `Failed` with the condition `DeadlineExceeded` and a message that names
//! the cause in operator terms; hosts that reported keep their stats, and
//! every other host the controller can name gets a `Failed` entry with the
//! reason, so `kubectl describe` says which host was missing and why.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::desired::go_duration;
use super::transition::{Transition, TransitionEvent};
use crate::api::events::EventType;
use crate::api::events::{REASON_BACKUPSESSION_FAILED, backupsession_failure_message};
use crate::api::timeout::{self, CLAIM_WINDOW};
use crate::api::{
    BackupSession, BackupSessionPhase, Condition, HostBackupPhase, HostBackupStats,
    SIDECAR_CONTAINER,
};

/// Condition type on a BackupSession that missed its deadline (as Stash v0.24+).
pub const CONDITION_DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
/// Its reason when the whole-session deadline passed (Stash's reason).
pub const REASON_DEADLINE: &str = "FailedToCompleteWithinDeadline";
/// Its reason when no host claimed the session in time.
pub const REASON_NO_HOST_CLAIMED: &str = "NoHostClaimedWithinDeadline";

/// A session's two deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// When the session started (its creation).
    pub started: Timestamp,
    /// Some host must have claimed the session by then.
    pub claim: Timestamp,
    /// Every host must have reported by then (`status.sessionDeadline`).
    pub session: Timestamp,
    /// The timeout the session deadline came from, for messages.
    pub time_out: Duration,
    /// Whether `time_out` is the configuration's own (else the default).
    pub configured: bool,
}

impl Deadlines {
    /// The deadlines of `session` under `time_out` (the configuration's,
    /// when `configured`, else the default); see [`timeout::session_deadline`].
    pub fn of(
        session: &BackupSession,
        time_out: Duration,
        configured: bool,
        now: Timestamp,
    ) -> Self {
        let started = timeout::started(session, now);
        let session_deadline = timeout::session_deadline(session, time_out, now);
        Self {
            started,
            claim: timeout::after(started, CLAIM_WINDOW).min(session_deadline),
            session: session_deadline,
            time_out,
            configured,
        }
    }

    /// How long hosts had to claim the session, for messages.
    fn claim_window(&self) -> Duration {
        Duration::try_from(self.claim.duration_since(self.started)).unwrap_or_default()
    }
}

/// Where a Running session stands against its deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Not a Running session, or every host has reported: no deadline applies.
    None,
    /// Nothing has passed yet; look again at this instant.
    At(Timestamp),
    /// No host has claimed the session by the claim deadline.
    NoHostClaimed,
    /// The session deadline passed with hosts still unreported.
    SessionDeadline,
}

/// Whether a deadline of `session` has passed at `now`, or when the next one falls.
pub fn due(session: &BackupSession, deadlines: &Deadlines, now: Timestamp) -> Due {
    if session.phase() != BackupSessionPhase::Running
        || session.metadata.deletion_timestamp.is_some()
    {
        return Due::None;
    }
    let status = session.status.clone().unwrap_or_default();
    let total = expected_total(&status.stats, status.total_hosts);
    let reported = status
        .stats
        .iter()
        .filter(|h| h.phase.is_some_and(HostBackupPhase::is_finished))
        .count();
    if reported >= total {
        return Due::None;
    }
    let claimed = !status.stats.is_empty();
    if !claimed && now >= deadlines.claim {
        Due::NoHostClaimed
    } else if now >= deadlines.session {
        Due::SessionDeadline
    } else if claimed {
        Due::At(deadlines.session)
    } else {
        Due::At(deadlines.claim)
    }
}

/// How many hosts the session waits for: `totalHosts`, or (not set yet) at
/// least one and every entry present.
fn expected_total(stats: &[HostBackupStats], total_hosts: Option<i32>) -> usize {
    total_hosts
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
        .max(stats.len())
        .max(1)
}

/// What the controller knows of the session's target when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetView {
    /// `Deployment demo/stash-demo`, or `None` when the invoker is gone.
    pub workload: Option<String>,
    /// The target's kind, for the host names.
    pub kind: String,
    /// `spec.target.alias`: every host's name when set.
    pub alias: Option<String>,
    pub sidecar: SidecarSeen,
}

/// Whether the target's pod template carries the `stash` sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarSeen {
    /// The pod template has the `stash` container.
    InTemplate,
    /// The pod template has no `stash` container: no pod can run the session.
    NotInTemplate,
    /// The workload does not exist.
    WorkloadMissing,
    /// Not looked at (no invoker, an unsupported kind).
    Unknown,
}

/// Whether `workload` (any apps/v1 workload as JSON) has the `stash`
/// container in its pod template.
pub fn sidecar_seen(workload: Option<&Value>) -> SidecarSeen {
    let Some(w) = workload else {
        return SidecarSeen::WorkloadMissing;
    };
    let has = w
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["name"] == SIDECAR_CONTAINER));
    if has {
        SidecarSeen::InTemplate
    } else {
        SidecarSeen::NotInTemplate
    }
}

/// The host names a target's sidecars back up as, when the controller can
/// know them: the alias, `host-0` (Deployment, ReplicaSet), `host-<i>` for
/// each of `total` StatefulSet pods; `None` for a DaemonSet (node names).
pub fn expected_hosts(kind: &str, alias: Option<&str>, total: usize) -> Option<Vec<String>> {
    if let Some(alias) = alias.filter(|a| !a.is_empty()) {
        return Some(vec![alias.to_string()]);
    }
    match kind {
        "Deployment" | "ReplicaSet" => Some(vec!["host-0".into()]),
        "StatefulSet" => Some((0..total).map(|i| format!("host-{i}")).collect()),
        _ => None,
    }
}

/// The write that fails `session` for `due` ([`Due::NoHostClaimed`] or
/// [`Due::SessionDeadline`]); `None` for the other two.
pub fn expire(
    session: &BackupSession,
    due: Due,
    deadlines: &Deadlines,
    target: &TargetView,
    now: Timestamp,
) -> Option<Transition> {
    let status = session.status.clone().unwrap_or_default();
    let total = expected_total(&status.stats, status.total_hosts);
    let (reason, message, host_error) = match due {
        Due::NoHostClaimed => {
            let m = no_claim_message(target, total, deadlines.claim_window());
            (REASON_NO_HOST_CLAIMED, m.clone(), (m.clone(), m))
        }
        Due::SessionDeadline => {
            let at = deadlines.session;
            (
                REASON_DEADLINE,
                deadline_message(&status.stats, target, total, deadlines),
                (
                    format!("deadline exceeded: still backing up at the session deadline {at}"),
                    format!(
                        "deadline exceeded: never claimed the session before its deadline {at}"
                    ),
                ),
            )
        }
        Due::None | Due::At(_) => return None,
    };
    let stats = failed_hosts(&status.stats, target, total, &host_error);
    let mut conditions = status.conditions;
    conditions.retain(|c| c.type_ != CONDITION_DEADLINE_EXCEEDED);
    conditions.push(Condition {
        type_: CONDITION_DEADLINE_EXCEEDED.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.clone()),
        last_transition_time: Some(Time(now)),
        observed_generation: None,
    });
    let seconds = (now.as_second() - deadlines.started.as_second()).max(0);
    let phase = BackupSessionPhase::Failed.as_str();
    Some(Transition {
        phase,
        status: json!({
            "phase": phase,
            "sessionDuration": go_duration(seconds),
            "stats": stats,
            "conditions": conditions,
        }),
        event: Some(TransitionEvent::new(
            EventType::Warning,
            REASON_BACKUPSESSION_FAILED,
            backupsession_failure_message(&message),
        )),
    })
}

/// `stats` with every unreported host the controller can name marked
/// Failed: a claim (`Running`) with `errors.0`, a host with no entry with
/// `errors.1`. Reported hosts are kept as they are.
fn failed_hosts(
    stats: &[HostBackupStats],
    target: &TargetView,
    total: usize,
    errors: &(String, String),
) -> Vec<HostBackupStats> {
    let failed = |hostname: &str, error: &str| HostBackupStats {
        hostname: hostname.to_string(),
        phase: Some(HostBackupPhase::Failed),
        error: Some(error.to_string()),
        ..Default::default()
    };
    let mut out: Vec<HostBackupStats> = stats
        .iter()
        .map(|h| match h.phase {
            Some(p) if p.is_finished() => h.clone(),
            _ => failed(&h.hostname, &errors.0),
        })
        .collect();
    for name in expected_hosts(&target.kind, target.alias.as_deref(), total).unwrap_or_default() {
        if !out.iter().any(|h| h.hostname == name) {
            out.push(failed(&name, &errors.1));
        }
    }
    out
}

/// Why no host claimed the session, in operator terms.
fn no_claim_message(target: &TargetView, total: usize, window: Duration) -> String {
    let within = timeout::short(window);
    let counted = format!("0 of {total} hosts claimed the session within {within}");
    match (&target.workload, target.sidecar) {
        (Some(w), SidecarSeen::NotInTemplate) => format!(
            "no pod of {w} runs the stash sidecar (its pod template has no stash container; see the BackupConfiguration's StashSidecarInjected condition): {counted}"
        ),
        (Some(w), SidecarSeen::InTemplate) => format!(
            "{counted}, though the pod template of {w} has the stash sidecar (are its pods running? see the stash container's logs: it runs one session at a time)"
        ),
        (Some(w), SidecarSeen::WorkloadMissing) => format!("{w} does not exist: {counted}"),
        _ => format!("no host claimed the session: {counted}"),
    }
}

/// Which hosts had not reported when the session deadline passed.
fn deadline_message(
    stats: &[HostBackupStats],
    target: &TargetView,
    total: usize,
    deadlines: &Deadlines,
) -> String {
    let running: Vec<&str> = stats
        .iter()
        .filter(|h| !h.phase.is_some_and(HostBackupPhase::is_finished))
        .map(|h| h.hostname.as_str())
        .collect();
    let reported = stats.len() - running.len();
    let unreported = total.saturating_sub(reported);
    let mut parts = Vec::new();
    if !running.is_empty() {
        parts.push(format!("{} still backing up", running.join(", ")));
    }
    match expected_hosts(&target.kind, target.alias.as_deref(), total) {
        Some(names) => {
            let missing: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| !stats.iter().any(|h| h.hostname == *n))
                .collect();
            if !missing.is_empty() {
                parts.push(format!("{} never claimed it", missing.join(", ")));
            }
        }
        None => {
            let missing = unreported.saturating_sub(running.len());
            if missing > 0 {
                parts.push(format!("{missing} more never claimed it"));
            }
        }
    }
    let limit = if deadlines.configured {
        format!("timeOut {}", timeout::short(deadlines.time_out))
    } else {
        format!(
            "the default timeout {}; set spec.timeOut of the BackupConfiguration to change it",
            timeout::short(deadlines.time_out)
        )
    };
    format!(
        "the session did not finish by its deadline {} ({limit}): {unreported} of {total} hosts had not reported: {}",
        deadlines.session,
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BackupSessionStatus;

    const T0: i64 = 1_564_659_789;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(T0 + secs).unwrap()
    }

    fn session(
        phase: BackupSessionPhase,
        total: i32,
        stats: &[(&str, HostBackupPhase)],
    ) -> BackupSession {
        let mut s = BackupSession::new("s", Default::default());
        s.metadata.creation_timestamp = Some(Time(at(0)));
        s.status = Some(BackupSessionStatus {
            phase: Some(phase),
            total_hosts: Some(total),
            stats: stats
                .iter()
                .map(|(h, p)| HostBackupStats {
                    hostname: h.to_string(),
                    phase: Some(*p),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        s
    }

    fn deadlines(s: &BackupSession, time_out: Option<u64>) -> Deadlines {
        let configured = time_out.is_some();
        let d = time_out.map_or(timeout::DEFAULT_SESSION_TIMEOUT, Duration::from_secs);
        Deadlines::of(s, d, configured, at(0))
    }

    fn deployment(sidecar: SidecarSeen) -> TargetView {
        TargetView {
            workload: Some("Deployment demo/stash-demo".into()),
            kind: "Deployment".into(),
            alias: None,
            sidecar,
        }
    }

    use BackupSessionPhase::{Failed, Pending, Running, Skipped, Succeeded};
    use HostBackupPhase as H;

    const DAY: i64 = 24 * 3600;

    /// Each case: what it is, the session, its `timeOut`, now (seconds after
    /// the session's start), and which deadline is due then.
    type Case<'s> = (&'static str, &'s BackupSession, Option<u64>, i64, Due);

    fn assert_due(cases: &[Case<'_>]) {
        for &(what, s, time_out, now, expect) in cases {
            assert_eq!(due(s, &deadlines(s, time_out), at(now)), expect, "{what}");
        }
    }

    #[test]
    fn an_unclaimed_session_is_due_when_no_host_claims_it() {
        let unclaimed = session(Running, 1, &[]);
        assert_due(&[
            ("unclaimed, early", &unclaimed, None, 60, Due::At(at(600))),
            (
                "unclaimed at 10m",
                &unclaimed,
                None,
                600,
                Due::NoHostClaimed,
            ),
            (
                "unclaimed, past both",
                &unclaimed,
                None,
                DAY + 1,
                Due::NoHostClaimed,
            ),
        ]);
    }

    #[test]
    fn a_claimed_session_is_due_at_its_deadline_until_every_host_reports() {
        let claimed = session(Running, 1, &[("host-0", H::Running)]);
        let partial = session(
            Running,
            3,
            &[("host-0", H::Succeeded), ("host-1", H::Running)],
        );
        let done = session(Running, 1, &[("host-0", H::Succeeded)]);
        assert_due(&[
            (
                "claimed: the claim window is over",
                &claimed,
                None,
                600,
                Due::At(at(DAY)),
            ),
            (
                "claimed, a day on",
                &claimed,
                None,
                DAY,
                Due::SessionDeadline,
            ),
            (
                "a partial session",
                &partial,
                Some(3600),
                4000,
                Due::SessionDeadline,
            ),
            ("every host reported", &done, Some(60), DAY, Due::None),
        ]);
    }

    #[test]
    fn a_time_out_sets_both_deadlines() {
        let unclaimed = session(Running, 1, &[]);
        let claimed = session(Running, 1, &[("host-0", H::Running)]);
        assert_due(&[
            (
                "timeOut shorter than the window",
                &unclaimed,
                Some(120),
                60,
                Due::At(at(120)),
            ),
            (
                "timeOut shorter, passed",
                &unclaimed,
                Some(120),
                120,
                Due::NoHostClaimed,
            ),
            (
                "timeOut 1h honoured",
                &claimed,
                Some(3600),
                3599,
                Due::At(at(3600)),
            ),
            (
                "timeOut 1h passed",
                &claimed,
                Some(3600),
                3600,
                Due::SessionDeadline,
            ),
        ]);
    }

    #[test]
    fn a_session_not_running_is_never_due() {
        for phase in [Pending, Skipped, Succeeded, Failed] {
            let s = session(phase, 1, &[]);
            assert_eq!(
                due(&s, &deadlines(&s, None), at(10 * DAY)),
                Due::None,
                "{phase:?}"
            );
        }
    }

    #[test]
    fn a_written_session_deadline_wins_over_the_configuration() {
        let mut s = session(Running, 1, &[("host-0", H::Running)]);
        s.status.as_mut().unwrap().session_deadline = Some(Time(at(7200)));
        let d = deadlines(&s, Some(60));
        assert_eq!(d.session, at(7200));
        assert_eq!(due(&s, &d, at(3600)), Due::At(at(7200)));
    }

    #[test]
    fn the_no_claim_message_says_why_in_operator_terms() {
        let s = session(Running, 1, &[]);
        let d = deadlines(&s, None);
        for (sidecar, expect) in [
            (
                SidecarSeen::NotInTemplate,
                "no pod of Deployment demo/stash-demo runs the stash sidecar (its pod template has no stash container; see the BackupConfiguration's StashSidecarInjected condition): 0 of 1 hosts claimed the session within 10m",
            ),
            (
                SidecarSeen::InTemplate,
                "0 of 1 hosts claimed the session within 10m, though the pod template of Deployment demo/stash-demo has the stash sidecar (are its pods running? see the stash container's logs: it runs one session at a time)",
            ),
            (
                SidecarSeen::WorkloadMissing,
                "Deployment demo/stash-demo does not exist: 0 of 1 hosts claimed the session within 10m",
            ),
        ] {
            let t = expire(&s, Due::NoHostClaimed, &d, &deployment(sidecar), at(600)).unwrap();
            let status = &t.status;
            assert_eq!(status["phase"], "Failed");
            assert_eq!(status["sessionDuration"], "10m0s");
            assert_eq!(status["conditions"][0]["type"], "DeadlineExceeded");
            assert_eq!(status["conditions"][0]["status"], "True");
            assert_eq!(status["conditions"][0]["reason"], REASON_NO_HOST_CLAIMED);
            assert_eq!(status["conditions"][0]["message"], expect);
            assert_eq!(
                status["stats"],
                json!([{"hostname": "host-0", "phase": "Failed", "error": expect}])
            );
            let event = t.event.unwrap();
            assert_eq!(event.type_, EventType::Warning);
            assert_eq!(event.reason, "BackupSession Failed");
            assert_eq!(
                event.message,
                format!("Backup session failed to complete. Reason: {expect}")
            );
        }
        let unknown = TargetView {
            workload: None,
            kind: String::new(),
            alias: None,
            sidecar: SidecarSeen::Unknown,
        };
        let t = expire(&s, Due::NoHostClaimed, &d, &unknown, at(600)).unwrap();
        assert_eq!(
            t.status["conditions"][0]["message"],
            "no host claimed the session: 0 of 1 hosts claimed the session within 10m"
        );
        assert_eq!(t.status["stats"], json!([]), "no name to mark");
    }

    #[test]
    fn at_the_session_deadline_reported_hosts_keep_their_stats() {
        let mut s = session(
            Running,
            3,
            &[("host-0", H::Succeeded), ("host-1", H::Running)],
        );
        s.status.as_mut().unwrap().stats[0].duration = Some("3s".into());
        let statefulset = TargetView {
            workload: Some("StatefulSet demo/db".into()),
            kind: "StatefulSet".into(),
            alias: None,
            sidecar: SidecarSeen::Unknown,
        };
        let d = deadlines(&s, Some(7200));
        let t = expire(&s, Due::SessionDeadline, &d, &statefulset, at(7200)).unwrap();
        let deadline = at(7200);
        let message = format!(
            "the session did not finish by its deadline {deadline} (timeOut 2h): 2 of 3 hosts had not reported: host-1 still backing up; host-2 never claimed it"
        );
        assert_eq!(t.status["conditions"][0]["reason"], REASON_DEADLINE);
        assert_eq!(t.status["conditions"][0]["message"], message.as_str());
        assert_eq!(
            t.status["stats"],
            json!([
                {"hostname": "host-0", "phase": "Succeeded", "duration": "3s"},
                {"hostname": "host-1", "phase": "Failed",
                 "error": format!("deadline exceeded: still backing up at the session deadline {deadline}")},
                {"hostname": "host-2", "phase": "Failed",
                 "error": format!("deadline exceeded: never claimed the session before its deadline {deadline}")},
            ])
        );
        // A DaemonSet's hosts are node names the controller does not know: counted.
        let daemonset = TargetView {
            kind: "DaemonSet".into(),
            ..statefulset
        };
        let d = deadlines(&s, None);
        let t = expire(&s, Due::SessionDeadline, &d, &daemonset, at(86_400)).unwrap();
        let message = t.status["conditions"][0]["message"].as_str().unwrap();
        assert!(
            message.ends_with("(the default timeout 24h; set spec.timeOut of the BackupConfiguration to change it): 2 of 3 hosts had not reported: host-1 still backing up; 1 more never claimed it"),
            "{message}"
        );
        assert_eq!(t.status["stats"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn an_earlier_condition_is_kept_and_a_stale_deadline_one_replaced() {
        let mut s = session(Running, 1, &[]);
        s.status.as_mut().unwrap().conditions = vec![
            Condition {
                type_: "Other".into(),
                status: "True".into(),
                ..Default::default()
            },
            Condition {
                type_: CONDITION_DEADLINE_EXCEEDED.into(),
                status: "False".into(),
                ..Default::default()
            },
        ];
        let d = deadlines(&s, None);
        let t = expire(
            &s,
            Due::NoHostClaimed,
            &d,
            &deployment(SidecarSeen::Unknown),
            at(600),
        )
        .unwrap();
        let types: Vec<&str> = t.status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Other", "DeadlineExceeded"]);
        assert!(
            expire(
                &s,
                Due::At(at(1)),
                &d,
                &deployment(SidecarSeen::Unknown),
                at(0)
            )
            .is_none()
        );
    }

    #[test]
    fn the_pod_template_tells_whether_a_pod_can_run_the_sidecar() {
        let with = json!({"spec": {"template": {"spec": {"containers": [{"name": "app"}, {"name": "stash"}]}}}});
        let without = json!({"spec": {"template": {"spec": {"containers": [{"name": "app"}]}}}});
        assert_eq!(sidecar_seen(Some(&with)), SidecarSeen::InTemplate);
        assert_eq!(sidecar_seen(Some(&without)), SidecarSeen::NotInTemplate);
        assert_eq!(sidecar_seen(Some(&json!({}))), SidecarSeen::NotInTemplate);
        assert_eq!(sidecar_seen(None), SidecarSeen::WorkloadMissing);
    }

    #[test]
    fn host_names_the_controller_can_know() {
        assert_eq!(
            expected_hosts("Deployment", None, 1),
            Some(vec!["host-0".into()])
        );
        assert_eq!(
            expected_hosts("StatefulSet", None, 2),
            Some(vec!["host-0".into(), "host-1".into()])
        );
        assert_eq!(
            expected_hosts("StatefulSet", Some("db"), 3),
            Some(vec!["db".into()])
        );
        assert_eq!(expected_hosts("DaemonSet", None, 3), None);
    }
}
