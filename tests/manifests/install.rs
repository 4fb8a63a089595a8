//! `stash manifests`: what a cluster operator relies on when applying the
//! install — install.yaml is the command's output, the webhooks call the
//! right Service paths with the right failure policies, the server pod is
//! hardened and shuts down cleanly, and RBAC grants exactly what it must.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, ValidatingWebhook};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use stash::admission::Endpoint;
use stash::manifests::{CaBundle, Object, Options, names, objects, render};

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs the built binary in `dir` with `args`; returns (success, stdout, stderr).
fn stash_in(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stash"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run stash");
    (
        out.status.success(),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

fn default_objects() -> Vec<Object> {
    objects(&Options::default()).expect("defaults render")
}

fn deployment(objs: &[Object]) -> Deployment {
    objs.iter()
        .find_map(|o| match o {
            Object::Deployment(d) => Some(d.clone()),
            _ => None,
        })
        .expect("a Deployment")
}

fn pod(d: &Deployment) -> PodSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec")
}

fn container(d: &Deployment) -> Container {
    let pod = pod(d);
    assert_eq!(pod.containers.len(), 1, "one container");
    pod.containers[0].clone()
}

fn mutating(objs: &[Object]) -> Vec<MutatingWebhook> {
    objs.iter()
        .find_map(|o| match o {
            Object::MutatingWebhookConfiguration(m) => m.webhooks.clone(),
            _ => None,
        })
        .expect("mutating webhooks")
}

fn validating(objs: &[Object]) -> Vec<ValidatingWebhook> {
    objs.iter()
        .find_map(|o| match o {
            Object::ValidatingWebhookConfiguration(v) => v.webhooks.clone(),
            _ => None,
        })
        .expect("validating webhooks")
}

fn matches(selector: &LabelSelector, labels: &std::collections::BTreeMap<String, String>) -> bool {
    assert!(
        selector.match_expressions.is_none(),
        "only matchLabels here"
    );
    let wanted = selector.match_labels.as_ref().expect("matchLabels");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

// ---------------------------------------------------------------- the file

#[test]
fn install_yaml_is_the_output_of_stash_manifests_with_its_defaults() {
    let committed = std::fs::read_to_string(repo_file("manifests/install.yaml"))
        .expect("manifests/install.yaml");
    // An empty directory: the default --ca-bundle-file certs/ca.crt is absent,
    // as in a fresh checkout.
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, stdout, stderr) = stash_in(dir.path(), &["manifests"]);
    assert!(ok, "stash manifests failed: {stderr}");
    assert_eq!(
        stdout, committed,
        "manifests/install.yaml is stale: regenerate it with `(cd $(mktemp -d) && stash manifests) > manifests/install.yaml`"
    );
    assert_eq!(render(&Options::default()).expect("render"), committed);
}

#[test]
fn every_document_reads_back_as_the_object_that_was_rendered() {
    let objs = default_objects();
    let yaml = render(&Options::default()).expect("render");
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("valid YAML document"))
        .collect();
    assert_eq!(docs.len(), objs.len());
    for (doc, obj) in docs.iter().zip(&objs) {
        assert_eq!(
            doc,
            &serde_json::to_value(obj).expect("json"),
            "{}",
            obj.id()
        );
    }
    let ids: Vec<String> = objs.iter().map(Object::id).collect();
    assert_eq!(
        ids,
        [
            "Namespace/stash-system",
            "ServiceAccount/stash-webhook",
            "ClusterRole/stash-webhook",
            "ClusterRole/stash-webhook-writer",
            "ClusterRole/stash-cron-job",
            "ClusterRole/stash-sidecar",
            "ClusterRoleBinding/stash-webhook",
            "ClusterRoleBinding/stash-webhook-writer",
            "Role/stash-webhook",
            "RoleBinding/stash-webhook",
            "Deployment/stash-webhook",
            "PodDisruptionBudget/stash-webhook",
            "Service/stash-webhook",
            "MutatingWebhookConfiguration/stash-webhook",
            "ValidatingWebhookConfiguration/stash-webhook",
            "ValidatingAdmissionPolicy/stash-webhook-workloads",
            "ValidatingAdmissionPolicyBinding/stash-webhook-workloads",
            "ValidatingAdmissionPolicy/stash-webhook-owned",
            "ValidatingAdmissionPolicyBinding/stash-webhook-owned",
        ],
        "the namespace and RBAC come first, the webhooks last (after their Service)"
    );
}

