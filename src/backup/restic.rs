//! Running restic and reading its JSON.
//!
//! Everything restic is asked to do is spelled out here: the argument lists
//! are built by pure functions (so tests can assert them without a binary),
//! and every answer is read from restic's `--json` output, never from its
//! prose. The only prose we use is restic's own error message, which becomes
//! the one-line error a user sees on the BackupSession.
//!
//! Stopping: every command watches the process's [`Stop`]. When it fires,
//! restic gets SIGINT, on which it removes its lock and exits, and
//! [`RESTIC_GRACE`] to do so before SIGKILL; the command then fails with
//! [`ResticError::Interrupted`]. A command asked for after the stop does not
//! start. (restic 0.14 cleans up on SIGINT only, not on SIGTERM.)
//!
//! restic runs with a cleared environment: only the variables in
//! [`ResticEnv`] (repository, password file, backend credentials, `HOME`,
//! `TMPDIR`) reach it, so nothing from the sidecar's own environment leaks
//! into restic or its error messages.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::api::RetentionPolicy;
use crate::runtime::stop::{RESTIC_GRACE, Stop};

/// Environment handed to restic. Values are never printed: `Debug` shows names only.
#[derive(Clone, Default)]
pub struct ResticEnv {
    vars: Vec<(String, OsString)>,
}

impl ResticEnv {
    /// Sets `name` (replacing an earlier value).
    pub fn set(&mut self, name: &str, value: impl Into<OsString>) {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.to_string(), value.into()));
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&OsString> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Names of the variables that are set, in insertion order.
    pub fn names(&self) -> Vec<&str> {
        self.vars.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &OsString)> {
        self.vars.iter().map(|(n, v)| (n.as_str(), v))
    }
}

impl fmt::Debug for ResticEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResticEnv")
            .field("names", &self.names())
            .finish()
    }
}

/// What restic needs to reach one repository.
#[derive(Debug, Clone)]
pub struct Restic {
    /// The restic executable (an absolute path, see [`resolve_binary`]).
    pub binary: PathBuf,
    /// Environment (includes `RESTIC_REPOSITORY`).
    pub env: ResticEnv,
    /// Global flags placed before every subcommand (`--cacert`, `--option`, cache flags).
    pub global_args: Vec<OsString>,
    /// The process's stop signal: a running command is interrupted on it.
    pub stop: Stop,
}

/// Why a restic command failed.
#[derive(Debug, thiserror::Error)]
pub enum ResticError {
    /// The binary could not be started.
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    /// restic ran and exited non-zero; `message` is restic's own stderr on one line.
    #[error("restic {command} failed (exit code {code}): {message}")]
    Failed {
        command: String,
        code: i32,
        message: String,
    },
    /// restic said the repository does not exist (or cannot be opened at all).
    #[error("restic {command} found no repository: {message}")]
    NoRepository { command: String, message: String },
    /// restic succeeded but its JSON was not what we expect.
    #[error("cannot read the output of restic {command}: {reason}")]
    Output { command: String, reason: String },
    /// The process was told to stop (`signal`) while, or before, restic ran
    /// `command`; restic was interrupted (or not started).
    #[error("interrupted: the pod is stopping ({signal}) during restic {command}")]
    Interrupted {
        command: String,
        signal: &'static str,
    },
}

impl ResticError {
    /// Whether restic failed because another process holds a lock that
    /// conflicts with the one it needs (restic's own words, 0.14 to 0.17).
    pub fn is_lock_conflict(&self) -> bool {
        match self {
            ResticError::Failed { message, .. } => is_lock_conflict(message),
            _ => false,
        }
    }
}

/// Whether restic's message says the repository is locked by someone else:
/// `unable to create lock in backend: repository is already locked
/// [exclusively] by PID … on … by … (UID …, GID …)`.
pub fn is_lock_conflict(message: &str) -> bool {
    message.contains("repository is already locked")
}

