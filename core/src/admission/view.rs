//! The parts of a review's object the decisions read, and nothing else, as
//! a JSON tree: what `/mutate/workloads` plans on when both the sidecar and
//! the `stash-init` planner run (the second plans on the workload as the
//! first one's patch leaves it, so the patch is applied to this tree), or
//! when `crate::workload::View`, which every other admission reads
//! straight from the text, cannot read the object.
//!
//! An AdmissionReview's object arrives as raw JSON (a borrowed
//! [`RawValue`]); reading it into a whole `serde_json::Value` tree costs tens
//! of times its size (a 7 MiB `[{"a":0}, …]` becomes a gigabyte). Instead,
//! [`workload`] walks the raw text once and keeps only the fields the sidecar
//! and `stash-init` planners read — apiVersion, kind, the metadata stash looks
//! at, the pod template's metadata, its containers, init containers and
//! volumes (in order, so the patch's indices stay right) and the names of a
//! StatefulSet's volumeClaimTemplates. Everything else is skipped with
//! [`IgnoredAny`]: it costs a scan, not a tree.
//!
//! The result is a `serde_json::Value` of the same shape as the object, so the
//! planners — shared with the reconciler, which passes the stored object —
//! stay one function and see exactly what they would see in the whole
//! object. Of a container only `name` and `volumeMounts[].name` are kept,
//! except the `stash` and `stash-init` containers, kept whole (the planners
//! compare them with what they want); of a volume only `name`, except the
//! volumes stash owns, kept whole for the same reason. A field of the wrong
//! JSON type is kept as an empty value of its type, so every "is not an
//! object / a list" the planners report is reported the same.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::api::{RESTORE_INIT_CONTAINER, SIDECAR_CONTAINER};
use crate::lenient::Text;
use crate::sidecar::OWNED_VOLUMES;

/// What to keep of one JSON value.
#[derive(Clone, Copy)]
enum Shape {
    /// The whole value.
    All,
    /// Of an object, these fields only.
    Fields(&'static [(&'static str, Shape)]),
    /// Of a list, each element as the inner shape.
    Each(&'static Shape),
    /// A container: whole when it is stash's, else its name and mounts.
    Container,
    /// A volume: whole when stash owns its name, else its name.
    Volume,
}

use Shape::{All, Each, Fields};

const NAME: Shape = Fields(&[("name", All)]);
const MOUNTS: Shape = Each(&NAME);
const CONTAINER_NAMES: Shape = Fields(&[("name", All), ("volumeMounts", MOUNTS)]);
const CONTAINERS: Shape = Each(&Shape::Container);

const WORKLOAD: Shape = Fields(&[
    ("apiVersion", All),
    ("kind", All),
    (
        "metadata",
        Fields(&[
            ("name", All),
            ("generateName", All),
            ("namespace", All),
            ("labels", All),
            ("annotations", All),
            (
                "ownerReferences",
                Each(&Fields(&[
                    ("apiVersion", All),
                    ("kind", All),
                    ("name", All),
                    ("controller", All),
                ])),
            ),
            ("deletionTimestamp", All),
            ("finalizers", All),
        ]),
    ),
    (
        "spec",
        Fields(&[
            (
                "template",
                Fields(&[
                    (
                        "metadata",
                        Fields(&[("name", All), ("labels", All), ("annotations", All)]),
                    ),
                    (
                        "spec",
                        Fields(&[
                            ("containers", CONTAINERS),
                            ("initContainers", CONTAINERS),
                            ("volumes", Each(&Shape::Volume)),
                        ]),
                    ),
                ]),
            ),
            ("volumeClaimTemplates", Each(&Fields(&[("metadata", NAME)]))),
        ]),
    ),
]);

/// The workload view of a raw object: the fields the planners read, in the
/// object's shape. The error (one line) is JSON the kept parts cannot hold,
/// such as nesting past serde_json's recursion limit.
pub fn workload(raw: &RawValue) -> Result<Value, String> {
    prune(raw, WORKLOAD).map_err(|e| super::wire::one_line(&e.to_string()))
}

