//! What a backup test needs on this machine besides the cluster: a temp dir
//! with the data to back up, a local restic repository and the storage
//! Secret's keys as files (what the pod would have mounted), the guide's
//! BackupConfiguration and Repository pointed at it, the sidecar's session
//! loop as `run-backup` builds it, and `restic snapshots` to count what a
//! test caused. restic is real (scripts/test installs it).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use stash::api::{BackupConfiguration, HostRestorePhase, Repository, RestoreRule};
use stash::backup::controller::Sidecar;
use stash::backup::locks::NoLockHolders;
use stash::backup::metrics::Metrics;
use stash::backup::restic::resolve_binary;
use stash::backup::{ResticSettings, backup_host_with};
use stash::recorder::Recorder;
use stash::restore::engine::restore_host_with;
use stash::runtime::lease::Turns;

use crate::Cluster;
use crate::http::Served;
use crate::locks::BlockingRestic;

/// The namespace of the guide's objects.
pub const NS: &str = "demo";
/// The repository's password, in the Secret as `RESTIC_PASSWORD`.
pub const PASSWORD: &str = "changeit";

/// A temp dir laid out as the sidecar's pod sees its volumes.
pub struct Env {
    dir: tempfile::TempDir,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// `source/data/data.txt` to back up, an empty `repo`, `secret/RESTIC_PASSWORD`, `tmp`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for d in ["source/data", "repo", "secret", "tmp"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("temp dir layout");
        }
        std::fs::write(dir.path().join("source/data/data.txt"), "sample_data\n").unwrap();
        std::fs::write(dir.path().join("secret/RESTIC_PASSWORD"), PASSWORD).unwrap();
        Self { dir }
    }

    /// A path inside the temp dir.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The guide's BackupConfiguration `pause-backup`, backing up `source/data`.
    pub fn config(&self, paused: bool) -> Value {
        guide_config(paused, &self.p("source/data"))
    }

    /// The guide's Repository `gcs-repo`, on a local backend in `repo`.
    pub fn repository(&self) -> Value {
        local_repository(&self.p("repo"))
    }

    /// The sidecar of Deployment `stash-demo` for `pause-backup`, host
    /// `host-0`, on `client`; `turns` as for a StatefulSet's pods.
    pub fn sidecar(&self, client: kube::Client, turns: Option<Turns>) -> Sidecar {
        let binary = resolve_binary(Path::new("restic"), std::env::var_os("PATH").as_deref())
            .expect("restic must be installed (scripts/test installs it)");
        Sidecar::new(
            client.clone(),
            NS.into(),
            "pause-backup".into(),
            "Deployment".into(),
            "stash-demo".into(),
            "host-0".into(),
            self.p("secret"),
            ResticSettings::new(binary, self.p("tmp"), true),
            Recorder::new(client, "Backup Sidecar").on_host(Some("node-1".into())),
            Metrics::new(),
            turns,
        )
    }
    /// restic settings that fail a command at once on any lock left behind
    /// (no lock wait), scratch in `tmp/`.
    pub fn unforgiving_settings(&self) -> ResticSettings {
        let binary = resolve_binary(Path::new("restic"), std::env::var_os("PATH").as_deref())
            .expect("restic must be installed (apt-get install -y restic)");
        let mut s = ResticSettings::new(binary, self.p("tmp"), false);
        s.lock_wait = std::time::Duration::ZERO;
        s
    }

    /// What a stop must leave: a restore (which runs no `restic unlock`
    /// first) into `restored/` and a backup of `config` that go on at once,
    /// with `settings` (give [`Env::unforgiving_settings`] to fail on any
    /// lock left behind).
    pub async fn restore_then_backup_succeed(
        &self,
        config: &BackupConfiguration,
        repository: &Repository,
        settings: &ResticSettings,
    ) {
        let rule = RestoreRule {
            paths: vec![self.p("source/data").display().to_string()],
            ..Default::default()
        };
        std::fs::create_dir_all(self.p("restored")).expect("restored/");
        let restored = restore_host_with(
            &rule,
            repository,
            &self.p("secret"),
            "host-0",
            settings,
            &self.p("restored"),
            &NoLockHolders,
        )
        .await;
        assert_eq!(
            restored.phase,
            Some(HostRestorePhase::Succeeded),
            "{:?}",
            restored.error
        );
        let again = backup_host_with(
            config,
            repository,
            &self.p("secret"),
            "host-0",
            settings,
            &NoLockHolders,
        )
        .await;
        assert!(again.succeeded(), "{:?}", again.stats.error);
    }

    /// What a test of `stash` as a process stopped mid-command starts from:
    /// a first snapshot (so that the next `restic backup` reads one, see
    /// [`BlockingRestic`]), a cluster seeded with [`Env::config`] and
    /// [`Env::repository`] served as the sidecar's ServiceAccount, a
    /// kubeconfig for it in `etc/`, and a restic held in `subcommand` (its
    /// script in `bin/`).
    pub async fn stopped_process_setup(&self, subcommand: &str) -> StoppedProcessSetup {
        let config: BackupConfiguration = serde_json::from_value(self.config(false)).unwrap();
        let repository: Repository = serde_json::from_value(self.repository()).unwrap();
        let first = backup_host_with(
            &config,
            &repository,
            &self.p("secret"),
            "host-0",
            &self.unforgiving_settings(),
            &NoLockHolders,
        )
        .await;
        assert!(first.succeeded(), "{:?}", first.stats.error);

        let cluster = Cluster::new();
        cluster.seed(self.config(false));
        cluster.seed(self.repository());
        let served = cluster
            .serve_http(crate::Identity::sidecar(NS, "default"))
            .await;
        std::fs::create_dir_all(self.p("etc")).unwrap();
        let kubeconfig = served.kubeconfig(&self.p("etc"));
        let restic = resolve_binary(Path::new("restic"), std::env::var_os("PATH").as_deref())
            .expect("restic must be installed (apt-get install -y restic)");
        let blocking = BlockingRestic::new(&self.p("bin"), &restic, &self.p("repo"), subcommand);
        StoppedProcessSetup {
            config,
            repository,
            cluster,
            served,
            kubeconfig,
            blocking,
        }
    }

    /// `restic snapshots` of the repository; none before it is initialized
    /// (no `config` yet: a run stopped at its deadline may have been
    /// stopped in the middle of `restic init`).
    pub fn snapshots(&self) -> Vec<Value> {
        if !self.p("repo/config").exists() {
            return Vec::new();
        }
        let out = std::process::Command::new("restic")
            .env_clear()
            .env("RESTIC_REPOSITORY", self.p("repo"))
            .env("RESTIC_PASSWORD", PASSWORD)
            .args(["--no-cache", "snapshots", "--json", "--no-lock"])
            .output()
            .expect("restic runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("restic's JSON")
    }
}

