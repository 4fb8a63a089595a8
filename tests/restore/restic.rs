//! `stash restore`'s restic layer ([`stash::restore::engine::restore_host`])
//! against the real restic binary and local repositories: what `run-backup`
//! wrote comes back byte for byte, from the latest snapshot, a named one or
//! another host's; a missing snapshot and a wrong password fail in one line.

use std::path::{Path, PathBuf};

use stash::api::{
    Backend, BackupConfiguration, BackupConfigurationSpec, BackupTarget, HostRestorePhase,
    LocalSpec, Repository, RepositorySpec, RestoreRule, TargetRef,
};
use stash::backup::{ResticSettings, backup_host, restic::resolve_binary};
use stash::restore::engine::restore_host;

struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
    secrets: PathBuf,
    repository: Repository,
    settings: ResticSettings,
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("source/data");
        let secrets = dir.path().join("secret");
        std::fs::create_dir_all(data.join("nested")).unwrap();
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::write(data.join("data.txt"), "sample_data\n").unwrap();
        std::fs::write(data.join("nested/blob.bin"), pseudo_random(1_500_000, 7)).unwrap();
        std::fs::write(secrets.join("RESTIC_PASSWORD"), "changeit").unwrap();
        let settings = ResticSettings::new(
            resolve_binary(Path::new("restic"), std::env::var_os("PATH").as_deref())
                .expect("restic must be installed (apt-get install -y restic)"),
            dir.path().join("tmp"),
            true,
        );
        std::fs::create_dir_all(&settings.scratch_dir).unwrap();
        let mut repository = Repository::new(
            "local-repo",
            RepositorySpec {
                backend: Backend {
                    storage_secret_name: Some("local-secret".into()),
                    local: Some(LocalSpec {
                        mount_path: dir.path().join("repo").display().to_string(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                wipe_out: false,
            },
        );
        repository.metadata.namespace = Some("demo".into());
        Self {
            data,
            secrets,
            repository,
            settings,
            _dir: dir,
        }
    }

    fn path(&self) -> String {
        self.data.display().to_string()
    }

    /// A backup of the data as `host`, as the sidecar makes it; the snapshot id.
    async fn backup(&self, host: &str) -> String {
        let mut bc = BackupConfiguration::new(
            "b",
            BackupConfigurationSpec {
                target: Some(BackupTarget {
                    target_ref: TargetRef {
                        api_version: "apps/v1".into(),
                        kind: "Deployment".into(),
                        name: "stash-demo".into(),
                    },
                    paths: vec![self.path()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        bc.metadata.namespace = Some("demo".into());
        let out = backup_host(&bc, &self.repository, &self.secrets, host, &self.settings).await;
        assert!(out.succeeded(), "{:?}", out.stats);
        out.stats.snapshots[0].name.clone()
    }

    async fn restore(&self, rule: RestoreRule, host: &str) -> stash::api::HostRestoreStats {
        restore_host(
            &rule,
            &self.repository,
            &self.secrets,
            host,
            &self.settings,
            Path::new("/"),
        )
        .await
    }

    fn wipe(&self) {
        std::fs::remove_dir_all(&self.data).unwrap();
        assert!(!self.data.exists());
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.data.join(rel)).unwrap()
    }
}

fn paths(p: &str) -> RestoreRule {
    RestoreRule {
        paths: vec![p.to_string()],
        ..Default::default()
    }
}

#[tokio::test]
async fn the_latest_snapshot_of_a_path_comes_back_byte_for_byte() {
    let f = Fixture::new();
    let blob = f.read("nested/blob.bin");
    f.backup("host-0").await;
    f.wipe();
    let stats = f.restore(paths(&f.path()), "host-0").await;
    assert_eq!(stats.phase, Some(HostRestorePhase::Succeeded), "{stats:?}");
    assert_eq!(stats.hostname, "host-0");
    assert!(stats.duration.as_deref().is_some_and(|d| d.ends_with('s')));
    assert_eq!(f.read("data.txt"), b"sample_data\n");
    assert_eq!(f.read("nested/blob.bin"), blob, "restored file differs");
}

#[tokio::test]
async fn a_named_snapshot_restores_that_version_and_latest_the_newest() {
    let f = Fixture::new();
    let first = f.backup("host-0").await;
    std::fs::write(f.data.join("data.txt"), "second version\n").unwrap();
    f.backup("host-0").await;
    f.wipe();
    let rule = RestoreRule {
        snapshots: vec![first],
        ..Default::default()
    };
    let stats = f.restore(rule, "host-0").await;
    assert_eq!(stats.phase, Some(HostRestorePhase::Succeeded), "{stats:?}");
    assert_eq!(f.read("data.txt"), b"sample_data\n");
    f.wipe();
    let stats = f.restore(paths(&f.path()), "host-0").await;
    assert_eq!(stats.phase, Some(HostRestorePhase::Succeeded), "{stats:?}");
    assert_eq!(f.read("data.txt"), b"second version\n");
}

#[tokio::test]
async fn a_source_host_restores_another_hosts_data() {
    let f = Fixture::new();
    f.backup("host-1").await;
    f.wipe();
    // host-0 has no snapshot of its own: named, one line, nothing written.
    let own = f.restore(paths(&f.path()), "host-0").await;
    assert_eq!(own.phase, Some(HostRestorePhase::Failed));
    let error = own.error.unwrap();
    assert!(!error.contains('\n'), "{error}");
    assert!(error.contains("restic restore failed"), "{error}");
    assert!(!f.data.exists());
    let rule = RestoreRule {
        source_host: Some("host-1".into()),
        paths: vec![f.path()],
        ..Default::default()
    };
    let stats = f.restore(rule, "host-0").await;
    assert_eq!(stats.phase, Some(HostRestorePhase::Succeeded), "{stats:?}");
    assert_eq!(f.read("data.txt"), b"sample_data\n");
    // A rule with neither paths nor snapshots: every path of the source host.
    f.wipe();
    let all = RestoreRule {
        source_host: Some("host-1".into()),
        ..Default::default()
    };
    let stats = f.restore(all, "host-0").await;
    assert_eq!(stats.phase, Some(HostRestorePhase::Succeeded), "{stats:?}");
    assert_eq!(f.read("data.txt"), b"sample_data\n");
    let none = f.restore(RestoreRule::default(), "host-9").await;
    assert!(
        none.error
            .as_deref()
            .is_some_and(|e| e.contains("no snapshot of host host-9")),
        "{none:?}"
    );
}

#[tokio::test]
async fn a_missing_snapshot_fails_in_one_line() {
    let f = Fixture::new();
    f.backup("host-0").await;
    let rule = RestoreRule {
        snapshots: vec!["deadbeef".into()],
        ..Default::default()
    };
    let stats = f.restore(rule, "host-0").await;
    assert_eq!(stats.phase, Some(HostRestorePhase::Failed));
    let error = stats.error.unwrap();
    assert!(!error.contains('\n'), "{error}");
    assert!(error.contains("deadbeef"), "{error}");
}

#[tokio::test]
async fn a_wrong_password_fails_with_restics_message() {
    let f = Fixture::new();
    f.backup("host-0").await;
    std::fs::write(f.secrets.join("RESTIC_PASSWORD"), "not-the-password").unwrap();
    let stats = f.restore(paths(&f.path()), "host-0").await;
    assert_eq!(stats.phase, Some(HostRestorePhase::Failed));
    let error = stats.error.unwrap();
    assert!(error.contains("wrong password"), "{error}");
    std::fs::remove_file(f.secrets.join("RESTIC_PASSWORD")).unwrap();
    let stats = f.restore(paths(&f.path()), "host-0").await;
    assert!(
        stats.error.as_deref().is_some_and(
            |e| e.starts_with("cannot set up restic:") && e.contains("RESTIC_PASSWORD")
        ),
        "{stats:?}"
    );
}

// Privileges (docs/restore.md, "Who stash-init runs as"): restic run as
// exactly the identity and capabilities the planners give the sidecar and
// stash-init. Root only (CI is root): files are chowned to other users and
// restic drops to the planned identity with setpriv.

/// A temp dir every identity can reach: the data, a repository, the Secret,
/// scratch dirs as open as an emptyDir.
struct Owned {
    dir: tempfile::TempDir,
    data: PathBuf,
    repository: Repository,
}

impl Owned {
    /// The layout, with the repository directory owned by `repo_owner`.
    fn new(repo_owner: u32) -> Self {
        use std::os::unix::fs::{PermissionsExt, chown};
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("source/data");
        for d in ["source/data", "secret", "repo", "scratch"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::set_permissions(
            dir.path().join("scratch"),
            std::fs::Permissions::from_mode(0o1777),
        )
        .unwrap();
        chown(dir.path().join("repo"), Some(repo_owner), Some(repo_owner)).unwrap();
        std::fs::write(dir.path().join("secret/RESTIC_PASSWORD"), "changeit").unwrap();
        let mut repository = Fixture::new().repository;
        repository.spec.backend.local = Some(LocalSpec {
            mount_path: dir.path().join("repo").display().to_string(),
            ..Default::default()
        });
        Self {
            dir,
            data,
            repository,
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// restic as `who` (through a setpriv wrapper), no cache.
    fn settings(&self, who: &restic_support::Identity) -> ResticSettings {
        let restic = resolve_binary(Path::new("restic"), std::env::var_os("PATH").as_deref())
            .expect("restic");
        ResticSettings::new(
            who.wrapper(self.dir.path(), &restic),
            self.p("scratch"),
            false,
        )
    }

    async fn backup(&self, who: &restic_support::Identity) -> stash::backup::HostBackupOutcome {
        let mut bc = BackupConfiguration::new(
            "pg",
            BackupConfigurationSpec {
                target: Some(BackupTarget {
                    target_ref: TargetRef {
                        api_version: "apps/v1".into(),
                        kind: "Deployment".into(),
                        name: "stash-demo".into(),
                    },
                    paths: vec![self.data.display().to_string()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        bc.metadata.namespace = Some("demo".into());
        backup_host(
            &bc,
            &self.repository,
            &self.p("secret"),
            "host-0",
            &self.settings(who),
        )
        .await
    }

    /// A restore as `who` into `target` (created, owned by `who`); the
    /// host's entry and the restored data's listing (empty when absent).
    async fn restore(
        &self,
        who: &restic_support::Identity,
        target: &str,
    ) -> (stash::api::HostRestoreStats, Vec<String>) {
        let target = self.p(target);
        std::fs::create_dir_all(&target).unwrap();
        std::os::unix::fs::chown(&target, Some(who.uid), Some(who.gid)).unwrap();
        let stats = restore_host(
            &paths(&self.data.display().to_string()),
            &self.repository,
            &self.p("secret"),
            "host-0",
            &self.settings(who),
            &target,
        )
        .await;
        let restored = target.join(self.data.strip_prefix("/").unwrap());
        let listing = if restored.is_dir() {
            restic_support::listing(&restored)
        } else {
            Vec::new()
        };
        (stats, listing)
    }
}

use stash_testkit::restic as restic_support;

fn skip_unless_root(test: &str) -> bool {
    if restic_support::is_root() {
        return false;
    }
    println!(
        "{test}: skipped: needs root, to chown files to other users and drop to them with setpriv (CI runs as root)"
    );
    true
}

#[tokio::test]
async fn as_root_with_only_the_planned_capabilities_every_owner_and_mode_comes_back() {
    if skip_unless_root("case 4") {
        return;
    }
    let (sidecar, init) =
        restic_support::planned_security(serde_json::Value::Null, serde_json::Value::Null);
    let (sidecar, init) = (
        restic_support::Identity::of(&sidecar),
        restic_support::Identity::of(&init),
    );
    assert_eq!(
        (sidecar.uid, sidecar.gid, &sidecar.caps[..]),
        (0, 0, &["DAC_OVERRIDE".to_string()][..])
    );
    assert_eq!(init.caps, ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]);
    let f = Owned::new(0);
    // Exactly these capabilities: DAC_OVERRIDE is bit 1, CHOWN 0, FOWNER 3, FSETID 4.
    assert_eq!(
        sidecar.effective_caps(f.dir.path()),
        "CapEff:\t0000000000000002"
    );
    assert_eq!(
        init.effective_caps(f.dir.path()),
        "CapEff:\t000000000000001b"
    );
    restic_support::mixed_tree(&f.data);
    let want = restic_support::listing(&f.data);

    // Without DAC_OVERRIDE root cannot read the 0700 directory of uid 999.
    let failed = f.backup(&sidecar.without("DAC_OVERRIDE")).await;
    assert!(!failed.succeeded(), "{:?}", failed.stats);
    let error = failed.stats.error.unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "restic backup could not read {}/pgdata (owner 999:999, mode 0700) during scan: ",
            f.data.display()
        )),
        "{error}"
    );
    let backed_up = f.backup(&sidecar).await;
    assert!(backed_up.succeeded(), "{:?}", backed_up.stats);

    let (stats, restored) = f.restore(&init, "fresh").await;
    assert_eq!(stats.phase, Some(HostRestorePhase::Succeeded), "{stats:?}");
    assert_eq!(
        restored, want,
        "owners, groups, modes and bytes as they were"
    );

    // Into a volume that already holds the database's 0700 directory.
    let existing = |target: &str| {
        use std::os::unix::fs::{PermissionsExt, chown};
        let pgdata = f
            .p(target)
            .join(f.data.strip_prefix("/").unwrap())
            .join("pgdata");
        std::fs::create_dir_all(&pgdata).unwrap();
        chown(&pgdata, Some(999), Some(999)).unwrap();
        std::fs::set_permissions(&pgdata, std::fs::Permissions::from_mode(0o700)).unwrap();
    };
    existing("again");
    let (stats, restored) = f.restore(&init, "again").await;
    assert_eq!(stats.phase, Some(HostRestorePhase::Succeeded), "{stats:?}");
    assert_eq!(restored, want);

    // Each capability is needed: without it the restore fails or differs.
    for cap in &init.caps {
        let target = format!("without-{cap}");
        existing(&target);
        let (stats, restored) = f.restore(&init.without(cap), &target).await;
        assert!(
            stats.phase != Some(HostRestorePhase::Succeeded) || restored != want,
            "stash-init without {cap} restored the tree as it was"
        );
    }
}

#[tokio::test]
async fn as_the_workloads_user_its_files_come_back_as_its_own() {
    if skip_unless_root("case 2") {
        return;
    }
    let app = serde_json::json!({"runAsUser": 999, "runAsGroup": 999});
    let (sidecar, init) = restic_support::planned_security(serde_json::Value::Null, app);
    let (sidecar, init) = (
        restic_support::Identity::of(&sidecar),
        restic_support::Identity::of(&init),
    );
    let postgres = restic_support::Identity {
        uid: 999,
        gid: 999,
        caps: Vec::new(),
    };
    assert_eq!((&sidecar, &init), (&postgres, &postgres));
    let f = Owned::new(999);
    assert_eq!(
        sidecar.effective_caps(f.dir.path()),
        "CapEff:\t0000000000000000"
    );
    // What a postgres process running as 999 keeps on its volume.
    {
        use std::os::unix::fs::{PermissionsExt, chown, lchown, symlink};
        let pg = f.data.join("pgdata");
        std::fs::create_dir_all(pg.join("global")).unwrap();
        std::fs::write(pg.join("PG_VERSION"), "16\n").unwrap();
        std::fs::write(pg.join("global/pg_control"), pseudo_random(8192, 3)).unwrap();
        symlink("global/pg_control", pg.join("control")).unwrap();
        for (rel, mode) in [
            ("pgdata/global/pg_control", 0o600),
            ("pgdata/PG_VERSION", 0o600),
            ("pgdata/global", 0o2700),
            ("pgdata", 0o700),
        ] {
            let p = f.data.join(rel);
            chown(&p, Some(999), Some(999)).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        lchown(pg.join("control"), Some(999), Some(999)).unwrap();
    }
    let want = restic_support::listing(&f.data);
    let backed_up = f.backup(&sidecar).await;
    assert!(backed_up.succeeded(), "{:?}", backed_up.stats);
    let (stats, restored) = f.restore(&init, "fresh").await;
    assert_eq!(stats.phase, Some(HostRestorePhase::Succeeded), "{stats:?}");
    assert_eq!(restored, want);
}
