//! Stopping restic without leaving its lock, and locks held by others, with
//! the real restic and local repositories (issue 20).
//!
//! restic is held at a chosen moment by a stand-in script given as the
//! restic binary ([`BlockingRestic`]): the command under test takes its lock
//! and blocks, and only then is the stop signaled ([`Stop::trigger`], what
//! SIGTERM does in the process; `tests/backup/process.rs` and
//! `tests/restore/process.rs` send the real signal). Each stop must leave no
//! lock, so that a backup and a restore right after succeed with no lock
//! wait at all.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use stash::api::{
    Backend, BackupConfiguration, BackupConfigurationSpec, BackupTarget, HostBackupPhase,
    HostRestorePhase, LocalSpec, Repository, RepositorySpec, RestoreRule, RetentionPolicy,
    TargetRef,
};
use stash::backup::engine::check_integrity;
use stash::backup::locks::{Holder, LockHolders, NoLockHolders};
use stash::backup::restic::{LockInfo, resolve_binary};
use stash::backup::{HostBackupOutcome, ResticSettings, backup_host_with};
use stash::restore::engine::restore_host_with;
use stash::runtime::stop::{RESTIC_GRACE, Stop};
use stash_testkit::locks::{BlockingRestic, hold_lock, lock_files};

const PASSWORD: &str = "changeit";