/// See [`Env::stopped_process_setup`]. Keep it (its `served` above all)
/// until the process under test has exited: dropping `served` stops serving
/// the cluster.
pub struct StoppedProcessSetup {
    /// [`Env::config`], typed.
    pub config: BackupConfiguration,
    /// [`Env::repository`], typed.
    pub repository: Repository,
    pub cluster: Cluster,
    /// `cluster` served as the sidecar's ServiceAccount `demo/default`.
    pub served: Served,
    /// `etc/kubeconfig`, pointing at `served`.
    pub kubeconfig: PathBuf,
    pub blocking: BlockingRestic,
}

/// The guide's BackupConfiguration, with its path pointed at `path`.
pub fn guide_config(paused: bool, path: &Path) -> Value {
    json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
        "metadata": {"name": "pause-backup", "namespace": NS, "uid": "bc-uid"},
        "spec": {
            "repository": {"name": "gcs-repo"},
            "schedule": "*/5 * * * *",
            "paused": paused,
            "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "stash-demo"},
                       "volumeMounts": [{"name": "source-data", "mountPath": "/source/data"}],
                       "paths": [path.display().to_string()]},
            "retentionPolicy": {"name": "keep-last-5", "keepLast": 5, "prune": true}
        }
    })
}

/// The guide's Repository (named gcs-repo), on a local backend at `dir`.
pub fn local_repository(dir: &Path) -> Value {
    json!({
        "apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
        "metadata": {"name": "gcs-repo", "namespace": NS},
        "spec": {"backend": {"local": {"mountPath": dir.display().to_string(),
                                        "hostPath": {"path": dir.display().to_string()}},
                             "storageSecretName": "gcs-secret"}}
    })
}

