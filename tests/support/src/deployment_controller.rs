//! The deployment controller (and the bit of the ReplicaSet controller a
//! test can see), because stash's webhook sees what it writes: on a real
//! cluster every ReplicaSet the controller creates or scales goes through
//! `/mutate/workloads`, and if the webhook changes a ReplicaSet's template
//! the controller no longer recognises it as the Deployment's and makes
//! another one: a rollout that never ends (the "ReplicaSet storm").
//!
//! For each Deployment, as the real controller does it:
//! - the new ReplicaSet is the first (oldest) owned one whose template equals
//!   the Deployment's, ignoring the `pod-template-hash` label;
//! - none: create `<deployment>-<hash>`, the hash an FNV-32a of the template
//!   and `status.collisionCount`, safe-encoded; template and selector
//!   labelled `pod-template-hash`; the Deployment's annotations copied
//!   (minus kubectl's last-applied copy) plus `deployment.kubernetes.io/
//!   revision`, `desired-replicas`, `max-replicas`; a controller
//!   ownerReference `apps/v1 Deployment <name> <uid> controller: true`;
//! - the name is taken by a ReplicaSet whose template differs: a hash
//!   collision, so `status.collisionCount` goes up and the next sync tries
//!   another name;
//! - the new ReplicaSet is scaled to `spec.replicas` and every old one to 0;
//! - `spec.paused: true` on the Deployment stops rollouts (no new ReplicaSet).
//!
//! Every write is an ordinary request as
//! `system:serviceaccount:kube-system:deployment-controller`: CREATE, and
//! UPDATE (PUT) for scaling, both through the admission chain; status writes
//! through the status subresource. Rolling updates are collapsed into one
//! step (new one up, old ones down) and pods are not modelled.

use serde_json::{Value, json};

use super::Identity;
use super::api_server::{ApiRequest, State};
use super::objects::canonical;

const REPLICASETS: &str = "/apis/apps/v1/namespaces";
/// Label the controller adds to a ReplicaSet's template and selector.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";

/// What a run of the controller did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// Sync passes over every Deployment.
    pub passes: usize,
    /// Whether the last pass wrote nothing (the cluster is quiet).
    pub settled: bool,
    /// Writes made, in all passes.
    pub writes: usize,
}

/// `rand.SafeEncodeString`: the alphabet the controller writes hashes in.
fn safe_encode(s: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHABET[(b as usize) % ALPHABET.len()] as char)
        .collect()
}

/// The `pod-template-hash` of a template and a collision count.
pub fn pod_template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut hash: u32 = 0x811c9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            hash ^= *b as u32;
            hash = hash.wrapping_mul(0x01000193);
        }
    };
    eat(canonical(template).as_bytes());
    if let Some(c) = collision_count {
        eat(&(c as u32).to_le_bytes());
    }
    safe_encode(&hash.to_string())
}

fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty()
            && let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("labels");
        }
    }
    t
}

/// `EqualIgnoreHash`: the templates are equal but for `pod-template-hash`.
pub fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    without_hash(a) == without_hash(b)
}

fn skip_copy(annotation: &str) -> bool {
    matches!(
        annotation,
        "kubectl.kubernetes.io/last-applied-configuration"
            | REVISION
            | "deployment.kubernetes.io/revision-history"
            | "deployment.kubernetes.io/desired-replicas"
            | "deployment.kubernetes.io/max-replicas"
            | "deprecated.deployment.rollback.to"
    )
}

fn controlled_by(rs: &Value, uid: &str) -> bool {
    rs.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["uid"] == uid && r["controller"] == true)
        })
}

fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn revision(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The annotations the new ReplicaSet should carry: its own, the
/// Deployment's copied over them, and the replica counts.
fn new_rs_annotations(deploy: &Value, rs_annotations: &Value, revision: i64) -> Value {
    let mut out = rs_annotations.as_object().cloned().unwrap_or_default();
    for (k, v) in deploy
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if !skip_copy(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    let want = replicas(deploy);
    let surge = (want * 25 + 99) / 100;
    out.insert(
        "deployment.kubernetes.io/desired-replicas".into(),
        json!(want.to_string()),
    );
    out.insert(
        "deployment.kubernetes.io/max-replicas".into(),
        json!((want + surge).to_string()),
    );
    out.entry(REVISION.to_string())
        .or_insert_with(|| json!(revision.to_string()));
    Value::Object(out)
}

struct Syncer<'a> {
    state: &'a mut State,
    identity: Identity,
    writes: usize,
}

impl Syncer<'_> {
    fn call(&mut self, method: &str, path: &str, content_type: &str, body: Value) -> (u16, Value) {
        let response = self.state.handle(&ApiRequest {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            content_type: content_type.into(),
            body,
            identity: self.identity.clone(),
        });
        if method != "GET" && response.code < 300 {
            self.writes += 1;
        }
        (response.code, response.body)
    }

    /// The ReplicaSets controlled by the Deployment, oldest first.
    fn owned(&self, ns: &str, uid: &str) -> Vec<Value> {
        let collection = super::objects::Target::parse(&format!("{REPLICASETS}/{ns}/replicasets"))
            .expect("a collection");
        let mut owned: Vec<(u64, Value)> = self
            .state
            .select(&collection, "")
            .into_iter()
            .filter(|rs| controlled_by(rs, uid))
            .map(|rs| {
                let path = format!(
                    "{REPLICASETS}/{ns}/replicasets/{}",
                    rs["metadata"]["name"].as_str().unwrap_or("")
                );
                let born = self
                    .state
                    .history
                    .iter()
                    .rev()
                    .find(|c| c.path == path && c.kind == super::api_server::ChangeKind::Added)
                    .map(|c| c.rv)
                    .unwrap_or(0);
                (born, rs)
            })
            .collect();
        owned.sort_by_key(|(born, _)| *born);
        owned.into_iter().map(|(_, rs)| rs).collect()
    }

    /// Writes `rs` back (an UPDATE through admission) when it changed.
    fn update_rs(&mut self, before: &Value, after: Value) {
        if *before == after {
            return;
        }
        let ns = after["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = after["metadata"]["name"].as_str().unwrap_or("").to_string();
        self.call(
            "PUT",
            &format!("{REPLICASETS}/{ns}/replicasets/{name}"),
            "application/json",
            after,
        );
    }

    /// The ReplicaSet controller's part: status.replicas follows spec.replicas.
    fn rs_status(&mut self, rs: &Value) {
        let want = replicas(rs);
        let status = json!({"replicas": want, "fullyLabeledReplicas": want, "readyReplicas": want,
                            "availableReplicas": want,
                            "observedGeneration": rs["metadata"]["generation"]});
        let status = if want == 0 {
            json!({"replicas": 0, "observedGeneration": rs["metadata"]["generation"]})
        } else {
            status
        };
        if rs.get("status") == Some(&status) {
            return;
        }
        let ns = rs["metadata"]["namespace"].as_str().unwrap_or("");
        let name = rs["metadata"]["name"].as_str().unwrap_or("");
        let mut body = rs.clone();
        body["status"] = status;
        self.call(
            "PUT",
            &format!("{REPLICASETS}/{ns}/replicasets/{name}/status"),
            "application/json",
            body,
        );
    }

    fn sync(&mut self, deploy: &Value) {
        if deploy.pointer("/metadata/deletionTimestamp").is_some() {
            return;
        }
        let ns = deploy["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = deploy["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let uid = deploy["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let template = deploy["spec"]["template"].clone();
        let want = replicas(deploy);
        let paused = deploy.pointer("/spec/paused") == Some(&Value::Bool(true));
        let collision_count = deploy
            .pointer("/status/collisionCount")
            .and_then(Value::as_i64);
        let owned = self.owned(&ns, &uid);
        let max_revision = owned.iter().map(revision).max().unwrap_or(0);
        let mut new_rs = owned
            .iter()
            .find(|rs| equal_ignore_hash(&rs["spec"]["template"], &template))
            .cloned();
        let mut collision_count_now = collision_count;
        if new_rs.is_none() && !paused {
            let hash = pod_template_hash(&template, collision_count);
            let mut rs_template = template.clone();
            rs_template["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
            let mut selector = deploy["spec"]["selector"].clone();
            selector["matchLabels"][POD_TEMPLATE_HASH] = json!(hash);
            let mut labels = template["metadata"]["labels"].clone();
            labels[POD_TEMPLATE_HASH] = json!(hash);
            let rs = json!({
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": format!("{name}-{hash}"),
                    "namespace": ns,
                    "labels": labels,
                    "annotations": new_rs_annotations(deploy, &json!({}), max_revision + 1),
                    "ownerReferences": [{
                        "apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid,
                        "controller": true, "blockOwnerDeletion": true
                    }]
                },
                "spec": {"replicas": want, "minReadySeconds": deploy["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                         "selector": selector, "template": rs_template}
            });
            let (code, body) = self.call(
                "POST",
                &format!("{REPLICASETS}/{ns}/replicasets"),
                "application/json",
                rs,
            );
            match code {
                201 => new_rs = Some(body),
                409 => {
                    let (_, existing) = self.call(
                        "GET",
                        &format!("{REPLICASETS}/{ns}/replicasets/{name}-{hash}"),
                        "",
                        Value::Null,
                    );
                    if controlled_by(&existing, &uid)
                        && equal_ignore_hash(&existing["spec"]["template"], &template)
                    {
                        new_rs = Some(existing);
                    } else {
                        // A hash collision: try another name on the next sync.
                        collision_count_now = Some(collision_count.unwrap_or(0) + 1);
                    }
                }
                other => panic!(
                    "the deployment controller could not create a ReplicaSet ({other}): {body}"
                ),
            }
        }
        if !paused {
            let new_name = new_rs.as_ref().map(|rs| rs["metadata"]["name"].clone());
            if let Some(rs) = &new_rs {
                let mut scaled = rs.clone();
                scaled["spec"]["replicas"] = json!(want);
                scaled["metadata"]["annotations"] = new_rs_annotations(
                    deploy,
                    &rs["metadata"]["annotations"],
                    max_revision.max(revision(rs)),
                );
                self.update_rs(rs, scaled);
            }
            if new_rs.is_some() {
                for old in owned
                    .iter()
                    .filter(|rs| Some(&rs["metadata"]["name"]) != new_name.as_ref())
                {
                    let mut scaled = old.clone();
                    scaled["spec"]["replicas"] = json!(0);
                    self.update_rs(old, scaled);
                }
            }
        }
        // Status of every owned ReplicaSet, then of the Deployment.
        for rs in self.owned(&ns, &uid) {
            self.rs_status(&rs);
        }
        let owned = self.owned(&ns, &uid);
        let updated = owned
            .iter()
            .find(|rs| equal_ignore_hash(&rs["spec"]["template"], &template))
            .map(replicas)
            .unwrap_or(0);
        let total: i64 = owned.iter().map(replicas).sum();
        let mut status = json!({
            "observedGeneration": deploy["metadata"]["generation"],
            "replicas": total, "updatedReplicas": updated,
            "readyReplicas": total, "availableReplicas": total
        });
        if let Some(c) = collision_count_now {
            status["collisionCount"] = json!(c);
        }
        if deploy.get("status") != Some(&status) {
            let mut body = deploy.clone();
            body["status"] = status;
            self.call(
                "PUT",
                &format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}/status"),
                "application/json",
                body,
            );
        }
    }
}

/// One sync pass over every Deployment; returns the writes it made.
pub fn sync_pass(state: &mut State) -> usize {
    let all = super::objects::Target::parse("/apis/apps/v1/deployments").expect("a collection");
    let deployments = state.select(&all, "");
    let mut syncer = Syncer {
        state,
        identity: Identity::deployment_controller(),
        writes: 0,
    };
    for d in &deployments {
        let path = super::objects::path_of(d);
        // Each sync reads the latest Deployment, as the informer would by now.
        let Some(latest) = syncer.state.objects.get(&path).cloned() else {
            continue;
        };
        syncer.sync(&latest);
    }
    syncer.writes
}
