//! ValidatingAdmissionPolicies that fence what the server's identity may
//! write with ClusterRole `stash-webhook-writer`: RBAC cannot say "only the
//! stash container", so these policies (evaluated in the API server, not by
//! stash) say it. Each matches only requests whose user is the server's
//! ServiceAccount (`matchConditions`), so nobody else is affected.
//!
//! - `stash-webhook-workloads`: an UPDATE (patches included) of a Deployment,
//!   StatefulSet, DaemonSet or ReplicaSet must leave the object equal to the
//!   old one once the stash parts are taken out of both: the `stash`
//!   container, the `stash-init` init container, the `stash-*` and `tmp-dir`
//!   volumes and the `stash.appscode.com/*` annotations (plus the fields the
//!   API server itself changes: managedFields, resourceVersion, generation,
//!   status). The stash parts themselves must run the stash image, not
//!   privileged, without privilege escalation, adding no capability beyond
//!   [`STASH_CAPABILITIES`] (what `workload::privilege` gives a root
//!   sidecar or `stash-init`, and `DAC_READ_SEARCH` for users who choose
//!   it), and the only stash volume that may be a hostPath is a
//!   Repository's local backend (`stash-local-backend`).
//! - `stash-webhook-owned`: a CronJob, ServiceAccount or RoleBinding it
//!   creates or updates must have the shape `reconcile::desired` builds.
//!
//! The API server evaluates these on the object as it will store it: after
//! its defaulting, which adds fields stash never wrote (`serviceAccount`
//! beside `serviceAccountName`, `terminationMessagePath`, `imagePullPolicy`,
//! `dnsPolicy`, …) and may add more in any release. So no rule here is an
//! allow-list of field names: a workload is compared with its old self
//! (both defaulted alike), and a CronJob is checked for what it runs (image,
//! entrypoint, arguments, identity) and for the fields that would give it
//! the host or other data (a deny-list: volumes, host namespaces, privilege,
//! added capabilities, Windows host processes). Defaulting never sets one of
//! those, so a new default cannot make stash's own writes fail.
//!
//! The CEL is standard CEL only (macros, `has`, `size`, `startsWith`, `in`),
//! so the tests evaluate it with the `cel` crate, on objects defaulted as
//! the API server stores them.

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation, Variable,
};

use super::names::*;
use super::{Object, Options, metadata, strings};

/// Name of the workload policy and its binding.
pub const WORKLOADS_POLICY: &str = "stash-webhook-workloads";
/// Name of the policy (and binding) on CronJobs, ServiceAccounts, RoleBindings.
pub const OWNED_POLICY: &str = "stash-webhook-owned";

/// `s` as a CEL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The server's user name as the API server authenticates it.
pub fn username(options: &Options) -> String {
    format!("system:serviceaccount:{}:{SERVICE}", options.namespace)
}

/// `a` and `b` hold the same fields once keys matching `skip` (a CEL
/// predicate on `k`) are left out. Both are cast to `dyn`: the API server
/// types native objects (ObjectMeta, DeploymentSpec, PodSpec) as CEL objects,
/// which a comprehension may only range over untyped.
fn same_map_except(a: &str, b: &str, skip: &str) -> String {
    let (a, b) = (format!("dyn({a})"), format!("dyn({b})"));
    format!(
        "{a}.filter(k, !({skip})).all(k, k in {b} && {b}[k] == {a}[k]) && {b}.filter(k, !({skip})).all(k, k in {a})"
    )
}

/// `base.field` as an untyped map, `{}` when absent.
fn map_or_empty(base: &str, field: &str) -> String {
    format!("(has({base}.{field}) ? dyn({base}.{field}) : {{}})")
}

/// `base.field` as a list, `[]` when absent.
fn list_or_empty(base: &str, field: &str) -> String {
    format!("(has({base}.{field}) ? {base}.{field} : [])")
}

const STASH_ANNOTATION: &str = "k.startsWith('stash.appscode.com/')";
const STASH_VOLUME: &str = "(v.name.startsWith('stash-') || v.name == 'tmp-dir')";
/// The one stash volume that may be a hostPath: a Repository's `local`
/// backend, whose volume source the Repository's author chose.
const LOCAL_BACKEND_VOLUME: &str = crate::sidecar::VOLUME_LOCAL_BACKEND;

