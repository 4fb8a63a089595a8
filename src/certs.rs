//! `stash certs`: a CA and a serving certificate for the webhook Service.
//!
//! The API server only calls a webhook over TLS it can verify, so an install
//! needs a CA (whose PEM goes into the webhook configurations' `caBundle`) and a
//! serving certificate for the Service's DNS names. The same code mints the
//! development pair `stash serve` creates on first start, and the CAs, chains
//! and client certificates the socket tests use, so there is one place that
//! knows how our certificates look.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// File names written into the output directory.
pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid name {0:?} for a certificate")]
    Name(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How long certificates stay valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Days the CA is valid.
    pub ca_days: i64,
    /// Days a leaf (serving or client) certificate is valid.
    pub leaf_days: i64,
}

impl Default for Validity {
    fn default() -> Self {
        Self {
            ca_days: 3650,
            leaf_days: 365,
        }
    }
}

/// A certificate authority that can issue serving and client certificates,
/// and intermediate authorities (to build chains).
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    /// PEMs of this authority and its parents up to (not including) the root;
    /// empty for a root.
    chain: Vec<String>,
    validity: Validity,
}

/// A leaf certificate with its key.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The leaf certificate followed by any intermediates (what a server sends).
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

/// What `stash certs` writes.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Bundle {
    /// The base64 of the CA PEM: the webhook configurations' `caBundle`.
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes())
    }
}

/// The UTC calendar date `days` from today, as (year, month, day).
fn date_in_days(days: i64) -> Result<(i32, u8, u8), CertError> {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let date = today
        .checked_add(jiff::Span::new().days(days))
        .map_err(|e| CertError::Name(format!("validity of {days} days: {e}")))?;
    let month = u8::try_from(date.month()).unwrap_or(1);
    let day = u8::try_from(date.day()).unwrap_or(1);
    Ok((i32::from(date.year()), month, day))
}

fn validity(params: &mut CertificateParams, days: i64) -> Result<(), CertError> {
    // A day of slack for clocks that run behind.
    window(params, -1, days)
}

/// Valid from `from` days to `until` days from today (negative: in the past).
fn window(params: &mut CertificateParams, from: i64, until: i64) -> Result<(), CertError> {
    let (y, m, d) = date_in_days(from)?;
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = date_in_days(until)?;
    params.not_after = rcgen::date_time_ymd(y, m, d);
    Ok(())
}

fn ca_params(common_name: &str, days: i64) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "stash");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days)?;
    Ok(params)
}

impl Authority {
    /// A new self-signed root CA.
    pub fn new(common_name: &str) -> Result<Self, CertError> {
        Self::with_validity(common_name, Validity::default())
    }

    /// A new self-signed root CA with the given validity.
    pub fn with_validity(common_name: &str, validity: Validity) -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let params = ca_params(common_name, validity.ca_days)?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            chain: Vec::new(),
            validity,
        })
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, common_name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let params = ca_params(common_name, self.validity.ca_days)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let pem = cert.pem();
        let mut chain = vec![pem.clone()];
        chain.extend(self.chain.iter().cloned());
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem: pem,
            chain,
            validity: self.validity,
        })
    }

    /// This authority's certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A serving certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[String]) -> Result<Leaf, CertError> {
        self.server_between(names, -1, self.validity.leaf_days)
    }

    /// A serving certificate valid from `from` to `until` days from today
    /// (negative: in the past), e.g. an expired one for tests.
    pub fn server_between(
        &self,
        names: &[String],
        from: i64,
        until: i64,
    ) -> Result<Leaf, CertError> {
        let common_name = names.first().cloned().unwrap_or_else(|| "stash".into());
        let mut sans = Vec::with_capacity(names.len());
        for name in names {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    name.clone()
                        .try_into()
                        .map_err(|_| CertError::Name(name.clone()))?,
                ),
            };
            sans.push(san);
        }
        self.leaf(
            &common_name,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            (from, until),
        )
    }

    /// A client certificate with `common_name` (for mutual TLS).
    pub fn client(&self, common_name: &str) -> Result<Leaf, CertError> {
        self.leaf(
            common_name,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            (-1, self.validity.leaf_days),
        )
    }

    fn leaf(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        (from, until): (i64, i64),
    ) -> Result<Leaf, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        window(&mut params, from, until)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut cert_pem = cert.pem();
        for pem in &self.chain {
            cert_pem.push_str(pem);
        }
        Ok(Leaf {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }
}

/// The DNS names of a Service inside the cluster.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// The names of the development certificate: this machine's loopback.
pub fn dev_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

