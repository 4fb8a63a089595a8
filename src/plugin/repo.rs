//! `unlock`, `check` and `download`: restic on the user's machine, against
//! the Repository's backend, with the storage Secret's keys read from the
//! cluster.
//!
//! The restic environment is the sidecar's own
//! ([`crate::backup::repository::prepare`]): the Secret's keys are written
//! one file per key into a private (0700) temporary directory, exactly as
//! the pod mounts them, and removed when the command ends. So a Repository
//! the sidecar can open, the plugin opens the same way, for every object
//! store backend.
//!
//! A `local` backend lives on a volume only pods mount. When its `mountPath`
//! exists on this machine (a hostPath on a one-node cluster, an NFS export
//! mounted at the same path, a test's temp dir) it is used, and the command
//! says so; otherwise the command says in one line where restic can reach it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};

use crate::api::{Backend, Repository};
use crate::backup::repository::{ResticSettings, SetupError, prepare};
use crate::backup::restic::{
    Integrity, LockInfo, Restic, ResticError, integrity, parse_snapshots, resolve_binary,
};
use crate::restore::decide::{latest_per_path_args, restore_args};

use super::connect::Connected;
use super::errors::{REPOSITORY, REPOSITORY_STATUS, Request, SECRET, describe};
use super::{Io, Outcome, say};

/// Where the sidecar mounts the storage Secret (for the `kubectl exec` hint).
const POD_SECRET_DIR: &str = crate::sidecar::SECRET_DIR;

/// The Repository and the local restic every repository verb takes.
#[derive(Debug, Clone, clap::Args)]
pub struct RepoFlags {
    /// The Repository.
    pub repository: String,
    /// restic executable, looked up on PATH unless it is a path.
    #[arg(long, env = "STASH_RESTIC_BINARY", default_value = "restic")]
    pub restic_binary: PathBuf,
}

/// `unlock` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub repo: RepoFlags,
    /// Remove every lock, also those of backups running now (asks first).
    #[arg(long)]
    pub remove_all: bool,
    /// Do not ask before --remove-all.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `check` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub repo: RepoFlags,
    /// Also read every pack file (slow; downloads the whole repository).
    #[arg(long)]
    pub read_data: bool,
    /// Read only a subset of the pack files (restic's `n/t` or `x%`).
    #[arg(long, conflicts_with = "read_data")]
    pub read_data_subset: Option<String>,
}

/// `download` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DownloadArgs {
    #[command(flatten)]
    pub repo: RepoFlags,
    /// Directory to restore into (snapshots' absolute paths are recreated under it).
    #[arg(long)]
    pub destination: PathBuf,
    /// Whose latest snapshots to restore (default: the repository's only host).
    #[arg(long)]
    pub host: Option<String>,
    /// Restore these snapshot ids instead of the host's latest.
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    pub snapshots: Vec<String>,
}

/// A Repository opened with local restic. The Secret's directory lives as
/// long as this value.
pub struct Opened {
    pub repository: Repository,
    pub restic: Restic,
    /// Said before the result (a local backend used on this machine).
    pub note: Option<String>,
    _dir: tempfile::TempDir,
}

/// Whether the backend can be reached from this machine: `Ok(note)` when it
/// can (a note for a local backend), `Err(line)` saying where it can be.
pub fn reach(
    backend: &Backend,
    namespace: &str,
    name: &str,
    verb: &str,
    exists: impl Fn(&Path) -> bool,
) -> Result<Option<String>, String> {
    let Some(local) = &backend.local else {
        return Ok(None);
    };
    let path = local.mount_path.as_str();
    if !path.is_empty() && exists(Path::new(path)) {
        return Ok(Some(format!(
            "note: repository {name:?} has a local backend; using {path} on this machine, where it exists"
        )));
    }
    Err(format!(
        "repository {name:?} has a local backend ({path}), reachable only from pods that mount its volume: run restic in one, e.g. kubectl exec -n {namespace} <pod with the stash sidecar> -c stash -- restic -r {path} --password-file {POD_SECRET_DIR}/RESTIC_PASSWORD {verb}"
    ))
}

