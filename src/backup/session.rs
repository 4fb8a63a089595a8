//! Which BackupSessions this sidecar acts on, and how: a pure decision over
//! the session, its invoker and this host's name.

use crate::api::{BackupConfiguration, BackupSession, BackupSessionPhase};

/// What to do with one BackupSession.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do; the reason is for the debug log.
    Ignore(&'static str),
    /// The invoker is paused and the session has not started: no restic
    /// run; the BackupSession controller marks it Skipped and records why.
    Skip,
    /// Back up this host.
    Backup,
}

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

/// Decides what this host does with `session`, invoked by `config` (the
/// configuration as read now, not when the session was created).
pub fn decide(session: &BackupSession, config: &BackupConfiguration, host: &str) -> Decision {
    let config_name = config.metadata.name.as_deref().unwrap_or_default();
    if let Some(why) = settled(session, config_name) {
        return Decision::Ignore(why);
    }
    let reported = session
        .status
        .as_ref()
        .is_some_and(|s| s.stats.iter().any(|h| h.hostname == host));
    if reported {
        return Decision::Ignore("this host has already reported");
    }
    // Pausing stops sessions that have not started; one the BackupSession
    // controller already marked Running is finished (the controller never
    // turns a Running session Skipped, so skipping it here would leave it
    // Running for ever).
    if config.spec.paused && session.phase() != BackupSessionPhase::Running {
        return Decision::Skip;
    }
    Decision::Backup
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        BackupConfigurationSpec, BackupInvokerRef, BackupSessionSpec, BackupSessionStatus,
        HostBackupStats,
    };

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
            decide(&session(None, &[]), &config(false), "host-0"),
            Decision::Backup
        );
        assert_eq!(
            decide(
                &session(Some(BackupSessionPhase::Running), &["host-1"]),
                &config(false),
                "host-0"
            ),
            Decision::Backup
        );
        assert_eq!(
            decide(&session(None, &[]), &config(true), "host-0"),
            Decision::Skip
        );
    }

    #[test]
    fn a_session_running_before_the_pause_is_finished() {
        assert_eq!(
            decide(
                &session(Some(BackupSessionPhase::Running), &[]),
                &config(true),
                "host-0"
            ),
            Decision::Backup
        );
        assert_eq!(
            decide(
                &session(Some(BackupSessionPhase::Pending), &[]),
                &config(true),
                "host-0"
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
                decide(&session(Some(phase), &[]), &config(true), "host-0"),
                Decision::Ignore(_)
            ));
        }
        assert!(matches!(
            decide(
                &session(Some(BackupSessionPhase::Running), &["host-0"]),
                &config(false),
                "host-0"
            ),
            Decision::Ignore(_)
        ));
        let mut other = session(None, &[]);
        other.spec.invoker.name = "other".into();
        assert!(matches!(
            decide(&other, &config(false), "host-0"),
            Decision::Ignore(_)
        ));
    }
}
