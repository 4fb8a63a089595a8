//! Properties of the `stash-init` planner over generated workloads, with and
//! without the backup sidecar: injection is idempotent, deleting the
//! RestoreSession gives back exactly the workload as it was before, the pod
//! template changes only by the init container and its volumes, the
//! sidecar's volumes survive, and a Deployment's ReplicaSet is never patched.

use proptest::prelude::*;
use serde_json::{Value, json};
use stash::api::{BackupConfiguration, Repository, RestoreSession};
use stash::restore::init::{InitPlan, has_init_container, plan};
use stash::settings::Settings;
use stash::sidecar;
use stash::store::Snapshot;

const KINDS: [&str; 4] = ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"];

fn apply(obj: &Value, ops: &[json_patch::PatchOperation]) -> Value {
    let mut o = obj.clone();
    json_patch::patch(&mut o, ops).expect("the plan's patch applies");
    o
}

fn repo(local: bool) -> Repository {
    let backend = if local {
        json!({"local": {"mountPath": "/safe/data", "hostPath": {"path": "/b"}}, "storageSecretName": "s"})
    } else {
        json!({"gcs": {"bucket": "b"}, "storageSecretName": "gcs-secret"})
    };
    serde_json::from_value(
        json!({"apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
        "metadata": {"name": "repo", "namespace": "demo"}, "spec": {"backend": backend}}),
    )
    .unwrap()
}

fn restore(kind: &str, name: &str, mounts: Value) -> RestoreSession {
    serde_json::from_value(
        json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession",
        "metadata": {"name": "restore", "namespace": "demo"},
        "spec": {"repository": {"name": "repo"},
                 "target": {"ref": {"apiVersion": "apps/v1", "kind": kind, "name": name},
                            "volumeMounts": mounts, "rules": [{"paths": ["/source/data"]}]}}}),
    )
    .unwrap()
}

fn config(kind: &str, name: &str) -> BackupConfiguration {
    serde_json::from_value(json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
        "metadata": {"name": "bc", "namespace": "demo"},
        "spec": {"repository": {"name": "repo"}, "schedule": "@daily",
                 "target": {"ref": {"apiVersion": "apps/v1", "kind": kind, "name": name},
                            "volumeMounts": [{"name": "data", "mountPath": "/source/data"}], "paths": ["/source/data"]}}}))
    .unwrap()
}

#[derive(Debug, Clone)]
struct Case {
    workload: Value,
    kind: &'static str,
    local: bool,
    with_sidecar: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..KINDS.len(),
        "[a-z][a-z0-9]{0,6}",
        proptest::collection::btree_set("[a-z][a-z0-9]{0,5}", 0..3),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_filter("stash's own names", |(_, n, inits, ..)| {
            !n.starts_with("stash") && inits.iter().all(|i| !i.starts_with("stash") && i != "tmp")
        })
        .prop_map(|(kind, name, inits, annotated, local, with_sidecar, extra_volume)| {
            let mut volumes = vec![json!({"name": "data", "emptyDir": {}})];
            if extra_volume {
                volumes.push(json!({"name": "cache", "emptyDir": {"medium": "Memory"}}));
            }
            let mut pod = json!({
                "containers": [{"name": "app", "image": "busybox",
                                "volumeMounts": [{"name": "data", "mountPath": "/source/data"}]}],
                "volumes": volumes,
            });
            if !inits.is_empty() {
                pod["initContainers"] = inits
                    .iter()
                    .map(|i| json!({"name": i, "image": "busybox"}))
                    .collect();
            }
            let mut meta = json!({"name": name, "namespace": "demo"});
            if annotated {
                meta["annotations"] = json!({"team.example.com/owner": "x"});
            }
            Case {
                workload: json!({"apiVersion": "apps/v1", "kind": KINDS[kind], "metadata": meta,
                    "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": pod}}}),
                kind: KINDS[kind],
                local,
                with_sidecar,
            }
        })
}

fn name(w: &Value) -> String {
    w["metadata"]["name"].as_str().unwrap().to_string()
}

