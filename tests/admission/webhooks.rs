//! The five admission decisions over realistic AdmissionReview fixtures
//! (`tests/fixtures/reviews/`), judged against the stores in
//! `tests/fixtures/store/`, through `admission::handle` and the wire format.

use stash_testkit::reviews as admission_support;

use admission_support::*;
use serde_json::{Value, json};
use stash::admission::Endpoint;
use stash::api::{ANNOTATION_CONFIG_HASH, ANNOTATION_LAST_APPLIED};
use stash::settings::PausedSessionPolicy;

const HASH_PTR: &str =
    "/spec/template/metadata/annotations/stash.appscode.com~1last-applied-backupconfiguration-hash";
const LAST_APPLIED_PTR: &str =
    "/metadata/annotations/stash.appscode.com~1last-applied-backupconfiguration";

fn workloads(fixture: &str) -> Response {
    ask(
        Endpoint::MutateWorkloads,
        &format!("workloads/{fixture}"),
        "default",
    )
}

/// Injects, then checks that a second pass over the stored object is empty.
fn inject_and_recheck(fixture: &str) -> Value {
    let r = review(&format!("workloads/{fixture}"));
    let resp = workloads(fixture);
    assert!(resp.allowed);
    assert!(resp.warnings.is_empty(), "{:?}", resp.warnings);
    assert!(!resp.patch.is_empty(), "{fixture}: expected an injection");
    for op in &resp.patch {
        let path = op_path(op);
        assert!(
            path != "/spec/template/spec/containers"
                || r.pointer("/request/object/spec/template/spec/containers")
                    .is_none(),
            "{fixture}: containers replaced wholesale"
        );
        assert!(
            path != "/spec/template/spec/volumes"
                || r.pointer("/request/object/spec/template/spec/volumes")
                    .is_none(),
            "{fixture}: volumes replaced wholesale"
        );
    }
    let obj = patched(&r, &resp);
    let again = ask_value(
        Endpoint::MutateWorkloads,
        &as_update(&r, &obj),
        &store("default"),
        &settings(PausedSessionPolicy::Skip),
    );
    again.assert_untouched();
    obj
}

