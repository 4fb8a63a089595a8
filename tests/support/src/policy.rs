//! The install's ValidatingAdmissionPolicies in force, as kube-apiserver
//! enforces them. Why: `stash-webhook-owned` once forbade the very CronJob
//! stash creates on a real cluster, and no test saw it, because nothing
//! evaluated the policies on what the fake stores (defaulted, see
//! [`super::defaults`]) and on the identity that writes it.
//!
//! [`Policies::install`] renders the policies and bindings with
//! `stash::manifests::objects`; [`Policies::check`] runs on every create and
//! update the fake serves, after defaulting and the mutating webhooks and
//! before the validating webhooks (the API server's plugin order):
//! `matchConstraints.resourceRules` (groups, versions, resources with their
//! `/subresource` forms, operations; `excludeResourceRules`), then the
//! `matchConditions`, then the `variables` in order and the validations,
//! with `request`, `object`, `oldObject` (null on CREATE) and `variables`
//! bound. A failed validation of a `Deny` binding is answered as
//! kube-apiserver answers it: `<resource>.<group> "<name>" is forbidden:
//! ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied
//! request: <message>`, code from the validation's reason (403 for
//! `Forbidden`, 422 for `Invalid`, the default). With `failurePolicy: Fail`
//! an evaluation error (of a match condition, a variable a validation uses,
//! or a validation) denies too, saying `expression '…' resulted in error`.
//! A `Warn` binding's failures become warnings; `Audit` is ignored.
//!
//! What the `cel` crate does not model: the API server's type checking.
//! kube-apiserver compiles each expression against the resource's OpenAPI
//! schema, so a field the schema lacks is a compile error when the policy
//! is created, and native objects (ObjectMeta, PodSpec) are typed messages a
//! comprehension may range over only once cast with `dyn()`. Here every
//! object is untyped JSON: an expression the API server would refuse to
//! compile can still evaluate, and a missing field is only a runtime
//! `no such key` error. Also not modelled: `messageExpression`,
//! `paramKind`/`paramRef`, the bindings' own `matchResources`, namespace and
//! object selectors (the install sets none), cost limits, and DELETE (the
//! fake evaluates creates and updates only; no policy of the install
//! matches a DELETE).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::admissionregistration::v1::{
    NamedRuleWithOperations, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    Validation,
};
use serde_json::{Map, Value, json};

use stash::manifests::{Object, Options};

use super::Identity;
use super::admission::Status;
use super::objects::{Target, path_of};

/// One request as a policy sees it (`request`, `object`, `oldObject`).
#[derive(Debug, Clone)]
pub struct Request {
    pub username: String,
    pub groups: Vec<String>,
    pub group: String,
    pub version: String,
    pub resource: String,
    /// `""` for the main resource.
    pub sub_resource: String,
    pub operation: String,
    pub namespace: String,
    pub name: String,
    pub object: Value,
    /// `None` on CREATE.
    pub old_object: Option<Value>,
}

impl Request {
    /// A write of `object` by `identity` to `target` (its subresource
    /// included), `old` on UPDATE.
    pub fn new(
        identity: &Identity,
        target: &Target,
        operation: &str,
        object: &Value,
        old: Option<&Value>,
    ) -> Request {
        let name = target
            .name
            .clone()
            .or_else(|| object["metadata"]["name"].as_str().map(String::from))
            .unwrap_or_default();
        Request {
            username: identity.username.clone(),
            groups: identity.groups.clone(),
            group: target.group.clone(),
            version: target.version.clone(),
            resource: target.plural.clone(),
            sub_resource: target.subresource.clone().unwrap_or_default(),
            operation: operation.to_string(),
            namespace: target.namespace.clone().unwrap_or_default(),
            name,
            object: object.clone(),
            old_object: old.cloned(),
        }
    }