/// `c` (a container) is not privileged, adds no capabilities and is no
/// Windows host process.
fn not_privileged(c: &str) -> String {
    format!(
        "(!has({c}.securityContext) || ((!has({c}.securityContext.privileged) || !{c}.securityContext.privileged) && (!has({c}.securityContext.capabilities) || !has({c}.securityContext.capabilities.add) || size({c}.securityContext.capabilities.add) == 0) && {}))",
        not_host_process(&format!("{c}.securityContext"))
    )
}

/// The capabilities a `stash` or `stash-init` container may add: those
/// `workload::privilege` gives them as root (the sidecar `DAC_OVERRIDE`,
/// `stash-init` `CHOWN`, `DAC_OVERRIDE`, `FOWNER`, `FSETID`) and
/// `DAC_READ_SEARCH`, the read-only subset of `DAC_OVERRIDE`, for a user
/// who sets it in `runtimeSettings` (Pod Security `baseline` does not allow
/// it, so stash never chooses it itself). Nothing that reaches beyond the
/// files of the pod's own volumes (`SYS_ADMIN`, `NET_ADMIN`, `SYS_PTRACE`, …).
pub const STASH_CAPABILITIES: [&str; 5] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
];

/// `c` (a `stash` or `stash-init` container) is not privileged, does not
/// allow privilege escalation, adds only [`STASH_CAPABILITIES`] (with or
/// without the `CAP_` prefix, as the runtime accepts both) and is no Windows
/// host process.
fn stash_unprivileged(c: &str) -> String {
    let sc = format!("{c}.securityContext");
    let allowed = STASH_CAPABILITIES
        .iter()
        .flat_map(|cap| [lit(cap), lit(&format!("CAP_{cap}"))])
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "(!has({sc}) || ({} && {} && (!has({sc}.capabilities) || !has({sc}.capabilities.add) || {sc}.capabilities.add.all(a, a in [{allowed}])) && {}))",
        not_set(&sc, "privileged"),
        not_set(&sc, "allowPrivilegeEscalation"),
        not_host_process(&sc)
    )
}

/// `sc` (a securityContext known to exist) asks for no Windows host process.
fn not_host_process(sc: &str) -> String {
    format!(
        "(!has({sc}.windowsOptions) || !has({sc}.windowsOptions.hostProcess) || !{sc}.windowsOptions.hostProcess)"
    )
}

/// `field` of `base` is absent or false.
fn not_set(base: &str, field: &str) -> String {
    format!("(!has({base}.{field}) || !{base}.{field})")
}

/// `field` of `base` is absent or an empty list.
fn none(base: &str, field: &str) -> String {
    format!("(!has({base}.{field}) || size({base}.{field}) == 0)")
}

fn validation(expression: String, message: &str) -> Validation {
    Validation {
        expression,
        message: Some(message.to_string()),
        reason: Some("Forbidden".to_string()),
        ..Validation::default()
    }
}

fn variable(name: &str, expression: String) -> Variable {
    Variable {
        name: name.to_string(),
        expression,
    }
}

fn match_conditions(options: &Options) -> Vec<MatchCondition> {
    vec![MatchCondition {
        name: "stash-webhook-only".to_string(),
        expression: format!("request.userInfo.username == {}", lit(&username(options))),
    }]
}

fn resource_rule(group: &str, resources: &[&str], operations: &[&str]) -> NamedRuleWithOperations {
    NamedRuleWithOperations {
        api_groups: Some(strings(&[group])),
        api_versions: Some(strings(&["v1"])),
        resources: Some(strings(resources)),
        operations: Some(strings(operations)),
        scope: Some("Namespaced".to_string()),
        ..NamedRuleWithOperations::default()
    }
}

/// Variables of the workload policy, in evaluation order.
pub fn workload_variables() -> Vec<Variable> {
    vec![
        variable("new", "object.spec.template".into()),
        variable("old", "oldObject.spec.template".into()),
        variable("newPod", "variables.new.spec".into()),
        variable("oldPod", "variables.old.spec".into()),
        variable("newVolumes", list_or_empty("variables.newPod", "volumes")),
        variable("oldVolumes", list_or_empty("variables.oldPod", "volumes")),
    ]
}

/// Validations of the workload policy.
pub fn workload_validations(options: &Options) -> Vec<Validation> {
    [
        workload_object_validations(),
        pod_template_validations(),
        pod_part_validations(),
        stash_container_validations(options),
    ]
    .concat()
}

