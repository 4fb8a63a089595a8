//! What a backup test needs on this machine besides the cluster: a temp dir
//! with the data to back up, a local restic repository and the storage
//! Secret's keys as files (what the pod would have mounted), the guide's
//! BackupConfiguration and Repository pointed at it, the sidecar's session
//! loop as `run-backup` builds it, and `restic snapshots` to count what a
//! test caused. restic is real (scripts/test installs it).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use stash::backup::ResticSettings;
use stash::backup::controller::Sidecar;
use stash::backup::metrics::Metrics;
use stash::backup::restic::resolve_binary;
use stash::lease::Turns;
use stash::recorder::Recorder;

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

    /// `restic snapshots` of the repository; none before it is initialized.
    pub fn snapshots(&self) -> Vec<Value> {
        if std::fs::read_dir(self.p("repo")).unwrap().next().is_none() {
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
