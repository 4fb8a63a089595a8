//! Table tests of the reconciler's pure desired-state functions.

use serde_json::{Value, json};
use stash::api::{BackupConfiguration, BackupSession, BackupSessionPhase};
use stash::reconcile::desired::*;
use stash::sidecar::covers;

fn bc(extra_spec: Value) -> BackupConfiguration {
    let mut spec = json!({
        "repository": {"name": "gcs-repo"},
        "schedule": "*/5 * * * *",
        "target": {
            "ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "stash-demo"},
            "paths": ["/source/data"]
        },
        "retentionPolicy": {"name": "keep-last-5", "keepLast": 5, "prune": true}
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "stash.appscode.com/v1beta1",
        "kind": "BackupConfiguration",
        "metadata": {"name": "pause-backup", "namespace": "demo", "uid": "bc-uid", "generation": 2},
        "spec": spec
    }))
    .unwrap()
}

fn ts(s: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(s).unwrap()
}

#[test]
fn cronjob_names_are_prefixed_and_cut_to_52() {
    let cases = [
        ("pause-backup", "stash-backup-pause-backup"),
        (
            &"a".repeat(39),
            &*format!("stash-backup-{}", "a".repeat(39)),
        ),
        (
            &"b".repeat(60),
            &*format!("stash-backup-{}", "b".repeat(39)),
        ),
        // a cut that lands after a dash does not leave it dangling
        (
            &format!("{}-xyz", "c".repeat(38)),
            &*format!("stash-backup-{}", "c".repeat(38)),
        ),
    ];
    for (bc_name, want) in cases {
        let got = cronjob_name(bc_name);
        assert_eq!(got, want, "for {bc_name}");
        assert!(got.len() <= 52);
    }
}

#[test]
fn cronjob_matches_the_contract() {
    let cj = serde_json::to_value(cronjob(&bc(json!({})), "stash:1").unwrap()).unwrap();
    assert_eq!(cj["apiVersion"], "batch/v1");
    assert_eq!(cj["kind"], "CronJob");
    assert_eq!(cj["metadata"]["name"], "stash-backup-pause-backup");
    assert_eq!(cj["metadata"]["namespace"], "demo");
    assert_eq!(
        cj["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "stash.appscode.com",
               "app.kubernetes.io/component": "stash-backup"})
    );
    assert_eq!(
        cj["metadata"]["ownerReferences"],
        json!([{"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
                "name": "pause-backup", "uid": "bc-uid", "controller": true}])
    );
    assert_eq!(cj["spec"]["schedule"], "*/5 * * * *");
    assert!(
        cj["spec"].get("suspend").is_none(),
        "pause is skip, not suspend"
    );
    let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["serviceAccountName"], "stash-backup-pause-backup");
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["name"], "stash");
    assert_eq!(containers[0]["image"], "stash:1");
    assert_eq!(
        containers[0]["args"],
        json!([
            "create-backupsession",
            "--invoker-kind=BackupConfiguration",
            "--invoker-name=pause-backup"
        ])
    );
    assert_eq!(
        containers[0]["env"],
        json!([{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}])
    );
}

#[test]
fn pausing_changes_nothing_a_schedule_change_changes_only_the_schedule() {
    let base = serde_json::to_value(cronjob(&bc(json!({})), "i").unwrap()).unwrap();
    let paused = serde_json::to_value(cronjob(&bc(json!({"paused": true})), "i").unwrap()).unwrap();
    assert_eq!(base, paused);
    let resched =
        serde_json::to_value(cronjob(&bc(json!({"schedule": "*/1 * * * *"})), "i").unwrap())
            .unwrap();
    let mut expected = base.clone();
    expected["spec"]["schedule"] = json!("*/1 * * * *");
    assert_eq!(resched, expected);
    // the RBAC does not read paused either
    let a = serde_json::to_value(cron_role_binding(&bc(json!({})))).unwrap();
    let b = serde_json::to_value(cron_role_binding(&bc(json!({"paused": true})))).unwrap();
    assert_eq!(a, b);
}

#[test]
fn no_schedule_no_cronjob() {
    let mut b = bc(json!({}));
    b.spec.schedule = None;
    assert_eq!(cronjob(&b, "i").unwrap_err(), CronJobProblem::NoSchedule);
    b.spec.schedule = Some("  ".into());
    assert!(cronjob(&b, "i").is_err());
}

