//! docs/restore.md as one walk on the fake cluster of `tests/support`: the
//! guide's Deployment backed up with real restic, its data lost, a
//! RestoreSession applied with `kubectl` (through the webhooks), the
//! RestoreSession controller back-filling `stash-init`, the deployment
//! controller rolling out, the init container run the way the kubelet would
//! start it (its args parsed by `stash restore`'s own command line, its own
//! volumes laid out in the temp dir by the testkit's kubelet), the data back
//! byte for byte, the phases and events `kubectl describe` shows, and the
//! clean-up.
//!
//! The parts Kubernetes plays, as in tests/guide.rs: the API server and the
//! deployment controller are the fake's; the reconciler's watches are
//! explicit `reconcile_at` calls; the sidecar's watch is `Sidecar::handle`;
//! the kubelet is [`Walk::start_init`]. restic is a wrapper script around the
//! real one that logs each command line, so the test sees when it did not run.
//! The only edits to the docs' YAML: the Repository, the backed-up path and
//! the RestoreSession's path and mountPath point into the temp dir.
//!
//! The docs' sections, in order, and what they show are the testkit's
//! (`stash_testkit::guide`, `RestoreGuide`), shared with the real-cluster
//! walk of `tests/e2e_cluster`; this file has the fake cluster's mechanics.

use stash_testkit as support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser};
use serde_json::{Value, json};

use stash::api::{
    BackupSession, BackupSessionPhase, HostRestorePhase, RestoreSession, RestoreSessionPhase,
};
use stash::backup::controller::{Handled, Sidecar};
use stash::backup::restic::resolve_binary;
use stash::reconcile::{backup_configuration, backup_session, restore_session};
use stash::settings::Settings;
use support::guide::{self, Mounts, Pod, RestoreGuide, init_container_names};
use support::restic::{Env, NS};
use support::{Cluster, Identity, PatchBody};

const BC: &str =
    "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupconfigurations/pause-backup";
const DEPLOY: &str = "/apis/apps/v1/namespaces/demo/deployments/stash-demo";
const CRONJOB: &str = "/apis/batch/v1/namespaces/demo/cronjobs/stash-backup-pause-backup";
const SESSIONS: &str = "/apis/stash.appscode.com/v1beta1/namespaces/demo/backupsessions";
const RESTORES: &str = "/apis/stash.appscode.com/v1beta1/namespaces/demo/restoresessions";
const RS: &str =
    "/apis/stash.appscode.com/v1beta1/namespaces/demo/restoresessions/restore-stash-demo";
const INIT_BINDING: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/demo/rolebindings/stash-restore-deployment-stash-demo";
const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/demo/leases/lock-deployment-stash-demo-restore";
const IMAGE: &str = "stash:restore";
/// How long the init containers of three replicas may take together (real
/// restic on a loaded 2-core machine; waiters sleep until the Lease expires).
const RESTORE_WAIT: Duration = Duration::from_secs(120);

/// `stash restore`'s command line, exactly as `stash` parses it.
#[derive(clap::Parser)]
struct Restore {
    #[command(flatten)]
    args: stash::restore::Args,
}

struct Walk {
    k: Cluster,
    env: Env,
    settings: Settings,
}

impl Walk {
    fn new() -> Self {
        let settings = Settings {
            image: IMAGE.into(),
            ..Settings::default()
        };
        let env = Env::new();
        // restic, as the image has it: the real one, each subcommand logged.
        let real = resolve_binary(Path::new("restic"), std::env::var_os("PATH").as_deref())
            .expect("restic must be installed (scripts/test installs it)");
        std::fs::create_dir_all(env.p("bin")).unwrap();
        let wrapper = env.p("bin/restic");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
                env.p("restic-calls").display(),
                real.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self {
            k: Cluster::with_settings(settings.clone()),
            env,
            settings,
        }
    }

