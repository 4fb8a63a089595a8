//! The user's guide (`docs/guide/pause-backup.md`, "Configure Backup" through
//! "Resume Backup") as one end-to-end test.
//!
//! There is no cluster here, so the test plays the parts Kubernetes plays and
//! calls the real library for every part stash plays:
//! - the API server is the fake cluster of `tests/support` (objects by URL
//!   path; every request is logged with the identity that made it);
//! - every write — `kubectl apply/patch/create` and the library's own —
//!   goes through the webhooks the install registers
//!   (`stash::admission::handle`, with a store snapshot read from the fake,
//!   as the webhook's informers would) and the admitted object is stored;
//! - the kubelet starts the injected `stash` container: its args are parsed
//!   by `run-backup`'s own command line and its own volumes are laid out in
//!   a temp dir by the testkit's kubelet (`Mounts::lay_out`: the storage
//!   Secret's keys become files);
//! - the CronJob's pod is `stash::trigger::trigger`; the reconciler's watches
//!   are explicit calls of the two `reconcile_at` functions; the sidecar's
//!   watch is an explicit `Sidecar::handle` of the session.
//!
//! restic is real and backs up into a local repository in the temp dir. The
//! only edits to the guide's YAML: the Repository (and the backed-up path)
//! point into the temp dir, because the sidecar runs on this machine, not in a
//! pod with those volumes mounted.
//!
//! Every request is made by the identity that would make it (CronJob pod,
//! reconciler, sidecar: each its own client) and refused with 403 when that
//! identity's ClusterRole, as `stash manifests` renders it, does not allow
//! it; every write is defaulted as kube-apiserver defaults it and must pass
//! the install's ValidatingAdmissionPolicies (a real API server once refused
//! the reconciler's CronJob there). Besides the guide's walk
//! (`pause_backup_guide_end_to_end`), three tests take the turns the guide
//! does not: its real order (Deployment before configuration), a pause while
//! a session runs, and the sidecar seeing a paused session first.
//!
//! The guide's names, YAMLs, printed columns, events and the order of its
//! sections are the testkit's (`stash_testkit::guide`), shared with the
//! real-cluster walk of `tests/e2e_cluster`; this file has the fake
//! cluster's mechanics (`PauseBackupGuide` for `Walk`).

use stash_testkit as support;

use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use kube::api::Api;
use serde_json::{Value, json};

use stash::api::events::COMPONENT_CRONJOB;
use stash::api::{BackupConfiguration, BackupSession, BackupSessionPhase, Repository};
use stash::backup::LockHolders;
use stash::backup::controller::{Handled, Sidecar};
use stash::backup::locks::PodLockHolders;
use stash::backup::metrics::Metrics;
use stash::reconcile::{backup_configuration, backup_session};
use stash::recorder::Recorder;
use stash::settings::Settings;
use stash::trigger::{Outcome, trigger};
use support::guide::{
    self, Mounts, NS, PauseBackupGuide, Pod, cols, configuration_columns, container_names,
    printed_columns, session_columns, wide_columns,
};
use support::{Identity, PatchBody};

const BC: &str =
    "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupconfigurations/pause-backup";
const REPO: &str = "/apis/stash.appscode.com/v1alpha1/namespaces/demo/repositories/gcs-repo";
const SECRET: &str = "/api/v1/namespaces/demo/secrets/gcs-secret";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/demo/deployments";
const DEPLOY: &str = "/apis/apps/v1/namespaces/demo/deployments/stash-demo";
const PVCS: &str = "/api/v1/namespaces/demo/persistentvolumeclaims";
const CRONJOB: &str = "/apis/batch/v1/namespaces/demo/cronjobs/stash-backup-pause-backup";
const SESSIONS: &str = "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupsessions";
/// The reconciler's and the sidecar's image.
const IMAGE: &str = "stash:guide";

/// The fake cluster of `tests/support`, the temp dir the "pod" sees, the
/// webhooks' settings.
struct Cluster {
    k: support::Cluster,
    dir: tempfile::TempDir,
    settings: Settings,
}

