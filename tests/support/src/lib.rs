//! One fake Kubernetes cluster for stash's tests, behaving like a real one
//! where stash depends on it. Two bugs once passed every test and broke the
//! product on a cluster: the workload webhook stripped the sidecar from the
//! ReplicaSets the deployment controller made (a ReplicaSet storm), and the
//! sidecar acted on a stale queued watch event. Fakes that deliver nothing
//! late and run no controllers cannot show either; this one can.
//!
//! - [`api_server`]: objects, resourceVersions, verbs and patch flavours,
//!   status subresource, finalizers, garbage collection, the request log;
//! - [`defaults`]: what kube-apiserver v1.36 defaults on the workloads
//!   stored, before admission and again after the mutating webhooks;
//! - [`admission`]: the install's webhooks called through the real
//!   `stash::admission::handle` on every write they are registered for;
//! - [`policy`]: the install's ValidatingAdmissionPolicies, evaluated with
//!   the `cel` crate on every write, answered 403 as kube-apiserver does;
//! - [`schema`]: stash's custom resources pruned to their CRD schemas;
//! - [`watch`]: list-then-watch streams with delay, bursts and forced relists;
//! - [`deployment_controller`]: ReplicaSets per pod template, through admission;
//! - [`rbac`]: every request of a stash identity checked against its
//!   ClusterRole, refused with 403 Forbidden when it does not allow it;
//! - [`restic`]: a backup test's temp dir, local repository and sidecar;
//! - [`scripted`]: a request-by-request mock, for tests that craft each answer;
//! - [`http`]: the cluster over plain HTTP, for a spawned `stash` process.
//!
//! Besides the cluster: [`tls`] (certificates on disk, a server on
//! 127.0.0.1:0, HTTP/1.1 and HTTP/2 clients), [`reviews`] (AdmissionReview
//! fixtures in, decoded answers out), [`big`] (large reviews for the
//! memory test and the load bench) and [`guide`] (the user's guides as
//! steps: their names, YAMLs, printed columns, events and order, for the
//! fake-cluster and the real-cluster walks).
//!
//! Use, from any test binary or bench (a dev-dependency of stash):
//! ```ignore
//! use stash_testkit as support;
//! let cluster = support::Cluster::new();
//! cluster.seed(deployment_json);                       // as if it were there already
//! let client = cluster.client(support::Identity::reconciler());
//! // … run stash code on `client` …
//! cluster.settle_deployments();                        // the deployment controller
//! assert_eq!(cluster.replica_sets("demo").len(), 1);
//! assert_eq!(cluster.forbidden_requests(), Vec::<String>::new());
//! ```
//! Everything is synchronous but the HTTP transport and the watch streams,
//! so a test decides when controllers run; nothing sleeps.

pub mod admission;
pub mod alloc;
pub mod api_server;
pub mod big;
pub mod container;
pub mod defaults;
pub mod deployment_controller;
pub mod guide;
pub mod http;
pub mod locks;
pub mod objects;
pub mod policy;
pub mod rbac;
pub mod restic;
pub mod reviews;
pub mod schema;
pub mod scripted;
pub mod tls;
pub mod watch;

/// The stash repository's root (fixtures, manifests and examples live there).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use stash::settings::Settings;

pub use admission::{Admitted, Status};
pub use api_server::{ApiRequest, ApiResponse, Recorded};
use api_server::{ChangeKind, Shared};
pub use deployment_controller::Rollout;
use objects::{Target, path_of};

/// Who makes a request: `userInfo` in admission reviews, and the
/// ClusterRole of the install it is bound to (checked by [`rbac`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub username: String,
    pub groups: Vec<String>,
    pub cluster_role: Option<&'static str>,
}