/// restic ≥ 0.17 exits with this code when the repository does not exist.
const EXIT_NO_REPOSITORY: i32 = 10;
/// restic < 0.17 (Debian bookworm ships 0.14) says this instead.
const NO_REPOSITORY_HINT: &str = "Is there a repository at the following location?";

/// Finds `name` on `PATH` (or checks it, if it is a path). restic runs with a
/// cleared environment, so it must be located before that.
pub fn resolve_binary(name: &Path, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// restic's stderr as one line: blank lines dropped, the rest joined by spaces.
pub fn one_line(stderr: &str) -> String {
    let joined = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if joined.is_empty() {
        "restic printed no error message".to_string()
    } else {
        joined
    }
}

/// Classifies a finished restic command.
pub fn classify(command: &str, code: Option<i32>, stderr: &str) -> ResticError {
    let message = one_line(stderr);
    let code = code.unwrap_or(-1);
    if code == EXIT_NO_REPOSITORY || stderr.contains(NO_REPOSITORY_HINT) {
        ResticError::NoRepository {
            command: command.to_string(),
            message,
        }
    } else {
        ResticError::Failed {
            command: command.to_string(),
            code,
            message,
        }
    }
}

/// What `restic check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    /// `no errors were found`.
    Intact,
    /// The repository contains errors; restic's report on one line.
    Damaged(String),
}

/// restic's last line when `check` found errors (restic ≥ 0.9).
const CHECK_FOUND_ERRORS: &str = "Fatal: repository contains errors";

/// `restic check`'s result: exit 0 is intact; a non-zero exit whose report
/// ends in `CHECK_FOUND_ERRORS` is damaged; any other failure (a lock held
/// by someone else, an unreachable backend, a wrong password) says nothing
/// about the data and stays an error.
pub fn integrity(result: Result<String, ResticError>) -> Result<Integrity, ResticError> {
    match result {
        Ok(_) => Ok(Integrity::Intact),
        Err(ResticError::Failed { message, .. }) if message.contains(CHECK_FOUND_ERRORS) => {
            let report = message.replace(CHECK_FOUND_ERRORS, "");
            Ok(Integrity::Damaged(report.trim().to_string()))
        }
        Err(e) => Err(e),
    }
}

/// Arguments of `restic backup` for one path.
pub fn backup_args(path: &str, host: &str, excludes: &[String], with_cache: bool) -> Vec<String> {
    let mut args = vec![
        "backup".to_string(),
        "--json".to_string(),
        "--quiet".to_string(),
        "--host".to_string(),
        host.to_string(),
    ];
    for pattern in excludes {
        args.push("--exclude".to_string());
        args.push(pattern.clone());
    }
    if with_cache {
        args.push("--cleanup-cache".to_string());
    }
    args.push("--".to_string());
    args.push(path.to_string());
    args
}

/// Arguments of `restic forget` for a policy, or `None` when it has no keep rule
/// (restic would refuse to forget everything).
pub fn forget_args(policy: &RetentionPolicy) -> Option<Vec<String>> {
    if !policy.has_keep_rule() {
        return None;
    }
    let mut args = vec![
        "forget".to_string(),
        "--json".to_string(),
        "--quiet".to_string(),
    ];
    for (flag, n) in policy.keep_flags() {
        args.push(flag.to_string());
        args.push(n.to_string());
    }
    for tag in &policy.keep_tags {
        args.push("--keep-tag".to_string());
        args.push(tag.clone());
    }
    if policy.prune {
        args.push("--prune".to_string());
    }
    if policy.dry_run {
        args.push("--dry-run".to_string());
    }
    Some(args)
}

/// The `summary` message of `restic backup --json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct BackupSummary {
    pub snapshot_id: String,
    #[serde(default)]
    pub files_new: u64,
    #[serde(default)]
    pub files_changed: u64,
    #[serde(default)]
    pub files_unmodified: u64,
    #[serde(default)]
    pub total_files_processed: u64,
    #[serde(default)]
    pub total_bytes_processed: u64,
    #[serde(default)]
    pub data_added: u64,
    #[serde(default)]
    pub total_duration: f64,
}