    /// A write of `object` by user `username` (no groups) to the object's
    /// own path (from its apiVersion, kind, namespace and name).
    pub fn by_user(
        username: &str,
        operation: &str,
        object: &Value,
        old: Option<&Value>,
    ) -> Request {
        let identity = Identity {
            username: username.to_string(),
            groups: Vec::new(),
            cluster_role: None,
        };
        let path = path_of(object);
        let target = Target::parse(&path).unwrap_or_else(|| panic!("{path} is not an object path"));
        Request::new(&identity, &target, operation, object, old)
    }

    /// The `request` variable.
    fn variable(&self) -> Value {
        json!({
            "userInfo": {"username": self.username, "groups": self.groups},
            "resource": {"group": self.group, "version": self.version, "resource": self.resource},
            "subResource": self.sub_resource,
            "kind": {"group": self.group, "version": self.version,
                     "kind": self.object["kind"]},
            "operation": self.operation,
            "namespace": self.namespace,
            "name": self.name,
            "dryRun": false,
        })
    }

    /// `deployments.apps "x"`, as a Status message names the object.
    fn qualified_name(&self) -> String {
        let resource = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        if self.name.is_empty() {
            resource
        } else {
            format!("{resource} \"{}\"", self.name)
        }
    }
}

/// Evaluates one CEL `expression` with `vars` bound.
pub fn eval(
    env: &Arc<cel::Env>,
    expression: &str,
    vars: &Map<String, Value>,
) -> Result<cel::Value, String> {
    let program = env
        .compile(expression)
        .map_err(|e| format!("compilation failed: {e:?}"))?;
    let mut ctx = cel::Context::with_env(env.clone());
    for (k, v) in vars {
        ctx.add_variable(k.clone(), v.clone())
            .map_err(|e| format!("variable {k}: {e:?}"))?;
    }
    program.execute(&ctx).map_err(|e| format!("{e:?}"))
}

/// The message kube-apiserver gives an expression that failed to evaluate.
fn eval_error(expression: &str, error: &str) -> String {
    format!("expression '{expression}' resulted in error: {error}")
}

fn listed(list: &Option<Vec<String>>, want: &str) -> bool {
    list.as_ref()
        .is_some_and(|l| l.iter().any(|x| x == want || x == "*"))
}

/// Whether a rule's `resources` hold the request's resource: `r`,
/// `r/sub`, `r/*`, `*` (main resources only) or `*/*` (anything).
fn resource_listed(list: &Option<Vec<String>>, request: &Request) -> bool {
    let Some(list) = list else { return false };
    list.iter().any(|x| {
        if request.sub_resource.is_empty() {
            x == &request.resource || x == "*" || x == "*/*"
        } else {
            x == &format!("{}/{}", request.resource, request.sub_resource)
                || x == &format!("{}/*", request.resource)
                || x == "*/*"
        }
    })
}

fn rule_matches(rule: &NamedRuleWithOperations, request: &Request) -> bool {
    let scope_ok = match rule.scope.as_deref() {
        Some("Namespaced") => !request.namespace.is_empty(),
        Some("Cluster") => request.namespace.is_empty(),
        _ => true,
    };
    let named = rule
        .resource_names
        .as_ref()
        .is_none_or(|names| names.is_empty() || names.contains(&request.name));
    listed(&rule.api_groups, &request.group)
        && listed(&rule.api_versions, &request.version)
        && resource_listed(&rule.resources, request)
        && listed(&rule.operations, &request.operation)
        && scope_ok
        && named
}

/// Whether the policy's `matchConstraints` select the request.
fn constrained(policy: &ValidatingAdmissionPolicy, request: &Request) -> bool {
    let Some(m) = policy
        .spec
        .as_ref()
        .and_then(|s| s.match_constraints.as_ref())
    else {
        return false;
    };
    let any = |rules: &Option<Vec<NamedRuleWithOperations>>| {
        rules.iter().flatten().any(|r| rule_matches(r, request))
    };
    any(&m.resource_rules) && !any(&m.exclude_resource_rules)
}

