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

/// A store loaded from `dir` of the repository (`stash serve --offline dir`).
pub fn store_of(dir: &str) -> Arc<Store> {
    let loaded = stash::store::offline::load(&crate::repo_root().join(dir)).unwrap();
    Arc::new(Store::from_snapshot(loaded.snapshot))
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

/// One operation of a JSONPatch answer, as the README's
/// `jq -c '.[] | {op, path, name: .value.name?}'` shows it: `name` is the
/// added object's `name` (a container, a volume), or the value itself when
/// it is a string (a label), else `None`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchOp<'a> {
    pub op: &'a str,
    pub path: &'a str,
    pub name: Option<&'a str>,
}

impl<'a> PatchOp<'a> {
    pub const fn add(path: &'a str, name: Option<&'a str>) -> Self {
        Self {
            op: "add",
            path,
            name,
        }
    }
}

/// The patch of the workload webhook for the guide's Deployment (README,
/// "Ask the server"): the `stash` container, its three volumes, and the
/// annotations of the pod template and of the Deployment.
pub const GUIDE_DEPLOYMENT_PATCH: &[PatchOp<'static>] = &[
    PatchOp::add("/spec/template/spec/containers/-", Some("stash")),
    PatchOp::add("/spec/template/spec/volumes/-", Some("stash-podinfo")),
    PatchOp::add("/spec/template/spec/volumes/-", Some("stash-secret-volume")),
    PatchOp::add("/spec/template/spec/volumes/-", Some("tmp-dir")),
    PatchOp::add("/spec/template/metadata/annotations", None),
    PatchOp::add("/metadata/annotations", None),
];

/// The patch of the BackupSession webhook for the guide's instant session
/// (`tests/fixtures/serve/backupsession-create.json`): the invoker labels
/// the sidecar's and the reconciler's selectors use.
pub const GUIDE_SESSION_PATCH: &[PatchOp<'static>] = &[
    PatchOp::add(
        "/metadata/labels/stash.appscode.com~1invoker-name",
        Some("pause-backup"),
    ),
    PatchOp::add(
        "/metadata/labels/stash.appscode.com~1invoker-type",
        Some("BackupConfiguration"),
    ),
];

/// What a user expects of a webhook's answer.
#[derive(Debug, Clone, Copy)]
pub enum Expected<'a> {
    /// Allowed as it is: no patch, exactly these warnings.
    Allowed { warnings: &'a [&'a str] },
    /// Allowed with a JSONPatch of exactly these operations, in order, and
    /// no warnings.
    Patched { ops: &'a [PatchOp<'a>] },
    /// Denied: `status.code` is `code` and `status.message` contains `message`.
    Denied { code: u16, message: &'a str },
}

impl Expected<'_> {
    /// Allowed, no patch, no warnings.
    pub const ALLOWED: Expected<'static> = Expected::Allowed { warnings: &[] };
    /// The README's answer to the guide's Deployment.
    pub const GUIDE_DEPLOYMENT: Expected<'static> = Expected::Patched {
        ops: GUIDE_DEPLOYMENT_PATCH,
    };
}

