//! The in-memory API server: objects by URL path, one cluster-wide
//! resourceVersion counter, every change kept in order for the watches, and
//! the write semantics stash depends on:
//! - POST fills uid, creationTimestamp, generation and resourceVersion, 409
//!   AlreadyExists when the name is taken (`generateName` honoured);
//! - PUT, JSON patch, merge patch, strategic merge patch and server-side
//!   apply (creating on apply; conflicts between appliers unless `force`);
//! - a `metadata.resourceVersion` in a PUT/merge/apply body is a
//!   precondition (409 Conflict when stale); a failed JSON-patch `test` is 422;
//! - the status subresource changes only `status`; the main resource never
//!   changes `status` (for kinds that have the subresource); `generation`
//!   moves on when anything but metadata and status changes; a write that
//!   changes nothing is a no-op (no new resourceVersion, no watch event);
//! - DELETE of an object with finalizers sets `deletionTimestamp`; the write
//!   that empties the finalizers removes it; removal garbage-collects the
//!   objects it solely owns (ownerReferences), unless the policy is Orphan;
//! - stash's custom resources are pruned to their CRD schema; built-in
//!   workloads are defaulted as kube-apiserver v1.36 defaults them
//!   ([`super::defaults`]), before admission and again after the mutating
//!   webhooks; every write goes through [`super::admission`]: the webhooks
//!   the install registers and its ValidatingAdmissionPolicies
//!   ([`super::policy`]);
//! - a request of a stash identity that its ClusterRole does not allow is
//!   answered 403 Forbidden, worded as kube-apiserver words it
//!   ([`super::rbac`]), and changes nothing.
//!
//! - lists honour `limit` and `continue` (a continued list answers at the
//!   first page's resourceVersion, so a watch from there misses nothing),
//!   but not on `resourceVersion=0`, which kube-apiserver serves whole from
//!   its watch cache;
//!   an `Accept` of `as=PartialObjectMetadataList` (or `as=PartialObjectMetadata`
//!   on a watch) is answered with the objects' metadata only, as kube's
//!   `Api<PartialObjectMeta<K>>` asks;
//! - objects are indexed by collection and the index of stash's own kinds is
//!   kept up to date on every change, so lists, watches and admission cost
//!   what they touch, not the whole cluster (the scale bench seeds 110,000).
//!
//! Every request is logged with the identity that made it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

use stash::settings::Settings;

use super::Identity;
use super::admission::{self, Admitted, Status, Write};
use super::defaults;
use super::objects::{
    LabelSelector, Target, apply, field_selector_matches, has_status_subresource, kind_of, leaves,
    param, strategic_merge,
};
use super::policy::{self, Policies};
use super::rbac;
use super::schema;
use super::watch::{self, WatchKnobs};

/// The response body of the fake's transport.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One request the fake API server served.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `userInfo.username` of the caller.
    pub user: String,
    /// The caller's ClusterRole in the install, when it is one of stash's identities.
    pub cluster_role: Option<&'static str>,
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string ("" when none).
    pub query: String,
    pub content_type: String,
    /// Parsed JSON body (`Value::Null` when empty).
    pub body: Value,
    /// The HTTP status answered.
    pub code: u16,
}

impl Recorded {
    /// A query parameter's decoded value.
    pub fn param(&self, key: &str) -> Option<String> {
        param(&self.query, key)
    }

    /// Whether this request is a write (anything but GET).
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }

    pub fn is_watch(&self) -> bool {
        self.method == "GET" && matches!(self.param("watch").as_deref(), Some("true" | "1"))
    }
}

/// What kind of change a watch reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One stored change, in resourceVersion order.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub at: Instant,
    pub path: String,
    pub kind: ChangeKind,
    pub object: Value,
    pub previous: Option<Value>,
}

/// A request as the server handles it (HTTP or a test's direct call).
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
    pub identity: Identity,
}

