//! Our backup of a 200 MiB tree against plain `restic backup` of the same tree.
//!
//! Run: `cargo bench --bench backup` (needs restic on PATH). Environment:
//! `STASH_BENCH_MIB` (tree size, default 200), `STASH_BENCH_RUNS` (timed runs
//! per variant, default 5). Every run backs up into a fresh repository (created
//! untimed beforehand), so each is a full, first backup; the variants alternate
//! so that machine load drifts hit them alike. Variants:
//! - `restic backup`: the plain command, as a user would type it;
//! - `stash backup step`: the same command through our runner (env set-up,
//!   spawn, JSON parse);
//! - `stash backup_host`: the whole host run (`unlock`, `backup`, `stats`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use stash::api::{
    Backend, BackupConfiguration, BackupConfigurationSpec, BackupTarget, LocalSpec, Repository,
    RepositorySpec, TargetRef,
};
use stash::backup::repository::prepare;
use stash::backup::restic::resolve_binary;
use stash::backup::{ResticSettings, backup_host};

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

fn restic(binary: &Path, repo: &Path, secret: &Path, args: &[&str]) {
    let status = Command::new(binary)
        .env_clear()
        .env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD_FILE", secret.join("RESTIC_PASSWORD"))
        .arg("--no-cache")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run restic");
    assert!(status.success(), "restic {args:?} failed");
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
    let mib = env_or("STASH_BENCH_MIB", 200);
    let runs = env_or("STASH_BENCH_RUNS", 5);
    let binary = resolve_binary(Path::new("restic"), std::env::var_os("PATH").as_deref())
        .expect("restic on PATH");
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    let secret = dir.path().join("secret");
    let scratch = dir.path().join("tmp");
    for d in [&tree, &secret, &scratch] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(secret.join("RESTIC_PASSWORD"), "bench").expect("password");
    eprintln!("making a {mib} MiB tree…");
    make_tree(&tree, mib);

    let settings = ResticSettings::new(binary.clone(), scratch.clone(), false);
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
    let repository = |path: &Path| {
        Repository::new(
            "bench",
            RepositorySpec {
                backend: Backend {
                    local: Some(LocalSpec {
                        mount_path: path.display().to_string(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                wipe_out: false,
            },
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tree_arg = tree.display().to_string();
    let fresh_repo = |tag: &str, i: usize| -> PathBuf {
        let repo = dir.path().join(format!("repo-{tag}-{i}"));
        restic(&binary, &repo, &secret, &["init"]);
        repo
    };

    // Warm the page cache so the first timed run is not the only cold one.
    let warm = fresh_repo("warm", 0);
    restic(
        &binary,
        &warm,
        &secret,
        &["backup", "--quiet", "--host", "host-0", &tree_arg],
    );

    let mut plain = Vec::new();
    let mut step = Vec::new();
    let mut full = Vec::new();
    for i in 0..runs {
        let variants: [&str; 3] = match i % 3 {
            0 => ["plain", "step", "full"],
            1 => ["step", "full", "plain"],
            _ => ["full", "plain", "step"],
        };
        for v in variants {
            let repo = fresh_repo(v, i);
            let t = Instant::now();
            match v {
                "plain" => {
                    restic(
                        &binary,
                        &repo,
                        &secret,
                        &["backup", "--json", "--quiet", "--host", "host-0", &tree_arg],
                    );
                    plain.push(t.elapsed());
                }
                "step" => {
                    let r = prepare(&repository(&repo).spec.backend, &secret, &settings)
                        .expect("prepare");
                    rt.block_on(r.backup(&tree_arg, "host-0", &[], false))
                        .expect("backup");
                    step.push(t.elapsed());
                }
                _ => {
                    let o = rt.block_on(backup_host(
                        &config,
                        &repository(&repo),
                        &secret,
                        "host-0",
                        &settings,
                    ));
                    assert!(o.succeeded(), "{:?}", o.stats.error);
                    full.push(t.elapsed());
                }
            }
            std::fs::remove_dir_all(&repo).expect("clean repo");
        }
        eprintln!("run {}/{runs} done", i + 1);
    }
    let (pm, pmean, psd) = stats(plain);
    println!("{mib} MiB tree, {runs} runs each, fresh repository per run, restic --no-cache");
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>12}",
        "variant", "median s", "mean s", "sd s", "vs plain"
    );
    println!(
        "{:<22} {pm:>9.3} {pmean:>9.3} {psd:>9.3} {:>12}",
        "restic backup", "-"
    );
    for (name, d) in [("stash backup step", step), ("stash backup_host", full)] {
        let (m, mean, sd) = stats(d);
        println!(
            "{name:<22} {m:>9.3} {mean:>9.3} {sd:>9.3} {:>+11.1}%",
            (m - pm) / pm * 100.0
        );
    }
}