/// One group of `restic forget --json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ForgetGroup {
    #[serde(default)]
    pub keep: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub remove: Option<Vec<serde_json::Value>>,
}

/// What `forget` did, summed over its groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForgetOutcome {
    pub kept: u64,
    pub removed: u64,
}

/// `restic stats --json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RepoStats {
    #[serde(default)]
    pub total_size: u64,
    #[serde(default)]
    pub snapshots_count: u64,
}

/// One entry of `restic snapshots --json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    #[serde(default)]
    pub time: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub paths: Vec<String>,
}

/// A lock file, as `restic cat lock <id>` prints it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LockInfo {
    #[serde(default)]
    pub time: String,
    #[serde(default)]
    pub exclusive: bool,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub pid: i64,
}

/// Reads `restic list locks` output: one hex id per line.
pub fn parse_ids(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect()
}

/// Reads the `summary` line of `restic backup --json` output.
pub fn parse_backup(stdout: &str) -> Result<BackupSummary, String> {
    #[derive(Deserialize)]
    struct Tagged {
        message_type: String,
    }
    for line in stdout.lines().rev() {
        let line = line.trim();
        if !line.starts_with('{') {
            continue;
        }
        let Ok(tag) = serde_json::from_str::<Tagged>(line) else {
            continue;
        };
        if tag.message_type == "summary" {
            return serde_json::from_str(line).map_err(|e| format!("bad summary line: {e}"));
        }
    }
    Err("no summary message in restic's output".to_string())
}

/// A file or directory `restic backup` reported it could not read: one of
/// its `{"message_type":"error",…}` lines (printed on stderr, so found in
/// the failure's one-line message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// The path restic names.
    pub item: String,
    /// The phase: `scan`, `archival`.
    pub during: String,
    /// restic's words, when it gave any: restic 0.14 serializes the Go
    /// error as `{}`, so this is `None` there.
    pub message: Option<String>,
}

/// The items of every JSON error line in a `restic backup --json`
/// failure's message, each path once (restic 0.14 reports an unreadable
/// directory twice, `during` scan and archival: the first is kept).
pub fn item_errors(message: &str) -> Vec<ItemError> {
    #[derive(Deserialize)]
    struct Line {
        message_type: String,
        #[serde(default)]
        error: serde_json::Value,
        #[serde(default)]
        during: String,
        #[serde(default)]
        item: String,
    }
    let mut out: Vec<ItemError> = Vec::new();
    let mut rest = message;
    while let Some(start) = rest.find('{') {
        let mut stream =
            serde_json::Deserializer::from_str(&rest[start..]).into_iter::<serde_json::Value>();
        let (value, used) = match stream.next() {
            Some(Ok(value)) => (value, stream.byte_offset()),
            _ => (serde_json::Value::Null, 1),
        };
        rest = &rest[start + used.max(1)..];
        let Ok(line) = serde_json::from_value::<Line>(value) else {
            continue;
        };
        if line.message_type != "error" || line.item.is_empty() {
            continue;
        }
        if let Some(known) = out.iter_mut().find(|e| e.item == line.item) {
            // restic scans and archives concurrently, so an unreadable item's
            // `scan` and `archival` errors come in either order: name the
            // scan, which happens first, so the line does not depend on timing.
            if line.during == "scan" {
                known.during = line.during;
            }
            if known.message.is_none() {
                known.message = error_words(&line.error);
            }
            continue;
        }
        out.push(ItemError {
            message: error_words(&line.error),
            item: line.item,
            during: line.during,
        });
    }
    out
}

/// restic's error text in a JSON error line: a string, or an object's
/// `message` (newer restic); `None` for restic 0.14's `{}`.
fn error_words(error: &serde_json::Value) -> Option<String> {
    let words = match error {
        serde_json::Value::String(s) => s.as_str(),
        serde_json::Value::Object(o) => o.get("message")?.as_str()?,
        _ => return None,
    };
    (!words.trim().is_empty()).then(|| words.trim().to_string())
}