/// The answer: status code, JSON body, warnings (HTTP `Warning` headers).
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub code: u16,
    pub body: Value,
    pub warnings: Vec<String>,
}

impl ApiResponse {
    fn ok(code: u16, body: Value, warnings: Vec<String>) -> Self {
        ApiResponse {
            code,
            body,
            warnings,
        }
    }

    fn error(status: Status) -> Self {
        ApiResponse {
            code: status.code,
            body: status.body(),
            warnings: Vec::new(),
        }
    }

    /// The Status of an error answer.
    pub fn status(&self) -> Option<Status> {
        (self.code >= 400).then(|| Status {
            code: self.code,
            reason: self.body["reason"].as_str().unwrap_or("").to_string(),
            message: self.body["message"].as_str().unwrap_or("").to_string(),
            details: self.body["details"].clone(),
        })
    }
}

/// Everything the API server holds.
pub struct State {
    pub objects: BTreeMap<String, Value>,
    /// The cluster-wide resourceVersion counter (the last one handed out).
    pub rv: u64,
    pub history: Vec<Change>,
    pub log: Vec<Recorded>,
    pub settings: Settings,
    pub serial: u64,
    pub watch: WatchKnobs,
    pub(crate) refused: BTreeMap<String, Status>,
    pub(crate) change_after_get: BTreeSet<String>,
    /// (object path, field manager) → last applied configuration.
    applied: BTreeMap<(String, String), Value>,
    /// The install's ValidatingAdmissionPolicies and bindings.
    pub policies: Policies,
    /// Every request RBAC refused (answered 403), as `role: message (method path)`.
    pub forbidden: Vec<String>,
    /// Collection path (cluster-wide and namespaced) → the paths of its objects.
    collections: HashMap<String, BTreeSet<String>>,
    /// What the webhook's index holds of the stored objects, kept current.
    index: stash::store::Snapshot,
}

/// The state and the tick that wakes the watches after every change.
pub struct Shared {
    state: Mutex<State>,
    pub(crate) tick: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    pub fn new(settings: Settings) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                rv: 0,
                history: Vec::new(),
                log: Vec::new(),
                serial: 0,
                watch: WatchKnobs::default(),
                refused: BTreeMap::new(),
                change_after_get: BTreeSet::new(),
                applied: BTreeMap::new(),
                policies: Policies::install(&settings.image),
                forbidden: Vec::new(),
                collections: HashMap::new(),
                index: stash::store::Snapshot::default(),
                settings,
            }),
            tick: tokio::sync::watch::channel(0).0,
        })
    }

    /// Runs `f` on the state, then wakes the watches.
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let out = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut state)
        };
        self.tick.send_modify(|t| *t += 1);
        out
    }

    /// Reads the state without waking anyone.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&state)
    }
}

fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now().as_second();
    jiff::Timestamp::from_second(now)
        .expect("a time of today")
        .to_string()
}

fn rv_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

/// The object without what never counts as a spec change.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

