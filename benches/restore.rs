//! Our restore (`stash restore`'s restic layer) of a 100 MiB tree against
//! plain `restic restore` of the same snapshot.
//!
//! Run: `cargo bench --bench restore` (needs restic on PATH). Environment:
//! `STASH_BENCH_MIB` (tree size, default 100), `STASH_BENCH_RUNS` (timed runs
//! per variant, default 5). One repository holds one snapshot (made untimed
//! first); every run restores into a fresh, empty target directory, and the
//! variants alternate so that machine load drifts hit them alike. Like
//! `benches/backup.rs`, a plain harness rather than criterion: one run takes
//! seconds, and criterion's minimum sample count would take many minutes on a
//! shared 2-core machine. Variants:
//! - `restic restore`: `restic restore latest --host host-0 --path <tree> --target <dir>`;
//! - `stash restore_host`: the same through [`stash::restore::engine::restore_host`]
//!   (credentials from the Secret directory, env set-up, spawn, error reading).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use stash::api::{
    Backend, BackupConfiguration, BackupConfigurationSpec, BackupTarget, HostRestorePhase,
    LocalSpec, Repository, RepositorySpec, RestoreRule, TargetRef,
};
use stash::backup::restic::resolve_binary;
use stash::backup::{ResticSettings, backup_host};
use stash::restore::engine::restore_host;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `mib` MiB of incompressible data in 1 MiB files, 20 per directory.
fn make_tree(root: &Path, mib: usize) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..mib {
        let dir = root.join(format!("dir-{:03}", i / 20));
        std::fs::create_dir_all(&dir).expect("create tree");
        let mut buf = vec![0u8; 1 << 20];
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(dir.join(format!("file-{i:04}.bin")), &buf).expect("write tree");
    }
}

fn stats(mut d: Vec<Duration>) -> (f64, f64, f64) {
    d.sort();
    let secs: Vec<f64> = d.iter().map(Duration::as_secs_f64).collect();
    let median = secs[secs.len() / 2];
    let mean = secs.iter().sum::<f64>() / secs.len() as f64;
    let sd = (secs.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / secs.len() as f64).sqrt();
    (median, mean, sd)
}

fn main() {
    let mib = env_or("STASH_BENCH_MIB", 100);
    let runs = env_or("STASH_BENCH_RUNS", 5).max(1);
    let binary = resolve_binary(Path::new("restic"), std::env::var_os("PATH").as_deref())
        .expect("restic on PATH");
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    let secret = dir.path().join("secret");
    let scratch = dir.path().join("tmp");
    let repo = dir.path().join("repo");
    for d in [&tree, &secret, &scratch] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(secret.join("RESTIC_PASSWORD"), "bench").expect("password");
    eprintln!("making a {mib} MiB tree and its snapshot…");
    make_tree(&tree, mib);
    let settings = ResticSettings::new(binary.clone(), scratch, false);
    let repository = Repository::new(
        "bench",
        RepositorySpec {
            backend: Backend {
                local: Some(LocalSpec {
                    mount_path: repo.display().to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            wipe_out: false,
        },
    );
    let config = BackupConfiguration::new(
        "bench",
        BackupConfigurationSpec {
            target: Some(BackupTarget {
                target_ref: TargetRef {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "bench".into(),
                },
                paths: vec![tree.display().to_string()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let backed = rt.block_on(backup_host(
        &config,
        &repository,
        &secret,
        "host-0",
        &settings,
    ));
    assert!(backed.succeeded(), "{:?}", backed.stats);
    let rule = RestoreRule {
        paths: vec![tree.display().to_string()],
        ..Default::default()
    };
    let path = tree.display().to_string();
    let (mut plain, mut ours) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let target = dir.path().join(format!("plain-{run}"));
        let started = Instant::now();
        let status = Command::new(&binary)
            .env_clear()
            .env("RESTIC_REPOSITORY", &repo)
            .env("RESTIC_PASSWORD_FILE", secret.join("RESTIC_PASSWORD"))
            .args([
                "--no-cache",
                "restore",
                "latest",
                "--host",
                "host-0",
                "--path",
                &path,
                "--target",
            ])
            .arg(&target)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run restic");
        plain.push(started.elapsed());
        assert!(status.success());
        std::fs::remove_dir_all(&target).expect("clean");

        let target = dir.path().join(format!("ours-{run}"));
        let started = Instant::now();
        let stats = rt.block_on(restore_host(
            &rule,
            &repository,
            &secret,
            "host-0",
            &settings,
            &target,
        ));
        ours.push(started.elapsed());
        assert_eq!(stats.phase, Some(HostRestorePhase::Succeeded), "{stats:?}");
        std::fs::remove_dir_all(&target).expect("clean");
    }
    let (pm, pmean, psd) = stats(plain);
    let (om, omean, osd) = stats(ours);
    println!(
        "restore of {mib} MiB, {runs} runs each (restic {})",
        String::from_utf8_lossy(
            &Command::new(&binary)
                .arg("version")
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default()
        )
        .trim()
    );
    println!("| variant | median | mean ± sd |");
    println!("|---|---|---|");
    println!("| plain `restic restore` | {pm:.2} s | {pmean:.2} ± {psd:.2} s |");
    println!(
        "| our `restore_host` | {om:.2} s ({:+.1} %) | {omean:.2} ± {osd:.2} s |",
        (om / pm - 1.0) * 100.0
    );
}
