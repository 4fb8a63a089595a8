//! Who the `stash` sidecar and the `stash-init` container run as, and with
//! which capabilities: one pure decision per workload, from its pod
//! template as `super::View` reads it.
//!
//! The sidecar must read every file of the volumes it backs up, and
//! `stash-init` must write every file back with its owner, group and mode:
//! a PostgreSQL, MySQL or MongoDB data directory is `0700`, owned by the
//! database's uid, and a process of another uid without privileges can
//! neither read it nor restore it as it was. At the same time stash must
//! never make a workload's pods inadmissible: a namespace enforcing Pod
//! Security `restricted` refuses any container without
//! `allowPrivilegeEscalation: false`, `capabilities.drop: [ALL]`,
//! `runAsNonRoot: true` and seccomp `RuntimeDefault`, and `baseline` refuses
//! added capabilities beyond its short list. So, in this order:
//!
//! 1. the user's `runtimeSettings.container.securityContext` (of the
//!    BackupConfiguration for the sidecar, of the RestoreSession for
//!    `stash-init`) is used verbatim: the user chose ([`Identity::User`] is
//!    never computed here; the planners check for it first, [`choose`]);
//! 2. the containers mounting the target's volumes run as an explicit
//!    non-zero `runAsUser` (container level over pod level; `runAsGroup`
//!    likewise), all the same one: stash runs as that uid (and gid),
//!    hardened as `restricted` wants. The sidecar reads exactly what the
//!    workload's own process can; a restore writes files as that owner
//!    ([`Identity::Workload`]);
//! 3. the pod or any of its containers requires `runAsNonRoot: true` (the
//!    workload passes `restricted`, so its namespace may enforce it): the
//!    image's own uid 65532, hardened as in 2, which a restricted namespace
//!    admits; files it cannot read are reported by path, owner and mode
//!    ([`Identity::NonRoot`]);
//! 4. otherwise the workload may run as root (the official postgres image
//!    starts as root, no `runAsUser` in its spec), so its namespace cannot
//!    be enforcing `restricted` (its own pods would be refused): root, all
//!    capabilities dropped but the few Pod Security `baseline` allows that
//!    the job needs, no privilege escalation, seccomp `RuntimeDefault`
//!    ([`Identity::Root`]). The sidecar keeps `DAC_OVERRIDE` (reads every
//!    file and directory; `DAC_READ_SEARCH` would be the narrower one, but
//!    `baseline` does not allow adding it); `stash-init` keeps `CHOWN`,
//!    `FOWNER`, `DAC_OVERRIDE` and `FSETID`: restic restores owners and
//!    groups (`CHOWN`), then modes and times of files that are no longer
//!    its own (`FOWNER`), writes into directories of other owners already
//!    on the volume (`DAC_OVERRIDE`) and keeps setgid bits of groups it is
//!    not in (`FSETID`). Each is needed: `tests/restore/restic.rs` restores
//!    with each one left out and sees the tree differ. Both sets are less
//!    than the default set a root container already has.
//!
//! Containers stash owns (`stash`, `stash-init`) never count as the
//! workload's. When no container mounts the target's volumes, the pod-level
//! identity decides. When the mounting containers run as different users
//! there is no one owner to be: the decision goes on to 3 or 4.

use k8s_openapi::api::core::v1::{Capabilities, SeccompProfile, SecurityContext};

/// The uid and gid of the stash image's user (the Dockerfile's `USER`).
pub const IMAGE_UID: i64 = 65532;

/// The identity fields of a pod's or a container's `securityContext`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ids {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: Option<bool>,
}

impl Ids {
    /// A container's own fields over its pod's, as the kubelet applies them.
    pub fn over(self, pod: Ids) -> Ids {
        Ids {
            run_as_user: self.run_as_user.or(pod.run_as_user),
            run_as_group: self.run_as_group.or(pod.run_as_group),
            run_as_non_root: self.run_as_non_root.or(pod.run_as_non_root),
        }
    }
}

/// One of the workload's own containers (or init containers), as the
/// decision sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Member {
    /// Its own securityContext's identity fields (not merged with the pod's).
    pub ids: Ids,
    /// Whether it mounts one of the volumes the target mounts into stash's container.
    pub mounts_target: bool,
}

/// Which of the four cases applies (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity {
    /// 1: the user's own securityContext, verbatim.
    User,
    /// 2: the uid (and gid, when declared) the workload's containers run as.
    Workload { uid: i64, gid: Option<i64> },
    /// 3: the image's non-root user, for a workload that requires non-root.
    NonRoot,
    /// 4: root with only the capabilities the job needs.
    Root,
}

/// Which of stash's containers the securityContext is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The `stash` sidecar: reads the volumes (`restic backup`).
    Backup,
    /// `stash-init`: writes them back (`restic restore`).
    Restore,
}

