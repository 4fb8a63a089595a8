//! `stash restore` (the `stash-init` init container) as a process, stopped
//! the way Kubernetes stops a pod's containers (issue 20): SIGTERM while
//! `restic restore` holds the repository's lock; the container's other
//! processes are killed once `stash` has exited. The init container must
//! interrupt restic so that it removes its lock, report its host Failed
//! within the stop budget and exit non-zero, and leave a repository that the
//! next restore and backup use at once.

use stash_testkit as support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use stash::api::{HostRestorePhase, RestoreSession};
use stash::backup::ResticSettings;
use stash::runtime::stop::STOP_BUDGET;
use support::container::Container;
use support::locks::lock_files;
use support::restic::{Env, NS, StoppedProcessSetup};

const SESSION: &str =
    "/apis/stash.appscode.com/v1beta1/namespaces/demo/restoresessions/restore-stash-demo";

/// The `stash` binary under test; `STASH_TEST_BINARY` runs these tests
/// against another build (e.g. an older commit's, to see them fail there).
fn stash_binary() -> PathBuf {
    std::env::var_os("STASH_TEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_stash")))
}

/// What the kubelet allows between SIGTERM and SIGKILL by default.
const TERMINATION_GRACE: Duration = Duration::from_secs(30);

/// Any lock left behind fails a command at once.
fn settings(env: &Env) -> ResticSettings {
    env.unforgiving_settings()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_stash_restore_mid_restore_leaves_no_lock_and_reports_the_host() {
    let env = Env::new();
    let StoppedProcessSetup {
        config,
        repository,
        cluster,
        served: _served,
        kubeconfig,
        blocking,
    } = env.stopped_process_setup("restore").await;
    std::fs::create_dir_all(env.p("restored")).unwrap();
    let data = env.p("source/data").display().to_string();
    cluster.seed(json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession",
        "metadata": {"name": "restore-stash-demo", "namespace": NS},
        "spec": {"repository": {"name": "gcs-repo"},
                 "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "stash-demo"},
                            "rules": [{"paths": [data]}]}}
    }));
    let args: Vec<String> = vec![
        "restore".into(),
        "--restoresession=restore-stash-demo".into(),
        format!("--secret-dir={}", env.p("secret").display()),
        "--enable-cache=false".into(),
        format!("--namespace={NS}"),
        "--pod-name=stash-demo-7c9d6b8f4d-4xk2p".into(),
        format!("--restic-binary={}", blocking.path.display()),
        format!("--scratch-dir={}", env.p("tmp").display()),
        format!("--target-dir={}", env.p("restored").display()),
    ];
    let init = Container::start(&stash_binary(), &args, &kubeconfig);
    // restic restores under its lock, held there.
    blocking.until_blocked().await;

    let (status, took) = init.stop(TERMINATION_GRACE).await;
    blocking.unblock();
    let status = status.expect("stash restore exited by itself after SIGTERM");
    assert!(
        !status.success(),
        "an interrupted restore exits non-zero: the pod stays in Init"
    );
    assert!(
        took < STOP_BUDGET + Duration::from_secs(2),
        "within the stop budget: {took:?}"
    );
    assert_eq!(
        lock_files(&env.p("repo")),
        Vec::<PathBuf>::new(),
        "restic removed its lock before the container went"
    );
    let session: RestoreSession = cluster.typed(SESSION);
    let host = session.host_stats("host-0").unwrap();
    assert_eq!(host.phase, Some(HostRestorePhase::Failed), "{host:?}");
    assert_eq!(
        host.error.as_deref(),
        Some("interrupted: the pod is stopping (SIGTERM) during restic restore")
    );
    let events = cluster.list("/api/v1/namespaces/demo/events", None);
    assert!(
        events
            .iter()
            .any(|e: &Value| e["reason"] == "Host Restore Failed"
                && e["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("interrupted")),
        "{events:?}"
    );

    // The next restore (which runs no `restic unlock` first) and backup go on at once.
    env.restore_then_backup_succeed(&config, &repository, &settings(&env))
        .await;
}
