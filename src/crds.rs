//! `stash crds`: the CustomResourceDefinitions generated from the Rust types.
//!
//! The types in [`crate::api`] are the single source of truth; the YAML in
//! `manifests/crds/` is this function's output, kept equal by a test.

use kube::CustomResourceExt;

use crate::api::{BackupConfiguration, BackupSession, Repository, RestoreSession};

/// Command-line arguments.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// The four CRDs (BackupConfiguration, BackupSession, Repository, RestoreSession) as
/// multi-document YAML, `apiextensions.k8s.io/v1`.
pub fn crds_yaml() -> String {
    let crds = [
        BackupConfiguration::crd(),
        BackupSession::crd(),
        Repository::crd(),
        RestoreSession::crd(),
    ];
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        // A CRD is plain data (strings, maps, lists): it always serializes.
        out.push_str(&serde_yaml::to_string(&crd).unwrap_or_default());
    }
    out
}

/// Runs the subcommand.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(crds_yaml().as_bytes())?;
    stdout.flush()?;
    Ok(())
}
