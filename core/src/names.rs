//! Names and numbers that several install objects, or other modules, must
//! agree on: the Service the webhooks call, the Secret the Deployment mounts,
//! the ClusterRoles the reconciler binds, the ports the probes hit.

/// Default install namespace.
pub const DEFAULT_NAMESPACE: &str = "stash-system";
/// Default replicas of the webhook server.
pub const DEFAULT_REPLICAS: i32 = 2;
/// Where `stash certs --out certs/` writes the CA.
pub const DEFAULT_CA_BUNDLE_FILE: &str = "certs/ca.crt";

/// Name of the Deployment, Service, ServiceAccount, PDB, the server's
/// ClusterRole/Role and their bindings, and both webhook configurations.
pub const SERVICE: &str = "stash-webhook";
/// ClusterRole (and its binding) of the server's writes to workloads, CronJobs,
/// ServiceAccounts and RoleBindings.
pub const WRITER_ROLE: &str = "stash-webhook-writer";
/// Secret of type kubernetes.io/tls holding the serving certificate.
pub const TLS_SECRET: &str = "stash-webhook-tls";
/// Where that Secret is mounted in the server container.
pub const TLS_DIR: &str = "/var/run/stash/tls";

/// ClusterRole bound (by the reconciler) to each backup CronJob's ServiceAccount.
pub const CRON_JOB_ROLE: &str = "stash-cron-job";
/// ClusterRole bound (by the reconciler) to each target workload's ServiceAccount,
/// for the `stash` sidecar and the `stash-init` init container alike.
pub const SIDECAR_ROLE: &str = "stash-sidecar";

/// Container port of the HTTPS webhook listener.
pub const WEBHOOK_PORT: i32 = 8443;
/// Port the Service exposes to the API server.
pub const SERVICE_PORT: i32 = 443;
/// Container port of the plain-HTTP probes and metrics listener.
pub const PROBE_PORT: i32 = 8080;
/// Named ports (at most 15 characters, used by the probes and the Service).
pub const WEBHOOK_PORT_NAME: &str = "https";
pub const PROBE_PORT_NAME: &str = "probes";
/// The webhook Service's port onto the probe port, where `/metrics` is (what
/// the ServiceMonitor of `--monitoring` scrapes).
pub const METRICS_PORT_NAME: &str = "metrics";

/// The non-root user and group of the image (the Dockerfile creates it).
pub const RUN_AS_USER: i64 = 65532;

/// How long `stash serve` drains in-flight requests after SIGTERM
/// (`--drain-timeout`): twice the webhook timeout, after which the API server
/// has given up on any request still open anyway.
pub const DRAIN_SECONDS: i64 = 10;
/// How long the pod keeps serving after it is told to stop, while the
/// endpoint removal reaches every API server (preStop sleep).
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;
/// Grace period: the preStop sleep plus the drain, with room to spare.
pub const TERMINATION_GRACE_SECONDS: i64 = 30;

/// Webhook call timeout: the handlers answer from memory in well under a
/// millisecond, so a slow call means a sick server; give up quickly.
pub const WEBHOOK_TIMEOUT_SECONDS: i32 = 5;

/// Label on every object of the install.
pub const LABEL_NAME: (&str, &str) = ("app.kubernetes.io/name", "stash");
/// Key of the component label, whose value says which part of stash an object
/// belongs to.
pub const LABEL_COMPONENT_KEY: &str = "app.kubernetes.io/component";
/// Label, with [`LABEL_NAME`], on the server's objects; the two select its pods.
pub const LABEL_COMPONENT_WEBHOOK: (&str, &str) = (LABEL_COMPONENT_KEY, "webhook");
/// Label on what the reconciler creates for a BackupConfiguration (its
/// CronJob, ServiceAccount and RoleBindings).
pub const LABEL_COMPONENT_BACKUP: (&str, &str) = (LABEL_COMPONENT_KEY, "stash-backup");

/// Label every namespace carries with its own name (Kubernetes 1.21+), used to
/// keep the webhooks off kube-system and the install namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Downward-API volume with the pod's labels, mounted at [`PODINFO_DIR`].
pub const VOLUME_PODINFO: &str = "stash-podinfo";
/// The Repository's storage Secret, mounted read-only at [`SECRET_DIR`].
pub const VOLUME_SECRET: &str = "stash-secret-volume";
/// The sidecar's scratch emptyDir, mounted at [`TMP_DIR`].
pub const VOLUME_TMP: &str = "tmp-dir";
/// A `local` backend's volume, mounted at the backend's `mountPath`.
pub const VOLUME_LOCAL_BACKEND: &str = "stash-local-backend";
/// Where the pod info is mounted.
pub const PODINFO_DIR: &str = "/etc/stash";
/// Where the storage Secret is mounted (`--secret-dir`).
pub const SECRET_DIR: &str = "/etc/stash/repository/secret";
/// Where the scratch emptyDir is mounted.
pub const TMP_DIR: &str = "/tmp";
/// Every volume name stash owns in a pod template.
pub const OWNED_VOLUMES: [&str; 4] = [
    VOLUME_PODINFO,
    VOLUME_SECRET,
    VOLUME_TMP,
    VOLUME_LOCAL_BACKEND,
];