/// A new CA and a serving certificate for `names`.
pub fn generate(names: &[String], validity: Validity) -> Result<Bundle, CertError> {
    let ca = Authority::with_validity("stash webhook CA", validity)?;
    let leaf = ca.server(names)?;
    Ok(Bundle {
        ca_pem: ca.cert_pem().to_string(),
        cert_pem: leaf.cert_pem,
        key_pem: leaf.key_pem,
    })
}

/// Writes `contents` to `path` through a temporary file and a rename, so a
/// reader (the server's reload watcher) never sees half a file. `private`
/// files get mode 0600.
pub fn write_atomic(path: &Path, contents: &[u8], private: bool) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(err)
}

/// Writes a bundle: the CA to `ca`, the certificate to `cert`, the key (mode
/// 0600) to `key`.
pub fn write_bundle(bundle: &Bundle, ca: &Path, cert: &Path, key: &Path) -> Result<(), CertError> {
    write_atomic(ca, bundle.ca_pem.as_bytes(), false)?;
    // Key first: a watcher that sees the new certificate finds its key.
    write_atomic(key, bundle.key_pem.as_bytes(), true)?;
    write_atomic(cert, bundle.cert_pem.as_bytes(), false)
}

/// Command-line arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the webhook's Service.
    #[arg(long, default_value = "stash-webhook")]
    pub service: String,
    /// Namespace of the webhook's Service.
    #[arg(long, default_value = "stash-system")]
    pub namespace: String,
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Days the serving certificate stays valid (the CA: ten times as long).
    #[arg(long, default_value_t = 365)]
    pub days: i64,
}

/// Runs the subcommand: writes the files and prints the caBundle.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.service.is_empty() || args.namespace.is_empty() {
        anyhow::bail!("--service and --namespace must not be empty");
    }
    if args.days < 1 {
        anyhow::bail!("--days must be at least 1");
    }
    let names = service_names(&args.service, &args.namespace);
    let bundle = generate(
        &names,
        Validity {
            ca_days: args.days.saturating_mul(10),
            leaf_days: args.days,
        },
    )?;
    write_bundle(
        &bundle,
        &args.out.join(CA_FILE),
        &args.out.join(CERT_FILE),
        &args.out.join(KEY_FILE),
    )?;
    eprintln!(
        "wrote {}, {} and {} for {}",
        args.out.join(CA_FILE).display(),
        args.out.join(CERT_FILE).display(),
        args.out.join(KEY_FILE).display(),
        names.join(", ")
    );
    eprintln!("caBundle for the webhook configurations:");
    println!("{}", bundle.ca_bundle());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{GeneralName, parse_x509_certificate};

    fn sans(pem: &str) -> Vec<String> {
        let der = rustls_pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes())
            .map(|c: Result<rustls_pki_types::CertificateDer<'static>, _>| c.unwrap())
            .next()
            .unwrap();
        let (_, cert) = parse_x509_certificate(&der).unwrap();
        let ext = cert.subject_alternative_name().unwrap().unwrap();
        ext.value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(ip) => format!("{ip:?}"),
                other => format!("{other}"),
            })
            .collect()
    }

    #[test]
    fn service_certificate_names_every_in_cluster_spelling() {
        let b = generate(
            &service_names("stash-webhook", "stash-system"),
            Validity::default(),
        )
        .unwrap();
        assert_eq!(
            sans(&b.cert_pem),
            [
                "stash-webhook",
                "stash-webhook.stash-system",
                "stash-webhook.stash-system.svc",
                "stash-webhook.stash-system.svc.cluster.local"
            ]
        );
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b.ca_bundle())
            .unwrap();
        assert_eq!(decoded, b.ca_pem.as_bytes());
    }

    #[test]
    fn dev_certificate_covers_loopback_addresses() {
        let b = generate(&dev_names(), Validity::default()).unwrap();
        let names = sans(&b.cert_pem);
        assert_eq!(names[0], "localhost");
        assert_eq!(names.len(), 3);
    }

    #[test]
    fn intermediate_leaf_carries_the_chain() {
        let root = Authority::new("root").unwrap();
        let mid = root.intermediate("mid").unwrap();
        let leaf = mid.server(&["localhost".into()]).unwrap();
        assert_eq!(leaf.cert_pem.matches("BEGIN CERTIFICATE").count(), 2);
    }

    #[test]
    fn key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let b = generate(&dev_names(), Validity::default()).unwrap();
        let (ca, cert, key) = (
            dir.path().join("ca.crt"),
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
        );
        write_bundle(&b, &ca, &cert, &key).unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), b.cert_pem);
    }
}
