//! `stash review`, run as the binary a user runs.

mod admission_support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use admission_support::*;
use base64::Engine;
use serde_json::Value;
use stash::admission::{self, Endpoint, PausedSessionPolicy};

fn stash(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stash"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

#[test]
fn apply_patch_prints_the_guides_deployment_carrying_the_sidecar() {
    let out = stash(
        &[
            "review",
            "--offline",
            "manifests/examples",
            "--manifest",
            "manifests/examples/deployment.yaml",
            "--apply-patch",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let golden =
        std::fs::read_to_string(fixtures().join("expected/review-deployment-apply-patch.yaml"))
            .unwrap();
    assert_eq!(stdout, golden);
    // The PVC is no webhook's business: only the Deployment is printed.
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 1);
    let c = container(&docs[0], "stash").expect("sidecar");
    assert_eq!(args(c)[0], "run-backup");
    assert!(container(&docs[0], "busybox").is_some());
}

#[test]
fn path_answers_byte_for_byte_what_serve_answers() {
    let body = std::fs::read(fixtures().join("reviews/backupsessions/guide-create.json")).unwrap();
    let snap = store("paused");
    let expected = admission::handle(
        Endpoint::ValidateBackupSessions,
        &body,
        &snap,
        &settings(PausedSessionPolicy::Skip),
    )
    .unwrap()
    .body;
    let out = stash(
        &[
            "review",
            "--offline",
            "tests/fixtures/store/paused",
            "--path",
            "/validate/backupsessions",
            "tests/fixtures/reviews/backupsessions/guide-create.json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, [expected, b"\n".to_vec()].concat());
}

#[test]
fn default_chains_mutate_then_validate_as_the_api_server_sees_it() {
    let body =
        std::fs::read(fixtures().join("reviews/backupsessions/unlabelled-create.json")).unwrap();
    let out = stash(
        &["review", "--offline", "tests/fixtures/store/paused", "-"],
        Some(&body),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let resp = &v["response"];
    assert_eq!(resp["allowed"], true);
    // The mutating webhook's patch...
    let patch = base64::engine::general_purpose::STANDARD
        .decode(resp["patch"].as_str().unwrap())
        .unwrap();
    let patch: Value = serde_json::from_slice(&patch).unwrap();
    assert_eq!(patch[0]["path"], "/metadata/labels");
    // ...and the validating webhook's warning, in one response.
    assert_eq!(
        resp["warnings"],
        serde_json::json!([
            "Backup Configuration demo/pause-backup is paused; this BackupSession will be Skipped"
        ])
    );
}

#[test]
fn the_guides_session_against_a_paused_configuration_under_both_policies() {
    let args = |policy: &'static str| {
        [
            "review",
            "--offline",
            "tests/fixtures/store/paused",
            "--paused-session-policy",
            policy,
            "--manifest",
            "manifests/examples/backupsession.yaml",
        ]
    };
    let skip = stash(&args("skip"), None);
    assert!(skip.status.success());
    let v: Value = serde_json::from_slice(&skip.stdout).unwrap();
    assert_eq!(v["response"]["allowed"], true);
    assert_eq!(
        v["response"]["warnings"][0],
        "Backup Configuration demo/pause-backup is paused; this BackupSession will be Skipped"
    );
    assert!(
        text(&skip.stderr).contains("Warning: Backup Configuration demo/pause-backup is paused")
    );

    let reject = stash(&args("reject"), None);
    assert!(!reject.status.success(), "a denial fails the command");
    let v: Value = serde_json::from_slice(&reject.stdout).unwrap();
    assert_eq!(v["response"]["allowed"], false);
    assert!(
        v["response"].get("patch").is_none(),
        "a denied request carries no patch"
    );
    assert_eq!(
        v["response"]["status"]["message"],
        "Backup Configuration demo/pause-backup is paused"
    );
    assert!(text(&reject.stderr).contains("denied: BackupSession demo/instant-backupsession: Backup Configuration demo/pause-backup is paused"));
}

#[test]
fn bad_input_is_one_clear_line() {
    let out = stash(&["review", "--path", "/mutate/everything"], Some(b"{}"));
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains("unknown endpoint \"/mutate/everything\": use one of /mutate/workloads"),
        "{e}"
    );
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");

    let out = stash(&["review"], Some(b"{\"kind\":\"Pod\"}"));
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("body is not an AdmissionReview"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
}

#[test]
fn a_kind_list_manifest_is_reviewed_item_by_item() {
    let dep = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/examples/deployment.yaml"
    ))
    .unwrap();
    let items: Vec<Value> = serde_yaml::Deserializer::from_str(&dep)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("list.json");
    std::fs::write(&file, list.to_string()).unwrap();
    let out = stash(
        &[
            "review",
            "--manifest",
            file.to_str().unwrap(),
            "--apply-patch",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let golden =
        std::fs::read_to_string(fixtures().join("expected/review-deployment-apply-patch.yaml"))
            .unwrap();
    assert_eq!(text(&out.stdout), golden);
}
