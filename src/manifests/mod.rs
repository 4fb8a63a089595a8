//! `stash manifests`: renders the whole cluster install (everything but the
//! CRDs, which `stash crds` prints) as one multi-document YAML stream.
//!
//! Every object is built as a typed `k8s-openapi` value and serialized, never
//! templated as text, so a flag can only ever change a field's value and the
//! output is always well-formed. `manifests/install.yaml` is this command's
//! output for its defaults; a test keeps the two equal.
//!
//! The module is split by concern: [`names`] holds every name two objects (or
//! another module) must agree on, [`server`] the webhook server's own objects,
//! [`rbac`] the ClusterRoles and their bindings, [`webhooks`] the two
//! admission configurations, [`policy`] the ValidatingAdmissionPolicies that
//! fence the server's own writes, and [`stream`] the YAML writer.

pub mod monitoring;
pub mod policy;
pub mod rbac;
pub mod server;
pub mod stream;
pub mod webhooks;

pub use stash_core::names;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use stream::Object;

/// Command-line arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Namespace the webhook server is installed in (also excluded from the webhooks).
    #[arg(long, default_value = names::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Image of the webhook server, the injected sidecar and the backup CronJobs.
    #[arg(long, default_value = crate::settings::DEFAULT_IMAGE)]
    pub image: String,
    /// PEM file with the CA certificate(s) that signed the webhook's serving
    /// certificate; copied into every webhook's caBundle. Left out, with a
    /// comment, when the file does not exist.
    #[arg(long, default_value = names::DEFAULT_CA_BUNDLE_FILE)]
    pub ca_bundle_file: PathBuf,
    /// Replicas of the webhook server Deployment.
    #[arg(long, default_value_t = names::DEFAULT_REPLICAS, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub replicas: i32,
    /// Limit stash to these namespaces (comma-separated): the webhooks match
    /// only them and the server's writes to workloads, CronJobs,
    /// ServiceAccounts and RoleBindings are bound there only. Default: every
    /// namespace but kube-system and the install namespace.
    #[arg(long, value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Append the monitoring objects: a PrometheusRule with the backup
    /// alerts, a ServiceMonitor and the Grafana dashboard's ConfigMap (they
    /// need the Prometheus Operator's CRDs; docs/operate.md, "Monitoring").
    #[arg(long)]
    pub monitoring: bool,
    /// Print only the alerting rules, as a plain Prometheus rules file (for
    /// a Prometheus without the Operator; `promtool check rules` reads it).
    #[arg(long, conflicts_with = "monitoring")]
    pub prometheus_rules: bool,
    /// With --monitoring or --prometheus-rules: StashBackupPausedTooLong fires for a pause older
    /// than this (Go duration).
    #[arg(long, default_value = "168h", value_parser = crate::duration::parse_flag)]
    pub paused_alert_after: std::time::Duration,
    /// With --monitoring or --prometheus-rules: where the alerts' runbook_url points (docs/operate.md
    /// as your operators read it); `#<alert>` is appended.
    #[arg(long, default_value = crate::monitoring::rules::DEFAULT_RUNBOOK_BASE)]
    pub runbook_base_url: String,
}

/// Runs the subcommand: renders the install to standard output.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let rendered = render_args(&args)?;
    let mut out = std::io::stdout().lock();
    match out
        .write_all(rendered.as_bytes())
        .and_then(|()| out.flush())
    {
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write the install to standard output"))
        }
        _ => Ok(()),
    }
}

/// Reads the CA bundle named by `args` (if present) and renders the install
/// (or, with `--prometheus-rules`, only the rules file).
pub fn render_args(args: &Args) -> Result<String, Error> {
    let rules = crate::monitoring::rules::RuleOptions {
        paused_alert_after: args.paused_alert_after,
        runbook_base: args.runbook_base_url.clone(),
    };
    if args.prometheus_rules {
        return Ok(crate::monitoring::rules::rules_file(&rules)?);
    }
    let ca = CaBundle::read(&args.ca_bundle_file)?;
    let options = Options {
        namespace: args.namespace.clone(),
        image: args.image.clone(),
        replicas: args.replicas,
        ca,
        namespaces: args.namespaces.clone(),
    };
    let mut out = render(&options)?;
    if args.monitoring {
        out.push_str(&format!(
            "# --monitoring --paused-alert-after {}s --runbook-base-url {}: needs the Prometheus Operator's CRDs.\n",
            args.paused_alert_after.as_secs(),
            args.runbook_base_url
        ));
        out.push_str(&stream::to_yaml(&monitoring::objects(&options, &rules))?);
    }
    Ok(out)
}