impl State {
    /// Stores `obj` at `path` with the next resourceVersion and records the change.
    pub fn store(&mut self, path: &str, mut obj: Value, kind: ChangeKind) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(path, obj, kind)
    }

    /// Stores `obj` at `path` as it is (its resourceVersion already set,
    /// `self.rv` already past it) and records the change.
    pub fn record(&mut self, path: &str, obj: Value, kind: ChangeKind) -> Value {
        let previous = match kind {
            ChangeKind::Deleted => self.objects.remove(path),
            _ => self.objects.insert(path.to_string(), obj.clone()),
        };
        self.reindex(path, (kind != ChangeKind::Deleted).then_some(&obj));
        self.history.push(Change {
            rv: self.rv,
            at: Instant::now(),
            path: path.to_string(),
            kind,
            object: obj.clone(),
            previous,
        });
        obj
    }

    /// Keeps the collection index and the stash index in step with the
    /// object at `path` (`None`: deleted).
    fn reindex(&mut self, path: &str, obj: Option<&Value>) {
        let Some(t) = Target::parse(path) else {
            return;
        };
        let mut cluster_wide = t.clone();
        cluster_wide.namespace = None;
        for collection in [t.collection_path(), cluster_wide.collection_path()] {
            let paths = self.collections.entry(collection).or_default();
            match obj {
                Some(_) => paths.insert(path.to_string()),
                None => paths.remove(path),
            };
        }
        let ns = t.namespace.as_deref().unwrap_or("default");
        let name = t.name.as_deref().unwrap_or_default();
        if t.group == "stash.appscode.com" {
            admission::reindex(&mut self.index, &t.plural, ns, name, obj);
        }
    }

    fn next_uid(&mut self) -> String {
        self.serial += 1;
        format!(
            "5e0d{:04x}-fa4e-4c1a-8b1e-{:012x}",
            self.serial, self.serial
        )
    }

    /// Fills what the API server sets on create.
    pub fn fill_created(&mut self, obj: &mut Value) {
        let uid = self.next_uid();
        let meta = &mut obj["metadata"];
        if meta.get("uid").is_none() {
            meta["uid"] = json!(uid);
        }
        if meta.get("creationTimestamp").is_none_or(Value::is_null) {
            meta["creationTimestamp"] = json!(now_rfc3339());
        }
        if obj.get("spec").is_some() && obj["metadata"].get("generation").is_none() {
            obj["metadata"]["generation"] = json!(1);
        }
    }

    /// What the webhook's index holds of the stored objects.
    pub fn snapshot(&self) -> stash::store::Snapshot {
        self.index.clone()
    }

    /// The object as decoded (defaulted), then the admission chain against
    /// the current store.
    pub fn admit(
        &mut self,
        identity: &Identity,
        target: &Target,
        operation: &str,
        mut object: Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> Result<Admitted, Status> {
        self.serial += 1;
        let snap = self.snapshot();
        defaults::apply(&target.group, &target.plural, &mut object);
        let write = Write {
            snap: &snap,
            settings: &self.settings,
            policies: &self.policies,
            identity,
            target,
            operation,
            old,
            dry_run,
            serial: self.serial,
        };
        admission::admit(&write, object)
    }

    /// Serves one request (not a watch) and logs it.
    pub fn handle(&mut self, req: &ApiRequest) -> ApiResponse {
        let response = match self.authorize(req) {
            Ok(()) => self.route(req),
            Err(status) => ApiResponse::error(status),
        };
        self.log.push(Recorded {
            user: req.identity.username.clone(),
            cluster_role: req.identity.cluster_role,
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            content_type: req.content_type.clone(),
            body: req.body.clone(),
            code: response.code,
        });
        response
    }

    /// The authorizer ([`rbac`]): a request of a stash identity its
    /// ClusterRole does not allow is refused with 403 (and remembered).
    pub fn authorize(&mut self, req: &ApiRequest) -> Result<(), Status> {
        let Some(target) = Target::parse(&req.path) else {
            return Ok(()); // not a resource: answered 404
        };
        if req.identity.cluster_role.is_none() {
            return Ok(());
        }
        let exists = target.name.is_some() && self.objects.contains_key(&target.object_path());
        let attrs = rbac::attributes(
            &req.method,
            &req.path,
            &req.query,
            &req.content_type,
            exists,
        );
        rbac::authorize(&req.identity, &attrs).map_err(|refused| {
            let (a, message) = *refused;
            self.forbidden.push(format!(
                "{}: {message} ({} {})",
                req.identity.cluster_role.unwrap_or_default(),
                req.method,
                req.path
            ));
            let mut status = Status::new(403, "Forbidden", message);
            let base = a.resource.split('/').next().unwrap_or_default();
            status.details = json!({"name": a.name, "group": a.group, "kind": base});
            status
        })
    }

    /// Logs a watch request (served by [`watch`]) and the code it was answered with.
    pub fn log_watch(&mut self, req: &ApiRequest, code: u16) {
        self.log.push(Recorded {
            user: req.identity.username.clone(),
            cluster_role: req.identity.cluster_role,
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            content_type: req.content_type.clone(),
            body: Value::Null,
            code,
        });
    }

    fn route(&mut self, req: &ApiRequest) -> ApiResponse {
        let Some(target) = Target::parse(&req.path) else {
            return ApiResponse::error(Status::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        };
        if req.method != "GET"
            && target.name.is_some()
            && let Some(status) = self.refused.get(&target.object_path())
        {
            return ApiResponse::error(status.clone());
        }
        let dry_run = param(&req.query, "dryRun").is_some();
        let result = match (req.method.as_str(), &target.name) {
            ("GET", Some(_)) => self.get(&target),
            ("GET", None) => Ok(self.list(&target, &req.query)),
            ("POST", None) => self.create(&target, req.body.clone(), &req.identity, dry_run, None),
            ("PUT" | "PATCH", Some(_)) => self.update(&target, req, dry_run),
            ("DELETE", Some(_)) => self.delete(&target, &req.body, dry_run),
            (m, _) => Err(Status::new(
                405,
                "MethodNotAllowed",
                format!("{m} is not supported here"),
            )),
        };
        match result {
            Ok(r) => r,
            Err(s) => ApiResponse::error(s),
        }
    }

    fn not_found(target: &Target) -> Status {
        let name = target.name.clone().unwrap_or_default();
        let mut s = Status::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", target.qualified_resource()),
        );
        s.details = json!({"name": name, "group": target.group, "kind": target.plural});
        s
    }

    fn get(&mut self, target: &Target) -> Result<ApiResponse, Status> {
        let path = target.object_path();
        let obj = self
            .objects
            .get(&path)
            .cloned()
            .ok_or_else(|| Self::not_found(target))?;
        if self.change_after_get.contains(&path) {
            // Someone else writes right after our read.
            let mut bumped = obj.clone();
            bumped["metadata"]["annotations"]["fake.test/concurrent-writes"] =
                json!(self.rv.to_string());
            self.store(&path, bumped, ChangeKind::Modified);
        }
        Ok(ApiResponse::ok(200, obj, Vec::new()))
    }

    /// The objects in a collection matching the request's selectors.
    pub fn select(&self, target: &Target, query: &str) -> Vec<Value> {
        self.select_page(target, query, None, usize::MAX).0
    }

    /// Up to `limit` objects of a collection matching the request's
    /// selectors, in path order, after the path `after`; and the last path
    /// returned when more may follow.
    fn select_page(
        &self,
        target: &Target,
        query: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Value>, Option<String>) {
        let labels = param(query, "labelSelector").map(|s| LabelSelector::parse(&s));
        let fields = param(query, "fieldSelector");
        let Some(paths) = self.collections.get(&target.collection_path()) else {
            return (Vec::new(), None);
        };
        let start = match after {
            Some(a) => std::ops::Bound::Excluded(a.to_string()),
            None => std::ops::Bound::Unbounded,
        };
        let mut items = Vec::new();
        let mut last = None;
        for path in paths.range((start, std::ops::Bound::Unbounded)) {
            if items.len() == limit {
                return (items, last);
            }
            let Some(v) = self.objects.get(path) else {
                continue;
            };
            let selected = labels.as_ref().is_none_or(|l| l.matches(v))
                && fields
                    .as_deref()
                    .is_none_or(|f| field_selector_matches(f, v));
            if selected {
                items.push(v.clone());
                last = Some(path.clone());
            }
        }
        (items, None)
    }

    /// A list, paginated when the request says `limit` (kube's watcher
    /// asks 500 at a time): the `continue` token carries the first page's
    /// resourceVersion and the last path served.
    fn list(&self, target: &Target, query: &str) -> ApiResponse {
        let kind = kind_of(&target.plural).unwrap_or("Unknown");
        let token = param(query, "continue").filter(|c| !c.is_empty());
        // `resourceVersion=0` (kube's `any_semantic`) is served from the
        // API server's watch cache, which ignores `limit`: the whole
        // collection in one answer.
        let from_cache = token.is_none() && param(query, "resourceVersion").as_deref() == Some("0");
        let limit = param(query, "limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0 && !from_cache)
            .unwrap_or(usize::MAX);
        let (rv, after) = match token.as_deref().and_then(|c| c.split_once('|')) {
            Some((rv, after)) => (rv.to_string(), Some(after.to_string())),
            None => (self.rv.to_string(), None),
        };
        let (items, last) = self.select_page(target, query, after.as_deref(), limit);
        let mut metadata = json!({"resourceVersion": rv});
        if let Some(last) = last {
            metadata["continue"] = json!(format!("{rv}|{last}"));
        }
        ApiResponse::ok(
            200,
            json!({
                "apiVersion": target.api_version(),
                "kind": format!("{kind}List"),
                "metadata": metadata,
                "items": items,
            }),
            Vec::new(),
        )
    }

    /// POST (or a server-side apply of a missing object).
    fn create(
        &mut self,
        target: &Target,
        body: Value,
        identity: &Identity,
        dry_run: bool,
        named: Option<&str>,
    ) -> Result<ApiResponse, Status> {
        if !body.is_object() {
            return Err(Status::new(
                400,
                "BadRequest",
                "the body of the request is not an object",
            ));
        }
        let mut obj = body;
        let name = match (named, obj.pointer("/metadata/name").and_then(Value::as_str)) {
            (Some(n), _) => n.to_string(),
            (None, Some(n)) if !n.is_empty() => n.to_string(),
            _ => match obj
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
            {
                Some(prefix) => {
                    self.serial += 1;
                    format!("{prefix}{:05x}", self.serial)
                }
                None => {
                    return Err(Status::new(
                        422,
                        "Invalid",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        obj["metadata"]["name"] = json!(name);
        if let Some(ns) = &target.namespace {
            obj["metadata"]["namespace"] = json!(ns);
        }
        if obj.get("apiVersion").is_none() {
            obj["apiVersion"] = json!(target.api_version());
        }
        if obj.get("kind").is_none()
            && let Some(kind) = kind_of(&target.plural)
        {
            obj["kind"] = json!(kind);
        }
        let mut t = target.clone();
        t.name = Some(name.clone());
        let path = t.object_path();
        if self.objects.contains_key(&path) {
            let mut s = Status::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", t.qualified_resource()),
            );
            s.details = json!({"name": name, "group": t.group, "kind": t.plural});
            return Err(s);
        }
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("uid");
        }
        if has_status_subresource(&t.plural)
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        let mut warnings = schema::prune(&t.group, &t.version, &t.plural, &mut obj);
        let admitted = self.admit(identity, &t, "CREATE", obj, None, dry_run)?;
        warnings.extend(admitted.warnings);
        let mut obj = admitted.object;
        schema::prune(&t.group, &t.version, &t.plural, &mut obj);
        self.fill_created(&mut obj);
        if dry_run {
            return Ok(ApiResponse::ok(201, obj, warnings));
        }
        let obj = self.store(&path, obj, ChangeKind::Added);
        Ok(ApiResponse::ok(201, obj, warnings))
    }

    fn conflict(target: &Target) -> Status {
        Status::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                target.qualified_resource(),
                target.name.as_deref().unwrap_or("")
            ),
        )
    }

    fn update(
        &mut self,
        target: &Target,
        req: &ApiRequest,
        dry_run: bool,
    ) -> Result<ApiResponse, Status> {
        let path = target.object_path();
        let to_status = match target.subresource.as_deref() {
            None => false,
            Some("status") if has_status_subresource(&target.plural) => true,
            Some(_) => return Err(Self::not_found(target)),
        };
        let ct = req.content_type.as_str();
        let is_apply = req.method == "PATCH" && ct.starts_with("application/apply-patch");
        let manager = param(&req.query, "fieldManager").unwrap_or_default();
        let force = param(&req.query, "force").as_deref() == Some("true");
        let body = &req.body;
        let Some(old) = self.objects.get(&path).cloned() else {
            if is_apply && !to_status {
                if manager.is_empty() {
                    return Err(Status::new(
                        422,
                        "Invalid",
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    ));
                }
                let mut collection = target.clone();
                collection.name = None;
                let created = self.create(
                    &collection,
                    body.clone(),
                    &req.identity,
                    dry_run,
                    target.name.as_deref(),
                )?;
                if !dry_run {
                    self.applied.insert((path, manager), body.clone());
                }
                return Ok(created);
            }
            return Err(Self::not_found(target));
        };
        let mut new = old.clone();
        let mut precondition = body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from);
        match (req.method.as_str(), ct) {
            ("PUT", _) => new = body.clone(),
            ("PATCH", "application/json-patch+json") => {
                precondition = None;
                let patch: json_patch::Patch = serde_json::from_value(body.clone())
                    .map_err(|e| Status::new(400, "BadRequest", e.to_string()))?;
                json_patch_as_the_api_server(&mut new, patch)
                    .map_err(|e| Status::new(422, "Invalid", e.to_string()))?;
            }
            ("PATCH", "application/merge-patch+json") => json_patch::merge(&mut new, body),
            ("PATCH", "application/strategic-merge-patch+json") => strategic_merge(&mut new, body),
            ("PATCH", _) if is_apply => {
                if manager.is_empty() {
                    return Err(Status::new(
                        422,
                        "Invalid",
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    ));
                }
                if !force {
                    let mut mine = Vec::new();
                    leaves(body, "", &mut mine);
                    // An applier owns a field only while it still holds the
                    // value it applied: a field another write changed or
                    // removed (a Lease released by a strategic merge patch)
                    // has left its set, as managedFields would record.
                    let mut current = Vec::new();
                    leaves(&old, "", &mut current);
                    for ((p, other), theirs) in &self.applied {
                        if *p != path || *other == manager {
                            continue;
                        }
                        let mut their_leaves = Vec::new();
                        leaves(theirs, "", &mut their_leaves);
                        if let Some((field, _)) = mine.iter().find(|(f, v)| {
                            !f.starts_with("/apiVersion")
                                && !f.starts_with("/kind")
                                && !f.starts_with("/metadata/name")
                                && !f.starts_with("/metadata/namespace")
                                && their_leaves.iter().any(|(tf, tv)| {
                                    tf == f
                                        && tv != v
                                        && current.iter().any(|(cf, cv)| cf == tf && cv == tv)
                                })
                        }) {
                            return Err(Status::new(
                                409,
                                "Conflict",
                                format!(
                                    "Apply failed with 1 conflict: conflict with \"{other}\": {}",
                                    field.replace('/', ".")
                                ),
                            ));
                        }
                    }
                }
                let previous = self.applied.get(&(path.clone(), manager.clone())).cloned();
                apply(&mut new, body, previous.as_ref());
            }
            (_, other) => {
                return Err(Status::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                    ),
                ));
            }
        }
        if let Some(rv) = precondition
            && Some(rv.as_str()) != rv_of(&old)
        {
            return Err(Self::conflict(target));
        }
        // What a write can never change.
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        for field in ["apiVersion", "kind"] {
            new[field] = old[field].clone();
        }
        if to_status {
            let mut only_status = old.clone();
            match new.get("status") {
                Some(s) => only_status["status"] = s.clone(),
                None => {
                    if let Some(m) = only_status.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            new = only_status;
        } else if has_status_subresource(&target.plural) {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        let mut warnings = schema::prune(&target.group, &target.version, &target.plural, &mut new);
        if !to_status {
            let mut object_target = target.clone();
            object_target.subresource = None;
            let admitted = self.admit(
                &req.identity,
                &object_target,
                "UPDATE",
                new,
                Some(&old),
                dry_run,
            )?;
            warnings.extend(admitted.warnings);
            new = admitted.object;
            schema::prune(&target.group, &target.version, &target.plural, &mut new);
        } else {
            // Only a policy whose rules list the status subresource matches.
            let request = policy::Request::new(&req.identity, target, "UPDATE", &new, Some(&old));
            warnings.extend(self.policies.check(&request)?);
        }
        if spec_part(&new) != spec_part(&old)
            && let Some(g) = old.pointer("/metadata/generation").and_then(Value::as_i64)
        {
            new["metadata"]["generation"] = json!(g + 1);
        }
        if is_apply && !dry_run {
            self.applied.insert((path.clone(), manager), body.clone());
        }
        if new == old {
            return Ok(ApiResponse::ok(200, old, warnings));
        }
        if dry_run {
            return Ok(ApiResponse::ok(200, new, warnings));
        }
        let finalized = new
            .get("metadata")
            .and_then(|m| m.get("deletionTimestamp"))
            .is_some()
            && new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(|f| f.is_empty());
        if finalized {
            let gone = self.store(&path, new, ChangeKind::Deleted);
            self.collect_garbage(&gone);
            return Ok(ApiResponse::ok(200, gone, warnings));
        }
        let stored = self.store(&path, new, ChangeKind::Modified);
        Ok(ApiResponse::ok(200, stored, warnings))
    }

    fn delete(
        &mut self,
        target: &Target,
        body: &Value,
        dry_run: bool,
    ) -> Result<ApiResponse, Status> {
        let path = target.object_path();
        let old = self
            .objects
            .get(&path)
            .cloned()
            .ok_or_else(|| Self::not_found(target))?;
        if let Some(rv) = body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            && Some(rv) != rv_of(&old)
        {
            return Err(Self::conflict(target));
        }
        if let Some(uid) = body.pointer("/preconditions/uid").and_then(Value::as_str)
            && Some(uid) != old.pointer("/metadata/uid").and_then(Value::as_str)
        {
            return Err(Self::conflict(target));
        }
        if dry_run {
            return Ok(ApiResponse::ok(200, old, Vec::new()));
        }
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(ApiResponse::ok(200, old, Vec::new()));
            }
            let mut deleting = old;
            deleting["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            deleting["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if let Some(g) = deleting
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
            {
                deleting["metadata"]["generation"] = json!(g + 1);
            }
            let stored = self.store(&path, deleting, ChangeKind::Modified);
            return Ok(ApiResponse::ok(200, stored, Vec::new()));
        }
        let gone = self.store(&path, old, ChangeKind::Deleted);
        if body.get("propagationPolicy").and_then(Value::as_str) != Some("Orphan") {
            self.collect_garbage(&gone);
        }
        Ok(ApiResponse::ok(
            200,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                   "details": {"name": target.name, "group": target.group, "kind": target.plural,
                               "uid": gone["metadata"]["uid"]}}),
            Vec::new(),
        ))
    }

    /// The garbage collector: objects whose only owner was `gone` go too.
    fn collect_garbage(&mut self, gone: &Value) {
        let Some(uid) = gone.pointer("/metadata/uid").and_then(Value::as_str) else {
            return;
        };
        let dependents: Vec<String> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| !refs.is_empty() && refs.iter().all(|r| r["uid"] == uid))
            })
            .map(|(p, _)| p.clone())
            .collect();
        for path in dependents {
            if let Some(t) = Target::parse(&path) {
                let _ = self.delete(&t, &json!({"propagationPolicy": "Background"}), false);
            }
        }
    }
}