// ---------------------------------------------------------------- webhooks

#[test]
fn there_is_one_webhook_per_endpoint_calling_the_service_on_its_path() {
    let objs = default_objects();
    let mut seen = Vec::new();
    let mut check =
        |name: &str, cc: &k8s_openapi::api::admissionregistration::v1::WebhookClientConfig| {
            let svc = cc.service.as_ref().expect("service reference");
            assert_eq!(svc.name, "stash-webhook", "{name}");
            assert_eq!(svc.namespace, "stash-system", "{name}");
            assert_eq!(svc.port, Some(443), "{name}");
            assert!(cc.url.is_none(), "{name}");
            let endpoint = Endpoint::from_path(svc.path.as_deref().unwrap_or_default())
                .expect("a served path");
            assert!(
                name.ends_with(".stash.appscode.com"),
                "{name} is fully qualified"
            );
            seen.push((endpoint, name.to_string()));
        };
    for w in mutating(&objs) {
        check(&w.name, &w.client_config);
    }
    for w in validating(&objs) {
        check(&w.name, &w.client_config);
    }
    let endpoints: Vec<Endpoint> = seen.iter().map(|(e, _)| *e).collect();
    assert_eq!(endpoints, Endpoint::ALL.to_vec());
    let mut names: Vec<&String> = seen.iter().map(|(_, n)| n).collect();
    names.dedup();
    assert_eq!(names.len(), 6, "webhook names are unique");
    for w in mutating(&objs) {
        let e = Endpoint::from_path(
            w.client_config
                .service
                .and_then(|s| s.path)
                .as_deref()
                .unwrap_or_default(),
        );
        assert!(
            e.is_some_and(Endpoint::is_mutating),
            "{} is a mutating endpoint",
            w.name
        );
    }
}

#[test]
fn workloads_fail_open_and_reinvoke_while_our_kinds_fail_closed() {
    let objs = default_objects();
    let mutating = mutating(&objs);
    let workloads = mutating
        .iter()
        .find(|w| w.name == "workloads.mutate.stash.appscode.com")
        .expect("workloads webhook");
    assert_eq!(workloads.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(workloads.reinvocation_policy.as_deref(), Some("IfNeeded"));
    let rules = workloads.rules.as_ref().expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].api_groups.as_deref(),
        Some(&["apps".to_string()][..])
    );
    assert_eq!(
        rules[0].api_versions.as_deref(),
        Some(&["v1".to_string()][..])
    );
    let mut resources = rules[0].resources.clone().expect("resources");
    resources.sort();
    assert_eq!(
        resources,
        ["daemonsets", "deployments", "replicasets", "statefulsets"]
    );
    assert_eq!(
        rules[0].operations.as_deref(),
        Some(&["CREATE".to_string(), "UPDATE".to_string()][..])
    );

    let sessions = mutating
        .iter()
        .find(|w| w.name == "backupsessions.mutate.stash.appscode.com")
        .expect("backupsessions mutating webhook");
    assert_eq!(sessions.failure_policy.as_deref(), Some("Fail"));
    let rule = &sessions.rules.as_ref().expect("rules")[0];
    assert_eq!(
        rule.operations.as_deref(),
        Some(&["CREATE".to_string()][..])
    );
    assert_eq!(
        rule.resources.as_deref(),
        Some(&["backupsessions".to_string()][..])
    );

    let validating = validating(&objs);
    let kinds: Vec<(String, String)> = validating
        .iter()
        .map(|w| {
            let rule = &w.rules.as_ref().expect("rules")[0];
            assert_eq!(w.failure_policy.as_deref(), Some("Fail"), "{}", w.name);
            assert_eq!(
                rule.operations.as_deref(),
                Some(&["CREATE".to_string(), "UPDATE".to_string()][..]),
                "{}",
                w.name
            );
            assert_eq!(
                rule.api_groups.as_deref(),
                Some(&["stash.appscode.com".to_string()][..])
            );
            (
                rule.resources.as_ref().expect("resources")[0].clone(),
                rule.api_versions.as_ref().expect("versions")[0].clone(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("backupsessions".to_string(), "v1beta1".to_string()),
            ("backupconfigurations".to_string(), "v1beta1".to_string()),
            ("repositories".to_string(), "v1alpha1".to_string()),
            ("restoresessions".to_string(), "v1beta1".to_string()),
        ]
    );
}

#[test]
fn every_webhook_is_side_effect_free_quick_and_skips_system_namespaces() {
    let options = Options {
        namespace: "backup-system".into(),
        ..Options::default()
    };
    let objs = objects(&options).expect("render");
    let common = mutating(&objs)
        .into_iter()
        .map(|w| {
            (
                w.name,
                w.side_effects,
                w.admission_review_versions,
                w.match_policy,
                w.timeout_seconds,
                w.namespace_selector,
            )
        })
        .chain(validating(&objs).into_iter().map(|w| {
            (
                w.name,
                w.side_effects,
                w.admission_review_versions,
                w.match_policy,
                w.timeout_seconds,
                w.namespace_selector,
            )
        }));
    for (name, side_effects, versions, match_policy, timeout, selector) in common {
        assert_eq!(side_effects, "None", "{name}");
        assert_eq!(versions, ["v1"], "{name}");
        assert_eq!(match_policy.as_deref(), Some("Equivalent"), "{name}");
        assert!(
            timeout.is_some_and(|t| (1..=10).contains(&t)),
            "{name}: short timeout"
        );
        let exprs = selector
            .and_then(|s| s.match_expressions)
            .expect("namespaceSelector");
        assert_eq!(exprs.len(), 1, "{name}");
        assert_eq!(exprs[0].key, "kubernetes.io/metadata.name");
        assert_eq!(exprs[0].operator, "NotIn");
        assert_eq!(
            exprs[0].values.as_deref(),
            Some(&["kube-system".to_string(), "backup-system".to_string()][..]),
            "{name}: the install namespace follows --namespace"
        );
    }
}

// ---------------------------------------------------------------- CA bundle

fn ca_pem(common_name: &str) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.self_signed(&key).expect("self-signed").pem()
}