impl Cluster {
    fn start() -> Self {
        let settings = Settings {
            image: IMAGE.into(),
            ..Settings::default()
        };
        Self {
            k: support::Cluster::with_settings(settings.clone()),
            dir: tempfile::tempdir().expect("temp dir"),
            settings,
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn get(&self, path: &str) -> Value {
        self.k.object(path)
    }

    fn typed<K: serde::de::DeserializeOwned>(&self, path: &str) -> K {
        self.k.typed(path)
    }

    fn paths_under(&self, prefix: &str) -> Vec<String> {
        self.k.paths_under(prefix)
    }

    /// How many requests have been made so far.
    fn mark(&self) -> usize {
        self.k.mark()
    }

    /// The writes (method, path) made since `mark`.
    fn writes_since(&self, mark: usize) -> Vec<(String, String)> {
        self.k.writes_since(mark)
    }

    /// Every request, with the ClusterRole of the identity that made it, that
    /// the install's RBAC refused (answered 403).
    fn forbidden_requests(&self) -> Vec<String> {
        self.k.forbidden_requests()
    }

    /// A client for the reconciler in `stash serve`.
    fn reconciler(&self) -> kube::Client {
        self.k.client(Identity::reconciler())
    }

    /// A client for the injected sidecar (the Deployment's ServiceAccount).
    fn sidecar_client(&self) -> kube::Client {
        self.k.client(Identity::sidecar(NS, "default"))
    }

    /// The API server's admission chain for one request, as `kubectl` would
    /// make it: the webhooks registered for the object's kind, mutating
    /// first. Returns the admitted object and the warnings `kubectl` prints.
    fn admit(&self, operation: &str, object: Value, old: Option<Value>) -> (Value, Vec<String>) {
        let admitted = self
            .k
            .admit(Identity::admin(), operation, object, old)
            .unwrap_or_else(|e| panic!("refused: {e:?}"));
        (admitted.object, admitted.warnings)
    }

    /// `kubectl create`/`apply` of a new object: admission, then stored as the API server stores it.
    fn kubectl_create(&self, collection: &str, object: Value) -> Vec<String> {
        let written = self
            .k
            .create(Identity::admin(), object)
            .unwrap_or_else(|e| panic!("refused: {e:?}"));
        let path = support::objects::path_of(&written.object);
        assert!(path.starts_with(&format!("{collection}/")), "{path}");
        written.warnings
    }

    /// `kubectl patch backupconfiguration -n demo pause-backup --type=merge --patch=…`.
    async fn kubectl_patch_config(&self, patch: Value) {
        let written = self
            .k
            .patch(Identity::admin(), BC, PatchBody::Merge(patch))
            .expect("backupconfiguration.stash.appscode.com/pause-backup patched");
        assert!(written.warnings.is_empty(), "{:?}", written.warnings);
    }

    /// The BackupConfiguration controller's context, its cache fed from the fake.
    fn config_context(&self) -> backup_configuration::Context {
        backup_configuration::Context::new(
            self.reconciler(),
            IMAGE.into(),
            self.settings.clone(),
            self.k.index(),
        )
    }

    /// One BackupConfiguration reconcile, as its watch would trigger it
    /// (after a pass that only added the finalizer, the pass that change
    /// triggers too).
    async fn reconcile_config(&self) {
        self.k
            .reconcile_configuration(BC, &self.config_context())
            .await;
    }

    /// One BackupSession reconcile, as its watch would trigger it.
    async fn reconcile_session(&self, name: &str) -> BackupSession {
        let path = format!("{SESSIONS}/{name}");
        let session: BackupSession = self.typed(&path);
        let ctx = backup_session::Context::new(self.reconciler());
        backup_session::reconcile_at(&session, &ctx, jiff::Timestamp::now())
            .await
            .expect("BackupSession reconcile");
        self.typed(&path)
    }

    /// "Configure Backup": the guide's Secret, Repository (on a local
    /// backend in the temp dir), BackupConfiguration (its path where the
    /// data is here), PVC and Deployment, each through admission; the data
    /// the Deployment's busybox writes into the PVC.
    fn apply_guide_objects(&self) {
        self.apply_storage_and_configuration();
        self.apply_deployment();
    }

    /// The guide's Secret, Repository and BackupConfiguration (and the data).
    fn apply_storage_and_configuration(&self) {
        std::fs::create_dir_all(self.p("repo")).unwrap();
        let data = self.p("source/data");
        guide::write_guide_data(&data);

        // $ kubectl create secret generic -n demo gcs-secret --from-file=./RESTIC_PASSWORD …
        self.kubectl_create("/api/v1/namespaces/demo/secrets", guide::secret(NS));
        assert!(self.k.get(SECRET).is_some());
        // $ kubectl apply -f repository.yaml — the guide's gcs-repo, on a local backend.
        let warnings = self.kubectl_create(
            "/apis/stash.appscode.com/v1alpha1/namespaces/demo/repositories",
            guide::repository_on(NS, &self.p("repo")),
        );
        // The one deviation from the guide has its own warning.
        guide::assert_repository_warning(&warnings, NS);
        // $ kubectl apply -f backupconfiguration.yaml
        let warnings = self.kubectl_create(
            "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupconfigurations",
            guide::configuration_on(NS, &data),
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    /// `kubectl apply -f deployment.yaml` (the PVC and the Deployment).
    fn apply_deployment(&self) {
        // $ kubectl apply -f deployment.yaml
        let (pvc, deployment) = guide::pvc_and_deployment(NS);
        assert!(self.kubectl_create(PVCS, pvc).is_empty());
        let warnings = self.kubectl_create(DEPLOYMENTS, deployment);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    /// The backup CronJob fires at `at`: its pod's args go through
    /// `create-backupsession`'s own command line (the namespace from the
    /// downward API, as the CronJob's env says) and run the trigger.
    async fn cron_fires(&self, at: jiff::Timestamp) -> Outcome {
        let cron = self.get(CRONJOB);
        let container = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        let pod = format!("stash-backup-pause-backup-{}-x7k2p", at.as_second() / 60);
        let args: Vec<String> = guide::args(container)
            .into_iter()
            .chain(downward_api(
                &CreateBackupSession::command(),
                &container["env"],
                &pod,
            ))
            .collect();
        assert!(
            args.contains(&format!("--namespace={NS}")),
            "the CronJob passes its namespace: {args:?}"
        );
        let parsed = CreateBackupSession::try_parse_from(&args).unwrap_or_else(|e| {
            panic!("create-backupsession refuses the CronJob's args {args:?}: {e}")
        });
        let a = parsed.args;
        // The CronJob's pod runs as its own ServiceAccount.
        let client = self.k.client(Identity::cron_job(NS, &a.invoker_name));
        let recorder = Recorder::new(client.clone(), COMPONENT_CRONJOB);
        trigger(
            client,
            &recorder,
            a.namespace.as_deref().unwrap(),
            &a.invoker_kind,
            &a.invoker_name,
            at,
        )
        .await
        .expect("the CronJob's pod succeeds")
    }

    /// The kubelet starting the Deployment's `stash` container: its args go
    /// through `run-backup`'s own command line, the downward API supplies
    /// the pod's namespace, name and node, and its own volumes are laid out
    /// in the temp dir by the testkit's kubelet ([`Mounts::lay_out`]: the
    /// storage Secret's keys as files, the scratch emptyDir a directory).
    fn start_sidecar(&self, pod_name: &str) -> Sidecar {
        let deploy = self.get(DEPLOY);
        let pod = &deploy["spec"]["template"]["spec"];
        let container = guide::container(pod, "stash");
        let mounts = Mounts::of(pod, container);
        let secret = guide::fake_mounted_secret(&self.k, &mounts);
        let dirs = mounts.lay_out(&self.p("pod"), &secret);

        let args: Vec<String> = dirs
            .args(guide::args(container))
            .into_iter()
            .chain(downward_api(
                &RunBackup::command(),
                &container["env"],
                pod_name,
            ))
            .chain(["--metrics-listen=off".to_string()])
            .collect();
        for want in [
            format!("--namespace={NS}"),
            format!("--pod-name={pod_name}"),
            "--node-name=node-1".into(),
        ] {
            assert!(args.contains(&want), "the sidecar gets {want}: {args:?}");
        }
        let parsed = RunBackup::try_parse_from(&args)
            .unwrap_or_else(|e| panic!("run-backup refuses the injected args {args:?}: {e}"));
        stash::backup::sidecar(&parsed.args, self.sidecar_client(), Metrics::new(), None)
            .expect("run-backup starts")
    }

    /// The sidecar's watch delivering `session`.
    async fn sidecar_sees(&self, sidecar: &Sidecar, session: &BackupSession) -> Handled {
        sidecar
            .handle(session)
            .await
            .expect("the sidecar handles the session")
    }

    /// `restic snapshots` on the local repository, with the Secret's password.
    fn restic_snapshots(&self) -> Vec<Value> {
        guide::restic_snapshots(&self.p("repo"))
    }
}

/// `create-backupsession`'s command line, exactly as `stash` parses it.
#[derive(clap::Parser)]
struct CreateBackupSession {
    #[command(flatten)]
    args: stash::trigger::Args,
}

/// `run-backup`'s command line, exactly as `stash` parses it.
#[derive(clap::Parser)]
struct RunBackup {
    #[command(flatten)]
    args: stash::backup::Args,
}

/// The kubelet's downward API for a container's `env` (pod `pod` in `demo`
/// on `node-1`), handed to `command` the way it reads it: each variable is
/// the environment source of one of its flags, passed here as that flag
/// (the test cannot set this process's environment). A variable the command
/// does not read, or a field the test does not know, fails the test.
fn downward_api(command: &clap::Command, env: &Value, pod: &str) -> Vec<String> {
    let pod = Pod {
        namespace: NS,
        name: pod,
        node: "node-1",
    };
    pod.env_as_flags(env, |name| {
        command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name))
            .and_then(|a| a.get_long())
            .map(String::from)
    })
}

/// The guide's walk on the fake cluster: the cluster and what one section
/// leaves for the next.
struct Walk {
    c: Cluster,
    /// When the schedule first fires.
    t0: jiff::Timestamp,
    sidecar: Option<Sidecar>,
    /// The CronJob and the Deployment before the pause.
    cron_before: Value,
    deploy_before: Value,
}

impl Walk {
    fn sidecar(&self) -> &Sidecar {
        self.sidecar.as_ref().expect("the sidecar started")
    }
}

impl PauseBackupGuide for Walk {
    /// The guide's objects, each through admission.
    async fn configure_backup(&mut self) {
        self.c.apply_guide_objects();
    }

    /// The workload webhook injected it at CREATE: "It now has 2 containers
    /// … a container named stash which is running run-backup".
    async fn verify_sidecar(&mut self) {
        let deploy = self.c.get(DEPLOY);
        let template = &deploy["spec"]["template"];
        assert_eq!(container_names(template), ["busybox", "stash"]);
        let sidecar_args = &template["spec"]["containers"][1]["args"];
        assert_eq!(sidecar_args[0], "run-backup");
        assert_eq!(template["spec"]["containers"][1]["image"], IMAGE);
        assert_eq!(
            deploy["metadata"]["annotations"][guide::LAST_APPLIED_CONFIGURATION],
            guide::BC
        );
    }

    /// The BackupConfiguration reconcile.
    async fn verify_cronjob(&mut self) {
        let c = &self.c;
        let mark = c.mark();
        c.reconcile_config().await;
        // The webhook and the reconciler agree on the sidecar: no workload write.
        let rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/demo/rolebindings";
        assert_eq!(
            c.writes_since(mark),
            [
                BC.to_string(), // the finalizer
                "/api/v1/namespaces/demo/serviceaccounts/stash-backup-pause-backup".into(),
                format!("{rbac}/stash-backup-pause-backup"),
                CRONJOB.into(),
                format!("{rbac}/stash-sidecar-deployment-stash-demo"),
                format!("{BC}/status"),
            ]
            .map(|p| ("PATCH".to_string(), p))
        );
        let cron = c.get(CRONJOB);
        assert_eq!(cron["spec"]["schedule"], guide::SCHEDULE);
        let job_container =
            &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(job_container["args"], guide::cronjob_args());
        let bc_now = c.get(BC);
        assert_eq!(bc_now["metadata"]["finalizers"], json!([guide::FINALIZER]));
        assert_eq!(guide::conditions(&bc_now), guide::ready_conditions());
        // $ kubectl get backupconfiguration -n demo
        assert_eq!(
            printed_columns::<BackupConfiguration>(&c.get(BC)),
            configuration_columns("")
        );
        // $ kubectl get backupconfiguration -n demo -o wide
        let mut wide = configuration_columns("");
        wide.extend(cols(&[("PHASE", "Ready")]));
        assert_eq!(wide_columns::<BackupConfiguration>(&c.get(BC)), wide);
        // Its own writes re-trigger it; the second pass writes nothing.
        let mark = c.mark();
        c.reconcile_config().await;
        assert_eq!(c.writes_since(mark), [] as [(String, String); 0]);
    }

    async fn backup_succeeds(&mut self) {
        let outcome = self.c.cron_fires(self.t0).await;
        assert_eq!(outcome, Outcome::Created("pause-backup-1564659789".into()));
        let c = &self.c;

        let running = c.reconcile_session("pause-backup-1564659789").await;
        let status = running.status.clone().unwrap();
        assert_eq!(status.phase, Some(BackupSessionPhase::Running));
        assert_eq!(status.total_hosts, Some(1));

        let sidecar = c.start_sidecar("stash-demo-7489fcb7f5-jctj4");
        let handled = c.sidecar_sees(&sidecar, &running).await;
        let Handled::BackedUp(outcome) = handled else {
            panic!("expected a backup, got {handled:?}")
        };
        assert!(outcome.succeeded(), "{:?}", outcome.stats.error);

        let done = c.reconcile_session("pause-backup-1564659789").await;
        let status = done.status.clone().unwrap();
        assert_eq!(status.phase, Some(BackupSessionPhase::Succeeded));
        let snapshots = c.restic_snapshots();
        assert_eq!(snapshots.len(), 1);
        assert_eq!(status.stats.len(), 1);
        assert_eq!(status.stats[0].hostname, guide::HOST);
        assert_eq!(
            status.stats[0].snapshots[0].name,
            snapshots[0]["short_id"].as_str().unwrap(),
            "the session names restic's snapshot"
        );
        let repository: Repository = c.typed(REPO);
        assert_eq!(repository.status.unwrap().snapshot_count, Some(1));
        // $ kubectl get backupsession -n demo
        assert_eq!(
            printed_columns::<BackupSession>(
                &c.get(&format!("{SESSIONS}/pause-backup-1564659789"))
            ),
            session_columns("Succeeded")
        );
        self.sidecar = Some(sidecar);
    }

    /// $ kubectl patch backupconfiguration -n demo pause-backup --type="merge" --patch='{"spec": {"paused": true}}'
    async fn pause(&mut self) {
        let c = &self.c;
        self.cron_before = c.get(CRONJOB);
        self.deploy_before = c.get(DEPLOY);
        c.kubectl_patch_config(json!({"spec": {"paused": true}}))
            .await;
        assert_eq!(c.get(BC)["metadata"]["generation"], 2);
        assert_eq!(
            printed_columns::<BackupConfiguration>(&c.get(BC)),
            configuration_columns("true")
        );
        let mark = c.mark();
        c.reconcile_config().await;
        assert_eq!(
            c.writes_since(mark),
            [("PATCH".to_string(), format!("{BC}/status"))],
            "pausing writes nothing but the configuration's status"
        );
        assert_eq!(c.get(BC)["status"]["observedGeneration"], 2);
        assert_eq!(c.get(CRONJOB), self.cron_before, "the CronJob stays");
        assert_eq!(
            c.get(DEPLOY),
            self.deploy_before,
            "the sidecar stays: no restart"
        );
    }

    async fn scheduled_backup_skipped(&mut self) {
        let c = &self.c;
        let sessions_before = c.paths_under(&format!("{SESSIONS}/"));
        let outcome = c
            .cron_fires(
                self.t0
                    .checked_add(jiff::SignedDuration::from_secs(300))
                    .unwrap(),
            )
            .await;
        assert_eq!(outcome, Outcome::Skipped);
        assert_eq!(
            c.paths_under(&format!("{SESSIONS}/")),
            sessions_before,
            "no new BackupSession"
        );
        assert_eq!(
            guide::fake_events(&c.k, "BackupConfiguration", guide::BC),
            [guide::backup_skipped_event(NS)]
        );
    }

    async fn instant_backup_skipped(&mut self) {
        let c = &self.c;
        // $ kubectl apply -f backupsession.yaml
        let warnings = c.kubectl_create(SESSIONS, guide::instant_session(NS));
        assert_eq!(warnings, [guide::paused_session_warning(NS)]);
        let stored = c.get(&format!("{SESSIONS}/instant-backupsession"));
        assert_eq!(
            stored["metadata"]["labels"],
            guide::session_labels(),
            "the mutating webhook labels it for the sidecar's and reconciler's selectors"
        );
        let skipped = c.reconcile_session("instant-backupsession").await;
        assert_eq!(skipped.phase(), BackupSessionPhase::Skipped);
        // $ kubectl get backupsession -n demo instant-backupsession
        assert_eq!(
            printed_columns::<BackupSession>(&c.get(&format!("{SESSIONS}/instant-backupsession"))),
            session_columns("Skipped")
        );
        let mark = c.mark();
        assert_eq!(
            c.sidecar_sees(self.sidecar(), &skipped).await,
            Handled::Ignored("already skipped")
        );
        assert_eq!(c.writes_since(mark), [] as [(String, String); 0]);
        assert_eq!(
            guide::fake_events(&c.k, "BackupSession", guide::INSTANT),
            [guide::session_skipped_event()]
        );
        assert_eq!(c.restic_snapshots().len(), 1, "restic repository untouched");
        let repository: Repository = c.typed(REPO);
        assert_eq!(repository.status.unwrap().snapshot_count, Some(1));
    }

    /// $ kubectl patch backupconfiguration -n demo pause-backup --type="merge" --patch='{"spec": {"paused": false}}'
    async fn resume(&mut self) {
        let c = &self.c;
        c.kubectl_patch_config(json!({"spec": {"paused": false}}))
            .await;
        let mark = c.mark();
        c.reconcile_config().await;
        assert_eq!(
            c.writes_since(mark),
            [("PATCH".to_string(), format!("{BC}/status"))]
        );
        assert_eq!(c.get(DEPLOY), self.deploy_before);
        let t1 = self
            .t0
            .checked_add(jiff::SignedDuration::from_secs(600))
            .unwrap();
        let outcome = c.cron_fires(t1).await;
        assert_eq!(outcome, Outcome::Created("pause-backup-1564660389".into()));
        let running = c.reconcile_session("pause-backup-1564660389").await;
        assert_eq!(running.phase(), BackupSessionPhase::Running);
        assert!(matches!(
            c.sidecar_sees(self.sidecar(), &running).await,
            Handled::BackedUp(o) if o.succeeded()
        ));
        let done = c.reconcile_session("pause-backup-1564660389").await;
        assert_eq!(done.phase(), BackupSessionPhase::Succeeded);
        assert_eq!(c.restic_snapshots().len(), 2);
        let repository: Repository = c.typed(REPO);
        assert_eq!(repository.status.unwrap().snapshot_count, Some(2));
    }
}

#[tokio::test]
async fn pause_backup_guide_end_to_end() {
    let mut walk = Walk {
        c: Cluster::start(),
        t0: jiff::Timestamp::from_second(1_564_659_789).unwrap(),
        sidecar: None,
        cron_before: Value::Null,
        deploy_before: Value::Null,
    };
    guide::pause_backup(&mut walk).await;
    let c = &walk.c;

    // ---- RBAC: every request of each identity is one the install grants ------
    // Besides the requests above, the sidecar judges restic locks left by
    // replicas that are gone, such as those the injection replaced (the
    // guide's pods went from stash-demo-69f9ffbbf7-* to stash-demo-7489fcb7f5-*).
    let judge = PodLockHolders {
        pods: Api::namespaced(c.sidecar_client(), NS),
        own_pod: "stash-demo-7489fcb7f5-jctj4".into(),
        target_name: "stash-demo".into(),
    };
    assert!(judge.is_gone("stash-demo-69f9ffbbf7-bww24").await);
    drop(judge);
    assert_eq!(c.forbidden_requests(), Vec::<String>::new());
    drop(walk);
}

/// The guide up to "Verify CronJob": objects applied, configuration reconciled.
async fn configured_cluster() -> Cluster {
    let cluster = Cluster::start();
    cluster.apply_guide_objects();
    cluster.reconcile_config().await;
    cluster
}

/// Pausing while a scheduled session is already Running (the reconciler
/// accepted it, the sidecar has not reached it yet: busy, restarting, or
/// waiting for its Lease) must not leave that session Running for ever: the
/// reconciler never turns a Running session Skipped, so the sidecar finishes
/// it and the pause holds from the next schedule on.
#[tokio::test]
async fn a_session_running_when_paused_still_finishes() {
    let c = configured_cluster().await;
    let t0 = jiff::Timestamp::from_second(1_564_659_789).unwrap();
    assert_eq!(
        c.cron_fires(t0).await,
        Outcome::Created("pause-backup-1564659789".into())
    );
    let running = c.reconcile_session("pause-backup-1564659789").await;
    assert_eq!(running.phase(), BackupSessionPhase::Running);

    c.kubectl_patch_config(json!({"spec": {"paused": true}}))
        .await;
    let sidecar = c.start_sidecar("stash-demo-7489fcb7f5-jctj4");
    let handled = c.sidecar_sees(&sidecar, &running).await;
    assert!(
        matches!(&handled, Handled::BackedUp(o) if o.succeeded()),
        "{handled:?}"
    );
    let done = c.reconcile_session("pause-backup-1564659789").await;
    assert_eq!(done.phase(), BackupSessionPhase::Succeeded);
    assert_eq!(c.restic_snapshots().len(), 1);

    // The next schedule is skipped.
    let next = t0
        .checked_add(jiff::SignedDuration::from_secs(300))
        .unwrap();
    assert_eq!(c.cron_fires(next).await, Outcome::Skipped);
    drop(sidecar);
    drop(c);
}

/// The instant BackupSession of a paused configuration, seen by the sidecar
/// before the reconciler (their watches race): no backup, and still exactly
/// the guide's one event once the reconciler marks it Skipped.
#[tokio::test]
async fn a_paused_session_the_sidecar_sees_first_is_skipped_once() {
    let c = configured_cluster().await;
    c.kubectl_patch_config(json!({"spec": {"paused": true}}))
        .await;
    let warnings = c.kubectl_create(SESSIONS, guide::instant_session(NS));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let fresh: BackupSession = c.typed(&format!("{SESSIONS}/instant-backupsession"));

    let sidecar = c.start_sidecar("stash-demo-7489fcb7f5-jctj4");
    assert_eq!(c.sidecar_sees(&sidecar, &fresh).await, Handled::Skipped);
    let skipped = c.reconcile_session("instant-backupsession").await;
    assert_eq!(skipped.phase(), BackupSessionPhase::Skipped);
    assert_eq!(
        c.sidecar_sees(&sidecar, &skipped).await,
        Handled::Ignored("already skipped")
    );

    assert_eq!(
        guide::fake_events(&c.k, "BackupSession", guide::INSTANT),
        [guide::session_skipped_event()]
    );
    assert!(
        std::fs::read_dir(c.p("repo")).unwrap().next().is_none(),
        "restic never ran"
    );
    assert_eq!(c.forbidden_requests(), Vec::<String>::new());
    drop(sidecar);
    drop(c);
}

/// The guide itself deploys the workload before the Secret, the Repository
/// and the BackupConfiguration exist, so the webhook has nothing to inject at
/// CREATE and the reconciler injects the sidecar. Its patch, sent back
/// through the webhook as the API server would, needs no further change, and
/// the pod template ends exactly as when the webhook injected at CREATE.
#[tokio::test]
async fn in_the_guides_own_order_the_reconciler_injects_the_same_sidecar() {
    let c = Cluster::start();
    c.apply_deployment();
    assert_eq!(
        container_names(&c.get(DEPLOY)["spec"]["template"]),
        ["busybox"]
    );
    c.apply_storage_and_configuration();

    let before = c.get(DEPLOY);
    let mark = c.mark();
    c.reconcile_config().await;
    let workload_writes: Vec<_> = c
        .writes_since(mark)
        .into_iter()
        .filter(|(_, p)| p == DEPLOY)
        .collect();
    assert_eq!(workload_writes, [("PATCH".to_string(), DEPLOY.to_string())]);
    let after = c.get(DEPLOY);
    assert_eq!(
        container_names(&after["spec"]["template"]),
        ["busybox", "stash"]
    );
    // The API server calls the mutating webhook for the reconciler's update.
    let (admitted, warnings) = c.admit("UPDATE", after.clone(), Some(before));
    assert_eq!(admitted, after, "the webhook agrees with the reconciler");
    assert!(warnings.is_empty(), "{warnings:?}");
    let mark = c.mark();
    c.reconcile_config().await;
    assert_eq!(c.writes_since(mark), [] as [(String, String); 0]);

    // What the webhook would have made of the guide's Deployment at CREATE,
    // now that the configuration exists: the same pod template, hash included.
    let (at_create, _) = c.admit("CREATE", guide::pvc_and_deployment(NS).1, None);
    let stored = c.get(DEPLOY);
    assert_eq!(stored["spec"]["template"], at_create["spec"]["template"]);
    assert_eq!(
        stored["metadata"]["annotations"],
        at_create["metadata"]["annotations"]
    );
    assert_eq!(c.forbidden_requests(), Vec::<String>::new());
    drop(c);
}
