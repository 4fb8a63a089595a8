//! Least-privilege RBAC for the three identities that call the API server.
//!
//! - `stash-webhook` (the server and its leader-elected reconciler): reads the
//!   stash kinds and the four workload kinds; writes only what the reconciler
//!   owns (CronJobs, their ServiceAccounts, RoleBindings, workload patches,
//!   stash statuses and finalizers, events); its Lease lives in a namespaced
//!   Role. It can create RoleBindings to exactly `stash-cron-job` and
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
const OWNED_WRITE: &[&str] = &["get", "list", "watch", "create", "patch"];
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

/// Rules of ClusterRole `stash-webhook`.
pub fn webhook_rules() -> Vec<PolicyRule> {
    let mut rules = vec![
        // The store, the controllers and the webhooks' view of the world.
        rule(&[GROUP], STASH_KINDS, READ),
        // Finalizers on BackupConfigurations and RestoreSessions (remove the
        // sidecar / the stash-init container on delete), JSON patches.
        rule(&[GROUP], &["backupconfigurations", "restoresessions"], &["patch"]),
        // BackupSession history cleanup.
        rule(&[GROUP], &["backupsessions"], &["delete"]),
        rule(&[GROUP], STASH_STATUSES, STATUS_WRITE),
        // Sidecar injection and removal by the reconciler: patches only.
        rule(&["apps"], WORKLOADS, &["get", "list", "watch", "patch"]),
        // What the reconciler owns and server-side applies (an apply that
        // creates also needs `create`): the CronJobs, their ServiceAccounts, and
        // the RoleBindings for the CronJobs and the sidecars. Their owner
        // references let the garbage collector delete them.
        rule(&["batch"], &["cronjobs"], OWNED_WRITE),
        rule(&[""], &["serviceaccounts"], OWNED_WRITE),
        rule(
            &["rbac.authorization.k8s.io"],
            &["rolebindings"],
            OWNED_WRITE,
        ),
        // Bind exactly these two ClusterRoles, without holding their rules.
        PolicyRule {
            api_groups: Some(strings(&["rbac.authorization.k8s.io"])),
            resources: Some(strings(&["clusterroles"])),
            resource_names: Some(strings(&[CRON_JOB_ROLE, SIDECAR_ROLE])),
            verbs: strings(&["bind"]),
            ..PolicyRule::default()
        },
    ];
    rules.extend(event_rules(EVENT_WRITE));
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
    vec![
        Object::ClusterRole(cluster_role(SERVICE, webhook_rules())),
        Object::ClusterRole(cluster_role(CRON_JOB_ROLE, cron_job_rules())),
        Object::ClusterRole(cluster_role(SIDECAR_ROLE, sidecar_rules())),
        Object::ClusterRoleBinding(ClusterRoleBinding {
            metadata: metadata(SERVICE, None),
            role_ref: role_ref("ClusterRole", SERVICE),
            subjects: Some(vec![server_subject(options)]),
        }),
        Object::Role(Role {
            metadata: metadata(SERVICE, Some(&options.namespace)),
            rules: Some(webhook_namespaced_rules()),
        }),
        Object::RoleBinding(RoleBinding {
            metadata: metadata(SERVICE, Some(&options.namespace)),
            role_ref: role_ref("Role", SERVICE),
            subjects: Some(vec![server_subject(options)]),
        }),
    ]
}
