//! The user's guide (`docs/guide/pause-backup.md`) against a REAL control plane,
//! opt-in: `#[ignore]`d unless run with `cargo test --test e2e_cluster --
//! --ignored` and `STASH_E2E_KUBECONFIG` naming a kubeconfig (CONTRIBUTING.md,
//! "Real-cluster end-to-end test"). The helpers' own tests run always.
//!
//! `stash serve` (webhooks + reconciler), `stash create-backupsession` (the
//! CronJob), `stash run-backup` (the sidecar) and `stash restore`
//! (`stash-init`) run as local processes of the compiled binary, so no pod
//! has to run: a kube-apiserver and a kube-controller-manager (deployment,
//! replicaset, serviceaccount, garbage collector) without any kubelet are
//! enough. The API server calls the webhooks on this machine through
//! `clientConfig.url`.
//!
//! The install is `stash manifests` as rendered ([`install`]): its RBAC and
//! its ValidatingAdmissionPolicies apply, and every process runs as the
//! ServiceAccount its pod would have ([`identity`]): the server as
//! `stash-system/stash-webhook`, the CronJob's container as its
//! `stash-backup-<bc>`, the sidecar and `stash-init` as the Deployment's. So a
//! write the install does not allow fails the test, as it would fail in a
//! cluster. Only what a person does (`kubectl`) and the kubelet's part
//! (Secret volumes, the downward API) use the admin's kubeconfig, and the
//! cleanup.
//!
//! What the test changes in the guide's YAMLs, and why: everything lives in a
//! fresh namespace instead of `demo`; the Repository is a `local` backend in
//! a temp dir (run-backup runs here, not in a pod with a GCS bucket's
//! credentials), and the configuration backs up a temp dir standing for the
//! PVC's `/source/data`. Everything else is applied as the guide has it, in
//! its order: Deployment (and PVC), Secret, Repository, BackupConfiguration.
//!
//! The guides' sections, in order, and what they show (YAMLs, columns,
//! events, conditions) are the testkit's (`stash_testkit::guide`:
//! `PauseBackupGuide` then `RestoreGuide`, walked by `guide::pause_backup`
//! and `guide::restore`), shared with the fake-cluster walks of
//! `tests/guide.rs` and `tests/restore/cluster.rs`; so is the kubelet's part
//! for the injected containers (`guide::Mounts`). This file has the real
//! cluster's mechanics: waiting for what the controllers do, the ReplicaSets
//! settling, each process's identity.

mod e2e;
mod identity;
mod install;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use e2e::{Cluster, NO_CLUSTER, Settings};
use stash::api::{BackupConfiguration, BackupSession, Repository, RestoreSession};
use stash::manifests::names::{CRON_JOB_ROLE, SIDECAR_ROLE};
use stash::manifests::{CaBundle, Object};
use stash_testkit::guide::{
    self, BC, CRONJOB, DEPLOY, HOST, INSTANT, Mounts, PauseBackupGuide, REPO, RESTORE,
    RestoreGuide, SECRET,
};

/// Image of the sidecar and the CronJob: one no node can pull, so that on a
/// cluster with kubelets neither an in-cluster sidecar nor the CronJob's pod
/// ever competes with the local processes.
const IMAGE: &str = "stash-e2e.invalid/stash:never-pulled";

/// Bounds of the waits.
const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(120);
/// How long the ReplicaSet count must stay put to count as settled (the
/// injection storm made 21 ReplicaSets in 6 s).
const SETTLE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real cluster: set STASH_E2E_KUBECONFIG (CONTRIBUTING.md, Real-cluster end-to-end test)"]
async fn pause_backup_guide_on_a_real_cluster() {
    let settings = Settings::from_env().unwrap_or_else(|| panic!("{NO_CLUSTER}"));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let restic = std::process::Command::new("restic").arg("version").output();
    assert!(
        restic.as_ref().is_ok_and(|o| o.status.success()),
        "restic must be on PATH (run-backup drives it): apt-get install restic ({restic:?})"
    );

    let (client, api_url) = e2e::client(&settings.kubeconfig).await;
    let host = match &settings.webhook_host {
        Some(h) => h.clone(),
        None => e2e::route_address(&api_url).await.to_string(),
    };
    let listen_ip: IpAddr = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => "::".parse().unwrap(),
        _ => "0.0.0.0".parse().unwrap(),
    };
    let port = settings
        .webhook_port
        .unwrap_or_else(|| e2e::free_port(listen_ip));
    let c = Cluster::create(client, settings).await;
    c.step(&format!(
        "API server {api_url}; it will call the webhooks at https://{}",
        e2e::host_port(&host, port)
    ));

    install(&c, &host, SocketAddr::new(listen_ip, port)).await;
    guide(&c).await;
    c.step("the guide ran through; cleaning up");
}

// ---------------------------------------------------------------------------
// Install: CRDs, certificates, the rendered install, `stash serve` as its
// ServiceAccount
// ---------------------------------------------------------------------------

async fn install(c: &Cluster, host: &str, listen: SocketAddr) {
    apply_crds(c).await;

    // Certificates for the address the API server dials (what `stash certs`
    // makes, with this machine's name instead of the Service's).
    let bundle = stash::certs::generate(&[host.to_string()], stash::certs::Validity::default())
        .expect("certificates");
    let (ca, cert, key) = (c.p("ca.crt"), c.p("tls.crt"), c.p("tls.key"));
    stash::certs::write_bundle(&bundle, &ca, &cert, &key).expect("write certificates");

    // $ stash manifests --image IMAGE --ca-bundle-file ca.crt --namespaces <test ns>
    //   | kubectl apply -f -   (minus the server's Deployment and Service)
    let ca_bundle = CaBundle::read(&ca).expect("the CA bundle");
    let options = install::options(&c.ns, IMAGE, ca_bundle);
    let base = format!("https://{}", e2e::host_port(host, listen.port()));
    let objects = install::objects(&options, &base).expect("the rendered install");
    let (webhooks, rest): (Vec<&Object>, Vec<&Object>) = objects
        .iter()
        .partition(|o| install::is_webhook_configuration(o));
    for object in &rest {
        c.install(object).await;
    }
    c.step(&format!(
        "install applied as rendered: {}",
        rest.iter().map(|o| o.id()).collect::<Vec<_>>().join(", ")
    ));
    // The server's identity: the install's ServiceAccount, as its pods have it.
    let server = c
        .kubeconfig_for(&options.namespace, stash::manifests::names::SERVICE)
        .await;
    policies_in_force(c, &server).await;
    serve_as_installed(c, &options, &server, listen, (&cert, &key)).await;

    // The webhook configurations last, once the server answers.
    for object in &webhooks {
        c.install(object).await;
    }
    let hooks: Vec<String> = webhooks.iter().flat_map(|o| webhook_names(o)).collect();
    assert_eq!(hooks.len(), 6, "one webhook per endpoint: {hooks:?}");
    c.step(&format!(
        "webhook configurations created, calling {base}: {}",
        hooks.join(", ")
    ));
    webhooks_reachable(c, &base, listen.port()).await;
}

