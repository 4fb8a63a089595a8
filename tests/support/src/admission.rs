//! The API server's admission chain, calling the real
//! `stash::admission::handle` for every webhook the install registers
//! (`stash::manifests::webhooks::{mutating, validating}` with the default
//! options): rules (group, version, resource, operation), the namespace
//! selector, mutating webhooks first and their base64 JSONPatch applied,
//! then the object defaulted again ([`super::defaults`]: the API server
//! decodes the patched object) and the install's ValidatingAdmissionPolicies
//! ([`super::policy`]), then validating webhooks on the mutated object. A denial becomes the
//! Status error the API server answers the write with (`admission webhook
//! "…" denied the request: …`, code ≥ 400). The webhooks' store is built
//! from the cluster's current BackupConfigurations, Repositories and
//! RestoreSessions, as the webhook's informers would hold them.
//!
//! Not modelled: `reinvocationPolicy: IfNeeded` (there is one mutating
//! webhook per resource, so nothing could trigger a reinvocation), webhook
//! timeouts, and informer lag in the webhook's store.

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::RuleWithOperations;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use stash::admission::{Endpoint, handle};
use stash::manifests::Options;
use stash::manifests::webhooks;
use stash::settings::Settings;
use stash::store::Snapshot;

use super::Identity;
use super::defaults;
use super::objects::{Target, status_body};
use super::policy::{self, Policies};

/// The webhooks' verdict on one write.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The object as it would be stored (every mutating patch applied).
    pub object: Value,
    /// The webhooks' warnings, in order (what kubectl prints as `Warning:`).
    pub warnings: Vec<String>,
    /// The endpoints called, in order.
    pub called: Vec<Endpoint>,
}

/// An error answer of the API server: code, reason, message.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Value,
}

impl Status {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Status {
        Status {
            code,
            reason: reason.into(),
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn body(&self) -> Value {
        status_body(self.code, &self.reason, &self.message, self.details.clone())
    }
}

struct Hook {
    name: String,
    endpoint: Endpoint,
    rules: Vec<RuleWithOperations>,
    namespace_selector: Option<LabelSelector>,
    mutating: bool,
    fail_closed: bool,
}

fn hooks() -> Vec<Hook> {
    let options = Options::default();
    let endpoint = |path: Option<String>| {
        Endpoint::from_path(path.as_deref().unwrap_or("")).expect("a stash endpoint")
    };
    let mut out = Vec::new();
    for w in webhooks::mutating(&options).webhooks.unwrap_or_default() {
        out.push(Hook {
            endpoint: endpoint(w.client_config.service.and_then(|s| s.path)),
            name: w.name,
            rules: w.rules.unwrap_or_default(),
            namespace_selector: w.namespace_selector,
            mutating: true,
            fail_closed: w.failure_policy.as_deref() != Some("Ignore"),
        });
    }
    for w in webhooks::validating(&options).webhooks.unwrap_or_default() {
        out.push(Hook {
            endpoint: endpoint(w.client_config.service.and_then(|s| s.path)),
            name: w.name,
            rules: w.rules.unwrap_or_default(),
            namespace_selector: w.namespace_selector,
            mutating: false,
            fail_closed: w.failure_policy.as_deref() != Some("Ignore"),
        });
    }
    out
}

fn listed(list: &Option<Vec<String>>, want: &str) -> bool {
    list.as_ref()
        .is_some_and(|l| l.iter().any(|x| x == want || x == "*"))
}

fn rule_matches(rule: &RuleWithOperations, target: &Target, operation: &str) -> bool {
    let resource = match &target.subresource {
        Some(sub) => format!("{}/{sub}", target.plural),
        None => target.plural.clone(),
    };
    listed(&rule.api_groups, &target.group)
        && listed(&rule.api_versions, &target.version)
        && listed(&rule.resources, &resource)
        && listed(&rule.operations, operation)
}

/// The namespace selector against a namespace's `kubernetes.io/metadata.name` label.
fn namespace_matches(selector: &Option<LabelSelector>, namespace: &str) -> bool {
    let Some(sel) = selector else { return true };
    let labels = std::collections::BTreeMap::from([(
        "kubernetes.io/metadata.name".to_string(),
        namespace.to_string(),
    )]);
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = sel.match_expressions.iter().flatten().all(|e| {
        let have = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => have.is_some_and(|h| values.contains(h)),
            "NotIn" => have.is_none_or(|h| !values.contains(h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => panic!("unknown selector operator {other}"),
        }
    });
    by_labels && by_expressions
}

/// What the webhook's informers hold: every configuration, repository and
/// RestoreSession stored.
pub fn snapshot<'a>(objects: impl Iterator<Item = (&'a String, &'a Value)>) -> Snapshot {
    let mut snap = Snapshot::default();
    for (path, obj) in objects {
        let Some(t) = Target::parse(path) else {
            continue;
        };
        if t.group != "stash.appscode.com" {
            continue;
        }
        match t.plural.as_str() {
            "backupconfigurations" => {
                if let Ok(bc) = serde_json::from_value(obj.clone()) {
                    snap.upsert_config(bc);
                }
            }
            "repositories" => {
                if let Ok(repo) = serde_json::from_value(obj.clone()) {
                    snap.upsert_repository(repo);
                }
            }
            "restoresessions" => {
                if let Ok(rs) = serde_json::from_value(obj.clone()) {
                    snap.upsert_restore(rs);
                }
            }
            _ => {}
        }
    }
    snap
}

/// Brings `snap` in step with the stash object `namespace/name` of
/// `plural` now stored as `obj` (`None`: deleted); what [`snapshot`] would
/// make of the whole store, one change at a time.
pub fn reindex(
    snap: &mut Snapshot,
    plural: &str,
    namespace: &str,
    name: &str,
    obj: Option<&Value>,
) {
    match plural {
        "backupconfigurations" => {
            snap.remove_config(namespace, name);
            if let Some(bc) = obj.and_then(|o| serde_json::from_value(o.clone()).ok()) {
                snap.upsert_config(bc);
            }
        }
        "repositories" => {
            snap.remove_repository(namespace, name);
            if let Some(repo) = obj.and_then(|o| serde_json::from_value(o.clone()).ok()) {
                snap.upsert_repository(repo);
            }
        }
        "restoresessions" => {
            snap.remove_restore(namespace, name);
            if let Some(rs) = obj.and_then(|o| serde_json::from_value(o.clone()).ok()) {
                snap.upsert_restore(rs);
            }
        }
        _ => {}
    }
}

/// One write as the admission chain sees it.
pub struct Write<'a> {
    pub snap: &'a Snapshot,
    pub settings: &'a Settings,
    pub policies: &'a Policies,
    pub identity: &'a Identity,
    pub target: &'a Target,
    pub operation: &'a str,
    pub old: Option<&'a Value>,
    pub dry_run: bool,
    pub serial: u64,
}

impl Write<'_> {
    fn namespace(&self) -> String {
        self.target.namespace.clone().unwrap_or_default()
    }
}