fn op_path(op: &json_patch::PatchOperation) -> String {
    serde_json::to_value(op).unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `obj` without anything stash adds: what the user wrote must come back.
fn without_stash(obj: &Value) -> Value {
    let mut o = obj.clone();
    let pod = &mut o["spec"]["template"]["spec"];
    pod["containers"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["name"] != "stash");
    if let Some(vs) = pod.get_mut("volumes").and_then(Value::as_array_mut) {
        vs.retain(|v| {
            !matches!(
                v["name"].as_str(),
                Some("stash-podinfo" | "stash-secret-volume" | "tmp-dir" | "stash-local-backend")
            )
        });
        if vs.is_empty() {
            pod.as_object_mut().unwrap().remove("volumes");
        }
    }
    for ptr in ["/spec/template/metadata", "/metadata"] {
        let meta = o.pointer_mut(ptr).and_then(Value::as_object_mut).unwrap();
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove(ANNOTATION_CONFIG_HASH);
            a.remove(ANNOTATION_LAST_APPLIED);
            if a.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    o
}

#[test]
fn guide_deployment_gets_the_sidecar_design_md_specifies() {
    let obj = inject_and_recheck("deployment-create");
    let c = container(&obj, "stash").expect("stash container");
    assert_eq!(c["image"], stash::settings::DEFAULT_IMAGE);
    assert_eq!(
        args(c),
        [
            "run-backup",
            "--invoker-kind=BackupConfiguration",
            "--invoker-name=pause-backup",
            "--target-kind=Deployment",
            "--target-name=stash-demo",
            "--secret-dir=/etc/stash/repository/secret",
            "--enable-cache=true",
        ]
    );
    let env: Vec<(&str, &str)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        env,
        [
            ("NODE_NAME", "spec.nodeName"),
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace")
        ]
    );
    assert_eq!(
        c["volumeMounts"],
        json!([
            {"name": "stash-podinfo", "mountPath": "/etc/stash"},
            {"name": "stash-secret-volume", "mountPath": "/etc/stash/repository/secret", "readOnly": true},
            {"name": "tmp-dir", "mountPath": "/tmp"},
            {"name": "source-data", "mountPath": "/source/data"},
        ])
    );
    assert_eq!(
        volume(&obj, "stash-secret-volume").unwrap()["secret"]["secretName"],
        "gcs-secret"
    );
    assert_eq!(volume(&obj, "tmp-dir").unwrap()["emptyDir"], json!({}));
    assert_eq!(
        volume(&obj, "stash-podinfo").unwrap()["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.labels"
    );
    assert_eq!(obj.pointer(LAST_APPLIED_PTR).unwrap(), "pause-backup");
    assert!(
        obj.pointer(HASH_PTR)
            .and_then(Value::as_str)
            .is_some_and(|h| !h.is_empty())
    );
    let original = review("workloads/deployment-create")["request"]["object"].clone();
    assert_eq!(
        without_stash(&obj),
        original,
        "the user's Deployment is otherwise untouched"
    );
}

#[test]
fn several_containers_and_volumes_of_the_user_are_not_disturbed() {
    let r = review("workloads/deployment-several-containers-create");
    let obj = inject_and_recheck("deployment-several-containers-create");
    assert_eq!(without_stash(&obj), r["request"]["object"]);
    // Appended, never inserted: the user's containers keep their indices.
    let names: Vec<&str> = obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nginx", "exporter", "log-shipper", "stash"]);
    let resp = workloads("deployment-several-containers-create");
    for op in &resp.patch {
        assert!(
            matches!(op, json_patch::PatchOperation::Add(_)),
            "only adds on a fresh workload: {op:?}"
        );
    }
    // runtimeSettings and tempDir shape the sidecar.
    let c = container(&obj, "stash").unwrap();
    assert!(args(c).contains(&"--enable-cache=false"));
    assert_eq!(c["resources"]["requests"]["cpu"], "100m");
    assert_eq!(c["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(c["securityContext"]["runAsUser"], 2000);
    assert!(
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "GOGC" && e["value"] == "50")
    );
    assert_eq!(
        volume(&obj, "tmp-dir").unwrap()["emptyDir"],
        json!({"medium": "Memory", "sizeLimit": "256Mi"})
    );
    let site = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "site-data")
        .unwrap();
    assert_eq!(
        site,
        &json!({"name": "site-data", "mountPath": "/source/site", "readOnly": true})
    );
    // The user's annotations stay beside ours.
    assert_eq!(
        obj["metadata"]["annotations"]["team.example.com/owner"],
        "web-platform"
    );
    assert_eq!(
        obj["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
}

#[test]
fn statefulset_daemonset_replicaset_get_the_sidecar_of_their_kind() {
    for (fixture, kind, name, mount) in [
        ("statefulset-create", "StatefulSet", "db", "pgdata"),
        ("daemonset-create", "DaemonSet", "node-agent", "host-logs"),
        ("replicaset-create", "ReplicaSet", "cache", "cache-data"),
    ] {
        let obj = inject_and_recheck(fixture);
        let c = container(&obj, "stash").unwrap();
        let a = args(c);
        assert!(
            a.contains(&format!("--target-kind={kind}").as_str()),
            "{fixture}: {a:?}"
        );
        assert!(
            a.contains(&format!("--target-name={name}").as_str()),
            "{fixture}: {a:?}"
        );
        assert!(
            c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == mount),
            "{fixture}"
        );
        let original = review(&format!("workloads/{fixture}"))["request"]["object"].clone();
        assert_eq!(without_stash(&obj), original, "{fixture}");
    }
}

#[test]
fn a_local_backend_is_mounted_into_the_sidecar() {
    let obj = inject_and_recheck("statefulset-create");
    let c = container(&obj, "stash").unwrap();
    assert!(
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "stash-local-backend", "mountPath": "/safe/data"}))
    );
    assert_eq!(
        volume(&obj, "stash-local-backend").unwrap()["hostPath"]["path"],
        "/data/stash-backups"
    );
    // A StatefulSet mounts its volumeClaimTemplates by name.
    assert!(
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "pgdata")
    );
}

#[test]
fn an_already_injected_workload_as_stored_by_the_api_server_yields_no_patch() {
    // The stored object carries API-server defaults (terminationMessagePath,
    // defaultMode, ...) on the sidecar; they must not count as drift.
    workloads("deployment-already-injected-update").assert_untouched();
}

#[test]
fn changing_only_paused_does_not_touch_the_pod_template() {
    let resp = ask(
        Endpoint::MutateWorkloads,
        "workloads/deployment-injected-config-paused-update",
        "paused",
    );
    resp.assert_untouched();
    assert!(resp.warnings.is_empty());
}