#[test]
fn rbac_objects() {
    let sa = serde_json::to_value(cron_service_account(&bc(json!({})))).unwrap();
    assert_eq!(sa["metadata"]["name"], "stash-backup-pause-backup");
    assert_eq!(sa["metadata"]["ownerReferences"][0]["uid"], "bc-uid");

    let rb = serde_json::to_value(cron_role_binding(&bc(json!({})))).unwrap();
    assert_eq!(rb["metadata"]["name"], "stash-backup-pause-backup");
    assert_eq!(
        rb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "stash-cron-job"})
    );
    assert_eq!(
        rb["subjects"],
        json!([{"kind": "ServiceAccount", "name": "stash-backup-pause-backup", "namespace": "demo"}])
    );

    let side = serde_json::to_value(sidecar_role_binding(
        &bc(json!({})),
        "Deployment",
        "stash-demo",
        "default",
    ))
    .unwrap();
    assert_eq!(
        side["metadata"]["name"],
        "stash-sidecar-deployment-stash-demo"
    );
    assert_eq!(side["roleRef"]["name"], "stash-sidecar");
    assert_eq!(
        side["subjects"],
        json!([{"kind": "ServiceAccount", "name": "default", "namespace": "demo"}])
    );
}

#[test]
fn workload_service_account_defaults() {
    let cases = [
        (json!({"spec": {"template": {"spec": {}}}}), "default"),
        (
            json!({"spec": {"template": {"spec": {"serviceAccountName": ""}}}}),
            "default",
        ),
        (
            json!({"spec": {"template": {"spec": {"serviceAccountName": "app"}}}}),
            "app",
        ),
    ];
    for (w, want) in cases {
        assert_eq!(workload_service_account(&w), want);
    }
}

#[test]
fn subset_comparison() {
    let cases = [
        (json!({"a": 1}), json!({"a": 1, "b": 2}), true),
        (json!({"a": 1}), json!({"a": 2}), false),
        (
            json!({"a": {"b": [1, {"c": 2}]}}),
            json!({"a": {"b": [1, {"c": 2, "d": 3}], "e": 1}}),
            true,
        ),
        (json!({"a": [1, 2]}), json!({"a": [1]}), false),
        (json!({"a": [1]}), json!({"a": [1, 2]}), false),
        (json!({"a": null}), json!({}), true),
        (json!({"a": 1}), json!({}), false),
    ];
    for (d, a, want) in cases {
        assert_eq!(covers(&a, &d), want, "{d} ⊆ {a}");
    }
}

#[test]
fn desired_cronjob_against_a_defaulted_live_one_needs_no_write() {
    let want = serde_json::to_value(cronjob(&bc(json!({})), "i").unwrap()).unwrap();
    let mut live = want.clone();
    live["metadata"]["resourceVersion"] = json!("9");
    live["spec"]["concurrencyPolicy"] = json!("Allow");
    live["spec"]["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"] = json!("ClusterFirst");
    live["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] =
        json!("/dev/termination-log");
    assert!(covers(&live, &want));
    live["spec"]["schedule"] = json!("0 * * * *");
    assert!(!covers(&live, &want));
}

#[test]
fn guarded_patch_tests_the_resource_version_first() {
    let op: json_patch::PatchOperation = serde_json::from_value(
        json!({"op": "add", "path": "/metadata/annotations/x", "value": "y"}),
    )
    .unwrap();
    let p = serde_json::to_value(guarded_patch(vec![op], "42")).unwrap();
    assert_eq!(
        p,
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
            {"op": "add", "path": "/metadata/annotations/x", "value": "y"}
        ])
    );
}

fn all_good() -> Observations {
    Observations {
        repository: Some(("demo/gcs-repo".into(), true)),
        target: Some(("Deployment/stash-demo".into(), TargetState::Found)),
        cronjob: Ok(()),
        sidecar: Ok(()),
        secret: BackendSecret::Found("demo/gcs-secret".into()),
        validation: Ok(()),
    }
}

