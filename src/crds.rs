//! `stash crds`: the CustomResourceDefinitions generated from the Rust types.

/// Command-line arguments.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
