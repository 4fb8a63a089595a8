//! The TLS webhook server: its HTTPS port, its probe and metrics port, the
//! certificate it serves and reloads.
//!
//! [`start`] binds both ports and returns a [`Running`] server that tests
//! drive directly; `stash serve` (`crate::cmd::serve`) is the process around
//! it (flags, the offline or cluster store, the development certificate,
//! signals, the reconciler).

pub mod hangup;
pub mod http;
pub mod metrics;
pub mod probes;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::runtime::admin;
use crate::runtime::conn::{self, PortLimits};
use crate::runtime::drain::{self, Drain, Signal};
use crate::settings::Settings;
use crate::store::Store;
use http::{AppState, Decider, Limits};
use metrics::Metrics;
use probes::Health;
use tls::{TlsFiles, TlsState};

/// Default serving certificate and key: the embedded default's paths.
pub const DEFAULT_CERT_FILE: &str = "certs/tls.crt";
pub const DEFAULT_KEY_FILE: &str = "certs/tls.key";

/// Everything [`start`] needs.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub probe_listen: SocketAddr,
    pub tls: TlsFiles,
    pub settings: Settings,
    pub limits: Limits,
    pub header_read_timeout: Duration,
    /// Time a connection may stay without a request after its first.
    pub idle_timeout: Duration,
    /// Open connections at most: webhook port, probe port.
    pub max_connections: usize,
    pub probe_max_connections: usize,
    /// Time a client gets to finish the TLS handshake.
    pub handshake_timeout: Duration,
    pub drain_timeout: Duration,
    pub cert_poll_interval: Duration,
    /// Watch the certificate directories for changes (else poll only).
    pub cert_file_events: bool,
    pub decider: Decider,
}

impl Config {
    /// Defaults for a server on `listen`/`probe_listen` with this pair.
    pub fn new(listen: SocketAddr, probe_listen: SocketAddr, cert: PathBuf, key: PathBuf) -> Self {
        Self {
            listen,
            probe_listen,
            tls: TlsFiles {
                cert,
                key,
                client_ca: None,
                http2: true,
            },
            settings: Settings::default(),
            limits: Limits::default(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: conn::DEFAULT_IDLE_TIMEOUT,
            max_connections: conn::DEFAULT_MAX_CONNECTIONS,
            probe_max_connections: conn::DEFAULT_PROBE_MAX_CONNECTIONS,
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(25),
            cert_poll_interval: Duration::from_secs(10),
            cert_file_events: true,
            decider: http::default_decider(),
        }
    }

    fn port_limits(&self, max_connections: usize) -> PortLimits {
        PortLimits {
            max_connections,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
        }
    }
}

/// A started server.
pub struct Running {
    /// The webhook port's bound address.
    pub addr: SocketAddr,
    /// The probe port's bound address.
    pub probe_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub tls: Arc<TlsState>,
    health: Arc<Health>,
    /// The one drain signal of the server.
    signal: Signal,
    /// Its second stage, given once the webhook port has drained.
    webhooks_drained: Arc<Signal>,
    /// The drain as seen by what must outlive the webhook port's drain.
    after_webhooks: Drain,
    task: JoinHandle<()>,
}

/// A server whose ports have stopped, and the drain its other tasks (the
/// reconciler, the SIGHUP handler, the store feed) are still finishing.
pub struct Draining {
    signal: Signal,
    webhooks_drained: Arc<Signal>,
}

impl Draining {
    /// Resolves once every handle on both stages of the drain has been
    /// released: every task given one has finished draining.
    pub async fn released(&self) {
        self.signal.released().await;
        self.webhooks_drained.released().await;
    }

    /// Handles on the drain still held.
    pub fn held(&self) -> usize {
        self.signal.held() + self.webhooks_drained.held()
    }
}

impl Running {
    /// Shuts down as on SIGTERM: not ready, stop accepting, drain in-flight
    /// requests (up to the drain timeout), stop the probe port, then wait
    /// for every task holding a handle on the drain to release it.
    pub async fn shutdown(self) {
        self.drain_ports().await.released().await;
    }

    /// The first part of [`Running::shutdown`]: signals the drain and waits
    /// for the webhook port (up to the drain timeout) and the probe port to
    /// stop; what holds a handle may still be draining.
    pub async fn drain_ports(self) -> Draining {
        self.health.shutting_down.store(true, Ordering::Release);
        self.signal.drain();
        let _ = self.task.await;
        Draining {
            signal: self.signal,
            webhooks_drained: self.webhooks_drained,
        }
    }

