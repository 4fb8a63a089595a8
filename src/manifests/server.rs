//! The webhook server's own objects: its Namespace, ServiceAccount,
//! Deployment, PodDisruptionBudget and Service.
//!
//! The Deployment is shaped for an admission webhook that other API calls
//! depend on: several replicas spread over nodes, a rollout that never drops
//! below the desired count, a disruption budget, readiness gated on the store
//! and the certificate, and a shutdown that outlives the endpoint removal and
//! the in-flight drain. The pod passes the `restricted` Pod Security Standard,
//! which the namespace enforces.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction,
    HTTPGetAction, Lifecycle, LifecycleHandler, Namespace, ObjectFieldSelector, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::*;
use super::{Options, metadata, selector_labels, server_metadata, strings};

/// The install namespace, enforcing the `restricted` Pod Security Standard
/// (the server's pods meet it; nothing else should run there).
pub fn namespace(options: &Options) -> Namespace {
    let mut meta = metadata(&options.namespace, None);
    if let Some(labels) = meta.labels.as_mut() {
        for mode in ["enforce", "audit", "warn"] {
            labels.insert(
                format!("pod-security.kubernetes.io/{mode}"),
                "restricted".to_string(),
            );
        }
    }
    Namespace {
        metadata: meta,
        ..Namespace::default()
    }
}

/// The server's identity; the ClusterRoleBinding and RoleBinding name it.
pub fn service_account(options: &Options) -> ServiceAccount {
    ServiceAccount {
        metadata: server_metadata(Some(SERVICE), Some(&options.namespace)),
        ..ServiceAccount::default()
    }
}

/// The arguments of `stash serve` in the cluster.
pub fn server_args(options: &Options) -> Vec<String> {
    vec![
        "serve".to_string(),
        format!("--listen=0.0.0.0:{WEBHOOK_PORT}"),
        format!("--probe-listen=0.0.0.0:{PROBE_PORT}"),
        format!("--tls-cert-file={TLS_DIR}/tls.crt"),
        format!("--tls-key-file={TLS_DIR}/tls.key"),
        format!("--namespace={}", options.namespace),
        format!("--image={}", options.image),
        format!("--drain-timeout={DRAIN_SECONDS}s"),
    ]
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(PROBE_PORT_NAME.to_string()),
            scheme: Some("HTTP".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

fn quantities(cpu: &str, memory: &str) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_string(), Quantity(cpu.to_string())),
        ("memory".to_string(), Quantity(memory.to_string())),
    ])
}

/// The `stash serve` container.
fn server_container(options: &Options) -> Container {
    Container {
        name: "stash".to_string(),
        image: Some(options.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        args: Some(server_args(options)),
        env: Some(server_env()),
        ports: Some(server_ports()),
        // Ready only once the store has synced and a certificate is loaded.
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        liveness_probe: Some(http_probe("/livez", 10, 3)),
        lifecycle: Some(pre_stop_sleep()),
        resources: Some(server_resources()),
        security_context: Some(server_security_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: "tls".to_string(),
            mount_path: TLS_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// The pod's name and namespace, and JSON logs.
fn server_env() -> Vec<EnvVar> {
    vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        EnvVar {
            name: "STASH_LOG_FORMAT".to_string(),
            value: Some("json".to_string()),
            ..EnvVar::default()
        },
    ]
}

/// The webhook port and the probe port.
fn server_ports() -> Vec<ContainerPort> {
    vec![
        ContainerPort {
            name: Some(WEBHOOK_PORT_NAME.to_string()),
            container_port: WEBHOOK_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        },
        ContainerPort {
            name: Some(PROBE_PORT_NAME.to_string()),
            container_port: PROBE_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        },
    ]
}

/// Keep answering while the endpoint removal reaches every API server;
/// SIGTERM (and the drain) come after this.
fn pre_stop_sleep() -> Lifecycle {
    Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(strings(&[
                    "/bin/sleep",
                    &PRE_STOP_SLEEP_SECONDS.to_string(),
                ])),
            }),
            ..LifecycleHandler::default()
        }),
        ..Lifecycle::default()
    }
}

