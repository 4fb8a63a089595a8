//! The one opening every validating webhook of ours shares.
//!
//! Each of `/validate/backupconfigurations`, `/validate/repositories`,
//! `/validate/restoresessions` and `/validate/backupsessions` used to start
//! with the same dozen lines: not our kind or not ours to judge → allow; no
//! object → allow; unreadable → deny in one line; being deleted → allow; an
//! UPDATE whose spec did not change → allow; name the object
//! (`"<Kind> <ns>/<name>"`); run the rule; warn about unknown fields. Repeated
//! four times, the copies drifted where nobody meant them to and hid where
//! the kinds really differ. Here the opening is written once ([`admit`]) and
//! each CRD implements only what is its own through [`Validated`]: whether it
//! is being deleted, what an UPDATE gets, and its rule. The model is Linkerd's
//! policy-controller admission (`Validate<T>` per resource, one `admit_spec`
//! around it).
//!
//! Where the kinds differ on purpose, the trait says so rather than the
//! copies: a RestoreSession's changed spec is denied (immutable) and a
//! BackupSession's too, but a BackupSession is never re-judged on UPDATE; a
//! Repository is re-judged on every UPDATE; a BackupSession is judged even
//! with a deletionTimestamp, and its unknown-field warnings have their own
//! wording and come before the rule's.

use kube::core::admission::Operation;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::read::{self, Read};
use super::{Decision, Request};
use crate::api::unknown::unknown_fields;
use crate::settings::Settings;
use crate::store::Snapshot;

/// What a rule sees besides its object.
pub struct Ctx<'a> {
    /// `"<Kind> <namespace>/<name>"`, how every message names the object.
    pub me: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub snap: &'a Snapshot,
    pub settings: &'a Settings,
}

/// One of our CRDs, as its validating webhook judges it.
pub trait Validated: DeserializeOwned + Serialize {
    /// The kind (group stash.appscode.com), as requests and messages spell it.
    const KIND: &'static str;

    /// Whether unknown-field warnings come before the rule's own warnings
    /// (BackupSession) rather than after them (the rest).
    const UNKNOWN_FIELDS_FIRST: bool = false;

    /// Whether the object is being deleted, and so only losing finalizers:
    /// never blocked.
    fn is_deleting(&self) -> bool;

    /// The answer to an UPDATE, given the old object when it reads; `None`
    /// judges the new object as on CREATE.
    fn on_update(old: Option<&Self>, new: &Self, me: &str) -> Option<Decision>;

