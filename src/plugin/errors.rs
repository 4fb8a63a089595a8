//! One line per failure, saying what failed: the API server's answer turned
//! into the sentence a person acts on. A 404 of a named object reads as
//! kubectl's (`backupconfiguration "x" not found in namespace "demo"`); a
//! 403 names the verb and the resource we asked for, then the API server's
//! own message (which names the user); anything else says what we were doing.

use std::fmt;

/// A kind as the plugin names it: singular for sentences, plural.group for RBAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// `backupconfiguration`.
    pub singular: &'static str,
    /// `backupconfigurations.stash.appscode.com` (`secrets` for the core group).
    pub resource: &'static str,
}

pub const BACKUP_CONFIGURATION: Kind = Kind {
    singular: "backupconfiguration",
    resource: "backupconfigurations.stash.appscode.com",
};
pub const BACKUP_SESSION: Kind = Kind {
    singular: "backupsession",
    resource: "backupsessions.stash.appscode.com",
};
pub const REPOSITORY: Kind = Kind {
    singular: "repository",
    resource: "repositories.stash.appscode.com",
};
/// A Repository's status subresource, which `check` patches (RBAC: `repositories/status`).
pub const REPOSITORY_STATUS: Kind = Kind {
    singular: "repository",
    resource: "repositories.stash.appscode.com/status",
};
pub const SECRET: Kind = Kind {
    singular: "secret",
    resource: "secrets",
};
pub const EVENT: Kind = Kind {
    singular: "event",
    resource: "events",
};
pub const POD: Kind = Kind {
    singular: "pod",
    resource: "pods",
};
pub const CRONJOB: Kind = Kind {
    singular: "cronjob",
    resource: "cronjobs.batch",
};

/// What the plugin asked the API server for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// RBAC verb: get, list, patch, create, watch.
    pub verb: &'static str,
    pub kind: Kind,
    /// The object's name; `None` for a list or a create by generated name.
    pub name: Option<&'a str>,
    pub namespace: &'a str,
}

impl<'a> Request<'a> {
    pub fn new(verb: &'static str, kind: Kind, name: Option<&'a str>, namespace: &'a str) -> Self {
        Self {
            verb,
            kind,
            name,
            namespace,
        }
    }
}

impl fmt::Display for Request<'_> {
    /// `patch backupconfigurations.stash.appscode.com "x" in namespace "demo"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.kind.resource)?;
        if let Some(name) = self.name {
            write!(f, " {name:?}")?;
        }
        write!(f, " in namespace {:?}", self.namespace)
    }
}

/// The one-line sentence for `error`, an answer to `request`.
pub fn describe(request: &Request<'_>, error: &kube::Error) -> String {
    let text = match error {
        kube::Error::Api(status) => describe_status(request, status.code, &status.message),
        other => format!("cannot {request}: {other}"),
    };
    one_line(&text)
}

/// [`describe`] for an API Status (`code`, `message`).
pub fn describe_status(request: &Request<'_>, code: u16, message: &str) -> String {
    match (code, request.name) {
        (404, Some(name)) if !is_missing_api(message) => format!(
            "{} {name:?} not found in namespace {:?}",
            request.kind.singular, request.namespace
        ),
        (404, _) => format!(
            "cannot {request}: the API server does not serve {} (is stash installed? its CRDs: stash crds | kubectl apply -f -)",
            request.kind.resource
        ),
        (403, _) => format!("no permission to {request}: {message}"),
        (401, _) => format!(
            "cannot {request}: the API server did not accept the kubeconfig's credentials: {message}"
        ),
        _ => format!("cannot {request}: {message} ({code})"),
    }
}

/// A 404 about the resource type itself rather than one object of it.
fn is_missing_api(message: &str) -> bool {
    message.contains("the server could not find the requested resource")
}

/// Whether `error` is the API server's 404.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 404)
}

/// Text with every line break folded into a space (restic and the API
/// server may answer in several lines).
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch_bc() -> Request<'static> {
        Request::new("patch", BACKUP_CONFIGURATION, Some("x"), "demo")
    }

    #[test]
    fn not_found_reads_like_kubectl() {
        assert_eq!(
            describe_status(
                &Request::new("get", BACKUP_CONFIGURATION, Some("x"), "demo"),
                404,
                "backupconfigurations.stash.appscode.com \"x\" not found"
            ),
            "backupconfiguration \"x\" not found in namespace \"demo\""
        );
        let missing_crd = describe_status(
            &Request::new("list", BACKUP_CONFIGURATION, None, "demo"),
            404,
            "the server could not find the requested resource",
        );
        assert!(missing_crd.contains("is stash installed?"), "{missing_crd}");
    }

    #[test]
    fn forbidden_names_the_verb_and_resource() {
        let m = "backupconfigurations.stash.appscode.com \"x\" is forbidden: User \"jane\" cannot patch resource \"backupconfigurations\" in API group \"stash.appscode.com\" in the namespace \"demo\"";
        assert_eq!(
            describe_status(&patch_bc(), 403, m),
            format!(
                "no permission to patch backupconfigurations.stash.appscode.com \"x\" in namespace \"demo\": {m}"
            )
        );
    }

    #[test]
    fn other_answers_say_what_was_asked() {
        assert_eq!(
            describe_status(&patch_bc(), 500, "etcd\nis down"),
            "cannot patch backupconfigurations.stash.appscode.com \"x\" in namespace \"demo\": etcd\nis down (500)"
        );
        assert_eq!(one_line("a\n\n b \nc"), "a b c");
    }
}
