//! What every subcommand's process starts with, in one place: the one
//! process-wide rustls provider (kube's client and the webhook server share
//! it) and a multi-threaded tokio runtime. A runtime that cannot start is one
//! line on stderr and exit code 1, never a panic.

use std::process::ExitCode;

/// Installs the rustls provider and builds the runtime, or says why not.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}