/// The validations' verdict on one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub message: String,
    /// `Forbidden`, `Invalid`, … (what the Status answer carries).
    pub reason: String,
}

/// What a policy says of a request: `None` when it does not match (its
/// constraints or match conditions), otherwise its failures (empty: admitted).
pub fn evaluate(policy: &ValidatingAdmissionPolicy, request: &Request) -> Option<Vec<Failure>> {
    let spec = policy.spec.as_ref()?;
    if !constrained(policy, request) {
        return None;
    }
    let fail_closed = spec.failure_policy.as_deref() != Some("Ignore");
    let error = |expression: &str, e: &str| {
        fail_closed.then(|| Failure {
            message: eval_error(expression, e),
            reason: "Invalid".into(),
        })
    };
    let env = Arc::new(cel::Env::stdlib());
    let mut vars = Map::new();
    vars.insert("request".into(), request.variable());
    vars.insert("object".into(), request.object.clone());
    vars.insert(
        "oldObject".into(),
        request.old_object.clone().unwrap_or(Value::Null),
    );
    for c in spec.match_conditions.iter().flatten() {
        match eval(&env, &c.expression, &vars) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(_) => return None,
            Err(e) => return Some(error(&c.expression, &e).into_iter().collect()),
        }
    }
    let broken = bind_variables(&env, spec.variables.iter().flatten(), &mut vars);
    let failures = spec
        .validations
        .iter()
        .flatten()
        .filter_map(|v| validate(&env, v, &vars, &broken, &error))
        .collect();
    Some(failures)
}

/// Evaluates the variables in order into `vars["variables"]`; returns the
/// ones that failed, with their error (a validation using one fails).
fn bind_variables<'a>(
    env: &Arc<cel::Env>,
    variables: impl Iterator<Item = &'a k8s_openapi::api::admissionregistration::v1::Variable>,
    vars: &mut Map<String, Value>,
) -> Vec<(String, String, String)> {
    let mut values = Map::new();
    let mut broken = Vec::new();
    for v in variables {
        vars.insert("variables".into(), Value::Object(values.clone()));
        let value = eval(env, &v.expression, vars)
            .and_then(|x| x.json().map_err(|e| format!("not JSON: {e:?}")));
        match value {
            Ok(value) => {
                values.insert(v.name.clone(), value);
            }
            Err(e) => broken.push((v.name.clone(), v.expression.clone(), e)),
        }
    }
    vars.insert("variables".into(), Value::Object(values));
    broken
}

fn validate(
    env: &Arc<cel::Env>,
    v: &Validation,
    vars: &Map<String, Value>,
    broken: &[(String, String, String)],
    error: &dyn Fn(&str, &str) -> Option<Failure>,
) -> Option<Failure> {
    if let Some((_, expression, e)) = broken
        .iter()
        .find(|(name, _, _)| uses_variable(&v.expression, name))
    {
        return error(expression, e);
    }
    match eval(env, &v.expression, vars) {
        Ok(cel::Value::Bool(true)) => None,
        Ok(_) => Some(Failure {
            message: v
                .message
                .clone()
                .unwrap_or_else(|| format!("failed expression: {}", v.expression.trim())),
            reason: v.reason.clone().unwrap_or_else(|| "Invalid".into()),
        }),
        Err(e) => error(&v.expression, &e),
    }
}

/// Whether `expression` reads `variables.<name>` (not a longer name
/// starting with it).
fn uses_variable(expression: &str, name: &str) -> bool {
    let needle = format!("variables.{name}");
    expression.match_indices(&needle).any(|(at, _)| {
        expression[at + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
    })
}

/// The code kube-apiserver answers a denial's reason with.
fn reason_code(reason: &str) -> u16 {
    match reason {
        "Unauthorized" => 401,
        "Forbidden" => 403,
        "RequestEntityTooLarge" => 413,
        _ => 422,
    }
}

/// The install's policies and bindings.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    pub policies: Vec<ValidatingAdmissionPolicy>,
    pub bindings: Vec<ValidatingAdmissionPolicyBinding>,
}

