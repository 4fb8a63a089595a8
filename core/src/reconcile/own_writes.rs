//! The resourceVersions this controller has superseded by its own writes,
//! per object, so that a pass handed one of them does nothing.
//!
//! Why: a controller reconciles from its reflector cache, which learns of
//! the controller's own writes only when their watch events arrive. A pass
//! on a new configuration (rv1) adds the finalizer (rv1 → rv2) and writes
//! the status (rv2 → rv3); those writes, and the CronJob it created, each
//! trigger another pass, which the cache may hand rv1 or rv2. Its guarded
//! writes then fail (422 on the finalizer's `test`, 409 on the status) and
//! are retried with backoff and a log line — on a real cluster 300 new
//! configurations made 303 such failures, 1,000 made 2,220. Nothing was
//! wrong: the pass merely ran on a copy this controller had already moved
//! past. So every successful write records the version it was based on
//! (when the server answered with another), and a pass on a recorded
//! version returns at once: the newer version's watch event is on its way
//! and triggers the pass that matters.
//!
//! resourceVersions are opaque: they are only compared for equality. The
//! memory is bounded: an object's entry is dropped as soon as a pass sees a
//! version not in it (the cache caught up, or someone else wrote; the cache
//! never goes back), when the object is released, and the whole memory is
//! dropped if it ever holds [`MAX_OBJECTS`] objects. Forgetting is always
//! safe — the worst a forgotten entry costs is a stale pass whose guarded
//! write fails and is retried, as before.

use std::collections::HashMap;
use std::sync::Mutex;

/// Objects remembered at most; beyond, the memory starts afresh.
pub const MAX_OBJECTS: usize = 4096;
/// Superseded versions remembered per object (a pass makes at most two
/// guarded writes to its object: the finalizer and the status).
pub const MAX_PER_OBJECT: usize = 8;

/// What a pass should do with the version it was handed (pure, for tests).
pub fn is_superseded(superseded: &[String], resource_version: &str) -> bool {
    superseded.iter().any(|v| v == resource_version)
}

/// Per object key (`namespace/name`), the versions its own writes superseded.
#[derive(Default)]
pub struct OwnWrites {
    superseded: Mutex<HashMap<String, Vec<String>>>,
}

impl OwnWrites {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.superseded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `resource_version` of `key` is one this controller's own
    /// writes have moved past. A version not remembered is fresh: the
    /// object's entry is dropped, since the cache will not hand an older one.
    pub fn is_stale(&self, key: &str, resource_version: Option<&str>) -> bool {
        let mut map = self.map();
        let stale = match (map.get(key), resource_version) {
            (Some(old), Some(rv)) => is_superseded(old, rv),
            _ => false,
        };
        if !stale {
            map.remove(key);
        }
        stale
    }

    /// Records a successful write to `key` based on `before` that left the
    /// object at `after`. A write the server found empty keeps the version
    /// and supersedes nothing.
    pub fn wrote(&self, key: &str, before: Option<&str>, after: Option<&str>) {
        let Some(before) = before.filter(|b| Some(*b) != after) else {
            return;
        };
        let mut map = self.map();
        if map.len() >= MAX_OBJECTS && !map.contains_key(key) {
            map.clear();
        }
        let versions = map.entry(key.to_string()).or_default();
        if versions.len() >= MAX_PER_OBJECT {
            versions.remove(0);
        }
        versions.push(before.to_string());
    }

    /// Forgets `key` (released, deleted).
    pub fn forget(&self, key: &str) {
        self.map().remove(key);
    }

    /// Objects remembered now.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_versions_a_pass_moved_past_are_stale_until_a_fresh_one_is_seen() {
        let w = OwnWrites::default();
        // finalizer patch on rv1 gave rv2, status on rv2 gave rv3
        w.wrote("demo/a", Some("1"), Some("2"));
        w.wrote("demo/a", Some("2"), Some("3"));
        assert!(w.is_stale("demo/a", Some("1")));
        assert!(w.is_stale("demo/a", Some("2")));
        assert!(!w.is_stale("demo/b", Some("1")), "per object");
        // the cache caught up: forget, the cache never goes back
        assert!(!w.is_stale("demo/a", Some("3")));
        assert!(w.is_empty());
        assert!(!w.is_stale("demo/a", Some("2")));
    }

    #[test]
    fn an_empty_write_supersedes_nothing_and_memory_is_bounded() {
        let w = OwnWrites::default();
        w.wrote("demo/a", Some("7"), Some("7"));
        w.wrote("demo/a", None, Some("8"));
        assert!(w.is_empty());
        for i in 0..(MAX_PER_OBJECT + 3) {
            w.wrote("demo/a", Some(&i.to_string()), Some("x"));
        }
        assert!(!is_superseded(&["1".into()], "10"));
        assert!(w.is_stale("demo/a", Some(&(MAX_PER_OBJECT + 2).to_string())));
        assert!(!w.is_stale("demo/a", Some("0")), "the oldest fell out");
        for i in 0..MAX_OBJECTS {
            w.wrote(&format!("ns/{i}"), Some("1"), Some("2"));
        }
        assert_eq!(w.len(), MAX_OBJECTS);
        w.wrote("ns/one-more", Some("1"), Some("2"));
        assert_eq!(w.len(), 1);
        w.forget("ns/one-more");
        assert!(w.is_empty());
    }
}