// Identities: restic run as stash's containers would run it.

/// Whether this process runs as root (CI does): the privilege tests chown
/// files to other users and drop to the planned identity with `setpriv`.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The `securityContext`s the real planners give the `stash` sidecar and
/// the `stash-init` container of a Deployment whose pod and `app`
/// container (mounting the target's volume) carry `pod` and `app` (`null`:
/// none), for a BackupConfiguration and a RestoreSession without
/// runtimeSettings.
pub fn planned_security(pod: Value, app: Value) -> (Value, Value) {
    use stash::settings::Settings;
    let mut workload = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "stash-demo", "namespace": NS},
        "spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": "postgres:16",
                            "volumeMounts": [{"name": "source-data", "mountPath": "/source/data"}]}],
            "volumes": [{"name": "source-data", "emptyDir": {}}]}}}
    });
    if !pod.is_null() {
        workload["spec"]["template"]["spec"]["securityContext"] = pod;
    }
    if !app.is_null() {
        workload["spec"]["template"]["spec"]["containers"][0]["securityContext"] = app;
    }
    let mut snap = stash::store::Snapshot::default();
    snap.upsert_config(
        serde_json::from_value(guide_config(false, Path::new("/source/data"))).unwrap(),
    );
    snap.upsert_repository(serde_json::from_value(local_repository(Path::new("/repo"))).unwrap());
    snap.upsert_restore(
        serde_json::from_value(json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession",
            "metadata": {"name": "restore", "namespace": NS},
            "spec": {"repository": {"name": "gcs-repo"},
                     "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "stash-demo"},
                                "volumeMounts": [{"name": "source-data", "mountPath": "/source/data"}]}}
        }))
        .unwrap(),
    );
    let settings = Settings::default();
    let sidecar = stash::sidecar::plan(&workload, &snap, &settings);
    json_patch::patch(&mut workload, &sidecar.ops).expect("the sidecar plan applies");
    let init = stash::restore::init::plan(&workload, &snap, &settings);
    json_patch::patch(&mut workload, &init.ops).expect("the stash-init plan applies");
    let spec = &workload["spec"]["template"]["spec"];
    let find = |list: &str, name: &str| {
        spec[list]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name))
            .map(|c| c["securityContext"].clone())
            .filter(|sc| sc.is_object())
            .unwrap_or_else(|| panic!("{name} has a planned securityContext"))
    };
    (
        find("containers", "stash"),
        find("initContainers", "stash-init"),
    )
}

/// Who a container with a given securityContext runs restic as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Capabilities (`DAC_OVERRIDE`, …): all a root process keeps; none
    /// for another user (the runtime gives a non-root process no effective
    /// capabilities, `allowPrivilegeEscalation: false`).
    pub caps: Vec<String>,
}

