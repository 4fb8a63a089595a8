//! Accepting and driving connections, the same way on both ports.
//!
//! Each port has its own connection cap, taken before `accept`: at the cap a
//! port stops accepting (new connections wait in the kernel's backlog and
//! cost no file descriptor), so a flood of one port can never take the file
//! descriptors the other needs. The caps are fitted under the process's
//! file-descriptor limit at start ([`fit_caps`]). An accept error (EMFILE and
//! the like) backs off instead of spinning.
//!
//! A connection that has not sent a complete request head within the header
//! timeout, or has had no request open for the idle timeout, is shut down
//! gracefully (HTTP/1.1: closed after the answer in progress; HTTP/2:
//! GOAWAY), and dropped if it still has not finished after one more idle
//! period (a client that stopped reading). On stop, the listener closes and
//! open connections are drained up to the drain timeout, then dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper_util::server::graceful::GracefulConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::runtime::drain::Drain;
use tokio::task::JoinSet;

/// Default cap on open connections of the webhook port.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Default cap on open connections of the probe port (kubelet and
/// Prometheus need a handful).
pub const DEFAULT_PROBE_MAX_CONNECTIONS: usize = 128;

/// File descriptors kept out of both caps: logs, certificate files and their
/// watcher, the API client's connections, the runtime's own.
pub const FD_RESERVE: u64 = 256;

/// Time a connection gets without an open request once it has sent one.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Time between accept retries after an accept error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Limits of one port.
#[derive(Debug, Clone, Copy)]
pub struct PortLimits {
    /// Open connections at most; the port stops accepting at the cap.
    pub max_connections: usize,
    /// Time to send the first request's head (and, for HTTP/1.1, every
    /// later one, counted from when the connection waits for it).
    pub header_read_timeout: Duration,
    /// Time a connection may stay without an open request after its first.
    pub idle_timeout: Duration,
}

/// Raises the soft limit on open files to the hard limit and returns the
/// resulting soft limit (None where it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        Some(lim.rlim_cur)
    }
}

/// Fits the two caps under `fd_limit` open files, keeping [`FD_RESERVE`]
/// for everything else: when they do not fit, the probe port gets an eighth
/// of what is left (at least 4) and the webhook port the rest (at least 1).
pub fn fit_caps(fd_limit: u64, webhook: usize, probe: usize) -> (usize, usize) {
    let available = fd_limit.saturating_sub(FD_RESERVE) as usize;
    if webhook.saturating_add(probe) <= available {
        return (webhook, probe);
    }
    let probe = probe.min((available / 8).max(4));
    let webhook = webhook.min(available.saturating_sub(probe)).max(1);
    (webhook, probe)
}

/// What a connection is doing, for its idle check: requests open and the
/// time the last one ended.
pub struct Activity {
    started: Instant,
    open: AtomicUsize,
    /// Milliseconds after `started` when the last request ended.
    last_ms: AtomicU64,
    served: AtomicBool,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            open: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            served: AtomicBool::new(false),
        })
    }

    /// When the connection turns idle if nothing happens before: None while
    /// a request is open.
    fn idle_at(&self, limits: &PortLimits) -> Option<Instant> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        let timeout = if self.served.load(Ordering::Acquire) {
            limits.idle_timeout
        } else {
            limits.header_read_timeout
        };
        Some(last + timeout)
    }
}

/// A service that reports its requests to the connection's [`Activity`].
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

struct Open(Arc<Activity>);

impl Drop for Open {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = a.started.elapsed().as_millis() as u64;
        a.last_ms.fetch_max(ms, Ordering::AcqRel);
        a.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: R) -> Self::Future {
        self.activity.open.fetch_add(1, Ordering::AcqRel);
        self.activity.served.store(true, Ordering::Release);
        let open = Open(self.activity.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(open);
            r
        })
    }
}

/// One accepted connection handed to the port's handler.
pub struct Accepted {
    pub tcp: TcpStream,
    pub peer: SocketAddr,
    /// Wraps the connection's service so its requests count as activity.
    pub activity: Arc<Activity>,
    /// The server's drain signal.
    pub stop: Drain,
}

impl Accepted {
    /// `service`, reporting to this connection's activity.
    pub fn track<S>(&self, service: S) -> Tracked<S> {
        Tracked {
            inner: service,
            activity: self.activity.clone(),
        }
    }
}

