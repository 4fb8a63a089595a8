//! The guide's objects on a cluster whose deployment controller runs: the
//! number of ReplicaSets (`kubectl get rs -n demo`) stays at one per
//! distinct pod template through injection (either order), pause, resume,
//! `kubectl rollout restart` and removal of the BackupConfiguration.
//!
//! On a real cluster every ReplicaSet the deployment controller writes goes
//! through `/mutate/workloads`; a webhook that changes a ReplicaSet's
//! template makes the controller create another one, for ever (the
//! ReplicaSet storm). `tests/support` runs that controller through the same
//! admission chain, so the storm shows here as extra ReplicaSets. The
//! second half replays the reviews a real API server sent
//! (`tests/fixtures/real-apiserver/`) through `stash::admission::handle`.

use stash_testkit as support;

use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine;
use serde_json::{Value, json};

use stash::admission::{Endpoint, handle};
use stash::api::BackupConfiguration;
use stash::reconcile::backup_configuration;
use stash::settings::Settings;
use support::deployment_controller::{POD_TEMPLATE_HASH, equal_ignore_hash};
use support::{Cluster, Identity, PatchBody};

const NS: &str = "demo";
const BC: &str =
    "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupconfigurations/pause-backup";
const DEPLOY: &str = "/apis/apps/v1/namespaces/demo/deployments/stash-demo";

fn example(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests/examples")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .collect()
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/real-apiserver")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn container_names(pod_template: &Value) -> Vec<String> {
    pod_template["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// `kubectl apply -f deployment.yaml` (the PVC and the Deployment).
fn apply_deployment(c: &Cluster) {
    for object in example("deployment.yaml") {
        let written = c.create(Identity::admin(), object).expect("created");
        assert!(written.warnings.is_empty(), "{:?}", written.warnings);
    }
}

/// The guide's Secret, Repository and BackupConfiguration.
fn apply_configuration(c: &Cluster) {
    let password = base64::engine::general_purpose::STANDARD.encode("changeit");
    c.create(
        Identity::admin(),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "gcs-secret", "namespace": NS},
               "data": {"RESTIC_PASSWORD": password}}),
    )
    .expect("secret/gcs-secret created");
    for file in ["repository.yaml", "backupconfiguration.yaml"] {
        let written = c
            .create(Identity::admin(), example(file).remove(0))
            .unwrap_or_else(|e| panic!("{file}: {e:?}"));
        assert!(written.warnings.is_empty(), "{:?}", written.warnings);
    }
}

/// One BackupConfiguration reconcile by `stash serve`'s reconciler, its
/// cache holding every configuration of the cluster, as its watch would
/// trigger it after a change (and, after a pass that only added the
/// finalizer, the pass that change triggers). Nothing to do once the
/// configuration is gone.
async fn reconcile(c: &Cluster) {
    let ctx = backup_configuration::Context::new(
        c.client(Identity::reconciler()),
        stash::settings::DEFAULT_IMAGE.into(),
        Settings::default(),
        c.index(),
    );
    if let Some(result) = c
        .reconcile_as_watched(BC, |bc: BackupConfiguration| {
            let ctx = &ctx;
            async move { backup_configuration::reconcile_at(&bc, ctx, jiff::Timestamp::now()).await }
        })
        .await
    {
        result.expect("BackupConfiguration reconcile");
    }
}

