//! Structural pruning of stash's custom resources, as the API server does
//! it for a CRD: fields the `openAPIV3Schema` does not declare are dropped
//! (with kubectl's `unknown field` warning), unless
//! `x-kubernetes-preserve-unknown-fields` says to keep them. The schemas
//! come from `stash::crds` (`CustomResourceExt::crd()`), the same ones
//! `stash crds` installs, so a field stash writes but forgot to declare is
//! lost here exactly as on a cluster.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use kube::CustomResourceExt;
use serde_json::Value;

use stash::api::{BackupConfiguration, BackupSession, Repository, RestoreSession};

/// (group, version, plural) → openAPIV3Schema.
fn schemas() -> &'static BTreeMap<(String, String, String), Value> {
    static SCHEMAS: OnceLock<BTreeMap<(String, String, String), Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let mut out = BTreeMap::new();
        for crd in [
            BackupConfiguration::crd(),
            BackupSession::crd(),
            Repository::crd(),
            RestoreSession::crd(),
        ] {
            let crd = serde_json::to_value(crd).expect("a CRD serializes");
            let group = crd["spec"]["group"].as_str().unwrap().to_string();
            let plural = crd["spec"]["names"]["plural"].as_str().unwrap().to_string();
            for v in crd["spec"]["versions"].as_array().unwrap() {
                let version = v["name"].as_str().unwrap().to_string();
                out.insert(
                    (group.clone(), version, plural.clone()),
                    v["schema"]["openAPIV3Schema"].clone(),
                );
            }
        }
        out
    })
}

/// Whether objects of this resource are served from a CRD with a schema.
pub fn is_custom(group: &str, version: &str, plural: &str) -> bool {
    schemas().contains_key(&(group.into(), version.into(), plural.into()))
}

/// Prunes `object` (of this resource) in place; returns the API server's
/// `unknown field` warnings for what it dropped.
pub fn prune(group: &str, version: &str, plural: &str, object: &mut Value) -> Vec<String> {
    let Some(schema) = schemas().get(&(group.into(), version.into(), plural.into())) else {
        return Vec::new();
    };
    let mut dropped = Vec::new();
    prune_node(object, schema, "", true, &mut dropped);
    dropped
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect()
}

/// The properties a node declares, its own and those of allOf/anyOf/oneOf.
fn properties(schema: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        out.extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for sub in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for (k, v) in properties(sub) {
                out.entry(k).or_insert(v);
            }
        }
    }
    out
}

fn prune_node(value: &mut Value, schema: &Value, at: &str, root: bool, dropped: &mut Vec<String>) {
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let embedded = schema
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match value {
        Value::Object(map) => {
            let props = properties(schema);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let field = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                if (root || embedded) && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(sub) = props.get(&k) {
                    prune_node(map.get_mut(&k).unwrap(), sub, &field, false, dropped);
                } else if let Some(add) = additional.filter(|a| a.is_object()) {
                    prune_node(map.get_mut(&k).unwrap(), add, &field, false, dropped);
                } else if preserve || additional == Some(&Value::Bool(true)) {
                    // kept as sent
                } else {
                    map.remove(&k);
                    dropped.push(field);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_node(item, item_schema, &format!("{at}[{i}]"), false, dropped);
                }
            }
        }
        _ => {}
    }
}