/// Accepts on `listener` until `stop`, at most `limits.max_connections` at a
/// time, and runs `handle` for each connection on its own task; then drains
/// them for up to `drain` and drops the rest. `open` counts open connections.
pub async fn serve<H, F>(
    port: &'static str,
    listener: TcpListener,
    limits: PortLimits,
    drain: Duration,
    open: prometheus_client::metrics::gauge::Gauge,
    mut stop: Drain,
    handle: H,
) where
    H: Fn(Accepted) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut accepting = Accepting {
        port,
        limits,
        permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        tasks: JoinSet::new(),
        at_cap_logged: false,
    };
    loop {
        let permit = match accepting.permit(&mut stop).await {
            Step::Go(p) => p,
            Step::Again => continue,
            Step::Stop => break,
        };
        let (tcp, peer, permit) = match accepting.accept(&listener, &mut stop, permit).await {
            Step::Go(a) => a,
            Step::Again => continue,
            Step::Stop => break,
        };
        let _ = tcp.set_nodelay(true);
        let accepted = Accepted {
            tcp,
            peer,
            activity: Activity::new(),
            stop: stop.clone(),
        };
        let gauge = open.clone();
        gauge.inc();
        let fut = handle(accepted);
        accepting.tasks.spawn(async move {
            fut.await;
            gauge.dec();
            drop(permit);
        });
    }
    drop(listener);
    accepting.drain(drain).await;
}

/// What one step of the accept loop came to.
enum Step<T> {
    /// Go on with this.
    Go(T),
    /// Start the step over (a connection closed, an accept failed).
    Again,
    /// The port is stopping.
    Stop,
}

/// A port's accept loop: its cap and its connections' tasks.
struct Accepting {
    port: &'static str,
    limits: PortLimits,
    permits: Arc<Semaphore>,
    tasks: JoinSet<()>,
    at_cap_logged: bool,
}

impl Accepting {
    /// A place under the cap, waiting (and warning once) at the cap.
    async fn permit(&mut self, stop: &mut Drain) -> Step<OwnedSemaphorePermit> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            self.at_cap_logged = false;
            return Step::Go(p);
        }
        if !self.at_cap_logged {
            tracing::warn!(
                port = self.port,
                max_connections = self.limits.max_connections,
                "connection cap reached; not accepting until a connection closes"
            );
            self.at_cap_logged = true;
        }
        tokio::select! {
            () = stop.signaled() => Step::Stop,
            p = self.permits.clone().acquire_owned() => match p {
                Ok(p) => Step::Go(p),
                Err(_) => Step::Stop,
            },
            Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => Step::Again,
        }
    }

    /// The next connection, with its place under the cap.
    async fn accept(
        &mut self,
        listener: &TcpListener,
        stop: &mut Drain,
        permit: OwnedSemaphorePermit,
    ) -> Step<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        let accepted = tokio::select! {
            () = stop.signaled() => return Step::Stop,
            Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => return Step::Again,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => Step::Go((tcp, peer, permit)),
            Err(e) => {
                // Out of file descriptors and the like: back off rather
                // than spin on an error that will not clear at once.
                tracing::warn!(port = self.port, error = %e, "accept failed; retrying shortly");
                drop(permit);
                tokio::select! {
                    () = stop.signaled() => Step::Stop,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => Step::Again,
                }
            }
        }
    }

    /// Waits up to `drain` for the open connections to finish, then drops
    /// the rest.
    async fn drain(mut self, drain: Duration) {
        let port = self.port;
        tracing::info!(
            port,
            open_connections = self.tasks.len(),
            "stopped accepting; draining"
        );
        let tasks = &mut self.tasks;
        let drained =
            tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
        match drained {
            Ok(()) => tracing::info!(port, "drained"),
            Err(_) => {
                tracing::warn!(port, timeout = ?drain, "drain timeout reached; closing the remaining connections");
                self.tasks.shutdown().await;
            }
        }
    }
}

/// Drives one HTTP connection: shuts it down gracefully when it has been
/// idle too long or the server stops, and drops it when a graceful shutdown
/// does not finish within one more idle period.
pub async fn drive<C>(
    conn: C,
    activity: Arc<Activity>,
    limits: PortLimits,
    mut stop: Drain,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let mut conn = std::pin::pin!(conn);
    let mut closing: Option<Instant> = None;
    loop {
        let wake = match closing {
            Some(deadline) => Some(deadline),
            None => activity.idle_at(&limits),
        };
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                // A request is open: its own deadline bounds it; look again soon.
                None => {
                    tokio::time::sleep(limits.header_read_timeout.min(Duration::from_secs(1))).await
                }
            }
        };
        tokio::select! {
            r = conn.as_mut() => return r,
            () = stop.signaled(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                // The drain timeout of `serve` bounds what follows.
                closing = Some(Instant::now() + Duration::from_secs(24 * 3600));
            }
            _ = sleep => {
                let now = Instant::now();
                match closing {
                    Some(deadline) if now >= deadline => return Ok(()),
                    Some(_) => {}
                    None => {
                        if activity.idle_at(&limits).is_some_and(|at| now >= at) {
                            conn.as_mut().graceful_shutdown();
                            closing = Some(now + limits.idle_timeout.max(limits.header_read_timeout));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_under_the_fd_limit() {
        assert_eq!(fit_caps(1_048_576, 4096, 128), (4096, 128));
        let (w, p) = fit_caps(1024, 4096, 128);
        assert!(w + p <= 1024 - FD_RESERVE as usize, "{w} {p}");
        assert_eq!(p, 96);
        assert!(w > 500);
        let (w, p) = fit_caps(100, 4096, 128);
        assert_eq!((w, p), (1, 4));
    }
}