fn ca_bundles(objs: &[Object]) -> Vec<Option<Vec<u8>>> {
    mutating(objs)
        .into_iter()
        .map(|w| w.client_config.ca_bundle.map(|b| b.0))
        .chain(
            validating(objs)
                .into_iter()
                .map(|w| w.client_config.ca_bundle.map(|b| b.0)),
        )
        .collect()
}

#[test]
fn the_ca_bundle_file_goes_into_every_webhook() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Old and new CA together: the bundle of a CA rotation.
    let pem = format!("{}{}", ca_pem("stash old CA"), ca_pem("stash new CA"));
    std::fs::create_dir(dir.path().join("certs")).expect("mkdir");
    std::fs::write(dir.path().join("certs/ca.crt"), &pem).expect("write ca");

    let ca = CaBundle::read(&dir.path().join("certs/ca.crt")).expect("a valid bundle");
    let objs = objects(&Options {
        ca: ca.clone(),
        ..Options::default()
    })
    .expect("render");
    assert_eq!(ca_bundles(&objs), vec![Some(pem.clone().into_bytes()); 6]);

    // The CLI, with its default --ca-bundle-file, run where certs/ca.crt exists.
    let (ok, stdout, stderr) = stash_in(dir.path(), &["manifests"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("# caBundle: 2 CA certificate(s) from certs/ca.crt."),
        "{stdout}"
    );
    assert!(!stdout.contains("NOT SET"));
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&stdout)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("valid YAML document"))
        .collect();
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD.encode(pem.as_bytes());
    let in_yaml: Vec<&str> = docs
        .iter()
        .filter_map(|d| d["webhooks"].as_array())
        .flatten()
        .map(|w| {
            w["clientConfig"]["caBundle"]
                .as_str()
                .expect("caBundle string")
        })
        .collect();
    assert_eq!(
        in_yaml,
        vec![expected.as_str(); 6],
        "base64 of the PEM file"
    );
}

#[test]
fn without_a_ca_file_the_install_says_so_and_has_no_ca_bundle() {
    let objs = default_objects();
    assert_eq!(ca_bundles(&objs), vec![None; 6]);
    let yaml = render(&Options::default()).expect("render");
    let header: Vec<&str> = yaml.lines().take_while(|l| l.starts_with('#')).collect();
    let header = header.join("\n");
    assert!(
        header.contains("caBundle: NOT SET, certs/ca.crt does not exist"),
        "{header}"
    );
    assert!(
        header
            .contains("stash certs --service stash-webhook --namespace stash-system --out certs/"),
        "{header}"
    );
    assert!(!yaml.contains("caBundle:\n") && !yaml.contains("  caBundle: "));
}

