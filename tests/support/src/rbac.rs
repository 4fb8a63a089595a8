//! The authorizer's view of the request log: each request a stash identity
//! made, as (verb, group, resource[/subresource], name), checked against
//! the ClusterRole `stash manifests` binds to that identity
//! (`stash::manifests::rbac`). A request the install would refuse on a real
//! cluster fails the test that made it. The reconciler's Lease is granted by
//! the install's namespaced Role `stash-webhook`, in the install namespace only.

use k8s_openapi::api::rbac::v1::PolicyRule;

use stash::manifests::{names, rbac};

use super::api_server::Recorded;

/// The rules of one of the install's ClusterRoles.
pub fn rules(cluster_role: &str) -> Vec<PolicyRule> {
    match cluster_role {
        "stash-webhook" => rbac::webhook_rules(),
        "stash-cron-job" => rbac::cron_job_rules(),
        "stash-sidecar" => rbac::sidecar_rules(),
        other => panic!("unknown ClusterRole {other}"),
    }
}

/// What the API server's authorizer checks for one request: (verb, group,
/// resource[/subresource], name). A server-side apply may create, so it
/// needs `create` besides `patch`.
pub fn authorization_attributes(r: &Recorded) -> Vec<(String, String, String, String)> {
    let parts: Vec<&str> = r.path.split('/').filter(|p| !p.is_empty()).collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _, "namespaces", _, rest @ ..] => ("", rest),
        ["apis", group, _, "namespaces", _, rest @ ..] => (*group, rest),
        ["api", _, rest @ ..] => ("", rest),
        ["apis", group, _, rest @ ..] => (*group, rest),
        _ => panic!("not a resource request: {}", r.path),
    };
    let (resource, name) = match rest {
        [res] => (res.to_string(), ""),
        [res, name] => (res.to_string(), *name),
        [res, name, sub] => (format!("{res}/{sub}"), *name),
        _ => panic!("unexpected path {}", r.path),
    };
    let verbs: &[&str] = match (r.method.as_str(), name.is_empty()) {
        ("GET", true) if r.is_watch() => &["watch"],
        ("GET", true) => &["list"],
        ("GET", false) => &["get"],
        ("POST", _) => &["create"],
        ("PUT", _) => &["update"],
        ("PATCH", _) if r.content_type.starts_with("application/apply-patch") => {
            &["patch", "create"]
        }
        ("PATCH", _) => &["patch"],
        ("DELETE", false) => &["delete"],
        ("DELETE", true) => &["deletecollection"],
        (m, _) => panic!("unexpected verb {m}"),
    };
    verbs
        .iter()
        .map(|v| {
            (
                v.to_string(),
                group.to_string(),
                resource.clone(),
                name.to_string(),
            )
        })
        .collect()
}

/// Whether `rule` grants these attributes.
pub fn allows(
    rule: &PolicyRule,
    (verb, group, resource, name): &(String, String, String, String),
) -> bool {
    let has = |list: &Option<Vec<String>>, want: &str| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|x| x == want || x == "*"))
    };
    rule.verbs.iter().any(|v| v == verb || v == "*")
        && has(&rule.api_groups, group)
        && has(&rule.resources, resource)
        && rule
            .resource_names
            .as_ref()
            .is_none_or(|names| names.is_empty() || names.iter().any(|n| n == name))
}

/// Every logged request of a stash identity that its ClusterRole would refuse.
pub fn forbidden(log: &[Recorded]) -> Vec<String> {
    let mut refused = Vec::new();
    for r in log {
        let Some(role) = r.cluster_role else { continue };
        let mut rules = rules(role);
        // The install's namespaced Role `stash-webhook` (its Lease) in its own namespace.
        let install_ns = format!("/namespaces/{}/", names::DEFAULT_NAMESPACE);
        if role == "stash-webhook" && r.path.contains(&install_ns) {
            rules.extend(rbac::webhook_namespaced_rules());
        }
        for attrs in authorization_attributes(r) {
            if !rules.iter().any(|rule| allows(rule, &attrs)) {
                refused.push(format!("{role}: {attrs:?} ({} {})", r.method, r.path));
            }
        }
    }
    refused
}
