//! Judging restic locks left by pods that are gone (see
//! [`super::engine::LockHolders`]).
//!
//! Inside a pod restic's hostname is the pod name. A lock is abandoned when
//! its hostname is this very pod (the sidecar runs one restic at a time, and
//! none is running when locks are judged), or names a pod of the target
//! workload (`<target>-…`) that no longer exists in the namespace. Locks of
//! any other host are left alone: the repository may be shared.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use super::engine::LockHolders;

/// Whether `hostname` can be the name of a pod of workload `target_name`.
pub fn may_be_workload_pod(hostname: &str, target_name: &str) -> bool {
    hostname
        .strip_prefix(target_name)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|rest| !rest.is_empty())
}

/// Looks lock holders up as pods in the workload's namespace.
pub struct PodLockHolders {
    pub pods: Api<Pod>,
    pub own_pod: String,
    pub target_name: String,
}

impl LockHolders for PodLockHolders {
    fn is_gone<'a>(&'a self, hostname: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            if hostname == self.own_pod {
                return true;
            }
            if !may_be_workload_pod(hostname, &self.target_name) {
                return false;
            }
            match self.pods.get_opt(hostname).await {
                Ok(None) => true,
                Ok(Some(_)) => false,
                Err(e) => {
                    tracing::warn!(pod = hostname, error = %e, "cannot tell whether a lock's pod is gone");
                    false
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_the_workloads_pods_qualify() {
        assert!(may_be_workload_pod(
            "stash-demo-69f9ffbbf7-bww24",
            "stash-demo"
        ));
        assert!(may_be_workload_pod("db-0", "db"));
        assert!(!may_be_workload_pod("stash-demo", "stash-demo"));
        assert!(!may_be_workload_pod("stash-demo-", "stash-demo"));
        assert!(!may_be_workload_pod("other-app-1", "stash-demo"));
        assert!(!may_be_workload_pod("stash-demox-1", "stash-demo"));
    }
}