#[test]
fn config_gone_removes_the_sidecar_and_nothing_of_the_users() {
    let r = review("workloads/deployment-config-gone-update");
    let resp = workloads("deployment-config-gone-update");
    assert!(resp.allowed);
    assert!(!resp.patch.is_empty());
    let obj = patched(&r, &resp);
    let mut expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("expected/legacy-app-after-removal.json"))
            .unwrap(),
    )
    .unwrap();
    // The UPDATE itself added a label; everything else is the pre-injection object.
    expected["metadata"]["labels"]["release"] = "stable".into();
    assert_eq!(obj, expected);
}

#[test]
fn a_configuration_being_deleted_counts_as_gone() {
    let r = review("workloads/deployment-config-deleting-update");
    let resp = workloads("deployment-config-deleting-update");
    let obj = patched(&r, &resp);
    assert!(container(&obj, "stash").is_none());
    assert!(volume(&obj, "tmp-dir").is_none() && volume(&obj, "stash-podinfo").is_none());
    assert!(obj.pointer(LAST_APPLIED_PTR).is_none() && obj.pointer(HASH_PTR).is_none());
    assert!(volume(&obj, "data").is_some());
}

#[test]
fn a_missing_repository_is_allowed_without_injection_and_named() {
    let resp = workloads("deployment-missing-repository-create");
    resp.assert_untouched();
    assert_eq!(resp.warnings.len(), 1, "{:?}", resp.warnings);
    assert!(
        resp.warnings[0].contains("Repository demo/missing-repo"),
        "{}",
        resp.warnings[0]
    );
    assert!(resp.warnings[0].contains("orphan-backup"));
}

#[test]
fn two_configurations_inject_neither_and_name_both() {
    let resp = workloads("deployment-two-configurations-create");
    resp.assert_untouched();
    assert_eq!(resp.warnings.len(), 1);
    assert!(
        resp.warnings[0].contains("contested-a, contested-b"),
        "{}",
        resp.warnings[0]
    );
}

#[test]
fn untargeted_delete_and_subresource_requests_pass_untouched() {
    for f in [
        "deployment-untargeted-create",
        "deployment-delete",
        "deployment-scale-subresource",
    ] {
        let resp = workloads(f);
        resp.assert_untouched();
        assert!(resp.warnings.is_empty(), "{f}: {:?}", resp.warnings);
    }
}

#[test]
fn an_unreadable_workload_is_allowed_with_a_warning() {
    let resp = workloads("deployment-unreadable-create");
    resp.assert_untouched();
    assert_eq!(resp.warnings.len(), 1);
    assert!(
        resp.warnings[0].contains("spec.template.spec.containers is not a list"),
        "{}",
        resp.warnings[0]
    );
}

#[test]
fn dry_run_gets_the_same_answer() {
    let wet = workloads("deployment-create");
    let dry = workloads("deployment-create-dry-run");
    assert_eq!(wet.patch, dry.patch);
    assert_eq!(wet.warnings, dry.warnings);
}

// --- BackupSessions -------------------------------------------------------

fn label_patch(resp: &Response) -> Vec<(String, Value)> {
    resp.patch
        .iter()
        .map(|op| {
            let v = serde_json::to_value(op).unwrap();
            assert_eq!(v["op"], "add");
            (v["path"].as_str().unwrap().to_string(), v["value"].clone())
        })
        .collect()
}

#[test]
fn mutate_adds_only_the_missing_invoker_labels() {
    let resp = ask(
        Endpoint::MutateBackupSessions,
        "backupsessions/guide-create",
        "default",
    );
    assert!(resp.allowed);
    let mut ops = label_patch(&resp);
    ops.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        ops,
        [
            (
                "/metadata/labels/stash.appscode.com~1invoker-name".to_string(),
                json!("pause-backup")
            ),
            (
                "/metadata/labels/stash.appscode.com~1invoker-type".to_string(),
                json!("BackupConfiguration")
            ),
        ]
    );
    let r = review("backupsessions/guide-create");
    let obj = patched(&r, &resp);
    let again = ask_value(
        Endpoint::MutateBackupSessions,
        &with_object(&r, &obj),
        &store("default"),
        &settings(PausedSessionPolicy::Skip),
    );
    again.assert_untouched();
}

fn with_object(r: &Value, obj: &Value) -> Value {
    let mut r = r.clone();
    r["request"]["object"] = obj.clone();
    r
}