impl Role {
    /// The capabilities added to root in case 4 (all others dropped).
    pub fn root_capabilities(self) -> &'static [&'static str] {
        match self {
            Role::Backup => &["DAC_OVERRIDE"],
            Role::Restore => &["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"],
        }
    }
}

/// Cases 2–4 for a pod whose own securityContext reads `pod` and whose
/// containers (stash's excluded) are `members`.
pub fn identity<I>(pod: Ids, members: I) -> Identity
where
    I: IntoIterator<Item = Member>,
    I::IntoIter: Clone,
{
    let members = members.into_iter();
    if let Some((uid, gid)) = shared_user(pod, members.clone()) {
        return Identity::Workload { uid, gid };
    }
    let non_root = pod.run_as_non_root == Some(true)
        || members
            .into_iter()
            .any(|m| m.ids.over(pod).run_as_non_root == Some(true));
    if non_root {
        Identity::NonRoot
    } else {
        Identity::Root
    }
}

/// The one explicit non-zero uid every container mounting the target runs
/// as (the pod's when none mounts it), with the one gid they all declare.
/// Iterates instead of collecting: this runs on every webhook decision.
fn shared_user(
    pod: Ids,
    members: impl Iterator<Item = Member> + Clone,
) -> Option<(i64, Option<i64>)> {
    let mounting = move || {
        members
            .clone()
            .filter(|m| m.mounts_target)
            .map(move |m| m.ids.over(pod))
    };
    let first = mounting().next().unwrap_or(pod);
    let uid = first.run_as_user.filter(|u| *u > 0)?;
    if mounting().any(|ids| ids.run_as_user != Some(uid)) {
        return None;
    }
    let gid = first
        .run_as_group
        .filter(|g| *g >= 0)
        .filter(|g| mounting().all(|ids| ids.run_as_group == Some(*g)));
    Some((uid, gid))
}

/// The securityContext of stash's container in `role`: the user's when they
/// set one (case 1), else the one `identity` (cases 2–4) wants.
pub fn choose(user: Option<&SecurityContext>, identity: Identity, role: Role) -> SecurityContext {
    match (user, identity) {
        (Some(user), _) => user.clone(),
        // `User` without the user's context (not what `case` gives): the
        // safest of the others, the image's non-root user.
        (None, Identity::User) => hardened(Some(IMAGE_UID), Some(IMAGE_UID), &[]),
        (None, Identity::Workload { uid, gid }) => hardened(Some(uid), gid, &[]),
        (None, Identity::NonRoot) => hardened(Some(IMAGE_UID), Some(IMAGE_UID), &[]),
        (None, Identity::Root) => hardened(Some(0), Some(0), role.root_capabilities()),
    }
}

/// The case a container's securityContext follows: [`Identity::User`] when
/// the user set one, else `identity` (what the planners memoize and test).
pub fn case(user: Option<&SecurityContext>, identity: Identity) -> Identity {
    if user.is_some() {
        Identity::User
    } else {
        identity
    }
}

