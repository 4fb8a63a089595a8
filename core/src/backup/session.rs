//! Which BackupSessions this sidecar acts on, and how: a pure decision over
//! the session as it is now, its invoker and this host's name.
//!
//! The decision is only ever acted on through a write that carries the
//! session's resourceVersion (see the `stash` crate's `backup::controller`): a decision made
//! on a stale copy fails with a conflict and is made again on the latest
//! state, so restic runs at most once per (session, host) whatever the
//! watch delivers.

use crate::api::{
    BackupConfiguration, BackupSession, BackupSessionPhase, HostBackupPhase, timeout,
};

/// What to do with one BackupSession.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do; the reason is for the debug log.
    Ignore(&'static str),
    /// The invoker is paused and the session has not started: no restic
    /// run; the BackupSession controller marks it Skipped and records why.
    Skip,
    /// Nobody has claimed this host: claim it, then back up.
    Backup,
    /// This host's claim (`phase: Running`) is there but no run holds it:
    /// the sidecar that made it ended before reporting (a restart, a lost
    /// Lease). restic may have written a snapshot already, so it is not run
    /// again; the host is reported Failed, and the next session backs up.
    Interrupted,
}

/// The one-line error an interrupted host is reported with.
pub const INTERRUPTED: &str = "the backup was interrupted: the sidecar stopped before it reported (restarted or lost its Lease); restic was not run again for this session, the next session backs up as usual";

/// Why `session` needs no work from any host of invoker `config_name`,
/// whatever the configuration says now; `None` when it might.
pub fn settled(session: &BackupSession, config_name: &str) -> Option<&'static str> {
    let invoker = &session.spec.invoker;
    if invoker.kind != crate::api::INVOKER_KIND_BACKUP_CONFIGURATION || invoker.name != config_name
    {
        return Some("invoked by another object");
    }
    if session.metadata.deletion_timestamp.is_some() {
        return Some("being deleted");
    }
    match session.phase() {
        BackupSessionPhase::Skipped => Some("already skipped"),
        p if p.is_finished() => Some("already finished"),
        _ => None,
    }
}

/// This host's phase in `session.status.stats[]`: `None` when it has no
/// entry, `Some(None)` for an entry without a phase.
pub fn host_phase(session: &BackupSession, host: &str) -> Option<Option<HostBackupPhase>> {
    session
        .status
        .as_ref()?
        .stats
        .iter()
        .find(|h| h.hostname == host)
        .map(|h| h.phase)
}

/// Decides what this host does with `session`, invoked by `config` (the
/// configuration as read now, not when the session was created), at `now`.
/// Called while this process runs no backup, so a claim found here is never
/// its own. A session past its deadline is not started: the BackupSession
/// controller marks it Failed (`DeadlineExceeded`), and a backup begun then
/// would only be stopped at once.
pub fn decide(
    session: &BackupSession,
    config: &BackupConfiguration,
    host: &str,
    now: jiff::Timestamp,
) -> Decision {
    let config_name = config.metadata.name.as_deref().unwrap_or_default();
    if let Some(why) = settled(session, config_name) {
        return Decision::Ignore(why);
    }
    match host_phase(session, host) {
        Some(Some(HostBackupPhase::Running)) => return Decision::Interrupted,
        Some(_) => return Decision::Ignore("this host has already reported"),
        None => {}
    }
    // Pausing stops sessions that have not started; one the BackupSession
    // controller already marked Running is finished (the controller never
    // turns a Running session Skipped, so skipping it here would leave it
    // Running for ever).
    if config.spec.paused && session.phase() != BackupSessionPhase::Running {
        return Decision::Skip;
    }
    if now >= deadline(session, config, now) {
        return Decision::Ignore("the session's deadline has passed");
    }
    Decision::Backup
}

/// When `session` must be finished: its `status.sessionDeadline`, else its
/// creation plus the configuration's `timeOut` (the default when unset), the
/// instant the BackupSession controller writes (see [`timeout`]).
pub fn deadline(
    session: &BackupSession,
    config: &BackupConfiguration,
    now: jiff::Timestamp,
) -> jiff::Timestamp {
    timeout::session_deadline(session, timeout::effective_time_out(Some(config)), now)
}

