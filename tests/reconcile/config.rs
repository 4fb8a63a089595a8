//! The BackupConfiguration controller's API calls against the fake cluster of
//! `tests/support` (webhooks on every write): what it writes on the first pass, that a second pass writes
//! nothing, that pausing changes nothing but observedGeneration, that a
//! schedule change patches the CronJob, and deletion.

use stash_testkit as support;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use stash::api::BackupConfiguration;
use stash::reconcile::backup_configuration::{Context, reconcile_at};
use stash::settings::Settings;
use support::{Cluster, Identity, PatchBody, Recorded, Status};

const BC: &str =
    "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupconfigurations/pause-backup";
const DEPLOY: &str = "/apis/apps/v1/namespaces/demo/deployments/stash-demo";
const SA: &str = "/api/v1/namespaces/demo/serviceaccounts/stash-backup-pause-backup";
const CRON_RB: &str =
    "/apis/rbac.authorization.k8s.io/v1/namespaces/demo/rolebindings/stash-backup-pause-backup";
const SIDECAR_RB: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/demo/rolebindings/stash-sidecar-deployment-stash-demo";
const CRONJOB: &str = "/apis/batch/v1/namespaces/demo/cronjobs/stash-backup-pause-backup";

/// The guide's BackupConfiguration (also the other topics' of this binary).
pub(super) fn bc() -> Value {
    json!({
        "apiVersion": "stash.appscode.com/v1beta1",
        "kind": "BackupConfiguration",
        "metadata": {"name": "pause-backup", "namespace": "demo", "uid": "bc-uid",
                     "generation": 1, "resourceVersion": "100"},
        "spec": {
            "repository": {"name": "gcs-repo"},
            "schedule": "*/5 * * * *",
            "target": {
                "ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "stash-demo"},
                "volumeMounts": [{"name": "source-data", "mountPath": "/source/data"}],
                "paths": ["/source/data"]
            },
            "retentionPolicy": {"name": "keep-last-5", "keepLast": 5, "prune": true}
        }
    })
}

/// The guide's storage Secret, holding the restic password.
pub(super) fn secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": "gcs-secret", "namespace": "demo"},
           "data": {"RESTIC_PASSWORD": "Y2hhbmdlaXQ="}})
}

/// The guide's Repository.
pub(super) fn repository() -> Value {
    json!({"apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
           "metadata": {"name": "gcs-repo", "namespace": "demo"},
           "spec": {"backend": {"gcs": {"bucket": "appscode-qa", "prefix": "/sample/data"},
                                "storageSecretName": "gcs-secret"}}})
}

/// The target Deployment, stored at resourceVersion 5.
pub(super) fn deployment() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "stash-demo", "namespace": "demo", "resourceVersion": "5"},
           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "stash-demo"}},
                    "template": {"metadata": {"labels": {"app": "stash-demo"}},
                                 "spec": {"containers": [{"name": "busybox", "image": "busybox"}]}}}})
}

/// The install's image: the reconciler's CronJob, the sidecar, and what
/// the install's policies allow.
const IMAGE: &str = "stash:test";

/// A cluster holding `bc` and, when asked, the Repository and the Deployment.
fn cluster_with(bc: Value, repo: bool, deploy: bool) -> Cluster {
    let c = Cluster::with_settings(Settings {
        image: IMAGE.into(),
        ..Settings::default()
    });
    c.seed(bc);
    if repo {
        c.seed(secret());
        c.seed(repository());
    }
    if deploy {
        c.seed(deployment());
    }
    c
}

/// The configuration, its Repository and its Deployment.
fn cluster() -> Cluster {
    cluster_with(bc(), true, true)
}

fn now(s: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(s).unwrap()
}

/// The controller's context on `c`, its index caught up with `c`.
fn context(c: &Cluster) -> Context {
    Context::new(
        c.client(Identity::reconciler()),
        IMAGE.into(),
        c.settings(),
        c.index(),
    )
}

/// The reconciler's pass over the configuration stored at `BC`, by its
/// identity, as its watch would trigger it: its result and the requests it
/// made. On a configuration without the finalizer the pass only adds it; the
/// pass that change's watch event triggers follows, as on a cluster.
async fn pass(c: &Cluster, at: i64) -> (Result<(), String>, Vec<Recorded>) {
    let mark = c.mark();
    let ctx = context(c);
    let result = c
        .reconcile_as_watched(BC, |obj: BackupConfiguration| {
            let ctx = &ctx;
            async move { reconcile_at(&obj, ctx, now(at)).await }
        })
        .await
        .expect("the BackupConfiguration exists")
        .map(|_| ())
        .map_err(|e| e.to_string());
    (result, c.log_since(mark))
}

