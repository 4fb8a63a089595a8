//! Least-privilege RBAC for the three identities that call the API server.
//!
//! - `stash-webhook` (the server and its leader-elected reconciler): reads the
//!   stash kinds, the four workload kinds and what it owns, and writes stash
//!   statuses, finalizers and events (ClusterRole `stash-webhook`, bound
//!   cluster-wide); writes what reaches users' pods and RBAC (workload
//!   patches, CronJobs, their ServiceAccounts, RoleBindings) through
//!   ClusterRole `stash-webhook-writer`, bound cluster-wide or per namespace
//!   (`--namespaces`) and fenced by [`super::policy`]; its Lease lives in a
//!   namespaced Role. It can create RoleBindings to exactly `stash-cron-job` and
//!   `stash-sidecar` (the `bind` verb, by name) without holding their
//!   permissions, and it never reads Secrets: the TLS pair is a volume.
//! - `stash-cron-job` (each backup CronJob's pod, bound per namespace by the
//!   reconciler): reads its BackupConfiguration, creates a BackupSession or
//!   records why not.
//! - `stash-sidecar` (each target workload's ServiceAccount, bound per
//!   namespace): reads the stash kinds, reports status, elects a leader among
//!   replicas, and gets a pod by name to judge a stale restic lock. The
//!   Repository's Secret reaches it as a volume, not via the API.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::names::*;
use super::{Object, Options, metadata, strings};
use crate::api::GROUP;

const READ: &[&str] = &["get", "list", "watch"];
const STATUS_WRITE: &[&str] = &["get", "patch", "update"];
const EVENT_WRITE: &[&str] = &["create", "patch"];
/// kube-lease-manager reads, creates and (strategic-merge) patches its Lease;
/// `update` covers clients that replace it instead.
const LEASE_WRITE: &[&str] = &["get", "create", "update", "patch"];

const STASH_KINDS: &[&str] = &[
    "backupconfigurations",
    "backupsessions",
    "repositories",
    "restoresessions",
];
const STASH_STATUSES: &[&str] = &[
    "backupconfigurations/status",
    "backupsessions/status",
    "repositories/status",
    "restoresessions/status",
];
const WORKLOADS: &[&str] = &["deployments", "statefulsets", "daemonsets", "replicasets"];

