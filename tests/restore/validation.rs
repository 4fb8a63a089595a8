//! `/validate/restoresessions` through `stash::admission::handle`, as the API
//! server would call it: every rule of docs/restore.md, the missing
//! Repository warning, and the immutable spec.

use serde_json::{Value, json};
use stash::admission::{Endpoint, handle};
use stash::settings::Settings;
use stash::store::Snapshot;

fn session(target: Value, rules: Value) -> Value {
    json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession",
        "metadata": {"name": "restore", "namespace": "demo"},
        "spec": {"repository": {"name": "gcs-repo"},
                 "target": {"ref": target, "volumeMounts": [{"name": "source-data", "mountPath": "/source/data"}],
                            "rules": rules}}})
}

fn deployment() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "stash-demo"})
}

fn review(object: &Value, old: Option<&Value>) -> Vec<u8> {
    let op = if old.is_some() { "UPDATE" } else { "CREATE" };
    serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-1", "kind": {"group": "stash.appscode.com", "version": "v1beta1", "kind": "RestoreSession"},
            "resource": {"group": "stash.appscode.com", "version": "v1beta1", "resource": "restoresessions"},
            "name": "restore", "namespace": "demo", "operation": op,
            "userInfo": {"username": "u"}, "object": object, "oldObject": old}}))
    .unwrap()
}

fn ask(object: &Value, old: Option<&Value>, snap: &Snapshot) -> Value {
    let answer = handle(
        Endpoint::ValidateRestoreSessions,
        &review(object, old),
        snap,
        &Settings::default(),
    )
    .unwrap();
    serde_json::from_slice::<Value>(&answer.body).unwrap()["response"].clone()
}

fn with_repo() -> Snapshot {
    let mut s = Snapshot::default();
    s.upsert_repository(
        serde_json::from_value(
            json!({"apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
        "metadata": {"name": "gcs-repo", "namespace": "demo"},
        "spec": {"backend": {"gcs": {"bucket": "b"}, "storageSecretName": "gcs-secret"}}}),
        )
        .unwrap(),
    );
    s
}

fn denial(r: &Value) -> String {
    assert_eq!(r["allowed"], false, "{r}");
    r["status"]["message"].as_str().unwrap().to_string()
}

#[test]
fn the_docs_restore_session_is_allowed() {
    let ok = session(deployment(), json!([{"paths": ["/source/data"]}]));
    let r = ask(&ok, None, &with_repo());
    assert_eq!(r["allowed"], true, "{r}");
    assert!(r.get("warnings").is_none(), "{r}");
    // The Repository missing is a warning, not a denial.
    let r = ask(&ok, None, &Snapshot::default());
    assert_eq!(r["allowed"], true);
    assert!(
        r["warnings"][0]
            .as_str()
            .unwrap()
            .contains("Repository demo/gcs-repo"),
        "{r}"
    );
}

#[test]
fn inconsistent_rules_are_denied_in_one_line() {
    let s = with_repo();
    let two_catch_alls = session(deployment(), json!([{"paths": ["/a"]}, {"paths": ["/b"]}]));
    assert!(denial(&ask(&two_catch_alls, None, &s)).contains("both have empty targetHosts"));
    let host_twice = session(
        deployment(),
        json!([
        {"targetHosts": ["host-0", "host-1"], "paths": ["/a"]},
        {"targetHosts": ["host-1"], "paths": ["/b"]}]),
    );
    assert!(
        denial(&ask(&host_twice, None, &s))
            .contains("host \"host-1\" is named by spec.target.rules[0] and rules[1]")
    );
    let both = session(
        deployment(),
        json!([{"paths": ["/a"], "snapshots": ["abc"]}]),
    );
    assert!(denial(&ask(&both, None, &s)).contains("sets both snapshots and paths"));
    let relative = session(deployment(), json!([{"paths": ["data"]}]));
    assert!(denial(&ask(&relative, None, &s)).contains("not an absolute path"));
    let job = session(
        json!({"apiVersion": "batch/v1", "kind": "Job", "name": "x"}),
        json!([]),
    );
    assert!(denial(&ask(&job, None, &s)).contains("stash cannot restore into"));
    let mut no_repo = session(deployment(), json!([]));
    no_repo["spec"]["repository"] = json!({"name": ""});
    assert!(denial(&ask(&no_repo, None, &s)).contains("names no repository"));
    for r in [two_catch_alls, both, job] {
        assert!(!denial(&ask(&r, None, &s)).contains('\n'));
    }
}

#[test]
fn the_spec_is_immutable_but_metadata_is_not() {
    let s = with_repo();
    let old = session(deployment(), json!([{"paths": ["/source/data"]}]));
    let mut labelled = old.clone();
    labelled["metadata"]["labels"] = json!({"a": "b"});
    assert_eq!(ask(&labelled, Some(&old), &s)["allowed"], true);
    let changed = session(deployment(), json!([{"paths": ["/other"]}]));
    assert!(denial(&ask(&changed, Some(&old), &s)).contains("spec is immutable"));
}
