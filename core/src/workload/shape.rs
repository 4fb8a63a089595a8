//! The shapes a workload's JSON text is read through: only the fields the
//! planners look at, borrowed from the text, everything else skipped by the
//! scanner without being built.
//!
//! Reading a review's object into a `serde_json::Value` costs tens of times
//! its size (a 7 MiB `[{"a":0}, …]` becomes a gigabyte) and, for an ordinary
//! Deployment, most of a decision's time in allocations. These types are
//! what [`super::View`] is made from instead.
//!
//! A field of the wrong JSON type is not an error here (see
//! [`crate::lenient`]), so that [`super::View::parse`] names the field the
//! way the planners always have ("spec.template.spec.containers is not a
//! list").

use serde::Deserialize;

use crate::lenient::{Bool, Entries, Flag, Int, List, Obj, Text};

#[derive(Deserialize)]
pub(super) struct Object<'a> {
    #[serde(default, borrow, rename = "apiVersion")]
    pub api_version: Text<'a>,
    #[serde(default, borrow)]
    pub kind: Text<'a>,
    #[serde(default, borrow)]
    pub metadata: Obj<Meta<'a>>,
    #[serde(default, borrow)]
    pub spec: Obj<Spec<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Meta<'a> {
    #[serde(default, borrow)]
    pub name: Text<'a>,
    #[serde(default, borrow)]
    pub namespace: Text<'a>,
    #[serde(default, borrow)]
    pub annotations: Obj<Entries<'a>>,
    #[serde(default, borrow, rename = "ownerReferences")]
    pub owner_references: List<Obj<OwnerRef<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct OwnerRef<'a> {
    #[serde(default, borrow, rename = "apiVersion")]
    pub api_version: Text<'a>,
    #[serde(default, borrow)]
    pub kind: Text<'a>,
    #[serde(default, borrow)]
    pub name: Text<'a>,
    #[serde(default)]
    pub controller: Flag,
}

#[derive(Deserialize)]
pub(super) struct Spec<'a> {
    #[serde(default, borrow)]
    pub template: Obj<Template<'a>>,
    #[serde(default, borrow, rename = "volumeClaimTemplates")]
    pub volume_claim_templates: List<Obj<ClaimTemplate<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct ClaimTemplate<'a> {
    #[serde(default, borrow)]
    pub metadata: Obj<Named<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Named<'a> {
    #[serde(default, borrow)]
    pub name: Text<'a>,
}

#[derive(Deserialize)]
pub(super) struct Template<'a> {
    #[serde(default, borrow)]
    pub metadata: Obj<Meta<'a>>,
    #[serde(default, borrow)]
    pub spec: Obj<Pod<'a>>,
}

/// Each container and volume kept as its fields' text: stash's own are
/// read whole (the planners compare them with what they want), the others
/// by name and mounts.
#[derive(Deserialize)]
pub(super) struct Pod<'a> {
    #[serde(default, borrow)]
    pub containers: List<Obj<Entries<'a>>>,
    #[serde(default, borrow, rename = "initContainers")]
    pub init_containers: List<Obj<Entries<'a>>>,
    #[serde(default, borrow)]
    pub volumes: List<Obj<Entries<'a>>>,
    #[serde(default, rename = "securityContext")]
    pub security_context: Obj<Identity>,
}

/// The identity fields of a pod's or a container's `securityContext`: who
/// its processes run as, which decides who stash's containers run as
/// ([`crate::workload::privilege`]).
#[derive(Deserialize, Default)]
pub(super) struct Identity {
    #[serde(default, rename = "runAsUser")]
    pub run_as_user: Int,
    #[serde(default, rename = "runAsGroup")]
    pub run_as_group: Int,
    #[serde(default, rename = "runAsNonRoot")]
    pub run_as_non_root: Bool,
}

/// What names an object in a message, read on its own when the whole
/// object could not be.
#[derive(Deserialize)]
pub(super) struct Head<'a> {
    #[serde(default, borrow)]
    pub kind: Text<'a>,
    #[serde(default, borrow)]
    pub metadata: Obj<Ident<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Ident<'a> {
    #[serde(default, borrow)]
    pub name: Text<'a>,
    #[serde(default, borrow)]
    pub namespace: Text<'a>,
}
