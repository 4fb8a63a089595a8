//! `stash manifests --monitoring` and `--prometheus-rules`: the rules file
//! in the repository is the command's output, promtool accepts it and its
//! unit tests pass, and the ServiceMonitor scrapes a port the webhook
//! Service has, onto the container's probe port where `/metrics` is.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use stash::manifests::{Object, Options, monitoring, names, objects};
use stash::monitoring::rules::{ALERTS, RuleOptions, rules_file};

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// promtool, or a failure saying how to get it (scripts/test installs it).
pub fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "promtool is not on PATH: this test checks the alerting rules with it. Install it \
             with `apt-get install -y prometheus` (scripts/test does) and run the test again"
        )
    })
}

fn stash(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_stash"))
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("run stash");
    assert!(
        out.status.success(),
        "stash {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn the_rules_file_is_the_output_of_stash_manifests_prometheus_rules() {
    let committed = std::fs::read_to_string(repo_file("manifests/monitoring/stash-rules.yaml"))
        .expect("manifests/monitoring/stash-rules.yaml");
    assert_eq!(
        stash(&["manifests", "--prometheus-rules"]),
        committed,
        "manifests/monitoring/stash-rules.yaml is stale: regenerate it with \
         `stash manifests --prometheus-rules > manifests/monitoring/stash-rules.yaml`"
    );
    assert_eq!(
        rules_file(&RuleOptions::default()).expect("render"),
        committed
    );
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let promtool = promtool();
    for args in [
        ["check", "rules", "manifests/monitoring/stash-rules.yaml"],
        [
            "test",
            "rules",
            "manifests/monitoring/stash-rules.test.yaml",
        ],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run promtool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
        assert!(text.contains("SUCCESS"), "{text}");
    }
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .collect()
}

#[test]
fn monitoring_appends_a_rule_a_service_monitor_and_a_dashboard() {
    let plain = documents(&stash(&["manifests"]));
    let with = documents(&stash(&[
        "manifests",
        "--monitoring",
        "--paused-alert-after",
        "36h",
    ]));
    assert_eq!(
        with[..plain.len()],
        plain[..],
        "the install itself is unchanged"
    );
    let extra = &with[plain.len()..];
    let kinds: Vec<&str> = extra.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["PrometheusRule", "ServiceMonitor", "ConfigMap"]);
    for d in extra {
        assert_eq!(d["metadata"]["namespace"], names::DEFAULT_NAMESPACE);
    }

    let rule = &extra[0];
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let alerts: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(alerts, ALERTS);
    assert!(
        rules[2]["expr"].as_str().unwrap().ends_with("> 129600"),
        "--paused-alert-after 36h: {}",
        rules[2]["expr"]
    );

    let dashboard = &extra[2];
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = dashboard["data"][monitoring::DASHBOARD_KEY]
        .as_str()
        .unwrap();
    let model: Value = serde_json::from_str(json).expect("the dashboard is JSON");
    assert_eq!(model["uid"], "stash-backups");
}

#[test]
fn the_service_monitor_scrapes_the_services_metrics_port() {
    let options = Options::default();
    let monitor = monitoring::service_monitor(&options);
    let service: Service = objects(&options)
        .expect("render")
        .into_iter()
        .find_map(|o| match o {
            Object::Service(s) => Some(s),
            _ => None,
        })
        .expect("the webhook Service");
    // The selector matches the Service's labels.
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    let labels = service.metadata.labels.clone().unwrap_or_default();
    for (k, v) in selector {
        assert_eq!(labels.get(k).map(String::as_str), v.as_str(), "label {k}");
    }
    // Its endpoint names a Service port that leads to the probe port.
    let port_name = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let port = service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .find(|p| p.name.as_deref() == Some(port_name))
        .unwrap_or_else(|| panic!("the Service has no port {port_name:?}"));
    assert_eq!(port.port, names::PROBE_PORT);
    assert_eq!(
        port.target_port,
        Some(IntOrString::String(names::PROBE_PORT_NAME.into()))
    );
}
