//! The binary as kubectl runs it: through a `kubectl-stash` symlink (the
//! install), and as `stash kubectl`; failures are one line on stderr and
//! exit status 1.

use std::process::Command;

fn stash() -> &'static str {
    env!("CARGO_BIN_EXE_stash")
}

#[test]
fn the_symlink_is_the_plugin_and_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("kubectl-stash");
    std::os::unix::fs::symlink(stash(), &link).unwrap();

    let help = Command::new(&link).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("Usage: kubectl stash [OPTIONS] <COMMAND>"),
        "{text}"
    );
    for verb in [
        "pause", "resume", "trigger", "unlock", "check", "debug", "download",
    ] {
        assert!(
            text.contains(&format!("\n  {verb} ")),
            "no {verb} in {text}"
        );
    }

    let out = Command::new(&link)
        .args([
            "--kubeconfig",
            "/nonexistent/config",
            "pause",
            "backup",
            "pause-backup",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: no kubeconfig: cannot read /nonexistent/config"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn stash_kubectl_is_the_same_cli() {
    let out = Command::new(stash())
        .args(["kubectl", "trigger", "pause-backup", "--wait", "-n", "demo"])
        .env("KUBECONFIG", "/nonexistent/a:/nonexistent/b")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: no kubeconfig: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
