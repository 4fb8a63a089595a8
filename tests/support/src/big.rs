//! Large AdmissionReviews for the memory bench (`benches/load`) and the
//! memory regression test (`tests/admission_memory.rs`).

use serde_json::{Value, json};

/// etcd's default request limit: no stored object is larger.
pub const ETCD_LIMIT: usize = 1536 * 1024;

/// `deployment` grown to just under `size` bytes of JSON the way real large
/// Deployments are: a kubectl last-applied annotation, managedFields and a
/// long env list on its container.
pub fn grown(deployment: &Value, size: usize) -> Value {
    let mut d = deployment.clone();
    d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        json!("x".repeat(size / 8));
    d["metadata"]["managedFields"] = json!([{
        "manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}
    }]);
    let container = &mut d["spec"]["template"]["spec"]["containers"][0];
    if !container["env"].is_array() {
        container["env"] = json!([]);
    }
    let mut i = 0;
    while serde_json::to_vec(&d).unwrap().len() < size - 4096 {
        let list = d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap();
        for _ in 0..500 {
            list.push(json!({"name": format!("SETTING_{i}"), "value": "v".repeat(40)}));
            i += 1;
        }
    }
    d
}

/// A review of `object` (and `old`, for an UPDATE).
pub fn review(uid: &str, object: &Value, old: Option<&Value>) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": if old.is_some() { "UPDATE" } else { "CREATE" },
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]},
            "object": object,
            "oldObject": old,
            "dryRun": false
        }
    })
}

/// A Deployment UPDATE whose object and oldObject are each just under
/// etcd's limit: about 3 MB.
pub fn large_update(deployment: &Value) -> Vec<u8> {
    let new = grown(deployment, ETCD_LIMIT);
    let mut old = new.clone();
    old["spec"]["replicas"] = json!(2);
    serde_json::to_vec(&review("large-update", &new, Some(&old))).unwrap()
}

/// A Deployment CREATE of `size` bytes, almost all `[{"a":0}, …]` in `spec`.
pub fn junk_create(deployment: &Value, size: usize) -> Vec<u8> {
    let mut d = deployment.clone();
    d["spec"]["junk"] = json!([]);
    let head = serde_json::to_vec(&review("junk", &d, None)).unwrap();
    let items = (size - head.len()) / 8; // `{"a":0},` is 8 bytes
    let junk = format!(
        "[{}{{\"a\":0}}]",
        "{\"a\":0},".repeat(items.saturating_sub(1))
    );
    let text = String::from_utf8(head).unwrap();
    let out = text.replacen("\"junk\":[]", &format!("\"junk\":{junk}"), 1);
    assert!(out.len() <= size, "{} > {size}", out.len());
    out.into_bytes()
}