/// Everything the rendered install depends on.
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: String,
    pub image: String,
    pub replicas: i32,
    pub ca: CaBundle,
    /// `--namespaces`: empty for every namespace.
    pub namespaces: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: names::DEFAULT_NAMESPACE.to_string(),
            image: crate::settings::DEFAULT_IMAGE.to_string(),
            replicas: names::DEFAULT_REPLICAS,
            ca: CaBundle::Missing(PathBuf::from(names::DEFAULT_CA_BUNDLE_FILE)),
            namespaces: Vec::new(),
        }
    }
}

/// The webhooks' caBundle, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum CaBundle {
    /// PEM bytes read from this file, holding this many certificates.
    Pem {
        path: PathBuf,
        pem: Vec<u8>,
        certificates: usize,
    },
    /// The file does not exist: the webhooks get no caBundle.
    Missing(PathBuf),
}

impl CaBundle {
    /// Reads and checks a PEM CA bundle. A file that does not exist is not an
    /// error (the install is rendered without a caBundle); one that exists but
    /// cannot be read, or holds anything but certificates, is.
    pub fn read(path: &Path) -> Result<Self, Error> {
        match std::fs::read(path) {
            Ok(pem) => {
                let certificates =
                    check_pem_certificates(&pem).map_err(|reason| Error::CaBundle {
                        path: path.to_path_buf(),
                        reason,
                    })?;
                Ok(CaBundle::Pem {
                    path: path.to_path_buf(),
                    pem,
                    certificates,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(CaBundle::Missing(path.to_path_buf()))
            }
            Err(e) => Err(Error::CaBundle {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }

    /// The bytes for `clientConfig.caBundle`, if any.
    pub fn bytes(&self) -> Option<ByteString> {
        match self {
            CaBundle::Pem { pem, .. } => Some(ByteString(pem.clone())),
            CaBundle::Missing(_) => None,
        }
    }
}

/// Counts the certificates in a PEM bundle; fails on anything that is not a
/// parseable X.509 certificate (a private key pasted by mistake, say).
fn check_pem_certificates(pem: &[u8]) -> Result<usize, String> {
    let mut reader = pem;
    let mut count = 0;
    for item in rustls_pemfile::read_all(&mut reader) {
        match item {
            Ok(rustls_pemfile::Item::X509Certificate(der)) => {
                x509_parser::parse_x509_certificate(der.as_ref())
                    .map_err(|e| format!("certificate {} is not valid X.509: {e}", count + 1))?;
                count += 1;
            }
            Ok(_) => return Err("holds a PEM block that is not a CERTIFICATE (a key?)".to_string()),
            Err(e) => return Err(format!("is not valid PEM: {e}")),
        }
    }
    if count == 0 {
        return Err("holds no PEM CERTIFICATE block".to_string());
    }
    Ok(count)
}

/// Why the install could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "--namespace {0:?} is not a valid namespace name (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit)"
    )]
    Namespace(String),
    #[error("--image {0:?} is not an image reference (empty or contains whitespace)")]
    Image(String),
    #[error(
        "--namespaces {0:?}: each must be a namespace name, listed once, and neither kube-system nor the install namespace"
    )]
    Namespaces(String),
    #[error("--replicas {0} is out of range (1 to 100)")]
    Replicas(i32),
    #[error("--ca-bundle-file {}: {reason}", path.display())]
    CaBundle { path: PathBuf, reason: String },
    #[error("cannot serialize the install: {0}")]
    Serialize(#[from] serde_yaml::Error),
}

impl Options {
    /// Checks the values a flag can carry before anything is built from them.
    pub fn check(&self) -> Result<(), Error> {
        if !is_dns1123_label(&self.namespace) {
            return Err(Error::Namespace(self.namespace.clone()));
        }
        if self.image.is_empty() || self.image.chars().any(char::is_whitespace) {
            return Err(Error::Image(self.image.clone()));
        }
        if !(1..=100).contains(&self.replicas) {
            return Err(Error::Replicas(self.replicas));
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            if !is_dns1123_label(ns)
                || ns == "kube-system"
                || *ns == self.namespace
                || self.namespaces[..i].contains(ns)
            {
                return Err(Error::Namespaces(self.namespaces.join(",")));
            }
        }
        Ok(())
    }
}

/// A namespace name: an RFC 1123 label.
fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Every object of the install, in the order `kubectl apply` should create
/// them: the namespace, identities and permissions first, the webhook server
/// next, the admission configurations last (so the API server starts calling
/// the webhooks only once their Service exists).
pub fn objects(options: &Options) -> Result<Vec<Object>, Error> {
    options.check()?;
    let mut objects = vec![
        Object::Namespace(server::namespace(options)),
        Object::ServiceAccount(server::service_account(options)),
    ];
    objects.extend(rbac::objects(options));
    objects.extend([
        Object::Deployment(server::deployment(options)),
        Object::PodDisruptionBudget(server::pod_disruption_budget(options)),
        Object::Service(server::service(options)),
        Object::MutatingWebhookConfiguration(webhooks::mutating(options)),
        Object::ValidatingWebhookConfiguration(webhooks::validating(options)),
    ]);
    objects.extend(policy::objects(options));
    Ok(objects)
}

/// The install as a YAML stream, with a comment header saying how it was
/// rendered and whether the webhooks carry a caBundle.
pub fn render(options: &Options) -> Result<String, Error> {
    let objects = objects(options)?;
    let mut out = header(options);
    out.push_str(&stream::to_yaml(&objects)?);
    Ok(out)
}

/// The comment block at the top of the stream.
fn header(options: &Options) -> String {
    let ca_path = match &options.ca {
        CaBundle::Pem { path, .. } | CaBundle::Missing(path) => path.display().to_string(),
    };
    let mut lines = vec![
        "# stash: the webhook server, its RBAC and its admission webhooks.".to_string(),
        format!(
            "# Rendered by: stash manifests --namespace {} --image {} --replicas {} --ca-bundle-file {}{}",
            options.namespace,
            options.image,
            options.replicas,
            ca_path,
            if options.namespaces.is_empty() {
                String::new()
            } else {
                format!(" --namespaces {}", options.namespaces.join(","))
            }
        ),
        "# Apply the CRDs first: kubectl apply -f manifests/crds/".to_string(),
        format!(
            "# The Deployment mounts Secret {}/{} (tls.crt, tls.key); create it before applying.",
            options.namespace,
            names::TLS_SECRET
        ),
    ];
    match &options.ca {
        CaBundle::Pem { certificates, .. } => lines.push(format!(
            "# caBundle: {certificates} CA certificate(s) from {ca_path}."
        )),
        CaBundle::Missing(_) => {
            lines.push(format!(
                "# caBundle: NOT SET, {ca_path} does not exist. The API server cannot verify the webhook's"
            ));
            lines.push(
                "# certificate without it (x509: certificate signed by unknown authority). Run"
                    .to_string(),
            );
            lines.push(format!(
                "#   stash certs --service {} --namespace {} --out certs/",
                names::SERVICE,
                options.namespace
            ));
            lines.push(
                "# and render again with --ca-bundle-file certs/ca.crt (see docs/walkthrough.md)."
                    .to_string(),
            );
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// The labels that select the webhook server's pods.
pub(crate) fn selector_labels() -> BTreeMap<String, String> {
    [names::LABEL_NAME, names::LABEL_COMPONENT_WEBHOOK]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Metadata of an install object that is not part of the server itself
/// (namespace, roles, webhook configurations): labelled as stash's.
pub(crate) fn metadata(name: &str, namespace: Option<&str>) -> ObjectMeta {
    let (key, value) = names::LABEL_NAME;
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
        ..ObjectMeta::default()
    }
}

/// Metadata of the server's own objects (ServiceAccount, Deployment, PDB,
/// Service, pods): labelled with the pod selector's labels.
pub(crate) fn server_metadata(name: Option<&str>, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: name.map(str::to_string),
        namespace: namespace.map(str::to_string),
        labels: Some(selector_labels()),
        ..ObjectMeta::default()
    }
}

/// `s` as an owned string list (for verbs, resources, API groups).
pub(crate) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_follow_rfc_1123() {
        for good in ["stash-system", "a", "x1", &"a".repeat(63)] {
            assert!(is_dns1123_label(good), "{good}");
        }
        for bad in ["", "-a", "a-", "Stash", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn bad_flags_are_refused_with_the_flag_named() {
        let bad = [
            Options {
                namespace: "Stash System".into(),
                ..Options::default()
            },
            Options {
                image: "".into(),
                ..Options::default()
            },
            Options {
                image: "stash:1 --privileged".into(),
                ..Options::default()
            },
            Options {
                replicas: 0,
                ..Options::default()
            },
            Options {
                namespaces: vec!["kube-system".into()],
                ..Options::default()
            },
            Options {
                namespaces: vec!["stash-system".into()],
                ..Options::default()
            },
            Options {
                namespaces: vec!["a".into(), "a".into()],
                ..Options::default()
            },
            Options {
                namespaces: vec!["".into()],
                ..Options::default()
            },
        ];
        for options in bad {
            let err = render(&options).expect_err("must be refused").to_string();
            assert!(err.starts_with("--"), "{err}");
        }
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        assert!(check_pem_certificates(b"").is_err());
        assert!(check_pem_certificates(b"not pem at all").is_err());
        let key = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBnSfSBDdxh1Eo7QSbg9pGxd6SQyzlyh0Vy6zV/dX0RC\n-----END PRIVATE KEY-----\n";
        let err = check_pem_certificates(key).expect_err("a key is not a CA");
        assert!(err.contains("not a CERTIFICATE"), "{err}");
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = check_pem_certificates(garbage).expect_err("not X.509");
        assert!(err.contains("not valid X.509"), "{err}");
    }
}
