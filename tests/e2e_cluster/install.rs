//! The install as `stash manifests` renders it (`stash::manifests::objects`),
//! applied to the real cluster: the namespace, ServiceAccount, ClusterRoles,
//! (Cluster)RoleBindings, Role, PodDisruptionBudget, ValidatingAdmissionPolicies
//! and their bindings, and the two webhook configurations. So the RBAC and
//! the policies the users get are the ones `stash serve` runs under here (a
//! test with admin rights once hid that the policies refused stash's own
//! CronJob).
//!
//! Two departures, both forced by the server running as a local process:
//! the server's Deployment and Service are left out, and each webhook's
//! `clientConfig` calls this machine (`url`) instead of the Service, with the
//! test's CA bundle (rendered in, as `--ca-bundle-file` does). Nothing else
//! is edited; the test scopes stash to its namespace with the render option
//! `--namespaces <test namespace>`, not by editing selectors.
//!
//! Every object created is recorded (before the next is tried), so the
//! cleanup deletes exactly what the test made, cluster-scoped ones
//! included, also after a failure halfway.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Resource;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::{ApiResource, DynamicObject};

use stash::manifests::{CaBundle, Object, Options};

/// One object the test created, enough to delete it.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub resource: ApiResource,
    pub namespace: Option<String>,
    pub name: String,
}

impl Created {
    /// `Kind/name` or `Kind ns/name`, for messages.
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.resource.kind, self.name),
            None => format!("{}/{}", self.resource.kind, self.name),
        }
    }

    /// Deletes it; gone already is fine.
    pub async fn delete(&self, client: &kube::Client) -> Result<(), String> {
        let api = self.api(client);
        match api.delete(&self.name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if stash::reconcile::apply::is_not_found(&e) => Ok(()),
            Err(e) => Err(format!("delete {}: {e}", self.id())),
        }
    }

    fn api(&self, client: &kube::Client) -> Api<DynamicObject> {
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &self.resource),
            None => Api::all_with(client.clone(), &self.resource),
        }
    }
}

/// The render options of the test's install: the default install namespace
/// (the server's identity is `system:serviceaccount:stash-system:stash-webhook`,
/// which the policies match), the test's image, its CA, and stash limited to
/// the test's namespace.
pub fn options(test_ns: &str, image: &str, ca: CaBundle) -> Options {
    Options {
        image: image.to_string(),
        ca,
        namespaces: vec![test_ns.to_string()],
        ..Options::default()
    }
}

/// The rendered install minus what the local process replaces (the server's
/// Deployment and Service), webhooks calling `base` (`https://host:port`).
pub fn objects(options: &Options, base: &str) -> anyhow::Result<Vec<Object>> {
    let mut objects = stash::manifests::objects(options)?;
    objects.retain(|o| !matches!(o, Object::Deployment(_) | Object::Service(_)));
    for object in &mut objects {
        match object {
            Object::MutatingWebhookConfiguration(m) => {
                for hook in m.webhooks.iter_mut().flatten() {
                    redirect(&mut hook.client_config, base, &hook.name)?;
                }
            }
            Object::ValidatingWebhookConfiguration(v) => {
                for hook in v.webhooks.iter_mut().flatten() {
                    redirect(&mut hook.client_config, base, &hook.name)?;
                }
            }
            _ => {}
        }
    }
    Ok(objects)
}

/// `clientConfig.service` → `clientConfig.url` at `base`, same path; the
/// rendered caBundle stays (and must be there).
pub fn redirect(config: &mut WebhookClientConfig, base: &str, hook: &str) -> anyhow::Result<()> {
    let service = config
        .service
        .take()
        .ok_or_else(|| anyhow::anyhow!("webhook {hook} does not call a Service in the install"))?;
    let path = service
        .path
        .ok_or_else(|| anyhow::anyhow!("webhook {hook} has no path"))?;
    anyhow::ensure!(
        config.ca_bundle.is_some(),
        "webhook {hook} has no caBundle (was the CA file rendered in?)"
    );
    config.url = Some(format!("{base}{path}"));
    Ok(())
}

/// Whether `object` is an admission webhook configuration (applied only
/// once the server answers, so that no request waits on a server that is
/// not there yet).
pub fn is_webhook_configuration(object: &Object) -> bool {
    matches!(
        object,
        Object::MutatingWebhookConfiguration(_) | Object::ValidatingWebhookConfiguration(_)
    )
}