    /// The restic command lines the init containers ran so far.
    fn restic_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.env.p("restic-calls"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn get(&self, path: &str) -> Value {
        self.k.object(path)
    }

    fn kubectl_create(&self, object: Value) -> Vec<String> {
        self.k
            .create(Identity::admin(), object)
            .unwrap_or_else(|e| panic!("refused: {e:?}"))
            .warnings
    }

    fn restore_session(&self) -> RestoreSession {
        self.k.typed(RS)
    }

    /// `kubectl get rs -n demo`: (name, template) of each ReplicaSet.
    fn replica_sets(&self) -> BTreeMap<String, Value> {
        self.k
            .replica_sets(NS)
            .into_iter()
            .map(|rs| {
                (
                    rs["metadata"]["name"].as_str().unwrap().to_string(),
                    rs["spec"]["template"].clone(),
                )
            })
            .collect()
    }

    /// The ReplicaSets scaled up (the ones with pods).
    fn active_replica_sets(&self) -> Vec<String> {
        self.k
            .replica_sets(NS)
            .into_iter()
            .filter(|rs| rs["spec"]["replicas"].as_i64().unwrap_or(1) > 0)
            .map(|rs| rs["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// docs/walkthrough.md's objects, each `kubectl apply`ed through the webhooks.
    fn apply_guide_objects(&self) {
        self.kubectl_create(guide::secret(NS));
        // The test's local backend is a hostPath: admitted, with its warning.
        let warnings = self.kubectl_create(self.env.repository());
        guide::assert_repository_warning(&warnings, NS);
        assert_eq!(
            self.kubectl_create(self.env.config(false)),
            [] as [String; 0]
        );
        let (pvc, deployment) = guide::pvc_and_deployment(NS);
        assert_eq!(self.kubectl_create(pvc), [] as [String; 0]);
        assert_eq!(self.kubectl_create(deployment), [] as [String; 0]);
    }

    fn config_context(&self) -> backup_configuration::Context {
        backup_configuration::Context::new(
            self.k.client(Identity::reconciler()),
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

    async fn reconcile_backup_session(&self, name: &str) -> BackupSession {
        let path = format!("{SESSIONS}/{name}");
        let ctx = backup_session::Context::new(self.k.client(Identity::reconciler()));
        backup_session::reconcile_at(&self.k.typed(&path), &ctx, jiff::Timestamp::now())
            .await
            .expect("BackupSession reconcile");
        self.k.typed(&path)
    }

    /// One RestoreSession reconcile, as its watch would trigger it (after a
    /// pass that only added the finalizer, the pass that change triggers too).
    async fn reconcile_restore(&self) {
        let ctx = restore_session::Context::new(
            self.k.client(Identity::reconciler()),
            self.settings.clone(),
            self.k.index(),
        );
        self.k
            .reconcile_as_watched(RS, |rs: RestoreSession| {
                let ctx = &ctx;
                async move { restore_session::reconcile_at(&rs, ctx, jiff::Timestamp::now()).await }
            })
            .await
            .expect("the RestoreSession exists")
            .expect("RestoreSession reconcile");
    }

    /// The kubelet starting the `stash-init` container of a pod of the
    /// Deployment's current template: its mounts the guide's restore ones
    /// ([`Mounts::assert_restore_mounts`]), its args through `stash
    /// restore`'s own command line, the downward API as flags, its own
    /// volumes laid out under `pods/<pod_name>` by the testkit's kubelet
    /// ([`Mounts::lay_out`]: the Secret's keys as files; the data volume and
    /// the local backend are already the temp dir's paths). Returns the
    /// parsed args.
    fn start_init(&self, pod_name: &str) -> stash::restore::Args {
        let deploy = self.get(DEPLOY);
        let pod = &deploy["spec"]["template"]["spec"];
        let init = &pod["initContainers"][0];
        assert_eq!(init["name"], "stash-init", "stash-init comes first");
        assert_eq!(init["image"], IMAGE);
        let mounts = Mounts::of(pod, init);
        mounts.assert_restore_mounts(&self.env.p("source/data"), &self.env.p("repo"));
        let secret = guide::fake_mounted_secret(&self.k, &mounts);
        let dirs = mounts.lay_out(&self.env.p(&format!("pods/{pod_name}")), &secret);
        let args: Vec<String> = dirs
            .args(guide::args(init))
            .into_iter()
            .chain(downward_api(&Restore::command(), &init["env"], pod_name))
            .chain([
                format!("--restic-binary={}", self.env.p("bin/restic").display()),
                // Waiting replicas sleep until the Lease expires: keep it short here.
                "--lease-duration=3".into(),
            ])
            .collect();
        assert_eq!(args[1], "--restoresession=restore-stash-demo");
        Restore::try_parse_from(&args)
            .unwrap_or_else(|e| panic!("stash restore refuses the injected args {args:?}: {e}"))
            .args
    }

    /// The init container of `pod_name` runs to its end: Ok is exit 0.
    async fn run_init(&self, pod_name: &str) -> anyhow::Result<()> {
        let args = self.start_init(pod_name);
        // The pod runs as the Deployment's ServiceAccount.
        let client = self.k.client(Identity::sidecar(NS, "default"));
        tokio::time::timeout(RESTORE_WAIT, stash::restore::run_with(args, client))
            .await
            .unwrap_or_else(|_| panic!("the init container of {pod_name} did not finish"))
    }

    /// Every host entry the init containers wrote into the session, in order.
    fn host_writes(&self, since: usize) -> Vec<String> {
        self.k
            .log_since(since)
            .into_iter()
            .filter(|r| r.method == "PUT" && r.path == format!("{RS}/status") && r.code < 300)
            .filter_map(|r| {
                r.body["status"]["stats"]
                    .as_array()?
                    .iter()
                    .find(|h| h["hostname"] == "host-0")
                    .and_then(|h| h["phase"].as_str())
                    .map(String::from)
            })
            .collect()
    }
}

/// The kubelet's downward API for `env` (pod `pod` in `demo` on `node-1`),
/// as the flags whose environment source each variable is.
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

fn init_containers(template: &Value) -> Vec<String> {
    init_container_names(template)
}

fn restore_phase(rs: &RestoreSession) -> RestoreSessionPhase {
    rs.phase()
}

/// A file the container does not write by itself: 300 kB of every byte value.
fn precious_bytes() -> Vec<u8> {
    (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// docs/restore.md on the fake cluster: the walk and what one section
/// leaves for the next.
struct RestoreWalk {
    w: Walk,
    /// The file the container does not write by itself.
    precious: PathBuf,
    /// The backed-up path, in the temp dir.
    data: String,
    /// The ReplicaSets (name → template) before the restore.
    original_rs: BTreeMap<String, Value>,
    /// The Deployment before the RestoreSession.
    deploy_before: Value,
    /// The ReplicaSets once stash-init is in, and the new one.
    with_init: BTreeMap<String, Value>,
    new_rs: String,
    /// The pods of the new ReplicaSet.
    pods: [String; 3],
    /// The restic command lines of the first restore.
    calls: Vec<String>,
}

impl RestoreGuide for RestoreWalk {
    async fn lose_data(&mut self) {
        std::fs::remove_file(&self.precious).unwrap();
    }

    /// $ kubectl apply -f manifests/restore/restoresession.yaml (its path in the temp dir)
    async fn apply_restore_session(&mut self) {
        let w = &self.w;
        let rs = guide::restore_session_on(NS, Path::new(&self.data));
        self.deploy_before = w.get(DEPLOY);
        assert_eq!(w.kubectl_create(rs), [] as [String; 0]);
        assert_eq!(
            w.get(DEPLOY),
            self.deploy_before,
            "creating a RestoreSession writes nothing else"
        );
        assert_eq!(w.k.settle_deployments().writes, 0);
    }

    /// The controller: finalizer, stash-init back-filled (through the
    /// webhook, which keeps it), the init container's RoleBinding, Running;
    /// then the deployment controller's rollout.
    async fn init_back_filled(&mut self) {
        let w = &self.w;
        let mark = w.k.mark();
        w.reconcile_restore().await;
        assert_eq!(
            w.k.writes_since(mark),
            [
                ("PATCH".to_string(), RS.to_string()),
                ("PATCH".to_string(), DEPLOY.to_string()),
                ("PATCH".to_string(), INIT_BINDING.to_string()),
                ("PATCH".to_string(), format!("{RS}/status")),
                (
                    "POST".to_string(),
                    "/api/v1/namespaces/demo/events".to_string()
                ),
            ]
        );
        let rs_now = w.restore_session();
        assert_eq!(restore_phase(&rs_now), RestoreSessionPhase::Running);
        assert_eq!(rs_now.status.as_ref().unwrap().total_hosts, Some(1));
        assert_eq!(
            rs_now.metadata.finalizers,
            Some(vec![guide::FINALIZER.into()])
        );
        assert_eq!(
            guide::restore_columns("Running"),
            guide::printed_columns::<RestoreSession>(&w.get(RS))
        );
        let deploy = w.get(DEPLOY);
        assert_eq!(
            deploy["metadata"]["annotations"][guide::LAST_APPLIED_RESTORE],
            guide::RESTORE
        );
        assert_eq!(init_containers(&deploy["spec"]["template"]), ["stash-init"]);
        // The pod template changed by the init container and nothing else of the sidecar's.
        let mut without_init = deploy["spec"]["template"].clone();
        without_init["spec"]
            .as_object_mut()
            .unwrap()
            .remove("initContainers");
        assert_eq!(
            without_init["spec"]["containers"],
            self.deploy_before["spec"]["template"]["spec"]["containers"],
            "the busybox and stash containers are unchanged"
        );
        let binding = w.get(INIT_BINDING);
        assert_eq!(binding["roleRef"]["name"], "stash-sidecar");
        assert_eq!(binding["subjects"][0]["name"], "default");
        // Its own writes re-trigger it; that pass writes nothing.
        let mark = w.k.mark();
        w.reconcile_restore().await;
        assert_eq!(w.k.writes_since(mark), [] as [(String, String); 0]);

        // The deployment controller: exactly one more ReplicaSet, with stash-init.
        let rollout = w.k.settle_deployments();
        assert!(rollout.settled, "{rollout:?}");
        let with_init = w.replica_sets();
        assert_eq!(with_init.len(), 2, "{:?}", with_init.keys());
        let new_rs: Vec<&String> = with_init
            .keys()
            .filter(|n| !self.original_rs.contains_key(*n))
            .collect();
        assert_eq!(new_rs.len(), 1);
        assert_eq!(w.active_replica_sets(), [new_rs[0].clone()]);
        assert_eq!(init_containers(&with_init[new_rs[0]]), ["stash-init"]);
        assert_eq!(w.k.settle_deployments().writes, 0, "no further rollout");
        self.new_rs = new_rs[0].clone();
        self.pods = ["a", "b", "c"].map(|p| format!("{}-{p}", self.new_rs));
        self.with_init = with_init;
    }

    /// The three replicas' init containers, all at once (host-0 each).
    async fn init_restores(&mut self) {
        let w = &self.w;
        let pods = &self.pods;
        let mark = w.k.mark();
        let (a, b, c) = tokio::join!(
            w.run_init(&pods[0]),
            w.run_init(&pods[1]),
            w.run_init(&pods[2])
        );
        for (pod, exit) in pods.iter().zip([a, b, c]) {
            assert!(exit.is_ok(), "the init container of {pod} fails: {exit:?}");
        }
        assert_eq!(
            std::fs::read(&self.precious).expect("precious.txt is back"),
            precious_bytes(),
            "restored byte for byte"
        );
        assert_eq!(
            std::fs::read_to_string(w.env.p("source/data/data.txt")).unwrap(),
            "sample_data\n"
        );
        let calls = w.restic_calls();
        assert_eq!(calls.len(), 1, "one restic run: {calls:?}");
        assert!(
            calls[0].contains(&format!(
                " restore latest --target / --host host-0 --path {}",
                self.data
            )),
            "{calls:?}"
        );
        assert_eq!(
            w.host_writes(mark),
            ["Running", "Succeeded"],
            "one claim, one result"
        );
        let stats = w.restore_session().status.unwrap().stats;
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].hostname, guide::HOST);
        assert_eq!(stats[0].phase, Some(HostRestorePhase::Succeeded));
        assert!(stats[0].duration.is_some());
        assert!(w.k.get(LEASE).is_some(), "the restore Lease");
        self.calls = calls;
    }

    /// The controller sees the host's result.
    async fn restore_succeeded(&mut self) {
        let w = &self.w;
        w.reconcile_restore().await;
        let rs_now = w.restore_session();
        assert_eq!(restore_phase(&rs_now), RestoreSessionPhase::Succeeded);
        assert!(rs_now.status.as_ref().unwrap().session_duration.is_some());
        assert_eq!(
            guide::printed_columns::<RestoreSession>(&w.get(RS)),
            guide::restore_columns("Succeeded")
        );
        assert_eq!(
            guide::fake_events(&w.k, "RestoreSession", guide::RESTORE),
            guide::restore_events()
        );
        // A finished session: the next pass writes nothing.
        let mark = w.k.mark();
        w.reconcile_restore().await;
        assert_eq!(w.k.writes_since(mark), [] as [(String, String); 0]);
    }

    /// A restarted init container does not restore again.
    async fn init_again_restores_nothing(&mut self) {
        let w = &self.w;
        std::fs::write(&self.precious, b"changed since").unwrap();
        let mark = w.k.mark();
        w.run_init(&self.pods[0]).await.expect("exit 0");
        assert_eq!(std::fs::read(&self.precious).unwrap(), b"changed since");
        assert_eq!(w.restic_calls(), self.calls, "restic did not run");
        let writes: Vec<_> =
            w.k.writes_since(mark)
                .into_iter()
                .filter(|(_, p)| !p.starts_with("/apis/coordination.k8s.io/"))
                .collect();
        assert_eq!(
            writes,
            [] as [(String, String); 0],
            "only the Lease is written"
        );
    }

    /// $ kubectl delete restoresession -n demo restore-stash-demo
    async fn clean_up(&mut self) {
        let w = &self.w;
        w.k.delete(Identity::admin(), RS).expect("deleted");
        assert!(w.restore_session().metadata.deletion_timestamp.is_some());
        w.reconcile_restore().await;
        assert!(w.k.get(RS).is_none(), "finalizer released: gone");
        assert!(w.k.get(INIT_BINDING).is_none(), "its RoleBinding collected");
        let deploy = w.get(DEPLOY);
        assert!(init_containers(&deploy["spec"]["template"]).is_empty());
        assert_eq!(
            deploy["spec"]["template"], self.deploy_before["spec"]["template"],
            "the pod template is the backup's again"
        );
        assert!(
            deploy["metadata"]["annotations"]
                .get(guide::LAST_APPLIED_RESTORE)
                .is_none()
        );
        // One more rollout: back to the original ReplicaSet, none created.
        let rollout = w.k.settle_deployments();
        assert!(rollout.settled && rollout.writes > 0, "{rollout:?}");
        assert_eq!(
            w.replica_sets().keys().collect::<Vec<_>>(),
            self.with_init.keys().collect::<Vec<_>>()
        );
        assert_eq!(
            w.active_replica_sets(),
            self.original_rs.keys().cloned().collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn restore_guide_walk_on_the_fake_cluster() {
    let w = Walk::new();
    let precious: PathBuf = w.env.p("source/data/precious.txt");

    // ---- 1. The backup ------------------------------------------------------
    w.apply_guide_objects();
    w.reconcile_config().await;
    w.k.settle_deployments();
    let original_rs = w.replica_sets();
    assert_eq!(original_rs.len(), 1);
    let original_template = original_rs.values().next().unwrap().clone();
    assert!(init_containers(&original_template).is_empty());

    std::fs::write(&precious, precious_bytes()).unwrap();
    let session = guide::instant_session(NS);
    let session_name = session["metadata"]["name"].as_str().unwrap().to_string();
    w.kubectl_create(session);
    let running = w.reconcile_backup_session(&session_name).await;
    assert_eq!(running.phase(), BackupSessionPhase::Running);
    let sidecar: Sidecar = w
        .env
        .sidecar(w.k.client(Identity::sidecar(NS, "default")), None);
    let handled = sidecar
        .handle(&running)
        .await
        .expect("the sidecar handles it");
    assert!(
        matches!(&handled, Handled::BackedUp(o) if o.succeeded()),
        "{handled:?}"
    );
    let done = w.reconcile_backup_session(&session_name).await;
    assert_eq!(done.phase(), BackupSessionPhase::Succeeded);
    assert_eq!(w.env.snapshots().len(), 1);

    // Pause the backups: a restore does not care.
    w.k.patch(
        Identity::admin(),
        BC,
        PatchBody::Merge(json!({"spec": {"paused": true}})),
    )
    .expect("paused");
    let deploy_paused = w.get(DEPLOY);
    w.reconcile_config().await;
    assert_eq!(w.get(DEPLOY), deploy_paused, "pause keeps the sidecar");
    assert_eq!(
        w.k.settle_deployments().writes,
        0,
        "pause rolls nothing out"
    );
    let cron_before = w.get(CRONJOB);

    // ---- 2.–4. Lose the data, restore, clean up (docs/restore.md) -----------
    let data = w.env.p("source/data").display().to_string();
    let mut restore = RestoreWalk {
        w,
        precious,
        data,
        original_rs,
        deploy_before: Value::Null,
        with_init: BTreeMap::new(),
        new_rs: String::new(),
        pods: Default::default(),
        calls: Vec::new(),
    };
    guide::restore(&mut restore).await;
    let w = &restore.w;

    // Pause held throughout; backups are untouched by the restore.
    assert_eq!(w.get(BC)["spec"]["paused"], true);
    assert_eq!(w.get(CRONJOB), cron_before);
    assert_eq!(w.k.paths_under(&format!("{SESSIONS}/")).len(), 1);
    assert_eq!(w.k.paths_under(&format!("{RESTORES}/")).len(), 0);
    assert_eq!(w.env.snapshots().len(), 1);

    assert_eq!(w.k.forbidden_requests(), Vec::<String>::new());
    drop(sidecar);
}
