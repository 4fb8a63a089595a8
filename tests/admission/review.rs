//! `stash review`, run as the binary a user runs.

use stash_testkit::reviews as admission_support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use admission_support::*;
use base64::Engine;
use serde_json::Value;
use stash::admission::{self, Endpoint};
use stash::settings::PausedSessionPolicy;

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

/// Runs `stash ARGS` and waits at most `within` for it (killed after).
#[allow(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also gives its peak memory"
)]
fn stash_within(args: &[&str], within: std::time::Duration) -> (Output, libc::rusage) {
    use std::os::unix::process::ExitStatusExt;
    let child = Command::new(env!("CARGO_BIN_EXE_stash"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let deadline = std::time::Instant::now() + within;
    let mut stderr = child.stderr.unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut s).unwrap();
        s
    });
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: plain wait4 on our own child, with out-parameters we own.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break (std::process::ExitStatus::from_raw(status), usage);
        }
        if std::time::Instant::now() > deadline {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("stash {args:?} still running after {within:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap();
    (
        Output {
            status,
            stdout: Vec::new(),
            stderr,
        },
        usage,
    )
}

fn one_error_line(out: &Output) -> String {
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_string()
}

#[test]
fn input_is_capped_with_a_flag_to_raise_it() {
    let secs = std::time::Duration::from_secs;
    // An endless file: refused at the limit, not read until memory runs out.
    let (out, usage) = stash_within(&["review", "--manifest", "/dev/zero"], secs(30));
    let line = one_error_line(&out);
    assert!(line.contains("/dev/zero"), "{line}");
    assert!(line.contains("input limit of 32 MiB"), "{line}");
    assert!(line.contains("--max-input-size"), "{line}");
    assert!(usage.ru_maxrss < 200 * 1024, "{} KiB", usage.ru_maxrss);

    let dir = tempfile::tempdir().unwrap();
    let review = dir.path().join("review.json");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/serve/deployment-create.json"),
        &review,
    )
    .unwrap();
    let path = review.to_str().unwrap();
    let (out, _) = stash_within(&["review", "--max-input-size", "1KiB", path], secs(30));
    let line = one_error_line(&out);
    assert!(line.contains("input limit of 1 KiB"), "{line}");
    let (out, _) = stash_within(&["review", "--max-input-size", "64KiB", path], secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Stdin is capped the same way.
    let out = stash(&["review", "--max-input-size", "100"], Some(&[b' '; 101]));
    let line = one_error_line(&out);
    assert!(
        line.contains("stdin is larger than the input limit of 100 bytes"),
        "{line}"
    );
    let out = stash(&["review", "--max-input-size", "lots"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a size"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_large_manifest_is_decided_one_document_at_a_time() {
    // 100 ConfigMaps of 13,000 keys each (16 MiB), then the guide's Deployment.
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("big.yaml");
    let mut text = String::new();
    for d in 0..100 {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{d}}}\ndata:\n"
        ));
        for k in 0..13_000 {
            text.push_str(&format!("  k{k}: v\n"));
        }
    }
    text.push_str("---\n");
    text.push_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("manifests/examples/deployment.yaml"),
        )
        .unwrap(),
    );
    std::fs::write(&manifest, &text).unwrap();
    let size_kib = text.len() as i64 / 1024;
    drop(text);
    // A child's peak counts what it had before exec (a copy of this test
    // process): measure against a small review started the same way.
    let (small, base) = stash_within(
        &["review", "--manifest", "manifests/examples/deployment.yaml"],
        std::time::Duration::from_secs(30),
    );
    assert!(small.status.success(), "{}", text_of(&small.stderr));
    let (out, usage) = stash_within(
        &["review", "--manifest", manifest.to_str().unwrap()],
        std::time::Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    // The text once and one document's values: about 3 times the file
    // (holding every document's values took 18 times it).
    let grew = usage.ru_maxrss - base.ru_maxrss;
    assert!(
        grew < 6 * size_kib,
        "peak grew by {grew} KiB for a {size_kib} KiB manifest"
    );
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn deep_manifests_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("deep.yaml");
    std::fs::write(
        &manifest,
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (out, _) = stash_within(
        &["review", "--manifest", manifest.to_str().unwrap()],
        std::time::Duration::from_secs(30),
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let line = one_error_line(&out);
    assert!(
        line.contains("deep.yaml: document 1 (line 1): nesting deeper than 64 levels"),
        "{line}"
    );
}