    /// The rule: the warnings of an allowed object, or a one-line denial.
    fn rule(&self, ctx: &Ctx<'_>) -> Result<Vec<String>, String>;

    /// The warning for an unknown field `field` (a path, e.g. `spec.pasued`).
    fn unknown_field(field: &str, me: &str) -> String {
        format!("unknown field {field} of {me} is ignored; check its spelling")
    }
}

/// `T`'s validating webhook: the shared opening around `T`'s rule.
pub fn admit<T: Validated>(req: &Request, snap: &Snapshot, settings: &Settings) -> Decision {
    if read::passes_untouched(req) || !read::is_kind(req, T::KIND) {
        return Decision::allow();
    }
    let Read { typed, raw } = match object::<T>(req, T::KIND) {
        Ok(r) => r,
        Err(early) => return early,
    };
    if typed.is_deleting() {
        return Decision::allow();
    }
    let namespace = read::namespace(req);
    let name = read::name(req);
    let me = me::<T>(&namespace, &name);
    if req.operation == Operation::Update {
        let old = req
            .old_object
            .as_ref()
            .and_then(|o| read::typed::<T>(o, T::KIND).ok());
        if let Some(answer) = T::on_update(old.as_ref().map(|o| &o.typed), &typed, &me) {
            return answer;
        }
    }
    let rule = match judge(&typed, &namespace, &name, snap, settings) {
        Ok(warnings) => warnings,
        Err(denial) => return Decision::deny(denial),
    };
    let unknown: Vec<String> = unknown_fields(&raw, &typed)
        .iter()
        .map(|f| T::unknown_field(f, &me))
        .collect();
    let mut decision = Decision::allow();
    decision.warnings = if T::UNKNOWN_FIELDS_FIRST {
        [unknown, rule].concat()
    } else {
        [rule, unknown].concat()
    };
    decision
}

/// How every message names the object: `"<Kind> <namespace>/<name>"`.
fn me<T: Validated>(namespace: &str, name: &str) -> String {
    format!("{} {namespace}/{name}", T::KIND)
}

/// `T`'s rule on `obj` (named `namespace/name`) against `snap`: the
/// warnings of an allowed object, or the one-line denial. What the webhook
/// answers on CREATE, and what the reconciler reports as `ValidationPassed`
/// on an object that got in while the webhook was down or before a rule
/// existed: one place per rule.
pub fn judge<T: Validated>(
    obj: &T,
    namespace: &str,
    name: &str,
    snap: &Snapshot,
    settings: &Settings,
) -> Result<Vec<String>, String> {
    let me = me::<T>(namespace, name);
    obj.rule(&Ctx {
        me: &me,
        namespace,
        name,
        snap,
        settings,
    })
}

/// The request's object read into `K`, or the early answer: allowed when
/// there is no object, denied in one line when it does not read as a `kind`.
pub fn object<K: DeserializeOwned>(req: &Request, kind: &str) -> Result<Read<K>, Decision> {
    let Some(obj) = &req.object else {
        return Err(Decision::allow());
    };
    read::typed::<K>(obj, kind).map_err(Decision::deny)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::admission::{Endpoint, decide, wire};
    use crate::api::{BackupConfiguration, BackupSession, Repository, RestoreSession};

    const VALIDATORS: [(Endpoint, &str); 4] = [
        (
            Endpoint::ValidateBackupConfigurations,
            "BackupConfiguration",
        ),
        (Endpoint::ValidateRepositories, "Repository"),
        (Endpoint::ValidateRestoreSessions, "RestoreSession"),
        (Endpoint::ValidateBackupSessions, "BackupSession"),
    ];

    fn review(kind: &str, operation: &str, object: Value, old: Option<Value>) -> Vec<u8> {
        let mut request = json!({
            "uid": "u",
            "kind": {"group": "stash.appscode.com", "version": "v1beta1", "kind": kind},
            "resource": {"group": "stash.appscode.com", "version": "v1beta1", "resource": "x"},
            "name": "n",
            "namespace": "ns",
            "operation": operation,
            "userInfo": {},
            "object": object,
        });
        if let Some(old) = old {
            request["oldObject"] = old;
        }
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": request,
        }))
        .unwrap()
    }

    fn ask(endpoint: Endpoint, body: &[u8]) -> Decision {
        let (_, req) = wire::parse(body).unwrap();
        decide(endpoint, &req, &Snapshot::default(), &Settings::default())
    }

    fn meta(extra: Value) -> Value {
        let mut m = json!({"name": "n", "namespace": "ns"});
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        m
    }

    #[test]
    fn the_kinds_are_the_ones_routed() {
        assert_eq!(
            [
                BackupConfiguration::KIND,
                Repository::KIND,
                RestoreSession::KIND,
                BackupSession::KIND
            ],
            VALIDATORS.map(|(_, k)| k)
        );
    }

    #[test]
    fn an_unreadable_object_is_denied_in_one_line_naming_its_kind() {
        for (endpoint, kind) in VALIDATORS {
            for operation in ["CREATE", "UPDATE"] {
                let object = json!({"metadata": meta(json!({})), "spec": 7});
                let body = review(kind, operation, object.clone(), Some(object));
                let d = ask(endpoint, &body);
                assert!(!d.allowed, "{kind} {operation}");
                assert_eq!(
                    d.message.as_deref(),
                    Some(
                        format!(
                            "{kind} n cannot be read: spec: invalid type: integer `7`, expected struct {kind}Spec; fix the manifest"
                        )
                        .as_str()
                    ),
                    "{kind} {operation}"
                );
                assert!(d.warnings.is_empty());
            }
        }
    }

    #[test]
    fn a_deleting_object_is_allowed_untouched_except_a_backupsession() {
        let deleting = meta(json!({"deletionTimestamp": "2019-08-02T06:20:00Z"}));
        for (endpoint, kind) in VALIDATORS {
            // An empty spec breaks every kind's rule; unknown fields would warn.
            let object = json!({"metadata": deleting, "spec": {}, "typo": 1});
            let d = ask(endpoint, &review(kind, "CREATE", object, None));
            if kind == "BackupSession" {
                // Judged regardless, as its validator always was.
                assert!(!d.allowed, "{kind}");
                assert!(
                    d.message
                        .as_deref()
                        .is_some_and(|m| m.starts_with("BackupSession ns/n has invoker kind \"\"")),
                    "{d:?}"
                );
            } else {
                assert_eq!(d, Decision::allow(), "{kind}");
            }
        }
    }

    #[test]
    fn not_ours_to_judge_passes_untouched() {
        for (endpoint, kind) in VALIDATORS {
            let object = json!({"metadata": meta(json!({})), "spec": 7});
            // Another kind at this endpoint, a DELETE, no object at all.
            let other = review("Deployment", "CREATE", object.clone(), None);
            assert_eq!(ask(endpoint, &other), Decision::allow(), "{kind}");
            let delete = review(kind, "DELETE", object.clone(), None);
            assert_eq!(ask(endpoint, &delete), Decision::allow(), "{kind}");
            let mut none: Value =
                serde_json::from_slice(&review(kind, "CREATE", object, None)).unwrap();
            none["request"].as_object_mut().unwrap().remove("object");
            let none = serde_json::to_vec(&none).unwrap();
            assert_eq!(ask(endpoint, &none), Decision::allow(), "{kind}");
        }
    }

    #[test]
    fn unknown_fields_follow_the_rules_warnings_but_for_a_backupsession() {
        let first: [bool; 4] = [
            BackupConfiguration::UNKNOWN_FIELDS_FIRST,
            Repository::UNKNOWN_FIELDS_FIRST,
            RestoreSession::UNKNOWN_FIELDS_FIRST,
            BackupSession::UNKNOWN_FIELDS_FIRST,
        ];
        assert_eq!(first, [false, false, false, true]);
        assert_eq!(
            Repository::unknown_field("spec.x", "Repository ns/n"),
            "unknown field spec.x of Repository ns/n is ignored; check its spelling"
        );
        assert_eq!(
            BackupSession::unknown_field("spec.x", "BackupSession ns/n"),
            "unknown field spec.x of BackupSession ns/n is ignored"
        );
    }

    #[test]
    fn warnings_come_in_each_kinds_order_and_wording() {
        let session = json!({
            "metadata": meta(json!({})),
            "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "bc"}},
            "typo": 1,
        });
        let d = ask(
            Endpoint::ValidateBackupSessions,
            &review("BackupSession", "CREATE", session, None),
        );
        assert!(d.allowed, "{d:?}");
        assert_eq!(
            d.warnings,
            [
                "unknown field typo of BackupSession ns/n is ignored",
                "BackupConfiguration ns/bc does not exist; this BackupSession will not run until it does",
            ]
        );
        let restore = json!({
            "metadata": meta(json!({})),
            "spec": {
                "repository": {"name": "repo"},
                "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"}},
            },
            "typo": 1,
        });
        let d = ask(
            Endpoint::ValidateRestoreSessions,
            &review("RestoreSession", "CREATE", restore, None),
        );
        assert!(d.allowed, "{d:?}");
        assert_eq!(
            d.warnings,
            [
                "Repository ns/repo of RestoreSession ns/n does not exist yet; nothing is restored until it does",
                "unknown field typo of RestoreSession ns/n is ignored; check its spelling",
            ]
        );
    }

    #[test]
    fn an_update_is_answered_per_kind() {
        let repo = |wipe: bool| {
            json!({
                "metadata": meta(json!({})),
                "spec": {"backend": {"local": {"mountPath": "/m", "hostPath": {"path": "/d"}}}, "wipeOut": wipe},
            })
        };
        // A Repository is judged again even when its spec did not change.
        let d = ask(
            Endpoint::ValidateRepositories,
            &review("Repository", "UPDATE", repo(true), Some(repo(true))),
        );
        assert!(!d.allowed, "{d:?}");
        // A RestoreSession's changed spec is denied; with no old object it is judged.
        let restore = |name: &str| {
            json!({
                "metadata": meta(json!({})),
                "spec": {
                    "repository": {"name": "repo"},
                    "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}},
                },
            })
        };
        let d = ask(
            Endpoint::ValidateRestoreSessions,
            &review("RestoreSession", "UPDATE", restore("b"), Some(restore("a"))),
        );
        assert_eq!(
            d,
            Decision::deny(
                "RestoreSession ns/n: spec is immutable (the restore may already have run); delete it and create a new RestoreSession"
            )
        );
        let d = ask(
            Endpoint::ValidateRestoreSessions,
            &review("RestoreSession", "UPDATE", restore("b"), None),
        );
        assert!(d.allowed && d.warnings.len() == 1, "{d:?}");
        // A BackupSession is never judged again on UPDATE, only its spec kept.
        let session = |name: &str| json!({"metadata": meta(json!({})), "spec": {"invoker": {"kind": "Nope", "name": name}}});
        let d = ask(
            Endpoint::ValidateBackupSessions,
            &review("BackupSession", "UPDATE", session("a"), Some(session("a"))),
        );
        assert_eq!(d, Decision::allow());
        let d = ask(
            Endpoint::ValidateBackupSessions,
            &review("BackupSession", "UPDATE", session("b"), Some(session("a"))),
        );
        assert_eq!(d, Decision::deny("BackupSession spec is immutable"));
    }
}
