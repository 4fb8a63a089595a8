//! Properties of the sidecar plan over generated workloads and configurations:
//! injection is idempotent, removal gives back exactly the original object,
//! what does not shape the sidecar (paused, schedule, retention) never
//! touches the pod template, and the webhook (which reads the workload from
//! the review's text) answers exactly what the planner plans on the object.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use stash::api::{BackupConfiguration, Repository};
use stash::settings::Settings;
use stash::sidecar::{SidecarPlan, plan};
use stash::store::Snapshot;

const KINDS: [&str; 4] = ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"];

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,4})?".prop_filter("stash's own names", |n| {
        n != "stash" && n != "tmp-dir" && !n.starts_with("stash-")
    })
}

/// Absent or non-empty: the API server never stores an empty map (it is
/// `omitempty`), so removal restores an absent one.
fn annotations() -> impl Strategy<Value = Option<Map<String, Value>>> {
    proptest::option::of(proptest::collection::btree_map(
        "[a-z]{1,5}\\.example\\.com/[a-z]{1,6}",
        "[a-z0-9 ]{0,8}",
        1..3,
    ))
    .prop_map(|m| m.map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect()))
}

#[derive(Debug, Clone)]
struct Case {
    workload: Value,
    config: Value,
    repository: Value,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..KINDS.len(),
        name(),
        proptest::collection::btree_set(name(), 1..4),
        proptest::collection::btree_set(name(), 0..4),
        annotations(),
        annotations(),
        any::<bool>(),
        any::<u8>(),
        prop_oneof![Just(None), Just(Some("Memory")), Just(Some(""))],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(kind, wname, containers, volumes, wann, tann, local, mounts, medium, no_cache, env)| {
                let volumes: Vec<String> = volumes.into_iter().collect();
                let containers: Vec<Value> = containers
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let mut c = json!({"name": c, "image": format!("registry.example.com/{c}:1.{i}")});
                        if let Some(v) = volumes.get(i % volumes.len().max(1)) {
                            c["volumeMounts"] = json!([{"name": v, "mountPath": format!("/data/{v}")}]);
                        }
                        c
                    })
                    .collect();
                let mut pod = json!({"containers": containers});
                if !volumes.is_empty() {
                    pod["volumes"] = volumes.iter().map(|v| json!({"name": v, "emptyDir": {}})).collect();
                }
                let mut tmeta = json!({"labels": {"app": wname}});
                if let Some(a) = tann {
                    tmeta["annotations"] = Value::Object(a);
                }
                let mut meta = json!({"name": wname, "namespace": "demo"});
                if let Some(a) = wann {
                    meta["annotations"] = Value::Object(a);
                }
                let workload = json!({
                    "apiVersion": "apps/v1", "kind": KINDS[kind], "metadata": meta,
                    "spec": {"selector": {"matchLabels": {"app": wname}}, "template": {"metadata": tmeta, "spec": pod}},
                });
                let target_mounts: Vec<Value> = volumes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mounts & (1 << i) != 0)
                    .map(|(_, v)| json!({"name": v, "mountPath": format!("/source/{v}")}))
                    .collect();
                let mut spec = json!({
                    "repository": {"name": "repo"},
                    "schedule": "*/5 * * * *",
                    "target": {"ref": {"apiVersion": "apps/v1", "kind": KINDS[kind], "name": wname},
                               "volumeMounts": target_mounts, "paths": ["/source"]},
                    "retentionPolicy": {"name": "keep-last-5", "keepLast": 5, "prune": true},
                });
                if let Some(m) = medium {
                    spec["tempDir"] = json!({"medium": m, "disableCaching": no_cache});
                }
                if env {
                    spec["runtimeSettings"] = json!({"container": {"env": [{"name": "X", "value": "1"}],
                        "resources": {"limits": {"memory": "256Mi"}}}});
                }
                let backend = if local {
                    json!({"local": {"mountPath": "/safe/data", "hostPath": {"path": "/var/backups"}}, "storageSecretName": "s"})
                } else {
                    json!({"gcs": {"bucket": "b", "prefix": "/p"}, "storageSecretName": "gcs-secret"})
                };
                Case {
                    workload,
                    config: json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
                        "metadata": {"name": "bc", "namespace": "demo"}, "spec": spec}),
                    repository: json!({"apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
                        "metadata": {"name": "repo", "namespace": "demo"}, "spec": {"backend": backend}}),
                }
            },
        )
}

fn snapshot(config: Option<&Value>, repository: &Value) -> Snapshot {
    let mut snap = Snapshot::default();
    if let Some(c) = config {
        let bc: BackupConfiguration = serde_json::from_value(c.clone()).unwrap();
        snap.upsert_config(bc);
    }
    let repo: Repository = serde_json::from_value(repository.clone()).unwrap();
    snap.upsert_repository(repo);
    snap
}

