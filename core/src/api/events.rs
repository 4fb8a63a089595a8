//! Event reasons, reporting components and messages, exactly as the user's
//! guide prints them (`docs/guide/pause-backup.md`; strings of Stash v0.9.0-rc.0).

/// Severity of an event (`Type` in `kubectl describe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    /// The word the API stores (`type`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Reporting component of the CronJob trigger (`stash create-backupsession`).
pub const COMPONENT_CRONJOB: &str = "Backup Triggering CronJob";
/// Reporting component of the BackupSession controller.
pub const COMPONENT_BACKUPSESSION_CONTROLLER: &str = "BackupSession Controller";
/// Reporting component of the BackupConfiguration controller.
pub const COMPONENT_BACKUPCONFIGURATION_CONTROLLER: &str = "BackupConfiguration Controller";
/// Reporting component of the `run-backup` sidecar.
pub const COMPONENT_SIDECAR: &str = "Backup Sidecar";
/// Reporting component of `kubectl stash trigger` (its `Backup Skipped`
/// event says a person, not the CronJob, asked while paused).
pub const COMPONENT_PLUGIN: &str = "kubectl stash";

/// Reason of the event the CronJob records when it skips a paused configuration.
pub const REASON_BACKUP_SKIPPED: &str = "Backup Skipped";
/// Reason of the event recorded on a BackupSession skipped because its invoker is paused.
pub const REASON_BACKUPSESSION_SKIPPED: &str = "BackupSessionSkipped";

/// Message of the CronJob's skip event for configuration `ns/name`.
pub fn cronjob_skipped_message(namespace: &str, name: &str) -> String {
    format!(
        "Skipping creating BackupSession. Reason: Backup Configuration {namespace}/{name} is paused."
    )
}

/// Message of the BackupSession controller's skip event.
pub const BACKUPSESSION_SKIPPED_MESSAGE: &str = "Backup Configuration is paused";

/// Reason of the sidecar's event when a host's backup succeeded.
pub const REASON_HOST_BACKUP_SUCCEEDED: &str = "Host Backup Succeeded";
/// Reason of the sidecar's event when a host's backup failed.
pub const REASON_HOST_BACKUP_FAILED: &str = "Host Backup Failed";

/// Message of the sidecar's success event for `host`.
pub fn host_backup_succeeded_message(host: &str) -> String {
    format!("backup succeeded for host {host}")
}

/// Message of the sidecar's failure event for `host`.
pub fn host_backup_failed_message(host: &str, reason: &str) -> String {
    format!("backup failed for host \"{host}\". Reason: {reason}")
}

/// Reason of the Normal event on a BackupSession whose every host succeeded.
pub const REASON_BACKUPSESSION_SUCCEEDED: &str = "BackupSession Succeeded";
/// Message of that event.
pub const BACKUPSESSION_SUCCEEDED_MESSAGE: &str = "Backup session completed successfully";
/// Reason of the Warning event on a BackupSession where some host failed.
pub const REASON_BACKUPSESSION_FAILED: &str = "BackupSession Failed";

/// Message of the failure event, naming the hosts that failed.
pub fn backupsession_failed_message(failed_hosts: &[String]) -> String {
    backupsession_failure_message(&format!(
        "backup failed for host(s) {}",
        failed_hosts.join(", ")
    ))
}

/// Message of the failure event for any `reason` (a missed deadline, …).
pub fn backupsession_failure_message(reason: &str) -> String {
    format!("Backup session failed to complete. Reason: {reason}")
}

/// Reporting component of the RestoreSession controller.
pub const COMPONENT_RESTORESESSION_CONTROLLER: &str = "RestoreSession Controller";
/// Reporting component of the `stash restore` init container.
pub const COMPONENT_RESTORE_INIT: &str = "Restore Init Container";
/// Reason of the Normal event when a RestoreSession starts running.
pub const REASON_RESTORESESSION_RUNNING: &str = "RestoreSession Running";
/// Reason of the Normal event when every host of a RestoreSession restored.
pub const REASON_RESTORESESSION_SUCCEEDED: &str = "RestoreSession Succeeded";
/// Reason of the Warning event when a host of a RestoreSession failed.
pub const REASON_RESTORESESSION_FAILED: &str = "RestoreSession Failed";
/// Reason of the init container's event when its host restored.
pub const REASON_HOST_RESTORE_SUCCEEDED: &str = "Host Restore Succeeded";
/// Reason of the init container's event when its host failed.
pub const REASON_HOST_RESTORE_FAILED: &str = "Host Restore Failed";

/// Message of the Running event.
pub fn restoresession_running_message(total_hosts: i32) -> String {
    format!("Restore session started for {total_hosts} host(s)")
}

/// Message of the Succeeded event.
pub const RESTORESESSION_SUCCEEDED_MESSAGE: &str = "Restore session completed successfully";

/// Message of the Failed event, naming the hosts that failed.
pub fn restoresession_failed_message(failed_hosts: &[String]) -> String {
    format!(
        "Restore session failed to complete. Reason: restore failed for host(s) {}",
        failed_hosts.join(", ")
    )
}

/// Message of the init container's success event for `host`.
pub fn host_restore_succeeded_message(host: &str) -> String {
    format!("restore succeeded for host {host}")
}

/// Message of the init container's failure event for `host`.
pub fn host_restore_failed_message(host: &str, reason: &str) -> String {
    format!("restore failed for host \"{host}\". Reason: {reason}")
}

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
