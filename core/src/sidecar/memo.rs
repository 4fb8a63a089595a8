//! The sidecar a (configuration, Repository, image, workload) wants,
//! computed once and reused until the index replaces one of them.
//!
//! Building the desired container and volumes as JSON and hashing them is
//! most of a `/mutate/workloads` decision's cost, and every pod-template write
//! of the same workload (each rollout, each scale, each controller's update)
//! asks for the same answer again. The memo is keyed by the *identity* of the
//! configuration and Repository objects the index holds: the index never
//! changes an object in place, it swaps in a new `Arc`, so an entry can only
//! be reused for exactly the objects it was computed from. Each entry keeps
//! `Weak` handles on them, which also keeps their addresses from being reused
//! by later objects while the entry lives, so a stale entry is never matched.
//!
//! Besides those two objects, [`super::desired`] reads the image, the
//! workload's kind and name, which of the configuration's
//! `target.volumeMounts` name a volume the workload has, and who the
//! workload's containers run as (the sidecar's securityContext case,
//! [`crate::workload::privilege`]): all part of the key.
//!
//! One memo per thread (no lock on the request path), each bounded: when full
//! it is emptied and refills with what is asked for next. Transparent: the
//! answer is the same with or without it (`memo_answers_as_a_fresh_computation`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use super::Desired;
use crate::api::{BackupConfiguration, Repository};
use crate::workload::privilege::Identity;

/// Entries per thread before the memo is emptied.
const CAPACITY: usize = 512;

/// What [`super::desired`] reads besides the two objects.
#[derive(PartialEq, Eq)]
pub(super) struct Inputs<'a> {
    pub image: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    /// Bit `i`: the workload has the volume of `target.volumeMounts[i]`.
    pub mounts_present: u64,
    /// The sidecar's securityContext case.
    pub identity: Identity,
}

/// A computed sidecar and the warnings that came with it.
pub(super) struct Computed {
    pub desired: Desired,
    pub warnings: Vec<String>,
}

struct Entry {
    config: Weak<BackupConfiguration>,
    repository: Weak<Repository>,
    image: String,
    kind: String,
    name: String,
    mounts_present: u64,
    identity: Identity,
    computed: Arc<Computed>,
}

impl Entry {
    fn matches(&self, inputs: &Inputs) -> bool {
        self.config.strong_count() > 0
            && self.repository.strong_count() > 0
            && self.mounts_present == inputs.mounts_present
            && self.identity == inputs.identity
            && self.kind == inputs.kind
            && self.name == inputs.name
            && self.image == inputs.image
    }
}

type Key = (usize, usize);

thread_local! {
    static MEMO: RefCell<HashMap<Key, Vec<Entry>>> = RefCell::new(HashMap::new());
}

fn key(config: &Arc<BackupConfiguration>, repository: &Arc<Repository>) -> Key {
    (
        Arc::as_ptr(config) as usize,
        Arc::as_ptr(repository) as usize,
    )
}

/// The memoized result for these inputs, or `compute`'s, remembered.
pub(super) fn get_or_compute(
    config: &Arc<BackupConfiguration>,
    repository: &Arc<Repository>,
    inputs: Inputs,
    compute: impl FnOnce() -> Computed,
) -> Arc<Computed> {
    let key = key(config, repository);
    let found = MEMO.with_borrow(|memo| {
        memo.get(&key)?
            .iter()
            .find(|e| e.matches(&inputs))
            .map(|e| e.computed.clone())
    });
    if let Some(computed) = found {
        return computed;
    }
    let computed = Arc::new(compute());
    MEMO.with_borrow_mut(|memo| {
        let len: usize = memo.values().map(Vec::len).sum();
        if len >= CAPACITY {
            memo.clear();
        }
        memo.entry(key).or_default().push(Entry {
            config: Arc::downgrade(config),
            repository: Arc::downgrade(repository),
            image: inputs.image.to_owned(),
            kind: inputs.kind.to_owned(),
            name: inputs.name.to_owned(),
            mounts_present: inputs.mounts_present,
            identity: inputs.identity,
            computed: computed.clone(),
        });
    });
    computed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn computed(tag: &str) -> Computed {
        Computed {
            desired: Desired {
                container: crate::patch::Shared::new(serde_json::json!({"name": tag})),
                volumes: Vec::new(),
                hash: tag.to_owned(),
            },
            warnings: Vec::new(),
        }
    }

    fn inputs(name: &str, mounts_present: u64) -> Inputs<'_> {
        Inputs {
            image: "img",
            kind: "Deployment",
            name,
            mounts_present,
            identity: Identity::Root,
        }
    }

    #[test]
    fn reused_for_the_same_objects_and_inputs_only() {
        let bc = Arc::new(BackupConfiguration::new("a", Default::default()));
        let repo = Arc::new(Repository::new("r", Default::default()));
        let first = get_or_compute(&bc, &repo, inputs("app", 1), || computed("first"));
        let again = get_or_compute(&bc, &repo, inputs("app", 1), || computed("again"));
        assert!(Arc::ptr_eq(&first, &again));
        // Any other input is another entry.
        let other_mounts = get_or_compute(&bc, &repo, inputs("app", 0), || computed("m"));
        assert_eq!(other_mounts.desired.hash, "m");
        let other_name = get_or_compute(&bc, &repo, inputs("other", 1), || computed("n"));
        assert_eq!(other_name.desired.hash, "n");
        let other_user = Inputs {
            identity: Identity::NonRoot,
            ..inputs("app", 1)
        };
        let other_user = get_or_compute(&bc, &repo, other_user, || computed("u"));
        assert_eq!(other_user.desired.hash, "u");
        // A new version of the configuration (a new Arc) is computed afresh.
        let bc2 = Arc::new((*bc).clone());
        let newer = get_or_compute(&bc2, &repo, inputs("app", 1), || computed("newer"));
        assert_eq!(newer.desired.hash, "newer");
    }
}