/// Whether the host that has just written its result into `session` runs
/// `restic check` for the Repository's INTEGRITY column: the session's last
/// host to finish does. `restic check` takes restic's exclusive lock, so it
/// must not meet another host's `backup` of the same session; every result
/// write carries the resourceVersion it was based on, so exactly one host's
/// write sees every other host final. With `totalHosts` not yet set (the
/// BackupSession controller sets it when the session starts Running) every
/// entry present must be final.
pub fn runs_integrity_check(session: &BackupSession) -> bool {
    let Some(status) = session.status.as_ref() else {
        return false;
    };
    let finished = |h: &&crate::api::HostBackupStats| {
        matches!(
            h.phase,
            Some(HostBackupPhase::Succeeded | HostBackupPhase::Failed)
        )
    };
    let done = status.stats.iter().filter(finished).count();
    if done == 0 || done < status.stats.len() {
        return false;
    }
    match status.total_hosts {
        Some(total) => i64::try_from(done).unwrap_or(i64::MAX) >= i64::from(total),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        BackupConfigurationSpec, BackupInvokerRef, BackupSessionSpec, BackupSessionStatus,
        HostBackupStats,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const NOW: jiff::Timestamp = jiff::Timestamp::constant(1_564_660_000, 0);

    fn config(paused: bool) -> BackupConfiguration {
        let mut bc = BackupConfiguration::new(
            "pause-backup",
            BackupConfigurationSpec {
                paused,
                ..Default::default()
            },
        );
        bc.metadata.namespace = Some("demo".into());
        bc
    }

    fn session(phase: Option<BackupSessionPhase>, hosts: &[&str]) -> BackupSession {
        with_hosts(phase, hosts, Some(HostBackupPhase::Succeeded))
    }

    fn with_hosts(
        phase: Option<BackupSessionPhase>,
        hosts: &[&str],
        host_phase: Option<HostBackupPhase>,
    ) -> BackupSession {
        let mut s = BackupSession::new(
            "s1",
            BackupSessionSpec {
                invoker: BackupInvokerRef {
                    api_group: Some("stash.appscode.com".into()),
                    kind: "BackupConfiguration".into(),
                    name: "pause-backup".into(),
                },
            },
        );
        s.status = Some(BackupSessionStatus {
            phase,
            stats: hosts
                .iter()
                .map(|h| HostBackupStats {
                    hostname: h.to_string(),
                    phase: host_phase,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        s
    }

    #[test]
    fn new_sessions_are_backed_up_unless_paused() {
        assert_eq!(
            decide(&session(None, &[]), &config(false), "host-0", NOW),
            Decision::Backup
        );
        assert_eq!(
            decide(
                &session(Some(BackupSessionPhase::Running), &["host-1"]),
                &config(false),
                "host-0",
                NOW
            ),
            Decision::Backup
        );
        assert_eq!(
            decide(&session(None, &[]), &config(true), "host-0", NOW),
            Decision::Skip
        );
    }

    #[test]
    fn a_session_running_before_the_pause_is_finished() {
        assert_eq!(
            decide(
                &session(Some(BackupSessionPhase::Running), &[]),
                &config(true),
                "host-0",
                NOW
            ),
            Decision::Backup
        );
        assert_eq!(
            decide(
                &session(Some(BackupSessionPhase::Pending), &[]),
                &config(true),
                "host-0",
                NOW
            ),
            Decision::Skip
        );
    }

    #[test]
    fn finished_reported_or_foreign_sessions_are_ignored() {
        for phase in [
            BackupSessionPhase::Succeeded,
            BackupSessionPhase::Failed,
            BackupSessionPhase::Skipped,
        ] {
            assert!(matches!(
                decide(&session(Some(phase), &[]), &config(true), "host-0", NOW),
                Decision::Ignore(_)
            ));
        }
        assert!(matches!(
            decide(
                &session(Some(BackupSessionPhase::Running), &["host-0"]),
                &config(false),
                "host-0",
                NOW
            ),
            Decision::Ignore(_)
        ));
        let mut other = session(None, &[]);
        other.spec.invoker.name = "other".into();
        assert!(matches!(
            decide(&other, &config(false), "host-0", NOW),
            Decision::Ignore(_)
        ));
    }

    #[test]
    fn a_claim_found_is_an_interrupted_run_never_a_second_backup() {
        // The captured stale event: Running, this host claimed by a run that
        // is not going on (this process runs one backup at a time).
        let claimed = with_hosts(
            Some(BackupSessionPhase::Running),
            &["host-0"],
            Some(HostBackupPhase::Running),
        );
        assert_eq!(
            decide(&claimed, &config(false), "host-0", NOW),
            Decision::Interrupted
        );
        // Paused or not: the claim was made, so it is reported, not skipped.
        assert_eq!(
            decide(&claimed, &config(true), "host-0", NOW),
            Decision::Interrupted
        );
        // Another host's claim is that host's business.
        assert_eq!(
            decide(&claimed, &config(false), "host-1", NOW),
            Decision::Backup
        );
        // An entry with no phase at all counts as reported.
        let bare = with_hosts(Some(BackupSessionPhase::Running), &["host-0"], None);
        assert!(matches!(
            decide(&bare, &config(false), "host-0", NOW),
            Decision::Ignore(_)
        ));
        for reported in [HostBackupPhase::Succeeded, HostBackupPhase::Failed] {
            let s = with_hosts(
                Some(BackupSessionPhase::Running),
                &["host-0"],
                Some(reported),
            );
            assert!(matches!(
                decide(&s, &config(false), "host-0", NOW),
                Decision::Ignore(_)
            ));
        }
    }

    #[test]
    fn a_session_past_its_deadline_is_not_started() {
        let hours_ago = |h: i64| {
            let mut s = session(Some(BackupSessionPhase::Running), &[]);
            s.metadata.creation_timestamp = Some(Time(NOW - jiff::SignedDuration::from_hours(h)));
            s
        };
        let with_time_out = |t: Option<&str>| {
            let mut c = config(false);
            c.spec.time_out = t.map(String::from);
            c
        };
        let past = Decision::Ignore("the session's deadline has passed");
        for (what, s, c, expect) in [
            (
                "timeOut 1h, 2h old",
                hours_ago(2),
                with_time_out(Some("1h")),
                past.clone(),
            ),
            (
                "timeOut 3h, 2h old",
                hours_ago(2),
                with_time_out(Some("3h")),
                Decision::Backup,
            ),
            (
                "default 24h, 25h old",
                hours_ago(25),
                with_time_out(None),
                past.clone(),
            ),
            (
                "default 24h, 23h old",
                hours_ago(23),
                with_time_out(None),
                Decision::Backup,
            ),
        ] {
            assert_eq!(decide(&s, &c, "host-0", NOW), expect, "{what}");
        }
        // The deadline the controller wrote wins over the configuration's.
        let mut s = hours_ago(2);
        s.status.as_mut().unwrap().session_deadline =
            Some(Time(NOW + jiff::SignedDuration::from_hours(1)));
        assert_eq!(
            decide(&s, &with_time_out(Some("1h")), "host-0", NOW),
            Decision::Backup
        );
        s.status.as_mut().unwrap().session_deadline = Some(Time(NOW));
        assert_eq!(decide(&s, &with_time_out(None), "host-0", NOW), past);
        // A claim left behind is still reported, deadline or not.
        let mut claimed = with_hosts(
            Some(BackupSessionPhase::Running),
            &["host-0"],
            Some(HostBackupPhase::Running),
        );
        claimed.metadata.creation_timestamp =
            Some(Time(NOW - jiff::SignedDuration::from_hours(48)));
        assert_eq!(
            decide(&claimed, &config(false), "host-0", NOW),
            Decision::Interrupted
        );
    }

    #[test]
    fn the_last_host_to_finish_runs_the_integrity_check() {
        let with_total = |hosts: &[(&str, Option<HostBackupPhase>)], total: Option<i32>| {
            let mut s = session(Some(BackupSessionPhase::Running), &[]);
            let status = s.status.as_mut().unwrap();
            status.total_hosts = total;
            status.stats = hosts
                .iter()
                .map(|(h, p)| HostBackupStats {
                    hostname: h.to_string(),
                    phase: *p,
                    ..Default::default()
                })
                .collect();
            s
        };
        let ok = Some(HostBackupPhase::Succeeded);
        let failed = Some(HostBackupPhase::Failed);
        let running = Some(HostBackupPhase::Running);
        // One host (a Deployment): it is the last.
        assert!(runs_integrity_check(&with_total(
            &[("host-0", ok)],
            Some(1)
        )));
        assert!(runs_integrity_check(&with_total(&[("host-0", ok)], None)));
        // A StatefulSet of three: only the write that completes the set.
        assert!(!runs_integrity_check(&with_total(
            &[("host-0", ok)],
            Some(3)
        )));
        assert!(!runs_integrity_check(&with_total(
            &[("host-0", ok), ("host-1", running), ("host-2", ok)],
            Some(3)
        )));
        assert!(runs_integrity_check(&with_total(
            &[("host-0", ok), ("host-1", failed), ("host-2", ok)],
            Some(3)
        )));
        // totalHosts not known yet: every entry present must be final.
        assert!(!runs_integrity_check(&with_total(
            &[("host-0", ok), ("host-1", running)],
            None
        )));
        assert!(!runs_integrity_check(&with_total(&[], Some(1))));
        assert!(!runs_integrity_check(&BackupSession::new(
            "s",
            Default::default()
        )));
    }
}