/// The workload's own metadata and spec: only stash's annotations and the
/// pod template may change.
fn workload_object_validations() -> Vec<Validation> {
    vec![
        validation(
            same_map_except(
                "object.metadata",
                "oldObject.metadata",
                "k in ['annotations', 'managedFields', 'resourceVersion', 'generation']",
            ),
            "stash may change no metadata of a workload but its stash.appscode.com/ annotations",
        ),
        validation(
            same_map_except(
                &map_or_empty("object.metadata", "annotations"),
                &map_or_empty("oldObject.metadata", "annotations"),
                STASH_ANNOTATION,
            ),
            "stash may change only the stash.appscode.com/ annotations of a workload",
        ),
        validation(
            same_map_except("object.spec", "oldObject.spec", "k == 'template'"),
            "stash may change only the pod template of a workload",
        ),
    ]
}

/// The pod template's metadata and pod spec: only stash's annotations, the
/// containers, init containers and volumes may change.
fn pod_template_validations() -> Vec<Validation> {
    vec![
        validation(
            format!(
                "{} && {}",
                same_map_except(
                    &map_or_empty("variables.new", "metadata"),
                    &map_or_empty("variables.old", "metadata"),
                    "k == 'annotations'",
                ),
                same_map_except(
                    &map_or_empty(&map_or_empty("variables.new", "metadata"), "annotations"),
                    &map_or_empty(&map_or_empty("variables.old", "metadata"), "annotations"),
                    STASH_ANNOTATION,
                ),
            ),
            "stash may change only the stash.appscode.com/ annotations of a pod template",
        ),
        validation(
            same_map_except(
                "variables.newPod",
                "variables.oldPod",
                "k in ['containers', 'initContainers', 'volumes']",
            ),
            "stash may change only containers, init containers and volumes of a pod template",
        ),
    ]
}

/// The containers, init containers and volumes: only stash's own may change.
fn pod_part_validations() -> Vec<Validation> {
    vec![
        validation(
            "variables.newPod.containers.filter(c, c.name != 'stash') == variables.oldPod.containers.filter(c, c.name != 'stash')".into(),
            "stash may add, change or remove only the container named stash",
        ),
        validation(
            format!(
                "{}.filter(c, c.name != 'stash-init') == {}.filter(c, c.name != 'stash-init')",
                list_or_empty("variables.newPod", "initContainers"),
                list_or_empty("variables.oldPod", "initContainers"),
            ),
            "stash may add, change or remove only the init container named stash-init",
        ),
        validation(
            format!(
                "variables.newVolumes.filter(v, !{STASH_VOLUME}) == variables.oldVolumes.filter(v, !{STASH_VOLUME})"
            ),
            "stash may add, change or remove only the stash-* and tmp-dir volumes",
        ),
    ]
}

/// stash's own containers and volumes: the stash image, unprivileged; a
/// hostPath only for a local backend.
fn stash_container_validations(options: &Options) -> Vec<Validation> {
    let image = lit(&options.image);
    let stash_containers = format!(
        "variables.newPod.containers.filter(c, c.name == 'stash') + {}.filter(c, c.name == 'stash-init')",
        list_or_empty("variables.newPod", "initContainers")
    );
    vec![
        validation(
            format!(
                "({stash_containers}).all(c, c.image == {image} && !has(c.command) && {})",
                stash_unprivileged("c")
            ),
            "the stash and stash-init containers run the stash image, with its entrypoint, unprivileged: no privilege escalation, no capability added but CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER, FSETID",
        ),
        validation(
            format!(
                "variables.newVolumes.filter(v, {STASH_VOLUME} && has(v.hostPath)).all(v, v.name == {})",
                lit(LOCAL_BACKEND_VOLUME)
            ),
            "the only stash volume that may be a hostPath is a Repository's local backend (stash-local-backend)",
        ),
    ]
}