#[test]
fn conditions_table() {
    type Expected = [(&'static str, &'static str, &'static str); 6];
    let cases: Vec<(Observations, Expected)> = vec![
        (
            all_good(),
            [
                ("RepositoryFound", "True", "RepositoryAvailable"),
                ("BackupTargetFound", "True", "TargetAvailable"),
                ("CronJobCreated", "True", "CronJobCreationSucceeded"),
                ("StashSidecarInjected", "True", "SidecarInjectionSucceeded"),
                ("BackendSecretFound", "True", "BackendSecretAvailable"),
                ("ValidationPassed", "True", "ResourceValidationPassed"),
            ],
        ),
        (
            Observations {
                repository: Some(("demo/gcs-repo".into(), false)),
                target: Some(("Deployment/stash-demo".into(), TargetState::Missing)),
                cronjob: Err("forbidden".into()),
                sidecar: Err("target missing".into()),
                secret: BackendSecret::NoRepository,
                validation: Err("BackupConfiguration demo/pause-backup has no spec.schedule".into()),
            },
            [
                ("RepositoryFound", "False", "RepositoryNotAvailable"),
                ("BackupTargetFound", "False", "TargetNotAvailable"),
                ("CronJobCreated", "False", "CronJobCreationFailed"),
                ("StashSidecarInjected", "False", "SidecarInjectionFailed"),
                ("BackendSecretFound", "Unknown", "RepositoryNotAvailable"),
                ("ValidationPassed", "False", "ResourceValidationFailed"),
            ],
        ),
        (
            Observations {
                repository: None,
                target: None,
                ..all_good()
            },
            [
                ("RepositoryFound", "False", "RepositoryNotSpecified"),
                ("BackupTargetFound", "False", "TargetNotSpecified"),
                ("CronJobCreated", "True", "CronJobCreationSucceeded"),
                ("StashSidecarInjected", "True", "SidecarInjectionSucceeded"),
                ("BackendSecretFound", "True", "BackendSecretAvailable"),
                ("ValidationPassed", "True", "ResourceValidationPassed"),
            ],
        ),
    ];
    for (obs, want) in cases {
        let got: Vec<_> = conditions(&obs)
            .into_iter()
            .map(|c| (c.type_, c.status, c.reason.unwrap()))
            .collect();
        let want: Vec<_> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(got, want);
    }
    let unsupported = Observations {
        target: Some(("CronJob/nightly".into(), TargetState::Unsupported)),
        ..all_good()
    };
    let c = conditions(&unsupported).remove(1);
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("False", Some("TargetNotSupported"))
    );
    let msgs: Vec<_> = conditions(&all_good())
        .into_iter()
        .map(|c| c.message.unwrap())
        .collect();
    assert_eq!(msgs[0], "Repository demo/gcs-repo exists.");
    assert_eq!(msgs[1], "Backup target Deployment/stash-demo found.");
}

#[test]
fn status_is_stable_and_times_move_only_on_change() {
    let mut b = bc(json!({}));
    let first = desired_status(&b, &all_good(), ts(100));
    assert_eq!(first.observed_generation, Some(2));
    assert!(
        first
            .conditions
            .iter()
            .all(|c| c.last_transition_time.as_ref().unwrap().0 == ts(100))
    );

    // same observations later: identical status, so no write
    b.status = Some(first.clone());
    assert_eq!(desired_status(&b, &all_good(), ts(200)), first);

    // one condition flips: only its time moves
    let obs = Observations {
        cronjob: Err("x".into()),
        ..all_good()
    };
    let next = desired_status(&b, &obs, ts(300));
    for c in &next.conditions {
        let want = if c.type_ == "CronJobCreated" {
            ts(300)
        } else {
            ts(100)
        };
        assert_eq!(
            c.last_transition_time.as_ref().unwrap().0,
            want,
            "{}",
            c.type_
        );
    }

    // pausing bumps the generation: only observedGeneration changes
    b.metadata.generation = Some(3);
    let paused = desired_status(&b, &all_good(), ts(400));
    assert_eq!(paused.observed_generation, Some(3));
    assert_eq!(
        paused
            .conditions
            .iter()
            .map(|c| c.last_transition_time.clone())
            .collect::<Vec<_>>(),
        first
            .conditions
            .iter()
            .map(|c| c.last_transition_time.clone())
            .collect::<Vec<_>>()
    );
}

fn session(name: &str, created: i64, status: Value) -> BackupSession {
    serde_json::from_value(json!({
        "apiVersion": "stash.appscode.com/v1beta1",
        "kind": "BackupSession",
        "metadata": {"name": name, "namespace": "demo",
                     "creationTimestamp": ts(created).to_string()},
        "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "pause-backup"}},
        "status": status
    }))
    .unwrap()
}

#[test]
fn session_steps() {
    use BackupSessionPhase::*;
    let active = InvokerView::Active {
        total_hosts: Some(1),
    };
    let unknown_hosts = InvokerView::Active { total_hosts: None };
    let ok = |h: &str| json!({"hostname": h, "phase": "Succeeded"});
    let bad = |h: &str| json!({"hostname": h, "phase": "Failed", "error": "boom"});
    let finish = |phase, duration: &str, failed: &[&str]| SessionStep::Finish {
        phase,
        duration: duration.into(),
        failed: failed.iter().map(|s| s.to_string()).collect(),
    };
    let cases: Vec<(&str, Value, InvokerView, SessionStep)> = vec![
        (
            "empty + paused",
            json!({}),
            InvokerView::Paused,
            SessionStep::Skip,
        ),
        (
            "Pending + paused",
            json!({"phase": "Pending"}),
            InvokerView::Paused,
            SessionStep::Skip,
        ),
        (
            "empty + active",
            json!({}),
            active.clone(),
            SessionStep::Run { total_hosts: 1 },
        ),
        (
            "empty + hosts unknown",
            json!({}),
            unknown_hosts.clone(),
            SessionStep::Wait,
        ),
        (
            "empty + missing invoker",
            json!({}),
            InvokerView::Missing,
            SessionStep::Wait,
        ),
        (
            "Running + paused is never skipped",
            json!({"phase": "Running", "totalHosts": 1}),
            InvokerView::Paused,
            SessionStep::Wait,
        ),
        (
            "Running + paused finishes when hosts report",
            json!({"phase": "Running", "totalHosts": 1, "stats": [ok("host-0")]}),
            InvokerView::Paused,
            finish(Succeeded, "1m5s", &[]),
        ),
        (
            "Running, 1 of 3 reported",
            json!({"phase": "Running", "totalHosts": 3, "stats": [ok("host-0")]}),
            active.clone(),
            SessionStep::Wait,
        ),
        (
            "Running, a host's claim is not a report",
            json!({"phase": "Running", "totalHosts": 1,
                   "stats": [{"hostname": "host-0", "phase": "Running"}]}),
            active.clone(),
            SessionStep::Wait,
        ),
        (
            "Running, all reported, one failed",
            json!({"phase": "Running", "totalHosts": 2, "stats": [ok("host-0"), bad("host-1")]}),
            active.clone(),
            finish(Failed, "1m5s", &["host-1"]),
        ),
        (
            "Running without totalHosts gets them",
            json!({"phase": "Running"}),
            InvokerView::Active {
                total_hosts: Some(3),
            },
            SessionStep::Run { total_hosts: 3 },
        ),
        (
            "Skipped stays",
            json!({"phase": "Skipped"}),
            active.clone(),
            SessionStep::Wait,
        ),
        (
            "Succeeded stays",
            json!({"phase": "Succeeded"}),
            InvokerView::Paused,
            SessionStep::Wait,
        ),
        (
            "Failed stays",
            json!({"phase": "Failed"}),
            InvokerView::Paused,
            SessionStep::Wait,
        ),
    ];
    for (what, status, invoker, want) in cases {
        let s = session("s", 1000, status);
        assert_eq!(session_step(&s, &invoker, ts(1065)), want, "{what}");
    }
}

#[test]
fn total_hosts_per_kind() {
    let b = bc(json!({}));
    let sts = json!({"spec": {"replicas": 3}});
    let ds = json!({"status": {"desiredNumberScheduled": 4}});
    let cases: Vec<(&str, Option<Value>, Option<i32>)> = vec![
        ("Deployment", None, Some(1)),
        (
            "ReplicaSet",
            Some(json!({"spec": {"replicas": 5}})),
            Some(1),
        ),
        ("StatefulSet", Some(sts), Some(3)),
        ("StatefulSet", Some(json!({"spec": {}})), Some(1)),
        ("StatefulSet", None, None),
        ("DaemonSet", Some(ds), Some(4)),
        (
            "DaemonSet",
            Some(json!({"status": {"desiredNumberScheduled": 0}})),
            None,
        ),
        ("DaemonSet", None, None),
        ("CronJob", None, None),
    ];
    for (kind, w, want) in cases {
        assert_eq!(total_hosts(&b, kind, w.as_ref()), want, "{kind} {w:?}");
    }
    let mut pinned = bc(json!({}));
    pinned.spec.target.as_mut().unwrap().replicas = Some(2);
    assert_eq!(
        total_hosts(
            &pinned,
            "StatefulSet",
            Some(&json!({"spec": {"replicas": 3}}))
        ),
        Some(2)
    );
}

#[test]
fn go_durations() {
    for (s, want) in [
        (0, "0s"),
        (49, "49s"),
        (60, "1m0s"),
        (125, "2m5s"),
        (3605, "1h0m5s"),
        (7322, "2h2m2s"),
    ] {
        assert_eq!(go_duration(s), want);
    }
}

#[test]
fn history_keeps_the_newest_finished() {
    let mut b = bc(json!({}));
    let mut other = session("other-1", 50, json!({"phase": "Succeeded"}));
    other.spec.invoker.name = "other".into();
    let sessions = vec![
        session("s-100", 100, json!({"phase": "Succeeded"})),
        session("s-200", 200, json!({"phase": "Failed"})),
        session("s-300", 300, json!({"phase": "Skipped"})),
        session("s-400", 400, json!({"phase": "Running"})),
        session("s-500", 500, json!({})),
        other,
    ];
    assert_eq!(sessions_to_delete(&b, &sessions), ["s-200", "s-100"]);
    b.spec.backup_history_limit = Some(2);
    assert_eq!(sessions_to_delete(&b, &sessions), ["s-100"]);
    b.spec.backup_history_limit = Some(0);
    assert_eq!(
        sessions_to_delete(&b, &sessions),
        ["s-300", "s-200", "s-100"]
    );
    b.spec.backup_history_limit = Some(-4);
    assert_eq!(sessions_to_delete(&b, &sessions).len(), 3);
}

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> stash::api::Condition {
    stash::api::Condition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..Default::default()
    }
}