/// Runs the chain for one write of `object` to `w.target`, in the API
/// server's order: the mutating webhooks (of the configuration, in order),
/// defaulting again (the API server decodes the patched object), the
/// ValidatingAdmissionPolicies, then the validating webhooks.
pub fn admit(w: &Write, object: Value) -> Result<Admitted, Status> {
    let mut admitted = Admitted {
        object,
        warnings: Vec::new(),
        called: Vec::new(),
    };
    let hooks: Vec<Hook> = hooks()
        .into_iter()
        .filter(|h| {
            h.rules
                .iter()
                .any(|r| rule_matches(r, w.target, w.operation))
        })
        .filter(|h| namespace_matches(&h.namespace_selector, &w.namespace()))
        .collect();
    for hook in hooks.iter().filter(|h| h.mutating) {
        call(w, hook, &mut admitted)?;
    }
    defaults::apply(&w.target.group, &w.target.plural, &mut admitted.object);
    let request = policy::Request::new(w.identity, w.target, w.operation, &admitted.object, w.old);
    admitted.warnings.extend(w.policies.check(&request)?);
    for hook in hooks.iter().filter(|h| !h.mutating) {
        call(w, hook, &mut admitted)?;
    }
    Ok(admitted)
}

/// Calls one webhook with the object as admitted so far: its warnings and
/// patch are taken, its denial is the write's answer.
fn call(w: &Write, hook: &Hook, admitted: &mut Admitted) -> Result<(), Status> {
    let kind = admitted.object["kind"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let gvk = json!({"group": w.target.group, "version": w.target.version, "kind": kind});
    let gvr =
        json!({"group": w.target.group, "version": w.target.version, "resource": w.target.plural});
    let name = admitted.object["metadata"]["name"].clone();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-4000-8000-{:012}", w.serial),
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": name, "namespace": w.namespace(),
            "operation": w.operation,
            "userInfo": {"username": w.identity.username, "groups": w.identity.groups},
            "object": admitted.object,
            "oldObject": w.old.cloned().unwrap_or(Value::Null),
            "dryRun": w.dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1",
                        "kind": if w.operation == "CREATE" { "CreateOptions" } else { "UpdateOptions" }}
        }
    });
    let body = serde_json::to_vec(&review).expect("serialize a review");
    admitted.called.push(hook.endpoint);
    let answer = match handle(hook.endpoint, &body, w.snap, w.settings) {
        Ok(a) => a,
        Err(e) if hook.fail_closed => {
            return Err(Status::new(
                500,
                "InternalError",
                format!(
                    "Internal error occurred: failed calling webhook \"{}\": {e}",
                    hook.name
                ),
            ));
        }
        Err(_) => return Ok(()),
    };
    let answer: Value = serde_json::from_slice(&answer.body).expect("an AdmissionReview");
    let response = &answer["response"];
    if let Some(warnings) = response["warnings"].as_array() {
        admitted
            .warnings
            .extend(warnings.iter().filter_map(Value::as_str).map(String::from));
    }
    if response["allowed"] != true {
        let status = &response["status"];
        let code = status["code"].as_u64().unwrap_or(0).max(400) as u16;
        let denied = format!("admission webhook \"{}\" denied the request", hook.name);
        let message = match (status["message"].as_str(), status["reason"].as_str()) {
            (Some(m), _) if !m.is_empty() => format!("{denied}: {m}"),
            (_, Some(r)) if !r.is_empty() => format!("{denied}: {r}"),
            _ => format!("{denied} without explanation"),
        };
        let reason = status["reason"].as_str().unwrap_or("").to_string();
        return Err(Status {
            code,
            reason,
            message,
            details: Value::Null,
        });
    }
    if let Some(b64) = response["patch"].as_str() {
        assert!(
            hook.mutating,
            "{} patched from a validating webhook",
            hook.name
        );
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("the patch is base64");
        let patch: json_patch::Patch =
            serde_json::from_slice(&bytes).expect("the patch is a JSON patch");
        if let Err(e) = json_patch::patch(&mut admitted.object, &patch) {
            return Err(Status::new(
                500,
                "InternalError",
                format!(
                    "Internal error occurred: admission webhook \"{}\" returned a patch that does not apply: {e}",
                    hook.name
                ),
            ));
        }
    }
    Ok(())
}