/// $ stash crds | kubectl apply -f -, then waits for them to be Established.
async fn apply_crds(c: &Cluster) {
    let crds = e2e::run_stash(None, &["crds".into()], &[]).await;
    let crd_api: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    let mut names = Vec::new();
    for doc in guide::yaml_docs(&crds) {
        let crd: CustomResourceDefinition =
            serde_json::from_value(doc).expect("`stash crds` prints CRDs");
        let name = crd.name_any();
        crd_api
            .patch(
                &name,
                &PatchParams::apply("stash-e2e").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
        names.push(name);
    }
    assert_eq!(names.len(), 4, "{names:?}");
    for name in &names {
        c.wait_for(&format!("CRD {name} Established"), SHORT, async || {
            let crd = crd_api.get(name).await.map_err(|e| e.to_string())?;
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            conditions
                .iter()
                .find(|c| c.type_ == "Established" && c.status == "True")
                .map(|_| ())
                .ok_or_else(|| format!("conditions {conditions:?}"))
        })
        .await;
    }
    c.step("CRDs applied from `stash crds` and Established");
}

/// The admission policies are loaded and match the server's identity: a dry
/// run of a write its RBAC allows but `stash-webhook-owned` refuses (a
/// ServiceAccount not named `stash-backup-*`) is denied by the policy.
/// Without this, a write made before the API server loaded the policies
/// would pass unchecked.
async fn policies_in_force(c: &Cluster, server: &Path) {
    let (as_server, _) = e2e::client(server).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(as_server, &c.ns);
    let probe: ServiceAccount = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "e2e-policy-probe", "namespace": c.ns}
    }))
    .unwrap();
    let dry_run = PostParams {
        dry_run: true,
        field_manager: None,
    };
    let policy = stash::manifests::policy::OWNED_POLICY;
    let denial = c
        .wait_for(
            &format!("ValidatingAdmissionPolicy {policy} to refuse the server's dry run"),
            SHORT,
            async || match accounts.create(&dry_run, &probe).await {
                Ok(_) => Err("a ServiceAccount e2e-policy-probe was admitted".to_string()),
                Err(kube::Error::Api(s))
                    if s.message.contains("ValidatingAdmissionPolicy")
                        && s.message.contains(policy) =>
                {
                    Ok(s.message.clone())
                }
                Err(e) => Err(e.to_string()),
            },
        )
        .await;
    c.step(&format!("the admission policies are in force: {denial}"));
}

/// $ stash serve as the Deployment runs it: the rendered args (local
/// addresses and certificate paths instead of the pod's), POD_NAME and
/// POD_NAMESPACE as the downward API sets them, and the install's
/// ServiceAccount (`kubeconfig`) as its identity. Waits for `/readyz`.
async fn serve_as_installed(
    c: &Cluster,
    options: &stash::manifests::Options,
    kubeconfig: &Path,
    listen: SocketAddr,
    (cert, key): (&Path, &Path),
) {
    let probe = SocketAddr::new(
        "127.0.0.1".parse().unwrap(),
        e2e::free_port("127.0.0.1".parse().unwrap()),
    );
    let mut args = stash::manifests::server::server_args(options);
    guide::set_flag(&mut args, "--listen", &listen.to_string());
    guide::set_flag(&mut args, "--probe-listen", &probe.to_string());
    guide::set_flag(&mut args, "--tls-cert-file", &cert.display().to_string());
    guide::set_flag(&mut args, "--tls-key-file", &key.display().to_string());
    guide::set_flag(&mut args, "--drain-timeout", "2s");
    guide::set_flag(&mut args, "--shutdown-delay", "0s");
    let env = [
        (
            "POD_NAME".to_string(),
            format!("stash-webhook-e2e-{}", std::process::id()),
        ),
        ("POD_NAMESPACE".to_string(), options.namespace.clone()),
    ];
    c.spawn("serve", kubeconfig, &args, &env);
    c.wait_for(
        "stash serve /readyz = 200 ok",
        SHORT,
        async || match e2e::http_get(probe, "/readyz").await? {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code} {}", body.trim())),
        },
    )
    .await;
    c.step(
        "stash serve is ready as the install's ServiceAccount (its informers listed the cluster)",
    );
}

/// The names of the webhooks of a webhook configuration.
fn webhook_names(object: &Object) -> Vec<String> {
    match object {
        Object::MutatingWebhookConfiguration(m) => m
            .webhooks
            .iter()
            .flatten()
            .map(|h| h.name.clone())
            .collect(),
        Object::ValidatingWebhookConfiguration(v) => v
            .webhooks
            .iter()
            .flatten()
            .map(|h| h.name.clone())
            .collect(),
        _ => Vec::new(),
    }
}

/// The API server must reach the webhooks before the guide starts: a
/// Repository with two backends, dry run, must be denied by ours.
async fn webhooks_reachable(c: &Cluster, base: &str, port: u16) {
    let repos: Api<Repository> = Api::namespaced(c.client.clone(), &c.ns);
    let two_backends: Repository = serde_json::from_value(json!({
        "apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
        "metadata": {"name": "e2e-webhook-probe", "namespace": c.ns},
        "spec": {"backend": {
            "local": {"mountPath": "/probe", "hostPath": {"path": "/probe"}},
            "rest": {"url": "http://probe.invalid"},
            "storageSecretName": SECRET
        }}
    }))
    .unwrap();
    let dry_run = PostParams {
        dry_run: true,
        field_manager: None,
    };
    let denial = c
        .wait_for(
            &format!(
                "the API server to call the validating webhook at {base} (can it reach this \
                 machine's port {port}? If not, set STASH_E2E_WEBHOOK_HOST to this machine's \
                 address as the API server sees it; kind: the gateway of docker network `kind`)"
            ),
            Duration::from_secs(60),
            async || match repos.create(&dry_run, &two_backends).await {
                Ok(_) => Err(
                    "a Repository with two backends was admitted: the webhook is not called yet"
                        .to_string(),
                ),
                Err(kube::Error::Api(s)) if s.message.contains("denied the request") => {
                    Ok(s.message.clone())
                }
                Err(e) => Err(e.to_string()),
            },
        )
        .await;
    assert!(
        denial.contains("repositories.validate.stash.appscode.com"),
        "{denial}"
    );
    c.step(&format!("the API server calls the webhooks: {denial}"));
}

// ---------------------------------------------------------------------------
// The guide
// ---------------------------------------------------------------------------

/// The guide's walk on a real cluster: what one section leaves for the next.
#[derive(Default)]
struct Guide<'a> {
    c: Option<&'a Cluster>,
    /// The Deployment's uid and its pod template as the guide applies it.
    uid: String,
    original_template: Value,
    /// Every pod template the Deployment has had (one ReplicaSet each).
    templates: Vec<Value>,
    /// The ReplicaSets once the sidecar is in.
    rs_names: Vec<String>,
    /// The Deployment with the sidecar, and before the pause.
    injected: Deployment,
    deploy_before: Deployment,
    /// The CronJob, and its uid when first made.
    cron: CronJob,
    cron_uid: String,
    /// restic's snapshots while paused.
    snapshots_paused: Vec<Value>,
}

impl Guide<'_> {
    fn c(&self) -> &Cluster {
        self.c.expect("the cluster")
    }
}