impl Identity {
    /// The identity of a `securityContext` (JSON): `runAsUser`,
    /// `runAsGroup` (absent: 0, as for a uid the image does not name),
    /// `capabilities.add` once `drop: [ALL]`.
    pub fn of(sc: &Value) -> Self {
        let id = |field: &str| {
            sc[field]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0)
        };
        let dropped_all = sc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|c| c == "ALL"));
        assert!(dropped_all, "the planned context drops ALL: {sc}");
        let caps = sc["capabilities"]["add"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str())
                    .map(|c| c.trim_start_matches("CAP_").to_string())
                    .collect()
            })
            .unwrap_or_default();
        Self {
            uid: id("runAsUser"),
            gid: id("runAsGroup"),
            caps,
        }
    }

    /// This identity without capability `cap`.
    pub fn without(&self, cap: &str) -> Self {
        Self {
            caps: self.caps.iter().filter(|c| *c != cap).cloned().collect(),
            ..self.clone()
        }
    }

    /// A `--restic-binary` for `ResticSettings::binary`: a script in `dir`
    /// that runs restic as this identity, with exactly its capabilities
    /// (effective, permitted, inheritable, ambient and bounding sets) and
    /// no supplementary groups.
    pub fn wrapper(&self, dir: &Path, restic: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let caps: String = self
            .caps
            .iter()
            .map(|c| format!(",+{}", c.to_lowercase()))
            .collect();
        let script = format!(
            "#!/bin/sh\nexec setpriv --reuid={uid} --regid={gid} --clear-groups --inh-caps=-all{caps} --ambient-caps=-all{caps} --bounding-set=-all{caps} {restic} \"$@\"\n",
            uid = self.uid,
            gid = self.gid,
            restic = restic.display()
        );
        let name = format!(
            "restic-as-{}-{}{}",
            self.uid,
            self.gid,
            caps.replace(",+", "-")
        );
        let path = dir.join(name);
        std::fs::write(&path, script).expect("wrapper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// The `CapEff` line of `/proc/self/status` a process of this identity
    /// shows (what the wrapper's restic runs with).
    pub fn effective_caps(&self, dir: &Path) -> String {
        let wrapper = self.wrapper(dir, Path::new("/bin/grep"));
        let out = std::process::Command::new(wrapper)
            .args(["^CapEff", "/proc/self/status"])
            .output()
            .expect("grep runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Lays out, under `root`, what a database volume holds: `pgdata` (uid 999,
/// `0700`) with `PG_VERSION` (`0600`), a uid 1000 `0644` file, a root-owned
/// `0640` file, a setgid directory (uid 1000, gid 2000, `2775`) with a file,
/// a symlink. Needs root.
pub fn mixed_tree(root: &Path) {
    use std::os::unix::fs::{PermissionsExt, chown, lchown, symlink};
    let set = |rel: &str, uid: u32, gid: u32, mode: u32| {
        let p = root.join(rel);
        chown(&p, Some(uid), Some(gid)).expect("chown");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    std::fs::create_dir_all(root.join("pgdata")).unwrap();
    std::fs::create_dir_all(root.join("shared")).unwrap();
    std::fs::write(root.join("pgdata/PG_VERSION"), "16\n").unwrap();
    std::fs::write(root.join("app.conf"), "listen=*\n").unwrap();
    std::fs::write(root.join("root.key"), "k").unwrap();
    std::fs::write(root.join("shared/report.csv"), "a,b\n").unwrap();
    symlink("pgdata/PG_VERSION", root.join("version")).unwrap();
    lchown(root.join("version"), Some(999), Some(999)).unwrap();
    set("pgdata/PG_VERSION", 999, 999, 0o600);
    set("pgdata", 999, 999, 0o700);
    set("app.conf", 1000, 1000, 0o644);
    set("root.key", 0, 0, 0o640);
    set("shared/report.csv", 1000, 2000, 0o664);
    set("shared", 1000, 2000, 0o2775);
}

/// Every entry under `root`, sorted: path, `uid:gid`, mode (with the
/// setuid/setgid/sticky bits), and the file's bytes or the link's target.
/// Needs to be able to read it all (root).
pub fn listing(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let content = if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_file() {
                format!(
                    "{:?}",
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap())
                )
            } else {
                "dir".to_string()
            };
            let mode = if meta.file_type().is_symlink() {
                0
            } else {
                meta.mode() & 0o7777
            };
            out.push(format!(
                "{rel} {}:{} {mode:04o} {content}",
                meta.uid(),
                meta.gid()
            ));
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}