#[test]
fn phase_table_as_stash_calculates_it() {
    use stash::api::BackupInvokerPhase::*;
    let all = |over: &[(&str, &str)]| -> Vec<stash::api::Condition> {
        [
            "ValidationPassed",
            "RepositoryFound",
            "BackendSecretFound",
            "BackupTargetFound",
            "CronJobCreated",
            "StashSidecarInjected",
        ]
        .iter()
        .map(|t| {
            let status = over.iter().find(|(o, _)| o == t).map_or("True", |(_, s)| s);
            cond(t, status, "r", "m")
        })
        .collect()
    };
    let cases: [(&[(&str, &str)], _); 9] = [
        (&[], Ready),
        // invalid wins over everything
        (
            &[("ValidationPassed", "False"), ("RepositoryFound", "False")],
            Invalid,
        ),
        (&[("RepositoryFound", "False")], NotReady),
        (&[("BackendSecretFound", "Unknown")], NotReady),
        (&[("BackendSecretFound", "False")], NotReady),
        (&[("CronJobCreated", "False")], NotReady),
        // validation not known yet: not Ready, not Invalid
        (&[("ValidationPassed", "Unknown")], NotReady),
        // target and sidecar are not part of the phase, as in Stash
        (&[("BackupTargetFound", "False")], Ready),
        (&[("StashSidecarInjected", "False")], Ready),
    ];
    for (over, want) in cases {
        assert_eq!(invoker_phase(&all(over)), want, "{over:?}");
    }
    assert_eq!(invoker_phase(&[]), NotReady);
    // paused does not change the phase
    let mut paused = bc(json!({"paused": true}));
    assert_eq!(
        desired_status(&paused, &all_good(), ts(1)).phase,
        Some(Ready)
    );
    paused.spec.paused = false;
    assert_eq!(
        desired_status(&paused, &all_good(), ts(1)).phase,
        Some(Ready)
    );
}