fn writes(log: &[Recorded]) -> Vec<(String, String)> {
    log.iter()
        .filter(|r| r.method != "GET")
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect()
}

fn find<'a>(log: &'a [Recorded], method: &str, path: &str) -> &'a Recorded {
    log.iter()
        .find(|r| r.method == method && r.path == path)
        .unwrap_or_else(|| panic!("no {method} {path} in {:#?}", writes(log)))
}

/// `kubectl patch backupconfiguration pause-backup --type=merge -p …`.
fn patch_config(c: &Cluster, patch: Value) {
    c.patch(Identity::admin(), BC, PatchBody::Merge(patch))
        .expect("backupconfiguration patched");
}

#[tokio::test]
async fn first_pass_adds_finalizer_cronjob_rbac_and_status() {
    let c = cluster();
    let (res, log) = pass(&c, 1000).await;
    res.unwrap();
    assert_eq!(
        writes(&log),
        [
            ("PATCH".to_string(), BC.to_string()),
            ("PATCH".to_string(), SA.to_string()),
            ("PATCH".to_string(), CRON_RB.to_string()),
            ("PATCH".to_string(), CRONJOB.to_string()),
            ("PATCH".to_string(), DEPLOY.to_string()),
            ("PATCH".to_string(), SIDECAR_RB.to_string()),
            ("PATCH".to_string(), format!("{BC}/status")),
        ]
    );
    // Everything but the finalizer (kube-runtime's helper, which names no
    // field manager) is written by field manager `stash`.
    for w in log.iter().filter(|r| r.method != "GET" && r.path != BC) {
        assert_eq!(
            w.param("fieldManager").as_deref(),
            Some("stash"),
            "{}",
            w.path
        );
    }

    // The finalizer is in place before anything it must clean up exists.
    assert_eq!(writes(&log)[0], ("PATCH".to_string(), BC.to_string()));
    assert_eq!(
        c.object(BC)["metadata"]["finalizers"],
        json!(["stash.appscode.com"])
    );

    let cj = find(&log, "PATCH", CRONJOB);
    assert_eq!(cj.content_type, "application/apply-patch+yaml");
    assert_eq!(cj.param("force").as_deref(), Some("true"));
    assert_eq!(cj.body["spec"]["schedule"], "*/5 * * * *");
    assert_eq!(cj.body["metadata"]["ownerReferences"][0]["uid"], "bc-uid");
    let pod = &cj.body["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "stash-backup-pause-backup");
    assert_eq!(pod["containers"][0]["image"], "stash:test");

    let rb = find(&log, "PATCH", CRON_RB);
    assert_eq!(rb.body["roleRef"]["name"], "stash-cron-job");
    let side = find(&log, "PATCH", SIDECAR_RB);
    assert_eq!(side.body["roleRef"]["name"], "stash-sidecar");
    assert_eq!(
        side.body["subjects"],
        json!([{"kind": "ServiceAccount", "name": "default", "namespace": "demo"}])
    );

    let st = find(&log, "PATCH", &format!("{BC}/status"));
    assert_eq!(st.content_type, "application/merge-patch+json");
    assert_eq!(st.body["status"]["observedGeneration"], 1);
    let conds: BTreeMap<String, String> = st.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(conds["RepositoryFound"], "True");
    assert_eq!(conds["BackupTargetFound"], "True");
    assert_eq!(conds["CronJobCreated"], "True");
    assert_eq!(conds["StashSidecarInjected"], "True");
    // Every request is one the install's ClusterRole grants the reconciler.
    assert_eq!(c.forbidden_requests(), Vec::<String>::new());
}

/// Adds what others write (the CronJob controller's status, a subject's
/// empty apiGroup), so the comparison must ignore it; the API server's
/// defaults the fake cluster stores itself.
fn with_server_defaults(c: &Cluster) {
    if c.get(CRONJOB).is_some() {
        let cj = c.object(CRONJOB);
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow", "defaulted");
        assert_eq!(
            cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccount"],
            cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"],
            "defaulted"
        );
        c.edit(CRONJOB, |cj| {
            cj["status"] = json!({"lastScheduleTime": "2019-08-01T17:40:00Z"});
        });
    }
    if c.get(SIDECAR_RB).is_some() {
        c.edit(SIDECAR_RB, |rb| rb["subjects"][0]["apiGroup"] = json!(""));
    }
}

#[tokio::test]
async fn second_pass_writes_nothing() {
    let c = cluster();
    let (res, _) = pass(&c, 1000).await;
    res.unwrap();
    with_server_defaults(&c);
    let (res, log) = pass(&c, 2000).await;
    res.unwrap();
    assert_eq!(writes(&log), Vec::<(String, String)>::new());
}

#[tokio::test]
async fn pausing_writes_only_observed_generation_and_the_paused_condition() {
    let c = cluster();
    pass(&c, 1000).await.0.unwrap();
    let before_status = c.object(BC)["status"].clone();
    patch_config(&c, json!({"spec": {"paused": true}}));
    assert_eq!(c.object(BC)["metadata"]["generation"], 2);
    with_server_defaults(&c);
    let (res, log) = pass(&c, 2000).await;
    res.unwrap();
    assert_eq!(
        writes(&log),
        [("PATCH".to_string(), format!("{BC}/status"))]
    );
    let mut expected = before_status;
    expected["observedGeneration"] = json!(2);
    for c in expected["conditions"].as_array_mut().unwrap() {
        c["observedGeneration"] = json!(2);
    }
    // When the pause began, for the metrics (docs/reconcile.md): the pass's time.
    expected["conditions"].as_array_mut().unwrap().push(json!({
        "type": "Paused", "status": "True", "reason": "BackupPaused",
        "message": "spec.paused is true: scheduled runs create no BackupSession.",
        "lastTransitionTime": "1970-01-01T00:33:20Z", "observedGeneration": 2
    }));
    assert_eq!(c.object(BC)["status"], expected);
}

#[tokio::test]
async fn schedule_change_patches_the_cronjob_in_place() {
    let c = cluster();
    pass(&c, 1000).await.0.unwrap();
    patch_config(
        &c,
        json!({"spec": {"schedule": "*/1 * * * *", "paused": true}}),
    );
    assert_eq!(c.object(BC)["metadata"]["generation"], 2);
    with_server_defaults(&c);
    let (res, log) = pass(&c, 2000).await;
    res.unwrap();
    assert_eq!(
        writes(&log),
        [
            ("PATCH".to_string(), CRONJOB.to_string()),
            ("PATCH".to_string(), format!("{BC}/status")),
        ]
    );
    assert_eq!(c.object(CRONJOB)["spec"]["schedule"], "*/1 * * * *");
}

#[tokio::test]
async fn missing_target_is_reported_not_retried_hot() {
    let c = cluster_with(bc(), true, false);
    let (res, log) = pass(&c, 1000).await;
    res.unwrap();
    assert!(!writes(&log).iter().any(|(_, p)| p == SIDECAR_RB));
    let target = condition(&c, "BackupTargetFound");
    assert_eq!(target["status"], "False");
    assert_eq!(target["reason"], "TargetNotAvailable");
    assert_eq!(
        target["message"],
        "Backup target Deployment/stash-demo does not exist."
    );
    let sidecar = condition(&c, "StashSidecarInjected");
    assert_eq!(sidecar["status"], "False");
}

#[tokio::test]
async fn missing_repository_is_a_false_condition() {
    let c = cluster_with(bc(), false, true);
    let (res, _) = pass(&c, 1000).await;
    res.unwrap();
    let repo = condition(&c, "RepositoryFound");
    assert_eq!(repo["status"], "False");
    assert_eq!(repo["message"], "Repository demo/gcs-repo does not exist.");
}

#[tokio::test]
async fn no_schedule_means_no_cronjob_and_a_false_condition() {
    let mut config = bc();
    config["spec"].as_object_mut().unwrap().remove("schedule");
    let c = cluster_with(config, true, true);
    let (res, log) = pass(&c, 1000).await;
    res.unwrap();
    assert!(
        !writes(&log)
            .iter()
            .any(|(_, p)| p == CRONJOB || p == SA || p == CRON_RB)
    );
    let cj = condition(&c, "CronJobCreated");
    assert_eq!(cj["status"], "False");
    assert_eq!(
        cj["message"],
        "Failed to create backup triggering CronJob: spec.schedule is not set"
    );
}

#[tokio::test]
async fn forbidden_cronjob_fails_the_pass_but_still_reports_status() {
    let c = cluster();
    c.refuse_writes(
        CRONJOB,
        Status::new(
            403,
            "Forbidden",
            "cronjobs.batch is forbidden: no RBAC for this test",
        ),
    );
    let (res, log) = pass(&c, 1000).await;
    let err = res.unwrap_err();
    assert!(
        err.starts_with("apply CronJob stash-backup-pause-backup: "),
        "{err}"
    );
    // the rest of the pass still happened, and the status says why
    assert!(writes(&log).iter().any(|(_, p)| p == SIDECAR_RB));
    let cj = condition(&c, "CronJobCreated");
    assert_eq!(cj["status"], "False");
    assert!(
        cj["message"].as_str().unwrap().contains("forbidden"),
        "{cj}"
    );
}

#[tokio::test]
async fn deletion_removes_the_sidecar_then_releases_the_finalizer() {
    let c = cluster();
    pass(&c, 1000).await.0.unwrap();
    // $ kubectl delete backupconfiguration -n demo pause-backup: our
    // finalizer keeps it, with a deletionTimestamp.
    c.delete(Identity::admin(), BC).expect("deleted");
    assert!(c.object(BC)["metadata"]["deletionTimestamp"].is_string());
    let (res, log) = pass(&c, 2000).await;
    res.unwrap();
    let reads: Vec<_> = log
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path.clone())
        .collect();
    // the Repository comes from the index (the feed's watch), not a GET
    assert_eq!(reads, [DEPLOY.to_string()]);
    // the sidecar goes first, then the finalizer
    assert_eq!(
        writes(&log),
        [
            ("PATCH".to_string(), DEPLOY.to_string()),
            ("PATCH".to_string(), BC.to_string())
        ]
    );
    assert_eq!(containers(&c.object(DEPLOY)), ["busybox"]);
    assert!(
        c.object(DEPLOY)["metadata"]
            .get("annotations")
            .and_then(|a| a.get("stash.appscode.com/last-applied-backupconfiguration"))
            .is_none()
    );
    // Its last finalizer gone, the API server removes it.
    assert_eq!(c.get(BC), None);
}