/// Reads the first JSON value of a command's output (restic < 0.16 may print
/// prose after the JSON of `forget --prune`).
fn first_json<T: serde::de::DeserializeOwned>(stdout: &str) -> Result<T, String> {
    let text = stdout.trim_start();
    let start = if text.starts_with("null") {
        0
    } else {
        text.find(['[', '{'])
            .ok_or_else(|| "no JSON in restic's output".to_string())?
    };
    serde_json::Deserializer::from_str(&text[start..])
        .into_iter::<T>()
        .next()
        .ok_or_else(|| "no JSON in restic's output".to_string())?
        .map_err(|e| e.to_string())
}

/// Reads `restic forget --json` output.
pub fn parse_forget(stdout: &str) -> Result<ForgetOutcome, String> {
    let groups: Option<Vec<ForgetGroup>> = first_json(stdout)?;
    let mut out = ForgetOutcome::default();
    for g in groups.unwrap_or_default() {
        out.kept += g.keep.map_or(0, |k| k.len() as u64);
        out.removed += g.remove.map_or(0, |r| r.len() as u64);
    }
    Ok(out)
}

/// Reads `restic stats --json` output.
pub fn parse_stats(stdout: &str) -> Result<RepoStats, String> {
    first_json(stdout)
}

/// Reads `restic snapshots --json` output.
pub fn parse_snapshots(stdout: &str) -> Result<Vec<SnapshotInfo>, String> {
    let list: Option<Vec<SnapshotInfo>> = first_json(stdout)?;
    Ok(list.unwrap_or_default())
}

/// All of a child's pipe (empty if there is none or it fails).
async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        let _ = p.read_to_end(&mut buf).await;
    }
    buf
}

/// Stops restic the way it cleans up: SIGINT (restic removes its lock and
/// exits), [`RESTIC_GRACE`] to do so, then SIGKILL.
async fn interrupt(child: &mut Child, command: &str) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet
        // (`child.wait()` has not returned), so it cannot name another process.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
    }
    match tokio::time::timeout(RESTIC_GRACE, child.wait()).await {
        Ok(status) => {
            tracing::info!(command, status = ?status.ok(), "restic interrupted; it removed its lock");
        }
        Err(_) => {
            tracing::warn!(
                command,
                grace = ?RESTIC_GRACE,
                "restic did not exit after SIGINT; killed (its lock may stay behind)"
            );
            let _ = child.kill().await;
        }
    }
}

/// Bytes the way restic and Stash print them: `512 B`, `1.5 KiB`, `12.346 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {}", UNITS[unit])
}

/// A duration in Go's style (`1m2.5s`, `350ms`), as Stash writes durations.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = (ms / 60_000) % 60;
    let secs = (ms % 60_000) as f64 / 1000.0;
    let secs = format!("{secs:.3}");
    let secs = secs.trim_end_matches('0').trim_end_matches('.');
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{secs}s"));
    out
}

impl Restic {
    /// Runs `restic <global args> <args>` and returns its stdout. On the
    /// process's stop, restic is interrupted (see the module's doc).
    pub async fn run(&self, args: &[String]) -> Result<String, ResticError> {
        let name = args.first().cloned().unwrap_or_default();
        if let Some(signal) = self.stop.reason() {
            return Err(ResticError::Interrupted {
                command: name,
                signal,
            });
        }
        let mut cmd = Command::new(&self.binary);
        cmd.env_clear()
            .envs(self.env.iter())
            .args(&self.global_args)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Only the last resort, if this future is dropped mid-run.
            .kill_on_drop(true);
        tracing::debug!(command = %name, args = ?args, "running restic");
        let mut child = cmd.spawn().map_err(|source| ResticError::Spawn {
            binary: self.binary.display().to_string(),
            source,
        })?;
        let stdout = tokio::spawn(read_all(child.stdout.take()));
        let stderr = tokio::spawn(read_all(child.stderr.take()));
        let status = tokio::select! {
            status = child.wait() => status,
            signal = self.stop.stopped() => {
                interrupt(&mut child, &name).await;
                return Err(ResticError::Interrupted { command: name, signal });
            }
        };
        let status = status.map_err(|source| ResticError::Spawn {
            binary: self.binary.display().to_string(),
            source,
        })?;
        let stdout = String::from_utf8_lossy(&stdout.await.unwrap_or_default()).into_owned();
        let stderr = stderr.await.unwrap_or_default();
        if status.success() {
            Ok(stdout)
        } else {
            Err(classify(
                &name,
                status.code(),
                &String::from_utf8_lossy(&stderr),
            ))
        }
    }

