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