#[test]
fn mutate_creates_the_labels_map_of_a_hand_made_session() {
    let resp = ask(
        Endpoint::MutateBackupSessions,
        "backupsessions/unlabelled-create",
        "default",
    );
    assert_eq!(
        label_patch(&resp),
        [(
            "/metadata/labels".to_string(),
            json!({
                "stash.appscode.com/backup-configuration": "pause-backup",
                "stash.appscode.com/invoker-type": "BackupConfiguration",
                "stash.appscode.com/invoker-name": "pause-backup",
            })
        )]
    );
}

#[test]
fn paused_invoker_is_skipped_with_a_warning_by_default() {
    let resp = ask_value(
        Endpoint::ValidateBackupSessions,
        &review("backupsessions/guide-create"),
        &store("paused"),
        &settings(PausedSessionPolicy::Skip),
    );
    assert!(resp.allowed);
    assert_eq!(
        resp.warnings,
        ["Backup Configuration demo/pause-backup is paused; this BackupSession will be Skipped"]
    );
}

#[test]
fn paused_invoker_is_denied_under_the_reject_policy() {
    let resp = ask_value(
        Endpoint::ValidateBackupSessions,
        &review("backupsessions/guide-create"),
        &store("paused"),
        &settings(PausedSessionPolicy::Reject),
    );
    assert_eq!(
        resp.denial(),
        "Backup Configuration demo/pause-backup is paused"
    );
}

#[test]
fn an_active_invoker_is_allowed_quietly() {
    let resp = ask(
        Endpoint::ValidateBackupSessions,
        "backupsessions/guide-create",
        "default",
    );
    assert!(resp.allowed && resp.warnings.is_empty(), "{:?}", resp.raw);
}

#[test]
fn backupsession_spec_is_immutable() {
    let resp = ask(
        Endpoint::ValidateBackupSessions,
        "backupsessions/spec-change-update",
        "default",
    );
    assert_eq!(resp.denial(), "BackupSession spec is immutable");
    let resp = ask(
        Endpoint::ValidateBackupSessions,
        "backupsessions/labels-only-update",
        "default",
    );
    assert!(resp.allowed);
}

#[test]
fn unknown_invoker_kind_and_unreadable_sessions_are_denied_in_one_line() {
    let resp = ask(
        Endpoint::ValidateBackupSessions,
        "backupsessions/unknown-invoker-kind-create",
        "default",
    );
    let m = resp.denial();
    assert!(
        m.contains("\"RestoreSession\"")
            && m.contains("set spec.invoker.kind to BackupConfiguration"),
        "{m}"
    );
    for endpoint in [
        Endpoint::MutateBackupSessions,
        Endpoint::ValidateBackupSessions,
    ] {
        let resp = ask(endpoint, "backupsessions/unreadable-create", "default");
        assert!(
            resp.denial()
                .contains("BackupSession unreadable cannot be read"),
            "{:?}",
            resp.message
        );
    }
}

#[test]
fn session_delete_and_status_updates_pass_even_when_paused_and_rejecting() {
    for f in [
        "backupsessions/delete",
        "backupsessions/status-subresource-update",
    ] {
        for endpoint in [
            Endpoint::MutateBackupSessions,
            Endpoint::ValidateBackupSessions,
        ] {
            let resp = ask_value(
                endpoint,
                &review(f),
                &store("paused"),
                &settings(PausedSessionPolicy::Reject),
            );
            resp.assert_untouched();
        }
    }
}

// --- BackupConfigurations and Repositories ----------------------------------

#[test]
fn backupconfiguration_denials_say_what_and_how_in_one_line() {
    for (fixture, what, how) in [
        (
            "bad-schedule",
            "it has 4 fields, expected 5",
            "use 5 fields",
        ),
        (
            "tz-schedule",
            "TZ= or CRON_TZ= prefix is not allowed",
            "remove the prefix",
        ),
        (
            "every-schedule",
            "@every is not a CronJob schedule",
            "use a cron expression",
        ),
        ("seconds-schedule", "it has 6 fields", "use 5 fields"),
        (
            "out-of-range-schedule",
            "hour field \"24\": 24 is above the maximum 23",
            "use 5 fields",
        ),
        ("no-schedule", "has no spec.schedule", "set a cron schedule"),
        (
            "wrong-target-kind",
            "targets \"batch/v1\" \"CronJob\"",
            "set target.ref to apiVersion apps/v1",
        ),
        (
            "wrong-target-apiversion",
            "\"extensions/v1beta1\" \"Deployment\"",
            "set target.ref to apiVersion apps/v1",
        ),
        (
            "no-retention-name",
            "retentionPolicy without a name",
            "set retentionPolicy.name",
        ),
        (
            "prune-without-keep",
            "prune: true but no keep rule",
            "add keepLast",
        ),
        (
            "unreadable",
            "cannot be read: spec.paused: invalid type",
            "fix the manifest",
        ),
    ] {
        let resp = ask(
            Endpoint::ValidateBackupConfigurations,
            &format!("backupconfigurations/{fixture}-create"),
            "default",
        );
        let m = resp.denial();
        assert!(m.contains(what) && m.contains(how), "{fixture}: {m}");
    }
}