#[tokio::test]
async fn deleted_configuration_without_our_finalizer_costs_nothing() {
    let mut config = bc();
    config["metadata"]["deletionTimestamp"] = json!("2019-08-02T06:20:00Z");
    config["metadata"]["finalizers"] = json!(["other"]);
    let c = cluster_with(config, true, true);
    let (res, log) = pass(&c, 1000).await;
    res.unwrap();
    assert!(log.is_empty(), "{log:#?}");
}

/// The configuration's status condition of `type_`; the test fails if it is missing.
fn condition(c: &Cluster, type_: &str) -> Value {
    let bc = c.object(BC);
    bc["status"]["conditions"]
        .as_array()
        .and_then(|conds| conds.iter().find(|c| c["type"] == type_))
        .cloned()
        .unwrap_or_else(|| panic!("no {type_} condition in {}", bc["status"]))
}

fn containers(deploy: &Value) -> Vec<String> {
    deploy["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn back_fills_the_sidecar_with_a_guarded_json_patch_once() {
    let c = cluster();
    let (res, log) = pass(&c, 1000).await;
    res.unwrap();
    let patch = find(&log, "PATCH", DEPLOY);
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert_eq!(patch.param("fieldManager").as_deref(), Some("stash"));
    assert_eq!(
        patch.body[0],
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": "5"})
    );
    let deploy = &c.object(DEPLOY);
    assert_eq!(containers(deploy), ["busybox", "stash"]);
    let sidecar = &deploy["spec"]["template"]["spec"]["containers"][1];
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "run-backup");
    assert!(args.contains(&"--invoker-name=pause-backup"), "{args:?}");
    assert_eq!(
        deploy["metadata"]["annotations"]["stash.appscode.com/last-applied-backupconfiguration"],
        "pause-backup"
    );
    let injected = condition(&c, "StashSidecarInjected");
    assert_eq!(injected["status"], "True");
    assert_eq!(injected["reason"], "SidecarInjectionSucceeded");

    // level-triggered: the next pass finds the sidecar in place and writes nothing
    with_server_defaults(&c);
    let (res, log) = pass(&c, 2000).await;
    res.unwrap();
    assert_eq!(writes(&log), Vec::<(String, String)>::new());
}

