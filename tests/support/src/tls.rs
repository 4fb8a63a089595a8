//! Helpers for the socket tests: certificates on disk, a server on
//! 127.0.0.1:0, TLS clients (HTTP/1.1 and HTTP/2 over rustls) and fixtures.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use stash::certs::{Authority, Leaf};
use stash::server::{self, Config, Running};
use stash::store::Store;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA and a serving pair written into a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Authority,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("test CA").unwrap();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        let pki = Self { dir, ca, cert, key };
        pki.write(&pki.leaf());
        pki
    }

    /// A new serving certificate for the loopback names.
    pub fn leaf(&self) -> Leaf {
        self.ca.server(&stash::certs::dev_names()).unwrap()
    }

    /// Writes a pair in place (atomic renames, key first).
    pub fn write(&self, leaf: &Leaf) {
        stash::certs::write_atomic(&self.key, leaf.key_pem.as_bytes(), true).unwrap();
        stash::certs::write_atomic(&self.cert, leaf.cert_pem.as_bytes(), false).unwrap();
    }

    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem().to_string()
    }

    pub fn config(&self) -> Config {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut c = Config::new(any, any, self.cert.clone(), self.key.clone());
        c.cert_poll_interval = Duration::from_millis(200);
        c.drain_timeout = Duration::from_secs(5);
        c
    }
}

/// The guide's example directory.
pub fn examples() -> PathBuf {
    crate::repo_root().join("manifests/examples")
}

/// A store loaded from manifests/examples.
pub fn example_store() -> Arc<Store> {
    let loaded = stash::store::offline::load(&examples()).unwrap();
    Arc::new(Store::from_snapshot(loaded.snapshot))
}

pub async fn start(config: Config) -> Running {
    server::start(config, example_store()).await.unwrap()
}

/// The serial (hex) of a PEM certificate's first block.
pub fn serial_of_pem(pem: &str) -> String {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    serial_of_der(&der)
}

pub fn serial_of_der(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial_as_string().replace(':', "")
}

/// A rustls client trusting `ca_pem`, offering `alpn`, optionally with a
/// client certificate.
pub fn client_config(ca_pem: &str, alpn: &[&[u8]], client: Option<&Leaf>) -> Arc<ClientConfig> {
    client_config_versions(ca_pem, alpn, client, rustls::DEFAULT_VERSIONS)
}

pub fn client_config_versions(
    ca_pem: &str,
    alpn: &[&[u8]],
    client: Option<&Leaf>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                    .map(Result::unwrap)
                    .collect();
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Opens a TLS connection to `addr` as `127.0.0.1`.
pub async fn tls(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await
}

/// The serial of the certificate a fresh handshake gets.
pub async fn served_serial(addr: SocketAddr, ca_pem: &str) -> String {
    let stream = tls(addr, client_config(ca_pem, &[b"http/1.1"], None))
        .await
        .unwrap();
    let certs = stream.get_ref().1.peer_certificates().unwrap();
    serial_of_der(&certs[0])
}

/// An HTTP client over one TLS connection: HTTP/2 when ALPN chose it.
pub enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub version: http::Version,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Conn {
    /// Another handle on the same HTTP/2 connection (None for HTTP/1.1).
    pub fn share(&self) -> Option<Conn> {
        match self {
            Conn::H2(s) => Some(Conn::H2(s.clone())),
            Conn::H1(_) => None,
        }
    }

    pub async fn open(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<Self> {
        let stream = tls(addr, config).await?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Ok(Conn::H2(sender))
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Ok(Conn::H1(sender))
        }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, hyper::Error> {
        let resp = match self {
            Conn::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Conn::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes().to_vec();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
            version: parts.version,
        })
    }

    /// POSTs JSON to `path`.
    pub async fn post(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<Reply, hyper::Error> {
        self.send(request(
            Method::POST,
            path,
            Some("application/json"),
            body.into(),
        ))
        .await
    }
}

/// A request with an absolute URI (HTTP/2 needs the authority).
pub fn request(
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("https://127.0.0.1{path}"));
    if let Some(ct) = content_type {
        b = b.header(http::header::CONTENT_TYPE, ct);
    }
    b.body(Full::new(body)).unwrap()
}

/// The Deployment of manifests/examples/deployment.yaml.
pub fn example_deployment() -> Value {
    use serde::Deserialize;
    let text = std::fs::read_to_string(examples().join("deployment.yaml")).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .find(|v| v["kind"] == "Deployment")
        .unwrap()
}

/// A Deployment CREATE review, as the API server sends it.
pub fn deployment_review(uid: &str) -> Value {
    let deployment = example_deployment();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": deployment["metadata"]["name"],
            "namespace": deployment["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]},
            "object": deployment,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// Asserts an answer is an AdmissionReview response for `uid`.
pub fn assert_review_answer(reply: &Reply, uid: &str) {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.headers[http::header::CONTENT_TYPE],
        "application/json"
    );
    let v = reply.json();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], uid);
    assert!(v["response"]["allowed"].is_boolean());
}

/// GET on the plain probe port; (status, body).
pub async fn probe(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of a metric line that starts with `prefix` (first match).
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