/// Memory from `cargo bench --bench scale` (docs/performance.md): the
/// reconciler's RSS is ~16 MiB plus ~6.5 KiB per backed-up workload
/// (78 MiB at 10,000) and ~0.1 KiB per workload nobody backs up; the
/// webhooks add up to `--body-budget` (64 MiB) of request bodies in
/// flight. The request holds 10,000 backed-up workloads at rest; the
/// limit, those and a full body budget with room to spare (about
/// 25,000 backed-up workloads). docs/install.md says how to size them.
fn server_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(quantities("100m", "128Mi")),
        limits: Some(quantities("1", "256Mi")),
        ..ResourceRequirements::default()
    }
}

/// Unprivileged, read-only, every capability dropped.
fn server_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        capabilities: Some(Capabilities {
            drop: Some(strings(&["ALL"])),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_string(),
        ..SeccompProfile::default()
    }
}

fn pod_selector() -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels()),
        ..LabelSelector::default()
    }
}

/// Deployment `stash-webhook`.
pub fn deployment(options: &Options) -> Deployment {
    let pod = PodSpec {
        service_account_name: Some(SERVICE.to_string()),
        // The server and its reconciler talk to the API server.
        automount_service_account_token: Some(true),
        containers: vec![server_container(options)],
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            // Group-owns the Secret volume, so tls.key can be 0440.
            fs_group: Some(RUN_AS_USER),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..PodSecurityContext::default()
        }),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        // Preferred, not required: a one-node cluster still runs every replica.
        affinity: Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: PodAffinityTerm {
                            label_selector: Some(pod_selector()),
                            topology_key: "kubernetes.io/hostname".to_string(),
                            ..PodAffinityTerm::default()
                        },
                    },
                ]),
                ..PodAntiAffinity::default()
            }),
            ..Affinity::default()
        }),
        volumes: Some(vec![Volume {
            name: "tls".to_string(),
            // Mounted whole (no subPath), so a rotated Secret reaches the
            // running server, which reloads it.
            secret: Some(SecretVolumeSource {
                secret_name: Some(TLS_SECRET.to_string()),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    };
    Deployment {
        metadata: server_metadata(Some(SERVICE), Some(&options.namespace)),
        spec: Some(DeploymentSpec {
            replicas: Some(options.replicas),
            selector: pod_selector(),
            // Never fewer ready replicas than desired during a rollout.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(server_metadata(None, None)),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// At most one server pod voluntarily down at a time, whatever the replica
/// count; a pod that is not ready may always be evicted (it serves nothing).
pub fn pod_disruption_budget(options: &Options) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: server_metadata(Some(SERVICE), Some(&options.namespace)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(pod_selector()),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_string()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// Service `stash-webhook`: 443 → the container's `https` port (8443), and
/// `metrics` 8080 → its `probes` port (`/metrics`).
pub fn service(options: &Options) -> Service {
    Service {
        metadata: server_metadata(Some(SERVICE), Some(&options.namespace)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels()),
            ports: Some(vec![
                ServicePort {
                    name: Some(WEBHOOK_PORT_NAME.to_string()),
                    port: SERVICE_PORT,
                    target_port: Some(IntOrString::String(WEBHOOK_PORT_NAME.to_string())),
                    protocol: Some("TCP".to_string()),
                    ..ServicePort::default()
                },
                // Plain HTTP `/metrics` (and the probes), for a ServiceMonitor.
                ServicePort {
                    name: Some(METRICS_PORT_NAME.to_string()),
                    port: PROBE_PORT,
                    target_port: Some(IntOrString::String(PROBE_PORT_NAME.to_string())),
                    protocol: Some("TCP".to_string()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
