//! Command-line spellings shared by several subcommands, kept apart from
//! the decision core (which stays free of clap).

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