#[tokio::test]
async fn a_concurrent_workload_change_fails_the_patch_instead_of_misapplying() {
    let c = cluster();
    c.change_after_get(DEPLOY);
    let (res, log) = pass(&c, 1000).await;
    let err = res.unwrap_err();
    assert!(
        err.starts_with("patch the sidecar of Deployment demo/stash-demo: "),
        "{err}"
    );
    // the patch was tried against the version read, and refused as a whole
    assert_eq!(find(&log, "PATCH", DEPLOY).body[0]["value"], "5");
    assert_eq!(containers(&c.object(DEPLOY)), ["busybox"]);
    // A lost race is no failure to report: no status (it would flap
    // StashSidecarInjected), no event; the error policy retries quietly.
    assert!(
        !writes(&log)
            .iter()
            .any(|(_, p)| p == &format!("{BC}/status"))
    );
    assert_eq!(events(&c), []);
}

#[tokio::test]
async fn missing_repository_leaves_the_workload_alone() {
    let c = cluster_with(bc(), false, true);
    let (res, log) = pass(&c, 1000).await;
    res.unwrap();
    assert!(!writes(&log).iter().any(|(_, p)| p == DEPLOY));
    let injected = condition(&c, "StashSidecarInjected");
    assert_eq!(injected["status"], "False");
    assert!(
        injected["message"].as_str().unwrap().contains("gcs-repo"),
        "{injected}"
    );
}