/// The operations of an answer's base64 JSONPatch, as [`PatchOp`] shows them:
/// (op, path, name).
pub fn patch_ops(response: &Value) -> Vec<(String, String, Option<String>)> {
    use base64::Engine;
    let encoded = response["patch"]
        .as_str()
        .unwrap_or_else(|| panic!("no patch in {response}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_else(|e| panic!("the patch is not base64 ({e}): {encoded}"));
    let ops: Vec<Value> = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "the patch is not a JSON array ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    ops.iter()
        .map(|o| {
            let name = match &o["value"] {
                Value::String(s) => Some(s.clone()),
                v => v["name"].as_str().map(String::from),
            };
            (
                o["op"].as_str().unwrap_or_default().to_string(),
                o["path"].as_str().unwrap_or_default().to_string(),
                name,
            )
        })
        .collect()
}

/// Asserts an answer is the AdmissionReview response for `uid` a user
/// expects: HTTP 200 JSON, `allowed` as expected, and the patch (type
/// JSONPatch, its operations), the warnings or the denial's status.
pub fn assert_review_answer(reply: &Reply, uid: &str, expected: Expected<'_>) {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.headers[http::header::CONTENT_TYPE],
        "application/json"
    );
    let v = reply.json();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    let response = &v["response"];
    assert_eq!(response["uid"], uid);
    let warnings: Vec<&str> = response["warnings"]
        .as_array()
        .map(|w| w.iter().map(|w| w.as_str().unwrap_or_default()).collect())
        .unwrap_or_default();
    match expected {
        Expected::Allowed { warnings: want } => {
            assert_eq!(response["allowed"], true, "{response}");
            assert_eq!(response.get("patch"), None, "unexpected patch: {response}");
            assert_eq!(response.get("patchType"), None, "{response}");
            assert_eq!(warnings, want, "{response}");
        }
        Expected::Patched { ops } => {
            assert_eq!(response["allowed"], true, "{response}");
            assert_eq!(response["patchType"], "JSONPatch", "{response}");
            let want: Vec<(String, String, Option<String>)> = ops
                .iter()
                .map(|o| (o.op.into(), o.path.into(), o.name.map(String::from)))
                .collect();
            assert_eq!(patch_ops(response), want, "the patch's operations");
            assert!(warnings.is_empty(), "{response}");
        }
        Expected::Denied { code, message } => {
            assert_eq!(response["allowed"], false, "{response}");
            assert_eq!(
                response.get("patch"),
                None,
                "a denial with a patch: {response}"
            );
            assert_eq!(response["status"]["code"], code, "{response}");
            let said = response["status"]["message"].as_str().unwrap_or_default();
            assert!(
                said.contains(message),
                "the denial says {said:?}, not {message:?}"
            );
        }
    }
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

/// The assertion itself, on hand-made answers: the README's answer passes,
/// and a denied, an unpatched or a differently patched answer to the same
/// curl fails it.
#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const UID: &str = "2f6c5a1e-0b7d-4a8e-9d1c-3e5f7a9b1c01";

    fn reply(response: Value) -> Reply {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        let body = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        });
        Reply {
            status: StatusCode::OK,
            headers,
            body: body.to_string().into_bytes(),
            version: http::Version::HTTP_2,
        }
    }

    fn patched(ops: Value) -> Reply {
        let patch = base64::engine::general_purpose::STANDARD.encode(ops.to_string());
        reply(json!({"uid": UID, "allowed": true, "patchType": "JSONPatch", "patch": patch}))
    }

    /// The operations of README's "Ask the server", with their values.
    fn readme_ops() -> Value {
        json!([
            {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "stash", "image": "stash:dev"}},
            {"op": "add", "path": "/spec/template/spec/volumes/-", "value": {"name": "stash-podinfo"}},
            {"op": "add", "path": "/spec/template/spec/volumes/-", "value": {"name": "stash-secret-volume"}},
            {"op": "add", "path": "/spec/template/spec/volumes/-", "value": {"name": "tmp-dir"}},
            {"op": "add", "path": "/spec/template/metadata/annotations", "value": {"a": "b"}},
            {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}},
        ])
    }

    #[test]
    fn the_readmes_answer_passes() {
        assert_review_answer(&patched(readme_ops()), UID, Expected::GUIDE_DEPLOYMENT);
    }

    #[test]
    #[should_panic(expected = "left: Bool(false)")]
    fn a_denied_answer_fails() {
        let denied = reply(json!({"uid": UID, "allowed": false,
            "status": {"code": 403, "reason": "Forbidden", "message": "no"}}));
        assert_review_answer(&denied, UID, Expected::GUIDE_DEPLOYMENT);
    }

    #[test]
    #[should_panic(expected = "JSONPatch")]
    fn an_unpatched_answer_fails() {
        let unpatched = reply(json!({"uid": UID, "allowed": true}));
        assert_review_answer(&unpatched, UID, Expected::GUIDE_DEPLOYMENT);
    }

    #[test]
    #[should_panic(expected = "the patch's operations")]
    fn a_patch_without_the_podinfo_volume_fails() {
        let mut ops = readme_ops();
        ops.as_array_mut().unwrap().remove(1);
        assert_review_answer(&patched(ops), UID, Expected::GUIDE_DEPLOYMENT);
    }

    #[test]
    #[should_panic(expected = "the patch's operations")]
    fn a_patch_adding_another_container_fails() {
        let mut ops = readme_ops();
        ops[0]["value"]["name"] = json!("busybox");
        assert_review_answer(&patched(ops), UID, Expected::GUIDE_DEPLOYMENT);
    }

    #[test]
    #[should_panic(expected = "unexpected patch")]
    fn a_patched_answer_is_not_an_allowed_one() {
        assert_review_answer(&patched(readme_ops()), UID, Expected::ALLOWED);
    }

    #[test]
    #[should_panic]
    fn another_uid_fails() {
        assert_review_answer(&patched(readme_ops()), "other", Expected::GUIDE_DEPLOYMENT);
    }

    #[test]
    fn a_denial_is_checked_by_code_and_message() {
        let denied = reply(json!({"uid": UID, "allowed": false,
            "status": {"code": 403, "reason": "Forbidden",
                       "message": "Backup Configuration demo/pause-backup is paused"}}));
        assert_review_answer(
            &denied,
            UID,
            Expected::Denied {
                code: 403,
                message: "is paused",
            },
        );
    }

    #[test]
    #[should_panic(expected = "left: Bool(true)")]
    fn an_allowed_answer_is_not_a_denial() {
        let allowed = reply(json!({"uid": UID, "allowed": true}));
        assert_review_answer(
            &allowed,
            UID,
            Expected::Denied {
                code: 403,
                message: "is paused",
            },
        );
    }

    #[test]
    #[should_panic(expected = "the denial says")]
    fn a_denial_for_another_reason_fails() {
        let denied = reply(json!({"uid": UID, "allowed": false,
            "status": {"code": 403, "message": "something else"}}));
        assert_review_answer(
            &denied,
            UID,
            Expected::Denied {
                code: 403,
                message: "is paused",
            },
        );
    }

    #[test]
    #[should_panic(expected = "left: []")]
    fn a_missing_warning_fails() {
        let allowed = reply(json!({"uid": UID, "allowed": true}));
        assert_review_answer(
            &allowed,
            UID,
            Expected::Allowed {
                warnings: &["paused"],
            },
        );
    }
}
