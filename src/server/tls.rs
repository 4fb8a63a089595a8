//! TLS for the webhook port: the rustls configuration and its hot reload.
//!
//! The served configuration lives behind a lock and each new connection takes
//! the current one, so a reload changes what new handshakes get while open
//! connections keep the pair they started with. The files are re-read when
//! their directory changes (inotify via `notify`; a Kubernetes Secret volume
//! replaces its `..data` symlink, which is an event in the directory, not on
//! the file) and on a fixed poll as the fallback. A pair that does not load is
//! logged and counted, and the old one stays in service.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::metrics::Metrics;

/// Where the serving pair (and the optional client CA) live.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
    /// Offer HTTP/2 in ALPN.
    pub http2: bool,
}

/// Why a pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// The certificate is outside its validity window.
    #[error("{path}: {message}")]
    Validity {
        path: PathBuf,
        message: String,
        not_before: i64,
        not_after: i64,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// From this long before its expiry the served certificate is reported as
/// expiring (a warning, and `expiring="true"` on the not-after metric).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// What is being served, for logs, metrics and tests.
#[derive(Debug, Clone)]
pub struct Served {
    /// Serial number of the leaf certificate, hex.
    pub serial: String,
    /// Start of the leaf certificate's validity, Unix seconds.
    pub not_before: i64,
    /// Expiry of the leaf certificate, Unix seconds.
    pub not_after: i64,
}

/// Where the served certificate stands in its validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Valid,
    /// Within [`EXPIRY_WARNING`] of its expiry.
    Expiring,
    Expired,
}

impl Served {
    /// Where this certificate stands at `now` (Unix seconds).
    pub fn expiry(&self, now: i64) -> Expiry {
        if now > self.not_after {
            Expiry::Expired
        } else if now >= self.not_after - EXPIRY_WARNING.as_secs() as i64 {
            Expiry::Expiring
        } else {
            Expiry::Valid
        }
    }
}

/// A Unix time as RFC 3339, for messages.
pub fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map_or_else(|_| unix.to_string(), |t| t.to_string())
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A loaded configuration and what it serves (the digest of the files it
/// came from is kept apart, in `TlsState::last_seen`).
struct Loaded {
    config: Arc<ServerConfig>,
    served: Served,
}

/// The current TLS configuration, swapped on reload.
pub struct TlsState {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    served: RwLock<Served>,
    /// Digest of the files last looked at (loaded or refused), so a broken
    /// pair is reported once, not on every poll.
    last_seen: Mutex<[u8; 32]>,
    /// Times the files were read after the first load.
    checks: std::sync::atomic::AtomicU64,
    /// The last read error reported, so a missing file is warned about once.
    unreadable: Mutex<Option<String>>,
    /// The (serial, expiry state) last reported.
    reported: Mutex<Option<(String, Expiry)>>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The bytes of every file, read once per attempt.
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
}

impl Material {
    fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read(&files.cert)?,
            key: read(&files.key)?,
            ca: files.client_ca.as_deref().map(read).transpose()?,
        })
    }

    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [Some(&self.cert), Some(&self.key), self.ca.as_ref()] {
            let bytes = part.map_or(&[][..], Vec::as_slice);
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        h.finalize().into()
    }
}