/// The object as the API expects it, and how to reach its collection.
pub fn dynamic(object: &Object) -> anyhow::Result<(DynamicObject, Created)> {
    let dynamic: DynamicObject = serde_json::from_value(serde_json::to_value(object)?)?;
    let name = dynamic
        .metadata
        .name
        .clone()
        .ok_or_else(|| anyhow::anyhow!("{} has no name", object.id()))?;
    let created = Created {
        resource: api_resource(object),
        namespace: dynamic.metadata.namespace.clone(),
        name,
    };
    Ok((dynamic, created))
}

/// The API resource (group, version, plural) of an install object, from
/// its type: no guessed plurals.
fn api_resource(object: &Object) -> ApiResource {
    fn of<K: Resource<DynamicType = ()>>() -> ApiResource {
        ApiResource::erase::<K>(&())
    }
    match object {
        Object::Namespace(_) => of::<Namespace>(),
        Object::ServiceAccount(_) => of::<ServiceAccount>(),
        Object::ClusterRole(_) => of::<ClusterRole>(),
        Object::ClusterRoleBinding(_) => of::<ClusterRoleBinding>(),
        Object::Role(_) => of::<Role>(),
        Object::RoleBinding(_) => of::<RoleBinding>(),
        Object::Deployment(_) => of::<Deployment>(),
        Object::PodDisruptionBudget(_) => of::<PodDisruptionBudget>(),
        Object::Service(_) => of::<Service>(),
        Object::MutatingWebhookConfiguration(_) => of::<MutatingWebhookConfiguration>(),
        Object::ValidatingWebhookConfiguration(_) => of::<ValidatingWebhookConfiguration>(),
        Object::ValidatingAdmissionPolicy(_) => of::<ValidatingAdmissionPolicy>(),
        Object::ValidatingAdmissionPolicyBinding(_) => of::<ValidatingAdmissionPolicyBinding>(),
        Object::ConfigMap(_) => of::<k8s_openapi::api::core::v1::ConfigMap>(),
        // Only `--monitoring` renders these; the e2e install does not.
        Object::Custom(v) => {
            let kind = v["kind"].as_str().unwrap_or_default();
            ApiResource {
                group: "monitoring.coreos.com".into(),
                version: "v1".into(),
                api_version: "monitoring.coreos.com/v1".into(),
                kind: kind.into(),
                plural: format!("{}s", kind.to_lowercase()),
            }
        }
    }
}

