//! `trigger NAME [--wait]`: an instant backup, made by the very function the
//! backup CronJob runs ([`crate::trigger::trigger`]): the same pause check,
//! the same `<bc>-<unix seconds>` BackupSession with the same labels and
//! owner, or, while paused, no session and the `Backup Skipped` event (from
//! component `kubectl stash`, so `kubectl describe` tells a person's trigger
//! from the schedule's). A skip exits non-zero: the backup asked for did not
//! happen.
//!
//! `--wait` watches the BackupSession (one object, by field selector) and
//! prints a line as its phase moves and as each host claims and reports,
//! then exits 0 only for `Succeeded`. Lines are computed by pure functions of
//! the previous and current state ([`progress`], [`verdict`]), so a watch
//! that delivers states late or twice prints nothing twice.

use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher;

use crate::api::events::{BACKUPSESSION_SKIPPED_MESSAGE, COMPONENT_PLUGIN};
use crate::api::{
    BackupSession, BackupSessionPhase, HostBackupPhase, HostBackupStats,
    INVOKER_KIND_BACKUP_CONFIGURATION,
};
use crate::recorder::Recorder;
use crate::trigger::{Outcome as TriggerOutcome, TriggerError};

use super::connect::Connected;
use super::errors::{BACKUP_CONFIGURATION, BACKUP_SESSION, Request, describe};
use super::{Io, Outcome, say};

/// `trigger` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct TriggerArgs {
    /// The BackupConfiguration to back up now.
    pub name: String,
    /// Follow the BackupSession until it ends; exit non-zero unless it Succeeded.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (Go duration: 30s, 10m, 1h); 0 waits for ever.
    #[arg(long, default_value = "0", value_parser = crate::duration::parse)]
    pub timeout: Duration,
}

/// Creates the BackupSession (or records the skip), then follows it with `--wait`.
pub async fn trigger(cx: &Connected, args: &TriggerArgs, io: &mut Io<'_>) -> Outcome {
    let recorder = Recorder::new(cx.client.clone(), COMPONENT_PLUGIN);
    let outcome = crate::trigger::trigger(
        cx.client.clone(),
        &recorder,
        &cx.namespace,
        INVOKER_KIND_BACKUP_CONFIGURATION,
        &args.name,
        jiff::Timestamp::now(),
    )
    .await
    .map_err(|e| anyhow::anyhow!(trigger_error(&cx.namespace, &args.name, &e)))?;
    let session = match outcome {
        TriggerOutcome::Created(s) => {
            say(io, format!("backupsession.stash.appscode.com/{s} created"))?;
            s
        }
        TriggerOutcome::AlreadyExists(s) => {
            say(
                io,
                format!(
                    "backupsession.stash.appscode.com/{s} already exists (triggered this second)"
                ),
            )?;
            s
        }
        TriggerOutcome::Skipped => anyhow::bail!(skipped_by_trigger(&cx.namespace, &args.name)),
    };
    if args.wait {
        follow(cx, &session, args.timeout, io).await?;
    }
    Ok(())
}

/// The one-line error of a paused configuration's trigger.
pub fn skipped_by_trigger(namespace: &str, name: &str) -> String {
    format!(
        "backup skipped: Backup Configuration {namespace}/{name} is paused; no BackupSession was created (event \"Backup Skipped\" recorded). Resume it with: kubectl stash resume backup {name} -n {namespace}"
    )
}

/// [`TriggerError`] as one line naming what failed.
pub fn trigger_error(namespace: &str, name: &str, e: &TriggerError) -> String {
    match e {
        TriggerError::NotFound(_) => {
            format!("backupconfiguration {name:?} not found in namespace {namespace:?}")
        }
        TriggerError::Get { source, .. } => describe(
            &Request::new("get", BACKUP_CONFIGURATION, Some(name), namespace),
            source,
        ),
        TriggerError::Create { source, .. } => describe(
            &Request::new("create", BACKUP_SESSION, None, namespace),
            source,
        ),
        TriggerError::Event { source, .. } => format!(
            "backup skipped (Backup Configuration {namespace}/{name} is paused), and {}",
            describe(
                &Request::new("create", super::errors::EVENT, None, namespace),
                source
            )
        ),
        other => other.to_string(),
    }
}

