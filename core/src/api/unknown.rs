//! Finds fields of a user's object that our types do not know.
//!
//! The API server prunes unknown fields of a structural CRD silently; offline
//! and in the webhook we do better and name them, so a typo such as `keepLst`
//! is reported instead of quietly meaning "no keep rule".

use serde::Serialize;
use serde_json::Value;

/// Paths (dotted, `spec.retentionPolicy.keepLst`) present in `raw` but lost
/// when `raw` is read into `typed` and written back. `metadata` and `status`
/// are not inspected.
pub fn unknown_fields<T: Serialize>(raw: &Value, typed: &T) -> Vec<String> {
    let Ok(round_trip) = serde_json::to_value(typed) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let (Value::Object(raw), Value::Object(rt)) = (raw, &round_trip) {
        for (k, v) in raw {
            if matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind") {
                continue;
            }
            walk(k, v, rt.get(k), &mut out);
        }
    }
    out
}

fn walk(path: &str, raw: &Value, rt: Option<&Value>, out: &mut Vec<String>) {
    match (raw, rt) {
        (_, None) => {
            // A null or empty value carries no meaning that could be lost.
            let empty = match raw {
                Value::Null => true,
                Value::Object(m) => m.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Bool(b) => !b,
                _ => false,
            };
            if !empty {
                out.push(path.to_string());
            }
        }
        (Value::Object(r), Some(Value::Object(t))) => {
            for (k, v) in r {
                walk(&format!("{path}.{k}"), v, t.get(k), out);
            }
        }
        (Value::Array(r), Some(Value::Array(t))) => {
            for (i, v) in r.iter().enumerate() {
                walk(&format!("{path}[{i}]"), v, t.get(i), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BackupConfigurationSpec;
    use serde_json::json;

    #[test]
    fn names_a_misspelt_field() {
        let raw = json!({"spec": {"schedule": "* * * * *", "retentionPolicy": {"name": "x", "keepLst": 5, "prune": false}}});
        let spec: BackupConfigurationSpec = serde_json::from_value(raw["spec"].clone()).unwrap();
        let found = unknown_fields(&json!({"spec": raw["spec"]}), &json!({"spec": spec}));
        assert_eq!(found, vec!["spec.retentionPolicy.keepLst".to_string()]);
    }

    #[test]
    fn known_fields_and_defaults_are_not_reported() {
        let raw = json!({"spec": {"schedule": "* * * * *", "paused": false, "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"}, "paths": []}}});
        let spec: BackupConfigurationSpec = serde_json::from_value(raw["spec"].clone()).unwrap();
        assert!(unknown_fields(&raw, &json!({"spec": spec})).is_empty());
    }
}
