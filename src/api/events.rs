//! Event reasons, reporting components and messages, exactly as the user's
//! guide prints them (`seed/pause-backup.md`; strings of Stash v0.9.0-rc.0).

/// Reporting component of the CronJob trigger (`stash create-backupsession`).
pub const COMPONENT_CRONJOB: &str = "Backup Triggering CronJob";
/// Reporting component of the BackupSession controller.
pub const COMPONENT_BACKUPSESSION_CONTROLLER: &str = "BackupSession Controller";
/// Reporting component of the BackupConfiguration controller.
pub const COMPONENT_BACKUPCONFIGURATION_CONTROLLER: &str = "BackupConfiguration Controller";
/// Reporting component of the `run-backup` sidecar.
pub const COMPONENT_SIDECAR: &str = "Backup Sidecar";

/// Reason of the event the CronJob records when it skips a paused configuration.
pub const REASON_BACKUP_SKIPPED: &str = "Backup Skipped";
/// Reason of the event recorded on a BackupSession skipped because its invoker is paused.
pub const REASON_BACKUPSESSION_SKIPPED: &str = "BackupSessionSkipped";

/// Message of the CronJob's skip event for configuration `ns/name`.
pub fn cronjob_skipped_message(namespace: &str, name: &str) -> String {
    format!("Skipping creating BackupSession. Reason: Backup Configuration {namespace}/{name} is paused.")
}

/// Message of the BackupSession controller's skip event.
pub const BACKUPSESSION_SKIPPED_MESSAGE: &str = "Backup Configuration is paused";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cronjob_message_matches_the_guide() {
        assert_eq!(
            cronjob_skipped_message("demo", "pause-backup"),
            "Skipping creating BackupSession. Reason: Backup Configuration demo/pause-backup is paused."
        );
    }
}