/// Watches BackupSession `name` until it ends, printing its progress.
pub async fn follow(cx: &Connected, name: &str, timeout: Duration, io: &mut Io<'_>) -> Outcome {
    let watching = watch_to_end(cx, name, io);
    if timeout.is_zero() {
        return watching.await;
    }
    match tokio::time::timeout(timeout, watching).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!(
            "gave up waiting for backupsession {name:?} in namespace {:?} after {} (it goes on; watch it with kubectl get backupsession -n {} {name} -w)",
            cx.namespace,
            crate::backup::restic::format_duration(timeout),
            cx.namespace
        ),
    }
}

async fn watch_to_end(cx: &Connected, name: &str, io: &mut Io<'_>) -> Outcome {
    let api: Api<BackupSession> = Api::namespaced(cx.client.clone(), &cx.namespace);
    let mut events = std::pin::pin!(watcher::watch_object(api, name));
    let mut last: Option<BackupSession> = None;
    let mut failures = 0u32;
    while let Some(event) = events.next().await {
        match event {
            Ok(Some(session)) => {
                failures = 0;
                for line in progress(last.as_ref(), &session) {
                    say(io, line)?;
                }
                if let Some(end) = verdict(&session) {
                    return match end {
                        Ok(line) => say(io, line),
                        Err(reason) => Err(anyhow::anyhow!(reason)),
                    };
                }
                last = Some(session);
            }
            Ok(None) => anyhow::bail!(
                "backupsession {name:?} in namespace {:?} was deleted before the watch saw it finish",
                cx.namespace
            ),
            Err(e) => {
                let req = Request::new("watch", BACKUP_SESSION, Some(name), &cx.namespace);
                if let Some(fatal) = fatal_watch_error(&req, &e) {
                    anyhow::bail!(fatal);
                }
                failures += 1;
                // The watcher retries on the next poll; space the retries.
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(25)))).await;
            }
        }
    }
    anyhow::bail!("the watch of backupsession {name:?} ended before the session did")
}

/// A watch error no retry can cure (no permission), as one line.
fn fatal_watch_error(req: &Request<'_>, e: &watcher::Error) -> Option<String> {
    let source = match e {
        watcher::Error::InitialListFailed(s)
        | watcher::Error::WatchStartFailed(s)
        | watcher::Error::WatchFailed(s) => s,
        _ => return None,
    };
    match source {
        kube::Error::Api(s) if s.code == 403 || s.code == 401 => Some(describe(req, source)),
        _ => None,
    }
}

/// The lines a change from `before` to `now` deserves: the phase when it
/// moves past Pending, and each host whose entry appeared or changed phase.
pub fn progress(before: Option<&BackupSession>, now: &BackupSession) -> Vec<String> {
    let mut lines = Vec::new();
    let phase = now.phase();
    let was = before.map(BackupSession::phase);
    if phase == BackupSessionPhase::Running && was != Some(BackupSessionPhase::Running) {
        let hosts = now
            .status
            .as_ref()
            .and_then(|s| s.total_hosts)
            .map(|n| format!(" ({n} host{})", if n == 1 { "" } else { "s" }))
            .unwrap_or_default();
        lines.push(format!("phase Running{hosts}"));
    }
    for host in stats(now) {
        let previous = before
            .and_then(|b| stats(b).iter().find(|h| h.hostname == host.hostname))
            .and_then(|h| h.phase);
        if previous != host.phase {
            lines.extend(host_line(host));
        }
    }
    lines
}

fn stats(s: &BackupSession) -> &[HostBackupStats] {
    s.status
        .as_ref()
        .map(|st| st.stats.as_slice())
        .unwrap_or(&[])
}

