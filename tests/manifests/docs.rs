//! docs/walkthrough.md quotes what `stash manifests` renders and what
//! `kubectl apply` prints for it; these tests keep those quotes true.

use std::path::Path;

use stash::manifests::{CaBundle, Object, Options, objects, render};

fn walkthrough() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/walkthrough.md"))
        .expect("docs/walkthrough.md")
}

/// The lines of the console block that follows the line `$ {command}`.
fn output_of(doc: &str, command: &str) -> Vec<String> {
    let prompt = format!("$ {command}");
    let mut lines = doc.lines().skip_while(|l| *l != prompt);
    assert!(lines.next().is_some(), "the walkthrough runs `{command}`");
    lines
        .take_while(|l| !l.starts_with("$ ") && !l.starts_with("```"))
        .map(str::to_string)
        .collect()
}

/// How kubectl names an object in `kubectl apply` output.
fn kubectl_name(o: &Object) -> String {
    let resource = match o {
        Object::Namespace(_) => "namespace",
        Object::ServiceAccount(_) => "serviceaccount",
        Object::ClusterRole(_) => "clusterrole.rbac.authorization.k8s.io",
        Object::ClusterRoleBinding(_) => "clusterrolebinding.rbac.authorization.k8s.io",
        Object::Role(_) => "role.rbac.authorization.k8s.io",
        Object::RoleBinding(_) => "rolebinding.rbac.authorization.k8s.io",
        Object::Deployment(_) => "deployment.apps",
        Object::PodDisruptionBudget(_) => "poddisruptionbudget.policy",
        Object::Service(_) => "service",
        Object::MutatingWebhookConfiguration(_) => {
            "mutatingwebhookconfiguration.admissionregistration.k8s.io"
        }
        Object::ValidatingWebhookConfiguration(_) => {
            "validatingwebhookconfiguration.admissionregistration.k8s.io"
        }
        Object::ValidatingAdmissionPolicy(_) => {
            "validatingadmissionpolicy.admissionregistration.k8s.io"
        }
        Object::ValidatingAdmissionPolicyBinding(_) => {
            "validatingadmissionpolicybinding.admissionregistration.k8s.io"
        }
        Object::ConfigMap(_) => "configmap",
        Object::Custom(v) => match v["kind"].as_str() {
            Some("PrometheusRule") => "prometheusrule.monitoring.coreos.com",
            Some("ServiceMonitor") => "servicemonitor.monitoring.coreos.com",
            _ => "unknown",
        },
    };
    let id = o.id();
    let name = id.split_once('/').map(|(_, n)| n).unwrap_or_default();
    format!("{resource}/{name}")
}

#[test]
fn the_apply_output_lists_every_object_in_order() {
    let objs = objects(&Options::default()).expect("render");
    let expected: Vec<String> = objs
        .iter()
        .map(|o| format!("{} created", kubectl_name(o)))
        .collect();
    assert_eq!(
        output_of(&walkthrough(), "kubectl apply -f stash-install.yaml"),
        expected
    );
}

#[test]
fn the_uninstall_output_lists_every_namespaced_and_rbac_object() {
    let objs = objects(&Options::default()).expect("render");
    // The webhook configurations were deleted just before, so
    // --ignore-not-found prints nothing for them.
    let expected: Vec<String> = objs
        .iter()
        .filter(|o| {
            !matches!(
                o,
                Object::MutatingWebhookConfiguration(_) | Object::ValidatingWebhookConfiguration(_)
            )
        })
        .map(|o| {
            let name = kubectl_name(o);
            let (resource, object) = name.split_once('/').expect("resource/name");
            format!("{resource} \"{object}\" deleted")
        })
        .collect();
    assert_eq!(
        output_of(
            &walkthrough(),
            "kubectl delete -f stash-install.yaml --ignore-not-found"
        ),
        expected
    );
}

#[test]
fn the_quoted_header_is_what_stash_manifests_prints_with_a_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).expect("ca").pem();
    let path = dir.path().join("ca.crt");
    std::fs::write(&path, pem).expect("write");
    let ca = match CaBundle::read(&path).expect("bundle") {
        CaBundle::Pem {
            pem, certificates, ..
        } => CaBundle::Pem {
            // As the walkthrough runs it, from the repository root.
            path: "certs/ca.crt".into(),
            pem,
            certificates,
        },
        CaBundle::Missing(p) => panic!("{} just written", p.display()),
    };
    let rendered = render(&Options {
        ca,
        ..Options::default()
    })
    .expect("render");
    let head: Vec<String> = rendered.lines().take(6).map(str::to_string).collect();
    assert_eq!(
        output_of(&walkthrough(), "head -6 stash-install.yaml"),
        head
    );
}