#[test]
fn a_second_configuration_for_a_workload_is_denied_naming_both() {
    let resp = ask(
        Endpoint::ValidateBackupConfigurations,
        "backupconfigurations/second-for-workload-create",
        "default",
    );
    let m = resp.denial();
    assert!(m.contains("BackupConfiguration demo/second-backup"), "{m}");
    assert!(m.contains("BackupConfiguration demo/pause-backup"), "{m}");
    assert!(m.contains("Deployment demo/stash-demo"), "{m}");
}

#[test]
fn the_guides_configuration_and_a_paused_update_are_allowed_quietly() {
    for f in [
        "guide-create",
        "paused-only-update",
        "delete",
        "finalizer-removal-update",
    ] {
        let resp = ask(
            Endpoint::ValidateBackupConfigurations,
            &format!("backupconfigurations/{f}"),
            "default",
        );
        assert!(resp.allowed, "{f}: {:?}", resp.message);
        assert!(resp.warnings.is_empty(), "{f}: {:?}", resp.warnings);
    }
}

#[test]
fn a_missing_repository_and_unknown_fields_are_warnings() {
    let resp = ask(
        Endpoint::ValidateBackupConfigurations,
        "backupconfigurations/missing-repository-create",
        "default",
    );
    assert!(resp.allowed);
    assert_eq!(resp.warnings.len(), 1);
    assert!(resp.warnings[0].contains("Repository demo/not-yet-created does not exist"));
    let resp = ask(
        Endpoint::ValidateBackupConfigurations,
        "backupconfigurations/misspelt-field-create",
        "default",
    );
    assert!(resp.allowed);
    assert!(
        resp.warnings
            .iter()
            .any(|w| w.contains("spec.retentionPolicy.keepLst")),
        "{:?}",
        resp.warnings
    );
}

#[test]
fn repository_rules() {
    for (fixture, what) in [
        ("no-backend", "has no backend"),
        ("two-backends", "has 2 backends (s3, gcs)"),
        ("wipeout-local", "the local backend does not support"),
        ("wipeout-b2", "the b2 backend does not support"),
        ("no-secret", "has no spec.backend.storageSecretName"),
        (
            "local-without-volume",
            "0 volume sources for its local backend",
        ),
        (
            "local-relative-mount",
            "no absolute spec.backend.local.mountPath",
        ),
        ("s3-without-bucket", "has no spec.backend.s3.bucket"),
        (
            "unreadable",
            "Repository unreadable cannot be read: spec.backend.gcs: invalid type",
        ),
    ] {
        let resp = ask(
            Endpoint::ValidateRepositories,
            &format!("repositories/{fixture}-create"),
            "default",
        );
        let m = resp.denial();
        assert!(m.contains(what) && m.contains(": "), "{fixture}: {m}");
    }
    for f in [
        "guide-create",
        "local-without-secret-create",
        "wipeout-s3-create",
        "delete",
    ] {
        let resp = ask(
            Endpoint::ValidateRepositories,
            &format!("repositories/{f}"),
            "default",
        );
        assert!(
            resp.allowed && resp.warnings.is_empty(),
            "{f}: {:?}",
            resp.raw
        );
    }
}

#[test]
fn every_fixture_gets_a_well_formed_answer_from_every_endpoint() {
    let snap = store("default");
    let dir = fixtures().join("reviews");
    let mut seen = 0;
    for group in std::fs::read_dir(&dir).unwrap() {
        for file in std::fs::read_dir(group.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let r: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for endpoint in Endpoint::ALL {
                for policy in [PausedSessionPolicy::Skip, PausedSessionPolicy::Reject] {
                    // ask_value checks uid, apiVersion, kind and the patch encoding.
                    let resp = ask_value(endpoint, &r, &snap, &settings(policy));
                    if !endpoint.is_mutating() {
                        assert!(
                            resp.patch.is_empty(),
                            "{}: validator patched",
                            path.display()
                        );
                    }
                }
            }
            seen += 1;
        }
    }
    assert!(seen >= 50, "only {seen} fixtures");
}
