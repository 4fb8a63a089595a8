//! The fake cluster answers as kube-apiserver does when the install's RBAC
//! or ValidatingAdmissionPolicies refuse a request: 403 Forbidden, worded
//! as the API server words it, and nothing stored.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, WatchParams};
use serde_json::{Value, json};
use stash::settings::Settings;
use stash::store::Snapshot;
use stash_testkit::admission::{self, Status, Write};
use stash_testkit::objects::Target;
use stash_testkit::policy::Policies;
use stash_testkit::{Cluster, Identity, PatchBody};

const DEPLOY: &str = "/apis/apps/v1/namespaces/demo/deployments/app";
const CRONJOB: &str = "/apis/batch/v1/namespaces/demo/cronjobs/stash-backup-bc";

fn deployment() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "app", "namespace": "demo"},
           "spec": {"selector": {"matchLabels": {"app": "app"}},
                    "template": {"metadata": {"labels": {"app": "app"}},
                                 "spec": {"containers": [{"name": "app", "image": "nginx:1"}]}}}})
}

/// The CronJob the reconciler would create for configuration `bc`, running `image`.
fn cronjob(image: &str) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "CronJob",
           "metadata": {"name": "stash-backup-bc", "namespace": "demo"},
           "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
               "serviceAccountName": "stash-backup-bc", "restartPolicy": "Never",
               "containers": [{"name": "stash", "image": image,
                               "args": ["create-backupsession", "--invoker-name=bc"]}]}}}}}})
}

#[test]
fn a_request_rbac_refuses_is_answered_403_and_changes_nothing() {
    let cluster = Cluster::new();
    let stored = cluster.seed(deployment());
    let sidecar = Identity::sidecar("demo", "default");
    let status = cluster
        .patch(
            sidecar,
            DEPLOY,
            PatchBody::Merge(json!({"spec": {"replicas": 0}})),
        )
        .expect_err("the sidecar may not patch a Deployment");
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "deployments.apps \"app\" is forbidden: User \"system:serviceaccount:demo:default\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"demo\""
    );
    assert_eq!(cluster.object(DEPLOY), stored);
    let forbidden = cluster.forbidden_requests();
    assert_eq!(forbidden.len(), 1, "{forbidden:?}");
    assert!(forbidden[0].starts_with("stash-sidecar: deployments.apps \"app\" is forbidden"));
    assert_eq!(cluster.log().last().map(|r| r.code), Some(403));
}

#[tokio::test]
async fn lists_and_watches_rbac_refuses_are_answered_403() {
    let cluster = Cluster::new();
    let client = cluster.client(Identity::cron_job("demo", "bc"));
    let api: Api<Deployment> = Api::namespaced(client, "demo");
    let refused = |e: kube::Error| match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("not an API error: {other}"),
    };
    let (code, message) = refused(api.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, 403);
    assert_eq!(
        message,
        "deployments.apps is forbidden: User \"system:serviceaccount:demo:stash-backup-bc\" cannot list resource \"deployments\" in API group \"apps\" in the namespace \"demo\""
    );
    let watched = api.watch(&WatchParams::default(), "0").await;
    let (code, message) = refused(watched.err().expect("the watch is refused"));
    assert_eq!(code, 403);
    assert!(
        message.contains("cannot watch resource \"deployments\""),
        "{message}"
    );
    assert_eq!(cluster.forbidden_requests().len(), 2);
    assert_eq!(cluster.open_watches(), 0);
}

#[test]
fn a_write_a_policy_denies_is_answered_403_and_stores_nothing() {
    let cluster = Cluster::new();
    let status = cluster
        .create(Identity::reconciler(), cronjob("evil:1"))
        .expect_err("the reconciler may not create a CronJob running another image");
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "cronjobs.batch \"stash-backup-bc\" is forbidden: ValidatingAdmissionPolicy 'stash-webhook-owned' with binding 'stash-webhook-owned' denied request: a stash CronJob runs one container: the stash image's create-backupsession, with its entrypoint, unprivileged, without volume mounts"
    );
    assert_eq!(cluster.get(CRONJOB), None);
    // The policy matches only the server's own requests.
    let image = stash::settings::DEFAULT_IMAGE;
    assert!(cluster.create(Identity::admin(), cronjob("evil:1")).is_ok());
    assert!(cluster.get(CRONJOB).is_some_and(|cj| {
        cj.pointer("/spec/jobTemplate/spec/template/spec/containers/0/image") != Some(&json!(image))
    }));
}

/// A policy on every CronJob write of the server, with `validation`.
fn policy_on_cronjobs(validation: &str) -> Policies {
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["batch"], "apiVersions": ["v1"],
                     "resources": ["cronjobs"], "operations": ["CREATE", "UPDATE"]}]},
                 "validations": [{"expression": validation, "message": "no", "reason": "Forbidden"}]}
    }))
    .expect("a policy");
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": "b"}, "spec": {"policyName": "p", "validationActions": ["Deny"]}
    }))
    .expect("a binding");
    Policies {
        policies: vec![policy],
        bindings: vec![binding],
    }
}

fn admit_cronjob(policies: &Policies) -> Result<Value, Status> {
    let target = Target::parse(CRONJOB).expect("a path");
    let write = Write {
        snap: &Snapshot::default(),
        settings: &Settings::default(),
        policies,
        identity: &Identity::reconciler(),
        target: &target,
        operation: "CREATE",
        old: None,
        dry_run: false,
        serial: 1,
    };
    admission::admit(&write, cronjob("stash:1")).map(|a| a.object)
}

#[test]
fn the_policies_see_the_object_defaulted() {
    let pod = "object.spec.jobTemplate.spec.template.spec";
    let policies = policy_on_cronjobs(&format!(
        "{pod}.serviceAccount == 'stash-backup-bc' && {pod}.containers[0].imagePullPolicy == 'IfNotPresent'"
    ));
    let admitted = admit_cronjob(&policies).expect("admitted once defaulted");
    assert_eq!(
        admitted["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccount"],
        "stash-backup-bc"
    );
}

#[test]
fn a_failed_validation_and_an_evaluation_error_deny() {
    let status = admit_cronjob(&policy_on_cronjobs("false")).expect_err("denied");
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "cronjobs.batch \"stash-backup-bc\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: no"
    );
    let status =
        admit_cronjob(&policy_on_cronjobs("object.spec.nothing.here == 1")).expect_err("denied");
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.starts_with(
            "cronjobs.batch \"stash-backup-bc\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: expression 'object.spec.nothing.here == 1' resulted in error: "
        ),
        "{status:?}"
    );
}
