//! The user's guides as steps, in one place for the three tests that walk
//! them: `docs/guide/pause-backup.md` ("Configure Backup" through "Resume
//! Backup") and `docs/restore.md`, on the fake cluster (`tests/guide.rs`,
//! `tests/restore/cluster.rs`) and on a real one (`tests/e2e_cluster`).
//!
//! What is shared is what a user sees and the order they see it in: the
//! guide's names and YAMLs (with the tests' one edit: the Repository, the
//! backed-up path and the RestoreSession's path point into a temp dir), the
//! columns `kubectl get` prints, the events `kubectl describe` lists, the
//! warnings `kubectl` prints, the CronJob's args, the conditions, the
//! session's labels; the kubelet's part (a container's volumes, the
//! Secret's keys as files, the downward API); and the guides' sections in
//! order ([`PauseBackupGuide`], [`RestoreGuide`], walked by [`pause_backup`]
//! and [`restore`]). How each step happens differs — the fake cluster calls
//! the controllers itself, the real one is waited for — so each test
//! implements the steps with its cluster's mechanics and checks these
//! expectations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use base64::Engine;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceColumnDefinition;
use serde_json::{Value, json};

pub use crate::restic::{NS, PASSWORD};

// ---------------------------------------------------------------------------
// The guide's names
// ---------------------------------------------------------------------------

/// The BackupConfiguration.
pub const BC: &str = "pause-backup";
/// The Deployment backed up (and restored).
pub const DEPLOY: &str = "stash-demo";
/// Its PersistentVolumeClaim.
pub const PVC: &str = "source-pvc";
/// The CronJob the reconciler makes for [`BC`].
pub const CRONJOB: &str = "stash-backup-pause-backup";
/// The storage Secret.
pub const SECRET: &str = "gcs-secret";
/// The Repository.
pub const REPO: &str = "gcs-repo";
/// The guide's instant BackupSession (`backupsession.yaml`).
pub const INSTANT: &str = "instant-backupsession";
/// The RestoreSession of docs/restore.md.
pub const RESTORE: &str = "restore-stash-demo";
/// The restic host of a Deployment's backups (one host for all replicas).
pub const HOST: &str = "host-0";
/// The configuration's schedule.
pub const SCHEDULE: &str = "*/5 * * * *";
/// The finalizer the reconciler puts on configurations and RestoreSessions.
pub const FINALIZER: &str = "stash.appscode.com";
/// Where the injected containers mount the storage Secret, and their scratch dir.
pub const SECRET_MOUNT: &str = "/etc/stash/repository/secret";
pub const SCRATCH_MOUNT: &str = "/tmp";
/// The path the guide backs up, in the pod.
pub const DATA_MOUNT: &str = "/source/data";
/// The Deployment's annotation naming its configuration, and its RestoreSession.
pub const LAST_APPLIED_CONFIGURATION: &str = "stash.appscode.com/last-applied-backupconfiguration";
pub const LAST_APPLIED_RESTORE: &str = "stash.appscode.com/last-applied-restoresession";

// ---------------------------------------------------------------------------
// The guide's YAMLs, as the tests apply them
// ---------------------------------------------------------------------------

/// The YAML documents of `text` (empty documents skipped), as JSON.
pub fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .filter_map(|doc| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).expect("valid YAML");
            (!v.is_null()).then(|| serde_json::to_value(v).expect("YAML as JSON"))
        })
        .collect()
}

/// The documents of the repository's YAML file `rel`.
pub fn yaml_file(rel: &str) -> Vec<Value> {
    let path = crate::repo_root().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml_docs(&text)
}

/// The guide's `manifests/examples/<file>`, as it is (namespace `demo`).
pub fn example(file: &str) -> Vec<Value> {
    yaml_file(&format!("manifests/examples/{file}"))
}

/// The guide's `manifests/examples/<file>`, each document moved to `ns`.
pub fn example_in(file: &str, ns: &str) -> Vec<Value> {
    in_namespace(example(file), ns)
}

fn in_namespace(docs: Vec<Value>, ns: &str) -> Vec<Value> {
    docs.into_iter()
        .map(|mut doc| {
            doc["metadata"]["namespace"] = json!(ns);
            doc
        })
        .collect()
}

/// `kubectl create secret generic -n <ns> gcs-secret --from-file=./RESTIC_PASSWORD`.
pub fn secret(ns: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": SECRET, "namespace": ns},
           "data": {"RESTIC_PASSWORD": base64::engine::general_purpose::STANDARD.encode(PASSWORD)}})
}