const EVENTS: &str = "/api/v1/namespaces/demo/events";

/// The events recorded on the configuration: (type, reason, component, message).
fn events(c: &Cluster) -> Vec<(String, String, String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    c.list(EVENTS, None)
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "pause-backup")
        .map(|e| {
            (
                s(&e["type"]),
                s(&e["reason"]),
                s(&e["source"]["component"]),
                s(&e["message"]),
            )
        })
        .collect()
}

fn warning(reason: &str, message: &str) -> (String, String, String, String) {
    (
        "Warning".into(),
        reason.into(),
        "BackupConfiguration Controller".into(),
        message.into(),
    )
}

#[tokio::test]
async fn a_refused_cronjob_is_told_once_and_the_sidecar_still_goes_in() {
    let c = cluster();
    // What the install's ValidatingAdmissionPolicy answers on a real cluster.
    c.refuse_writes(
        CRONJOB,
        Status::new(
            403,
            "Forbidden",
            "cronjobs.batch \"stash-backup-pause-backup\" is forbidden: ValidatingAdmissionPolicy 'stash-cronjobs' denied request",
        ),
    );
    let (res, _) = pass(&c, 1000).await;
    // one line, the API server's message, no Debug dump
    assert_eq!(
        res.unwrap_err(),
        "apply CronJob stash-backup-pause-backup: cronjobs.batch \"stash-backup-pause-backup\" is forbidden: ValidatingAdmissionPolicy 'stash-cronjobs' denied request (403 Forbidden)"
    );
    let cj = condition(&c, "CronJobCreated");
    assert_eq!(cj["status"], "False");
    assert_eq!(condition(&c, "StashSidecarInjected")["status"], "True");
    assert_eq!(c.object(BC)["status"]["phase"], "NotReady");
    assert_eq!(
        events(&c),
        [warning(
            "CronJobCreationFailed",
            cj["message"].as_str().unwrap()
        )]
    );
    // The retry finds the same status: nothing written, no second event.
    let (res, log) = pass(&c, 2000).await;
    assert!(res.is_err());
    assert!(!writes(&log).iter().any(|(m, p)| m == "POST" && p == EVENTS));
    assert!(
        !writes(&log)
            .iter()
            .any(|(_, p)| p == &format!("{BC}/status"))
    );
    assert_eq!(events(&c).len(), 1);
}

const SECRET: &str = "/api/v1/namespaces/demo/secrets/gcs-secret";

