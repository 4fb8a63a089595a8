//! A `stash` process run the way a container runs it: in a process group of
//! its own (the container), stopped the way the kubelet stops it: SIGTERM,
//! the grace period, then SIGKILL; and when it exits, whatever it leaves
//! running in the group is killed, as the kernel kills every process of a
//! PID namespace whose first process has exited.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// One running `stash` process.
pub struct Container {
    pub child: tokio::process::Child,
    pid: u32,
}

/// kill(2) of `pid`, or of its process group when `group`.
fn kill(signal: i32, pid: u32, group: bool) {
    let Ok(pid) = i32::try_from(pid) else { return };
    let target = if group { -pid } else { pid };
    // SAFETY: kill(2) has no memory effects; `pid` is our child's, whose
    // group (made for it with `process_group(0)`) only it and its children use.
    unsafe {
        libc::kill(target, signal);
    }
}

impl Container {
    /// Starts `binary args…` with only `KUBECONFIG` and `PATH` in its
    /// environment; its output goes to the test's.
    pub fn start<I, S>(binary: &Path, args: I, kubeconfig: &Path) -> Container
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let child = tokio::process::Command::new(binary)
            .args(args)
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("start stash");
        let pid = child.id().expect("a pid");
        Container { child, pid }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it as the kubelet does: SIGTERM, up to `grace` to exit, then
    /// SIGKILL; then the rest of the group goes. Returns how it exited (or
    /// `None` if it had to be killed) and how long it took after SIGTERM.
    pub async fn stop(mut self, grace: Duration) -> (Option<ExitStatus>, Duration) {
        let sent = Instant::now();
        kill(libc::SIGTERM, self.pid, false);
        let status = tokio::time::timeout(grace, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        let took = sent.elapsed();
        kill(libc::SIGKILL, self.pid, true);
        let _ = self.child.wait().await;
        (status, took)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        kill(libc::SIGKILL, self.pid, true);
    }
}