#[test]
fn one_event_per_condition_gone_false_or_changed_while_false() {
    let status = |conds: Vec<stash::api::Condition>| stash::api::BackupConfigurationStatus {
        conditions: conds,
        ..Default::default()
    };
    let refused = cond("CronJobCreated", "False", "CronJobCreationFailed", "denied");
    let ok = cond("CronJobCreated", "True", "CronJobCreationSucceeded", "ok");
    let no_secret = cond(
        "BackendSecretFound",
        "False",
        "BackendSecretNotAvailable",
        "gone",
    );
    let unknown = cond(
        "BackendSecretFound",
        "Unknown",
        "RepositoryNotAvailable",
        "?",
    );
    let reasons = |old: Option<Vec<_>>, new: Vec<_>| -> Vec<(&'static str, String)> {
        condition_events(old.map(status).as_ref(), &status(new))
            .into_iter()
            .map(|e| (e.reason, e.message))
            .collect()
    };
    // first status: every False condition is news; Unknown and True are not
    assert_eq!(
        reasons(None, vec![refused.clone(), unknown.clone()]),
        [("CronJobCreationFailed", "denied".to_string())]
    );
    // True → False
    assert_eq!(
        reasons(Some(vec![ok.clone()]), vec![refused.clone()]),
        [("CronJobCreationFailed", "denied".to_string())]
    );
    // the same False again: nothing
    assert_eq!(
        reasons(Some(vec![refused.clone()]), vec![refused.clone()]),
        []
    );
    // False with another message: news
    let other = cond(
        "CronJobCreated",
        "False",
        "CronJobCreationFailed",
        "timeout",
    );
    assert_eq!(
        reasons(Some(vec![refused.clone()]), vec![other]),
        [("CronJobCreationFailed", "timeout".to_string())]
    );
    // Unknown → False, and back to True: one event, then none
    assert_eq!(
        reasons(Some(vec![unknown]), vec![no_secret.clone()]),
        [("BackendSecretNotFound", "gone".to_string())]
    );
    assert_eq!(reasons(Some(vec![no_secret]), vec![ok]), []);
    for (t, r) in [
        ("ValidationPassed", "ValidationFailed"),
        ("RepositoryFound", "RepositoryNotFound"),
        ("BackupTargetFound", "BackupTargetNotFound"),
        ("StashSidecarInjected", "SidecarInjectionFailed"),
    ] {
        assert_eq!(failure_reason(t), r);
    }
}

