//! The MutatingWebhookConfiguration and ValidatingWebhookConfiguration, one
//! webhook per endpoint of docs/design.md's table, all calling Service
//! `stash-webhook` on port 443.
//!
//! Failure policies follow what each webhook guards:
//! - workloads (`Ignore`): a Deployment must never be refused because stash is
//!   down; the reconciler injects the sidecar into anything admitted without
//!   it. `reinvocationPolicy: IfNeeded` lets the injection see containers that
//!   later webhooks add (it is idempotent, so a second pass changes nothing).
//! - our own kinds (`Fail`): a BackupConfiguration, BackupSession or
//!   Repository that skipped validation could break backups silently, and
//!   failing closed only affects stash's own objects. The BackupSession
//!   mutation fails closed too: its validation already does, and the labels
//!   it adds are how the sidecar finds its sessions.
//!
//! Every webhook skips `kube-system` and the install namespace (so neither the
//! control plane nor stash itself can be blocked by stash), declares no side
//! effects (so `kubectl apply --dry-run=server` and `kubectl diff` work), and
//! matches equivalent versions of its resources.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::names::*;
use super::{Options, metadata, strings};
use crate::admission::Endpoint;
use crate::api::GROUP;

/// What one webhook matches and how it fails.
struct Spec {
    endpoint: Endpoint,
    /// `<resource>.<mutate|validate>.stash.appscode.com`
    name: String,
    api_group: &'static str,
    api_version: &'static str,
    resources: &'static [&'static str],
    operations: &'static [&'static str],
    failure_policy: &'static str,
}

const CREATE: &[&str] = &["CREATE"];
const CREATE_UPDATE: &[&str] = &["CREATE", "UPDATE"];

fn spec(
    endpoint: Endpoint,
    name: &str,
    api_group: &'static str,
    api_version: &'static str,
    resources: &'static [&'static str],
    operations: &'static [&'static str],
    failure_policy: &'static str,
) -> Spec {
    let verb = if endpoint.is_mutating() {
        "mutate"
    } else {
        "validate"
    };
    Spec {
        endpoint,
        name: format!("{name}.{verb}.{GROUP}"),
        api_group,
        api_version,
        resources,
        operations,
        failure_policy,
    }
}

/// One [`Spec`] per endpoint, mutating first.
fn specs() -> Vec<Spec> {
    Endpoint::ALL
        .into_iter()
        .map(|endpoint| match endpoint {
            Endpoint::MutateWorkloads => spec(
                endpoint,
                "workloads",
                "apps",
                "v1",
                &["deployments", "statefulsets", "daemonsets", "replicasets"],
                CREATE_UPDATE,
                "Ignore",
            ),
            Endpoint::MutateBackupSessions => spec(
                endpoint,
                "backupsessions",
                GROUP,
                "v1beta1",
                &["backupsessions"],
                CREATE,
                "Fail",
            ),
            Endpoint::ValidateBackupSessions => spec(
                endpoint,
                "backupsessions",
                GROUP,
                "v1beta1",
                &["backupsessions"],
                CREATE_UPDATE,
                "Fail",
            ),
            Endpoint::ValidateBackupConfigurations => spec(
                endpoint,
                "backupconfigurations",
                GROUP,
                "v1beta1",
                &["backupconfigurations"],
                CREATE_UPDATE,
                "Fail",
            ),
            Endpoint::ValidateRepositories => spec(
                endpoint,
                "repositories",
                GROUP,
                "v1alpha1",
                &["repositories"],
                CREATE_UPDATE,
                "Fail",
            ),
            Endpoint::ValidateRestoreSessions => spec(
                endpoint,
                "restoresessions",
                GROUP,
                "v1beta1",
                &["restoresessions"],
                CREATE_UPDATE,
                "Fail",
            ),
        })
        .collect()
}

fn client_config(options: &Options, endpoint: Endpoint) -> WebhookClientConfig {
    WebhookClientConfig {
        ca_bundle: options.ca.bytes(),
        service: Some(ServiceReference {
            name: SERVICE.to_string(),
            namespace: options.namespace.clone(),
            path: Some(endpoint.path().to_string()),
            port: Some(SERVICE_PORT),
        }),
        url: None,
    }
}

fn rules(spec: &Spec) -> Vec<RuleWithOperations> {
    vec![RuleWithOperations {
        api_groups: Some(strings(&[spec.api_group])),
        api_versions: Some(strings(&[spec.api_version])),
        resources: Some(strings(spec.resources)),
        operations: Some(strings(spec.operations)),
        scope: Some("Namespaced".to_string()),
    }]
}

/// Every namespace but kube-system and the install namespace; with
/// `--namespaces`, only those.
pub fn namespace_selector(options: &Options) -> LabelSelector {
    if !options.namespaces.is_empty() {
        return LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.to_string(),
                operator: "In".to_string(),
                values: Some(options.namespaces.clone()),
            }]),
            ..LabelSelector::default()
        };
    }
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: NAMESPACE_NAME_LABEL.to_string(),
            operator: "NotIn".to_string(),
            values: Some(vec!["kube-system".to_string(), options.namespace.clone()]),
        }]),
        ..LabelSelector::default()
    }
}

/// MutatingWebhookConfiguration `stash-webhook`.
pub fn mutating(options: &Options) -> MutatingWebhookConfiguration {
    let webhooks = specs()
        .into_iter()
        .filter(|s| s.endpoint.is_mutating())
        .map(|s| MutatingWebhook {
            name: s.name.clone(),
            client_config: client_config(options, s.endpoint),
            rules: Some(rules(&s)),
            failure_policy: Some(s.failure_policy.to_string()),
            match_policy: Some("Equivalent".to_string()),
            namespace_selector: Some(namespace_selector(options)),
            side_effects: "None".to_string(),
            admission_review_versions: strings(&["v1"]),
            timeout_seconds: Some(WEBHOOK_TIMEOUT_SECONDS),
            reinvocation_policy: Some(
                if s.endpoint == Endpoint::MutateWorkloads {
                    "IfNeeded"
                } else {
                    "Never"
                }
                .to_string(),
            ),
            ..MutatingWebhook::default()
        })
        .collect();
    MutatingWebhookConfiguration {
        metadata: metadata(SERVICE, None),
        webhooks: Some(webhooks),
    }
}

/// ValidatingWebhookConfiguration `stash-webhook`.
pub fn validating(options: &Options) -> ValidatingWebhookConfiguration {
    let webhooks = specs()
        .into_iter()
        .filter(|s| !s.endpoint.is_mutating())
        .map(|s| ValidatingWebhook {
            name: s.name.clone(),
            client_config: client_config(options, s.endpoint),
            rules: Some(rules(&s)),
            failure_policy: Some(s.failure_policy.to_string()),
            match_policy: Some("Equivalent".to_string()),
            namespace_selector: Some(namespace_selector(options)),
            side_effects: "None".to_string(),
            admission_review_versions: strings(&["v1"]),
            timeout_seconds: Some(WEBHOOK_TIMEOUT_SECONDS),
            ..ValidatingWebhook::default()
        })
        .collect();
    ValidatingWebhookConfiguration {
        metadata: metadata(SERVICE, None),
        webhooks: Some(webhooks),
    }
}
