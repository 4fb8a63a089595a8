//! `POST /mutate/backupsessions` and `POST /validate/backupsessions`.
//!
//! The mutating half labels a BackupSession with its invoker so that the
//! reconciler and the sidecar (which select by label) always see it, even one
//! made by hand. The validating half answers for a paused invoker according
//! to the configured policy and keeps the spec immutable.

use kube::core::admission::Operation;
use serde_json::{Value, json};

use super::read::{self, Read};
use super::validate::{self, Ctx, Validated};
use super::{Decision, Request};
use crate::api::{BackupSession, GROUP, INVOKER_KIND_BACKUP_CONFIGURATION, invoker_labels};
use crate::patch::Op;
use crate::settings::{PausedSessionPolicy, Settings};
use crate::store::Snapshot;
use json_patch::jsonptr::PointerBuf;

/// Adds missing invoker labels.
pub fn mutate(req: &Request, _snap: &Snapshot, _settings: &Settings) -> Decision {
    if req.operation != Operation::Create
        || req.sub_resource.is_some()
        || !read::is_kind(req, BackupSession::KIND)
    {
        return Decision::allow();
    }
    let session: BackupSession = match validate::object(req, BackupSession::KIND) {
        Ok(Read { typed, .. }) => typed,
        Err(early) => return early,
    };
    let invoker = &session.spec.invoker;
    if invoker.kind.is_empty() || invoker.name.is_empty() {
        // Nothing to label with; the validating webhook explains why.
        return Decision::allow();
    }
    let existing = session.metadata.labels.as_ref();
    let mut decision = Decision::allow();
    let mut missing = serde_json::Map::new();
    for (key, value) in invoker_labels(&invoker.kind, &invoker.name) {
        match existing.and_then(|l| l.get(key)) {
            None => {
                missing.insert(key.to_string(), json!(value));
            }
            Some(v) if *v == value => {}
            Some(v) => {
                decision.warnings.push(format!(
                    "label {key}={v} of BackupSession {} does not match its invoker {value}; the reconciler and the sidecar may not see it: fix or drop the label",
                    read::name(req)
                ));
            }
        }
    }
    if missing.is_empty() {
        return decision;
    }
    let add = |path: PointerBuf, value: Value| Op::add(path, value);
    let patch = match existing {
        None => vec![add(
            PointerBuf::from_tokens(["metadata", "labels"]),
            Value::Object(missing),
        )],
        Some(_) => missing
            .into_iter()
            .map(|(k, v)| {
                add(
                    PointerBuf::from_tokens(["metadata", "labels", k.as_str()]),
                    v,
                )
            })
            .collect(),
    };
    decision.with_patch(patch)
}

/// Paused invoker and spec immutability.
pub fn validate(req: &Request, snap: &Snapshot, settings: &Settings) -> Decision {
    validate::admit::<BackupSession>(req, snap, settings)
}

impl Validated for BackupSession {
    const KIND: &'static str = "BackupSession";
    const UNKNOWN_FIELDS_FIRST: bool = true;

    /// Never: a session is judged even with a deletionTimestamp (its spec
    /// stays immutable to the end).
    fn is_deleting(&self) -> bool {
        false
    }

    /// A changed spec is denied; anything else allowed: labels, annotations,
    /// finalizers may change, and the paused check belongs to creation (an
    /// existing session is the reconciler's).
    fn on_update(old: Option<&Self>, new: &Self, _me: &str) -> Option<Decision> {
        Some(match old {
            Some(old) if old.spec != new.spec => Decision::deny("BackupSession spec is immutable"),
            _ => Decision::allow(),
        })
    }

    fn rule(&self, ctx: &Ctx<'_>) -> Result<Vec<String>, String> {
        let (me, namespace) = (ctx.me, ctx.namespace);
        let invoker = &self.spec.invoker;
        if invoker.kind != INVOKER_KIND_BACKUP_CONFIGURATION {
            return Err(format!(
                "{me} has invoker kind {:?}, which stash does not know: set spec.invoker.kind to {INVOKER_KIND_BACKUP_CONFIGURATION}",
                invoker.kind
            ));
        }
        if let Some(group) = invoker
            .api_group
            .as_deref()
            .filter(|g| !g.is_empty() && *g != GROUP)
        {
            return Err(format!(
                "{me} has invoker apiGroup {group:?}: set spec.invoker.apiGroup to {GROUP}"
            ));
        }
        if invoker.name.is_empty() {
            return Err(format!(
                "{me} names no invoker: set spec.invoker.name to the BackupConfiguration's name"
            ));
        }
        match ctx.snap.config(namespace, &invoker.name) {
            None => Ok(vec![format!(
                "BackupConfiguration {namespace}/{} does not exist; this BackupSession will not run until it does",
                invoker.name
            )]),
            Some(bc) if bc.spec.paused => match ctx.settings.paused_session_policy {
                PausedSessionPolicy::Skip => Ok(vec![format!(
                    "Backup Configuration {namespace}/{} is paused; this BackupSession will be Skipped",
                    invoker.name
                )]),
                PausedSessionPolicy::Reject => Err(format!(
                    "Backup Configuration {namespace}/{} is paused",
                    invoker.name
                )),
            },
            Some(_) => Ok(Vec::new()),
        }
    }

    /// Its own wording, older than "check its spelling".
    fn unknown_field(field: &str, me: &str) -> String {
        format!("unknown field {field} of {me} is ignored")
    }
}