fn prune(raw: &RawValue, shape: Shape) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let v = Prune(shape).deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// The `name` of a raw object, when it is a string.
fn name_of(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Named {
        #[serde(default)]
        name: Option<Value>,
    }
    match serde_json::from_str::<Named>(raw.get()).ok()?.name? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

struct Prune(Shape);

impl<'de> DeserializeSeed<'de> for Prune {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            All => Value::deserialize(d),
            Shape::Container | Shape::Volume => {
                // The whole element's text, then the part of it we keep: whether
                // it is stash's is its name, which may come after anything.
                let raw = <&'de RawValue>::deserialize(d)?;
                let name = name_of(raw);
                let whole = match self.0 {
                    Shape::Container => name
                        .as_deref()
                        .is_some_and(|n| n == SIDECAR_CONTAINER || n == RESTORE_INIT_CONTAINER),
                    _ => name.as_deref().is_some_and(|n| OWNED_VOLUMES.contains(&n)),
                };
                let kept = match (whole, self.0) {
                    (true, _) => All,
                    (false, Shape::Container) => CONTAINER_NAMES,
                    (false, _) => NAME,
                };
                prune(raw, kept).map_err(de::Error::custom)
            }
            shape => d.deserialize_any(Keep(shape)),
        }
    }
}

struct Keep(Shape);

impl<'de> Visitor<'de> for Keep {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let Each(inner) = self.0 else {
            // A list where an object belongs: an empty list says as much.
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Value::Array(Vec::new()));
        };
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(Prune(*inner))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Fields(fields) = self.0 else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Value::Object(Map::new()));
        };
        let mut out = Map::new();
        while let Some(Text(key)) = map.next_key()? {
            match fields
                .iter()
                .find(|(name, _)| Some(*name) == key.as_deref())
            {
                Some((name, shape)) => {
                    let v = map.next_value_seed(Prune(*shape))?;
                    out.insert((*name).to_string(), v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(v: &Value) -> Value {
        let text = v.to_string();
        let raw: &RawValue = serde_json::from_str(&text).unwrap();
        workload(raw).unwrap()
    }

    #[test]
    fn keeps_what_the_planners_read_in_order_and_drops_the_rest() {
        let obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "app", "namespace": "demo", "annotations": {"a": "b"},
                         "managedFields": [{"big": "x"}], "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "controller": true, "uid": "u"}]},
            "spec": {
                "replicas": 3, "junk": [{"a": 0}, {"a": 1}],
                "template": {
                    "metadata": {"labels": {"app": "x"}, "annotations": {"h": "1"}},
                    "spec": {
                        "containers": [
                            {"image": "busybox", "env": [{"name": "E", "value": "1"}], "volumeMounts": [{"name": "data", "mountPath": "/d"}], "name": "app"},
                            {"name": "stash", "image": "s", "args": ["run-backup"]}
                        ],
                        "initContainers": [{"name": "stash-init", "image": "s"}, {"name": "i", "image": "x"}],
                        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp-dir", "emptyDir": {"medium": "Memory"}}],
                        "nodeSelector": {"a": "b"}
                    }
                },
                "volumeClaimTemplates": [{"metadata": {"name": "pvc", "labels": {}}, "spec": {"x": 1}}]
            },
            "status": {"replicas": 3}
        });
        assert_eq!(
            view(&obj),
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "app", "namespace": "demo", "annotations": {"a": "b"},
                             "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "controller": true}]},
                "spec": {
                    "template": {
                        "metadata": {"labels": {"app": "x"}, "annotations": {"h": "1"}},
                        "spec": {
                            "containers": [
                                {"volumeMounts": [{"name": "data"}], "name": "app"},
                                {"name": "stash", "image": "s", "args": ["run-backup"]}
                            ],
                            "initContainers": [{"name": "stash-init", "image": "s"}, {"name": "i"}],
                            "volumes": [{"name": "data"}, {"name": "tmp-dir", "emptyDir": {"medium": "Memory"}}]
                        }
                    },
                    "volumeClaimTemplates": [{"metadata": {"name": "pvc"}}]
                }
            })
        );
    }

    #[test]
    fn wrong_types_stay_wrong_but_empty() {
        let obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": [1, 2, 3],
            "spec": {"template": {"spec": {"containers": {"a": [1, 2]}, "volumes": [5, [1], {"x": 1}]}}}
        });
        assert_eq!(
            view(&obj),
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": [],
                "spec": {"template": {"spec": {"containers": {}, "volumes": [5, [], {}]}}}
            })
        );
        let raw: &RawValue = serde_json::from_str("[1, {\"a\": 2}]").unwrap();
        assert_eq!(workload(raw).unwrap(), json!([]));
    }

    #[test]
    fn deep_unknown_parts_are_skipped_not_refused() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let text = format!(
            r#"{{"apiVersion":"apps/v1","kind":"Deployment","spec":{{"x":{deep},"template":{{"spec":{{"containers":[{{"name":"a","env":{deep}}}]}}}}}}}}"#
        );
        let raw: &RawValue = serde_json::from_str(&text).unwrap();
        assert_eq!(
            workload(raw).unwrap(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}})
        );
    }
}