/// The guide's `repository.yaml` in `ns`, on a local backend at `repo_dir`
/// instead of GCS (the sidecar runs on this machine).
pub fn repository_on(ns: &str, repo_dir: &Path) -> Value {
    let mut repo = example_in("repository.yaml", ns).remove(0);
    assert_eq!(repo["metadata"]["name"], REPO);
    assert_eq!(repo["spec"]["backend"]["storageSecretName"], SECRET);
    let dir = repo_dir.display().to_string();
    repo["spec"]["backend"] = json!({
        "local": {"mountPath": dir, "hostPath": {"path": dir}},
        "storageSecretName": SECRET
    });
    repo
}

/// The data the guide's busybox writes into the PVC, at `data_dir`.
pub fn write_guide_data(data_dir: &Path) {
    std::fs::create_dir_all(data_dir).unwrap();
    std::fs::write(data_dir.join("data.txt"), "sample_data\n").unwrap();
}

/// The guide's `backupconfiguration.yaml` in `ns`, backing up `data_dir`
/// (mounted there) instead of `/source/data`.
pub fn configuration_on(ns: &str, data_dir: &Path) -> Value {
    let mut bc = example_in("backupconfiguration.yaml", ns).remove(0);
    assert_eq!(bc["metadata"]["name"], BC);
    assert_eq!(bc["spec"]["target"]["paths"], json!([DATA_MOUNT]));
    let data = data_dir.display().to_string();
    bc["spec"]["target"]["paths"] = json!([data]);
    bc["spec"]["target"]["volumeMounts"][0]["mountPath"] = json!(data);
    bc
}

/// The guide's `deployment.yaml` in `ns`: (the PVC, the Deployment).
pub fn pvc_and_deployment(ns: &str) -> (Value, Value) {
    let mut docs = example_in("deployment.yaml", ns);
    assert_eq!(docs.len(), 2, "deployment.yaml: the PVC and the Deployment");
    let deployment = docs.remove(1);
    let pvc = docs.remove(0);
    assert_eq!(pvc["metadata"]["name"], PVC);
    assert_eq!(deployment["metadata"]["name"], DEPLOY);
    (pvc, deployment)
}

/// The guide's `backupsession.yaml` in `ns`.
pub fn instant_session(ns: &str) -> Value {
    let session = example_in("backupsession.yaml", ns).remove(0);
    assert_eq!(session["metadata"]["name"], INSTANT);
    session
}

/// docs/restore.md's `manifests/restore/restoresession.yaml` in `ns`,
/// restoring `data_dir` (mounted there) instead of `/source/data`.
pub fn restore_session_on(ns: &str, data_dir: &Path) -> Value {
    let mut rs = in_namespace(yaml_file("manifests/restore/restoresession.yaml"), ns).remove(0);
    assert_eq!(rs["metadata"]["name"], RESTORE);
    assert_eq!(
        rs["spec"]["target"]["rules"][0]["paths"],
        json!([DATA_MOUNT])
    );
    let data = data_dir.display().to_string();
    rs["spec"]["target"]["rules"][0]["paths"] = json!([data]);
    rs["spec"]["target"]["volumeMounts"][0]["mountPath"] = json!(data);
    rs
}

// ---------------------------------------------------------------------------
// What the user sees
// ---------------------------------------------------------------------------

/// The warning `kubectl apply` prints for the tests' Repository (the one
/// deviation from the guide): it starts so.
pub fn repository_warning(ns: &str) -> String {
    format!("Repository {ns}/{REPO} keeps its local backend in hostPath")
}

/// Asserts `warnings` are exactly the local Repository's one.
pub fn assert_repository_warning(warnings: &[String], ns: &str) {
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(&repository_warning(ns)),
        "{warnings:?}"
    );
}

/// Why nothing backs up while the guide's configuration is paused, as the
/// warnings, events and `kubectl stash trigger` say it.
pub fn paused_reason(ns: &str) -> String {
    format!("Backup Configuration {ns}/{BC} is paused")
}

/// What `kubectl apply -f backupsession.yaml` prints while paused.
pub fn paused_session_warning(ns: &str) -> String {
    format!("{}; this BackupSession will be Skipped", paused_reason(ns))
}

/// The CronJob's container args.
pub fn cronjob_args() -> Value {
    json!([
        "create-backupsession",
        "--invoker-kind=BackupConfiguration",
        "--invoker-name=pause-backup"
    ])
}

/// The BackupConfiguration's conditions once the guide is configured: all True.
pub const READY_CONDITIONS: [&str; 6] = [
    "BackendSecretFound",
    "BackupTargetFound",
    "CronJobCreated",
    "RepositoryFound",
    "StashSidecarInjected",
    "ValidationPassed",
];