fn build(files: &TlsFiles, m: &Material) -> Result<Loaded, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&m.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(&files.cert, format!("not a PEM certificate: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(&files.cert, "holds no certificate"));
    };
    let key = PrivateKeyDer::from_pem_slice(&m.key)
        .map_err(|e| invalid(&files.key, format!("not a PEM private key: {e}")))?;
    let certified = CertifiedKey::from_der(chain.clone(), key, &provider).map_err(|e| {
        invalid(
            &files.key,
            format!("does not match {}: {e}", files.cert.display()),
        )
    })?;
    let served = describe(leaf).map_err(|e| invalid(&files.cert, e))?;
    let now = now();
    let problem = if now < served.not_before {
        Some("is not valid yet")
    } else if now > served.not_after {
        Some("has expired")
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(TlsError::Validity {
            path: files.cert.clone(),
            message: format!(
                "the certificate {problem}: valid from {} until {}",
                rfc3339(served.not_before),
                rfc3339(served.not_after)
            ),
            not_before: served.not_before,
            not_after: served.not_after,
        });
    }

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (&files.client_ca, &m.ca) {
        (Some(path), Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert =
                    cert.map_err(|e| invalid(path, format!("not a PEM certificate: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| invalid(path, format!("not a CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(invalid(path, "holds no certificate"));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid(path, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Fixed(Arc::new(certified))));
    config.alpn_protocols = if files.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Loaded {
        config: Arc::new(config),
        served,
    })
}

fn describe(leaf: &CertificateDer<'_>) -> Result<Served, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    Ok(Served {
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Always answers with one pair.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl TlsState {
    /// Loads the pair; an error here stops the server from starting.
    pub fn load(files: TlsFiles, metrics: &Metrics) -> Result<Self, TlsError> {
        let material = Material::read(&files)?;
        let loaded = build(&files, &material)?;
        let state = Self {
            current: RwLock::new(loaded.config),
            served: RwLock::new(loaded.served),
            last_seen: Mutex::new(material.digest()),
            checks: std::sync::atomic::AtomicU64::new(0),
            unreadable: Mutex::new(None),
            reported: Mutex::new(None),
            files,
        };
        state.check_expiry(metrics);
        Ok(state)
    }

    /// Sets the not-after metric and warns, once per certificate and state,
    /// when the served certificate is within [`EXPIRY_WARNING`] of its
    /// expiry or past it.
    pub fn check_expiry(&self, metrics: &Metrics) {
        let served = self.served();
        let state = served.expiry(now());
        metrics.set_cert_not_after(served.not_after, state != Expiry::Valid);
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if reported
            .as_ref()
            .is_some_and(|(serial, s)| *serial == served.serial && *s == state)
        {
            return;
        }
        *reported = Some((served.serial.clone(), state));
        let (cert, not_after) = (self.files.cert.display(), rfc3339(served.not_after));
        match state {
            Expiry::Valid => {}
            Expiry::Expiring => {
                let days = (served.not_after - now()).max(0) / 86_400;
                tracing::warn!(%cert, %not_after, days_left = days, "the served certificate expires within 30 days; renew it");
            }
            Expiry::Expired => {
                tracing::error!(%cert, %not_after, "the served certificate has expired; clients will refuse it until it is renewed");
            }
        }
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many times the files were re-read since the first load.
    pub fn checks(&self) -> u64 {
        self.checks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What is being served now.
    pub fn served(&self) -> Served {
        self.served
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the files; swaps in a changed pair that loads, keeps the old
    /// one otherwise. Returns whether a new pair went into service.
    pub fn reload_if_changed(&self, metrics: &Metrics) -> bool {
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(material) = self.read_material() else {
            return false;
        };
        if !self.is_new(&material) {
            return false;
        }
        match build(&self.files, &material) {
            Ok(loaded) => {
                metrics.count_reload(true);
                self.swap_in(loaded, metrics);
                true
            }
            Err(e) => {
                metrics.count_reload(false);
                self.report_rejected(e);
                false
            }
        }
    }

    /// The files' contents, or `None` while they cannot be read: a file
    /// missing for a moment (a rename in progress) is retried on the next
    /// event or poll, and warned about once.
    fn read_material(&self) -> Option<Material> {
        match Material::read(&self.files) {
            Ok(m) => {
                let back = self
                    .unreadable
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                if back.is_some() {
                    tracing::info!(cert = %self.files.cert.display(), "certificate files readable again");
                }
                Some(m)
            }
            Err(e) => {
                let text = e.to_string();
                let mut last = self.unreadable.lock().unwrap_or_else(|e| e.into_inner());
                if last.as_deref() != Some(text.as_str()) {
                    let file = match &e {
                        TlsError::Read { path, .. } => path.display().to_string(),
                        _ => self.files.cert.display().to_string(),
                    };
                    tracing::warn!(%file, error = %text, "certificate files disappeared or are unreadable; keeping the served pair");
                    *last = Some(text);
                }
                None
            }
        }
    }

    /// Whether `material` differs from what was last seen (and remembers it).
    fn is_new(&self, material: &Material) -> bool {
        let digest = material.digest();
        let mut last = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
        if *last == digest {
            return false;
        }
        *last = digest;
        true
    }

    /// Puts a newly loaded pair into service.
    fn swap_in(&self, loaded: Loaded, metrics: &Metrics) {
        tracing::info!(
            serial = %loaded.served.serial,
            not_after = %rfc3339(loaded.served.not_after),
            cert = %self.files.cert.display(),
            "serving a new certificate"
        );
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded.config;
        *self.served.write().unwrap_or_else(|e| e.into_inner()) = loaded.served;
        self.check_expiry(metrics);
    }

    /// Logs why a changed pair was not put into service.
    fn report_rejected(&self, error: TlsError) {
        match error {
            TlsError::Validity {
                path,
                message,
                not_before,
                not_after,
            } => tracing::error!(
                file = %path.display(),
                not_before = %rfc3339(not_before),
                not_after = %rfc3339(not_after),
                error = %message,
                "changed certificate is outside its validity window; keeping the served pair"
            ),
            e => {
                let file = match &e {
                    TlsError::Read { path, .. } | TlsError::Invalid { path, .. } => {
                        path.display().to_string()
                    }
                    _ => self.files.cert.display().to_string(),
                };
                tracing::error!(%file, error = %e, "changed certificate files do not load; keeping the served pair");
            }
        }
    }

    /// Directories to watch: those holding the files (a symlink swap is a
    /// change of the directory entry, not of the file).
    fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = [
            Some(&self.files.cert),
            Some(&self.files.key),
            self.files.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

/// Reloads on file events (when `events`) and every `poll` until `stop`
/// turns true.
pub async fn watch(
    state: Arc<TlsState>,
    metrics: Arc<Metrics>,
    poll: Duration,
    events: bool,
    mut stop: watch::Receiver<bool>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = if events {
        start_notify(&state, tx)
    } else {
        None
    };
    let mut ticker = tokio::time::interval(poll.max(Duration::from_millis(50)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(()) = rx.recv() => {
                // Let a burst of events (write, rename, symlink swap) settle.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = ticker.tick() => {}
        }
        if *stop.borrow() {
            break;
        }
        let (state, metrics) = (state.clone(), metrics.clone());
        // File reads and key parsing are blocking work.
        let _ = tokio::task::spawn_blocking(move || {
            state.reload_if_changed(&metrics);
            state.check_expiry(&metrics);
        })
        .await;
    }
    drop(watcher);
}

fn start_notify(
    state: &TlsState,
    tx: tokio::sync::mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    // Only events about our files or a Secret volume's `..`-prefixed entries
    // (`..data`, `..2024_…`) matter; other files in the directory (logs,
    // editors' swap files) must not cause re-reads.
    let names: Vec<std::ffi::OsString> = [
        Some(&state.files.cert),
        Some(&state.files.key),
        state.files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
    .collect();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reads (ours included: every reload opens the files) are not changes;
        // reacting to them would re-read the files in a loop.
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            p.file_name().is_some_and(|n| {
                names.iter().any(|ours| ours == n) || n.to_string_lossy().starts_with("..")
            })
        });
        if relevant {
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch certificate files; polling only");
            return None;
        }
    };
    for dir in state.watch_dirs() {
        if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; polling only");
        }
    }
    Some(watcher)
}
