//! The authorizer, in force: each request a stash identity makes is checked,
//! as (verb, group, resource[/subresource], name), against the ClusterRole
//! `stash manifests` binds to that identity (`stash::manifests::rbac`), and
//! one the install would refuse is answered 403 Forbidden, worded as
//! kube-apiserver words it, before anything is read or stored. Why in force
//! rather than after the fact: code that handles a 403 (or gives up on one)
//! must meet it here as it will on a cluster. The reconciler's Lease is
//! granted by the install's namespaced Role `stash-webhook`, in the install
//! namespace only. Identities that are not stash's (admin, the deployment
//! controller) are not checked.

use k8s_openapi::api::rbac::v1::PolicyRule;

use stash::manifests::{names, rbac};

use super::Identity;
use super::objects::param;

/// The rules of one of the install's ClusterRoles.
pub fn rules(cluster_role: &str) -> Vec<PolicyRule> {
    match cluster_role {
        "stash-webhook" => rbac::webhook_rules(),
        "stash-cron-job" => rbac::cron_job_rules(),
        "stash-sidecar" => rbac::sidecar_rules(),
        other => panic!("unknown ClusterRole {other}"),
    }
}

/// What the authorizer checks of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    /// `""` for a collection.
    pub name: String,
    /// `""` for a cluster-scoped request.
    pub namespace: String,
}

/// The attributes of one request (method, path, query, content type). A
/// server-side apply is a `patch`, and also a `create` when it creates
/// (`object_exists` false), as kube-apiserver authorizes it.
pub fn attributes(
    method: &str,
    path: &str,
    query: &str,
    content_type: &str,
    object_exists: bool,
) -> Vec<Attributes> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _, rest @ ..] => ("", rest),
        ["apis", group, _, rest @ ..] => (*group, rest),
        _ => panic!("not a resource request: {path}"),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (*ns, rest),
        rest => ("", rest),
    };
    let (resource, name) = match rest {
        [res] => (res.to_string(), ""),
        [res, name] => (res.to_string(), *name),
        [res, name, sub] => (format!("{res}/{sub}"), *name),
        _ => panic!("unexpected path {path}"),
    };
    let watch = matches!(param(query, "watch").as_deref(), Some("true" | "1"));
    let verbs: &[&str] = match (method, name.is_empty()) {
        ("GET", true) if watch => &["watch"],
        ("GET", true) => &["list"],
        ("GET", false) => &["get"],
        ("POST", _) => &["create"],
        ("PUT", _) => &["update"],
        ("PATCH", _) if content_type.starts_with("application/apply-patch") && !object_exists => {
            &["patch", "create"]
        }
        ("PATCH", _) => &["patch"],
        ("DELETE", false) => &["delete"],
        ("DELETE", true) => &["deletecollection"],
        (m, _) => panic!("unexpected verb {m}"),
    };
    verbs
        .iter()
        .map(|verb| Attributes {
            verb: verb.to_string(),
            group: group.to_string(),
            resource: resource.clone(),
            name: name.to_string(),
            namespace: namespace.to_string(),
        })
        .collect()
}

/// Whether `rule` grants these attributes.
pub fn allows(rule: &PolicyRule, a: &Attributes) -> bool {
    let has = |list: &Option<Vec<String>>, want: &str| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|x| x == want || x == "*"))
    };
    rule.verbs.iter().any(|v| v == &a.verb || v == "*")
        && has(&rule.api_groups, &a.group)
        && has(&rule.resources, &a.resource)
        && rule
            .resource_names
            .as_ref()
            .is_none_or(|names| names.is_empty() || names.iter().any(|n| n == &a.name))
}

/// The rules `role` holds in `namespace`: its ClusterRole, and for the
/// server the namespaced Role of the install's namespace.
fn rules_in(role: &str, namespace: &str) -> Vec<PolicyRule> {
    let mut rules = rules(role);
    if role == "stash-webhook" && namespace == names::DEFAULT_NAMESPACE {
        rules.extend(rbac::webhook_namespaced_rules());
    }
    rules
}

/// kube-apiserver's message for a refused request.
pub fn forbidden_message(username: &str, a: &Attributes) -> String {
    let base = a.resource.split('/').next().unwrap_or(&a.resource);
    let qualified = if a.group.is_empty() {
        base.to_string()
    } else {
        format!("{base}.{}", a.group)
    };
    let object = if a.name.is_empty() {
        qualified
    } else {
        format!("{qualified} \"{}\"", a.name)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    format!(
        "{object} is forbidden: User \"{username}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
        a.verb, a.resource, a.group
    )
}

/// The authorizer's verdict on a request by `identity`: `Err` with the
/// first refused attributes and their message (`None` role: not checked).
pub fn authorize(
    identity: &Identity,
    attrs: &[Attributes],
) -> Result<(), Box<(Attributes, String)>> {
    let Some(role) = identity.cluster_role else {
        return Ok(());
    };
    for a in attrs {
        if !rules_in(role, &a.namespace).iter().any(|r| allows(r, a)) {
            return Err(Box::new((
                a.clone(),
                forbidden_message(&identity.username, a),
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_worded_as_kube_apiserver_words_them() {
        let a = &attributes(
            "PATCH",
            "/apis/apps/v1/namespaces/demo/deployments/app",
            "",
            "application/merge-patch+json",
            true,
        )[0];
        assert_eq!(
            forbidden_message("system:serviceaccount:demo:sa", a),
            "deployments.apps \"app\" is forbidden: User \"system:serviceaccount:demo:sa\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"demo\""
        );
        let a = &attributes("POST", "/api/v1/namespaces/demo/secrets", "", "", false)[0];
        assert_eq!(
            forbidden_message("u", a),
            "secrets is forbidden: User \"u\" cannot create resource \"secrets\" in API group \"\" in the namespace \"demo\""
        );
        let a = &attributes(
            "PUT",
            "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupsessions/s/status",
            "",
            "",
            true,
        )[0];
        assert!(
            forbidden_message("u", a).starts_with(
                "backupsessions.stash.appscode.com \"s\" is forbidden: User \"u\" cannot update resource \"backupsessions/status\""
            ),
            "{}",
            forbidden_message("u", a)
        );
    }

    #[test]
    fn an_apply_needs_create_only_when_it_creates() {
        let verbs = |exists| {
            attributes(
                "PATCH",
                "/apis/batch/v1/namespaces/demo/cronjobs/x",
                "fieldManager=m",
                "application/apply-patch+yaml",
                exists,
            )
            .into_iter()
            .map(|a| a.verb)
            .collect::<Vec<_>>()
        };
        assert_eq!(verbs(true), ["patch"]);
        assert_eq!(verbs(false), ["patch", "create"]);
    }
}