fn service_account(ns: &str, name: &str, role: Option<&'static str>) -> Identity {
    Identity {
        username: format!("system:serviceaccount:{ns}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        cluster_role: role,
    }
}

impl Identity {
    /// `kubectl` as the cluster's admin (no RBAC check).
    pub fn admin() -> Identity {
        Identity {
            username: "kubernetes-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            cluster_role: None,
        }
    }

    /// `stash serve`'s reconciler: ServiceAccount `stash-webhook` of `stash-system`.
    pub fn reconciler() -> Identity {
        service_account("stash-system", "stash-webhook", Some("stash-webhook"))
    }

    /// The backup CronJob's pod (`stash-backup-<bc>` in the configuration's namespace).
    pub fn cron_job(namespace: &str, bc: &str) -> Identity {
        service_account(
            namespace,
            &format!("stash-backup-{bc}"),
            Some("stash-cron-job"),
        )
    }

    /// The injected sidecar, running as the workload's ServiceAccount.
    pub fn sidecar(namespace: &str, service_account_name: &str) -> Identity {
        service_account(namespace, service_account_name, Some("stash-sidecar"))
    }

    /// kube-controller-manager's deployment controller.
    pub fn deployment_controller() -> Identity {
        service_account("kube-system", "deployment-controller", None)
    }
}

/// A successful write: the stored object and the warnings kubectl would print.
#[derive(Debug, Clone)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// A patch, as `kubectl patch --type` or a client sends it.
#[derive(Debug, Clone)]
pub enum PatchBody {
    Json(Value),
    Merge(Value),
    Strategic(Value),
    /// Server-side apply as `manager` (`--force-conflicts` when `force`).
    Apply {
        body: Value,
        manager: String,
        force: bool,
    },
}

/// The fake cluster. Cheap to clone; clones share the cluster.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

/// How long a test waits for something asynchronous (a watch) before failing.
pub const WAIT: Duration = Duration::from_secs(10);

impl Cluster {
    /// An empty cluster whose webhooks inject the default sidecar image.
    pub fn new() -> Cluster {
        Self::with_settings(Settings::default())
    }

    /// An empty cluster whose webhooks run with `settings`.
    pub fn with_settings(settings: Settings) -> Cluster {
        Cluster {
            shared: Shared::new(settings),
        }
    }

    /// The webhooks' settings.
    pub fn settings(&self) -> Settings {
        self.shared.read(|s| s.settings.clone())
    }

    /// A `kube::Client` whose every request this cluster serves as `identity`.
    pub fn client(&self, identity: Identity) -> kube::Client {
        api_server::client(self.shared.clone(), identity)
    }

    /// Serves this cluster over HTTP on 127.0.0.1, every request as
    /// `identity` ([`api_server::listen`]); the address to point a kube
    /// `Config` at (`http://<addr>`).
    pub async fn listen(&self, identity: Identity) -> std::io::Result<std::net::SocketAddr> {
        api_server::listen(self.shared.clone(), identity).await
    }

    // ---- reading -------------------------------------------------------

    /// The stored object at `path`, if any.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.shared.read(|s| s.objects.get(path).cloned())
    }

    /// The index `stash serve`'s feed holds once it has caught up with this
    /// cluster: every BackupConfiguration, Repository and RestoreSession.
    pub fn index(&self) -> Arc<stash::store::Store> {
        let snapshot = self.shared.read(|s| s.snapshot());
        Arc::new(stash::store::Store::from_snapshot(snapshot))
    }

    /// The stored object at `path`; the test fails when it does not exist.
    pub fn object(&self, path: &str) -> Value {
        self.get(path)
            .unwrap_or_else(|| panic!("{path} does not exist"))
    }

    /// The stored object at `path`, typed.
    pub fn typed<K: serde::de::DeserializeOwned>(&self, path: &str) -> K {
        serde_json::from_value(self.object(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Runs `pass` over the object at `path` as its watch would: again after
    /// a pass that only added stash's finalizer (kube-runtime's finalizer
    /// helper ends that pass there, and the patch's own watch event brings
    /// the next). Returns the last pass's result (an error ends it), or
    /// `None` once the object is gone.
    pub async fn reconcile_as_watched<K, T, E, Fut>(
        &self,
        path: &str,
        mut pass: impl FnMut(K) -> Fut,
    ) -> Option<Result<T, E>>
    where
        K: kube::Resource + serde::de::DeserializeOwned,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        loop {
            let obj: K =
                serde_json::from_value(self.get(path)?).unwrap_or_else(|e| panic!("{path}: {e}"));
            let meta = obj.meta();
            let adds_finalizer = meta.deletion_timestamp.is_none()
                && !meta
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == stash::api::FINALIZER);
            let result = pass(obj).await;
            if result.is_err() || !adds_finalizer {
                return Some(result);
            }
        }
    }

    /// One reconcile of the BackupConfiguration at `path`, as its watch
    /// would trigger it ([`Cluster::reconcile_as_watched`]); it must exist
    /// and the reconcile succeed.
    pub async fn reconcile_configuration(
        &self,
        path: &str,
        ctx: &stash::reconcile::backup_configuration::Context,
    ) {
        use stash::reconcile::backup_configuration::reconcile_at;
        self.reconcile_as_watched(path, |bc: stash::api::BackupConfiguration| async move {
            reconcile_at(&bc, ctx, jiff::Timestamp::now()).await
        })
        .await
        .expect("the BackupConfiguration exists")
        .expect("BackupConfiguration reconcile");
    }

    /// `kubectl get` of a collection path, with an optional label selector.
    pub fn list(&self, collection: &str, label_selector: Option<&str>) -> Vec<Value> {
        let target = Target::parse(collection).expect("a collection path");
        let query = label_selector
            .map(|l| format!("labelSelector={l}"))
            .unwrap_or_default();
        self.shared.read(|s| s.select(&target, &query))
    }

    /// Every stored path starting with `prefix`, sorted.
    pub fn paths_under(&self, prefix: &str) -> Vec<String> {
        self.shared.read(|s| {
            s.objects
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect()
        })
    }

    /// `kubectl get rs -n <namespace>`.
    pub fn replica_sets(&self, namespace: &str) -> Vec<Value> {
        self.list(
            &format!("/apis/apps/v1/namespaces/{namespace}/replicasets"),
            None,
        )
    }

    /// The last resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.shared.read(|s| s.rv)
    }

    // ---- writing through the API server ---------------------------------

    /// Serves one request as if it came over HTTP (logged, admitted).
    pub fn request(&self, request: ApiRequest) -> ApiResponse {
        self.shared.with(|s| s.handle(&request))
    }

    fn written(response: ApiResponse) -> Result<Written, Status> {
        match response.status() {
            Some(status) => Err(status),
            None => Ok(Written {
                object: response.body,
                warnings: response.warnings,
            }),
        }
    }

    /// `kubectl create -f`: POST to the object's collection.
    pub fn create(&self, identity: Identity, object: Value) -> Result<Written, Status> {
        let path = path_of(&object);
        let collection = path.rsplit_once('/').expect("a path").0.to_string();
        Self::written(self.request(ApiRequest {
            method: "POST".into(),
            path: collection,
            query: String::new(),
            content_type: "application/json".into(),
            body: object,
            identity,
        }))
    }

    /// `kubectl replace -f`: PUT (the body's resourceVersion, if any, is a precondition).
    pub fn put(&self, identity: Identity, object: Value) -> Result<Written, Status> {
        let path = path_of(&object);
        Self::written(self.request(ApiRequest {
            method: "PUT".into(),
            path,
            query: String::new(),
            content_type: "application/json".into(),
            body: object,
            identity,
        }))
    }

    /// `kubectl patch` of the object (or subresource) at `path`.
    pub fn patch(
        &self,
        identity: Identity,
        path: &str,
        patch: PatchBody,
    ) -> Result<Written, Status> {
        let (content_type, body, query) = match patch {
            PatchBody::Json(b) => ("application/json-patch+json", b, String::new()),
            PatchBody::Merge(b) => ("application/merge-patch+json", b, String::new()),
            PatchBody::Strategic(b) => ("application/strategic-merge-patch+json", b, String::new()),
            PatchBody::Apply {
                body,
                manager,
                force,
            } => (
                "application/apply-patch+yaml",
                body,
                format!("fieldManager={manager}&force={force}"),
            ),
        };
        Self::written(self.request(ApiRequest {
            method: "PATCH".into(),
            path: path.into(),
            query,
            content_type: content_type.into(),
            body,
            identity,
        }))
    }

    /// `kubectl delete`: finalizers make it a deletionTimestamp first.
    pub fn delete(&self, identity: Identity, path: &str) -> Result<Value, Status> {
        Self::written(self.request(ApiRequest {
            method: "DELETE".into(),
            path: path.into(),
            query: String::new(),
            content_type: "application/json".into(),
            body: json!({"propagationPolicy": "Background"}),
            identity,
        }))
        .map(|w| w.object)
    }

    /// The admission chain's answer for a write of `object` (`old` on
    /// UPDATE) by `identity`, without storing anything.
    pub fn admit(
        &self,
        identity: Identity,
        operation: &str,
        object: Value,
        old: Option<Value>,
    ) -> Result<Admitted, Status> {
        let target = Target::parse(&path_of(&object)).expect("an object path");
        self.shared
            .with(|s| s.admit(&identity, &target, operation, object, old.as_ref(), true))
    }

    // ---- out of band: what a test sets up without a request -------------

    /// Stores `object` as if it had been there before the test (no
    /// admission, no log): defaulted as the API server stored it when it
    /// was written; uid, creationTimestamp and generation filled when
    /// missing; a resourceVersion it carries is kept and the cluster's
    /// counter moves past it.
    pub fn seed(&self, object: Value) -> Value {
        let path = path_of(&object);
        self.seed_at(&path, object)
    }

    /// [`Cluster::seed`] at an explicit path.
    pub fn seed_at(&self, path: &str, mut object: Value) -> Value {
        if let Some(t) = Target::parse(path) {
            defaults::apply(&t.group, &t.plural, &mut object);
        }
        self.shared.with(|s| {
            s.fill_created(&mut object);
            let given = object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|v| v.parse::<u64>().ok());
            match given {
                Some(rv) => {
                    s.rv = s.rv.max(rv);
                    s.record(path, object, ChangeKind::Added)
                }
                None => s.store(path, object, ChangeKind::Added),
            }
        })
    }

    /// Changes the stored object out of band, as another writer the test
    /// does not model would (no admission, no log, no generation logic, no
    /// defaulting: the object is stored as `f` leaves it): a new
    /// resourceVersion and a MODIFIED watch event.
    pub fn edit(&self, path: &str, f: impl FnOnce(&mut Value)) -> Value {
        self.shared.with(|s| {
            let mut obj = s
                .objects
                .get(path)
                .cloned()
                .unwrap_or_else(|| panic!("{path} does not exist"));
            f(&mut obj);
            s.store(path, obj, ChangeKind::Modified)
        })
    }

    /// Removes the stored object out of band (a DELETED watch event).
    pub fn remove(&self, path: &str) {
        self.shared.with(|s| {
            let obj = s.objects.get(path).cloned();
            if let Some(obj) = obj {
                s.store(path, obj, ChangeKind::Deleted);
            }
        });
    }

    /// Every write to `path` (and its subresources) is answered with `status`.
    pub fn refuse_writes(&self, path: &str, status: Status) {
        self.shared
            .with(|s| s.refused.insert(path.to_string(), status));
    }

    /// Right after each GET of `path`, someone else writes it (its
    /// resourceVersion moves on), as a concurrent writer would.
    pub fn change_after_get(&self, path: &str) {
        self.shared
            .with(|s| s.change_after_get.insert(path.to_string()));
    }

    // ---- the request log -------------------------------------------------

    /// How many requests have been served so far.
    pub fn mark(&self) -> usize {
        self.shared.read(|s| s.log.len())
    }

    /// Every request served, in order.
    pub fn log(&self) -> Vec<Recorded> {
        self.shared.read(|s| s.log.clone())
    }

    /// The requests served since `mark`.
    pub fn log_since(&self, mark: usize) -> Vec<Recorded> {
        self.shared.read(|s| s.log[mark..].to_vec())
    }

    /// The writes (method, path) served since `mark`, made by `user`
    /// (`None`: by anyone but the deployment controller).
    pub fn writes_by_since(&self, user: Option<&str>, mark: usize) -> Vec<(String, String)> {
        let controller = Identity::deployment_controller().username;
        self.log_since(mark)
            .into_iter()
            .filter(|r| r.is_write())
            .filter(|r| match user {
                Some(u) => r.user == u,
                None => r.user != controller,
            })
            .map(|r| (r.method, r.path))
            .collect()
    }

    /// The writes (method, path) since `mark`, but the deployment controller's.
    pub fn writes_since(&self, mark: usize) -> Vec<(String, String)> {
        self.writes_by_since(None, mark)
    }

    /// Every request of a stash identity that the install's RBAC refused
    /// (answered 403 Forbidden), as `role: message (method path)`.
    pub fn forbidden_requests(&self) -> Vec<String> {
        self.shared.read(|s| s.forbidden.clone())
    }

    // ---- watches -----------------------------------------------------------

    /// Every watch event is delivered no earlier than `delay` after its write.
    pub fn set_watch_delay(&self, delay: Duration) {
        self.shared.with(|s| s.watch.delay = delay);
    }

    /// Holds every event written from now on, until released.
    pub fn hold_watch_events(&self) {
        self.shared.with(|s| {
            if s.watch.gate.is_none() {
                s.watch.gate = Some(s.rv)
            }
        });
    }

    /// Releases every held event at once (a burst), and stops holding.
    pub fn release_watch_events(&self) {
        self.shared.with(|s| s.watch.gate = None);
    }

    /// Releases the next `n` held changes (of any collection), still holding the rest.
    pub fn release_watch_events_n(&self, n: u64) {
        self.shared.with(|s| {
            if let Some(g) = s.watch.gate.as_mut() {
                *g += n;
            }
        });
    }

    /// Ends every open watch with 410 Gone and refuses watches from older
    /// resourceVersions: the watchers relist and see only the latest state.
    pub fn force_relist(&self) {
        self.shared.with(|s| {
            s.watch.compacted = s.rv;
            s.watch.epoch += 1;
        });
    }

    /// Watches streaming right now.
    pub fn open_watches(&self) -> usize {
        self.shared.read(|s| s.watch.open)
    }

    /// Waits (at most [`WAIT`]) until at least `n` watches are streaming.
    pub async fn wait_for_open_watches(&self, n: usize) {
        let mut ticks = self.shared.tick.subscribe();
        tokio::time::timeout(WAIT, async {
            while self.open_watches() < n {
                ticks.changed().await.expect("the cluster is alive");
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} watches never opened ({} open)", self.open_watches()));
    }

    /// Waits (at most [`WAIT`]) until `f` holds of the cluster; it is checked after every change.
    pub async fn wait_until(&self, what: &str, f: impl Fn(&Cluster) -> bool) {
        let mut ticks = self.shared.tick.subscribe();
        tokio::time::timeout(WAIT, async {
            while !f(self) {
                ticks.changed().await.expect("the cluster is alive");
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
    }

    // ---- controllers -------------------------------------------------------

    /// Runs the deployment controller: sync passes over every Deployment
    /// until one writes nothing, at most `max_passes`.
    pub fn run_deployment_controller(&self, max_passes: usize) -> Rollout {
        let mut rollout = Rollout {
            passes: 0,
            settled: false,
            writes: 0,
        };
        while rollout.passes < max_passes {
            let writes = self.shared.with(deployment_controller::sync_pass);
            rollout.passes += 1;
            rollout.writes += writes;
            if writes == 0 {
                rollout.settled = true;
                break;
            }
        }
        rollout
    }

    /// [`Cluster::run_deployment_controller`] with room for any sane rollout (20 passes).
    pub fn settle_deployments(&self) -> Rollout {
        self.run_deployment_controller(20)
    }
}
