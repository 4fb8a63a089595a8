//! Reading a request's objects into our CRD types, with one-line errors.
//!
//! Our own kinds are denied when they cannot be read (the validating webhooks
//! are `failurePolicy: Fail` for exactly these resources), so every rule
//! shares these helpers and says the same thing about a malformed object.

use kube::core::admission::Operation;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Object, Request, wire::one_line};
use crate::api::{DEFAULT_NAMESPACE, GROUP};

/// An object of the request read into `K`, with its raw JSON kept for
/// unknown-field checks.
pub struct Read<K> {
    pub typed: K,
    pub raw: Value,
}

/// Reads `obj` into `K`; the error is one line naming the kind. One tree of
/// the object is built (the unknown-field check walks it); `K` is read from
/// it in place.
pub fn typed<K: DeserializeOwned>(obj: &Object, kind: &str) -> Result<Read<K>, String> {
    let raw: Value = serde_json::from_str(obj.raw.get())
        .map_err(|e| format!("{kind} cannot be read: {}", one_line(&e.to_string())))?;
    let typed = serde_path_to_error::deserialize(&raw).map_err(|e| {
        let at = e.path().to_string();
        format!(
            "{kind} {} cannot be read: {}{}; fix the manifest",
            obj.name.as_deref().unwrap_or(""),
            if at == "." {
                String::new()
            } else {
                format!("{at}: ")
            },
            one_line(&e.into_inner().to_string())
        )
    })?;
    Ok(Read { typed, raw })
}

/// Whether the request is one the validators pass untouched: DELETE,
/// CONNECT and subresources (status, scale) are not ours to judge.
pub fn passes_untouched(req: &Request) -> bool {
    !matches!(req.operation, Operation::Create | Operation::Update) || req.sub_resource.is_some()
}

/// Whether the request is about our kind `kind` (group stash.appscode.com).
/// A misrouted request (a webhook configuration sending other kinds) is not
/// ours to judge and passes untouched.
pub fn is_kind(req: &Request, kind: &str) -> bool {
    req.kind.group == GROUP && req.kind.kind == kind
}

/// The request's namespace: the request's own field, else the object's.
pub fn namespace(req: &Request) -> String {
    req.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| req.object.as_ref().and_then(|o| o.namespace.clone()))
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into())
}

/// The object's name (or the request's, for generateName-created objects).
pub fn name(req: &Request) -> String {
    req.object
        .as_ref()
        .and_then(|o| o.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| req.name.clone())
}