fn apply(obj: &Value, p: &SidecarPlan) -> Value {
    let mut o = obj.clone();
    json_patch::patch(&mut o, &p.ops).expect("the plan applies to the object it was made for");
    o
}

/// The `/mutate/workloads` answer for `workload`: its patch (decoded) and warnings.
fn webhook(workload: &Value, snap: &Snapshot) -> (Vec<json_patch::PatchOperation>, Vec<String>) {
    use base64::Engine;
    let kind = workload["kind"].as_str().unwrap();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "kind": {"group": "apps", "version": "v1", "kind": kind},
            "resource": {"group": "apps", "version": "v1", "resource": format!("{}s", kind.to_lowercase())},
            "name": workload["metadata"]["name"],
            "namespace": workload["metadata"]["namespace"],
            "operation": "UPDATE",
            "userInfo": {"username": "kubernetes-admin"},
            "object": workload,
            "dryRun": false
        }
    });
    let body = serde_json::to_vec(&review).unwrap();
    let answer = stash::admission::handle(
        stash::admission::Endpoint::MutateWorkloads,
        &body,
        snap,
        &Settings::default(),
    )
    .unwrap();
    let response: Value = serde_json::from_slice(&answer.body).unwrap();
    let response = &response["response"];
    let patch = match response["patch"].as_str() {
        Some(b64) => {
            let text = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            serde_json::from_slice(&text).unwrap()
        }
        None => Vec::new(),
    };
    let warnings = response["warnings"]
        .as_array()
        .map(|ws| ws.iter().map(|w| w.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    (patch, warnings)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_webhook_answers_what_the_planner_plans(c in case()) {
        let settings = Settings::default();
        let with = snapshot(Some(&c.config), &c.repository);
        let without = snapshot(None, &c.repository);
        let injected = apply(&c.workload, &plan(&c.workload, &with, &settings));
        for (workload, snap) in [(&c.workload, &with), (&injected, &with), (&injected, &without), (&c.workload, &without)] {
            let planned = plan(workload, snap, &settings);
            let (patch, warnings) = webhook(workload, snap);
            prop_assert_eq!(&patch, &planned.ops);
            prop_assert_eq!(&warnings, &planned.warnings);
        }
    }

    #[test]
    fn inject_is_idempotent_and_removal_restores_the_original(c in case()) {
        let settings = Settings::default();
        let with = snapshot(Some(&c.config), &c.repository);
        let first = plan(&c.workload, &with, &settings);
        prop_assert!(first.warnings.is_empty(), "{:?}", first.warnings);
        prop_assert_eq!(first.applied.as_deref(), Some("bc"));
        let injected = apply(&c.workload, &first);
        prop_assert!(stash::sidecar::has_sidecar(&injected["spec"]["template"]));

        let second = plan(&injected, &with, &settings);
        prop_assert!(second.ops.is_empty(), "second pass: {:?}", second.ops);

        // The user's containers are untouched and keep their order.
        let users = |o: &Value| -> Vec<Value> {
            o["spec"]["template"]["spec"]["containers"].as_array().unwrap().iter()
                .filter(|c| c["name"] != "stash").cloned().collect()
        };
        prop_assert_eq!(users(&injected), users(&c.workload));

        let without = snapshot(None, &c.repository);
        let removal = plan(&injected, &without, &settings);
        prop_assert_eq!(removal.applied.as_deref(), None);
        let restored = apply(&injected, &removal);
        prop_assert_eq!(&restored, &c.workload);
        prop_assert!(plan(&restored, &without, &settings).ops.is_empty());
    }

    #[test]
    fn paused_schedule_and_retention_never_touch_the_pod_template(
        c in case(),
        paused in any::<bool>(),
        schedule in prop_oneof![Just("@hourly"), Just("0 3 * * SUN"), Just("*/1 * * * *")],
        keep in 1i64..50,
    ) {
        let settings = Settings::default();
        let injected = apply(&c.workload, &plan(&c.workload, &snapshot(Some(&c.config), &c.repository), &settings));
        let mut changed = c.config.clone();
        changed["spec"]["paused"] = json!(paused);
        changed["spec"]["schedule"] = json!(schedule);
        changed["spec"]["retentionPolicy"] = json!({"name": "other", "keepDaily": keep, "prune": false});
        let p = plan(&injected, &snapshot(Some(&changed), &c.repository), &settings);
        prop_assert!(p.ops.is_empty(), "{:?}", p.ops);
    }
}
