//! The API server's defaulting: what kube-apiserver v1.36 sets on every
//! object it decodes, so what the fake stores is what a real cluster holds.
//!
//! Why: the install's ValidatingAdmissionPolicy `stash-webhook-owned` once
//! forbade the very CronJob stash creates on a real cluster, because the
//! API server had added `serviceAccount` (beside `serviceAccountName`),
//! `terminationMessagePath`, `imagePullPolicy`… to its pod template before
//! validating admission ran, and the policy's allow-list of pod fields did not
//! hold them. A fake that stores objects as they were sent cannot show that.
//!
//! The API server defaults a request's object when it decodes it (create,
//! update, every patch flavour, server-side apply), and decodes it again,
//! with defaulting, after the mutating webhooks' patches: so the fake calls
//! [`apply`] before the mutating webhooks and again after them, before
//! validating admission (see [`super::admission`]). Objects seeded by a test
//! were defaulted when they were written, so [`super::Cluster::seed`]
//! defaults them too.
//!
//! Covered (checked against `tests/fixtures/real-apiserver/installed/`, the
//! objects a v1.36.2 API server stored): the pod template of CronJob, Job,
//! Deployment, StatefulSet, DaemonSet, ReplicaSet, and Pod; each
//! workload's own defaults. Not covered: the other built-in kinds (Service,
//! PVC, …), whose defaults stash never reads or polices, and what admission
//! plugins (ServiceAccount, Priority, DefaultTolerationSeconds) add to Pods.

use serde_json::{Map, Value, json};

/// Defaults `object`, stored as `plural` of API group `group`, in place.
/// Anything that is not one of the covered kinds is left alone.
pub fn apply(group: &str, plural: &str, object: &mut Value) {
    let Some(spec) = object.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    match (group, plural) {
        ("batch", "cronjobs") => cron_job(spec),
        ("batch", "jobs") => job(spec),
        ("apps", "deployments") => deployment(spec),
        ("apps", "statefulsets") => stateful_set(spec),
        ("apps", "daemonsets") => daemon_set(spec),
        ("apps", "replicasets") => replica_set(spec),
        ("", "pods") => pod_spec(spec, RestartDefault::Always, true),
        _ => {}
    }
}

/// Whether a pod spec without `restartPolicy` gets `Always`: a Job's pods
/// must set theirs (`Never` or `OnFailure`), so it is not defaulted there.
#[derive(Clone, Copy, PartialEq)]
enum RestartDefault {
    Always,
    None,
}

/// Sets `map[key]` to `value` when it is absent (or null).
fn default(map: &mut Value, key: &str, value: Value) {
    if let Some(m) = map.as_object_mut()
        && m.get(key).is_none_or(Value::is_null)
    {
        m.insert(key.to_string(), value);
    }
}

/// The object at `map[key]`, created empty when absent.
fn object_at<'a>(map: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    default(map, key, Value::Object(Map::new()));
    map.get_mut(key).filter(|v| v.is_object())
}

fn each(list: Option<&mut Value>, mut f: impl FnMut(&mut Value)) {
    if let Some(items) = list.and_then(Value::as_array_mut) {
        items.iter_mut().for_each(&mut f);
    }
}

fn cron_job(spec: &mut Value) {
    default(spec, "concurrencyPolicy", json!("Allow"));
    default(spec, "suspend", json!(false));
    default(spec, "successfulJobsHistoryLimit", json!(3));
    default(spec, "failedJobsHistoryLimit", json!(1));
    // A CronJob's job template gets only its pod template's defaults: the
    // Job's own (backoffLimit, completions…) are set when the Job is made.
    if let Some(pod) = spec.pointer_mut("/jobTemplate/spec/template/spec") {
        pod_spec(pod, RestartDefault::None, false);
    }
}

fn job(spec: &mut Value) {
    if spec.get("completions").is_none() && spec.get("parallelism").is_none() {
        default(spec, "completions", json!(1));
    }
    default(spec, "parallelism", json!(1));
    default(spec, "backoffLimit", json!(6));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    if spec.get("podFailurePolicy").is_none() {
        default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    }
    template(spec, RestartDefault::None);
}

fn deployment(spec: &mut Value) {
    default(spec, "replicas", json!(1));
    default(spec, "revisionHistoryLimit", json!(10));
    default(spec, "progressDeadlineSeconds", json!(600));
    if let Some(strategy) = object_at(spec, "strategy") {
        default(strategy, "type", json!("RollingUpdate"));
        if strategy["type"] == "RollingUpdate"
            && let Some(rolling) = object_at(strategy, "rollingUpdate")
        {
            default(rolling, "maxUnavailable", json!("25%"));
            default(rolling, "maxSurge", json!("25%"));
        }
    }
    template(spec, RestartDefault::Always);
}

fn stateful_set(spec: &mut Value) {
    default(spec, "replicas", json!(1));
    default(spec, "podManagementPolicy", json!("OrderedReady"));
    default(spec, "revisionHistoryLimit", json!(10));
    if let Some(strategy) = object_at(spec, "updateStrategy") {
        default(strategy, "type", json!("RollingUpdate"));
        if strategy["type"] == "RollingUpdate"
            && let Some(rolling) = object_at(strategy, "rollingUpdate")
        {
            default(rolling, "partition", json!(0));
        }
    }
    if let Some(retention) = object_at(spec, "persistentVolumeClaimRetentionPolicy") {
        default(retention, "whenDeleted", json!("Retain"));
        default(retention, "whenScaled", json!("Retain"));
    }
    each(spec.get_mut("volumeClaimTemplates"), |pvc| {
        if let Some(s) = pvc.get_mut("spec").filter(|s| s.is_object()) {
            default(s, "volumeMode", json!("Filesystem"));
        }
    });
    template(spec, RestartDefault::Always);
}

