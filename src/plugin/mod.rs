//! `kubectl stash`: the same binary as a kubectl plugin, for the person who
//! operates backups from a laptop.
//!
//! Why in the operator's binary: the plugin must make exactly what the
//! product makes (the CronJob's BackupSession, the sidecar's restic
//! environment and INTEGRITY report), and the only way to never drift is to
//! call the same functions. Installed as `kubectl-stash` by a symlink; when
//! `argv[0]`'s file name is `kubectl-stash`, `main.rs` hands the command line
//! to [`main`]; `stash kubectl …` reaches the same code (tests, no symlink).
//!
//! One file per verb group; each keeps its decisions and its text as pure
//! functions apart from the requests: [`select`] (pause/resume), [`run`]
//! (trigger and `--wait`), [`repo`] (unlock/check/download with local
//! restic), [`debug`] (why no backup happened). [`connect`] reads the
//! kubeconfig as kubectl does, [`errors`] turns API answers into one line.

pub mod connect;
pub mod debug;
pub mod errors;
pub mod repo;
pub mod run;
pub mod select;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The file name kubectl looks for on PATH to run `kubectl stash`.
pub const PLUGIN_BINARY: &str = "kubectl-stash";

/// `kubectl stash` when installed as `kubectl-stash`.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-stash",
    bin_name = "kubectl stash",
    version,
    about = "Operate Stash backups: pause, resume, trigger, unlock, check, debug, download"
)]
pub struct Cli {
    #[command(flatten)]
    pub args: Args,
}

/// The plugin's command line (also `stash kubectl …`).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub kube: connect::KubeFlags,
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pause scheduled and instant backups (sets spec.paused: true).
    Pause {
        #[command(subcommand)]
        what: PauseWhat,
    },
    /// Resume backups (sets spec.paused: false, as the guide's kubectl patch does).
    Resume {
        #[command(subcommand)]
        what: PauseWhat,
    },
    /// Create a BackupSession now, exactly as the backup CronJob does.
    Trigger(run::TriggerArgs),
    /// Remove stale restic locks of a Repository (restic unlock), with local restic.
    Unlock(repo::UnlockArgs),
    /// Check a Repository with local restic and report it in status.integrity.
    Check(repo::CheckArgs),
    /// Show why a backup did or did not happen.
    Debug {
        #[command(subcommand)]
        what: DebugWhat,
    },
    /// Restore snapshots of a Repository to this machine with local restic.
    Download(repo::DownloadArgs),
}

/// What `pause`/`resume` act on.
#[derive(Debug, Subcommand)]
pub enum PauseWhat {
    /// BackupConfigurations, by name, label selector or all in the namespace.
    Backup(select::Selection),
}

/// What `debug` looks at.
#[derive(Debug, Subcommand)]
pub enum DebugWhat {
    /// A BackupConfiguration, its Repository, CronJob, pods, sessions, events and locks.
    Backup(debug::DebugArgs),
}

/// Where a verb writes: its report, and the person to ask for a confirmation.
pub struct Io<'a> {
    pub out: &'a mut (dyn Write + Send),
    pub input: &'a mut (dyn BufRead + Send),
}

/// How a verb ended when it did not fail outright: `Ok(())` is exit 0.
pub type Outcome = anyhow::Result<()>;

/// Entry point for `kubectl-stash` (`argv[0]`): parses, runs, prints a
/// one-line error, exits 0 or 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    run_process(cli.args)
}

/// Runs parsed plugin arguments in a fresh runtime (the `stash kubectl` path too).
pub fn run_process(args: Args) -> ExitCode {
    let runtime = match crate::runtime::process::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async move {
        let connected = connect::connect(&args.kube).await?;
        let mut stdout = std::io::stdout();
        let mut stdin = std::io::BufReader::new(std::io::stdin());
        let mut io = Io {
            out: &mut stdout,
            input: &mut stdin,
        };
        execute(&args.command, &connected, &mut io).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", errors::one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Runs one verb against a connected cluster: what tests call with a fake
/// cluster's client and a captured output.
pub async fn execute(command: &Command, cx: &connect::Connected, io: &mut Io<'_>) -> Outcome {
    match command {
        Command::Pause {
            what: PauseWhat::Backup(sel),
        } => select::set_paused(cx, sel, true, io).await,
        Command::Resume {
            what: PauseWhat::Backup(sel),
        } => select::set_paused(cx, sel, false, io).await,
        Command::Trigger(a) => run::trigger(cx, a, io).await,
        Command::Unlock(a) => repo::unlock(cx, a, io).await,
        Command::Check(a) => repo::check(cx, a, io).await,
        Command::Debug {
            what: DebugWhat::Backup(a),
        } => debug::backup(cx, a, io).await,
        Command::Download(a) => repo::download(cx, a, io).await,
    }
}

/// Whether `argv0` names the plugin binary (`…/kubectl-stash`).
pub fn invoked_as_plugin(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == PLUGIN_BINARY))
        .unwrap_or(false)
}

/// Writes one line of the report; a closed stdout (`| head`) is not an error
/// worth more than stopping.
pub(crate) fn say(io: &mut Io<'_>, line: impl AsRef<str>) -> anyhow::Result<()> {
    writeln!(io.out, "{}", line.as_ref())
        .and_then(|()| io.out.flush())
        .map_err(|e| anyhow::anyhow!("cannot write the output: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_symlink_name_selects_the_plugin() {
        assert!(invoked_as_plugin(Some(OsStr::new(
            "/home/u/.local/bin/kubectl-stash"
        ))));
        assert!(invoked_as_plugin(Some(OsStr::new("kubectl-stash"))));
        assert!(!invoked_as_plugin(Some(OsStr::new("/usr/bin/stash"))));
        assert!(!invoked_as_plugin(Some(OsStr::new("kubectl-stash-old"))));
        assert!(!invoked_as_plugin(None));
    }

    #[test]
    fn kubectl_flags_parse_before_and_after_the_verb() {
        let cli = Cli::try_parse_from([
            "kubectl-stash",
            "-n",
            "demo",
            "pause",
            "backup",
            "--backupconfig",
            "pause-backup",
            "--context",
            "kind-kind",
        ])
        .unwrap();
        assert_eq!(cli.args.kube.namespace.as_deref(), Some("demo"));
        assert_eq!(cli.args.kube.context.as_deref(), Some("kind-kind"));
        let Command::Pause {
            what: PauseWhat::Backup(sel),
        } = cli.args.command
        else {
            panic!("not pause");
        };
        assert_eq!(sel.backupconfig, ["pause-backup"]);
    }
}
