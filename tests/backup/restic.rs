//! `backup_host` against the real restic binary (Debian's `restic` package)
//! and local repositories in temporary directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stash::api::{
    Backend, BackupConfiguration, BackupConfigurationSpec, BackupTarget, HostBackupPhase,
    LocalSpec, Repository, RepositorySpec, RestSpec, RetentionPolicy, TargetRef,
};
use stash::backup::locks::Holder;
use stash::backup::{ResticSettings, backup_host, restic::resolve_binary};

fn restic_binary() -> PathBuf {
    resolve_binary(Path::new("restic"), std::env::var_os("PATH").as_deref())
        .expect("restic must be installed (apt-get install -y restic)")
}

struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
    repo: PathBuf,
    secrets: PathBuf,
    settings: ResticSettings,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("source/data");
        let repo = dir.path().join("repo");
        let secrets = dir.path().join("secret");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::write(data.join("data.txt"), "sample_data\n").unwrap();
        std::fs::write(secrets.join("RESTIC_PASSWORD"), "changeit").unwrap();
        let mut settings = ResticSettings::new(restic_binary(), dir.path().join("tmp"), true);
        // A lock another host holds fails a command at once (tests/backup/stop.rs waits).
        settings.lock_wait = Duration::ZERO;
        std::fs::create_dir_all(&settings.scratch_dir).unwrap();
        Self {
            data,
            repo,
            secrets,
            settings,
            _dir: dir,
        }
    }

    fn config(&self, keep_last: Option<i64>) -> BackupConfiguration {
        let mut bc = BackupConfiguration::new(
            "pause-backup",
            BackupConfigurationSpec {
                repository: Some(k8s_openapi::api::core::v1::LocalObjectReference {
                    name: "local-repo".into(),
                }),
                schedule: Some("*/5 * * * *".into()),
                target: Some(BackupTarget {
                    target_ref: TargetRef {
                        api_version: "apps/v1".into(),
                        kind: "Deployment".into(),
                        name: "stash-demo".into(),
                    },
                    paths: vec![self.data.display().to_string()],
                    ..Default::default()
                }),
                retention_policy: keep_last.map(|n| {
                    Box::new(RetentionPolicy {
                        name: format!("keep-last-{n}"),
                        keep_last: Some(n),
                        prune: true,
                        ..Default::default()
                    })
                }),
                ..Default::default()
            },
        );
        bc.metadata.namespace = Some("demo".into());
        bc
    }

    fn repository(&self) -> Repository {
        local_repository(&self.repo)
    }

    /// One host run of the fixture's configuration (as `host-0`) into its repository.
    async fn backup(&self, keep_last: Option<i64>) -> stash::backup::HostBackupOutcome {
        backup_host(
            &self.config(keep_last),
            &self.repository(),
            &self.secrets,
            "host-0",
            &self.settings,
        )
        .await
    }

    /// restic's own view of the repository, independent of our code.
    fn restic(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.settings.binary)
            .env_clear()
            .env("RESTIC_REPOSITORY", &self.repo)
            .env("RESTIC_PASSWORD", "changeit")
            .arg("--no-cache")
            .args(args)
            .output()
            .unwrap()
    }

    fn snapshot_ids(&self) -> Vec<String> {
        let out = self.restic(&["snapshots", "--json", "--no-lock"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        list.iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Incompressible, non-repeating bytes (xorshift), so deduplication cannot hide uploads.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn local_repository(path: &Path) -> Repository {
    let mut r = Repository::new(
        "local-repo",
        RepositorySpec {
            backend: Backend {
                storage_secret_name: Some("local-secret".into()),
                local: Some(LocalSpec {
                    mount_path: path.display().to_string(),
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

#[tokio::test]
async fn first_backup_initialises_and_the_second_is_incremental() {
    let f = Fixture::new();
    let payload = pseudo_random(2_000_000, 1);
    std::fs::write(f.data.join("big.bin"), &payload).unwrap();

    let first = f.backup(None).await;
    assert_eq!(
        first.stats.phase,
        Some(HostBackupPhase::Succeeded),
        "{:?}",
        first.stats.error
    );
    assert!(first.initialized, "the first run creates the repository");
    assert!(f.repo.join("config").is_file());
    assert_eq!(first.stats.hostname, "host-0");
    assert_eq!(first.stats.snapshots.len(), 1);
    let snap = &first.stats.snapshots[0];
    assert_eq!(snap.path, f.data.display().to_string());
    let files = snap.file_stats.as_ref().unwrap();
    assert_eq!(files.new_files, Some(2));
    assert_eq!(files.total_files, Some(2));
    assert!(
        first.summaries[0].data_added > 1_000_000,
        "first run uploads the data"
    );

    let second = f.backup(None).await;
    assert_eq!(
        second.stats.phase,
        Some(HostBackupPhase::Succeeded),
        "{:?}",
        second.stats.error
    );
    assert!(!second.initialized);
    let files = second.stats.snapshots[0].file_stats.as_ref().unwrap();
    assert_eq!(files.unmodified_files, Some(2));
    assert_eq!(files.new_files, Some(0));
    assert!(
        second.summaries[0].data_added < 4096,
        "unchanged data uploads ~0 bytes, got {}",
        second.summaries[0].data_added
    );
    assert_eq!(
        second.stats.snapshots[0].uploaded.as_deref(),
        Some(stash::backup::restic::format_bytes(second.summaries[0].data_added).as_str())
    );

    // The ids we report are restic's own (short ids are prefixes of the full ones).
    let ids = f.snapshot_ids();
    assert_eq!(ids.len(), 2);
    for (outcome, id) in [(&first, &ids[0]), (&second, &ids[1])] {
        let name = &outcome.stats.snapshots[0].name;
        assert!(id.starts_with(name.as_str()), "{name} is not restic's {id}");
    }
    let totals = second.totals.unwrap();
    assert_eq!(totals.snapshot_count, 2);
    assert_eq!(totals.snapshots_removed, None, "no policy, no forget");
    assert!(totals.size_bytes > 1_000_000);
}

#[tokio::test]
async fn retention_keeps_exactly_keep_last() {
    let f = Fixture::new();
    let mut last = None;
    for i in 0..4 {
        std::fs::write(f.data.join(format!("file-{i}.txt")), format!("run {i}")).unwrap();
        let o = f.backup(Some(2)).await;
        assert!(o.succeeded(), "{:?}", o.stats.error);
        last = Some(o);
    }
    let last = last.unwrap();
    let totals = last.totals.unwrap();
    assert_eq!(totals.snapshot_count, 2);
    assert_eq!(
        totals.snapshots_removed,
        Some(1),
        "each run forgets the one beyond keepLast"
    );
    let ids = f.snapshot_ids();
    assert_eq!(ids.len(), 2);
    assert!(
        ids[1].starts_with(&last.stats.snapshots[0].name),
        "the newest snapshot is kept"
    );
}

#[tokio::test]
async fn wrong_password_fails_with_restics_message() {
    let f = Fixture::new();
    let ok = f.backup(None).await;
    assert!(ok.succeeded(), "{:?}", ok.stats.error);
    std::fs::write(f.secrets.join("RESTIC_PASSWORD"), "not-the-password").unwrap();
    let o = f.backup(None).await;
    assert_eq!(o.stats.phase, Some(HostBackupPhase::Failed));
    let err = o.stats.error.unwrap();
    assert!(err.contains("wrong password or no key found"), "{err}");
    assert!(!err.contains('\n'));
    assert!(!err.contains("not-the-password"), "the secret never shows");
    assert!(o.totals.is_none());
    assert_eq!(f.snapshot_ids().len(), 1, "nothing was written");
}

#[tokio::test]
async fn missing_password_file_is_named_and_restic_is_not_run() {
    let f = Fixture::new();
    std::fs::remove_file(f.secrets.join("RESTIC_PASSWORD")).unwrap();
    let o = f.backup(None).await;
    assert_eq!(o.stats.phase, Some(HostBackupPhase::Failed));
    let err = o.stats.error.unwrap();
    assert!(
        err.contains("secret file RESTIC_PASSWORD is missing"),
        "{err}"
    );
    assert!(!f.repo.exists(), "no repository was created");
}

#[tokio::test]
async fn unreachable_backend_fails_with_the_connection_error() {
    let f = Fixture::new();
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut repo = f.repository();
    repo.spec.backend = Backend {
        rest: Some(RestSpec {
            url: format!("http://127.0.0.1:{port}/"),
        }),
        ..Default::default()
    };
    let o = backup_host(&f.config(None), &repo, &f.secrets, "host-0", &f.settings).await;
    assert_eq!(o.stats.phase, Some(HostBackupPhase::Failed));
    let err = o.stats.error.unwrap();
    assert!(err.contains("connection refused"), "{err}");
    assert!(!err.contains('\n'));
}

#[tokio::test]
async fn a_missing_path_fails_the_host() {
    let f = Fixture::new();
    let mut config = f.config(None);
    config.spec.target.as_mut().unwrap().paths = vec!["/nonexistent/stash-test".into()];
    let o = backup_host(&config, &f.repository(), &f.secrets, "host-0", &f.settings).await;
    assert_eq!(o.stats.phase, Some(HostBackupPhase::Failed));
    let err = o.stats.error.unwrap();
    assert!(
        err.starts_with("backup of /nonexistent/stash-test: restic backup failed"),
        "{err}"
    );
    assert!(err.contains("do not exist"), "{err}");
}

/// Leaves a lock behind the way a killed run does: a `restic backup --stdin`
/// that waits for input holds its lock; SIGKILL leaves the lock file.
fn leave_stale_lock(f: &Fixture) {
    let mut child = Command::new(&f.settings.binary)
        .env_clear()
        .env("RESTIC_REPOSITORY", &f.repo)
        .env("RESTIC_PASSWORD", "changeit")
        .args(["--no-cache", "backup", "--stdin", "--stdin-filename", "x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = f.restic(&["list", "locks", "--no-lock"]);
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "restic never took its lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn a_lock_left_by_a_killed_run_is_cleared() {
    let f = Fixture::new();
    let first = f.backup(Some(1)).await;
    assert!(first.succeeded(), "{:?}", first.stats.error);
    leave_stale_lock(&f);
    // Without clearing, the lock blocks retention (forget needs an exclusive lock).
    let blocked = f.restic(&["forget", "--keep-last", "1"]);
    assert!(!blocked.status.success());
    assert!(String::from_utf8_lossy(&blocked.stderr).contains("locked"));

    let o = f.backup(Some(1)).await;
    assert!(o.succeeded(), "{:?}", o.stats.error);
    let locks = f.restic(&["list", "locks", "--no-lock"]);
    assert!(
        String::from_utf8_lossy(&locks.stdout).trim().is_empty(),
        "no lock is left"
    );
    assert_eq!(o.totals.unwrap().snapshot_count, 1);
}

#[tokio::test]
async fn excludes_are_honoured_and_cache_can_be_disabled() {
    let mut f = Fixture::new();
    f.settings.enable_cache = false;
    std::fs::write(f.data.join("skip.tmp"), "scratch").unwrap();
    let mut config = f.config(None);
    config.spec.target.as_mut().unwrap().exclude = vec!["*.tmp".into()];
    let o = backup_host(&config, &f.repository(), &f.secrets, "host-0", &f.settings).await;
    assert!(o.succeeded(), "{:?}", o.stats.error);
    assert_eq!(
        o.stats.snapshots[0]
            .file_stats
            .as_ref()
            .unwrap()
            .total_files,
        Some(1)
    );
    assert!(
        !f.settings.scratch_dir.join("restic-cache").exists(),
        "--no-cache leaves no cache"
    );
}

/// Judges exactly the named hosts gone.
struct Gone(Vec<&'static str>);

impl stash::backup::LockHolders for Gone {
    fn judge<'a>(
        &'a self,
        lock: &'a stash::backup::restic::LockInfo,
    ) -> futures::future::BoxFuture<'a, Holder> {
        Box::pin(async move {
            if self.0.contains(&lock.hostname.as_str()) {
                Holder::Gone("the test says so".into())
            } else {
                Holder::Live("the test says so".into())
            }
        })
    }
}

/// Leaves a lock as a pod named `hostname` killed mid-backup would: restic
/// runs in its own UTS namespace with that host name. Returns false when
/// this machine cannot make UTS namespaces (not root).
fn leave_lock_of_another_pod(f: &Fixture, hostname: &str) -> bool {
    let can = Command::new("unshare")
        .args(["--uts", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !can {
        eprintln!("skipping: `unshare --uts` is not available (needs root)");
        return false;
    }
    let mut child = Command::new("unshare")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RESTIC_REPOSITORY", &f.repo)
        .env("RESTIC_PASSWORD", "changeit")
        .args([
            "--uts",
            "sh",
            "-c",
            "hostname \"$0\" && exec \"$1\" --no-cache backup --stdin --stdin-filename x",
        ])
        .arg(hostname)
        .arg(&f.settings.binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.lock_hosts().is_empty() {
        assert!(Instant::now() < deadline, "restic never took its lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    true
}

impl Fixture {
    fn lock_hosts(&self) -> Vec<String> {
        let out = self.restic(&["list", "locks", "--no-lock"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|id| {
                let out = self.restic(&["cat", "lock", id.trim(), "--no-lock"]);
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                v["hostname"].as_str().unwrap_or_default().to_string()
            })
            .collect()
    }
}

#[tokio::test]
async fn a_lock_left_by_a_deleted_pod_is_cleared_once_the_pod_is_gone() {
    let f = Fixture::new();
    let first = f.backup(Some(1)).await;
    assert!(first.succeeded(), "{:?}", first.stats.error);
    if !leave_lock_of_another_pod(&f, "stash-demo-69f9ffbbf7-old") {
        return;
    }
    // restic's own rule keeps another host's lock (for 30 minutes).
    assert!(f.restic(&["unlock"]).status.success());
    assert_eq!(f.lock_hosts(), ["stash-demo-69f9ffbbf7-old"]);

    // Without a judge the lock blocks retention, with restic's message.
    let blocked = f.backup(Some(1)).await;
    assert_eq!(blocked.stats.phase, Some(HostBackupPhase::Failed));
    let err = blocked.stats.error.unwrap();
    assert!(
        err.contains("repository is already locked") && err.contains("stash-demo-69f9ffbbf7-old"),
        "{err}"
    );
    assert!(!err.contains('\n'));
    assert_eq!(f.lock_hosts().len(), 1, "nothing removed");

    // A judge that knows other pods alive removes nothing either.
    let alive = stash::backup::backup_host_with(
        &f.config(Some(1)),
        &f.repository(),
        &f.secrets,
        "host-0",
        &f.settings,
        &Gone(vec!["someone-else"]),
    )
    .await;
    assert!(!alive.succeeded());
    assert_eq!(f.lock_hosts().len(), 1);

    // Once the lock's pod is known to be gone, the lock goes and the run succeeds.
    let o = stash::backup::backup_host_with(
        &f.config(Some(1)),
        &f.repository(),
        &f.secrets,
        "host-0",
        &f.settings,
        &Gone(vec!["stash-demo-69f9ffbbf7-old"]),
    )
    .await;
    assert!(o.succeeded(), "{:?}", o.stats.error);
    assert!(f.lock_hosts().is_empty());
    assert_eq!(o.totals.unwrap().snapshot_count, 1);
}

/// Where the child half of the case-3 test finds its layout.
const CASE_3_DIR: &str = "STASH_TEST_CASE_3_DIR";

/// The sidecar's half of `as_65532_an_unreadable_directory_is_named_...`:
/// a no-op unless that test starts this binary as the planned identity
/// (the sidecar and restic are one identity in a pod, and the sidecar looks
/// at what restic could not read as itself). Prints the host's error.
#[tokio::test]
async fn case_3_sidecar_process() {
    let Some(dir) = std::env::var_os(CASE_3_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mut bc = BackupConfiguration::new(
        "pause-backup",
        BackupConfigurationSpec {
            target: Some(BackupTarget {
                target_ref: TargetRef {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "stash-demo".into(),
                },
                paths: vec![dir.join("source/data").display().to_string()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    bc.metadata.namespace = Some("demo".into());
    let settings = ResticSettings::new(restic_binary(), dir.join("scratch"), true);
    let out = backup_host(
        &bc,
        &local_repository(&dir.join("repo")),
        &dir.join("secret"),
        "host-0",
        &settings,
    )
    .await;
    println!("HOST_PHASE={:?}", out.stats.phase);
    println!("HOST_ERROR={}", out.stats.error.unwrap_or_default());
}

#[test]
fn as_65532_an_unreadable_directory_is_named_with_its_owner_and_mode() {
    use stash_testkit::restic as support;
    use std::os::unix::fs::{PermissionsExt, chown};
    if !support::is_root() {
        println!(
            "case 3: skipped: needs root, to chown files to uid 999 and run the sidecar as 65532 with setpriv (CI runs as root)"
        );
        return;
    }
    let (sidecar, _) = support::planned_security(
        serde_json::json!({"runAsNonRoot": true}),
        serde_json::Value::Null,
    );
    let who = support::Identity::of(&sidecar);
    assert_eq!(
        who,
        support::Identity {
            uid: 65532,
            gid: 65532,
            caps: Vec::new()
        }
    );
    let dir = tempfile::tempdir().unwrap();
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    mode(dir.path(), 0o755).unwrap();
    let data = dir.path().join("source/data");
    let pgdata = data.join("pgdata");
    for d in [
        &pgdata,
        &dir.path().join("secret"),
        &dir.path().join("repo"),
        &dir.path().join("scratch"),
    ] {
        std::fs::create_dir_all(d).unwrap();
    }
    mode(&dir.path().join("scratch"), 0o1777).unwrap();
    chown(dir.path().join("repo"), Some(65532), Some(65532)).unwrap();
    std::fs::write(dir.path().join("secret/RESTIC_PASSWORD"), "changeit").unwrap();
    std::fs::write(data.join("data.txt"), "sample_data\n").unwrap();
    std::fs::write(pgdata.join("PG_VERSION"), "16\n").unwrap();
    mode(&pgdata.join("PG_VERSION"), 0o600).unwrap();
    chown(pgdata.join("PG_VERSION"), Some(999), Some(999)).unwrap();
    mode(&pgdata, 0o700).unwrap();
    chown(&pgdata, Some(999), Some(999)).unwrap();

    let exe = std::env::current_exe().unwrap();
    let as_sidecar = who.wrapper(dir.path(), &exe);
    let out = Command::new(as_sidecar)
        .args([
            "--exact",
            "restic::case_3_sidecar_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CASE_3_DIR, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.find(key).map(|i| &l[i + key.len()..]))
            .unwrap_or_else(|| {
                panic!(
                    "no {key} in {stdout} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .to_string()
    };
    assert_eq!(line("HOST_PHASE="), "Some(Failed)");
    assert_eq!(
        line("HOST_ERROR="),
        format!(
            "restic backup could not read {} (owner 999:999, mode 0700) during scan: permission denied; the sidecar runs as uid 65532: set spec.runtimeSettings.container.securityContext.runAsUser: 999 in BackupConfiguration demo/pause-backup, or let the workload declare its user",
            pgdata.display()
        )
    );
}