impl Policies {
    /// Those `stash manifests` renders for an install running `image`
    /// (rendered once per image: every fake cluster asks).
    pub fn install(image: &str) -> Policies {
        static RENDERED: Mutex<BTreeMap<String, Policies>> = Mutex::new(BTreeMap::new());
        let mut rendered = RENDERED.lock().unwrap_or_else(|e| e.into_inner());
        rendered
            .entry(image.to_string())
            .or_insert_with(|| Self::render(image))
            .clone()
    }

    fn render(image: &str) -> Policies {
        let options = Options {
            image: image.to_string(),
            ..Options::default()
        };
        let objects =
            stash::manifests::objects(&options).expect("stash manifests renders the install");
        let mut out = Policies::default();
        for o in objects {
            match o {
                Object::ValidatingAdmissionPolicy(p) => out.policies.push(p),
                Object::ValidatingAdmissionPolicyBinding(b) => out.bindings.push(b),
                _ => {}
            }
        }
        out
    }

    /// The policy named `name`; the test fails when there is none.
    pub fn policy(&self, name: &str) -> &ValidatingAdmissionPolicy {
        self.policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("ValidatingAdmissionPolicy {name}"))
    }

    fn bindings_of<'a>(
        &'a self,
        policy: &'a str,
    ) -> impl Iterator<Item = &'a ValidatingAdmissionPolicyBinding> {
        self.bindings
            .iter()
            .filter(move |b| b.spec.as_ref().and_then(|s| s.policy_name.as_deref()) == Some(policy))
    }

    /// The API server's verdict: the warnings of `Warn` bindings, or the
    /// Status answer of the first failure of a `Deny` binding.
    pub fn check(&self, request: &Request) -> Result<Vec<String>, Status> {
        let mut warnings = Vec::new();
        for policy in &self.policies {
            let name = policy.metadata.name.clone().unwrap_or_default();
            let Some(failures) = evaluate(policy, request) else {
                continue;
            };
            let Some(first) = failures.first() else {
                continue;
            };
            for binding in self.bindings_of(&name) {
                let binding_name = binding.metadata.name.clone().unwrap_or_default();
                let actions = binding
                    .spec
                    .as_ref()
                    .and_then(|s| s.validation_actions.clone())
                    .unwrap_or_default();
                if actions.iter().any(|a| a == "Warn") {
                    warnings.extend(failures.iter().map(|f| {
                        format!(
                            "Validation failed for ValidatingAdmissionPolicy '{name}' with binding '{binding_name}': {}",
                            f.message
                        )
                    }));
                }
                if actions.iter().any(|a| a == "Deny") {
                    return Err(denial(request, &name, &binding_name, first));
                }
            }
        }
        Ok(warnings)
    }
}

/// kube-apiserver's answer to a request a `Deny` binding refused.
fn denial(request: &Request, policy: &str, binding: &str, failure: &Failure) -> Status {
    let message = format!(
        "{} is forbidden: ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {}",
        request.qualified_name(),
        failure.message
    );
    let mut status = Status::new(
        reason_code(&failure.reason),
        &failure.reason,
        message.clone(),
    );
    status.details = json!({
        "name": request.name, "group": request.group, "kind": request.resource,
        "causes": [{"message": message}],
    });
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variable_is_used_by_its_whole_name() {
        assert!(uses_variable("variables.new.spec == 1", "new"));
        assert!(uses_variable("size(variables.new)", "new"));
        assert!(!uses_variable("variables.newPod.spec == 1", "new"));
        assert!(uses_variable("variables.newPod.spec == 1", "newPod"));
    }
}