/// The webhook's composition: sidecar first, then the init container on its result.
fn admit(w: &Value, snap: &Snapshot) -> Value {
    let s = sidecar::plan(w, snap, &Settings::default());
    let w = apply(w, &s.ops);
    let p = plan(&w, snap, &Settings::default());
    apply(&w, &p.ops)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn injection_is_idempotent_and_removal_gives_the_workload_back(c in case()) {
        let mut snap = Snapshot::default();
        snap.upsert_repository(repo(c.local));
        if c.with_sidecar {
            snap.upsert_config(config(c.kind, &name(&c.workload)));
        }
        // Before the restore: the workload as the user (and the backup sidecar) left it.
        let before = admit(&c.workload, &snap);
        snap.upsert_restore(restore(c.kind, &name(&c.workload), json!([{"name": "data", "mountPath": "/source/data"}])));
        let p = plan(&before, &snap, &Settings::default());
        prop_assert_eq!(p.applied.as_deref(), Some("restore"), "{:?}", p.warnings);
        let injected = apply(&before, &p.ops);
        prop_assert!(has_init_container(&injected["spec"]["template"]));
        let first = &injected["spec"]["template"]["spec"]["initContainers"][0];
        prop_assert_eq!(&first["name"], "stash-init");
        prop_assert_eq!(&first["args"], &json!(["restore", "--restoresession=restore", "--secret-dir=/etc/stash/repository/secret"]));
        // Idempotent, also through the whole webhook composition.
        prop_assert_eq!(plan(&injected, &snap, &Settings::default()), InitPlan { applied: Some("restore".into()), ..InitPlan::default() });
        prop_assert!(sidecar::plan(&injected, &snap, &Settings::default()).ops.is_empty());
        prop_assert_eq!(&admit(&injected, &snap), &injected);
        // The pod template changed only by the init container and its volumes.
        let mut t_before = before["spec"]["template"].clone();
        let mut t_after = injected["spec"]["template"].clone();
        for t in [&mut t_before, &mut t_after] {
            let spec = t["spec"].as_object_mut().unwrap();
            if let Some(Value::Array(inits)) = spec.get_mut("initContainers") {
                inits.retain(|i| i["name"] != "stash-init");
                if inits.is_empty() { spec.remove("initContainers"); }
            }
            if let Some(Value::Array(vs)) = spec.get_mut("volumes") {
                vs.retain(|v| !v["name"].as_str().unwrap().starts_with("stash-") && v["name"] != "tmp-dir");
            }
        }
        prop_assert_eq!(t_before, t_after);
        // The RestoreSession deleted: exactly the workload as before (sidecar and its volumes kept).
        let mut gone = snap.clone();
        gone.remove_restore("demo", "restore");
        let r = plan(&injected, &gone, &Settings::default());
        let removed = apply(&injected, &r.ops);
        prop_assert_eq!(&removed, &before);
        prop_assert!(plan(&removed, &gone, &Settings::default()).ops.is_empty());
        // A RestoreSession being deleted counts as gone.
        let mut deleting = restore(c.kind, &name(&c.workload), json!([]));
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let mut terminating = snap.clone();
        terminating.upsert_restore(deleting);
        prop_assert_eq!(apply(&injected, &plan(&injected, &terminating, &Settings::default()).ops), before);
    }

    #[test]
    fn a_replica_set_a_deployment_controls_is_never_patched(c in case()) {
        let mut snap = Snapshot::default();
        snap.upsert_repository(repo(c.local));
        let mut rs = c.workload.clone();
        rs["kind"] = json!("ReplicaSet");
        rs["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment",
            "name": "owner", "uid": "u", "controller": true}]);
        snap.upsert_restore(restore("ReplicaSet", &name(&rs), json!([])));
        let p = plan(&rs, &snap, &Settings::default());
        prop_assert!(p.ops.is_empty());
        prop_assert_eq!(p.warnings.len(), 1);
        // Nor, once the Deployment's template carries stash-init, when no session is left.
        snap.remove_restore("demo", "restore");
        snap.upsert_restore(restore("Deployment", "owner", json!([])));
        let mut d = c.workload.clone();
        d["kind"] = json!("Deployment");
        d["metadata"]["name"] = json!("owner");
        let injected = apply(&d, &plan(&d, &snap, &Settings::default()).ops);
        let mut copy = injected.clone();
        copy["kind"] = json!("ReplicaSet");
        copy["metadata"]["name"] = json!("owner-5d8f");
        copy["metadata"]["ownerReferences"] = rs["metadata"]["ownerReferences"].clone();
        prop_assert!(plan(&copy, &Snapshot::default(), &Settings::default()).ops.is_empty());
    }
}

#[test]
fn a_users_own_stash_init_container_is_left_alone() {
    let mut snap = Snapshot::default();
    snap.upsert_repository(repo(false));
    snap.upsert_restore(restore("Deployment", "app", json!([])));
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": "demo"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x"}],
                                       "initContainers": [{"name": "stash-init", "image": "mine"}]}}}});
    let p = plan(&d, &snap, &Settings::default());
    assert!(p.ops.is_empty());
    assert!(
        p.warnings[0].contains("that stash did not inject"),
        "{:?}",
        p.warnings
    );
    assert!(
        plan(&d, &Snapshot::default(), &Settings::default())
            .ops
            .is_empty()
    );
}

#[test]
fn a_restore_from_another_repository_than_the_sidecars_is_a_warning() {
    let mut snap = Snapshot::default();
    snap.upsert_repository(repo(false));
    snap.upsert_config(config("Deployment", "app"));
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": "demo"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x",
            "volumeMounts": [{"name": "data", "mountPath": "/source/data"}]}], "volumes": [{"name": "data", "emptyDir": {}}]}}}});
    let with_sidecar = admit(&d, &snap);
    let mut other = repo(false);
    other.metadata.name = Some("other".into());
    other.spec.backend.storage_secret_name = Some("other-secret".into());
    snap.upsert_repository(other);
    let mut rs = restore("Deployment", "app", json!([]));
    rs.spec.repository = Some(k8s_openapi::api::core::v1::LocalObjectReference {
        name: "other".into(),
    });
    snap.upsert_restore(rs);
    let p = plan(&with_sidecar, &snap, &Settings::default());
    assert!(p.ops.is_empty(), "{:?}", p.ops);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("mounts another repository")),
        "{:?}",
        p.warnings
    );
}
