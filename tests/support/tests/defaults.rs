//! The fake cluster's defaulting against objects a real kube-apiserver
//! v1.36.2 stored (`tests/fixtures/real-apiserver/installed/`): the
//! CronJob stash builds for the guide's configuration, once defaulted, is
//! what the API server stored; the stored Deployment (sidecar injected) is
//! left as it is.

use serde_json::{Value, json};
use stash::api::BackupConfiguration;
use stash_testkit::{Cluster, Identity, defaults, repo_root};

fn captured(file: &str) -> Value {
    let path = repo_root()
        .join("tests/fixtures/real-apiserver/installed")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The guide's BackupConfiguration as the captured cluster held it: its
/// schedule was `*/1 * * * *` there, its uid the CronJob's owner's.
fn guide_configuration(uid: &str) -> BackupConfiguration {
    let path = repo_root().join("manifests/examples/backupconfiguration.yaml");
    let text = std::fs::read_to_string(&path).expect("the guide's BackupConfiguration");
    let mut bc: Value = serde_yaml::from_str(&text).expect("YAML");
    bc["spec"]["schedule"] = json!("*/1 * * * *");
    bc["metadata"]["uid"] = json!(uid);
    serde_json::from_value(bc).expect("a BackupConfiguration")
}

fn desired_cronjob(stored: &Value) -> Value {
    let uid = stored["metadata"]["ownerReferences"][0]["uid"]
        .as_str()
        .expect("the owner's uid");
    let cj = stash::reconcile::desired::cronjob(&guide_configuration(uid), "stash:dev")
        .expect("the guide's CronJob");
    serde_json::to_value(cj).expect("JSON")
}

#[test]
fn the_desired_cronjob_defaulted_is_what_the_api_server_stored() {
    let stored = captured("cronjob-as-stored.json");
    let mut cj = desired_cronjob(&stored);
    assert_ne!(cj["spec"], stored["spec"], "defaulting has work to do");
    defaults::apply("batch", "cronjobs", &mut cj);
    assert_eq!(
        serde_json::to_string_pretty(&cj["spec"]).unwrap(),
        serde_json::to_string_pretty(&stored["spec"]).unwrap()
    );
}

#[test]
fn the_fake_cluster_stores_the_cronjob_defaulted() {
    let stored = captured("cronjob-as-stored.json");
    let cluster = Cluster::new();
    let written = cluster
        .create(Identity::admin(), desired_cronjob(&stored))
        .expect("created");
    assert_eq!(written.object["spec"], stored["spec"]);
}

#[test]
fn the_stored_deployment_is_a_fixed_point() {
    let stored = captured("deployment-gcs-injected-as-stored.json");
    let mut again = stored.clone();
    defaults::apply("apps", "deployments", &mut again);
    assert_eq!(again, stored);
}

#[test]
fn the_stored_deployment_without_its_defaults_gets_them_back() {
    let stored = captured("deployment-gcs-injected-as-stored.json");
    let mut bare = stored.clone();
    let spec = bare["spec"].as_object_mut().unwrap();
    for key in [
        "progressDeadlineSeconds",
        "revisionHistoryLimit",
        "strategy",
    ] {
        spec.remove(key);
    }
    let pod = bare["spec"]["template"]["spec"].as_object_mut().unwrap();
    for key in [
        "dnsPolicy",
        "restartPolicy",
        "schedulerName",
        "securityContext",
        "terminationGracePeriodSeconds",
    ] {
        pod.remove(key);
    }
    for c in pod["containers"].as_array_mut().unwrap() {
        let c = c.as_object_mut().unwrap();
        for key in [
            "resources",
            "terminationMessagePath",
            "terminationMessagePolicy",
        ] {
            c.remove(key);
        }
        if c["name"] == "stash" {
            c.remove("imagePullPolicy");
            for e in c["env"].as_array_mut().unwrap() {
                e["valueFrom"]["fieldRef"]
                    .as_object_mut()
                    .unwrap()
                    .remove("apiVersion");
            }
        }
    }
    for v in pod["volumes"].as_array_mut().unwrap() {
        for source in ["secret", "downwardAPI"] {
            if let Some(s) = v.get_mut(source) {
                s.as_object_mut().unwrap().remove("defaultMode");
            }
        }
        if let Some(items) = v.pointer_mut("/downwardAPI/items") {
            for i in items.as_array_mut().unwrap() {
                i["fieldRef"].as_object_mut().unwrap().remove("apiVersion");
            }
        }
    }
    defaults::apply("apps", "deployments", &mut bare);
    assert_eq!(bare, stored);
}

/// The objects of the AdmissionReviews a real kube-apiserver sent the
/// workload webhook (`tests/fixtures/real-apiserver/workloads-injected-*`):
/// the API server defaults before it calls the webhooks, so each object
/// (and old object) is already what the defaulting makes of it.
#[test]
fn the_objects_a_real_api_server_sent_the_webhook_are_fixed_points() {
    let dir = repo_root().join("tests/fixtures/real-apiserver");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("the fixtures") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("workloads-injected-") {
            continue;
        }
        let review: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let request = &review["request"];
        let (group, resource) = (
            request["resource"]["group"].as_str().unwrap(),
            request["resource"]["resource"].as_str().unwrap(),
        );
        for key in ["object", "oldObject"] {
            let object = &request[key];
            if object.is_null() {
                continue;
            }
            let mut again = object.clone();
            defaults::apply(group, resource, &mut again);
            assert_eq!(&again, object, "{name}: {key}");
            seen += 1;
        }
    }
    assert!(seen >= 4, "{seen} objects checked");
}