/// `status.conditions` as (type, status).
pub fn conditions(object: &Value) -> BTreeMap<String, String> {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default().to_string(),
                c["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// [`READY_CONDITIONS`], each True.
pub fn ready_conditions() -> BTreeMap<String, String> {
    READY_CONDITIONS
        .iter()
        .map(|c| (c.to_string(), "True".to_string()))
        .collect()
}

/// The labels of a stored BackupSession of the guide: the mutating webhook
/// adds the invoker's for the sidecar's and the reconciler's selectors.
pub fn session_labels() -> Value {
    json!({
        "stash.appscode.com/backup-configuration": "pause-backup",
        "stash.appscode.com/invoker-type": "BackupConfiguration",
        "stash.appscode.com/invoker-name": "pause-backup"
    })
}

/// One line of `kubectl describe`'s Events: (type, reason, from, message).
pub type EventRow = (String, String, String, String);

pub fn event(type_: &str, reason: &str, from: &str, message: &str) -> EventRow {
    (type_.into(), reason.into(), from.into(), message.into())
}

/// core/v1 Events as `kubectl describe` lists them, in the given order.
pub fn event_rows(events: impl IntoIterator<Item = Event>) -> Vec<EventRow> {
    events
        .into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.source.and_then(|s| s.component).unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

/// `kubectl describe <kind> <name>`'s Events on the fake cluster (namespace
/// [`NS`]), in the order they were stored.
pub fn fake_events(cluster: &crate::Cluster, kind: &str, name: &str) -> Vec<EventRow> {
    let mut events: Vec<Event> = cluster
        .paths_under(&format!("/api/v1/namespaces/{NS}/events/"))
        .iter()
        .map(|p| cluster.typed::<Event>(p))
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some(kind)
                && e.involved_object.name.as_deref() == Some(name)
        })
        .collect();
    events.sort_by_key(|e| {
        e.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    });
    event_rows(events)
}

/// The CronJob's event on the configuration while paused.
pub fn backup_skipped_event(ns: &str) -> EventRow {
    event(
        "Normal",
        "Backup Skipped",
        "Backup Triggering CronJob",
        &format!(
            "Skipping creating BackupSession. Reason: {}.",
            paused_reason(ns)
        ),
    )
}

/// The controller's event on a session of a paused configuration.
pub fn session_skipped_event() -> EventRow {
    event(
        "Warning",
        "BackupSessionSkipped",
        "BackupSession Controller",
        "Backup Configuration is paused",
    )
}

/// The events of a BackupSession that Succeeded, sorted.
pub fn backup_succeeded_events() -> Vec<EventRow> {
    let mut events = vec![
        event(
            "Normal",
            "BackupSession Succeeded",
            "BackupSession Controller",
            "Backup session completed successfully",
        ),
        event(
            "Normal",
            "Host Backup Succeeded",
            "Backup Sidecar",
            &format!("backup succeeded for host {HOST}"),
        ),
    ];
    events.sort();
    events
}

/// The events of the RestoreSession, in the order they happen.
pub fn restore_events() -> Vec<EventRow> {
    vec![
        event(
            "Normal",
            "RestoreSession Running",
            "RestoreSession Controller",
            "Restore session started for 1 host(s)",
        ),
        event(
            "Normal",
            "Host Restore Succeeded",
            "Restore Init Container",
            &format!("restore succeeded for host {HOST}"),
        ),
        event(
            "Normal",
            "RestoreSession Succeeded",
            "RestoreSession Controller",
            "Restore session completed successfully",
        ),
    ]
}

// ---------------------------------------------------------------------------
// kubectl get: the printed columns
// ---------------------------------------------------------------------------

/// (header, value) pairs.
pub fn cols(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `kubectl get backupconfiguration` (AGE left out), PAUSED as printed.
pub fn configuration_columns(paused: &str) -> Vec<(String, String)> {
    cols(&[("TASK", ""), ("SCHEDULE", SCHEDULE), ("PAUSED", paused)])
}

/// `kubectl get backupsession` of the guide's sessions (AGE left out).
pub fn session_columns(phase: &str) -> Vec<(String, String)> {
    cols(&[
        ("INVOKER-TYPE", "BackupConfiguration"),
        ("INVOKER-NAME", BC),
        ("PHASE", phase),
    ])
}

/// `kubectl get restoresession` (AGE left out).
pub fn restore_columns(phase: &str) -> Vec<(String, String)> {
    cols(&[("REPOSITORY", REPO), ("PHASE", phase)])
}

/// The guide's headers of `kubectl get <kind>`.
pub fn guide_headers(kind: &str) -> &'static [&'static str] {
    match kind {
        "BackupConfiguration" => &["TASK", "SCHEDULE", "PAUSED", "AGE"],
        "BackupSession" => &["INVOKER-TYPE", "INVOKER-NAME", "PHASE", "AGE"],
        // docs/restore.md
        "RestoreSession" => &["REPOSITORY", "PHASE", "AGE"],
        other => panic!("no guide columns for {other}"),
    }
}

/// The printer columns of the served version of `K`'s CRD, as `stash crds` makes it.
pub fn crd_columns<K>() -> Vec<CustomResourceColumnDefinition>
where
    K: kube::CustomResourceExt + kube::Resource<DynamicType = ()>,
{
    let version = K::version(&());
    K::crd()
        .spec
        .versions
        .into_iter()
        .find(|v| v.name == version)
        .and_then(|v| v.additional_printer_columns)
        .unwrap_or_default()
}

/// The columns `kubectl get` shows up to `priority` (0: without `-o wide`;
/// a column of priority > 0 is for `-o wide` only), with `object`'s values,
/// in order, headers upper-cased as kubectl prints them. A value the path
/// does not reach is empty.
pub fn view(
    columns: &[CustomResourceColumnDefinition],
    object: &Value,
    priority: i32,
) -> Vec<(String, String)> {
    columns
        .iter()
        .filter(|column| column.priority.unwrap_or(0) <= priority)
        .map(|column| {
            let value = match object.pointer(&column.json_path.replace('.', "/")) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (column.name.to_uppercase(), value)
        })
        .collect()
}

/// `kubectl get`'s default view (priority 0).
pub fn default_view(
    columns: &[CustomResourceColumnDefinition],
    object: &Value,
) -> Vec<(String, String)> {
    view(columns, object, 0)
}

/// Checks the default view's headers are the guide's and AGE is the
/// creationTimestamp; the other (header, value) pairs.
pub fn check_guide_columns(
    kind: &str,
    shown: &[(String, String)],
    object: &Value,
) -> Vec<(String, String)> {
    let headers: Vec<&str> = shown.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(headers, guide_headers(kind), "kubectl get {kind}'s columns");
    let mut printed = Vec::new();
    for (header, value) in shown {
        if header == "AGE" {
            assert!(!value.is_empty(), "AGE: no creationTimestamp in {object}");
            assert_eq!(
                *value, object["metadata"]["creationTimestamp"],
                "AGE is the creationTimestamp"
            );
        } else {
            printed.push((header.clone(), value.clone()));
        }
    }
    printed
}

/// `kubectl get <kind>` of `object` with the CRD `stash crds` makes: the
/// guide's headers, AGE set; the other (header, value) pairs.
pub fn printed_columns<K>(object: &Value) -> Vec<(String, String)>
where
    K: kube::CustomResourceExt + kube::Resource<DynamicType = ()>,
{
    let kind = K::kind(&());
    check_guide_columns(&kind, &default_view(&crd_columns::<K>(), object), object)
}

/// `kubectl get <kind> -o wide`: every column but AGE.
pub fn wide_columns<K>(object: &Value) -> Vec<(String, String)>
where
    K: kube::CustomResourceExt + kube::Resource<DynamicType = ()>,
{
    view(&crd_columns::<K>(), object, i32::MAX)
        .into_iter()
        .filter(|(h, _)| h != "AGE")
        .collect()
}

// ---------------------------------------------------------------------------
// The kubelet's part
// ---------------------------------------------------------------------------

/// The names of a pod template's containers.
pub fn container_names(template: &Value) -> Vec<String> {
    names(&template["spec"]["containers"])
}

/// The names of a pod template's init containers.
pub fn init_container_names(template: &Value) -> Vec<String> {
    names(&template["spec"]["initContainers"])
}

fn names(containers: &Value) -> Vec<String> {
    containers
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The container `name` of a pod spec.
pub fn container<'a>(pod_spec: &'a Value, name: &str) -> &'a Value {
    pod_spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("the {name} container"))
}