impl PauseBackupGuide for Guide<'_> {
    async fn configure_backup(&mut self) {
        let c = self.c();
        let ns = c.ns.as_str();
        let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), ns);
        let configs: Api<BackupConfiguration> = Api::namespaced(c.client.clone(), ns);
        let repos: Api<Repository> = Api::namespaced(c.client.clone(), ns);
        // ---- Deploy Deployment --------------------------------------------------
        // $ kubectl apply -f deployment.yaml
        let (pvc, deployment) = guide::pvc_and_deployment(ns);
        let deployment: Deployment = serde_json::from_value(deployment).unwrap();
        let pvc: PersistentVolumeClaim = serde_json::from_value(pvc).unwrap();
        Api::<PersistentVolumeClaim>::namespaced(c.client.clone(), ns)
            .create(&PostParams::default(), &pvc)
            .await
            .expect("persistentvolumeclaim/source-pvc created");
        let created = deployments
            .create(&PostParams::default(), &deployment)
            .await
            .expect("deployment.apps/stash-demo created");
        assert_eq!(
            container_names(&created),
            ["busybox"],
            "no configuration yet: nothing to inject"
        );
        let uid = created.uid().expect("a stored Deployment has a uid");
        let original_template = template(&created);
        let first_rs = c
        .wait_for(
            "the deployment controller's first ReplicaSet (is a kube-controller-manager running?)",
            SHORT,
            async || {
                let list = c.replica_sets(&uid).await;
                match list.as_slice() {
                    [rs] => Ok(rs.name_any()),
                    other => Err(describe_replica_sets(other)),
                }
            },
        )
        .await;
        c.step(&format!(
            "Deployment stash-demo created; ReplicaSet {first_rs}"
        ));

        // ---- Create Secret and Repository ---------------------------------------
        // $ kubectl create secret generic -n demo gcs-secret --from-file=./RESTIC_PASSWORD …
        let secret: Secret = serde_json::from_value(guide::secret(ns)).unwrap();
        Api::<Secret>::namespaced(c.client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .expect("secret/gcs-secret created");
        // $ kubectl apply -f repository.yaml — on a local backend in the temp dir.
        let repo_dir = c.p("repo");
        std::fs::create_dir_all(&repo_dir).unwrap();
        let repo: Repository = serde_json::from_value(guide::repository_on(ns, &repo_dir)).unwrap();
        repos
            .create(&PostParams::default(), &repo)
            .await
            .expect("repository.stash.appscode.com/gcs-repo created");

        // ---- Create BackupConfiguration -----------------------------------------
        // The data busybox writes into the PVC, here in the temp dir.
        let data = c.p("source/data");
        guide::write_guide_data(&data);
        // $ kubectl apply -f backupconfiguration.yaml
        let bc: BackupConfiguration =
            serde_json::from_value(guide::configuration_on(ns, &data)).unwrap();
        configs
            .create(&PostParams::default(), &bc)
            .await
            .expect("backupconfiguration.stash.appscode.com/pause-backup created");
        c.step("Secret, Repository and BackupConfiguration created");

        self.uid = uid;
        self.original_template = original_template;
    }

    async fn verify_sidecar(&mut self) {
        let c = self.c();
        let ns = c.ns.as_str();
        let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), ns);
        let uid = self.uid.clone();
        let original_template = self.original_template.clone();
        // ---- Verify Sidecar -------------------------------------------------------
        // The Deployment existed first, so the reconciler injects the sidecar (the
        // API server sends its update through our workload webhook too).
        let injected = c
            .wait_for(
                "the stash sidecar in Deployment stash-demo",
                SHORT,
                async || {
                    let d = deployments.get(DEPLOY).await.map_err(|e| e.to_string())?;
                    if container_names(&d) == ["busybox", "stash"] {
                        Ok(d)
                    } else {
                        Err(format!(
                            "containers {:?}; {}",
                            container_names(&d),
                            bc_conditions(c).await
                        ))
                    }
                },
            )
            .await;
        let sidecar = sidecar_container(&injected);
        assert_eq!(sidecar["image"], IMAGE);
        assert_eq!(sidecar["args"][0], "run-backup", "{sidecar}");
        assert_eq!(
            injected
                .annotations()
                .get(guide::LAST_APPLIED_CONFIGURATION),
            Some(&BC.to_string())
        );
        // One ReplicaSet per pod template the Deployment has had: the guide's
        // original and the injected one. No storm: the count settles and stays.
        let templates = vec![original_template.clone(), template(&injected)];
        let sets = settled_replica_sets(c, &uid, &templates, "after the injection").await;
        let with_sidecar: Vec<String> = sets
            .iter()
            .filter(|rs| rs_has_sidecar(rs))
            .map(|rs| rs.name_any())
            .collect();
        assert_eq!(with_sidecar.len(), 1, "{}", describe_replica_sets(&sets));
        let rs_names = names(&sets);
        c.step(&format!(
            "sidecar injected; ReplicaSets settled: {}",
            rs_names.join(", ")
        ));

        self.injected = injected;
        self.templates = templates;
        self.rs_names = rs_names;
    }

    async fn verify_cronjob(&mut self) {
        let c = self.c();
        let ns = c.ns.as_str();
        let cronjobs: Api<CronJob> = Api::namespaced(c.client.clone(), ns);
        // ---- Verify CronJob -------------------------------------------------------
        let cron = c
            .wait_for(&format!("CronJob {CRONJOB}"), SHORT, async || {
                match cronjobs.get_opt(CRONJOB).await.map_err(|e| e.to_string())? {
                    Some(cron) => Ok(cron),
                    // Why not, as the reconciler reports it (a 403 from RBAC or
                    // an admission policy shows here).
                    None => Err(format!("not there; {}", bc_conditions(c).await)),
                }
            })
            .await;
        let cron_json = serde_json::to_value(&cron).unwrap();
        assert_eq!(cron_json["spec"]["schedule"], guide::SCHEDULE);
        let job = &cron_json["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(job["args"], guide::cronjob_args());
        let cron_uid = cron.uid().unwrap();
        c.wait_for(
            "the BackupConfiguration's conditions all True, its phase Ready",
            SHORT,
            async || {
                let bc = c.raw::<BackupConfiguration>(BC).await.ok_or("gone")?;
                let conditions = guide::conditions(&bc);
                let want = guide::READY_CONDITIONS;
                if want
                    .iter()
                    .all(|w| conditions.get(*w).map(String::as_str) == Some("True"))
                    && bc["status"]["phase"] == "Ready"
                {
                    Ok(())
                } else {
                    Err(format!("{conditions:?}"))
                }
            },
        )
        .await;
        // $ kubectl get backupconfiguration -n demo
        let bc_now = c.raw::<BackupConfiguration>(BC).await.unwrap();
        assert_eq!(
            columns::<BackupConfiguration>(c, &bc_now).await,
            guide::configuration_columns(""),
        );
        c.step("CronJob stash-backup-pause-backup exists; kubectl get backupconfiguration: TASK SCHEDULE PAUSED AGE");

        self.cron = cron;
        self.cron_uid = cron_uid;
    }

    async fn backup_succeeds(&mut self) {
        let c = self.c();
        let uid = self.uid.clone();
        let injected = self.injected.clone();
        let cron = self.cron.clone();
        // ---- The sidecar: run-backup as the injected container has it -------------
        start_sidecar(c, &injected, &uid).await;

        // ---- Wait for BackupSession Succeeded ------------------------------------
        // The schedule fires: the CronJob's container, run here.
        let before = guide::restic_snapshots(&c.p("repo"));
        assert!(before.is_empty(), "a fresh repository: {before:?}");
        let sessions_before = session_names(c).await;
        cron_fires(c, &cron).await;
        let sessions_after = session_names(c).await;
        let new: Vec<&String> = sessions_after
            .iter()
            .filter(|s| !sessions_before.contains(s))
            .collect();
        assert_eq!(
            new.len(),
            1,
            "the CronJob creates one BackupSession: {sessions_after:?}"
        );
        let scheduled = new[0].clone();
        assert!(scheduled.starts_with("pause-backup-"), "{scheduled}");
        backup_succeeds(c, &scheduled, &before, 1).await;
        c.step(&format!(
            "BackupSession {scheduled} Succeeded with one restic snapshot"
        ));
    }

    async fn pause(&mut self) {
        let c = self.c();
        let ns = c.ns.as_str();
        let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), ns);
        let cronjobs: Api<CronJob> = Api::namespaced(c.client.clone(), ns);
        let uid = self.uid.clone();
        let rs_names = self.rs_names.clone();
        let cron_uid = self.cron_uid.clone();
        // ---- Pause Scheduled Backup ----------------------------------------------
        // $ kubectl patch backupconfiguration -n demo pause-backup --type="merge" --patch='{"spec": {"paused": true}}'
        let deploy_before = deployments.get(DEPLOY).await.unwrap();
        patch_paused(c, true).await;
        let bc_now = c.raw::<BackupConfiguration>(BC).await.unwrap();
        assert_eq!(bc_now["metadata"]["generation"], 2);
        assert_eq!(
            columns::<BackupConfiguration>(c, &bc_now).await,
            guide::configuration_columns("true"),
        );
        no_restart(c, &deploy_before, &uid, &rs_names, "after the pause").await;
        let cron_now = cronjobs.get(CRONJOB).await.expect("the CronJob stays");
        assert_eq!(
            cron_now.uid().unwrap(),
            cron_uid,
            "the CronJob is the same one"
        );
        c.step("paused: no new ReplicaSet, same pod template, the CronJob stays");

        self.deploy_before = deploy_before;
        self.cron = cron_now;
    }

    async fn scheduled_backup_skipped(&mut self) {
        let c = self.c();
        let ns = c.ns.as_str();
        let cron_now = self.cron.clone();
        // ---- Verify Scheduled Backup Get Skipped ---------------------------------
        let snapshots_paused = guide::restic_snapshots(&c.p("repo"));
        let sessions_before = session_names(c).await;
        cron_fires(c, &cron_now).await;
        assert_eq!(
            session_names(c).await,
            sessions_before,
            "no new BackupSession"
        );
        let want = vec![guide::backup_skipped_event(ns)];
        // $ kubectl describe backupconfiguration -n demo pause-backup
        c.wait_for(
            "the Backup Skipped event on the BackupConfiguration",
            SHORT,
            async || {
                let seen = c.events("BackupConfiguration", BC).await;
                if seen == want {
                    Ok(())
                } else {
                    Err(format!("{seen:?}"))
                }
            },
        )
        .await;
        c.step("the CronJob skipped: Backup Skipped from Backup Triggering CronJob");

        self.snapshots_paused = snapshots_paused;
    }

    async fn instant_backup_skipped(&mut self) {
        let c = self.c();
        let uid = self.uid.clone();
        let rs_names = self.rs_names.clone();
        let deploy_before = self.deploy_before.clone();
        let snapshots_paused = self.snapshots_paused.clone();
        // ---- Verify Instant Backup Get Skipped -----------------------------------
        // $ kubectl apply -f backupsession.yaml
        create_instant(c, INSTANT).await;
        let stored = c.raw::<BackupSession>(INSTANT).await.unwrap();
        assert_eq!(
            stored["metadata"]["labels"],
            guide::session_labels(),
            "the API server sent the session through our mutating webhook"
        );
        let skipped = session_finishes(c, INSTANT, "Skipped").await;
        // $ kubectl get backupsession -n demo instant-backupsession
        assert_eq!(
            columns::<BackupSession>(c, &skipped).await,
            guide::session_columns("Skipped"),
        );
        // $ kubectl describe backupsession -n demo instant-backupsession
        let want = vec![guide::session_skipped_event()];
        c.wait_for("the BackupSessionSkipped event", SHORT, async || {
            let seen = c.events("BackupSession", INSTANT).await;
            if seen == want {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        })
        .await;
        // Nobody backs up, nobody writes a second event.
        c.holds_for(
            "the skip (one event, no snapshot)",
            Duration::from_secs(5),
            async || {
                let seen = c.events("BackupSession", INSTANT).await;
                let snapshots = guide::restic_snapshots(&c.p("repo"));
                if seen != want {
                    Err(format!("events {seen:?}"))
                } else if snapshots.len() != snapshots_paused.len() {
                    Err(format!("restic snapshots {}", snapshots.len()))
                } else {
                    Ok(())
                }
            },
        )
        .await;
        no_restart(c, &deploy_before, &uid, &rs_names, "while paused").await;
        c.step("the instant session was Skipped: BackupSessionSkipped from BackupSession Controller; no snapshot");
    }

    async fn resume(&mut self) {
        let c = self.c();
        let uid = self.uid.clone();
        let rs_names = self.rs_names.clone();
        let deploy_before = self.deploy_before.clone();
        // ---- Resume Backup ---------------------------------------------------------
        // $ kubectl patch backupconfiguration -n demo pause-backup --type="merge" --patch='{"spec": {"paused": false}}'
        patch_paused(c, false).await;
        let bc_now = c.raw::<BackupConfiguration>(BC).await.unwrap();
        assert_eq!(
            columns::<BackupConfiguration>(c, &bc_now).await,
            guide::configuration_columns("false"),
        );
        no_restart(c, &deploy_before, &uid, &rs_names, "after resuming").await;
        let resumed = format!("{INSTANT}-resumed");
        let before = guide::restic_snapshots(&c.p("repo"));
        create_instant(c, &resumed).await;
        backup_succeeds(c, &resumed, &before, 2).await;
        no_restart(
            c,
            &deploy_before,
            &uid,
            &rs_names,
            "after the resumed backup",
        )
        .await;
        c.step(&format!(
            "resumed: {resumed} Succeeded with one new snapshot; ReplicaSets unchanged"
        ));
    }
}