#[test]
fn a_ca_file_that_is_not_a_certificate_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key").serialize_pem();
    let path = dir.path().join("ca.crt");
    std::fs::write(&path, key).expect("write");
    let (ok, stdout, stderr) = stash_in(dir.path(), &["manifests", "--ca-bundle-file", "ca.crt"]);
    assert!(!ok);
    assert!(stdout.is_empty(), "nothing half-rendered on stdout");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("--ca-bundle-file ca.crt") && stderr.contains("not a CERTIFICATE"),
        "{stderr}"
    );

    // A directory where the file should be: an I/O error, not "missing".
    std::fs::create_dir(dir.path().join("adir")).expect("mkdir");
    let (ok, _, stderr) = stash_in(dir.path(), &["manifests", "--ca-bundle-file", "adir"]);
    assert!(!ok);
    assert!(stderr.contains("--ca-bundle-file adir"), "{stderr}");
}

// ---------------------------------------------------------------- flags

#[test]
fn flags_reach_every_object_they_concern() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = "registry.example/stash:9.9.9";
    let (ok, stdout, stderr) = stash_in(
        dir.path(),
        &[
            "manifests",
            "--namespace",
            "backup-system",
            "--image",
            image,
            "--replicas",
            "3",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        !stdout.contains("stash-system"),
        "no trace of the default namespace"
    );
    let options = Options {
        namespace: "backup-system".into(),
        image: image.into(),
        replicas: 3,
        ..Options::default()
    };
    assert_eq!(stdout, render(&options).expect("render"));
    let objs = objects(&options).expect("render");
    for o in &objs {
        let v = serde_json::to_value(o).expect("json");
        let cluster_scoped = matches!(
            o,
            Object::Namespace(_)
                | Object::ClusterRole(_)
                | Object::ClusterRoleBinding(_)
                | Object::MutatingWebhookConfiguration(_)
                | Object::ValidatingWebhookConfiguration(_)
                | Object::ValidatingAdmissionPolicy(_)
                | Object::ValidatingAdmissionPolicyBinding(_)
        );
        if let Object::ValidatingAdmissionPolicy(p) = o {
            let spec = p.spec.as_ref().expect("spec");
            let condition = &spec.match_conditions.as_ref().expect("matchConditions")[0];
            assert!(
                condition
                    .expression
                    .contains("'system:serviceaccount:backup-system:stash-webhook'"),
                "the policies follow --namespace"
            );
            let image_checked = spec
                .validations
                .iter()
                .flatten()
                .any(|v| v.expression.contains(&format!("'{image}'")));
            assert!(image_checked, "{}: the policies follow --image", o.id());
        }
        let ns = v["metadata"]["namespace"].as_str();
        if cluster_scoped {
            assert_eq!(ns, None, "{}", o.id());
        } else {
            assert_eq!(ns, Some("backup-system"), "{}", o.id());
        }
    }
    let d = deployment(&objs);
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let c = container(&d);
    assert_eq!(c.image.as_deref(), Some(image));
    let args = c.args.expect("args");
    assert!(
        args.contains(&format!("--image={image}")),
        "the sidecar image follows --image"
    );
    assert!(args.contains(&"--namespace=backup-system".to_string()));
}

#[test]
fn bad_flags_are_refused_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &["manifests", "--namespace", "Backup_System"][..],
        &["manifests", "--image", ""][..],
        &["manifests", "--replicas", "0"][..],
        &["manifests", "--replicas", "many"][..],
    ] {
        let (ok, stdout, stderr) = stash_in(dir.path(), args);
        assert!(!ok, "{args:?} must fail");
        assert!(stdout.is_empty(), "{args:?}");
        assert!(
            stderr.contains("--namespace")
                || stderr.contains("--image")
                || stderr.contains("--replicas"),
            "{args:?}: {stderr}"
        );
    }
}

// ---------------------------------------------------------------- the server pod

#[test]
fn the_server_pod_meets_the_restricted_pod_security_standard() {
    let d = deployment(&default_objects());
    let pod = pod(&d);
    let psc = pod.security_context.clone().expect("pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.map(|s| s.type_).as_deref(),
        Some("RuntimeDefault")
    );
    assert!(pod.host_network.is_none() && pod.host_pid.is_none() && pod.host_ipc.is_none());
    let c = container(&d);
    let sc = c.security_context.expect("container securityContext");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert!(sc.run_as_user.is_some_and(|u| u != 0));
    let caps = sc.capabilities.expect("capabilities");
    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
    assert!(caps.add.is_none());
    let resources = c.resources.expect("resources");
    for key in ["cpu", "memory"] {
        assert!(
            resources
                .requests
                .as_ref()
                .is_some_and(|r| r.contains_key(key)),
            "request {key}"
        );
        assert!(
            resources
                .limits
                .as_ref()
                .is_some_and(|r| r.contains_key(key)),
            "limit {key}"
        );
    }
    // The namespace enforces what the pod meets.
    let ns = default_objects()
        .into_iter()
        .find_map(|o| match o {
            Object::Namespace(n) => Some(n),
            _ => None,
        })
        .expect("namespace");
    let labels = ns.metadata.labels.expect("labels");
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
}