/// Reads the Repository and its Secret, and prepares local restic.
pub async fn open(cx: &Connected, flags: &RepoFlags, verb: &str) -> anyhow::Result<Opened> {
    let name = flags.repository.as_str();
    let ns = cx.namespace.as_str();
    let repos: Api<Repository> = Api::namespaced(cx.client.clone(), ns);
    let repository = repos.get(name).await.map_err(|e| {
        anyhow::anyhow!(describe(
            &Request::new("get", REPOSITORY, Some(name), ns),
            &e
        ))
    })?;
    let backend = &repository.spec.backend;
    let note = reach(backend, ns, name, verb, Path::is_dir).map_err(anyhow::Error::msg)?;
    let binary = resolve_binary(&flags.restic_binary, std::env::var_os("PATH").as_deref())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "restic not found ({}): install restic (https://restic.net, e.g. apt-get install restic) or pass --restic-binary PATH",
                flags.restic_binary.display()
            )
        })?;
    let secret_name = backend
        .storage_secret_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| anyhow::anyhow!("repository {name:?} names no storageSecretName"))?;
    let secrets: Api<Secret> = Api::namespaced(cx.client.clone(), ns);
    let secret = secrets.get(secret_name).await.map_err(|e| {
        anyhow::anyhow!(describe(
            &Request::new("get", SECRET, Some(secret_name), ns),
            &e
        ))
    })?;
    let dir = tempfile::Builder::new()
        .prefix("kubectl-stash-")
        .tempdir()
        .map_err(|e| anyhow::anyhow!("cannot create a private temporary directory: {e}"))?;
    let secret_dir = dir.path().join("secret");
    write_secret(&secret_dir, &secret)?;
    // Ctrl-C reaches restic too (one process group) and restic removes its
    // own lock on SIGINT; no stop signal of ours is needed.
    let settings = ResticSettings::new(binary, dir.path().join("scratch"), false);
    let restic = prepare(backend, &secret_dir, &settings)
        .map_err(|e| anyhow::anyhow!(setup_error(name, secret_name, e)))?;
    Ok(Opened {
        repository,
        restic,
        note,
        _dir: dir,
    })
}

/// [`SetupError`] in the user's terms: a missing key is a key of the Secret,
/// not a file in our temporary directory.
pub fn setup_error(repo: &str, secret: &str, e: SetupError) -> String {
    match e {
        SetupError::MissingSecret { name, .. } => format!(
            "secret {secret:?} has no key {name}, which repository {repo:?}'s backend needs"
        ),
        other => format!("repository {repo:?}: {other}"),
    }
}

/// Whether `key` is a Secret key that is safe as a file name.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The Secret's keys as files (0600) in a new 0700 directory, as the pod mounts them.
fn write_secret(dir: &Path, secret: &Secret) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let fail = |e: std::io::Error| {
        anyhow::anyhow!("cannot write the Secret's keys to {}: {e}", dir.display())
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    for (key, value) in secret.data.iter().flatten() {
        if !valid_key(key) {
            continue;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(key))
            .map_err(fail)?;
        f.write_all(&value.0).map_err(fail)?;
    }
    Ok(())
}

/// A restic failure as one line naming the repository.
fn restic_failed(repo: &str, e: ResticError) -> anyhow::Error {
    anyhow::anyhow!("repository {repo:?}: {e}")
}

// ---- unlock -----------------------------------------------------------------

/// A lock as one line: `lock 1a2b3c4d held by host h (pid 7) since T, exclusive`.
pub fn lock_line(id: &str, lock: &LockInfo) -> String {
    let kind = if lock.exclusive {
        "exclusive"
    } else {
        "shared"
    };
    format!(
        "lock {} held by {} (pid {}) since {}, {kind}",
        id.get(..8).unwrap_or(id),
        lock.hostname,
        lock.pid,
        lock.time
    )
}