/// A container's args as strings.
pub fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .expect("the container has args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The volumes a container of a pod spec mounts, by mount path.
pub struct Mounts<'a> {
    pod_spec: &'a Value,
    /// mountPath → volume name.
    pub by_path: BTreeMap<String, String>,
}

impl<'a> Mounts<'a> {
    pub fn of(pod_spec: &'a Value, container: &Value) -> Self {
        let by_path = container["volumeMounts"]
            .as_array()
            .expect("the container mounts volumes")
            .iter()
            .map(|m| {
                (
                    m["mountPath"].as_str().unwrap().to_string(),
                    m["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let mounts = Self { pod_spec, by_path };
        // A pod whose container mounts a volume it does not have is invalid.
        for path in mounts.paths() {
            mounts.at(&path);
        }
        mounts
    }

    /// The mount paths.
    pub fn paths(&self) -> BTreeSet<String> {
        self.by_path.keys().cloned().collect()
    }

    /// The volume mounted at `path`.
    pub fn at(&self, path: &str) -> Value {
        let name = self
            .by_path
            .get(path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}: {:?}", self.by_path));
        self.pod_spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name.as_str())
            .unwrap_or_else(|| panic!("volume {name}"))
            .clone()
    }

    /// The injected container's two own mounts: the Repository's storage
    /// Secret at [`SECRET_MOUNT`] and an emptyDir at [`SCRATCH_MOUNT`].
    pub fn assert_secret_and_scratch(&self) {
        assert_eq!(
            self.at(SECRET_MOUNT)["secret"]["secretName"],
            SECRET,
            "the Repository's storage Secret"
        );
        assert!(self.at(SCRATCH_MOUNT)["emptyDir"].is_object());
    }

    /// The name of the Secret the volume at [`SECRET_MOUNT`] projects.
    pub fn secret_name(&self) -> String {
        self.at(SECRET_MOUNT)["secret"]["secretName"]
            .as_str()
            .expect("a Secret volume at the secret mount")
            .to_string()
    }

    /// `stash-init`'s mounts in the guide's restore: its own (the pod info,
    /// the storage Secret, the scratch dir), the restored path `data` from
    /// the guide's PVC and the local backend at `repo` (a hostPath).
    pub fn assert_restore_mounts(&self, data: &Path, repo: &Path) {
        let (data, repo) = (data.display().to_string(), repo.display().to_string());
        assert_eq!(
            self.paths(),
            BTreeSet::from([
                "/etc/stash".to_string(),
                SECRET_MOUNT.into(),
                SCRATCH_MOUNT.into(),
                data.clone(),
                repo.clone(),
            ]),
            "stash-init's mounts"
        );
        assert_eq!(self.at(&data)["persistentVolumeClaim"]["claimName"], PVC);
        assert_eq!(self.at(&repo)["hostPath"]["path"], repo.as_str());
        self.assert_secret_and_scratch();
    }

    /// The kubelet's part for the injected container's own volumes of one
    /// pod, laid out under `pod_dir` on this machine: `secret` (the Secret
    /// as the API server returns it, JSON; the one the volume names) with
    /// each key a file of `<pod_dir>/secret`, the scratch emptyDir as
    /// `<pod_dir>/tmp`. The data volume and the local backend need nothing:
    /// the tests mount them at this machine's paths already.
    pub fn lay_out(&self, pod_dir: &Path, secret: &Value) -> PodDirs {
        self.assert_secret_and_scratch();
        assert_eq!(
            secret["metadata"]["name"],
            self.secret_name().as_str(),
            "the Secret the volume names"
        );
        let dirs = PodDirs {
            secret: pod_dir.join("secret"),
            scratch: pod_dir.join("tmp"),
        };
        write_secret_files(&dirs.secret, secret_data(secret));
        std::fs::create_dir_all(&dirs.scratch).unwrap();
        dirs
    }
}

/// The Secret the volume at [`SECRET_MOUNT`] of `mounts` names, as the fake
/// cluster's API server returns it (namespace [`NS`]): what the kubelet
/// writes into that volume ([`Mounts::lay_out`]).
pub fn fake_mounted_secret(cluster: &crate::Cluster, mounts: &Mounts<'_>) -> Value {
    cluster.object(&format!(
        "/api/v1/namespaces/{NS}/secrets/{}",
        mounts.secret_name()
    ))
}

/// Where the injected container's own mounts are on this machine, for one
/// pod ([`Mounts::lay_out`]).
pub struct PodDirs {
    /// [`SECRET_MOUNT`]: the storage Secret's keys as files.
    pub secret: PathBuf,
    /// [`SCRATCH_MOUNT`]: the `tmp-dir` emptyDir.
    pub scratch: PathBuf,
}

impl PodDirs {
    /// The container's `args` with its own mounts at this pod's directories:
    /// `--secret-dir` and `--scratch-dir` set (replaced or added), every
    /// other arg as it is.
    pub fn args(&self, mut args: Vec<String>) -> Vec<String> {
        set_flag(
            &mut args,
            "--secret-dir",
            &self.secret.display().to_string(),
        );
        set_flag(
            &mut args,
            "--scratch-dir",
            &self.scratch.display().to_string(),
        );
        args
    }
}

/// A Secret volume as the kubelet makes it: each key a file of `dir`.
pub fn write_secret_files(dir: &Path, data: impl IntoIterator<Item = (String, Vec<u8>)>) {
    std::fs::create_dir_all(dir).unwrap();
    for (key, bytes) in data {
        std::fs::write(dir.join(key), bytes).unwrap();
    }
}

/// A Secret's `data` (JSON, base64 values), decoded.
pub fn secret_data(secret: &Value) -> Vec<(String, Vec<u8>)> {
    secret["data"]
        .as_object()
        .expect("the Secret has data")
        .iter()
        .map(|(key, value)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.as_str().unwrap())
                .unwrap();
            (key.clone(), bytes)
        })
        .collect()
}

/// Where a pod runs, for the downward API.
pub struct Pod<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub node: &'a str,
}