/// Everything dropped but `add`, no escalation, seccomp `RuntimeDefault`;
/// `runAsNonRoot` says what `uid` is, so a non-root one passes `restricted`.
fn hardened(uid: Option<i64>, gid: Option<i64>, add: &[&str]) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            add: (!add.is_empty()).then(|| add.iter().map(|c| c.to_string()).collect()),
            drop: Some(vec!["ALL".to_string()]),
        }),
        run_as_non_root: Some(uid != Some(0)),
        run_as_user: uid,
        run_as_group: gid,
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(user: Option<i64>, group: Option<i64>, non_root: Option<bool>) -> Ids {
        Ids {
            run_as_user: user,
            run_as_group: group,
            run_as_non_root: non_root,
        }
    }

    fn mounting(ids: Ids) -> Member {
        Member {
            ids,
            mounts_target: true,
        }
    }

    fn other(ids: Ids) -> Member {
        Member {
            ids,
            mounts_target: false,
        }
    }

    const NONE: Ids = Ids {
        run_as_user: None,
        run_as_group: None,
        run_as_non_root: None,
    };

    /// A case: its name, the pod's ids, the containers, the identity wanted.
    type Case = (&'static str, Ids, Vec<Member>, Identity);

    /// Each case's identity, the case named when it is wrong.
    fn assert_cases(cases: Vec<Case>) {
        for (name, pod, members, want) in cases {
            assert_eq!(identity(pod, members.iter().copied()), want, "{name}");
        }
    }

    fn user(n: i64) -> Ids {
        ids(Some(n), None, None)
    }

    fn workload(uid: i64, gid: Option<i64>) -> Identity {
        Identity::Workload { uid, gid }
    }

    #[test]
    fn declared_users_and_groups_are_taken() {
        assert_cases(vec![
            (
                "container-level user",
                NONE,
                vec![mounting(ids(Some(999), Some(998), None))],
                workload(999, Some(998)),
            ),
            (
                "pod-level user and group",
                ids(Some(1000), Some(2000), None),
                vec![mounting(NONE)],
                workload(1000, Some(2000)),
            ),
            (
                "container over pod",
                ids(Some(1000), Some(2000), Some(true)),
                vec![mounting(ids(Some(999), None, None))],
                workload(999, Some(2000)),
            ),
            (
                "user without group",
                NONE,
                vec![mounting(user(999))],
                workload(999, None),
            ),
        ]);
    }

    #[test]
    fn root_unless_a_user_or_non_root_is_declared() {
        use Identity::*;
        assert_cases(vec![
            ("nothing declared: root", NONE, vec![mounting(NONE)], Root),
            ("no containers at all", NONE, vec![], Root),
            ("explicit root", NONE, vec![mounting(user(0))], Root),
            (
                "explicit root in a non-root pod",
                ids(None, None, Some(true)),
                vec![mounting(user(0))],
                NonRoot,
            ),
            (
                "pod requires non-root",
                ids(None, None, Some(true)),
                vec![mounting(NONE)],
                NonRoot,
            ),
            (
                "a container requires non-root",
                NONE,
                vec![mounting(NONE), other(ids(None, None, Some(true)))],
                NonRoot,
            ),
            (
                "container-level false overrides the pod's true",
                ids(None, None, Some(true)),
                vec![mounting(ids(None, None, Some(false)))],
                NonRoot, // the pod still requires it
            ),
            (
                "negative uid is not a user",
                NONE,
                vec![mounting(user(-1))],
                Root,
            ),
        ]);
    }

    #[test]
    fn the_containers_mounting_the_target_decide_together() {
        use Identity::*;
        assert_cases(vec![
            (
                "only the mounting containers' users count",
                NONE,
                vec![mounting(user(999)), other(user(1000))],
                workload(999, None),
            ),
            (
                "several mounting containers agree",
                NONE,
                vec![
                    mounting(ids(Some(999), Some(999), None)),
                    mounting(ids(Some(999), Some(999), None)),
                ],
                workload(999, Some(999)),
            ),
            (
                "several agree on the user, not the group",
                NONE,
                vec![
                    mounting(ids(Some(999), Some(1), None)),
                    mounting(ids(Some(999), Some(2), None)),
                ],
                workload(999, None),
            ),
            (
                "mounting containers disagree: no one owner",
                NONE,
                vec![mounting(user(999)), mounting(user(1000))],
                Root,
            ),
            (
                "disagree, non-root required",
                ids(None, None, Some(true)),
                vec![mounting(user(999)), mounting(user(1000))],
                NonRoot,
            ),
            (
                "one mounting container declares no user",
                NONE,
                vec![mounting(user(999)), mounting(NONE)],
                Root,
            ),
            (
                "no container mounts the target: the pod's user",
                ids(Some(70), None, None),
                vec![other(user(1000))],
                workload(70, None),
            ),
        ]);
    }

    #[test]
    fn each_case_is_hardened_as_its_namespace_admits() {
        let workload = Identity::Workload {
            uid: 999,
            gid: Some(999),
        };
        for role in [Role::Backup, Role::Restore] {
            let sc = choose(None, workload, role);
            assert_eq!(sc.run_as_user, Some(999));
            assert_eq!(sc.run_as_group, Some(999));
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            let caps = sc.capabilities.clone().unwrap();
            assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
            assert_eq!(caps.add, None);
            assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
            let sc = choose(None, Identity::NonRoot, role);
            assert_eq!(sc.run_as_user, Some(IMAGE_UID));
            assert_eq!(sc.run_as_non_root, Some(true));
            let sc = choose(None, Identity::Root, role);
            assert_eq!(sc.run_as_user, Some(0));
            assert_eq!(sc.run_as_non_root, Some(false));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            let added = sc.capabilities.unwrap().add.unwrap();
            assert_eq!(added, role.root_capabilities());
        }
        assert_eq!(Role::Backup.root_capabilities(), ["DAC_OVERRIDE"]);
        assert_eq!(
            Role::Restore.root_capabilities(),
            ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]
        );
    }

    #[test]
    fn the_users_choice_is_verbatim() {
        let user = SecurityContext {
            run_as_user: Some(5),
            ..SecurityContext::default()
        };
        for identity in [Identity::Root, Identity::NonRoot] {
            assert_eq!(choose(Some(&user), identity, Role::Backup), user);
            assert_eq!(case(Some(&user), identity), Identity::User);
            assert_eq!(case(None, identity), identity);
        }
    }
}
