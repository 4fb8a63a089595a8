//! `POST /validate/repositories`: exactly one backend, the fields it needs,
//! and `wipeOut` only where stash can honour it.

use super::validate::{self, Ctx, Validated};
use super::{Decision, Request};
use crate::api::Repository;
use crate::settings::Settings;
use crate::store::Snapshot;

/// Backends whose data stash cannot delete on `wipeOut` (as in Stash).
pub const NO_WIPE_OUT: [&str; 2] = ["local", "b2"];

/// Validates a Repository on CREATE and UPDATE.
pub fn validate(req: &Request, snap: &Snapshot, settings: &Settings) -> Decision {
    validate::admit::<Repository>(req, snap, settings)
}

impl Validated for Repository {
    const KIND: &'static str = "Repository";

    fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// Every UPDATE is judged again, even one that leaves the spec alone.
    fn on_update(_old: Option<&Self>, _new: &Self, _me: &str) -> Option<Decision> {
        None
    }

    fn rule(&self, ctx: &Ctx<'_>) -> Result<Vec<String>, String> {
        check(self, ctx.me).map(|()| host_path_warning(self, ctx.me).into_iter().collect())
    }
}

/// A local backend on a hostPath is admitted (Stash supports it, and the
/// install lets stash mount it into its own containers only), with what the
/// user should know before relying on it.
fn host_path_warning(repo: &Repository, me: &str) -> Option<String> {
    let path = &repo.spec.backend.local.as_ref()?.host_path.as_ref()?.path;
    Some(format!(
        "{me} keeps its local backend in hostPath {path} of each node: pods on different nodes back up into different directories, and a namespace enforcing Pod Security baseline or restricted refuses the pods that mount it"
    ))
}

fn check(repo: &Repository, me: &str) -> Result<(), String> {
    let backend = &repo.spec.backend;
    let kinds = backend.configured();
    let kind = match kinds.as_slice() {
        [] => {
            return Err(format!(
                "{me} has no backend: set exactly one of local, s3, gcs, azure, swift, b2, rest under spec.backend"
            ));
        }
        [one] => *one,
        several => {
            return Err(format!(
                "{me} has {} backends ({}): keep exactly one under spec.backend",
                several.len(),
                several.join(", ")
            ));
        }
    };
    if repo.spec.wipe_out && NO_WIPE_OUT.contains(&kind) {
        return Err(format!(
            "{me} sets wipeOut: true, which the {kind} backend does not support: remove spec.wipeOut or use another backend"
        ));
    }
    let secret = backend
        .storage_secret_name
        .as_deref()
        .is_some_and(|s| !s.is_empty());
    if !secret && kind != "local" {
        return Err(format!(
            "{me} has no spec.backend.storageSecretName: set it to the Secret holding RESTIC_PASSWORD and the {kind} credentials"
        ));
    }
    let missing = |field: &str| format!("{me} has no spec.backend.{kind}.{field}: set it");
    if let Some(l) = &backend.local {
        let sources = [
            l.host_path.is_some(),
            l.persistent_volume_claim.is_some(),
            l.nfs.is_some(),
            l.empty_dir.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if sources != 1 {
            return Err(format!(
                "{me} has {sources} volume sources for its local backend: set exactly one of hostPath, persistentVolumeClaim, nfs, emptyDir"
            ));
        }
        if !l.mount_path.starts_with('/') {
            return Err(format!(
                "{me} has no absolute spec.backend.local.mountPath: set where the volume is mounted, e.g. /safe/data"
            ));
        }
    }
    let empty = |s: &str| s.trim().is_empty();
    match () {
        _ if backend.s3.as_ref().is_some_and(|b| empty(&b.bucket)) => Err(missing("bucket")),
        _ if backend.gcs.as_ref().is_some_and(|b| empty(&b.bucket)) => Err(missing("bucket")),
        _ if backend.azure.as_ref().is_some_and(|b| empty(&b.container)) => {
            Err(missing("container"))
        }
        _ if backend.swift.as_ref().is_some_and(|b| empty(&b.container)) => {
            Err(missing("container"))
        }
        _ if backend.b2.as_ref().is_some_and(|b| empty(&b.bucket)) => Err(missing("bucket")),
        _ if backend.rest.as_ref().is_some_and(|b| empty(&b.url)) => Err(missing("url")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn repo(local: serde_json::Value) -> Repository {
        serde_json::from_value(json!({
            "apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
            "metadata": {"name": "r", "namespace": "demo"},
            "spec": {"backend": {"local": local, "storageSecretName": "s"}}
        }))
        .expect("Repository")
    }

    #[test]
    fn a_hostpath_local_backend_is_admitted_with_what_to_know() {
        let host = repo(json!({"mountPath": "/safe/data", "hostPath": {"path": "/data/stash"}}));
        assert_eq!(check(&host, "Repository demo/r"), Ok(()));
        let warning = host_path_warning(&host, "Repository demo/r").expect("a warning");
        assert!(
            warning.starts_with(
                "Repository demo/r keeps its local backend in hostPath /data/stash of each node"
            ),
            "{warning}"
        );
        assert!(
            warning.contains("Pod Security baseline or restricted"),
            "{warning}"
        );
        let claim =
            repo(json!({"mountPath": "/safe/data", "persistentVolumeClaim": {"claimName": "c"}}));
        assert_eq!(check(&claim, "Repository demo/r"), Ok(()));
        assert_eq!(host_path_warning(&claim, "Repository demo/r"), None);
    }
}