impl Pod<'_> {
    /// The value of an env var's `fieldRef`, if the test knows that field.
    pub fn field(&self, var: &Value) -> Option<&str> {
        match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.namespace") => Some(self.namespace),
            Some("metadata.name") => Some(self.name),
            Some("spec.nodeName") => Some(self.node),
            _ => None,
        }
    }

    /// A container's `env` as the kubelet resolves it: literal values and
    /// the fields the test knows (another source fails the test).
    pub fn env(&self, env: &Value) -> Vec<(String, String)> {
        env.as_array()
            .expect("the container sets env")
            .iter()
            .map(|var| {
                let name = var["name"].as_str().unwrap().to_string();
                if let Some(v) = var["value"].as_str() {
                    return (name, v.to_string());
                }
                let value = self.field(var).unwrap_or_else(|| {
                    panic!("env {name}: a source the test does not resolve: {var}")
                });
                (name, value.to_string())
            })
            .collect()
    }

    /// A container's `env`, each variable from the downward API (anything
    /// else fails the test), handed to the command as the flag it is the
    /// environment source of (`flag_of`: the variable's flag's long name;
    /// none fails the test): a test cannot set its own process's environment.
    pub fn env_as_flags(
        &self,
        env: &Value,
        flag_of: impl Fn(&str) -> Option<String>,
    ) -> Vec<String> {
        env.as_array()
            .expect("the container sets env")
            .iter()
            .map(|var| {
                let name = var["name"].as_str().unwrap();
                let value = self
                    .field(var)
                    .unwrap_or_else(|| panic!("env {name}: unexpected source {var}"));
                let flag = flag_of(name).unwrap_or_else(|| panic!("env {name} is read by no flag"));
                format!("--{flag}={value}")
            })
            .collect()
    }
}

