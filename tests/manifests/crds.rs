//! The CRDs in manifests/crds/ are `stash crds` output, and the guide's own
//! YAMLs in manifests/examples/ read into our types without losing a field.

use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde::Deserialize;
use serde_json::Value;
use stash::api::unknown::unknown_fields;
use stash::api::{BackupConfiguration, BackupSession, Repository};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn manifests_crds_equal_stash_crds_output() {
    let on_disk = std::fs::read_to_string(root().join("manifests/crds/crds.yaml")).unwrap();
    assert!(
        on_disk == stash::crds::crds_yaml(),
        "manifests/crds/crds.yaml is stale: regenerate it with `cargo run -- crds > manifests/crds/crds.yaml`"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stash"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), on_disk);
}

#[test]
fn crds_carry_the_columns_names_and_status_design_md_fixes() {
    let crds = docs(&stash::crds::crds_yaml());
    assert_eq!(crds.len(), 4);
    let by_kind = |kind: &str| {
        crds.iter()
            .find(|c| c["spec"]["names"]["kind"] == kind)
            .unwrap_or_else(|| panic!("no CRD for {kind}"))
    };
    for (kind, version, short, columns) in [
        (
            "BackupConfiguration",
            "v1beta1",
            Some("bc"),
            vec!["Task", "Schedule", "Paused", "Age"],
        ),
        (
            "BackupSession",
            "v1beta1",
            None,
            vec!["Invoker-Type", "Invoker-Name", "Phase", "Age"],
        ),
        (
            "Repository",
            "v1alpha1",
            Some("repo"),
            vec![
                "Integrity",
                "Size",
                "Snapshot-Count",
                "Last-Successful-Backup",
                "Age",
            ],
        ),
        (
            "RestoreSession",
            "v1beta1",
            None,
            vec!["Repository", "Phase", "Age"],
        ),
    ] {
        let crd = by_kind(kind);
        assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(crd["spec"]["group"], "stash.appscode.com");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(
            crd["spec"]["names"]["categories"],
            serde_json::json!(["stash", "appscode"])
        );
        match short {
            Some(s) => assert_eq!(crd["spec"]["names"]["shortNames"], serde_json::json!([s])),
            None => assert!(crd["spec"]["names"].get("shortNames").is_none()),
        }
        let v = &crd["spec"]["versions"][0];
        assert_eq!(v["name"], version);
        assert_eq!(v["served"], true);
        assert_eq!(v["storage"], true);
        assert_eq!(v["subresources"]["status"], serde_json::json!({}));
        // What `kubectl get` shows: the columns of priority 0 (the guide's).
        let names: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["priority"].as_i64().unwrap_or(0) == 0)
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, columns, "{kind}");
    }
    // `kubectl get backupconfiguration -o wide` adds the phase, and only it.
    let wide: Vec<Value> =
        by_kind("BackupConfiguration")["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["priority"].as_i64().unwrap_or(0) > 0)
            .cloned()
            .collect();
    assert_eq!(
        wide,
        [
            serde_json::json!({"name": "Phase", "type": "string", "jsonPath": ".status.phase", "priority": 1})
        ]
    );
    let bc_columns =
        &by_kind("BackupConfiguration")["spec"]["versions"][0]["additionalPrinterColumns"];
    let paths: Vec<&str> = bc_columns
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|c| c["jsonPath"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            ".spec.task.name",
            ".spec.schedule",
            ".spec.paused",
            ".metadata.creationTimestamp"
        ]
    );
}

/// Reads `doc` into `K` and back, naming any field that would be lost.
fn read_fully<K: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> K {
    let typed: K = serde_json::from_value(doc.clone()).expect("reads into the type");
    let lost = unknown_fields(doc, &typed);
    assert!(lost.is_empty(), "fields lost: {lost:?}");
    typed
}

#[test]
fn each_guide_example_reads_into_our_types() {
    let dir = root().join("manifests/examples");
    let read = |f: &str| docs(&std::fs::read_to_string(dir.join(f)).unwrap());

    let bc: BackupConfiguration = read_fully(&read("backupconfiguration.yaml")[0]);
    assert_eq!(bc.spec.schedule.as_deref(), Some("*/5 * * * *"));
    assert_eq!(bc.repository_name(), Some("gcs-repo"));
    let target = bc.spec.target.as_ref().unwrap();
    assert_eq!(target.target_ref.kind, "Deployment");
    assert_eq!(target.volume_mounts[0].mount_path, "/source/data");
    let policy = bc.spec.retention_policy.as_ref().unwrap();
    assert_eq!((policy.keep_last, policy.prune), (Some(5), true));

    let bs: BackupSession = read_fully(&read("backupsession.yaml")[0]);
    assert_eq!(bs.spec.invoker.kind, "BackupConfiguration");
    assert_eq!(bs.spec.invoker.name, "pause-backup");

    let repo: Repository = read_fully(&read("repository.yaml")[0]);
    assert_eq!(repo.spec.backend.configured(), ["gcs"]);
    assert_eq!(
        repo.spec.backend.storage_secret_name.as_deref(),
        Some("gcs-secret")
    );

    let dep = read("deployment.yaml");
    assert_eq!(dep.len(), 2);
    let pvc: PersistentVolumeClaim = serde_json::from_value(dep[0].clone()).unwrap();
    assert_eq!(pvc.metadata.name.as_deref(), Some("source-pvc"));
    let d: Deployment = serde_json::from_value(dep[1].clone()).unwrap();
    assert_eq!(d.metadata.name.as_deref(), Some("stash-demo"));

    let loaded = stash::store::offline::load(&dir).unwrap();
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert!(loaded.snapshot.config("demo", "pause-backup").is_some());
    assert!(loaded.snapshot.repository("demo", "gcs-repo").is_some());
}
