//! The install's objects as one typed list, and its serialization to a
//! multi-document YAML stream (`---` between documents) that `kubectl apply -f`
//! reads.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Serialize;

/// One object of the install. Each variant serializes exactly as its
/// `k8s-openapi` type (apiVersion and kind included).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(
    clippy::large_enum_variant,
    reason = "a dozen objects built once per render; boxing would only add noise"
)]
pub enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    Deployment(Deployment),
    PodDisruptionBudget(PodDisruptionBudget),
    Service(Service),
    MutatingWebhookConfiguration(MutatingWebhookConfiguration),
    ValidatingWebhookConfiguration(ValidatingWebhookConfiguration),
    ValidatingAdmissionPolicy(ValidatingAdmissionPolicy),
    ValidatingAdmissionPolicyBinding(ValidatingAdmissionPolicyBinding),
    ConfigMap(ConfigMap),
    /// A kind without Rust types (the Prometheus Operator's): a JSON object
    /// with `apiVersion`, `kind` and `metadata.name`.
    Custom(serde_json::Value),
}

impl Object {
    /// `Kind/name`, as kubectl prints it, for messages and tests.
    pub fn id(&self) -> String {
        let (kind, meta) = match self {
            Object::Namespace(o) => ("Namespace", &o.metadata),
            Object::ServiceAccount(o) => ("ServiceAccount", &o.metadata),
            Object::ClusterRole(o) => ("ClusterRole", &o.metadata),
            Object::ClusterRoleBinding(o) => ("ClusterRoleBinding", &o.metadata),
            Object::Role(o) => ("Role", &o.metadata),
            Object::RoleBinding(o) => ("RoleBinding", &o.metadata),
            Object::Deployment(o) => ("Deployment", &o.metadata),
            Object::PodDisruptionBudget(o) => ("PodDisruptionBudget", &o.metadata),
            Object::Service(o) => ("Service", &o.metadata),
            Object::MutatingWebhookConfiguration(o) => {
                ("MutatingWebhookConfiguration", &o.metadata)
            }
            Object::ValidatingWebhookConfiguration(o) => {
                ("ValidatingWebhookConfiguration", &o.metadata)
            }
            Object::ValidatingAdmissionPolicy(o) => ("ValidatingAdmissionPolicy", &o.metadata),
            Object::ValidatingAdmissionPolicyBinding(o) => {
                ("ValidatingAdmissionPolicyBinding", &o.metadata)
            }
            Object::ConfigMap(o) => ("ConfigMap", &o.metadata),
            Object::Custom(v) => {
                let kind = v["kind"].as_str().unwrap_or_default();
                let name = v["metadata"]["name"].as_str().unwrap_or_default();
                return format!("{kind}/{name}");
            }
        };
        format!("{kind}/{}", meta.name.as_deref().unwrap_or_default())
    }
}

/// Serializes the objects as YAML documents, each preceded by `---`.
pub fn to_yaml(objects: &[Object]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(object)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn every_document_starts_with_a_separator_and_its_type() {
        let ns = |name: &str| {
            Object::Namespace(Namespace {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            })
        };
        let yaml = to_yaml(&[ns("a"), ns("b")]).expect("serializes");
        assert_eq!(
            yaml,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n"
        );
        assert_eq!(ns("a").id(), "Namespace/a");
    }
}
