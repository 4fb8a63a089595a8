//! What the fake API server knows about resources: URL paths, kinds, the
//! status subresource, label and field selectors, and the patch flavours
//! (merge, strategic merge, server-side apply) that `json_patch` does not
//! cover. Pure functions over `serde_json::Value`, so every other module
//! shares one idea of what an object path or a selector means.

use serde_json::{Map, Value, json};

/// A parsed request path: `/api/v1/namespaces/demo/secrets/x` or
/// `/apis/apps/v1/namespaces/demo/deployments/stash-demo/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `/api/v1` or `/apis/<group>/<version>`.
    pub prefix: String,
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    pub fn parse(path: &str) -> Option<Target> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let (group, version, rest) = match parts.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            rest => (None, rest),
        };
        let (plural, name, subresource) = match rest {
            [p] => (*p, None, None),
            [p, n] => (*p, Some(n.to_string()), None),
            [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
            _ => return None,
        };
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        Some(Target {
            prefix,
            group: group.to_string(),
            version: version.to_string(),
            namespace,
            plural: plural.to_string(),
            name,
            subresource,
        })
    }

    /// The collection this path is in (or is).
    pub fn collection_path(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/namespaces/{ns}/{}", self.prefix, self.plural),
            None => format!("{}/{}", self.prefix, self.plural),
        }
    }

    /// The object's own path (no subresource); panics on a collection.
    pub fn object_path(&self) -> String {
        format!(
            "{}/{}",
            self.collection_path(),
            self.name.as_deref().expect("an object path")
        )
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether the stored object at `key` is in this collection (any
    /// namespace when the collection is cluster-wide).
    pub fn contains(&self, key: &Target) -> bool {
        key.prefix == self.prefix
            && key.plural == self.plural
            && key.name.is_some()
            && (self.namespace.is_none() || self.namespace == key.namespace)
    }

    /// `apps.deployments`-style name used in Status messages.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// (plural, Kind, has a status subresource) of every resource the fake
/// knows by name; anything else takes its kind from the body.
const KINDS: &[(&str, &str, bool)] = &[
    ("deployments", "Deployment", true),
    ("replicasets", "ReplicaSet", true),
    ("statefulsets", "StatefulSet", true),
    ("daemonsets", "DaemonSet", true),
    ("cronjobs", "CronJob", true),
    ("jobs", "Job", true),
    ("pods", "Pod", true),
    ("persistentvolumeclaims", "PersistentVolumeClaim", true),
    ("serviceaccounts", "ServiceAccount", false),
    ("secrets", "Secret", false),
    ("configmaps", "ConfigMap", false),
    ("events", "Event", false),
    ("leases", "Lease", false),
    ("roles", "Role", false),
    ("rolebindings", "RoleBinding", false),
    ("clusterroles", "ClusterRole", false),
    ("clusterrolebindings", "ClusterRoleBinding", false),
    ("backupconfigurations", "BackupConfiguration", true),
    ("backupsessions", "BackupSession", true),
    ("repositories", "Repository", true),
    ("restoresessions", "RestoreSession", true),
];

pub fn kind_of(plural: &str) -> Option<&'static str> {
    KINDS
        .iter()
        .find(|(p, _, _)| *p == plural)
        .map(|(_, k, _)| *k)
}

pub fn plural_of(kind: &str) -> String {
    KINDS
        .iter()
        .find(|(_, k, _)| *k == kind)
        .map(|(p, _, _)| p.to_string())
        .unwrap_or_else(|| format!("{}s", kind.to_lowercase()))
}

pub fn has_status_subresource(plural: &str) -> bool {
    KINDS.iter().any(|(p, _, s)| *p == plural && *s)
}

/// The path an object of this apiVersion/kind/namespace/name is stored at.
pub fn path_of(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind");
    let name = object["metadata"]["name"].as_str().expect("metadata.name");
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    let plural = plural_of(kind);
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{plural}/{name}"),
        None => format!("{prefix}/{plural}/{name}"),
    }
}

/// Decodes `%XX` and `+` in a query value.
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A query parameter's decoded value.
pub fn param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| decode(v))
    })
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector, as `kubectl get -l` and the API server accept it:
/// `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(s: &str) -> LabelSelector {
        // Split on commas outside parentheses.
        let mut terms = Vec::new();
        let mut depth = 0;
        let mut cur = String::new();
        for ch in s.chars() {
            match ch {
                '(' => {
                    depth += 1;
                    cur.push(ch)
                }
                ')' => {
                    depth -= 1;
                    cur.push(ch)
                }
                ',' if depth == 0 => terms.push(std::mem::take(&mut cur)),
                _ => cur.push(ch),
            }
        }
        terms.push(cur);
        let mut reqs = Vec::new();
        for t in terms.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            let set = |rest: &str| -> Vec<String> {
                rest.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect()
            };
            let req = if let Some((k, v)) = t.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==") {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once('=') {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = t.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set(rest))
            } else if let Some((k, rest)) = t.split_once(" in ") {
                Requirement::In(k.trim().into(), set(rest))
            } else if let Some(k) = t.strip_prefix('!') {
                Requirement::DoesNotExist(k.trim().into())
            } else {
                Requirement::Exists(t.into())
            };
            reqs.push(req);
        }
        LabelSelector(reqs)
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