#[test]
fn the_server_runs_serve_with_the_mounted_certificate_and_the_downward_api() {
    let d = deployment(&default_objects());
    let pod = pod(&d);
    let c = container(&d);
    let args = c.args.clone().expect("args");
    assert_eq!(args[0], "serve");
    let flag = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("--{name} in {args:?}"))
            .to_string()
    };
    assert_eq!(flag("listen"), "0.0.0.0:8443");
    assert_eq!(flag("probe-listen"), "0.0.0.0:8080");
    // The certificate files are inside the Secret volume's mount.
    let mount = c.volume_mounts.clone().expect("mounts");
    let tls_mount = mount.iter().find(|m| m.name == "tls").expect("tls mount");
    assert_eq!(tls_mount.read_only, Some(true));
    assert!(
        tls_mount.sub_path.is_none(),
        "no subPath, or a rotated Secret never reaches the pod"
    );
    assert_eq!(
        flag("tls-cert-file"),
        format!("{}/tls.crt", tls_mount.mount_path)
    );
    assert_eq!(
        flag("tls-key-file"),
        format!("{}/tls.key", tls_mount.mount_path)
    );
    let volume = pod
        .volumes
        .clone()
        .expect("volumes")
        .into_iter()
        .find(|v| v.name == "tls")
        .expect("tls volume");
    assert_eq!(
        volume.secret.and_then(|s| s.secret_name).as_deref(),
        Some("stash-webhook-tls")
    );
    // POD_NAME / POD_NAMESPACE from the downward API (Lease identity, events).
    let env = c.env.expect("env");
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name}"));
        let field = var
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(field, Some(path), "{name}");
    }
    assert_eq!(pod.service_account_name.as_deref(), Some("stash-webhook"));
}