fn rule(api_groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(strings(api_groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..PolicyRule::default()
    }
}

/// Events through both APIs: kube-runtime's recorder writes events.k8s.io/v1,
/// `kubectl describe` reads either.
fn event_rules(verbs: &[&str]) -> [PolicyRule; 2] {
    [
        rule(&[""], &["events"], verbs),
        rule(&["events.k8s.io"], &["events"], verbs),
    ]
}

/// Rules of ClusterRole `stash-webhook`, bound cluster-wide: what the store,
/// the webhooks and the reconciler's watches read everywhere, and the writes
/// that only touch stash's own kinds (each line names the code path in
/// docs/install.md's table).
pub fn webhook_read_rules() -> Vec<PolicyRule> {
    vec![
        // The index (`feed`), the BackupSession watch, the GET of an invoker.
        rule(&[GROUP], STASH_KINDS, READ),
        // Finalizers on BackupConfigurations and RestoreSessions (remove the
        // sidecar / the stash-init container on delete), JSON patches.
        rule(
            &[GROUP],
            &["backupconfigurations", "restoresessions"],
            &["patch"],
        ),
        // BackupSession history cleanup (`backup_session::cleanup`).
        rule(&[GROUP], &["backupsessions"], &["delete"]),
        // Merge patches of the statuses the three controllers own (never a
        // GET or PUT of `/status`; Repository status is the sidecar's).
        rule(
            &[GROUP],
            &[
                "backupconfigurations/status",
                "backupsessions/status",
                "restoresessions/status",
            ],
            &["patch"],
        ),
        // The targets: watched cluster-wide, GET before a patch.
        rule(&["apps"], WORKLOADS, READ),
        // `Controller::owns` watches these cluster-wide; `apply::ensure` GETs.
        rule(&["batch"], &["cronjobs"], READ),
        rule(&[""], &["serviceaccounts"], READ),
        rule(&["rbac.authorization.k8s.io"], &["rolebindings"], READ),
        // `recorder::Recorder` posts core/v1 Events, nothing else.
        rule(&[""], &["events"], &["create"]),
        // Condition `BackendSecretFound`: one GET of the Secret a
        // configuration's Repository names (does it hold RESTIC_PASSWORD?).
        // Never list or watch: no Secret is ever enumerated or cached.
        rule(&[""], &["secrets"], &["get"]),
    ]
}

/// Rules of ClusterRole `stash-webhook-writer`: the writes that reach user
/// workloads and RBAC. Bound cluster-wide by default, or by a RoleBinding in
/// each namespace of `stash manifests --namespaces`. The
/// ValidatingAdmissionPolicies of [`super::policy`] fence what these writes
/// may change.
pub fn webhook_write_rules() -> Vec<PolicyRule> {
    vec![
        // Sidecar / stash-init injection and removal: JSON patches only.
        rule(&["apps"], WORKLOADS, &["patch"]),
        // Server-side apply by `apply::ensure` (an apply that creates needs
        // `create`): the CronJobs, their ServiceAccounts, the RoleBindings.
        rule(&["batch"], &["cronjobs"], &["create", "patch"]),
        rule(&[""], &["serviceaccounts"], &["create", "patch"]),
        rule(
            &["rbac.authorization.k8s.io"],
            &["rolebindings"],
            &["create", "patch"],
        ),
        // Bind exactly these two ClusterRoles, without holding their rules.
        PolicyRule {
            api_groups: Some(strings(&["rbac.authorization.k8s.io"])),
            resources: Some(strings(&["clusterroles"])),
            resource_names: Some(strings(&[CRON_JOB_ROLE, SIDECAR_ROLE])),
            verbs: strings(&["bind"]),
            ..PolicyRule::default()
        },
    ]
}

/// Every rule the server's identity holds in a namespace the install covers
/// (both ClusterRoles; the Lease's Role aside).
pub fn webhook_rules() -> Vec<PolicyRule> {
    let mut rules = webhook_read_rules();
    rules.extend(webhook_write_rules());
    rules
}

/// Rules of the namespaced Role `stash-webhook`: the reconciler's Lease.
pub fn webhook_namespaced_rules() -> Vec<PolicyRule> {
    vec![rule(&["coordination.k8s.io"], &["leases"], LEASE_WRITE)]
}

/// Rules of ClusterRole `stash-cron-job`.
pub fn cron_job_rules() -> Vec<PolicyRule> {
    let mut rules = vec![
        rule(&[GROUP], &["backupconfigurations"], &["get"]),
        rule(&[GROUP], &["backupsessions"], &["create"]),
    ];
    rules.extend(event_rules(&["create"]));
    rules
}

/// Rules of ClusterRole `stash-sidecar`.
pub fn sidecar_rules() -> Vec<PolicyRule> {
    let mut rules = vec![
        rule(&[GROUP], STASH_KINDS, READ),
        rule(&[GROUP], STASH_STATUSES, STATUS_WRITE),
        // One leader among a Deployment's or ReplicaSet's replicas.
        rule(&["coordination.k8s.io"], &["leases"], LEASE_WRITE),
        // Whether the pod named in a stale restic lock still exists
        // (`backup::locks::PodLockHolders`): a lock of a gone replica is
        // removed, so backups do not fail "repository is already locked".
        rule(&[""], &["pods"], &["get"]),
    ];
    rules.extend(event_rules(EVENT_WRITE));
    rules
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: metadata(name, None),
        rules: Some(rules),
        ..ClusterRole::default()
    }
}

fn server_subject(options: &Options) -> Subject {
    Subject {
        kind: "ServiceAccount".to_string(),
        name: SERVICE.to_string(),
        namespace: Some(options.namespace.clone()),
        ..Subject::default()
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
    }
}

/// The RBAC objects of the install, roles before their bindings.
pub fn objects(options: &Options) -> Vec<Object> {
    let mut objects = vec![
        Object::ClusterRole(cluster_role(SERVICE, webhook_read_rules())),
        Object::ClusterRole(cluster_role(WRITER_ROLE, webhook_write_rules())),
        Object::ClusterRole(cluster_role(CRON_JOB_ROLE, cron_job_rules())),
        Object::ClusterRole(cluster_role(SIDECAR_ROLE, sidecar_rules())),
        Object::ClusterRoleBinding(ClusterRoleBinding {
            metadata: metadata(SERVICE, None),
            role_ref: role_ref("ClusterRole", SERVICE),
            subjects: Some(vec![server_subject(options)]),
        }),
    ];
    if options.namespaces.is_empty() {
        objects.push(Object::ClusterRoleBinding(ClusterRoleBinding {
            metadata: metadata(WRITER_ROLE, None),
            role_ref: role_ref("ClusterRole", WRITER_ROLE),
            subjects: Some(vec![server_subject(options)]),
        }));
    } else {
        // `--namespaces`: the writes only where stash is allowed to act.
        objects.extend(options.namespaces.iter().map(|ns| {
            Object::RoleBinding(RoleBinding {
                metadata: metadata(WRITER_ROLE, Some(ns)),
                role_ref: role_ref("ClusterRole", WRITER_ROLE),
                subjects: Some(vec![server_subject(options)]),
            })
        }));
    }
    objects.extend([
        Object::Role(Role {
            metadata: metadata(SERVICE, Some(&options.namespace)),
            rules: Some(webhook_namespaced_rules()),
        }),
        Object::RoleBinding(RoleBinding {
            metadata: metadata(SERVICE, Some(&options.namespace)),
            role_ref: role_ref("Role", SERVICE),
            subjects: Some(vec![server_subject(options)]),
        }),
    ]);
    objects
}