async fn guide(c: &Cluster) {
    let mut g = Guide {
        c: Some(c),
        ..Guide::default()
    };
    guide::pause_backup(&mut g).await;
    let ns = c.ns.as_str();
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), ns);
    let configs: Api<BackupConfiguration> = Api::namespaced(c.client.clone(), ns);
    let cronjobs: Api<CronJob> = Api::namespaced(c.client.clone(), ns);
    let Guide {
        uid,
        original_template,
        templates,
        rs_names,
        deploy_before,
        ..
    } = g;

    // ---- The same turns through `kubectl stash` (docs/operate.md) -----------
    plugin_walk(c).await;
    no_restart(
        c,
        &deploy_before,
        &uid,
        &rs_names,
        "after the plugin's turns",
    )
    .await;

    // ---- docs/restore.md: lose the data, restore it with a RestoreSession -----
    let mut restore = RestoreWalk::new(c, uid, templates);
    guide::restore(&mut restore).await;
    let RestoreWalk {
        uid, mut templates, ..
    } = restore;

    // ---- Removal: the configuration goes, the sidecar and the CronJob with it --
    c.stop("run-backup");
    // $ kubectl delete -n demo backupconfiguration pause-backup
    configs
        .delete(BC, &DeleteParams::default())
        .await
        .expect("backupconfiguration.stash.appscode.com \"pause-backup\" deleted");
    c.wait_for(
        "the BackupConfiguration to go (finalizer released)",
        SHORT,
        async || match c.raw::<BackupConfiguration>(BC).await {
            None => Ok(()),
            Some(bc) => Err(format!(
                "deletionTimestamp {} finalizers {}",
                bc["metadata"]["deletionTimestamp"], bc["metadata"]["finalizers"]
            )),
        },
    )
    .await;
    let removed = c
        .wait_for(
            "the sidecar's removal from Deployment stash-demo",
            SHORT,
            async || {
                let d = deployments.get(DEPLOY).await.map_err(|e| e.to_string())?;
                if container_names(&d) == ["busybox"] {
                    Ok(d)
                } else {
                    Err(format!("containers {:?}", container_names(&d)))
                }
            },
        )
        .await;
    assert_eq!(
        template(&removed),
        original_template,
        "removal restores the guide's pod template exactly"
    );
    assert!(
        !removed
            .annotations()
            .contains_key(guide::LAST_APPLIED_CONFIGURATION),
        "{:?}",
        removed.annotations()
    );
    // The template is new unless a ReplicaSet already has it: the deployment
    // controller then rolls back to that one instead of making another.
    let removed_template = template(&removed);
    if !templates.contains(&removed_template) {
        templates.push(removed_template);
    }
    let sets = settled_replica_sets(c, &uid, &templates, "after the removal").await;
    c.step(&format!(
        "sidecar removed; ReplicaSets settled: {}",
        names(&sets).join(", ")
    ));
    c.wait_for(
        "the CronJob to be garbage-collected (ownerReference to the BackupConfiguration)",
        LONG,
        async || match cronjobs.get_opt(CRONJOB).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(cj) => Err(format!(
                "still there, ownerReferences {:?}",
                cj.owner_references()
            )),
        },
    )
    .await;
    c.step("CronJob garbage-collected");
}