fn restic_binary() -> PathBuf {
    resolve_binary(Path::new("restic"), std::env::var_os("PATH").as_deref())
        .expect("restic must be installed (apt-get install -y restic)")
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// Data, secret, scratch dir, and a repository with one snapshot of the data.
    async fn with_a_snapshot() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in ["source/data", "secret", "tmp", "restored"] {
            std::fs::create_dir_all(f.p(d)).unwrap();
        }
        std::fs::write(f.p("source/data/data.txt"), "sample_data\n").unwrap();
        std::fs::write(f.p("secret/RESTIC_PASSWORD"), PASSWORD).unwrap();
        let first = f.backup(&f.settings(restic_binary())).await;
        assert!(first.succeeded(), "{:?}", first.stats.error);
        f
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn repo(&self) -> PathBuf {
        self.p("repo")
    }

    /// No lock wait: a lock left behind fails the next command at once.
    fn settings(&self, binary: PathBuf) -> ResticSettings {
        let mut s = ResticSettings::new(binary, self.p("tmp"), false);
        s.lock_wait = Duration::ZERO;
        s
    }

    fn config(&self) -> BackupConfiguration {
        let mut bc = BackupConfiguration::new(
            "pause-backup",
            BackupConfigurationSpec {
                target: Some(BackupTarget {
                    target_ref: TargetRef {
                        api_version: "apps/v1".into(),
                        kind: "Deployment".into(),
                        name: "stash-demo".into(),
                    },
                    paths: vec![self.p("source/data").display().to_string()],
                    ..Default::default()
                }),
                retention_policy: Some(Box::new(RetentionPolicy {
                    name: "keep-last-1".into(),
                    keep_last: Some(1),
                    prune: true,
                    ..Default::default()
                })),
                ..Default::default()
            },
        );
        bc.metadata.namespace = Some("demo".into());
        bc
    }

    fn repository(&self) -> Repository {
        let mut r = Repository::new(
            "local-repo",
            RepositorySpec {
                backend: Backend {
                    local: Some(LocalSpec {
                        mount_path: self.repo().display().to_string(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                wipe_out: false,
            },
        );
        r.metadata.namespace = Some("demo".into());
        r
    }

    async fn backup(&self, settings: &ResticSettings) -> HostBackupOutcome {
        self.backup_judged(settings, &NoLockHolders).await
    }

    async fn backup_judged(
        &self,
        settings: &ResticSettings,
        holders: &dyn LockHolders,
    ) -> HostBackupOutcome {
        backup_host_with(
            &self.config(),
            &self.repository(),
            &self.p("secret"),
            "host-0",
            settings,
            holders,
        )
        .await
    }

    async fn restore(
        &self,
        settings: &ResticSettings,
        holders: &dyn LockHolders,
    ) -> stash::api::HostRestoreStats {
        let rule = RestoreRule {
            paths: vec![self.p("source/data").display().to_string()],
            ..Default::default()
        };
        restore_host_with(
            &rule,
            &self.repository(),
            &self.p("secret"),
            "host-0",
            settings,
            &self.p("restored"),
            holders,
        )
        .await
    }

    /// What every stop must leave: no lock, and a restore (which, unlike
    /// the backup, does not run `restic unlock` first) and a backup that
    /// succeed with no lock wait at all.
    async fn then_backup_and_restore_succeed_at_once(&self) {
        assert_eq!(
            lock_files(&self.repo()),
            Vec::<PathBuf>::new(),
            "restic removed its lock"
        );
        let settings = self.settings(restic_binary());
        let restored = self.restore(&settings, &NoLockHolders).await;
        assert_eq!(
            restored.phase,
            Some(HostRestorePhase::Succeeded),
            "{:?}",
            restored.error
        );
        let restored_file = self
            .p("restored")
            .join(self.p("source/data/data.txt").strip_prefix("/").unwrap());
        assert_eq!(std::fs::read(restored_file).unwrap(), b"sample_data\n");
        let backed_up = self.backup(&settings).await;
        assert!(backed_up.succeeded(), "{:?}", backed_up.stats.error);
        assert_eq!(lock_files(&self.repo()), Vec::<PathBuf>::new());
    }
}

/// Runs `work` with restic held in `blocking`'s command; once it holds its
/// lock, signals the stop. Returns what `work` returned and how long the
/// stop took (restic exiting on SIGINT, not SIGKILL after [`RESTIC_GRACE`]).
async fn stopped_during<T>(
    blocking: &BlockingRestic,
    stop: &Stop,
    work: impl std::future::Future<Output = T>,
) -> (T, Duration) {
    let stopper = async {
        blocking.until_blocked().await;
        stop.trigger("SIGTERM");
        Instant::now()
    };
    let (out, stopped_at) = tokio::join!(work, stopper);
    let took = stopped_at.elapsed();
    blocking.unblock();
    (out, took)
}

fn assert_clean_stop(took: Duration) {
    assert!(
        took < RESTIC_GRACE,
        "restic exited on SIGINT ({took:?}), it was not killed after the grace period"
    );
}

/// Holds restic in `subcommand` (of a backup, of an integrity check, of a
/// restore), signals the stop once it holds its lock, checks what the
/// interrupted command reports and what the stop must leave.
async fn sigterm_during(subcommand: &str) {
    let f = Fixture::with_a_snapshot().await;
    let blocking = BlockingRestic::new(&f.p("bin"), &restic_binary(), &f.repo(), subcommand);
    let mut settings = f.settings(blocking.path.clone());
    let stop = Stop::new();
    settings.stop = stop.clone();
    let interrupted =
        format!("interrupted: the pod is stopping (SIGTERM) during restic {subcommand}");
    let took = match subcommand {
        "check" => {
            let (repository, secret) = (f.repository(), f.p("secret"));
            let check = check_integrity(&repository, &secret, &settings, &NoLockHolders);
            let (intact, took) = stopped_during(&blocking, &stop, check).await;
            assert_eq!(
                intact, None,
                "an interrupted check says nothing about the data"
            );
            took
        }
        "restore" => {
            let restore = f.restore(&settings, &NoLockHolders);
            let (o, took) = stopped_during(&blocking, &stop, restore).await;
            assert_eq!(o.phase, Some(HostRestorePhase::Failed));
            assert_eq!(o.error.as_deref(), Some(interrupted.as_str()));
            took
        }
        _ => {
            let (o, took) = stopped_during(&blocking, &stop, f.backup(&settings)).await;
            assert_eq!(o.stats.phase, Some(HostBackupPhase::Failed));
            assert_eq!(o.stats.error.as_deref(), Some(interrupted.as_str()));
            took
        }
    };
    assert_clean_stop(took);
    f.then_backup_and_restore_succeed_at_once().await;
}

#[tokio::test]
async fn sigterm_during_backup_leaves_no_lock() {
    sigterm_during("backup").await;
}

#[tokio::test]
async fn sigterm_during_forget_leaves_no_lock() {
    sigterm_during("forget").await;
}

#[tokio::test]
async fn sigterm_during_check_leaves_no_exclusive_lock() {
    sigterm_during("check").await;
}

#[tokio::test]
async fn sigterm_during_restore_leaves_no_lock() {
    sigterm_during("restore").await;
}

#[tokio::test]
async fn a_stop_before_a_command_starts_no_restic() {
    let f = Fixture::with_a_snapshot().await;
    let settings = f.settings(restic_binary());
    settings.stop.trigger("SIGINT");
    let o = f.backup(&settings).await;
    assert_eq!(
        o.stats.error.as_deref(),
        Some("interrupted: the pod is stopping (SIGINT) during restic unlock")
    );
}

/// A judge that knows which hosts are gone and records the waits it is told of.
#[derive(Default)]
struct Judge {
    gone: Vec<String>,
    waits: Mutex<Vec<String>>,
}

impl Judge {
    fn waits(&self) -> Vec<String> {
        self.waits.lock().unwrap().clone()
    }
}

impl LockHolders for Judge {
    fn judge<'a>(&'a self, lock: &'a LockInfo) -> BoxFuture<'a, Holder> {
        Box::pin(async move {
            if self.gone.contains(&lock.hostname) {
                Holder::Gone("gone".into())
            } else {
                Holder::Live("live".into())
            }
        })
    }

    fn waiting<'a>(&'a self, _lock: &'a LockInfo, message: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.waits.lock().unwrap().push(message.to_string()) })
    }
}

/// This machine's host name, as restic records it in its locks.
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test]
async fn a_live_holder_is_waited_for_up_to_the_bound_and_never_removed() {
    let f = Fixture::with_a_snapshot().await;
    // A restic that is running: `forget --prune` needs the lock it shares.
    let held = hold_lock(&restic_binary(), &f.repo(), PASSWORD, None, false)
        .await
        .unwrap();
    let pid = held.child.id();
    let mut settings = f.settings(restic_binary());
    settings.lock_wait = Duration::from_secs(3);
    let judge = Judge::default();
    let started = Instant::now();
    let o = f.backup_judged(&settings, &judge).await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "waited the bound"
    );
    assert_eq!(o.stats.phase, Some(HostBackupPhase::Failed));
    let err = o.stats.error.unwrap();
    assert!(
        err.contains("repository is already locked")
            && err.contains("(waited ")
            && err.ends_with("s for the lock; --lock-wait)"),
        "{err}"
    );
    let waits = judge.waits();
    assert_eq!(waits.len(), 1, "told once per holder: {waits:?}");
    let expected = format!(
        "waiting for the repository lock held by {} (pid {pid}) since ",
        this_host()
    );
    assert!(waits[0].starts_with(&expected), "{waits:?}");
    assert_eq!(
        lock_files(&f.repo()).len(),
        1,
        "the live holder's lock stays"
    );

    // The holder finishes while a command waits for it: that command goes on.
    settings.lock_wait = Duration::from_secs(120);
    let waiting = f.backup_judged(&settings, &judge);
    let release = async {
        let deadline = Instant::now() + Duration::from_secs(90);
        while judge.waits().len() < 2 {
            assert!(
                Instant::now() < deadline,
                "the second wait was never reported"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        held.finish();
    };
    let (o, ()) = tokio::join!(waiting, release);
    assert!(o.succeeded(), "{:?}", o.stats.error);
    assert_eq!(lock_files(&f.repo()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn an_exclusive_lock_of_a_live_pod_holds_a_restore_back_until_its_pod_is_gone() {
    let f = Fixture::with_a_snapshot().await;
    // A `check` of pod stash-demo-0 (exclusive lock), killed with its node:
    // restic alone would keep refusing for 30 minutes.
    let Some(held) = hold_lock(
        &restic_binary(),
        &f.repo(),
        PASSWORD,
        Some("stash-demo-0"),
        true,
    )
    .await
    else {
        return;
    };
    held.kill();
    assert_eq!(lock_files(&f.repo()).len(), 1);
    let mut settings = f.settings(restic_binary());
    settings.lock_wait = Duration::from_secs(2);

    // Its pod is alive (as far as the judge knows): waited for, not removed.
    let live = Judge::default();
    let o = f.restore(&settings, &live).await;
    assert_eq!(o.phase, Some(HostRestorePhase::Failed));
    let err = o.error.unwrap();
    assert!(
        err.contains("locked exclusively") && err.contains("stash-demo-0"),
        "{err}"
    );
    assert!(
        live.waits()[0]
            .starts_with("waiting for the repository exclusive lock held by stash-demo-0 (pid "),
        "{:?}",
        live.waits()
    );
    assert_eq!(lock_files(&f.repo()).len(), 1, "never removed");

    // Its pod is gone: removed at once, the restore succeeds without waiting.
    let gone = Judge {
        gone: vec!["stash-demo-0".into()],
        ..Default::default()
    };
    settings.lock_wait = Duration::from_secs(600);
    let started = Instant::now();
    let o = f.restore(&settings, &gone).await;
    assert_eq!(o.phase, Some(HostRestorePhase::Succeeded), "{:?}", o.error);
    assert!(gone.waits().is_empty());
    assert!(started.elapsed() < Duration::from_secs(120));
    assert_eq!(lock_files(&f.repo()), Vec::<PathBuf>::new());
}