/// The deployment controller runs until the cluster is quiet; like on a
/// real cluster it would never stop during a storm, so it gets a bound.
fn settle(c: &Cluster) {
    let rollout = c.settle_deployments();
    let names: Vec<_> = c
        .replica_sets(NS)
        .iter()
        .map(|rs| rs["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        rollout.settled,
        "the rollout never ends: {rollout:?}, ReplicaSets {names:?}"
    );
}

/// `kubectl get rs -n demo`, and how many distinct pod templates they hold
/// (ignoring `pod-template-hash`).
fn replica_sets(c: &Cluster) -> (usize, usize) {
    let rses = c.replica_sets(NS);
    let mut distinct: Vec<Value> = Vec::new();
    for rs in &rses {
        let t = &rs["spec"]["template"];
        if !distinct.iter().any(|d| equal_ignore_hash(d, t)) {
            distinct.push(t.clone());
        }
    }
    (rses.len(), distinct.len())
}

/// The ReplicaSet the Deployment's pods come from now: the one scaled up.
fn current_replica_set(c: &Cluster) -> Value {
    let mut up: Vec<Value> = c
        .replica_sets(NS)
        .into_iter()
        .filter(|rs| rs["spec"]["replicas"].as_i64().unwrap_or(0) > 0)
        .collect();
    assert_eq!(up.len(), 1, "exactly one ReplicaSet has replicas: {up:#?}");
    up.remove(0)
}

/// The Deployment's template and the current ReplicaSet's agree, and both
/// carry (or not) the stash sidecar.
fn assert_sidecar(c: &Cluster, present: bool) {
    let deploy = c.object(DEPLOY);
    let rs = current_replica_set(c);
    let want: Vec<String> = if present {
        vec!["busybox".into(), "stash".into()]
    } else {
        vec!["busybox".into()]
    };
    assert_eq!(container_names(&deploy["spec"]["template"]), want);
    assert_eq!(container_names(&rs["spec"]["template"]), want);
    assert!(equal_ignore_hash(
        &deploy["spec"]["template"],
        &rs["spec"]["template"]
    ));
    assert_eq!(rs["spec"]["replicas"], 3);
    let rs_name = rs["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        rs_name,
        format!(
            "stash-demo-{}",
            rs["metadata"]["labels"][POD_TEMPLATE_HASH]
                .as_str()
                .unwrap()
        )
    );
}

/// `kubectl patch backupconfiguration -n demo pause-backup --type=merge --patch=…`.
fn patch_configuration(c: &Cluster, patch: Value) {
    c.patch(Identity::admin(), BC, PatchBody::Merge(patch))
        .expect("backupconfiguration patched");
}

/// `kubectl rollout restart deployment -n demo stash-demo`.
fn rollout_restart(c: &Cluster, at: &str) {
    c.patch(
        Identity::admin(),
        DEPLOY,
        PatchBody::Strategic(json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": at
        }}}}})),
    )
    .expect("deployment.apps/stash-demo restarted");
}