// ---------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------

/// docs/restore.md after the guide's backups, on a real cluster: the
/// testkit's [`RestoreGuide`] sections (walked by `guide::restore`) with this
/// cluster's mechanics. The backed-up file deleted, the RestoreSession
/// applied, `stash-init` back-filled by the controller (one more
/// ReplicaSet), `stash restore` run here as that init container would run
/// it, the file back byte for byte, the session `Succeeded` with its events;
/// a second replica's init container exits 0 without restoring; deleting
/// the session takes `stash-init` out again. What one section leaves for
/// the next:
struct RestoreWalk<'a> {
    c: &'a Cluster,
    /// The Deployment's uid and every pod template it has had (one
    /// ReplicaSet each).
    uid: String,
    templates: Vec<Value>,
    /// The backed-up file, and its bytes.
    file: PathBuf,
    backed_up: Vec<u8>,
    /// The Deployment before the RestoreSession, and with `stash-init`.
    before: Deployment,
    injected: Deployment,
    /// The ReplicaSet with `stash-init`.
    rs_init: String,
    /// The session once Succeeded.
    done: Value,
}

impl<'a> RestoreWalk<'a> {
    fn new(c: &'a Cluster, uid: String, templates: Vec<Value>) -> Self {
        Self {
            c,
            uid,
            templates,
            file: c.p("source/data/data.txt"),
            backed_up: Vec::new(),
            before: Deployment::default(),
            injected: Deployment::default(),
            rs_init: String::new(),
            done: Value::Null,
        }
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.c.client.clone(), &self.c.ns)
    }

    fn restores(&self) -> Api<RestoreSession> {
        Api::namespaced(self.c.client.clone(), &self.c.ns)
    }
}

impl RestoreGuide for RestoreWalk<'_> {
    async fn lose_data(&mut self) {
        self.backed_up = std::fs::read(&self.file).expect("the backed-up file");
        // $ kubectl exec … -- rm /source/data/data.txt
        std::fs::remove_file(&self.file).unwrap();
    }

    /// $ kubectl apply -f manifests/restore/restoresession.yaml (its path in the temp dir)
    async fn apply_restore_session(&mut self) {
        let c = self.c;
        self.before = self.deployments().get(DEPLOY).await.unwrap();
        let rs: RestoreSession =
            serde_json::from_value(guide::restore_session_on(&c.ns, &c.p("source/data"))).unwrap();
        self.restores()
            .create(&PostParams::default(), &rs)
            .await
            .expect("restoresession.stash.appscode.com/restore-stash-demo created");
        c.step(&format!("RestoreSession {RESTORE} created"));
    }

    /// The controller back-fills stash-init and marks the session Running.
    async fn init_back_filled(&mut self) {
        let c = self.c;
        let deployments = self.deployments();
        let injected = c
            .wait_for(
                "the stash-init container in Deployment stash-demo",
                SHORT,
                async || {
                    let d = deployments.get(DEPLOY).await.map_err(|e| e.to_string())?;
                    if init_container_names(&d) == ["stash-init"] {
                        Ok(d)
                    } else {
                        Err(format!("initContainers {:?}", init_container_names(&d)))
                    }
                },
            )
            .await;
        assert_eq!(
            injected.annotations().get(guide::LAST_APPLIED_RESTORE),
            Some(&RESTORE.to_string())
        );
        assert_eq!(
            container_names(&injected),
            container_names(&self.before),
            "the containers stay"
        );
        self.templates.push(template(&injected));
        let sets = settled_replica_sets(c, &self.uid, &self.templates, "after stash-init").await;
        c.step(&format!(
            "stash-init back-filled; ReplicaSets settled: {}",
            names(&sets).join(", ")
        ));
        c.wait_for("RestoreSession Running", SHORT, async || {
            let rs = c.raw::<RestoreSession>(RESTORE).await.ok_or("gone")?;
            if rs["status"]["phase"] == "Running" && rs["status"]["totalHosts"] == 1 {
                Ok(())
            } else {
                Err(format!("status {}", rs["status"]))
            }
        })
        .await;
        // $ kubectl get restoresession -n demo
        assert_eq!(
            columns::<RestoreSession>(c, &c.raw::<RestoreSession>(RESTORE).await.unwrap()).await,
            guide::restore_columns("Running"),
        );
        // The pods of the new ReplicaSet run stash-init.
        self.rs_init = sets
            .iter()
            .find(|rs| rs_template(rs) == template(&injected))
            .expect("the ReplicaSet with stash-init")
            .name_any();
        self.injected = injected;
    }

    /// The init container of a pod of the new ReplicaSet, run here.
    async fn init_restores(&mut self) {
        let first_pod = format!("{}-e2e00", self.rs_init);
        run_init(self.c, &self.injected, &first_pod).await;
        assert_eq!(
            std::fs::read(&self.file).expect("data.txt is back"),
            self.backed_up,
            "restored byte for byte"
        );
    }

    async fn restore_succeeded(&mut self) {
        let c = self.c;
        let done = c
            .wait_for("RestoreSession Succeeded", SHORT, async || {
                let rs = c.raw::<RestoreSession>(RESTORE).await.ok_or("gone")?;
                if rs["status"]["phase"] == "Succeeded" {
                    Ok(rs)
                } else {
                    Err(format!("status {}", rs["status"]))
                }
            })
            .await;
        let stats = done["status"]["stats"]
            .as_array()
            .expect("the host's stats");
        assert_eq!(stats.len(), 1, "{}", done["status"]);
        assert_eq!(stats[0]["hostname"], HOST);
        assert_eq!(stats[0]["phase"], "Succeeded");
        assert!(done["status"]["sessionDuration"].is_string());
        // $ kubectl get restoresession -n demo
        assert_eq!(
            columns::<RestoreSession>(c, &done).await,
            guide::restore_columns("Succeeded"),
        );
        // $ kubectl describe restoresession -n demo restore-stash-demo
        // Sorted: a real cluster's events are only ordered to the second.
        let mut want = guide::restore_events();
        want.sort();
        let events = async || {
            let mut seen = c.events("RestoreSession", RESTORE).await;
            seen.sort();
            if seen == want {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        };
        c.wait_for("the RestoreSession's events", SHORT, events)
            .await;
        c.step("restored: data.txt byte-identical; RestoreSession Succeeded with its events");
        self.done = done;
    }

    /// A second replica (same host-0) finds its host done: exit 0, no restore.
    async fn init_again_restores_nothing(&mut self) {
        let c = self.c;
        std::fs::write(&self.file, "changed after the restore\n").unwrap();
        run_init(c, &self.injected, &format!("{}-e2e01", self.rs_init)).await;
        assert_eq!(
            std::fs::read_to_string(&self.file).unwrap(),
            "changed after the restore\n",
            "not restored twice"
        );
        let again = c.raw::<RestoreSession>(RESTORE).await.unwrap();
        assert_eq!(again["status"]["stats"], self.done["status"]["stats"]);
        std::fs::write(&self.file, &self.backed_up).unwrap();
    }

    /// $ kubectl delete restoresession -n demo restore-stash-demo
    async fn clean_up(&mut self) {
        let c = self.c;
        let deployments = self.deployments();
        self.restores()
            .delete(RESTORE, &DeleteParams::default())
            .await
            .expect("restoresession.stash.appscode.com \"restore-stash-demo\" deleted");
        c.wait_for(
            "the RestoreSession to go (finalizer released)",
            SHORT,
            async || match c.raw::<RestoreSession>(RESTORE).await {
                None => Ok(()),
                Some(rs) => Err(format!(
                    "deletionTimestamp {} finalizers {}",
                    rs["metadata"]["deletionTimestamp"], rs["metadata"]["finalizers"]
                )),
            },
        )
        .await;
        let removed = c
            .wait_for(
                "the stash-init container's removal from Deployment stash-demo",
                SHORT,
                async || {
                    let d = deployments.get(DEPLOY).await.map_err(|e| e.to_string())?;
                    if init_container_names(&d).is_empty() {
                        Ok(d)
                    } else {
                        Err(format!("initContainers {:?}", init_container_names(&d)))
                    }
                },
            )
            .await;
        assert_eq!(
            template(&removed),
            template(&self.before),
            "the pod template is the backup's again"
        );
        // Back to the sidecar's ReplicaSet: no new one.
        let sets =
            settled_replica_sets(c, &self.uid, &self.templates, "after removing stash-init").await;
        c.step(&format!(
            "RestoreSession deleted, stash-init removed; ReplicaSets settled: {}",
            names(&sets).join(", ")
        ));
    }
}