/// Validations of the policy on what the reconciler owns.
pub fn owned_validations(options: &Options) -> Vec<Validation> {
    let image = lit(&options.image);
    let pod = "object.spec.jobTemplate.spec.template.spec";
    let for_cronjobs =
        |rule: String| format!("request.resource.resource != 'cronjobs' || ({rule})");
    vec![
        validation(
            for_cronjobs(format!(
                "object.metadata.name.startsWith('stash-backup-') && has({pod}.serviceAccountName) && {pod}.serviceAccountName == object.metadata.name && (!has({pod}.serviceAccount) || {pod}.serviceAccount == object.metadata.name)"
            )),
            "stash creates only CronJobs named stash-backup-* that run as their own ServiceAccount",
        ),
        validation(
            for_cronjobs(format!(
                "size({pod}.containers) == 1 && {pod}.containers.all(c, c.image == {image} && !has(c.command) && has(c.args) && size(c.args) > 0 && c.args[0] == 'create-backupsession' && {} && {} && {})",
                none("c", "volumeMounts"),
                none("c", "volumeDevices"),
                not_privileged("c")
            )),
            "a stash CronJob runs one container: the stash image's create-backupsession, with its entrypoint, unprivileged, without volume mounts",
        ),
        validation(
            for_cronjobs(format!(
                "{} && {} && {} && {} && {} && {} && (!has({pod}.securityContext) || {})",
                none(pod, "volumes"),
                none(pod, "initContainers"),
                none(pod, "ephemeralContainers"),
                not_set(pod, "hostNetwork"),
                not_set(pod, "hostPID"),
                not_set(pod, "hostIPC"),
                not_host_process(&format!("{pod}.securityContext"))
            )),
            "a stash CronJob's pod has no volumes, init or ephemeral containers, host namespaces or Windows host process",
        ),
        validation(
            "request.resource.resource != 'serviceaccounts' || object.metadata.name.startsWith('stash-backup-')".into(),
            "stash creates only ServiceAccounts named stash-backup-*",
        ),
        validation(
            format!(
                "request.resource.resource != 'rolebindings' || (object.roleRef.apiGroup == 'rbac.authorization.k8s.io' && object.roleRef.kind == 'ClusterRole' && ((object.roleRef.name == {cron} && object.metadata.name.startsWith('stash-backup-')) || (object.roleRef.name == {sidecar} && (object.metadata.name.startsWith('stash-sidecar-') || object.metadata.name.startsWith('stash-restore-')))) && has(object.subjects) && object.subjects.all(s, s.kind == 'ServiceAccount' && has(s.namespace) && s.namespace == object.metadata.namespace))",
                cron = lit(CRON_JOB_ROLE),
                sidecar = lit(SIDECAR_ROLE),
            ),
            "stash creates only RoleBindings of its own ServiceAccounts in their namespace to stash-cron-job (stash-backup-*) or stash-sidecar (stash-sidecar-*, stash-restore-*)",
        ),
    ]
}

/// ValidatingAdmissionPolicy `stash-webhook-workloads`.
pub fn workloads(options: &Options) -> ValidatingAdmissionPolicy {
    ValidatingAdmissionPolicy {
        metadata: metadata(WORKLOADS_POLICY, None),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_string()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![resource_rule(
                    "apps",
                    &["deployments", "statefulsets", "daemonsets", "replicasets"],
                    &["UPDATE"],
                )]),
                ..MatchResources::default()
            }),
            match_conditions: Some(match_conditions(options)),
            variables: Some(workload_variables()),
            validations: Some(workload_validations(options)),
            ..ValidatingAdmissionPolicySpec::default()
        }),
        status: None,
    }
}

/// ValidatingAdmissionPolicy `stash-webhook-owned`.
pub fn owned(options: &Options) -> ValidatingAdmissionPolicy {
    ValidatingAdmissionPolicy {
        metadata: metadata(OWNED_POLICY, None),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_string()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![
                    resource_rule("batch", &["cronjobs"], &["CREATE", "UPDATE"]),
                    resource_rule("", &["serviceaccounts"], &["CREATE", "UPDATE"]),
                    resource_rule(
                        "rbac.authorization.k8s.io",
                        &["rolebindings"],
                        &["CREATE", "UPDATE"],
                    ),
                ]),
                ..MatchResources::default()
            }),
            match_conditions: Some(match_conditions(options)),
            validations: Some(owned_validations(options)),
            ..ValidatingAdmissionPolicySpec::default()
        }),
        status: None,
    }
}

fn binding(policy: &str) -> ValidatingAdmissionPolicyBinding {
    ValidatingAdmissionPolicyBinding {
        metadata: metadata(policy, None),
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(policy.to_string()),
            validation_actions: Some(strings(&["Deny"])),
            ..ValidatingAdmissionPolicyBindingSpec::default()
        }),
    }
}

/// The two policies and their bindings (every namespace: the policies only
/// ever match the server's own requests).
pub fn objects(options: &Options) -> Vec<Object> {
    vec![
        Object::ValidatingAdmissionPolicy(workloads(options)),
        Object::ValidatingAdmissionPolicyBinding(binding(WORKLOADS_POLICY)),
        Object::ValidatingAdmissionPolicy(owned(options)),
        Object::ValidatingAdmissionPolicyBinding(binding(OWNED_POLICY)),
    ]
}