/// Pause, resume, restart and removal on an injected Deployment with
/// `before` ReplicaSets.
async fn pause_resume_restart_remove(c: &Cluster, before: usize) {
    // Pause: the pod template never changes, so no new ReplicaSet at all.
    let deploy = c.object(DEPLOY);
    patch_configuration(c, json!({"spec": {"paused": true}}));
    reconcile(c).await;
    settle(c);
    assert_eq!(replica_sets(c), (before, before), "pause made a ReplicaSet");
    assert_eq!(c.object(DEPLOY)["spec"], deploy["spec"]);
    assert_sidecar(c, true);

    // Resume: none either.
    patch_configuration(c, json!({"spec": {"paused": false}}));
    reconcile(c).await;
    settle(c);
    assert_eq!(
        replica_sets(c),
        (before, before),
        "resume made a ReplicaSet"
    );
    assert_sidecar(c, true);

    // kubectl rollout restart: exactly one more, sidecar kept.
    rollout_restart(c, "2026-12-01T19:55:40Z");
    settle(c);
    reconcile(c).await;
    settle(c);
    assert_eq!(
        replica_sets(c),
        (before + 1, before + 1),
        "rollout restart makes exactly one ReplicaSet"
    );
    assert_sidecar(c, true);
    assert_eq!(
        current_replica_set(c)["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        "2026-12-01T19:55:40Z"
    );

    // Removal of the BackupConfiguration: the sidecar goes, exactly one more.
    c.delete(Identity::admin(), BC)
        .expect("backupconfiguration deleted");
    reconcile(c).await;
    assert!(c.get(BC).is_none(), "the finalizer was released");
    settle(c);
    assert_eq!(
        replica_sets(c),
        (before + 2, before + 2),
        "removing the configuration makes exactly one ReplicaSet"
    );
    assert_sidecar(c, false);
    assert_eq!(c.forbidden_requests(), Vec::<String>::new());
}

/// The guide's own order: the Deployment first (one ReplicaSet, no
/// sidecar), then the configuration, whose reconcile back-fills the sidecar
/// (one more ReplicaSet, carrying it).
#[tokio::test]
async fn deployment_first_then_configuration_one_replicaset_per_template() {
    let c = Cluster::new();
    apply_deployment(&c);
    settle(&c);
    assert_eq!(replica_sets(&c), (1, 1));
    assert_sidecar(&c, false);

    apply_configuration(&c);
    reconcile(&c).await;
    settle(&c);
    assert_eq!(
        replica_sets(&c),
        (2, 2),
        "injection makes exactly one ReplicaSet"
    );
    assert_sidecar(&c, true);
    // The ReplicaSet the controller created as it is stored, after admission.
    let rs = current_replica_set(&c);
    assert_eq!(
        rs["metadata"]["ownerReferences"][0]["controller"], true,
        "{rs}"
    );
    // Its own writes re-trigger the reconciler; nothing more to do.
    let mark = c.mark();
    reconcile(&c).await;
    settle(&c);
    assert_eq!(
        c.writes_by_since(Some(&Identity::reconciler().username), mark)
            .into_iter()
            .filter(|(_, p)| p.starts_with("/apis/apps/"))
            .collect::<Vec<_>>(),
        Vec::<(String, String)>::new()
    );

    pause_resume_restart_remove(&c, 2).await;
}

/// The configuration first: the webhook injects the sidecar at the
/// Deployment's CREATE, so there is one ReplicaSet, with the sidecar.
#[tokio::test]
async fn configuration_first_then_deployment_one_replicaset_per_template() {
    let c = Cluster::new();
    apply_configuration(&c);
    reconcile(&c).await;
    apply_deployment(&c);
    settle(&c);
    assert_eq!(replica_sets(&c), (1, 1));
    assert_sidecar(&c, true);
    let mark = c.mark();
    reconcile(&c).await;
    settle(&c);
    assert_eq!(replica_sets(&c), (1, 1));
    assert!(
        !c.writes_since(mark).iter().any(|(_, p)| p == DEPLOY),
        "the reconciler agrees with the webhook"
    );

    pause_resume_restart_remove(&c, 1).await;
}

/// Every ReplicaSet the deployment controller wrote went through the
/// workload webhook as the controller's identity, and the webhook left
/// each one as the controller sent it.
#[tokio::test]
async fn the_controllers_replicasets_go_through_the_webhook_unchanged() {
    let c = Cluster::new();
    apply_configuration(&c);
    apply_deployment(&c);
    settle(&c);
    rollout_restart(&c, "2026-12-01T19:55:40Z");
    let mark = c.mark();
    settle(&c);
    let controller = Identity::deployment_controller().username;
    let rs_writes: Vec<_> = c
        .log_since(mark)
        .into_iter()
        .filter(|r| r.user == controller && r.is_write())
        .filter(|r| r.path.contains("/replicasets") && !r.path.ends_with("/status"))
        .collect();
    let methods: BTreeSet<&str> = rs_writes.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(
        methods,
        BTreeSet::from(["POST", "PUT"]),
        "a CREATE and a scale-down UPDATE"
    );
    for r in &rs_writes {
        let name = r.body["metadata"]["name"].as_str().unwrap();
        let stored = c.object(&format!("/apis/apps/v1/namespaces/demo/replicasets/{name}"));
        assert_eq!(
            stored["spec"]["template"], r.body["spec"]["template"],
            "the webhook changed {} {name}",
            r.method
        );
    }
}

// ---- the reviews a real API server sent ------------------------------------

/// The guide's store: its BackupConfiguration and Repository.
fn guide_snapshot() -> stash::store::Snapshot {
    let loaded = stash::store::offline::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples"),
    )
    .expect("the guide's examples load");
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert_eq!(loaded.snapshot.config_count(), 1);
    loaded.snapshot
}

/// `/mutate/workloads`' answer: allowed, and the JSON patch (empty when none).
fn mutate(review: &Value, snap: &stash::store::Snapshot) -> Vec<Value> {
    let answer = handle(
        Endpoint::MutateWorkloads,
        &serde_json::to_vec(review).unwrap(),
        snap,
        &Settings::default(),
    )
    .expect("an AdmissionReview");
    let answer: Value = serde_json::from_slice(&answer.body).unwrap();
    let response = &answer["response"];
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(response["uid"], review["request"]["uid"]);
    match response["patch"].as_str() {
        None => Vec::new(),
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }
    }
}