/// The Secret the volume at the secret mount of `mounts` names, as the API
/// server returns it: what the kubelet writes into that volume.
async fn mounted_secret(c: &Cluster, mounts: &Mounts<'_>) -> Value {
    let name = mounts.secret_name();
    let secret = Api::<Secret>::namespaced(c.client.clone(), &c.ns)
        .get(&name)
        .await
        .unwrap_or_else(|e| panic!("the storage Secret {name}: {e}"));
    serde_json::to_value(secret).unwrap()
}

/// Runs `stash restore` here to completion as the kubelet would start the
/// Deployment's `stash-init` container in pod `pod`: its args, its env from
/// the downward API, its own volumes laid out by the testkit's kubelet
/// ([`Mounts::lay_out`]: the Secret's keys as files, `tmp-dir` a temp dir);
/// the data volume and the local backend are this machine's paths already.
/// Exit 0 or the test fails.
async fn run_init(c: &Cluster, deploy: &Deployment, pod: &str) {
    let deploy_json = serde_json::to_value(deploy).unwrap();
    let pod_spec = &deploy_json["spec"]["template"]["spec"];
    let init = &pod_spec["initContainers"][0];
    assert_eq!(init["name"], "stash-init", "stash-init comes first");
    assert_eq!(init["image"], IMAGE);
    let mounts = Mounts::of(pod_spec, init);
    mounts.assert_restore_mounts(&c.p("source/data"), &c.p("repo"));
    let dirs = mounts.lay_out(&c.p(pod), &mounted_secret(c, &mounts).await);
    let args = dirs.args(guide::args(init));
    assert_eq!(args[0], "restore");
    assert!(
        args.contains(&format!("--restoresession={RESTORE}")),
        "{args:?}"
    );
    let env = guide_env(&init["env"], &c.ns, pod, "");
    let identity = bound_identity(c, &pod_service_account(pod_spec), SIDECAR_ROLE).await;
    c.step(&format!(
        "stash-init of pod {pod}: stash {}",
        args.join(" ")
    ));
    let out = e2e::run_stash(Some(&identity), &args, &env).await;
    if !out.trim().is_empty() {
        c.step(out.trim());
    }
}

/// Pause, trigger (Skipped: exit 1, nothing created), resume and trigger
/// `--wait` (Succeeded, one new snapshot) with `kubectl stash`, as the
/// cluster's admin, while the sidecar process runs.
async fn plugin_walk(c: &Cluster) {
    let admin = c.settings.kubeconfig.clone();
    let ns = c.ns.as_str();
    let (ok, out, err) =
        e2e::run_plugin(&admin, &["pause", "backup", "-n", ns, "--backupconfig", BC]).await;
    assert!(
        ok && out.contains(&format!("{BC} paused")),
        "pause: {out}{err}"
    );
    let (ok, out, err) = e2e::run_plugin(&admin, &["trigger", "-n", ns, BC]).await;
    assert!(!ok, "a trigger while paused exits non-zero: {out}{err}");
    assert!(err.contains("is paused"), "it says why: {err}");
    let (ok, out, err) = e2e::run_plugin(
        &admin,
        &["resume", "backup", "-n", ns, "--backupconfig", BC],
    )
    .await;
    assert!(
        ok && out.contains(&format!("{BC} resumed")),
        "resume: {out}{err}"
    );
    let before = guide::restic_snapshots(&c.p("repo"));
    let (ok, out, err) = e2e::run_plugin(
        &admin,
        &["trigger", "-n", ns, BC, "--wait", "--timeout", "300s"],
    )
    .await;
    assert!(
        ok && out.contains("Succeeded"),
        "trigger --wait: {out}{err}"
    );
    assert_eq!(
        guide::restic_snapshots(&c.p("repo")).len(),
        before.len() + 1,
        "one new snapshot: {out}"
    );
    c.step("kubectl stash: paused, trigger refused (paused), resumed, trigger --wait Succeeded");
}

/// `kubectl patch backupconfiguration … --type=merge --patch='{"spec": {"paused": …}}'`,
/// then waits for the reconciler to have seen the new generation.
async fn patch_paused(c: &Cluster, paused: bool) {
    let configs: Api<BackupConfiguration> = Api::namespaced(c.client.clone(), &c.ns);
    configs
        .patch(
            BC,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": paused}})),
        )
        .await
        .expect("backupconfiguration.stash.appscode.com/pause-backup patched");
    c.wait_for(
        &format!("the reconciler to observe paused={paused}"),
        SHORT,
        async || {
            let bc = c.raw::<BackupConfiguration>(BC).await.ok_or("gone")?;
            let (generation, observed) = (
                &bc["metadata"]["generation"],
                &bc["status"]["observedGeneration"],
            );
            if generation == observed {
                Ok(())
            } else {
                Err(format!(
                    "generation {generation}, observedGeneration {observed}"
                ))
            }
        },
    )
    .await;
}

/// The pods do not restart: the Deployment's pod template and generation stay,
/// and no ReplicaSet comes or goes, for [`SETTLE`].
async fn no_restart(c: &Cluster, before: &Deployment, uid: &str, rs_names: &[String], when: &str) {
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), &c.ns);
    c.holds_for(&format!("no restart {when}"), SETTLE, async || {
        let d = deployments.get(DEPLOY).await.map_err(|e| e.to_string())?;
        if template(&d) != template(before) {
            return Err(format!(
                "the pod template changed: {}",
                serde_json::to_string(&template(&d)).unwrap()
            ));
        }
        if d.metadata.generation != before.metadata.generation {
            return Err(format!(
                "Deployment generation {:?} → {:?}",
                before.metadata.generation, d.metadata.generation
            ));
        }
        let sets = c.replica_sets(uid).await;
        if names(&sets) != rs_names {
            return Err(format!("ReplicaSets now: {}", describe_replica_sets(&sets)));
        }
        Ok(())
    })
    .await;
}

/// Waits until the Deployment's ReplicaSets are exactly one per template of
/// `templates`, then checks they stay exactly those for [`SETTLE`].
async fn settled_replica_sets(
    c: &Cluster,
    uid: &str,
    templates: &[Value],
    when: &str,
) -> Vec<ReplicaSet> {
    let sets = c
        .wait_for(
            &format!("one ReplicaSet per pod template {when}"),
            SHORT,
            async || {
                let sets = c.replica_sets(uid).await;
                one_per_template(&sets, templates).map(|()| sets)
            },
        )
        .await;
    let settled = names(&sets);
    c.holds_for(
        &format!("the ReplicaSet count {when}"),
        SETTLE,
        async || {
            let now = c.replica_sets(uid).await;
            if names(&now) == settled {
                Ok(())
            } else {
                Err(format!(
                    "settled at {} ReplicaSets, now {}: {}",
                    settled.len(),
                    now.len(),
                    describe_replica_sets(&now)
                ))
            }
        },
    )
    .await;
    sets
}