/// `--flag=value` in `args`, replacing the flag's value if it is there.
pub fn set_flag(args: &mut Vec<String>, flag: &str, value: &str) {
    let prefix = format!("{flag}=");
    let arg = format!("{prefix}{value}");
    match args
        .iter()
        .position(|a| a.starts_with(&prefix) || a == flag)
    {
        Some(i) if args[i] == flag => {
            args[i] = arg;
            if i + 1 < args.len() {
                args.remove(i + 1);
            }
        }
        Some(i) => args[i] = arg,
        None => args.push(arg),
    }
}

/// `restic snapshots --json` on the local repository at `repo`, with the
/// Secret's password; none while it is not initialised.
pub fn restic_snapshots(repo: &Path) -> Vec<Value> {
    if std::fs::read_dir(repo).map_or(true, |mut d| d.next().is_none()) {
        return Vec::new();
    }
    let out = std::process::Command::new("restic")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .args(["--no-cache", "--no-lock", "snapshots", "--json"])
        .output()
        .expect("restic runs");
    assert!(
        out.status.success(),
        "restic snapshots: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Option<Vec<Value>>>(&out.stdout)
        .expect("restic's JSON")
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The guides' sections, in order
// ---------------------------------------------------------------------------

/// docs/guide/pause-backup.md, section by section. Each test implements
/// them with its cluster's mechanics and checks the expectations above;
/// [`pause_backup`] walks them in the guide's order.
#[allow(async_fn_in_trait)] // awaited in place, never spawned
pub trait PauseBackupGuide {
    /// "Configure Backup": the Deployment (and PVC), the Secret, the
    /// Repository and the BackupConfiguration applied.
    async fn configure_backup(&mut self);
    /// "Verify Sidecar": the Deployment has the `stash` container running
    /// `run-backup`.
    async fn verify_sidecar(&mut self);
    /// "Verify CronJob": the CronJob, the configuration Ready.
    async fn verify_cronjob(&mut self);
    /// "Wait for BackupSession Succeeded": the schedule fires, the sidecar
    /// backs up, the session Succeeded with restic's snapshot.
    async fn backup_succeeds(&mut self);
    /// "Pause Scheduled Backup": `spec.paused: true`; nothing restarts.
    async fn pause(&mut self);
    /// "Verify Scheduled Backup Get Skipped": the CronJob creates nothing
    /// and says why.
    async fn scheduled_backup_skipped(&mut self);
    /// "Verify Instant Backup Get Skipped": `backupsession.yaml` Skipped.
    async fn instant_backup_skipped(&mut self);
    /// "Resume Backup": `spec.paused: false`; the next backup runs.
    async fn resume(&mut self);
}

/// The pause-backup guide, in its order.
pub async fn pause_backup(guide: &mut impl PauseBackupGuide) {
    guide.configure_backup().await;
    guide.verify_sidecar().await;
    guide.verify_cronjob().await;
    guide.backup_succeeds().await;
    guide.pause().await;
    guide.scheduled_backup_skipped().await;
    guide.instant_backup_skipped().await;
    guide.resume().await;
}

/// docs/restore.md after a backup, section by section; [`restore`] walks
/// them in order.
#[allow(async_fn_in_trait)] // awaited in place, never spawned
pub trait RestoreGuide {
    /// The data is lost (the backed-up file removed).
    async fn lose_data(&mut self);
    /// `kubectl apply -f restoresession.yaml`, its path in the temp dir.
    async fn apply_restore_session(&mut self);
    /// The controller back-fills `stash-init` (one more ReplicaSet) and the
    /// session is Running.
    async fn init_back_filled(&mut self);
    /// The init container runs: the data back byte for byte.
    async fn init_restores(&mut self);
    /// The session Succeeded, with the host's stats and [`restore_events`].
    async fn restore_succeeded(&mut self);
    /// Another start of the init container finds its host done: exit 0,
    /// nothing restored again.
    async fn init_again_restores_nothing(&mut self);
    /// `kubectl delete restoresession`: `stash-init` goes, the pod template
    /// is the backup's again.
    async fn clean_up(&mut self);
}

/// docs/restore.md, in its order.
pub async fn restore(guide: &mut impl RestoreGuide) {
    guide.lose_data().await;
    guide.apply_restore_session().await;
    guide.init_back_filled().await;
    guide.init_restores().await;
    guide.restore_succeeded().await;
    guide.init_again_restores_nothing().await;
    guide.clean_up().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use stash::api::{BackupConfiguration, BackupSession, RestoreSession};

    fn object(kind: &str) -> Value {
        json!({
            "kind": kind,
            "metadata": {"name": "x", "creationTimestamp": "2026-12-07T00:00:00Z"},
            "spec": {
                "schedule": SCHEDULE, "paused": true,
                "invoker": {"kind": "BackupConfiguration", "name": BC},
                "repository": {"name": REPO}
            },
            "status": {"phase": "Running"}
        })
    }

    #[test]
    fn every_guide_table_is_the_default_view_of_its_crd() {
        let bc = object("BackupConfiguration");
        let shown = default_view(&crd_columns::<BackupConfiguration>(), &bc);
        assert_eq!(
            check_guide_columns("BackupConfiguration", &shown, &bc),
            configuration_columns("true")
        );
        let bs = object("BackupSession");
        let shown = default_view(&crd_columns::<BackupSession>(), &bs);
        assert_eq!(
            check_guide_columns("BackupSession", &shown, &bs),
            session_columns("Running")
        );
        let rs = object("RestoreSession");
        let shown = default_view(&crd_columns::<RestoreSession>(), &rs);
        assert_eq!(
            check_guide_columns("RestoreSession", &shown, &rs),
            restore_columns("Running")
        );
    }

    #[test]
    fn a_wide_only_column_is_not_in_the_default_view() {
        let mut columns = crd_columns::<BackupConfiguration>();
        let phase: CustomResourceColumnDefinition = serde_json::from_value(json!({
            "name": "Phase", "type": "string", "jsonPath": ".status.phase", "priority": 1
        }))
        .unwrap();
        columns.insert(3, phase);
        let bc = object("BackupConfiguration");
        let shown = default_view(&columns, &bc);
        let headers: Vec<&str> = shown.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(headers, ["TASK", "SCHEDULE", "PAUSED", "AGE"]);
        // Priority 0 written out is the default view too.
        columns[3].priority = Some(0);
        let shown = default_view(&columns, &bc);
        assert_eq!(shown[3], ("PHASE".to_string(), "Running".to_string()));
    }

    #[test]
    #[should_panic(expected = "kubectl get RestoreSession's columns")]
    fn a_column_the_guide_does_not_print_fails() {
        let mut columns = crd_columns::<RestoreSession>();
        columns.push(
            serde_json::from_value(json!({
                "name": "Host", "type": "string", "jsonPath": ".status.stats[0].hostname"
            }))
            .unwrap(),
        );
        let rs = object("RestoreSession");
        check_guide_columns("RestoreSession", &default_view(&columns, &rs), &rs);
    }

    #[test]
    fn a_flag_is_replaced_or_added() {
        let mut args = vec!["run-backup".to_string(), "--scratch-dir=/tmp".into()];
        set_flag(&mut args, "--scratch-dir", "/x");
        set_flag(&mut args, "--metrics-listen", "off");
        assert_eq!(
            args,
            ["run-backup", "--scratch-dir=/x", "--metrics-listen=off"]
        );
        let mut spaced = vec!["--listen".to_string(), ":8443".into(), "--x=1".into()];
        set_flag(&mut spaced, "--listen", "0.0.0.0:9443");
        assert_eq!(spaced, ["--listen=0.0.0.0:9443", "--x=1"]);
    }

    /// A pod spec whose container mounts the storage Secret and the scratch dir.
    fn injected() -> (Value, Value) {
        let pod_spec = json!({"volumes": [
            {"name": "stash-secret", "secret": {"secretName": SECRET}},
            {"name": "tmp-dir", "emptyDir": {}}
        ]});
        let container = json!({"volumeMounts": [
            {"name": "stash-secret", "mountPath": SECRET_MOUNT, "readOnly": true},
            {"name": "tmp-dir", "mountPath": SCRATCH_MOUNT}
        ]});
        (pod_spec, container)
    }

    #[test]
    fn the_kubelet_lays_out_the_secret_and_scratch_and_the_args_point_there() {
        let (pod_spec, container) = injected();
        let mounts = Mounts::of(&pod_spec, &container);
        let dir = tempfile::tempdir().unwrap();
        let dirs = mounts.lay_out(&dir.path().join("pod-a"), &secret(NS));
        assert_eq!(dirs.secret, dir.path().join("pod-a/secret"));
        assert_eq!(
            std::fs::read_to_string(dirs.secret.join("RESTIC_PASSWORD")).unwrap(),
            PASSWORD
        );
        assert!(dirs.scratch.is_dir());
        let args = dirs.args(vec![
            "run-backup".into(),
            format!("--secret-dir={SECRET_MOUNT}"),
            "--invoker-name=pause-backup".into(),
        ]);
        assert_eq!(
            args,
            [
                "run-backup".to_string(),
                format!("--secret-dir={}", dirs.secret.display()),
                "--invoker-name=pause-backup".into(),
                format!("--scratch-dir={}", dirs.scratch.display()),
            ]
        );
    }

    #[test]
    #[should_panic(expected = "the Secret the volume names")]
    fn another_secret_than_the_volumes_fails() {
        let (pod_spec, container) = injected();
        let mut other = secret(NS);
        other["metadata"]["name"] = json!("other");
        let dir = tempfile::tempdir().unwrap();
        Mounts::of(&pod_spec, &container).lay_out(dir.path(), &other);
    }

    #[test]
    fn the_paused_reason_is_the_warnings_and_the_events() {
        assert!(paused_session_warning("demo").starts_with(&paused_reason("demo")));
        assert_eq!(
            backup_skipped_event("demo").3,
            "Skipping creating BackupSession. Reason: Backup Configuration demo/pause-backup is paused."
        );
    }

    #[test]
    fn the_guides_yamls_are_edited_only_where_the_tests_say() {
        let dir = Path::new("/tmp/t");
        let bc = configuration_on("e2e", &dir.join("data"));
        assert_eq!(bc["metadata"]["namespace"], "e2e");
        assert_eq!(bc["spec"]["target"]["paths"], json!(["/tmp/t/data"]));
        assert_eq!(bc["spec"]["schedule"], SCHEDULE);
        let repo = repository_on(NS, &dir.join("repo"));
        assert_eq!(repo["spec"]["backend"]["local"]["mountPath"], "/tmp/t/repo");
        let rs = restore_session_on(NS, &dir.join("data"));
        assert_eq!(
            rs["spec"]["target"]["rules"][0]["paths"],
            json!(["/tmp/t/data"])
        );
        let (pvc, deployment) = pvc_and_deployment(NS);
        assert_eq!(pvc["kind"], "PersistentVolumeClaim");
        assert_eq!(
            container_names(&deployment["spec"]["template"]),
            ["busybox"]
        );
    }
}