    fn output_error(command: &str, reason: String) -> ResticError {
        ResticError::Output {
            command: command.to_string(),
            reason,
        }
    }

    /// `restic snapshots --json --no-lock`: the snapshots, or `NoRepository`.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotInfo>, ResticError> {
        let args = ["snapshots", "--json", "--no-lock"].map(String::from);
        let out = self.run(&args).await?;
        parse_snapshots(&out).map_err(|e| Self::output_error("snapshots", e))
    }

    /// `restic init`.
    pub async fn init(&self) -> Result<(), ResticError> {
        self.run(&["init".to_string()]).await.map(drop)
    }

    /// `restic unlock`: removes locks restic considers stale (their process is
    /// gone on this host, or they are older than 30 minutes).
    pub async fn unlock(&self) -> Result<(), ResticError> {
        self.run(&["unlock".to_string()]).await.map(drop)
    }

    /// The ids of the lock files in the repository.
    pub async fn list_locks(&self) -> Result<Vec<String>, ResticError> {
        let args = ["list", "locks", "--no-lock"].map(String::from);
        Ok(parse_ids(&self.run(&args).await?))
    }

    /// One lock file's content.
    pub async fn lock_info(&self, id: &str) -> Result<LockInfo, ResticError> {
        let args = ["cat", "lock", id, "--no-lock"].map(String::from);
        let out = self.run(&args).await?;
        first_json(&out).map_err(|e| Self::output_error("cat lock", e))
    }

    /// `restic unlock --remove-all`: removes every lock, stale or not.
    pub async fn remove_all_locks(&self) -> Result<(), ResticError> {
        let args = ["unlock", "--remove-all"].map(String::from);
        self.run(&args).await.map(drop)
    }

    /// `restic backup` of one path.
    pub async fn backup(
        &self,
        path: &str,
        host: &str,
        excludes: &[String],
        with_cache: bool,
    ) -> Result<BackupSummary, ResticError> {
        let out = self
            .run(&backup_args(path, host, excludes, with_cache))
            .await?;
        parse_backup(&out).map_err(|e| Self::output_error("backup", e))
    }

    /// `restic forget` with the policy's keep rules; `None` when it has none.
    pub async fn forget(
        &self,
        policy: &RetentionPolicy,
    ) -> Result<Option<ForgetOutcome>, ResticError> {
        let Some(args) = forget_args(policy) else {
            return Ok(None);
        };
        let out = self.run(&args).await?;
        parse_forget(&out)
            .map(Some)
            .map_err(|e| Self::output_error("forget", e))
    }

    /// `restic stats --mode raw-data`: the repository's stored size and snapshot count.
    /// `restic check` (structure only: indexes, packs' headers, trees; no
    /// data read). Takes restic's exclusive lock.
    pub async fn check(&self) -> Result<Integrity, ResticError> {
        integrity(self.run(&["check".to_string()]).await)
    }

    pub async fn stats(&self) -> Result<RepoStats, ResticError> {
        let args = ["stats", "--json", "--quiet", "--mode", "raw-data"].map(String::from);
        let out = self.run(&args).await?;
        parse_stats(&out).map_err(|e| Self::output_error("stats", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_tells_damage_from_a_failure_to_check() {
        assert_eq!(
            integrity(Ok("no errors were found\n".into())).unwrap(),
            Integrity::Intact
        );
        // restic 0.14's report for a truncated pack file.
        let damaged = classify(
            "check",
            Some(1),
            "pack 16fcf619: unexpected file size: got 8, expected 121\nFatal: repository contains errors\n",
        );
        assert_eq!(
            integrity(Err(damaged)).unwrap(),
            Integrity::Damaged("pack 16fcf619: unexpected file size: got 8, expected 121".into())
        );
        let locked = classify(
            "check",
            Some(1),
            "unable to create lock in backend: repository is already locked exclusively by PID 1 on vm\n",
        );
        assert!(matches!(
            integrity(Err(locked)),
            Err(ResticError::Failed { .. })
        ));
    }

    #[test]
    fn backup_summary_is_read_from_the_last_summary_line() {
        let out = r#"{"message_type":"status","percent_done":0,"total_files":1,"total_bytes":6}
{"message_type":"summary","files_new":2,"files_changed":0,"files_unmodified":0,"dirs_new":3,"dirs_changed":0,"dirs_unmodified":0,"data_blobs":2,"tree_blobs":4,"data_added":1759,"total_files_processed":2,"total_bytes_processed":12,"total_duration":0.211896857,"snapshot_id":"05133641"}"#;
        let s = parse_backup(out).unwrap();
        assert_eq!(s.snapshot_id, "05133641");
        assert_eq!(s.files_new, 2);
        assert_eq!(s.data_added, 1759);
        assert_eq!(s.total_bytes_processed, 12);
        assert!(parse_backup("{\"message_type\":\"status\"}").is_err());
        assert!(parse_backup("").is_err());
    }

    #[test]
    fn forget_counts_keep_and_remove_and_ignores_trailing_prose() {
        let out = r#"[{"tags":null,"host":"host-0","paths":["/d"],"keep":[{"id":"a"}],"remove":[{"id":"b"},{"id":"c"}],"reasons":[]},{"keep":[{"id":"d"}],"remove":null}]
loading indexes...
done
"#;
        assert_eq!(
            parse_forget(out).unwrap(),
            ForgetOutcome {
                kept: 2,
                removed: 2
            }
        );
        assert_eq!(parse_forget("null").unwrap(), ForgetOutcome::default());
    }

    #[test]
    fn stats_and_snapshots_parse() {
        let s = parse_stats(
            r#"{"total_size":1143,"total_file_count":0,"total_blob_count":6,"snapshots_count":1}"#,
        )
        .unwrap();
        assert_eq!((s.total_size, s.snapshots_count), (1143, 1));
        assert!(parse_snapshots("[]").unwrap().is_empty());
        let list =
            parse_snapshots(r#"[{"time":"t","paths":["/d"],"hostname":"host-0","id":"abc"}]"#)
                .unwrap();
        assert_eq!(list[0].id, "abc");
        assert!(parse_stats("Fatal").is_err());
    }

    #[test]
    fn forget_passes_only_non_zero_keeps() {
        let policy = RetentionPolicy {
            name: "keep-last-5".into(),
            keep_last: Some(5),
            keep_daily: Some(0),
            prune: true,
            ..Default::default()
        };
        assert_eq!(
            forget_args(&policy).unwrap(),
            ["forget", "--json", "--quiet", "--keep-last", "5", "--prune"]
        );
        let none = RetentionPolicy {
            keep_last: Some(0),
            prune: true,
            ..Default::default()
        };
        assert_eq!(forget_args(&none), None);
    }

    #[test]
    fn backup_args_carry_host_and_excludes_and_end_the_flags() {
        assert_eq!(
            backup_args("/source/data", "host-0", &["*.tmp".into()], true),
            [
                "backup",
                "--json",
                "--quiet",
                "--host",
                "host-0",
                "--exclude",
                "*.tmp",
                "--cleanup-cache",
                "--",
                "/source/data"
            ]
        );
    }

    #[test]
    fn errors_are_one_line_and_a_missing_repository_is_recognised() {
        let e = classify(
            "snapshots",
            Some(1),
            "Fatal: unable to open config file: stat /r/config: no such file or directory\nIs there a repository at the following location?\n/r\n",
        );
        assert!(matches!(e, ResticError::NoRepository { .. }));
        assert!(!e.to_string().contains('\n'));
        let e = classify(
            "snapshots",
            Some(1),
            "Fatal: wrong password or no key found\n",
        );
        assert_eq!(
            e.to_string(),
            "restic snapshots failed (exit code 1): Fatal: wrong password or no key found"
        );
        assert!(matches!(
            classify("snapshots", Some(10), ""),
            ResticError::NoRepository { .. }
        ));
    }

    #[test]
    fn lock_ids_and_lock_files_parse() {
        assert_eq!(
            parse_ids("0ce2edeb97e6\n\nabc123\nnot an id\n"),
            ["0ce2edeb97e6", "abc123"]
        );
        let l: LockInfo = first_json(
            r#"{"time":"2026-11-28T05:24:45Z","exclusive":false,"hostname":"stash-demo-old-pod","username":"root","pid":7791}"#,
        )
        .unwrap();
        assert_eq!(
            (l.hostname.as_str(), l.pid, l.exclusive),
            ("stash-demo-old-pod", 7791, false)
        );
    }

    #[test]
    fn sizes_and_durations_read_like_stash() {
        assert_eq!(format_bytes(12), "12 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(200 * 1024 * 1024), "200 MiB");
        assert_eq!(format_duration(Duration::from_millis(350)), "350ms");
        assert_eq!(format_duration(Duration::from_millis(62_500)), "1m2.5s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn item_errors_are_read_from_restic_0_14s_lines() {
        let stderr = "unable to open cache: mkdir /root/.cache: permission denied\n\
            {\"message_type\":\"error\",\"error\":{},\"during\":\"scan\",\"item\":\"/source/data/pgdata\"}\n\
            {\"message_type\":\"error\",\"error\":{},\"during\":\"archival\",\"item\":\"/source/data/pgdata\"}\n\
            {\"message_type\":\"error\",\"error\":{\"message\":\"open /source/data/x: permission denied\"},\"during\":\"archival\",\"item\":\"/source/data/x\"}\n\
            Warning: at least one source file could not be read\n";
        let message = one_line(stderr);
        let items = item_errors(&message);
        assert_eq!(
            items,
            [
                ItemError {
                    item: "/source/data/pgdata".into(),
                    during: "scan".into(),
                    message: None,
                },
                ItemError {
                    item: "/source/data/x".into(),
                    during: "archival".into(),
                    message: Some("open /source/data/x: permission denied".into()),
                },
            ]
        );
        // restic scans and archives concurrently: the archival error may
        // come first; the item is still named as met during the scan.
        let reversed = "{\"message_type\":\"error\",\"error\":{},\"during\":\"archival\",\"item\":\"/d\"} \
            {\"message_type\":\"error\",\"error\":{},\"during\":\"scan\",\"item\":\"/d\"}";
        assert_eq!(
            item_errors(reversed),
            [ItemError {
                item: "/d".into(),
                during: "scan".into(),
                message: None,
            }]
        );
        assert!(item_errors("Fatal: wrong password {").is_empty());
        assert!(item_errors("{\"message_type\":\"status\"} {}").is_empty());
    }

    #[test]
    fn env_debug_shows_names_never_values() {
        let mut env = ResticEnv::default();
        env.set("AWS_SECRET_ACCESS_KEY", "s3cr3t");
        let shown = format!("{env:?}");
        assert!(shown.contains("AWS_SECRET_ACCESS_KEY"));
        assert!(!shown.contains("s3cr3t"));
    }
}
