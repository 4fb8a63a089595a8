//! `pause backup` / `resume backup`: by name, several names, selector,
//! `--all`; idempotence; the one-line 404 and 403.

use serde_json::json;
use stash_testkit::{Cluster, Identity, Status};

use super::{BCS, config, kubectl_stash, paused};

fn cluster() -> Cluster {
    let c = Cluster::new();
    c.seed(config("pause-backup", false, json!({"team": "a"})));
    c.seed(config("db", false, json!({"team": "a"})));
    c.seed(config("cache", false, json!({"team": "b"})));
    c
}

#[tokio::test]
async fn pause_and_resume_by_name_write_the_guides_merge_patch() {
    let c = cluster();
    let mark = c.mark();
    let ran = kubectl_stash(&c, "pause backup -n demo --backupconfig pause-backup").await;
    assert_eq!(
        ran.ok(),
        "backupconfiguration.stash.appscode.com/pause-backup paused\n"
    );
    assert!(paused(&c, "pause-backup"));
    assert!(!paused(&c, "db"));
    let writes = c.log_since(mark);
    let patch = writes.iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.body, json!({"spec": {"paused": true}}));

    let ran = kubectl_stash(&c, "resume backup -n demo pause-backup").await;
    assert_eq!(
        ran.ok(),
        "backupconfiguration.stash.appscode.com/pause-backup resumed\n"
    );
    // As the guide's `kubectl patch … {"spec": {"paused": false}}`: stored false.
    assert_eq!(
        c.object(&format!("{BCS}/pause-backup"))["spec"]["paused"],
        json!(false)
    );
}

#[tokio::test]
async fn already_in_the_asked_state_writes_nothing() {
    let c = cluster();
    kubectl_stash(&c, "pause backup -n demo pause-backup")
        .await
        .ok();
    let mark = c.mark();
    let ran = kubectl_stash(&c, "pause backup -n demo pause-backup").await;
    assert_eq!(
        ran.ok(),
        "backupconfiguration.stash.appscode.com/pause-backup already paused\n"
    );
    let ran = kubectl_stash(&c, "resume backup -n demo db").await;
    assert_eq!(
        ran.ok(),
        "backupconfiguration.stash.appscode.com/db not paused (nothing to resume)\n"
    );
    assert_eq!(c.writes_since(mark), Vec::<(String, String)>::new());
}

#[tokio::test]
async fn several_names_selector_and_all() {
    let c = cluster();
    let ran = kubectl_stash(
        &c,
        "pause backup -n demo --backupconfig pause-backup --backupconfig db",
    )
    .await;
    assert_eq!(
        ran.ok(),
        "backupconfiguration.stash.appscode.com/pause-backup paused\nbackupconfiguration.stash.appscode.com/db paused\n"
    );
    assert!(!paused(&c, "cache"));

    let ran = kubectl_stash(&c, "resume backup -n demo -l team=a").await;
    assert_eq!(
        ran.ok(),
        "backupconfiguration.stash.appscode.com/db resumed\nbackupconfiguration.stash.appscode.com/pause-backup resumed\n"
    );

    let ran = kubectl_stash(&c, "pause backup -n demo --all").await;
    assert_eq!(
        ran.ok(),
        "backupconfiguration.stash.appscode.com/cache paused\nbackupconfiguration.stash.appscode.com/db paused\nbackupconfiguration.stash.appscode.com/pause-backup paused\n"
    );
    let ran = kubectl_stash(&c, "pause backup -n demo -l team=nobody").await;
    assert_eq!(
        ran.ok(),
        "no BackupConfiguration matching \"team=nobody\" in namespace \"demo\"\n"
    );
}

#[tokio::test]
async fn a_missing_name_changes_nothing_and_says_which() {
    let c = cluster();
    let mark = c.mark();
    let ran = kubectl_stash(&c, "pause backup -n demo db x").await;
    assert_eq!(
        ran.error(),
        "backupconfiguration \"x\" not found in namespace \"demo\""
    );
    assert_eq!(ran.out, "");
    assert!(
        !paused(&c, "db"),
        "nothing changed before the typo was found"
    );
    assert_eq!(c.writes_since(mark), Vec::<(String, String)>::new());
    let ran = kubectl_stash(&c, "pause backup -n demo").await;
    assert!(ran.error().starts_with("name the BackupConfigurations"));
}

#[tokio::test]
async fn forbidden_names_the_verb_and_the_resource() {
    let c = cluster();
    let message = "backupconfigurations.stash.appscode.com \"pause-backup\" is forbidden: User \"jane\" cannot patch resource \"backupconfigurations\" in API group \"stash.appscode.com\" in the namespace \"demo\"";
    c.refuse_writes(
        &format!("{BCS}/pause-backup"),
        Status::new(403, "Forbidden", message),
    );
    let ran = super::kubectl_stash_as(
        &c,
        Identity::admin(),
        "pause backup -n demo pause-backup",
        "",
        Default::default(),
    )
    .await;
    assert_eq!(
        ran.error(),
        format!(
            "no permission to patch backupconfigurations.stash.appscode.com \"pause-backup\" in namespace \"demo\": {message}"
        )
    );
    assert!(!paused(&c, "pause-backup"));
}