    /// A handle on the server's drain signal, for a task that drains with it
    /// (the reconciler, the SIGHUP handler).
    pub fn drain(&self) -> Drain {
        self.signal.handle()
    }

    /// A handle that fires once the webhook port has drained, for a task
    /// in-flight requests still depend on (the store feed).
    pub fn after_webhooks(&self) -> Drain {
        self.after_webhooks.clone()
    }

    /// Marks the server as shutting down (readyz false) without stopping it.
    pub fn begin_shutdown(&self) {
        self.health.shutting_down.store(true, Ordering::Release);
    }
}

/// Binds both ports, loads the certificate and serves until shut down.
pub async fn start(config: Config, store: Arc<Store>) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let tls = Arc::new(
        TlsState::load(config.tls.clone(), &metrics)
            .context("cannot load the serving certificate")?,
    );
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let probe_listener = TcpListener::bind(config.probe_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.probe_listen))?;
    let addr = listener.local_addr()?;
    let probe_addr = probe_listener.local_addr()?;
    let health = Arc::new(Health {
        store: store.clone(),
        metrics: metrics.clone(),
        shutting_down: AtomicBool::new(false),
    });
    let app = Arc::new(AppState {
        store,
        settings: config.settings.clone(),
        metrics: metrics.clone(),
        limits: config.limits,
        decider: config.decider.clone(),
    });
    let (signal, drain) = drain::channel();
    // The second stage of the same drain: the probe port outlives the
    // webhook port's drain, so readiness stays observable until the end.
    let (webhooks_drained, after_webhooks) = drain::channel();
    let webhooks_drained = Arc::new(webhooks_drained);

    let watcher = tokio::spawn(tls::watch(
        tls.clone(),
        metrics.clone(),
        config.cert_poll_interval,
        config.cert_file_events,
        drain.receiver(),
    ));
    let probes = tokio::spawn(admin::serve(
        "probe",
        probe_listener,
        probes::router(health.clone()),
        config.port_limits(config.probe_max_connections),
        metrics.open_connections("probe"),
        // Stopped after the webhook port has drained: nothing to wait for.
        after_webhooks.clone(),
    ));
    let webhook = serve_webhooks(
        listener,
        tls.clone(),
        http::router(app),
        config.clone(),
        metrics.clone(),
        drain,
    );
    let second_stage = webhooks_drained.clone();
    let task = tokio::spawn(async move {
        webhook.await;
        second_stage.drain();
        let _ = probes.await;
        let _ = watcher.await;
    });
    tracing::info!(%addr, %probe_addr, http2 = config.tls.http2, mtls = config.tls.client_ca.is_some(), "serving webhooks");
    Ok(Running {
        addr,
        probe_addr,
        metrics,
        tls,
        health,
        signal,
        webhooks_drained,
        after_webhooks,
        task,
    })
}

/// The webhook port: TLS handshakes and HTTP connections, each on its own
/// task so no client can hold up another, under the port's connection cap;
/// on stop, closes the listener and drains open connections.
async fn serve_webhooks(
    listener: TcpListener,
    tls: Arc<TlsState>,
    router: http::Webhooks,
    config: Config,
    metrics: Arc<Metrics>,
    stop: Drain,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10));
    let builder = if config.tls.http2 {
        builder
    } else {
        builder.http1_only()
    };
    let builder = Arc::new(builder);
    let limits = config.port_limits(config.max_connections);
    let handshake_timeout = config.handshake_timeout;
    conn::serve(
        "webhook",
        listener,
        limits,
        config.drain_timeout,
        metrics.open_connections("webhook"),
        stop,
        move |accepted| {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let builder = builder.clone();
            let router = router.clone();
            async move {
                let mut stopping = accepted.stop.clone();
                let peer = accepted.peer;
                let service = accepted.track(TowerToHyperService::new(router));
                // A connection still in its handshake has no request in
                // flight: shutdown drops it instead of waiting for it.
                let stream = tokio::select! {
                    s = handshake(acceptor, accepted.tcp, peer, handshake_timeout) => s,
                    () = stopping.signaled() => None,
                };
                let Some(stream) = stream else {
                    return;
                };
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                if let Err(e) =
                    conn::drive(connection, accepted.activity, limits, accepted.stop).await
                {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
        },
    )
    .await;
}

async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}