/// A `kube::Client` whose requests `shared` serves as `identity`.
pub fn client(shared: Arc<Shared>, identity: Identity) -> kube::Client {
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let shared = shared.clone();
        let identity = identity.clone();
        async move { Ok::<_, Infallible>(serve_http(shared, identity, req).await) }
    });
    kube::Client::new(service, "default")
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes)).boxed_unsync()
}

/// Serves `shared` over plain HTTP/1.1 and HTTP/2 on 127.0.0.1 (an
/// ephemeral port), every request as `identity`, until the runtime stops:
/// for a client in another process (the scale bench measures the
/// reconciler's memory apart from the fake's).
pub async fn listen(
    shared: Arc<Shared>,
    identity: Identity,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (shared, identity) = (shared.clone(), identity.clone());
            let service = hyper::service::service_fn(move |req| {
                let (shared, identity) = (shared.clone(), identity.clone());
                async move { Ok::<_, Infallible>(serve_http(shared, identity, req).await) }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(io, service)
                .await;
            });
        }
    });
    Ok(addr)
}

pub(crate) async fn serve_http<B>(
    shared: Arc<Shared>,
    identity: Identity,
    req: Request<B>,
) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Debug,
{
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let meta_only = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let bytes = req
        .into_body()
        .collect()
        .await
        .expect("request body")
        .to_bytes();
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else if content_type.starts_with("application/apply-patch+yaml") {
        serde_yaml::from_slice(&bytes).expect("an apply patch is YAML (or JSON)")
    } else {
        serde_json::from_slice(&bytes).expect("request body is JSON")
    };
    let request = ApiRequest {
        method,
        path,
        query,
        content_type,
        body,
        identity,
    };
    if request.method == "GET"
        && matches!(
            param(&request.query, "watch").as_deref(),
            Some("true" | "1")
        )
        && let Some(target) = Target::parse(&request.path).filter(|t| t.name.is_none())
    {
        let refused = shared.with(|s| {
            let refused = s.authorize(&request).err();
            s.log_watch(&request, refused.as_ref().map_or(200, |r| r.code));
            refused
        });
        if let Some(status) = refused {
            return Response::builder()
                .status(status.code)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(full(serde_json::to_vec(&status.body()).expect("serialize")))
                .expect("a response");
        }
        let stream = watch::serve(shared.clone(), target, &request.query, meta_only);
        return Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(stream)
            .expect("a response");
    }
    let mut response = shared.with(|s| s.handle(&request));
    if meta_only && response.code < 400 {
        response.body = metadata_only(&response.body);
    }
    let mut builder = Response::builder()
        .status(response.code)
        .header(http::header::CONTENT_TYPE, "application/json");
    for w in &response.warnings {
        builder = builder.header("Warning", format!("299 - {:?}", w));
    }
    builder
        .body(full(serde_json::to_vec(&response.body).expect("serialize")))
        .expect("a response")
}

/// A metadata-only answer (`as=PartialObjectMetadata[List]`): an object's
/// or each listed object's `metadata` alone.
fn metadata_only(body: &Value) -> Value {
    match body.get("items").and_then(Value::as_array) {
        Some(items) => json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
            "metadata": body["metadata"],
            "items": items.iter().map(watch::partial_metadata).collect::<Vec<_>>(),
        }),
        None => watch::partial_metadata(body),
    }
}

/// Applies a JSON patch the way the API server's JSON-patch library does: a
/// `test` of a path that does not exist passes when it expects `null` (what
/// `kube::runtime::finalizer` sends before adding the first finalizer), where
/// the json-patch crate would fail it. Applied to a copy, so all or nothing.
fn json_patch_as_the_api_server(
    doc: &mut Value,
    patch: json_patch::Patch,
) -> Result<(), json_patch::PatchError> {
    for op in patch.0 {
        if let json_patch::PatchOperation::Test(t) = &op
            && t.value.is_null()
            && doc.pointer(t.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(doc, &[op])?;
    }
    Ok(())
}