#[test]
fn backend_secret_conditions_name_the_secret_and_what_is_missing() {
    let msg = |secret: BackendSecret| {
        let obs = Observations {
            secret,
            ..all_good()
        };
        let c = conditions(&obs).remove(4);
        assert_eq!(c.type_, "BackendSecretFound");
        (c.status, c.reason.unwrap(), c.message.unwrap())
    };
    let s = || "demo/gcs-secret".to_string();
    assert_eq!(
        msg(BackendSecret::Found(s())),
        (
            "True".into(),
            "BackendSecretAvailable".into(),
            "Backend Secret demo/gcs-secret exists and holds RESTIC_PASSWORD.".into()
        )
    );
    assert_eq!(
        msg(BackendSecret::NoPassword(s())).2,
        "Backend Secret demo/gcs-secret has no key RESTIC_PASSWORD."
    );
    assert_eq!(
        msg(BackendSecret::Missing(s())).2,
        "Backend Secret demo/gcs-secret does not exist."
    );
    assert_eq!(
        msg(BackendSecret::NotNamed("demo/gcs-repo".into())).2,
        "Repository demo/gcs-repo names no backend Secret: set its spec.backend.storageSecretName."
    );
    let unreadable = msg(BackendSecret::Unreadable(
        s(),
        "forbidden (403 Forbidden)".into(),
    ));
    assert_eq!(
        (unreadable.0.as_str(), unreadable.2.as_str()),
        (
            "False",
            "Cannot read backend Secret demo/gcs-secret: forbidden (403 Forbidden)"
        )
    );
    assert_eq!(msg(BackendSecret::NoRepository).0, "Unknown");
}

#[test]
fn paused_condition_records_when_the_pause_began() {
    let paused_at = |st: &stash::api::BackupConfigurationStatus| {
        st.conditions
            .iter()
            .find(|c| c.type_ == "Paused")
            .map(|c| (c.status.clone(), c.last_transition_time.clone().unwrap().0))
    };
    let mut b = bc(json!({}));
    let running = desired_status(&b, &all_good(), ts(100));
    assert_eq!(paused_at(&running), None, "absent while not paused");

    b.spec.paused = true;
    b.status = Some(running.clone());
    let paused = desired_status(&b, &all_good(), ts(200));
    assert_eq!(paused_at(&paused), Some(("True".into(), ts(200))));
    // neither the phase nor a Warning event
    assert_eq!(paused.phase, running.phase);
    assert!(condition_events(Some(&running), &paused).is_empty());

    // a later pass keeps the start of the pause
    b.status = Some(paused.clone());
    let later = desired_status(&b, &all_good(), ts(900));
    assert_eq!(paused_at(&later), Some(("True".into(), ts(200))));

    // resumed: gone; paused again: a new start
    b.spec.paused = false;
    b.status = Some(later);
    let resumed = desired_status(&b, &all_good(), ts(1000));
    assert_eq!(paused_at(&resumed), None);
    b.spec.paused = true;
    b.status = Some(resumed);
    assert_eq!(
        paused_at(&desired_status(&b, &all_good(), ts(1100))),
        Some(("True".into(), ts(1100)))
    );
}
