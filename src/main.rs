//! The `stash` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stash::telemetry::{self, LogFormat};

/// Stash's sidecar backup model for Kubernetes: admission webhooks, reconciler and restic sidecar.
#[derive(Parser)]
#[command(name = "stash", version, about)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "STASH_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; `serve` simply has many flags
enum Command {
    /// Serve the admission webhooks (and, in cluster mode, run the reconciler).
    Serve(stash::cmd::serve::Args),
    /// Create a BackupSession for a configuration, or record why not (the CronJob's job).
    CreateBackupsession(stash::trigger::Args),
    /// Back up the workload's volumes with restic (the injected sidecar).
    RunBackup(stash::backup::Args),
    /// Restore the workload's volumes from a RestoreSession (the injected init container).
    Restore(stash::restore::Args),
    /// Print the webhook's answer to an AdmissionReview or a manifest, offline.
    Review(stash::review::Args),
    /// Make a CA and a serving certificate for the webhook Service.
    Certs(stash::certs::Args),
    /// Print the CustomResourceDefinitions.
    Crds(stash::crds::Args),
    /// Print the install: namespace, RBAC, webhook server and webhook configurations.
    Manifests(stash::manifests::Args),
    /// The kubectl plugin (`kubectl stash …`, installed as a `kubectl-stash` symlink).
    Kubectl(stash::plugin::Args),
}

fn main() -> ExitCode {
    if stash::plugin::invoked_as_plugin(std::env::args_os().next().as_deref()) {
        return stash::plugin::main();
    }
    let cli = Cli::parse();
    if let Command::Kubectl(args) = cli.command {
        return stash::plugin::run_process(args);
    }
    telemetry::init(cli.log_format);
    let runtime = match stash::runtime::process::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(a) => stash::cmd::serve::run(a).await,
            Command::CreateBackupsession(a) => stash::trigger::run(a).await,
            Command::RunBackup(a) => stash::backup::run(a).await,
            Command::Restore(a) => stash::restore::run(a).await,
            Command::Review(a) => stash::review::run(a).await,
            Command::Certs(a) => stash::certs::run(a).await,
            Command::Crds(a) => stash::crds::run(a).await,
            Command::Manifests(a) => stash::manifests::run(a).await,
            Command::Kubectl(_) => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
