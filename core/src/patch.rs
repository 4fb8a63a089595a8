//! JSON patch operations as stash's decisions write them, with values that
//! may be shared and already serialized.
//!
//! The sidecar a configuration wants is the same for every admission of the
//! same workload (`sidecar::memo` keeps it), and it is most of each patch.
//! With `json_patch::PatchOperation`, whose values are owned
//! `serde_json::Value` trees, every answer cloned that tree, serialized it
//! (escaping every string again) and dropped it. An [`Op`] here holds such a
//! value as a [`Shared`]: the tree (which the planners compare against what
//! the workload has) and its JSON text, made once; writing the patch copies
//! the text.
//!
//! `write` is the one serializer of the wire form; it writes exactly what
//! serde would for the equivalent `json_patch::PatchOperation` list (a test
//! pins that), and [`Op::to_json_patch`] gives that list to the reconcilers,
//! which send it through kube's `Patch::Json`.

use std::sync::Arc;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::Value;

/// A JSON value and its serialized text, made once and shared.
#[derive(Debug, PartialEq)]
pub struct Shared {
    value: Value,
    text: Box<str>,
}

impl Shared {
    /// Serializes `value` once.
    pub fn new(value: Value) -> Arc<Self> {
        // A `Value` always serializes (its map keys are strings).
        let text = value.to_string().into_boxed_str();
        Arc::new(Self { value, text })
    }

    /// The value, for comparisons.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Its compact JSON text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The value of an `add` or `replace`.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// Made for this patch alone (an annotation, a map around it).
    Owned(Value),
    /// A value kept across answers.
    Shared(Arc<Shared>),
    /// A JSON array of kept values (a list the patch creates).
    List(Vec<Arc<Shared>>),
}

impl Json {
    /// The value as a tree of its own.
    pub fn to_value(&self) -> Value {
        match self {
            Json::Owned(v) => v.clone(),
            Json::Shared(s) => s.value.clone(),
            Json::List(items) => Value::Array(items.iter().map(|s| s.value.clone()).collect()),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            // Writing into a Vec cannot fail, and a Value always serializes.
            Json::Owned(v) => serde_json::to_writer(&mut *out, v).unwrap_or(()),
            Json::Shared(s) => out.extend_from_slice(s.text.as_bytes()),
            Json::List(items) => {
                out.push(b'[');
                for (i, s) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(s.text.as_bytes());
                }
                out.push(b']');
            }
        }
    }
}

impl From<Value> for Json {
    fn from(v: Value) -> Self {
        Json::Owned(v)
    }
}

impl From<Arc<Shared>> for Json {
    fn from(s: Arc<Shared>) -> Self {
        Json::Shared(s)
    }
}

/// One operation of a JSON patch (RFC 6902): the three stash writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Add { path: PointerBuf, value: Json },
    Replace { path: PointerBuf, value: Json },
    Remove { path: PointerBuf },
}

impl Op {
    pub fn add(path: PointerBuf, value: impl Into<Json>) -> Self {
        Op::Add {
            path,
            value: value.into(),
        }
    }

    pub fn replace(path: PointerBuf, value: impl Into<Json>) -> Self {
        Op::Replace {
            path,
            value: value.into(),
        }
    }

    pub fn remove(path: PointerBuf) -> Self {
        Op::Remove { path }
    }

    /// The same operation as json-patch's type (each value its own tree).
    pub fn to_json_patch(&self) -> PatchOperation {
        match self {
            Op::Add { path, value } => PatchOperation::Add(AddOperation {
                path: path.clone(),
                value: value.to_value(),
            }),
            Op::Replace { path, value } => PatchOperation::Replace(ReplaceOperation {
                path: path.clone(),
                value: value.to_value(),
            }),
            Op::Remove { path } => PatchOperation::Remove(RemoveOperation { path: path.clone() }),
        }
    }
}

/// `ops` as json-patch's operations.
pub fn to_json_patch(ops: &[Op]) -> Vec<PatchOperation> {
    ops.iter().map(Op::to_json_patch).collect()
}

/// Appends the patch's JSON text (an array of operations) to `out`.
pub fn write(ops: &[Op], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, op) in ops.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let (name, path, value) = match op {
            Op::Add { path, value } => ("add", path, Some(value)),
            Op::Replace { path, value } => ("replace", path, Some(value)),
            Op::Remove { path } => ("remove", path, None),
        };
        out.extend_from_slice(br#"{"op":""#);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(br#"","path":"#);
        // A str always serializes into a Vec.
        serde_json::to_writer(&mut *out, path.as_str()).unwrap_or(());
        if let Some(value) = value {
            out.extend_from_slice(br#","value":"#);
            value.write(out);
        }
        out.push(b'}');
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_what_serde_writes_for_json_patch() {
        let shared = Shared::new(json!({"name": "stash", "args": ["a\"b", "ü\n"]}));
        let ptr = |t: &[&str]| PointerBuf::from_tokens(t.iter().copied());
        let ops = vec![
            Op::add(ptr(&["spec", "containers", "-"]), shared.clone()),
            Op::add(
                ptr(&["spec", "volumes"]),
                Json::List(vec![shared.clone(), Shared::new(json!({"name": "v"}))]),
            ),
            Op::add(ptr(&["spec", "list"]), Json::List(Vec::new())),
            Op::replace(ptr(&["metadata", "annotations", "a/b~c"]), json!("x")),
            Op::remove(ptr(&["metadata", "annotations"])),
        ];
        let mut out = Vec::new();
        write(&ops, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&to_json_patch(&ops)).unwrap()
        );
        let mut empty = Vec::new();
        write(&[], &mut empty);
        assert_eq!(empty, b"[]");
    }
}