/// The repository's locks with their content (a lock removed meanwhile is left out).
pub async fn locks(restic: &Restic) -> Result<Vec<(String, LockInfo)>, ResticError> {
    let mut out = Vec::new();
    for id in restic.list_locks().await? {
        if let Ok(info) = restic.lock_info(&id).await {
            out.push((id, info));
        }
    }
    Ok(out)
}

/// `unlock`: restic's stale-lock removal, or every lock after a confirmation.
pub async fn unlock(cx: &Connected, args: &UnlockArgs, io: &mut Io<'_>) -> Outcome {
    let name = args.repo.repository.as_str();
    let opened = open(cx, &args.repo, "unlock").await?;
    if let Some(note) = &opened.note {
        say(io, note)?;
    }
    let restic = &opened.restic;
    let before = locks(restic).await.map_err(|e| restic_failed(name, e))?;
    if before.is_empty() {
        return say(
            io,
            format!("repository.stash.appscode.com/{name} has no locks"),
        );
    }
    if args.remove_all {
        return remove_all(name, restic, &before, args.yes, io).await;
    }
    restic.unlock().await.map_err(|e| restic_failed(name, e))?;
    let after: BTreeSet<String> = restic
        .list_locks()
        .await
        .map_err(|e| restic_failed(name, e))?
        .into_iter()
        .collect();
    for line in unlock_report(name, &before, &after) {
        say(io, line)?;
    }
    Ok(())
}

/// What `restic unlock` did, lock by lock.
pub fn unlock_report(
    repo: &str,
    before: &[(String, LockInfo)],
    after: &BTreeSet<String>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut removed = 0;
    for (id, lock) in before {
        if after.contains(id) {
            lines.push(format!(
                "kept {} (not stale: its process may still run; --remove-all removes it)",
                lock_line(id, lock)
            ));
        } else {
            removed += 1;
            lines.push(format!("removed stale {}", lock_line(id, lock)));
        }
    }
    lines.push(format!(
        "repository.stash.appscode.com/{repo}: {removed} stale lock(s) removed, {} kept",
        before.len() - removed
    ));
    lines
}

async fn remove_all(
    name: &str,
    restic: &Restic,
    before: &[(String, LockInfo)],
    yes: bool,
    io: &mut Io<'_>,
) -> Outcome {
    for (id, lock) in before {
        say(io, lock_line(id, lock))?;
    }
    if !yes {
        let question = format!(
            "Remove all {} lock(s) of repository {:?}, also those of restic runs in progress (a prune and a backup running together can damage it)? [y/N] ",
            before.len(),
            name
        );
        if !confirm(io, &question)? {
            anyhow::bail!("aborted: no lock removed");
        }
    }
    restic
        .remove_all_locks()
        .await
        .map_err(|e| restic_failed(name, e))?;
    say(
        io,
        format!(
            "repository.stash.appscode.com/{name}: {} lock(s) removed",
            before.len()
        ),
    )
}

/// Asks `question`; only `y` or `yes` is a yes (an empty line, EOF: no).
fn confirm(io: &mut Io<'_>, question: &str) -> anyhow::Result<bool> {
    write!(io.out, "{question}")
        .and_then(|()| io.out.flush())
        .map_err(|e| anyhow::anyhow!("cannot write the output: {e}"))?;
    let mut answer = String::new();
    io.input
        .read_line(&mut answer)
        .map_err(|e| anyhow::anyhow!("cannot read the answer: {e}"))?;
    Ok(is_yes(&answer))
}

/// Whether an answer to a [y/N] question is yes.
pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

// ---- check ------------------------------------------------------------------

/// `restic check` arguments.
pub fn check_args(read_data: bool, subset: Option<&str>) -> Vec<String> {
    let mut args = vec!["check".to_string()];
    if read_data {
        args.push("--read-data".to_string());
    }
    if let Some(s) = subset {
        args.push(format!("--read-data-subset={s}"));
    }
    args
}

/// The merge patch of the Repository's status for a check's result: only
/// `integrity`, as the sidecar writes it after its own check.
pub fn integrity_patch(intact: bool) -> serde_json::Value {
    serde_json::json!({"status": {"integrity": intact}})
}

