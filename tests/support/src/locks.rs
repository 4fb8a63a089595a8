//! Holding restic at a chosen moment, for the tests of stopping restic and
//! of lock waits, with no timing assumption.
//!
//! restic takes its lock and then reads the repository's snapshot files
//! (`backup` looking for its parent, `forget`, `check`, `restore latest`).
//! [`Blocked`] replaces one snapshot file of a local repository with a FIFO,
//! so the next restic command that reads it blocks there, holding its lock,
//! until it is signaled; dropping it puts the file back. [`hold_lock`] keeps
//! such a restic running on purpose: a live holder, under any host name.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a test waits for restic to take its lock on a loaded machine.
pub const LOCK_WAIT: Duration = Duration::from_secs(90);

/// The lock files of a local repository.
pub fn lock_files(repo: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(repo.join("locks"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Waits (polling, at most [`LOCK_WAIT`]) until the repository holds a
/// lock: a complete lock file, not the temporary file restic's local backend
/// writes first and then renames.
pub async fn until_locked(repo: &Path) {
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    let complete = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.contains("-tmp-"))
    };
    while !lock_files(repo).iter().any(complete) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "restic never took its lock in {}",
            repo.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One snapshot file of a repository replaced by a FIFO (see the module).
pub struct Blocked {
    file: PathBuf,
    saved: PathBuf,
}

impl Blocked {
    /// Blocks reads of the repository's first snapshot file.
    pub fn snapshots(repo: &Path) -> Blocked {
        let file = std::fs::read_dir(repo.join("snapshots"))
            .expect("the repository has snapshots")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .min()
            .expect("one snapshot at least");
        let saved = repo.join("stash-test-saved-snapshot");
        std::fs::rename(&file, &saved).expect("move the snapshot aside");
        let status = Command::new("mkfifo").arg(&file).status().expect("mkfifo");
        assert!(status.success(), "mkfifo {}", file.display());
        Blocked { file, saved }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::rename(&self.saved, &self.file);
    }
}

/// A restic process holding a lock, until it is dropped (SIGKILL) or stopped.
pub struct HeldLock {
    pub child: Child,
    _blocked: Option<Blocked>,
}

impl HeldLock {
    /// Kills restic outright, as a node's death would: its lock stays.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes restic's standard input: a `backup --stdin` finishes and removes its lock.
    pub fn finish(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a restic that takes a lock on `repo` and keeps it: exclusive (a
/// `check` blocked on a snapshot file, see [`Blocked`]) or not (a `backup
/// --stdin` waiting for input); with `hostname`, in a UTS namespace of that
/// host name, as a pod of that name would (`None` when `unshare --uts` is
/// not available here). Returns once the lock is there.
pub async fn hold_lock(
    restic: &Path,
    repo: &Path,
    password: &str,
    hostname: Option<&str>,
    exclusive: bool,
) -> Option<HeldLock> {
    let command = if exclusive {
        "exec \"$1\" --no-cache check"
    } else {
        "exec \"$1\" --no-cache backup --stdin --stdin-filename x"
    };
    let mut cmd = match hostname {
        Some(host) => {
            let can = Command::new("unshare")
                .args(["--uts", "true"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !can {
                eprintln!("skipping: `unshare --uts` is not available (needs root)");
                return None;
            }
            let mut c = Command::new("unshare");
            c.args(["--uts", "sh", "-c"])
                .arg(format!("hostname \"$0\" && {command}"))
                .arg(host);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(command).arg("sh");
            c
        }
    };
    let blocked = exclusive.then(|| Blocked::snapshots(repo));
    let child = cmd
        .arg(restic)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", password)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start restic");
    let held = HeldLock {
        child,
        _blocked: blocked,
    };
    until_locked(repo).await;
    Some(held)
}

/// A stand-in for restic, given as `--restic-binary`: it runs the real
/// restic, but the first time it is asked for `subcommand` it first makes
/// the repository's first snapshot file a FIFO (see [`Blocked`]), so that
/// this command takes its lock and then blocks until it is signaled.
pub struct BlockingRestic {
    /// The script to run instead of restic.
    pub path: PathBuf,
    marker: PathBuf,
    repo: PathBuf,
    saved: PathBuf,
    /// Our end of the FIFO, once restic is reading it (kept open, empty, so
    /// that restic stays blocked in its read).
    writer: std::sync::Mutex<Option<std::fs::File>>,
}

impl BlockingRestic {
    /// A script in `dir` that blocks `subcommand` of `restic` on `repo`.
    pub fn new(dir: &Path, restic: &Path, repo: &Path, subcommand: &str) -> BlockingRestic {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).expect("script dir");
        let path = dir.join(format!("restic-blocking-{subcommand}"));
        let marker = dir.join(format!("blocked-{subcommand}"));
        let saved = dir.join(format!("saved-snapshot-{subcommand}"));
        let script = format!(
            r#"#!/bin/sh
for a in "$@"; do
  if [ "$a" = '{subcommand}' ] && [ ! -e '{marker}' ]; then
    f=$(ls '{snapshots}' | sort | head -n 1)
    mv '{snapshots}'/"$f" '{saved}' && mkfifo '{snapshots}'/"$f" && echo "$f" > '{marker}'
    break
  fi
done
exec '{restic}' "$@"
"#,
            snapshots = repo.join("snapshots").display(),
            marker = marker.display(),
            saved = saved.display(),
            restic = restic.display(),
        );
        std::fs::write(&path, script).expect("write the script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        BlockingRestic {
            path,
            marker,
            repo: repo.to_path_buf(),
            saved,
            writer: std::sync::Mutex::new(None),
        }
    }

    /// Whether the blocking command has started.
    pub fn started(&self) -> bool {
        self.marker.exists()
    }

    /// The FIFO, once the blocking command has made it.
    fn fifo(&self) -> Option<PathBuf> {
        let name = std::fs::read_to_string(&self.marker).ok()?;
        Some(self.repo.join("snapshots").join(name.trim()))
    }

    /// Waits until the blocking command is reading the FIFO: it has taken
    /// its lock (restic locks before it reads any snapshot) and is blocked.
    /// Opening the FIFO for writing without blocking succeeds only once a
    /// reader has it open; our end then stays open (and empty).
    pub async fn until_blocked(&self) {
        use std::os::unix::fs::OpenOptionsExt;
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            if let Some(fifo) = self.fifo() {
                let opened = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc_o_nonblock())
                    .open(&fifo);
                if let Ok(file) = opened {
                    *self.writer.lock().unwrap() = Some(file);
                    assert!(
                        !lock_files(&self.repo).is_empty(),
                        "restic reads snapshots under its lock"
                    );
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the blocking restic command never read the snapshot"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Puts the snapshot file back (the FIFO goes).
    pub fn unblock(&self) {
        drop(self.writer.lock().unwrap().take());
        if !self.saved.exists() {
            return;
        }
        if let Ok(name) = std::fs::read_to_string(&self.marker) {
            let file = self.repo.join("snapshots").join(name.trim());
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::rename(&self.saved, &file);
        }
    }
}

impl Drop for BlockingRestic {
    fn drop(&mut self) {
        self.unblock();
    }
}

/// `O_NONBLOCK` on Linux (x86-64 and aarch64 alike).
fn libc_o_nonblock() -> i32 {
    0o4000
}
