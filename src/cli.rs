//! Command-line spellings shared by several subcommands, kept apart from
//! the decision core (which stays free of clap).

use std::path::PathBuf;

use crate::settings::PausedSessionPolicy;

/// `--paused-session-policy`: the command line's spelling of
/// [`PausedSessionPolicy`], which stays free of clap (`serve` and `review`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PausedSessionPolicyArg {
    /// Admit it with a warning; the reconciler marks it Skipped.
    #[default]
    Skip,
    /// Deny it.
    Reject,
}

impl From<PausedSessionPolicyArg> for PausedSessionPolicy {
    fn from(arg: PausedSessionPolicyArg) -> Self {
        match arg {
            PausedSessionPolicyArg::Skip => PausedSessionPolicy::Skip,
            PausedSessionPolicyArg::Reject => PausedSessionPolicy::Reject,
        }
    }
}

/// The flags of the two containers stash injects into a workload's pods,
/// `stash run-backup` (the sidecar) and `stash restore` (the init
/// container), flattened into both: the mounted storage Secret, restic and
/// its cache, and this pod (downward API). `run-backup` words `--namespace`'s
/// help its own way and `restore` `--node-name`'s (`mut_arg`).
#[derive(Debug, Clone, clap::Args)]
pub struct InjectedArgs {
    /// Directory holding the Repository's storage Secret, one file per key.
    #[arg(
        long,
        env = "STASH_SECRET_DIR",
        default_value = "/etc/stash/repository/secret"
    )]
    pub secret_dir: PathBuf,
    /// Keep restic's cache in the scratch directory (false: `--no-cache`).
    #[arg(long, env = "STASH_ENABLE_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_cache: bool,
    /// Namespace of the pod (downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// This pod's name: Lease identity, StatefulSet ordinal (downward API).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: String,
    /// This pod's node: the host name of a DaemonSet's backups (downward API).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// restic executable, looked up on PATH unless it is a path.
    #[arg(long, env = "STASH_RESTIC_BINARY", default_value = "restic")]
    pub restic_binary: PathBuf,
    /// Writable directory for restic's cache and temporary files (the `tmp-dir` emptyDir).
    #[arg(long, env = "STASH_SCRATCH_DIR", default_value = "/tmp")]
    pub scratch_dir: PathBuf,
}

impl InjectedArgs {
    /// `--node-name` when set and not empty.
    pub fn node(&self) -> Option<&str> {
        self.node_name.as_deref().filter(|n| !n.is_empty())
    }
}