#[test]
fn replicasets_of_an_injected_deployment_get_no_patch() {
    let snap = guide_snapshot();
    for file in [
        "workloads-injected-ReplicaSet-CREATE-stash-demo-59f9cbf897.json",
        "workloads-injected-ReplicaSet-UPDATE-stash-demo-59f9cbf897.json",
        "workloads-injected-ReplicaSet-CREATE-stash-demo-5bcdb9bb9.json",
    ] {
        let review = fixture(file);
        let request = &review["request"];
        assert_eq!(
            request["userInfo"]["username"],
            "system:serviceaccount:kube-system:deployment-controller"
        );
        assert_eq!(
            request["object"]["metadata"]["ownerReferences"][0]["controller"],
            true
        );
        assert_eq!(
            container_names(&request["object"]["spec"]["template"]),
            ["busybox", "stash"]
        );
        assert_eq!(mutate(&review, &snap), Vec::<Value>::new(), "{file}");
    }
}

/// The recorded Deployment was injected before the sidecar had a
/// securityContext (workload::privilege): on upgrade its sidecar is brought
/// up to date once (the stash container and the hash: its pods roll once,
/// docs/backup.md), and the result gets no patch.
#[test]
fn the_injected_deployment_itself_gets_no_patch() {
    let mut review = fixture("workloads-injected-Deployment-CREATE-stash-demo.json");
    let snap = guide_snapshot();
    let upgrade = mutate(&review, &snap);
    let paths: Vec<&str> = upgrade
        .iter()
        .filter_map(|op| op["path"].as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "/spec/template/spec/containers/1",
            "/spec/template/metadata/annotations/stash.appscode.com~1last-applied-backupconfiguration-hash"
        ]
    );
    assert_eq!(
        upgrade[0]["value"]["securityContext"]["capabilities"],
        serde_json::json!({"add": ["DAC_OVERRIDE"], "drop": ["ALL"]})
    );
    let ops: json_patch::Patch = serde_json::from_value(Value::Array(upgrade)).unwrap();
    json_patch::patch(&mut review["request"]["object"], &ops).unwrap();
    assert_eq!(mutate(&review, &snap), Vec::<Value>::new());
}

/// A ReplicaSet nobody controls, that a BackupConfiguration targets, still
/// gets its sidecar: only controlled workloads are left alone.
#[test]
fn a_standalone_replicaset_a_configuration_targets_still_gets_its_sidecar() {
    let mut snap = guide_snapshot();
    let mut bc = example("backupconfiguration.yaml").remove(0);
    bc["metadata"]["name"] = json!("standalone-backup");
    bc["spec"]["target"]["ref"] =
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "standalone"});
    snap.upsert_config(serde_json::from_value(bc).unwrap());

    let mut review = fixture("workloads-injected-ReplicaSet-CREATE-stash-demo-59f9cbf897.json");
    let rs = &mut review["request"]["object"];
    rs["metadata"]["name"] = json!("standalone");
    let meta = rs["metadata"].as_object_mut().unwrap();
    meta.remove("ownerReferences");
    meta.remove("annotations");
    meta.remove("managedFields");
    let template = &mut rs["spec"]["template"];
    template["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let containers = template["spec"]["containers"].as_array_mut().unwrap();
    containers.retain(|c| c["name"] != "stash");
    let volumes = template["spec"]["volumes"].as_array_mut().unwrap();
    volumes.retain(|v| v["name"] == "source-data");
    review["request"]["name"] = json!("standalone");
    review["request"]["userInfo"] =
        json!({"username": "kubernetes-admin", "groups": ["system:masters"]});

    let patch = mutate(&review, &snap);
    let added: Vec<&str> = patch
        .iter()
        .filter(|op| op["op"] == "add" && op["path"] == "/spec/template/spec/containers/-")
        .map(|op| op["value"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["stash"], "{patch:#?}");
    let mut patched = review["request"]["object"].clone();
    let ops: json_patch::Patch = serde_json::from_value(json!(patch)).unwrap();
    json_patch::patch(&mut patched, &ops).unwrap();
    let args = &patched["spec"]["template"]["spec"]["containers"][1]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--target-kind=ReplicaSet"),
        "{args}"
    );
}