#[test]
fn probes_and_the_service_point_at_the_right_ports_and_pods() {
    let objs = default_objects();
    let d = deployment(&objs);
    let c = container(&d);
    let ports = c.ports.clone().expect("ports");
    let port_of = |name: &str| {
        ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
    };
    for (probe, path) in [
        (&c.liveness_probe, "/livez"),
        (&c.readiness_probe, "/readyz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.clone())
            .expect("httpGet probe");
        assert_eq!(get.path.as_deref(), Some(path));
        let port = match &get.port {
            IntOrString::String(name) => port_of(name),
            IntOrString::Int(n) => Some(*n),
        };
        assert_eq!(port, Some(8080), "{path} on the probe port");
    }
    let template_labels = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .expect("labels");
    assert!(matches(
        &d.spec.as_ref().expect("spec").selector,
        &template_labels
    ));
    for o in &objs {
        match o {
            Object::Service(s) => {
                let spec = s.spec.clone().expect("spec");
                let selector = LabelSelector {
                    match_labels: spec.selector.clone(),
                    ..LabelSelector::default()
                };
                assert!(
                    matches(&selector, &template_labels),
                    "the Service selects the server pods"
                );
                let port = &spec.ports.expect("ports")[0];
                assert_eq!(port.port, 443);
                let target = match port.target_port.as_ref().expect("targetPort") {
                    IntOrString::String(name) => port_of(name),
                    IntOrString::Int(n) => Some(*n),
                };
                assert_eq!(target, Some(8443), "443 → 8443");
            }
            Object::PodDisruptionBudget(p) => {
                let spec = p.spec.clone().expect("spec");
                assert!(matches(
                    spec.selector.as_ref().expect("selector"),
                    &template_labels
                ));
                assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
                assert!(
                    spec.min_available.is_none(),
                    "minAvailable would block node drains at 1 replica"
                );
            }
            _ => {}
        }
    }
}

#[test]
fn the_server_is_highly_available_and_outlives_its_drain() {
    let d = deployment(&default_objects());
    let spec = d.spec.clone().expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let rolling = spec
        .strategy
        .and_then(|s| s.rolling_update)
        .expect("rolling update");
    assert_eq!(
        rolling.max_unavailable,
        Some(IntOrString::Int(0)),
        "rollouts never drop a ready replica"
    );
    let pod = pod(&d);
    let anti = pod
        .affinity
        .and_then(|a| a.pod_anti_affinity)
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
        .expect("preferred pod anti-affinity");
    assert_eq!(
        anti[0].pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    let grace = pod.termination_grace_period_seconds.expect("grace period");
    let c = container(&d);
    let pre_stop = c
        .lifecycle
        .and_then(|l| l.pre_stop)
        .and_then(|h| h.exec)
        .and_then(|e| e.command)
        .expect("preStop sleep");
    let sleep: i64 = pre_stop
        .last()
        .and_then(|s| s.parse().ok())
        .expect("seconds");
    let drain: i64 = c
        .args
        .as_ref()
        .expect("args")
        .iter()
        .find_map(|a| a.strip_prefix("--drain-timeout="))
        .and_then(|d| d.strip_suffix('s'))
        .and_then(|d| d.parse().ok())
        .expect("--drain-timeout=<seconds>s");
    assert_eq!(drain, names::DRAIN_SECONDS);
    assert!(
        grace > sleep + drain,
        "grace {grace}s must exceed the preStop sleep {sleep}s plus the drain {drain}s"
    );
    let timeout = mutating(&default_objects())[0]
        .timeout_seconds
        .expect("timeout");
    assert!(
        drain >= i64::from(timeout),
        "the drain lets a call run to its webhook timeout"
    );
}

// ---------------------------------------------------------------- RBAC

/// Whether `rules` allow `verb` on `group/resource` (named `name`), by the
/// RBAC authorizer's rules (no wildcards are used, which another test checks).
fn allows(
    rules: &[PolicyRule],
    group: &str,
    resource: &str,
    verb: &str,
    name: Option<&str>,
) -> bool {
    rules.iter().any(|r| {
        let has = |list: &Option<Vec<String>>, v: &str| {
            list.as_ref().is_some_and(|l| l.iter().any(|x| x == v))
        };
        has(&r.api_groups, group)
            && has(&r.resources, resource)
            && r.verbs.iter().any(|v| v == verb)
            && match &r.resource_names {
                None => true,
                Some(names) => name.is_some_and(|n| names.iter().any(|x| x == n)),
            }
    })
}

fn cluster_role(objs: &[Object], name: &str) -> Vec<PolicyRule> {
    objs.iter()
        .find_map(|o| match o {
            Object::ClusterRole(r) if r.metadata.name.as_deref() == Some(name) => r.rules.clone(),
            _ => None,
        })
        .unwrap_or_else(|| panic!("ClusterRole {name}"))
}

const STASH: &str = "stash.appscode.com";

#[test]
fn no_role_uses_wildcards_or_reads_secrets() {
    let objs = default_objects();
    for o in &objs {
        let rules = match o {
            Object::ClusterRole(r) => r.rules.clone().expect("rules"),
            Object::Role(r) => r.rules.clone().expect("rules"),
            _ => continue,
        };
        for r in &rules {
            let all = [&r.api_groups, &r.resources, &r.resource_names]
                .into_iter()
                .flatten()
                .flatten()
                .chain(&r.verbs);
            for item in all {
                assert_ne!(item, "*", "{}: wildcard in {r:?}", o.id());
            }
            assert!(r.non_resource_urls.is_none(), "{}", o.id());
        }
        // Only the reconciler GETs a Secret (the Repository's, for
        // `BackendSecretFound`); nothing lists or watches them.
        for verb in ["get", "list", "watch"] {
            let may = verb == "get" && o.id() == "ClusterRole/stash-webhook";
            assert_eq!(
                allows(&rules, "", "secrets", verb, None),
                may,
                "{} {verb} secrets",
                o.id()
            );
        }
        for verb in ["escalate", "impersonate"] {
            assert!(
                !rules.iter().any(|r| r.verbs.iter().any(|v| v == verb)),
                "{}: {verb}",
                o.id()
            );
        }
    }
}

#[test]
fn the_server_can_do_its_job_and_nothing_more() {
    let objs = default_objects();
    let mut rules = cluster_role(&objs, "stash-webhook");
    // Its writes to users' objects: a separate role, bound cluster-wide by
    // default (per namespace with --namespaces).
    let writes = cluster_role(&objs, "stash-webhook-writer");
    for (verb, resource) in [
        ("patch", "deployments"),
        ("create", "cronjobs"),
        ("bind", "clusterroles"),
    ] {
        assert!(
            !rules.iter().any(|r| r.verbs.iter().any(|v| v == verb)
                && r.resources.iter().flatten().any(|x| x == resource)),
            "{verb} {resource} is the writer's"
        );
    }
    rules.extend(writes);
    let can = |g: &str, r: &str, v: &str| allows(&rules, g, r, v, None);
    // What the store, the controllers and the back-fill need.
    for kind in ["backupconfigurations", "backupsessions", "repositories"] {
        for verb in ["get", "list", "watch"] {
            assert!(can(STASH, kind, verb), "{verb} {kind}");
        }
    }
    // The controllers merge-patch the statuses they own; the Repository's
    // is the sidecar's, and nothing GETs or PUTs a status.
    for kind in ["backupconfigurations", "backupsessions", "restoresessions"] {
        let status = format!("{kind}/status");
        assert!(can(STASH, &status, "patch"), "{status}");
        assert!(
            !can(STASH, &status, "update") && !can(STASH, &status, "get"),
            "{status}"
        );
    }
    assert!(!can(STASH, "repositories/status", "patch"));
    assert!(can(STASH, "backupconfigurations", "patch"), "finalizer");
    for kind in ["deployments", "statefulsets", "daemonsets", "replicasets"] {
        assert!(
            can("apps", kind, "watch") && can("apps", kind, "patch"),
            "{kind}"
        );
        assert!(
            !can("apps", kind, "delete") && !can("apps", kind, "create"),
            "{kind}: patch only"
        );
    }
    assert!(can("batch", "cronjobs", "create") && can("batch", "cronjobs", "patch"));
    assert!(can("", "serviceaccounts", "create"));
    assert!(can("rbac.authorization.k8s.io", "rolebindings", "create"));
    // `recorder::Recorder` creates core/v1 Events only.
    assert!(can("", "events", "create"));
    assert!(!can("events.k8s.io", "events", "create") && !can("", "events", "patch"));
    // Binds exactly the two roles it hands out, nothing else.
    for role in ["stash-cron-job", "stash-sidecar"] {
        assert!(allows(
            &rules,
            "rbac.authorization.k8s.io",
            "clusterroles",
            "bind",
            Some(role)
        ));
    }
    for role in ["cluster-admin", "admin", "edit", "stash-webhook"] {
        assert!(
            !allows(
                &rules,
                "rbac.authorization.k8s.io",
                "clusterroles",
                "bind",
                Some(role)
            ),
            "{role}"
        );
    }
    // Nothing it does not need.
    assert!(!can("", "pods", "create") && !can("", "pods", "delete"));
    assert!(!can("batch", "jobs", "create"));
    assert!(!can(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "create"
    ));
    assert!(!can("rbac.authorization.k8s.io", "roles", "create"));
    assert!(!can(STASH, "repositories", "delete") && !can(STASH, "backupconfigurations", "delete"));
    assert!(
        !can("coordination.k8s.io", "leases", "create"),
        "the Lease is namespaced: a Role"
    );

    // Its Lease: only in its own namespace.
    let role = objs
        .iter()
        .find_map(|o| match o {
            Object::Role(r) => Some(r.clone()),
            _ => None,
        })
        .expect("Role");
    assert_eq!(role.metadata.namespace.as_deref(), Some("stash-system"));
    let lease_rules = role.rules.expect("rules");
    for verb in ["get", "create", "update", "patch"] {
        assert!(
            allows(&lease_rules, "coordination.k8s.io", "leases", verb, None),
            "lease {verb}"
        );
    }
}

#[test]
fn the_cron_job_role_gets_its_configuration_and_creates_a_session_or_an_event() {
    let rules = cluster_role(&default_objects(), "stash-cron-job");
    let mut granted = Vec::new();
    for r in &rules {
        assert!(r.resource_names.is_none());
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    granted.push((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    granted.sort();
    let expected = [
        ("", "events", "create"),
        ("events.k8s.io", "events", "create"),
        (STASH, "backupconfigurations", "get"),
        (STASH, "backupsessions", "create"),
    ];
    let mut expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    expected.sort();
    assert_eq!(granted, expected);
}

#[test]
fn the_sidecar_role_reads_reports_and_elects_but_never_edits_specs() {
    let rules = cluster_role(&default_objects(), "stash-sidecar");
    let can = |g: &str, r: &str, v: &str| allows(&rules, g, r, v, None);
    for kind in ["backupconfigurations", "backupsessions", "repositories"] {
        for verb in ["get", "list", "watch"] {
            assert!(can(STASH, kind, verb), "{verb} {kind}");
        }
        assert!(
            can(STASH, &format!("{kind}/status"), "patch")
                && can(STASH, &format!("{kind}/status"), "update")
        );
        for verb in ["create", "update", "patch", "delete"] {
            assert!(!can(STASH, kind, verb), "{verb} {kind}");
        }
    }
    for verb in ["get", "create", "update"] {
        assert!(can("coordination.k8s.io", "leases", verb), "lease {verb}");
    }
    assert!(can("", "events", "create") && can("events.k8s.io", "events", "create"));
    // A restic lock's pod: looked up by name, never listed or touched.
    assert!(can("", "pods", "get"));
    for verb in ["list", "watch", "create", "update", "patch", "delete"] {
        assert!(!can("", "pods", verb), "{verb} pods");
    }
    assert!(!can("apps", "deployments", "patch"));
    assert!(!can("", "configmaps", "create"));
}

#[test]
fn the_bindings_name_the_servers_service_account() {
    let options = Options {
        namespace: "backup-system".into(),
        ..Options::default()
    };
    let objs = objects(&options).expect("render");
    let mut bound = 0;
    for o in &objs {
        let (role_ref, subjects) = match o {
            Object::ClusterRoleBinding(b) => (&b.role_ref, &b.subjects),
            Object::RoleBinding(b) => (&b.role_ref, &b.subjects),
            _ => continue,
        };
        bound += 1;
        assert!(
            ["stash-webhook", "stash-webhook-writer"].contains(&role_ref.name.as_str()),
            "{}",
            o.id()
        );
        let subjects = subjects.as_ref().expect("subjects");
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, "stash-webhook");
        assert_eq!(subjects[0].namespace.as_deref(), Some("backup-system"));
    }
    assert_eq!(
        bound, 3,
        "two ClusterRoleBindings and a RoleBinding; the other two roles are bound per namespace by the reconciler"
    );
}

#[test]
fn namespaces_scope_the_webhooks_and_bind_the_writes_there_only() {
    let options = Options {
        namespaces: vec!["team-a".into(), "team-b".into()],
        ..Options::default()
    };
    let objs = objects(&options).expect("render");
    let mut writer_bindings = Vec::new();
    for o in &objs {
        match o {
            Object::ClusterRoleBinding(b) => {
                assert_eq!(b.role_ref.name, "stash-webhook", "no cluster-wide writes")
            }
            Object::RoleBinding(b) if b.role_ref.name == "stash-webhook-writer" => {
                assert_eq!(b.role_ref.kind, "ClusterRole");
                writer_bindings.push(b.metadata.namespace.clone().expect("namespaced"));
            }
            Object::MutatingWebhookConfiguration(c) => {
                for w in c.webhooks.iter().flatten() {
                    let sel = w.namespace_selector.as_ref().expect("selector");
                    let e = &sel.match_expressions.as_ref().expect("expressions")[0];
                    assert_eq!(
                        (e.operator.as_str(), e.values.clone()),
                        ("In", Some(options.namespaces.clone()))
                    );
                }
            }
            Object::ValidatingWebhookConfiguration(c) => {
                for w in c.webhooks.iter().flatten() {
                    let sel = w.namespace_selector.as_ref().expect("selector");
                    let e = &sel.match_expressions.as_ref().expect("expressions")[0];
                    assert_eq!(
                        (e.operator.as_str(), e.values.clone()),
                        ("In", Some(options.namespaces.clone()))
                    );
                }
            }
            _ => {}
        }
    }
    assert_eq!(writer_bindings, ["team-a", "team-b"]);
    let header = render(&options).expect("render");
    assert!(
        header
            .lines()
            .nth(1)
            .expect("line")
            .ends_with(" --namespaces team-a,team-b")
    );
    for bad in [
        vec!["kube-system"],
        vec!["stash-system"],
        vec!["a", "a"],
        vec!["A"],
    ] {
        let options = Options {
            namespaces: bad.iter().map(|s| s.to_string()).collect(),
            ..Options::default()
        };
        let err = render(&options).expect_err("refused").to_string();
        assert!(err.starts_with("--namespaces"), "{err}");
    }
}
