//! `kubectl stash` against the fake cluster of `tests/support`: each verb as
//! a person types it (parsed by the plugin's own clap CLI), its output
//! captured, its writes read back from the cluster. Repository verbs run the
//! real restic of this machine on a local repository in a temp dir (a local
//! backend whose mountPath exists here is reachable, see `src/plugin/repo.rs`).

mod debug;
mod guide;
mod pause;
mod process;
mod repo;
mod trigger;

use std::io::Write;
use std::sync::{Arc, Mutex};

use clap::Parser;
use serde_json::{Value, json};

use stash::plugin::{Cli, Io, connect::Connected, execute};
use stash_testkit::{Cluster, Identity};

pub const NS: &str = "demo";
pub const BCS: &str = "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupconfigurations";
pub const SESSIONS: &str = "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupsessions";
pub const REPOS: &str = "/apis/stash.appscode.com/v1alpha1/namespaces/demo/repositories";

/// Output written by a verb, shared with a task that runs it.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What one command printed and how it ended (`Err`: the one-line error).
#[derive(Debug)]
pub struct Ran {
    pub out: String,
    pub result: Result<(), String>,
}

impl Ran {
    /// The error line; the test fails when the command succeeded.
    pub fn error(&self) -> &str {
        match &self.result {
            Err(e) => e,
            Ok(()) => panic!("the command succeeded: {}", self.out),
        }
    }

    /// The output; the test fails when the command failed.
    pub fn ok(&self) -> &str {
        match &self.result {
            Ok(()) => &self.out,
            Err(e) => panic!("the command failed: {e}\n{}", self.out),
        }
    }
}

/// `kubectl stash <line>` as the cluster's admin, `answer` on stdin.
pub async fn kubectl_stash_as(
    cluster: &Cluster,
    identity: Identity,
    line: &str,
    answer: &str,
    out: Captured,
) -> Ran {
    let argv = std::iter::once("kubectl-stash").chain(line.split_whitespace());
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{line}: {e}"));
    let namespace = cli
        .args
        .kube
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let cx = Connected::new(cluster.client(identity), namespace);
    let mut writer = out.clone();
    let mut input = std::io::Cursor::new(answer.as_bytes().to_vec());
    let mut io = Io {
        out: &mut writer,
        input: &mut input,
    };
    let result = execute(&cli.args.command, &cx, &mut io)
        .await
        .map_err(|e| stash::plugin::errors::one_line(&format!("{e:#}")));
    Ran {
        out: out.text(),
        result,
    }
}

/// `kubectl stash <line>` as the cluster's admin.
pub async fn kubectl_stash(cluster: &Cluster, line: &str) -> Ran {
    kubectl_stash_as(cluster, Identity::admin(), line, "", Captured::default()).await
}

/// A BackupConfiguration like the guide's, named `name`, with `labels`.
pub fn config(name: &str, paused: bool, labels: Value) -> Value {
    json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "labels": labels},
        "spec": {
            "repository": {"name": "gcs-repo"},
            "schedule": "*/5 * * * *",
            "paused": paused,
            "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("{name}-app")},
                       "volumeMounts": [{"name": "source-data", "mountPath": "/source/data"}],
                       "paths": ["/source/data"]},
            "retentionPolicy": {"name": "keep-last-5", "keepLast": 5, "prune": true}
        }
    })
}

/// `spec.paused` of configuration `name` as stored.
pub fn paused(cluster: &Cluster, name: &str) -> bool {
    cluster.object(&format!("{BCS}/{name}"))["spec"]["paused"] == json!(true)
}