fn daemon_set(spec: &mut Value) {
    default(spec, "revisionHistoryLimit", json!(10));
    if let Some(strategy) = object_at(spec, "updateStrategy") {
        default(strategy, "type", json!("RollingUpdate"));
        if strategy["type"] == "RollingUpdate"
            && let Some(rolling) = object_at(strategy, "rollingUpdate")
        {
            default(rolling, "maxUnavailable", json!(1));
            default(rolling, "maxSurge", json!(0));
        }
    }
    template(spec, RestartDefault::Always);
}

fn replica_set(spec: &mut Value) {
    default(spec, "replicas", json!(1));
    template(spec, RestartDefault::Always);
}

/// A workload's `spec.template.spec`.
fn template(spec: &mut Value, restart: RestartDefault) {
    if let Some(pod) = spec.pointer_mut("/template/spec").filter(|p| p.is_object()) {
        pod_spec(pod, restart, false);
    }
}

/// `SetDefaults_PodSpec` and the v1 conversion of the service account;
/// `pod` adds what only a Pod (not a template) gets.
fn pod_spec(pod: &mut Value, restart: RestartDefault, is_pod: bool) {
    if !pod.is_object() {
        return;
    }
    default(pod, "dnsPolicy", json!("ClusterFirst"));
    if restart == RestartDefault::Always {
        default(pod, "restartPolicy", json!("Always"));
    }
    default(pod, "schedulerName", json!("default-scheduler"));
    default(pod, "securityContext", json!({}));
    default(pod, "terminationGracePeriodSeconds", json!(30));
    if is_pod {
        default(pod, "enableServiceLinks", json!(true));
    }
    service_account(pod);
    each(pod.get_mut("containers"), container);
    each(pod.get_mut("initContainers"), container);
    each(pod.get_mut("ephemeralContainers"), container);
    each(pod.get_mut("volumes"), volume);
}

/// `serviceAccountName` wins; the deprecated `serviceAccount` mirrors it
/// (the v1 conversion writes both whenever either is set).
fn service_account(pod: &mut Value) {
    let named = |key: &str| {
        pod.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    if let Some(name) = named("serviceAccountName").or_else(|| named("serviceAccount")) {
        pod["serviceAccountName"] = json!(name);
        pod["serviceAccount"] = json!(name);
    }
}

fn container(c: &mut Value) {
    if !c.is_object() {
        return;
    }
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    if let Some(image) = c.get("image").and_then(Value::as_str) {
        let policy = image_pull_policy(image);
        default(c, "imagePullPolicy", json!(policy));
    }
    default(c, "resources", json!({}));
    each(c.get_mut("ports"), |p| default(p, "protocol", json!("TCP")));
    each(c.get_mut("env"), |e| {
        if let Some(field) = e.pointer_mut("/valueFrom/fieldRef") {
            default(field, "apiVersion", json!("v1"));
        }
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).filter(|p| p.is_object()) {
            self::probe(p);
        }
    }
}

/// `Always` for `:latest` or no tag, `IfNotPresent` otherwise (a digest
/// counts as a tag).
pub fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn probe(p: &mut Value) {
    default(p, "timeoutSeconds", json!(1));
    default(p, "periodSeconds", json!(10));
    default(p, "successThreshold", json!(1));
    default(p, "failureThreshold", json!(3));
    if let Some(http) = p.get_mut("httpGet").filter(|h| h.is_object()) {
        default(http, "path", json!("/"));
        default(http, "scheme", json!("HTTP"));
    }
}

fn volume(v: &mut Value) {
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = v.get_mut(source).filter(|s| s.is_object()) {
            default(s, "defaultMode", json!(420));
        }
    }
    each(v.pointer_mut("/downwardAPI/items"), |item| {
        if let Some(field) = item.get_mut("fieldRef").filter(|f| f.is_object()) {
            default(field, "apiVersion", json!("v1"));
        }
    });
    if let Some(h) = v.get_mut("hostPath").filter(|h| h.is_object()) {
        default(h, "type", json!(""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(image_pull_policy("busybox"), "Always");
        assert_eq!(image_pull_policy("busybox:latest"), "Always");
        assert_eq!(image_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(image_pull_policy("registry:5000/stash"), "Always");
        assert_eq!(image_pull_policy("registry:5000/stash:dev"), "IfNotPresent");
        assert_eq!(image_pull_policy("stash@sha256:abcd"), "IfNotPresent");
    }

    #[test]
    fn the_service_account_is_mirrored() {
        let mut pod = json!({"serviceAccountName": "sa", "containers": []});
        pod_spec(&mut pod, RestartDefault::Always, false);
        assert_eq!(pod["serviceAccount"], "sa");
        let mut pod = json!({"serviceAccount": "old", "containers": []});
        pod_spec(&mut pod, RestartDefault::Always, false);
        assert_eq!(pod["serviceAccountName"], "old");
        let mut pod = json!({"containers": []});
        pod_spec(&mut pod, RestartDefault::None, false);
        assert!(pod.get("serviceAccount").is_none());
        assert!(pod.get("restartPolicy").is_none());
    }

    #[test]
    fn defaulting_twice_changes_nothing() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]}]}}}});
        apply("apps", "deployments", &mut d);
        let once = d.clone();
        apply("apps", "deployments", &mut d);
        assert_eq!(d, once);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"],
            "TCP"
        );
    }
}
