//! Who this sidecar is: its restic host name and how it shares the
//! repository with the workload's other pods.
//!
//! Replicas of a Deployment or ReplicaSet hold the same data, so they elect
//! one leader that backs up for all of them as `host-0`. StatefulSet pods
//! (`host-<ordinal>`) and DaemonSet pods (the node name) each back up their
//! own data and take the same Lease in turn, so that one restic at a time
//! writes to the repository.

/// How the pods of a workload share the backup work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// One leader for the life of the process backs up every session.
    Leader,
    /// Every pod backs up each session, holding the Lease only while it does.
    TakeTurns,
}

/// Why the host identity cannot be worked out.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HostError {
    #[error(
        "target kind {0:?} is not supported (use Deployment, StatefulSet, DaemonSet or ReplicaSet)"
    )]
    UnsupportedKind(String),
    #[error("POD_NAME {0:?} does not end in a StatefulSet ordinal (-<n>)")]
    NoOrdinal(String),
    #[error("{0} is not set; the sidecar needs it from the downward API")]
    MissingEnv(&'static str),
}

/// The election mode for a workload kind.
pub fn election(kind: &str) -> Result<Election, HostError> {
    match kind {
        "Deployment" | "ReplicaSet" => Ok(Election::Leader),
        "StatefulSet" | "DaemonSet" => Ok(Election::TakeTurns),
        other => Err(HostError::UnsupportedKind(other.to_string())),
    }
}

/// The restic host name: `alias` if the configuration sets one, else
/// `host-0` (Deployment, ReplicaSet), `host-<ordinal>` (StatefulSet) or the
/// node name (DaemonSet).
pub fn host_name(
    kind: &str,
    pod_name: Option<&str>,
    node_name: Option<&str>,
    alias: Option<&str>,
) -> Result<String, HostError> {
    election(kind)?;
    if let Some(alias) = alias.filter(|a| !a.is_empty()) {
        return Ok(alias.to_string());
    }
    match kind {
        "StatefulSet" => {
            let pod = pod_name
                .filter(|p| !p.is_empty())
                .ok_or(HostError::MissingEnv("POD_NAME"))?;
            let ordinal = pod
                .rsplit_once('-')
                .map(|(_, n)| n)
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| HostError::NoOrdinal(pod.to_string()))?;
            Ok(format!("host-{ordinal}"))
        }
        "DaemonSet" => node_name
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .ok_or(HostError::MissingEnv("NODE_NAME")),
        _ => Ok("host-0".to_string()),
    }
}

/// Name of the Lease: `lock-<kind>-<name>-backup`, lowercase.
pub fn lease_name(kind: &str, name: &str) -> String {
    format!("lock-{kind}-{name}-backup").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_per_kind() {
        assert_eq!(
            host_name("Deployment", Some("stash-demo-69f9-bww24"), None, None).unwrap(),
            "host-0"
        );
        assert_eq!(host_name("ReplicaSet", None, None, None).unwrap(), "host-0");
        assert_eq!(
            host_name("StatefulSet", Some("db-12"), None, None).unwrap(),
            "host-12"
        );
        assert_eq!(
            host_name("StatefulSet", Some("db"), None, None),
            Err(HostError::NoOrdinal("db".into()))
        );
        assert_eq!(
            host_name("DaemonSet", None, Some("node-a"), None).unwrap(),
            "node-a"
        );
        assert_eq!(
            host_name("DaemonSet", None, None, None),
            Err(HostError::MissingEnv("NODE_NAME"))
        );
        assert_eq!(
            host_name("Deployment", None, None, Some("web")).unwrap(),
            "web"
        );
        assert!(host_name("CronJob", None, None, None).is_err());
    }

    #[test]
    fn lease_name_is_lowercase() {
        assert_eq!(
            lease_name("Deployment", "stash-demo"),
            "lock-deployment-stash-demo-backup"
        );
        assert_eq!(election("StatefulSet").unwrap(), Election::TakeTurns);
        assert_eq!(election("Deployment").unwrap(), Election::Leader);
    }
}