/// `metadata.name=x` / `metadata.namespace=y` field selectors (the only
/// fields the API server indexes for every kind).
pub fn field_selector_matches(selector: &str, object: &Value) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (field, want, equal) = match term.split_once("!=") {
            Some((f, v)) => (f, v, false),
            None => match term.split_once("==").or_else(|| term.split_once('=')) {
                Some((f, v)) => (f, v, true),
                None => panic!("the fake does not understand field selector {term:?}"),
            },
        };
        let pointer = format!("/{}", field.replace('.', "/"));
        let have = object
            .pointer(&pointer)
            .and_then(Value::as_str)
            .unwrap_or("");
        (have == want) == equal
    })
}

/// Whether every element of an array is an object carrying a string `key`.
fn keyed_by(items: &[Value], key: &str) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|i| i.get(key).is_some_and(Value::is_string))
}

/// The merge key of a list, as the Kubernetes types declare it for the
/// lists stash and kubectl write (containers, volumes, env, ports by
/// `name`; volumeMounts by `mountPath`).
fn merge_key(items: &[Value]) -> Option<&'static str> {
    ["name", "mountPath", "containerPort", "type"]
        .into_iter()
        .find(|k| keyed_by(items, k))
}

/// A strategic merge patch: a JSON merge patch whose lists of keyed objects
/// are merged by key instead of replaced, honouring `$patch: delete` and
/// `$patch: replace`; other directives (`$setElementOrder`, `$retainKeys`)
/// are ignored.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut p = p.clone();
                p.remove("$patch");
                *target = Value::Object(p);
                return;
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if k.starts_with("$setElementOrder") || k == "$retainKeys" || k == "$patch" {
                    continue;
                }
                if v.is_null() {
                    t.remove(k);
                    continue;
                }
                match (t.get_mut(k), v) {
                    (Some(Value::Array(have)), Value::Array(want)) => {
                        let key = merge_key(want).filter(|k| have.is_empty() || keyed_by(have, k));
                        match key {
                            Some(key) => merge_list(have, want, key),
                            None => *have = want.clone(),
                        }
                    }
                    (Some(have), _) => strategic_merge(have, v),
                    (None, _) => {
                        let mut fresh = Value::Null;
                        strategic_merge(&mut fresh, v);
                        t.insert(k.clone(), fresh);
                    }
                }
            }
        }
        Value::Array(items) => {
            *target = Value::Array(
                items
                    .iter()
                    .filter(|i| i.get("$patch").is_none())
                    .cloned()
                    .collect(),
            )
        }
        other => *target = other.clone(),
    }
}

fn merge_list(have: &mut Vec<Value>, want: &[Value], key: &str) {
    for item in want {
        let id = item[key].clone();
        let pos = have.iter().position(|h| h[key] == id);
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                have.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => strategic_merge(&mut have[i], item),
            None => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item);
                have.push(fresh);
            }
        }
    }
}

/// Server-side apply, reasonably: the applied configuration is merged into
/// the live object (maps recursively, keyed lists by key, other lists
/// replaced), and fields this manager applied last time but no longer
/// applies are removed.
pub fn apply(live: &mut Value, applied: &Value, previous: Option<&Value>) {
    if let Some(prev) = previous {
        remove_dropped(live, prev, applied);
    }
    strategic_merge(live, applied);
}

fn remove_dropped(live: &mut Value, prev: &Value, now: &Value) {
    let (Some(l), Some(p)) = (live.as_object_mut(), prev.as_object()) else {
        return;
    };
    for (k, pv) in p {
        match now.get(k) {
            None => {
                l.remove(k);
            }
            Some(nv) if pv.is_object() && nv.is_object() => {
                if let Some(lv) = l.get_mut(k) {
                    remove_dropped(lv, pv, nv);
                }
            }
            Some(_) => {}
        }
    }
}

/// The leaf paths of an applied configuration with their values, for
/// conflict detection between appliers.
pub fn leaves(v: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                leaves(x, &format!("{prefix}/{k}"), out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// A Status error body, as the API server writes it.
pub fn status_body(code: u16, reason: &str, message: &str, details: Value) -> Value {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    });
    if !details.is_null() {
        body["details"] = details;
    }
    body
}

/// Serializes with sorted keys, whatever the map order, so equal JSON hashes equally.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&m[k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}