/// `check`: restic check, and its result in `status.integrity` (INTEGRITY).
/// A check that could not run says nothing about the data and writes nothing.
pub async fn check(cx: &Connected, args: &CheckArgs, io: &mut Io<'_>) -> Outcome {
    let name = args.repo.repository.as_str();
    let opened = open(cx, &args.repo, "check").await?;
    if let Some(note) = &opened.note {
        say(io, note)?;
    }
    let run = opened
        .restic
        .run(&check_args(
            args.read_data,
            args.read_data_subset.as_deref(),
        ))
        .await;
    let result = integrity(run).map_err(|e| {
        anyhow::anyhow!(
            "{}; status.integrity left as it was",
            restic_failed(name, e)
        )
    })?;
    let intact = result == Integrity::Intact;
    let repos: Api<Repository> = Api::namespaced(cx.client.clone(), &cx.namespace);
    repos
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&integrity_patch(intact)),
        )
        .await
        .map_err(|e| {
            let req = Request::new("patch", REPOSITORY_STATUS, Some(name), &cx.namespace);
            anyhow::anyhow!(
                "restic check: {}; but {}",
                if intact {
                    "no errors were found"
                } else {
                    "the repository contains errors"
                },
                describe(&req, &e)
            )
        })?;
    match result {
        Integrity::Intact => say(
            io,
            format!(
                "repository.stash.appscode.com/{name}: no errors were found (status.integrity: true)"
            ),
        ),
        Integrity::Damaged(report) => {
            anyhow::bail!("repository {name:?} contains errors (status.integrity: false): {report}")
        }
    }
}

// ---- download ---------------------------------------------------------------

/// The host whose snapshots to restore: the one asked for, else the only
/// one the repository holds.
pub fn pick_host(asked: Option<&str>, hosts: &BTreeSet<String>) -> Result<String, String> {
    if let Some(h) = asked {
        return if hosts.contains(h) {
            Ok(h.to_string())
        } else {
            Err(format!(
                "the repository holds no snapshot of host {h:?} (hosts: {})",
                join_or_none(hosts)
            ))
        };
    }
    match hosts.len() {
        1 => Ok(hosts.iter().next().cloned().unwrap_or_default()),
        0 => Err("the repository holds no snapshot".to_string()),
        _ => Err(format!(
            "the repository holds snapshots of several hosts ({}): pass --host",
            join_or_none(hosts)
        )),
    }
}