fn one_per_template(sets: &[ReplicaSet], templates: &[Value]) -> Result<(), String> {
    let ok = sets.len() == templates.len()
        && templates
            .iter()
            .all(|t| sets.iter().filter(|rs| rs_template(rs) == *t).count() == 1);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} pod templates, {}",
            templates.len(),
            describe_replica_sets(sets)
        ))
    }
}

/// Starts `stash run-backup` here as the kubelet would start the injected
/// container: its args, its env from the downward API (a pod of the
/// injected ReplicaSet, when the controller made one), its own volumes laid
/// out by the testkit's kubelet ([`Mounts::lay_out`]: the Secret's keys as
/// files, the `tmp-dir` emptyDir as a temp dir).
async fn start_sidecar(c: &Cluster, deploy: &Deployment, uid: &str) {
    let deploy_json = serde_json::to_value(deploy).unwrap();
    let pod_spec = &deploy_json["spec"]["template"]["spec"];
    let container = guide::container(pod_spec, "stash");
    let mounts = Mounts::of(pod_spec, container);
    let dirs = mounts.lay_out(&c.p("pod"), &mounted_secret(c, &mounts).await);

    // A pod of the injected ReplicaSet, if the replicaset controller made one.
    let sets = c.replica_sets(uid).await;
    let rs = sets
        .iter()
        .find(|rs| rs_has_sidecar(rs))
        .expect("the injected ReplicaSet");
    let rs_uid = rs.uid().unwrap();
    let pods = Api::<Pod>::namespaced(c.client.clone(), &c.ns)
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items;
    let pod = pods
        .iter()
        .find(|p| p.owner_references().iter().any(|o| o.uid == rs_uid));
    let pod_name = pod
        .map(|p| p.name_any())
        .unwrap_or_else(|| format!("{}-e2e00", rs.name_any()));
    let node = pod
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();

    let mut args = dirs.args(guide::args(container));
    assert_eq!(args[0], "run-backup");
    guide::set_flag(&mut args, "--metrics-listen", "off");
    let env = guide_env(&container["env"], &c.ns, &pod_name, &node);
    for want in ["POD_NAME", "POD_NAMESPACE", "NODE_NAME"] {
        assert!(
            env.iter().any(|(k, _)| k == want),
            "the sidecar gets {want}: {env:?}"
        );
    }
    let identity = bound_identity(c, &pod_service_account(pod_spec), SIDECAR_ROLE).await;
    c.spawn("run-backup", &identity, &args, &env);
    c.step(&format!("run-backup started as pod {pod_name}"));
}

/// A container's `env` as the kubelet resolves it for pod `pod` in `ns` on `node`.
fn guide_env(env: &Value, ns: &str, pod: &str, node: &str) -> Vec<(String, String)> {
    guide::Pod {
        namespace: ns,
        name: pod,
        node,
    }
    .env(env)
}

/// The CronJob fires: its container's args and env, run here to completion.
async fn cron_fires(c: &Cluster, cron: &CronJob) {
    let cron = serde_json::to_value(cron).unwrap();
    let container = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let args = guide::args(container);
    let pod = format!(
        "{CRONJOB}-{}-e2e00",
        jiff::Timestamp::now().as_second() / 60
    );
    let env = guide_env(&container["env"], &c.ns, &pod, "");
    let pod_spec = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let account = pod_service_account(pod_spec);
    assert_eq!(
        account, CRONJOB,
        "the CronJob runs as its own ServiceAccount"
    );
    let identity = bound_identity(c, &account, CRON_JOB_ROLE).await;
    c.step(&format!("the CronJob fires: stash {}", args.join(" ")));
    e2e::run_stash(Some(&identity), &args, &env).await;
}

/// The ServiceAccount a pod of `pod_spec` runs as: `serviceAccountName`
/// (or the deprecated `serviceAccount`), else `default`.
fn pod_service_account(pod_spec: &Value) -> String {
    ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|k| pod_spec[*k].as_str().filter(|s| !s.is_empty()))
        .unwrap_or("default")
        .to_string()
}

/// Waits until ServiceAccount `account` of the test's namespace exists and
/// a RoleBinding there binds it to ClusterRole `role` (the reconciler makes
/// both; `default` comes from the serviceaccount controller), then a
/// kubeconfig for it: the identity a pod running as it has.
async fn bound_identity(c: &Cluster, account: &str, role: &str) -> std::path::PathBuf {
    let accounts: Api<ServiceAccount> = Api::namespaced(c.client.clone(), &c.ns);
    let bindings: Api<RoleBinding> = Api::namespaced(c.client.clone(), &c.ns);
    c.wait_for(
        &format!("ServiceAccount {account} bound to ClusterRole {role}"),
        SHORT,
        async || {
            if accounts
                .get_opt(account)
                .await
                .map_err(|e| e.to_string())?
                .is_none()
            {
                return Err(format!("no ServiceAccount {account}"));
            }
            let list = bindings
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let bound: Vec<String> = list
                .items
                .iter()
                .filter(|rb| binds(rb, &c.ns, account, role))
                .map(|rb| rb.name_any())
                .collect();
            if bound.is_empty() {
                Err(format!(
                    "RoleBindings {:?}, none binds it to {role}",
                    list.items
                        .iter()
                        .map(|rb| rb.name_any())
                        .collect::<Vec<_>>()
                ))
            } else {
                Ok(bound)
            }
        },
    )
    .await;
    c.kubeconfig_for(&c.ns, account).await
}

/// Whether `rb` binds ServiceAccount `ns/account` to ClusterRole `role`.
fn binds(rb: &RoleBinding, ns: &str, account: &str, role: &str) -> bool {
    rb.role_ref.kind == "ClusterRole"
        && rb.role_ref.name == role
        && rb.subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount" && s.name == account && s.namespace.as_deref() == Some(ns)
        })
}

/// `kubectl apply -f backupsession.yaml`, the session named `name`.
async fn create_instant(c: &Cluster, name: &str) {
    let mut session = guide::instant_session(&c.ns);
    session["metadata"]["name"] = json!(name);
    let session: BackupSession = serde_json::from_value(session).unwrap();
    Api::<BackupSession>::namespaced(c.client.clone(), &c.ns)
        .create(&PostParams::default(), &session)
        .await
        .unwrap_or_else(|e| panic!("create BackupSession {name}: {e}"));
    c.step(&format!("BackupSession {name} created"));
}

async fn session_names(c: &Cluster) -> Vec<String> {
    let mut names: Vec<String> = Api::<BackupSession>::namespaced(c.client.clone(), &c.ns)
        .list(&ListParams::default())
        .await
        .expect("list backupsessions")
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    names.sort();
    names
}

/// Waits for session `name` to reach phase `want` (failing at once on
/// another finished phase); the session as stored.
async fn session_finishes(c: &Cluster, name: &str, want: &str) -> Value {
    c.wait_for(&format!("BackupSession {name} {want}"), LONG, async || {
        let s = c
            .raw::<BackupSession>(name)
            .await
            .ok_or_else(|| "the session is gone".to_string())?;
        let phase = s["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if phase == want {
            Ok(s)
        } else if ["Succeeded", "Failed", "Skipped"].contains(&phase.as_str()) {
            panic!(
                "BackupSession {name} ended {phase}, not {want}: {}\nrun-backup log:\n{}",
                s["status"],
                c.log_tail("run-backup", 30)
            );
        } else {
            Err(format!("phase {phase:?}, status {}", s["status"]))
        }
    })
    .await
}