/// Creates `object` (never overwrites: an existing one is another stash
/// install or a leftover, and the test must not take it over nor delete it).
pub async fn create(client: &kube::Client, object: &Object) -> anyhow::Result<Created> {
    let (dynamic, created) = dynamic(object)?;
    match created
        .api(client)
        .create(&PostParams::default(), &dynamic)
        .await
    {
        Ok(_) => Ok(created),
        Err(kube::Error::Api(s)) if s.code == 409 => anyhow::bail!(
            "{} already exists: another stash install, or a leftover of an earlier run \
             (delete it: stash manifests | kubectl delete -f -), on what must be a throwaway cluster",
            created.id()
        ),
        Err(e) => Err(anyhow::Error::new(e).context(format!("create {}", created.id()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn ca() -> CaBundle {
        let pem = stash::certs::generate(
            &["192.0.2.10".to_string()],
            stash::certs::Validity::default(),
        )
        .expect("certificates")
        .ca_pem
        .into_bytes();
        CaBundle::Pem {
            path: "ca.crt".into(),
            pem,
            certificates: 1,
        }
    }

    #[test]
    fn only_the_server_and_its_service_are_left_out_and_only_client_config_changes() {
        let options = options("stash-e2e-1", "img.invalid/stash:x", ca());
        let rendered = stash::manifests::objects(&options).unwrap();
        let applied = objects(&options, "https://192.0.2.10:9443").unwrap();
        let kinds =
            |objects: &[Object]| -> Vec<String> { objects.iter().map(Object::id).collect() };
        let mut want = kinds(&rendered);
        want.retain(|id| id != "Deployment/stash-webhook" && id != "Service/stash-webhook");
        assert_eq!(kinds(&applied), want);
        for kind in [
            "Namespace/stash-system",
            "ServiceAccount/stash-webhook",
            "ClusterRole/stash-webhook",
            "ClusterRole/stash-webhook-writer",
            "ClusterRole/stash-cron-job",
            "ClusterRole/stash-sidecar",
            "ClusterRoleBinding/stash-webhook",
            "RoleBinding/stash-webhook-writer",
            "Role/stash-webhook",
            "RoleBinding/stash-webhook",
            "MutatingWebhookConfiguration/stash-webhook",
            "ValidatingWebhookConfiguration/stash-webhook",
            "ValidatingAdmissionPolicy/stash-webhook-workloads",
            "ValidatingAdmissionPolicy/stash-webhook-owned",
            "ValidatingAdmissionPolicyBinding/stash-webhook-workloads",
            "ValidatingAdmissionPolicyBinding/stash-webhook-owned",
        ] {
            assert!(want.iter().any(|id| id == kind), "{kind} in {want:?}");
        }
        // Everything but the webhooks' clientConfig is as rendered.
        let mut rendered: Vec<Value> = rendered
            .iter()
            .filter(|o| !matches!(o, Object::Deployment(_) | Object::Service(_)))
            .map(|o| serde_json::to_value(o).unwrap())
            .collect();
        let mut applied: Vec<Value> = applied
            .iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect();
        let mut urls = Vec::new();
        for (r, a) in rendered.iter_mut().zip(applied.iter_mut()) {
            for (rh, ah) in r["webhooks"]
                .as_array_mut()
                .into_iter()
                .flatten()
                .zip(a["webhooks"].as_array_mut().into_iter().flatten())
            {
                let path = rh["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap()
                    .to_string();
                assert_eq!(
                    ah["clientConfig"]["url"],
                    format!("https://192.0.2.10:9443{path}")
                );
                assert!(ah["clientConfig"].get("service").is_none(), "{ah}");
                assert_eq!(
                    ah["clientConfig"]["caBundle"],
                    rh["clientConfig"]["caBundle"]
                );
                urls.push(path);
                rh["clientConfig"] = Value::Null;
                ah["clientConfig"] = Value::Null;
            }
        }
        assert_eq!(urls.len(), 6, "one webhook per endpoint: {urls:?}");
        assert_eq!(applied, rendered);
    }

    #[test]
    fn a_webhook_without_ca_bundle_is_refused() {
        let options = options("stash-e2e-1", "img", CaBundle::Missing("nope".into()));
        let err = objects(&options, "https://h:1").expect_err("no caBundle");
        assert!(err.to_string().contains("no caBundle"), "{err:#}");
    }

    #[test]
    fn each_object_is_addressed_by_its_resource_and_scope() {
        let options = options("stash-e2e-1", "img", ca());
        let applied = objects(&options, "https://h:1").unwrap();
        let ids: Vec<(String, String, Option<String>)> = applied
            .iter()
            .map(|o| {
                let (_, c) = dynamic(o).unwrap();
                (
                    format!("{}/{}", c.resource.api_version, c.resource.plural),
                    c.name,
                    c.namespace,
                )
            })
            .collect();
        let has = |resource: &str, name: &str, ns: Option<&str>| {
            assert!(
                ids.contains(&(
                    resource.to_string(),
                    name.to_string(),
                    ns.map(str::to_string)
                )),
                "{resource} {name} {ns:?} in {ids:?}"
            );
        };
        has("v1/namespaces", "stash-system", None);
        has("v1/serviceaccounts", "stash-webhook", Some("stash-system"));
        has(
            "rbac.authorization.k8s.io/v1/clusterroles",
            "stash-sidecar",
            None,
        );
        has(
            "rbac.authorization.k8s.io/v1/rolebindings",
            "stash-webhook-writer",
            Some("stash-e2e-1"),
        );
        has(
            "rbac.authorization.k8s.io/v1/roles",
            "stash-webhook",
            Some("stash-system"),
        );
        has(
            "policy/v1/poddisruptionbudgets",
            "stash-webhook",
            Some("stash-system"),
        );
        has(
            "admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
            "stash-webhook-owned",
            None,
        );
        has(
            "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            "stash-webhook",
            None,
        );
    }
}