fn join_or_none(hosts: &BTreeSet<String>) -> String {
    if hosts.is_empty() {
        "none".to_string()
    } else {
        hosts.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// `download`: restores the host's latest snapshot of each path (or the
/// named snapshots) into the destination.
pub async fn download(cx: &Connected, args: &DownloadArgs, io: &mut Io<'_>) -> Outcome {
    let name = args.repo.repository.as_str();
    let opened = open(cx, &args.repo, "restore latest --target /tmp/restore").await?;
    if let Some(note) = &opened.note {
        say(io, note)?;
    }
    let restic = &opened.restic;
    std::fs::create_dir_all(&args.destination).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the destination {}: {e}",
            args.destination.display()
        )
    })?;
    let destination = args.destination.canonicalize().map_err(|e| {
        anyhow::anyhow!(
            "cannot use the destination {}: {e}",
            args.destination.display()
        )
    })?;
    let target = destination.to_string_lossy();
    let ids: Vec<(String, String)> = if args.snapshots.is_empty() {
        let all = restic
            .snapshots()
            .await
            .map_err(|e| restic_failed(name, e))?;
        let hosts: BTreeSet<String> = all.iter().map(|s| s.hostname.clone()).collect();
        let host = pick_host(args.host.as_deref(), &hosts)
            .map_err(|e| anyhow::anyhow!("repository {name:?}: {e}"))?;
        let out = restic
            .run(&latest_per_path_args(&host))
            .await
            .map_err(|e| restic_failed(name, e))?;
        parse_snapshots(&out)
            .map_err(|e| anyhow::anyhow!("cannot read the output of restic snapshots: {e}"))?
            .into_iter()
            .map(|s| (s.id, format!("host {}, {}", s.hostname, s.paths.join(", "))))
            .collect()
    } else {
        args.snapshots
            .iter()
            .map(|id| (id.clone(), String::new()))
            .collect()
    };
    for (id, what) in ids {
        restic
            .run(&restore_args(&id, &target, None, None))
            .await
            .map_err(|e| restic_failed(name, e))?;
        let what = if what.is_empty() {
            String::new()
        } else {
            format!(" ({what})")
        };
        say(
            io,
            format!(
                "restored snapshot {}{what} into {target}",
                id.get(..8).unwrap_or(&id)
            ),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{GcsSpec, LocalSpec};

    fn local(path: &str) -> Backend {
        Backend {
            local: Some(LocalSpec {
                mount_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn local_backends_are_reachable_only_where_they_exist() {
        let gcs = Backend {
            gcs: Some(GcsSpec {
                bucket: "b".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(reach(&gcs, "demo", "r", "unlock", |_| false), Ok(None));
        let here = reach(&local("/safe/data"), "demo", "r", "unlock", |_| true).unwrap();
        assert!(here.unwrap().contains("using /safe/data on this machine"));
        let there = reach(&local("/safe/data"), "demo", "r", "unlock", |_| false).unwrap_err();
        assert_eq!(
            there,
            "repository \"r\" has a local backend (/safe/data), reachable only from pods that mount its volume: run restic in one, e.g. kubectl exec -n demo <pod with the stash sidecar> -c stash -- restic -r /safe/data --password-file /etc/stash/repository/secret/RESTIC_PASSWORD unlock"
        );
    }

    #[test]
    fn secret_keys_must_be_file_names() {
        assert!(valid_key("RESTIC_PASSWORD"));
        assert!(valid_key("ca.crt"));
        assert!(!valid_key(".."));
        assert!(!valid_key("a/b"));
        assert!(!valid_key(""));
    }

    #[test]
    fn the_host_is_the_asked_or_the_only_one() {
        let one: BTreeSet<String> = ["host-0".to_string()].into();
        let two: BTreeSet<String> = ["host-0".to_string(), "host-1".to_string()].into();
        assert_eq!(pick_host(None, &one).unwrap(), "host-0");
        assert!(pick_host(None, &two).unwrap_err().contains("pass --host"));
        assert_eq!(pick_host(Some("host-1"), &two).unwrap(), "host-1");
        assert!(
            pick_host(Some("x"), &one)
                .unwrap_err()
                .contains("(hosts: host-0)")
        );
        assert!(pick_host(None, &BTreeSet::new()).is_err());
    }

    #[test]
    fn answers_and_args() {
        assert!(is_yes("y\n") && is_yes("YES") && !is_yes("") && !is_yes("no"));
        assert_eq!(check_args(false, None), ["check"]);
        assert_eq!(check_args(true, None), ["check", "--read-data"]);
        assert_eq!(
            check_args(false, Some("10%")),
            ["check", "--read-data-subset=10%"]
        );
        assert_eq!(
            integrity_patch(false),
            serde_json::json!({"status": {"integrity": false}})
        );
    }

    #[test]
    fn unlock_reports_each_lock() {
        let lock = LockInfo {
            time: "2026-12-07T01:00:00Z".into(),
            exclusive: false,
            hostname: "stash-demo-abc".into(),
            pid: 7,
        };
        let before = vec![
            ("aaaaaaaaaaaa".to_string(), lock.clone()),
            ("bbbbbbbbbbbb".to_string(), lock),
        ];
        let after: BTreeSet<String> = ["bbbbbbbbbbbb".to_string()].into();
        assert_eq!(
            unlock_report("r", &before, &after),
            [
                "removed stale lock aaaaaaaa held by stash-demo-abc (pid 7) since 2026-12-07T01:00:00Z, shared",
                "kept lock bbbbbbbb held by stash-demo-abc (pid 7) since 2026-12-07T01:00:00Z, shared (not stale: its process may still run; --remove-all removes it)",
                "repository.stash.appscode.com/r: 1 stale lock(s) removed, 1 kept",
            ]
        );
    }
}