/// Session `name` Succeeds: the host's stats name exactly one new restic
/// snapshot (of this host and path), the Repository counts `total`
/// snapshots, and the events are the sidecar's and the controller's.
async fn backup_succeeds(c: &Cluster, name: &str, before: &[Value], total: usize) {
    let done = session_finishes(c, name, "Succeeded").await;
    let after = guide::restic_snapshots(&c.p("repo"));
    let new: Vec<&Value> = after
        .iter()
        .filter(|s| !before.iter().any(|b| b["id"] == s["id"]))
        .collect();
    assert_eq!(new.len(), 1, "exactly one new restic snapshot: {after:#?}");
    assert_eq!(after.len(), total, "{after:#?}");
    let snap = new[0];
    assert_eq!(snap["hostname"], HOST, "{snap}");
    assert_eq!(
        snap["paths"],
        json!([c.p("source/data").display().to_string()])
    );
    // $ kubectl get backupsession -n demo
    assert_eq!(
        columns::<BackupSession>(c, &done).await,
        guide::session_columns("Succeeded"),
    );
    let status = &done["status"];
    assert_eq!(status["totalHosts"], 1, "{status}");
    let stats = status["stats"].as_array().expect("the host's stats");
    assert_eq!(stats.len(), 1, "{status}");
    assert_eq!(stats[0]["hostname"], HOST, "{status}");
    assert_eq!(stats[0]["phase"], "Succeeded", "{status}");
    let snapshots = stats[0]["snapshots"].as_array().expect("snapshot stats");
    assert_eq!(snapshots.len(), 1, "{status}");
    assert_eq!(
        snapshots[0]["name"], snap["short_id"],
        "the session names restic's snapshot"
    );
    c.wait_for(
        &format!("Repository gcs-repo status.snapshotCount = {total}, integrity = true"),
        SHORT,
        async || {
            let repo = c.raw::<Repository>(REPO).await.ok_or("gone")?;
            if repo["status"]["snapshotCount"] == total && repo["status"]["integrity"] == true {
                Ok(())
            } else {
                Err(format!("status {}", repo["status"]))
            }
        },
    )
    .await;
    // $ kubectl describe backupsession -n demo <name>
    let want = guide::backup_succeeded_events();
    c.wait_for(
        &format!("the events of BackupSession {name}"),
        SHORT,
        async || {
            let mut seen = c.events("BackupSession", name).await;
            seen.sort();
            if seen == want {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------
// Reading objects
// ---------------------------------------------------------------------------

/// The BackupConfiguration's conditions, for failure messages: where the
/// reconciler reports a write the API server refused (RBAC, a policy).
async fn bc_conditions(c: &Cluster) -> String {
    let conditions = c
        .raw::<BackupConfiguration>(BC)
        .await
        .map_or(Value::Null, |bc| bc["status"]["conditions"].clone());
    format!("BackupConfiguration conditions {conditions}")
}

/// `kubectl get <kind>`'s columns of `object` from the CRD on the cluster
/// (`additionalPrinterColumns`): the names must be the guide's, AGE must be
/// set; the other (column, value) pairs are returned.
async fn columns<K>(c: &Cluster, object: &Value) -> Vec<(String, String)>
where
    K: Resource<DynamicType = ()>,
{
    let crd_name = format!("{}.{}", K::plural(&()), K::group(&()));
    let crd = Api::<CustomResourceDefinition>::all(c.client.clone())
        .get(&crd_name)
        .await
        .unwrap_or_else(|e| panic!("get CRD {crd_name}: {e}"));
    let version = K::version(&());
    let served = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == version)
        .unwrap_or_else(|| panic!("CRD {crd_name} serves {version}"));
    let kind = K::kind(&());
    let shown = guide::default_view(
        served
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default(),
        object,
    );
    guide::check_guide_columns(&kind, &shown, object)
}

fn init_container_names(d: &Deployment) -> Vec<String> {
    guide::init_container_names(&template(d))
}

fn container_names(d: &Deployment) -> Vec<String> {
    guide::container_names(&template(d))
}

/// The Deployment's `stash` container, as JSON.
fn sidecar_container(d: &Deployment) -> Value {
    guide::container(&template(d)["spec"], "stash").clone()
}

/// The Deployment's pod template, as JSON.
fn template(d: &Deployment) -> Value {
    serde_json::to_value(&d.spec.as_ref().expect("a Deployment has a spec").template).unwrap()
}

/// A ReplicaSet's pod template without the deployment controller's
/// `pod-template-hash` label: what it compares with the Deployment's.
fn rs_template(rs: &ReplicaSet) -> Value {
    let mut t = serde_json::to_value(rs.spec.as_ref().and_then(|s| s.template.as_ref())).unwrap();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
    }
    t
}

fn rs_has_sidecar(rs: &ReplicaSet) -> bool {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.spec.as_ref())
        .is_some_and(|s| s.containers.iter().any(|c| c.name == "stash"))
}

fn names(sets: &[ReplicaSet]) -> Vec<String> {
    let mut names: Vec<String> = sets.iter().map(|rs| rs.name_any()).collect();
    names.sort();
    names
}

/// `kubectl get rs`, for failure messages.
fn describe_replica_sets(sets: &[ReplicaSet]) -> String {
    let rows: Vec<String> = sets
        .iter()
        .map(|rs| {
            format!(
                "{} (revision {}, sidecar {}, desired {}, created {})",
                rs.name_any(),
                rs.annotations()
                    .get("deployment.kubernetes.io/revision")
                    .map_or("?", String::as_str),
                rs_has_sidecar(rs),
                rs.spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .unwrap_or_default(),
                rs.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    format!("{} ReplicaSets: [{}]", sets.len(), rows.join("; "))
}

// ---------------------------------------------------------------------------
// The helpers that need no cluster
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_runs_as_its_service_account_or_default() {
        assert_eq!(pod_service_account(&json!({"containers": []})), "default");
        assert_eq!(
            pod_service_account(&json!({"serviceAccountName": ""})),
            "default"
        );
        assert_eq!(
            pod_service_account(&json!({"serviceAccountName": CRONJOB})),
            CRONJOB
        );
        assert_eq!(
            pod_service_account(&json!({"serviceAccount": "old"})),
            "old"
        );
    }

    #[test]
    fn a_binding_counts_only_for_that_account_role_and_namespace() {
        let rb = |role_kind: &str, role: &str, sa_ns: &str, sa: &str| -> RoleBinding {
            serde_json::from_value(json!({
                "metadata": {"name": "b", "namespace": "t"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}]
            }))
            .unwrap()
        };
        assert!(binds(
            &rb("ClusterRole", SIDECAR_ROLE, "t", "default"),
            "t",
            "default",
            SIDECAR_ROLE
        ));
        assert!(!binds(
            &rb("Role", SIDECAR_ROLE, "t", "default"),
            "t",
            "default",
            SIDECAR_ROLE
        ));
        assert!(!binds(
            &rb("ClusterRole", CRON_JOB_ROLE, "t", "default"),
            "t",
            "default",
            SIDECAR_ROLE
        ));
        assert!(!binds(
            &rb("ClusterRole", SIDECAR_ROLE, "u", "default"),
            "t",
            "default",
            SIDECAR_ROLE
        ));
        assert!(!binds(
            &rb("ClusterRole", SIDECAR_ROLE, "t", "other"),
            "t",
            "default",
            SIDECAR_ROLE
        ));
    }

    #[test]
    fn the_server_runs_with_the_rendered_args_and_local_paths() {
        let options = install::options("t", IMAGE, CaBundle::Missing("ca".into()));
        let mut args = stash::manifests::server::server_args(&options);
        guide::set_flag(&mut args, "--listen", "0.0.0.0:9443");
        guide::set_flag(&mut args, "--shutdown-delay", "0s");
        assert!(
            args.contains(&"--listen=0.0.0.0:9443".to_string()),
            "{args:?}"
        );
        assert!(args.contains(&format!("--image={IMAGE}")), "{args:?}");
        assert!(
            args.contains(&"--namespace=stash-system".to_string()),
            "{args:?}"
        );
        assert_eq!(args.iter().filter(|a| a.starts_with("--listen")).count(), 1);
        assert_eq!(args.last().map(String::as_str), Some("--shutdown-delay=0s"));
    }
}