/// One host's report, as a person reads it.
pub fn host_line(host: &HostBackupStats) -> Option<String> {
    let took = host
        .duration
        .as_deref()
        .map(|d| format!(" in {d}"))
        .unwrap_or_default();
    let name = &host.hostname;
    match host.phase? {
        HostBackupPhase::Running => Some(format!("{name}: backing up")),
        HostBackupPhase::Succeeded => {
            let snaps: Vec<String> = host
                .snapshots
                .iter()
                .map(|s| {
                    let up = s.uploaded.as_deref().unwrap_or("?");
                    format!("{} {} ({up} uploaded)", short(&s.name), s.path)
                })
                .collect();
            Some(format!(
                "{name}: Succeeded{took}: snapshot {}",
                snaps.join(", ")
            ))
        }
        HostBackupPhase::Failed => Some(format!(
            "{name}: Failed{took}: {}",
            host.error.as_deref().unwrap_or("no error recorded")
        )),
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// How a finished session ends the command: the closing line, or the
/// one-line reason it did not succeed. `None` while it is not finished.
pub fn verdict(s: &BackupSession) -> Option<Result<String, String>> {
    let name = s.metadata.name.as_deref().unwrap_or_default();
    let ns = s.metadata.namespace.as_deref().unwrap_or_default();
    let took = s
        .status
        .as_ref()
        .and_then(|st| st.session_duration.as_deref())
        .map(|d| format!(" in {d}"))
        .unwrap_or_default();
    match s.phase() {
        BackupSessionPhase::Succeeded => Some(Ok(format!(
            "backupsession.stash.appscode.com/{name} Succeeded{took}"
        ))),
        BackupSessionPhase::Failed => {
            let failed: Vec<String> = stats(s)
                .iter()
                .filter(|h| h.phase == Some(HostBackupPhase::Failed))
                .map(|h| {
                    format!(
                        "{}: {}",
                        h.hostname,
                        h.error.as_deref().unwrap_or("no error recorded")
                    )
                })
                .collect();
            let why = if failed.is_empty() {
                "no host reported an error".to_string()
            } else {
                failed.join("; ")
            };
            Some(Err(format!(
                "backupsession {ns}/{name} Failed{took}: {why}"
            )))
        }
        BackupSessionPhase::Skipped => {
            let invoker = &s.spec.invoker.name;
            Some(Err(format!(
                "backupsession {ns}/{name} Skipped: {BACKUPSESSION_SKIPPED_MESSAGE} (resume it with: kubectl stash resume backup {invoker} -n {ns})"
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackupSessionSpec, BackupSessionStatus, SnapshotStats};

    fn session(phase: Option<BackupSessionPhase>, hosts: Vec<HostBackupStats>) -> BackupSession {
        let mut s = BackupSession::new("pause-backup-1", BackupSessionSpec::default());
        s.metadata.namespace = Some("demo".into());
        s.spec.invoker.name = "pause-backup".into();
        s.status = Some(BackupSessionStatus {
            phase,
            total_hosts: Some(1),
            stats: hosts,
            ..Default::default()
        });
        s
    }

    fn host(phase: HostBackupPhase) -> HostBackupStats {
        HostBackupStats {
            hostname: "host-0".into(),
            phase: Some(phase),
            duration: (phase != HostBackupPhase::Running).then(|| "1.5s".into()),
            error: (phase == HostBackupPhase::Failed).then(|| "restic backup failed".into()),
            snapshots: if phase == HostBackupPhase::Succeeded {
                vec![SnapshotStats {
                    name: "0123456789abcdef".into(),
                    path: "/source/data".into(),
                    uploaded: Some("1.2 KiB".into()),
                    ..Default::default()
                }]
            } else {
                vec![]
            },
        }
    }

    #[test]
    fn each_change_is_printed_once() {
        let pending = session(None, vec![]);
        assert!(progress(None, &pending).is_empty());
        let running = session(Some(BackupSessionPhase::Running), vec![]);
        assert_eq!(
            progress(Some(&pending), &running),
            ["phase Running (1 host)"]
        );
        assert!(progress(Some(&running), &running).is_empty());
        let claimed = session(
            Some(BackupSessionPhase::Running),
            vec![host(HostBackupPhase::Running)],
        );
        assert_eq!(progress(Some(&running), &claimed), ["host-0: backing up"]);
        let done = session(
            Some(BackupSessionPhase::Running),
            vec![host(HostBackupPhase::Succeeded)],
        );
        assert_eq!(
            progress(Some(&claimed), &done),
            ["host-0: Succeeded in 1.5s: snapshot 01234567 /source/data (1.2 KiB uploaded)"]
        );
        // A late watch that jumps straight to the end still reports the host.
        assert_eq!(progress(Some(&pending), &done).len(), 2);
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            verdict(&session(Some(BackupSessionPhase::Running), vec![])),
            None
        );
        assert_eq!(
            verdict(&session(Some(BackupSessionPhase::Succeeded), vec![])),
            Some(Ok(
                "backupsession.stash.appscode.com/pause-backup-1 Succeeded".into()
            ))
        );
        assert_eq!(
            verdict(&session(
                Some(BackupSessionPhase::Failed),
                vec![host(HostBackupPhase::Failed)]
            )),
            Some(Err(
                "backupsession demo/pause-backup-1 Failed: host-0: restic backup failed".into()
            ))
        );
        let skipped = verdict(&session(Some(BackupSessionPhase::Skipped), vec![]))
            .unwrap()
            .unwrap_err();
        assert!(
            skipped.contains("Skipped: Backup Configuration is paused"),
            "{skipped}"
        );
    }
}