#[tokio::test]
async fn the_backend_secret_is_one_event_per_reason_and_gates_ready() {
    let c = cluster();
    c.remove(SECRET);
    pass(&c, 1000).await.0.unwrap();
    let secret = condition(&c, "BackendSecretFound");
    assert_eq!(
        (&secret["status"], &secret["reason"], &secret["message"]),
        (
            &json!("False"),
            &json!("BackendSecretNotAvailable"),
            &json!("Backend Secret demo/gcs-secret does not exist.")
        )
    );
    assert_eq!(c.object(BC)["status"]["phase"], "NotReady");
    assert_eq!(
        events(&c),
        [warning(
            "BackendSecretNotFound",
            "Backend Secret demo/gcs-secret does not exist."
        )]
    );
    // Same state again: no event.
    pass(&c, 1500).await.0.unwrap();
    assert_eq!(events(&c).len(), 1);

    // The Secret appears without the password: still False, another reason.
    let mut no_password = super::config::secret();
    no_password["data"] = json!({"other": "eA=="});
    c.seed(no_password);
    pass(&c, 2000).await.0.unwrap();
    assert_eq!(
        events(&c)[1],
        warning(
            "BackendSecretNotFound",
            "Backend Secret demo/gcs-secret has no key RESTIC_PASSWORD."
        )
    );

    // With the password: True, Ready, and no event for good news.
    c.edit(SECRET, |s| s["data"] = json!({"RESTIC_PASSWORD": "eA=="}));
    pass(&c, 3000).await.0.unwrap();
    assert_eq!(condition(&c, "BackendSecretFound")["status"], "True");
    assert_eq!(c.object(BC)["status"]["phase"], "Ready");
    assert_eq!(events(&c).len(), 2);
    assert_eq!(c.forbidden_requests(), Vec::<String>::new());
}

#[tokio::test]
async fn a_configuration_the_webhook_would_deny_is_invalid_with_its_words() {
    let mut config = bc();
    // Got in while the webhook was down: prune with nothing to keep.
    config["spec"]["retentionPolicy"] = json!({"name": "prune-all", "prune": true});
    let denial = Cluster::new()
        .admit(Identity::admin(), "CREATE", config.clone(), None)
        .expect_err("the webhook denies it")
        .message;
    let c = cluster_with(config, true, true);
    pass(&c, 1000).await.0.unwrap();
    let valid = condition(&c, "ValidationPassed");
    assert_eq!(valid["status"], "False");
    assert_eq!(valid["reason"], "ResourceValidationFailed");
    assert!(
        denial.ends_with(valid["message"].as_str().unwrap()),
        "{denial} / {valid}"
    );
    assert_eq!(c.object(BC)["status"]["phase"], "Invalid");
    assert_eq!(
        events(&c),
        [warning(
            "ValidationFailed",
            valid["message"].as_str().unwrap()
        )]
    );
    // The steps stay independent: the CronJob and the sidecar are in place.
    assert_eq!(condition(&c, "CronJobCreated")["status"], "True");
    assert_eq!(condition(&c, "StashSidecarInjected")["status"], "True");
}

#[tokio::test]
async fn a_copy_this_controller_has_written_past_costs_nothing() {
    let c = cluster();
    let ctx = context(&c);
    // The first pass adds the finalizer, superseding the first copy.
    let first: BackupConfiguration = c.typed(BC);
    let mark = c.mark();
    reconcile_at(&first, &ctx, now(1000)).await.unwrap();
    assert_eq!(
        c.writes_since(mark),
        [("PATCH".to_string(), BC.to_string())]
    );
    // A lagging cache hands the pass its first copy again: no request.
    let mark = c.mark();
    reconcile_at(&first, &ctx, now(1500)).await.unwrap();
    let log = c.log_since(mark);
    assert!(log.is_empty(), "{log:#?}");
    // The finalizer's change triggers the pass that applies; its status
    // write supersedes that copy too.
    let second: BackupConfiguration = c.typed(BC);
    reconcile_at(&second, &ctx, now(2000)).await.unwrap();
    assert!(c.object(BC)["status"]["conditions"].is_array());
    let mark = c.mark();
    reconcile_at(&second, &ctx, now(2500)).await.unwrap();
    let log = c.log_since(mark);
    assert!(log.is_empty(), "{log:#?}");
    // The latest copy is fresh: a full pass, which writes nothing.
    with_server_defaults(&c);
    let latest: BackupConfiguration = c.typed(BC);
    let mark = c.mark();
    reconcile_at(&latest, &ctx, now(3000)).await.unwrap();
    assert!(!c.log_since(mark).is_empty());
    assert_eq!(c.writes_since(mark), Vec::<(String, String)>::new());
}
