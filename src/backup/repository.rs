//! From a Repository's backend and the mounted storage Secret to what restic
//! needs: `RESTIC_REPOSITORY`, credentials in the environment, and global
//! flags (`--cacert`, `--option <backend>.connections=N`, cache).
//!
//! The Secret is mounted as one file per key (`--secret-dir`). Values are
//! read into restic's environment only; they are never logged. The password
//! is not even read: restic gets `RESTIC_PASSWORD_FILE` pointing at the file.
//! Files that restic needs as files (the GCS service-account key, the CA
//! certificate) are copied into a private (0700) directory under the scratch
//! directory.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::api::Backend;

use super::restic::{Restic, ResticEnv};

/// Secret keys, as files in the secret directory.
pub mod keys {
    pub const RESTIC_PASSWORD: &str = "RESTIC_PASSWORD";
    pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
    pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
    pub const GOOGLE_PROJECT_ID: &str = "GOOGLE_PROJECT_ID";
    pub const GOOGLE_SERVICE_ACCOUNT_JSON_KEY: &str = "GOOGLE_SERVICE_ACCOUNT_JSON_KEY";
    pub const AZURE_ACCOUNT_NAME: &str = "AZURE_ACCOUNT_NAME";
    pub const AZURE_ACCOUNT_KEY: &str = "AZURE_ACCOUNT_KEY";
    pub const B2_ACCOUNT_ID: &str = "B2_ACCOUNT_ID";
    pub const B2_ACCOUNT_KEY: &str = "B2_ACCOUNT_KEY";
    pub const REST_SERVER_USERNAME: &str = "REST_SERVER_USERNAME";
    pub const REST_SERVER_PASSWORD: &str = "REST_SERVER_PASSWORD";
    pub const CA_CERT_DATA: &str = "CA_CERT_DATA";
    /// OpenStack Swift credentials restic reads (all optional, passed when present).
    pub const SWIFT: [&str; 17] = [
        "OS_AUTH_URL",
        "OS_USERNAME",
        "OS_PASSWORD",
        "OS_REGION_NAME",
        "OS_PROJECT_NAME",
        "OS_PROJECT_DOMAIN_NAME",
        "OS_USER_DOMAIN_NAME",
        "OS_TENANT_ID",
        "OS_TENANT_NAME",
        "OS_STORAGE_URL",
        "OS_AUTH_TOKEN",
        "OS_USER_ID",
        "OS_APPLICATION_CREDENTIAL_ID",
        "OS_APPLICATION_CREDENTIAL_NAME",
        "OS_APPLICATION_CREDENTIAL_SECRET",
        "ST_AUTH",
        "ST_USER",
    ];
    /// The last Swift v1 key (kept apart to keep the array readable).
    pub const ST_KEY: &str = "ST_KEY";
}

/// Why the repository cannot be set up.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SetupError {
    #[error("the Repository has no backend (set one of local, s3, gcs, azure, swift, b2, rest)")]
    NoBackend,
    #[error("the Repository sets more than one backend: {0}")]
    ManyBackends(String),
    #[error("the Repository's {backend} backend has an empty {field}")]
    EmptyField {
        backend: &'static str,
        field: &'static str,
    },
    #[error(
        "secret file {name} is missing in {dir} (add the key {name} to the Repository's storage Secret)"
    )]
    MissingSecret { name: String, dir: String },
    #[error("cannot read secret file {path}: {reason}")]
    ReadSecret { path: String, reason: String },
    #[error("cannot prepare the scratch directory {path}: {reason}")]
    Scratch { path: String, reason: String },
}

/// `RESTIC_REPOSITORY` for a backend, the way Stash spells it.
pub fn restic_repository(backend: &Backend) -> Result<String, SetupError> {
    let set = backend.configured();
    match set.len() {
        0 => return Err(SetupError::NoBackend),
        1 => {}
        _ => return Err(SetupError::ManyBackends(set.join(", "))),
    }
    fn prefix(p: &Option<String>) -> String {
        p.as_deref().unwrap_or("").trim_matches('/').to_string()
    }
    fn non_empty(v: &str, backend: &'static str, field: &'static str) -> Result<(), SetupError> {
        if v.trim().is_empty() {
            Err(SetupError::EmptyField { backend, field })
        } else {
            Ok(())
        }
    }
    if let Some(local) = &backend.local {
        non_empty(&local.mount_path, "local", "mountPath")?;
        return Ok(local.mount_path.clone());
    }
    if let Some(s3) = &backend.s3 {
        non_empty(&s3.bucket, "s3", "bucket")?;
        let endpoint = s3
            .endpoint
            .as_deref()
            .map(|e| e.trim_end_matches('/'))
            .filter(|e| !e.is_empty())
            .unwrap_or("s3.amazonaws.com");
        let p = prefix(&s3.prefix);
        let mut repo = format!("s3:{endpoint}/{}", s3.bucket);
        if !p.is_empty() {
            repo.push('/');
            repo.push_str(&p);
        }
        return Ok(repo);
    }
    if let Some(gcs) = &backend.gcs {
        non_empty(&gcs.bucket, "gcs", "bucket")?;
        return Ok(format!("gs:{}:/{}", gcs.bucket, prefix(&gcs.prefix)));
    }
    if let Some(az) = &backend.azure {
        non_empty(&az.container, "azure", "container")?;
        return Ok(format!("azure:{}:/{}", az.container, prefix(&az.prefix)));
    }
    if let Some(sw) = &backend.swift {
        non_empty(&sw.container, "swift", "container")?;
        return Ok(format!("swift:{}:/{}", sw.container, prefix(&sw.prefix)));
    }
    if let Some(b2) = &backend.b2 {
        non_empty(&b2.bucket, "b2", "bucket")?;
        return Ok(format!("b2:{}:/{}", b2.bucket, prefix(&b2.prefix)));
    }
    if let Some(rest) = &backend.rest {
        non_empty(&rest.url, "rest", "url")?;
        return Ok(format!("rest:{}", rest.url));
    }
    Err(SetupError::NoBackend)
}

/// Which secret keys a backend needs (required) and may use (optional), and
/// the `--option` flags its settings give.
fn backend_keys(backend: &Backend) -> (Vec<&'static str>, Vec<&'static str>, Vec<String>) {
    use keys::*;
    let mut options = Vec::new();
    if let Some(s3) = &backend.s3 {
        if let Some(region) = s3.region.as_deref().filter(|r| !r.is_empty()) {
            options.push(format!("s3.region={region}"));
        }
        // Both optional: without keys, restic uses the pod's IAM identity.
        return (
            vec![],
            vec![AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY],
            options,
        );
    }
    if let Some(gcs) = &backend.gcs {
        if let Some(n) = gcs.max_connections.filter(|n| *n > 0) {
            options.push(format!("gs.connections={n}"));
        }
        return (
            vec![GOOGLE_PROJECT_ID, GOOGLE_SERVICE_ACCOUNT_JSON_KEY],
            vec![],
            options,
        );
    }
    if let Some(az) = &backend.azure {
        if let Some(n) = az.max_connections.filter(|n| *n > 0) {
            options.push(format!("azure.connections={n}"));
        }
        return (vec![AZURE_ACCOUNT_NAME, AZURE_ACCOUNT_KEY], vec![], options);
    }
    if let Some(b2) = &backend.b2 {
        if let Some(n) = b2.max_connections.filter(|n| *n > 0) {
            options.push(format!("b2.connections={n}"));
        }
        return (vec![B2_ACCOUNT_ID, B2_ACCOUNT_KEY], vec![], options);
    }
    if backend.swift.is_some() {
        let mut optional: Vec<&'static str> = SWIFT.to_vec();
        optional.push(ST_KEY);
        return (vec![], optional, options);
    }
    if backend.rest.is_some() {
        return (
            vec![],
            vec![REST_SERVER_USERNAME, REST_SERVER_PASSWORD],
            options,
        );
    }
    (vec![], vec![], options)
}

/// Where restic runs and how.
#[derive(Debug, Clone)]
pub struct ResticSettings {
    /// The restic executable (absolute path).
    pub binary: PathBuf,
    /// Writable directory for restic's cache, `HOME`, `TMPDIR` and credential files.
    pub scratch_dir: PathBuf,
    /// Whether restic keeps its cache (`--enable-cache`).
    pub enable_cache: bool,
    /// The process's stop signal, on which restic is interrupted.
    pub stop: crate::runtime::stop::Stop,
    /// How long a command waits for a repository lock held by a live host
    /// (`--lock-wait`); see [`super::locks`].
    pub lock_wait: std::time::Duration,
}

impl ResticSettings {
    /// Settings with no stop signal but [`crate::runtime::stop::Stop::trigger`] and the
    /// default lock wait ([`super::locks::DEFAULT_LOCK_WAIT`]).
    pub fn new(binary: PathBuf, scratch_dir: PathBuf, enable_cache: bool) -> Self {
        Self {
            binary,
            scratch_dir,
            enable_cache,
            stop: crate::runtime::stop::Stop::new(),
            lock_wait: super::locks::DEFAULT_LOCK_WAIT,
        }
    }
}

fn read_secret(dir: &Path, name: &str) -> Result<Option<String>, SetupError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| SetupError::ReadSecret {
                path: path.display().to_string(),
                reason: "not UTF-8 text".to_string(),
            })?;
            // `kubectl create secret --from-file` keeps a trailing newline if the file had one.
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SetupError::ReadSecret {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

fn require(dir: &Path, name: &str) -> Result<String, SetupError> {
    read_secret(dir, name)?.ok_or_else(|| SetupError::MissingSecret {
        name: name.to_string(),
        dir: dir.display().to_string(),
    })
}

fn private_dir(path: &Path) -> Result<(), SetupError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |e: std::io::Error| SetupError::Scratch {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(err)
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), SetupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| SetupError::Scratch {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(data).map_err(err)
}

/// Builds the restic invocation for a backend from the secret directory.
pub fn prepare(
    backend: &Backend,
    secret_dir: &Path,
    settings: &ResticSettings,
) -> Result<Restic, SetupError> {
    use keys::*;
    let repository = restic_repository(backend)?;
    let password_file = secret_dir.join(RESTIC_PASSWORD);
    if !password_file.is_file() {
        return Err(SetupError::MissingSecret {
            name: RESTIC_PASSWORD.to_string(),
            dir: secret_dir.display().to_string(),
        });
    }
    // One private dir per uid: the sidecar and stash-init share the pod's
    // `tmp-dir` and may run as different users (workload::privilege), and a
    // 0700 dir the other one made first would be closed to this one.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let private = settings.scratch_dir.join(format!("stash-restic-{euid}"));
    private_dir(&private)?;

    let mut env = ResticEnv::default();
    env.set("RESTIC_REPOSITORY", repository);
    env.set("RESTIC_PASSWORD_FILE", password_file.into_os_string());
    env.set("HOME", private.clone().into_os_string());
    env.set("TMPDIR", settings.scratch_dir.clone().into_os_string());

    let (required, optional, options) = backend_keys(backend);
    for name in required {
        if name == GOOGLE_SERVICE_ACCOUNT_JSON_KEY {
            let key = require(secret_dir, name)?;
            let file = private.join("gcs-service-account.json");
            write_private(&file, key.as_bytes())?;
            env.set("GOOGLE_APPLICATION_CREDENTIALS", file.into_os_string());
        } else {
            env.set(name, require(secret_dir, name)?);
        }
    }
    for name in optional {
        if let Some(v) = read_secret(secret_dir, name)? {
            env.set(name, v);
        }
    }

    let mut global_args: Vec<OsString> = Vec::new();
    if let Some(ca) = read_secret(secret_dir, CA_CERT_DATA)? {
        let file = private.join("ca.crt");
        write_private(&file, ca.as_bytes())?;
        global_args.push("--cacert".into());
        global_args.push(file.into_os_string());
    }
    for o in options {
        global_args.push("--option".into());
        global_args.push(o.into());
    }
    if settings.enable_cache {
        global_args.push("--cache-dir".into());
        global_args.push(settings.scratch_dir.join("restic-cache").into_os_string());
    } else {
        global_args.push("--no-cache".into());
    }
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"] {
        if let Some(v) = std::env::var_os(var) {
            env.set(var, v);
        }
    }
    Ok(Restic {
        binary: settings.binary.clone(),
        env,
        global_args,
        stop: settings.stop.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{GcsSpec, LocalSpec, RestSpec, S3Spec};

    fn settings(dir: &Path) -> ResticSettings {
        ResticSettings::new(PathBuf::from("/usr/bin/restic"), dir.join("scratch"), false)
    }

    #[test]
    fn repository_urls_follow_stash() {
        let gcs = Backend {
            gcs: Some(GcsSpec {
                bucket: "appscode-qa".into(),
                prefix: Some("/sample/data".into()),
                max_connections: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            restic_repository(&gcs).unwrap(),
            "gs:appscode-qa:/sample/data"
        );
        let s3 = Backend {
            s3: Some(S3Spec {
                endpoint: Some("http://minio:9000".into()),
                bucket: "b".into(),
                prefix: Some("/p/".into()),
                region: None,
            }),
            ..Default::default()
        };
        assert_eq!(restic_repository(&s3).unwrap(), "s3:http://minio:9000/b/p");
        let aws = Backend {
            s3: Some(S3Spec {
                bucket: "b".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(restic_repository(&aws).unwrap(), "s3:s3.amazonaws.com/b");
        let rest = Backend {
            rest: Some(RestSpec {
                url: "http://r:8000/x".into(),
            }),
            ..Default::default()
        };
        assert_eq!(restic_repository(&rest).unwrap(), "rest:http://r:8000/x");
        let local = Backend {
            local: Some(LocalSpec {
                mount_path: "/safe/data".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(restic_repository(&local).unwrap(), "/safe/data");
        assert_eq!(
            restic_repository(&Backend::default()),
            Err(SetupError::NoBackend)
        );
        let two = Backend {
            local: local.local.clone(),
            rest: rest.rest.clone(),
            ..Default::default()
        };
        assert_eq!(
            restic_repository(&two),
            Err(SetupError::ManyBackends("local, rest".into()))
        );
    }

    #[test]
    fn a_missing_secret_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let gcs = Backend {
            gcs: Some(GcsSpec {
                bucket: "b".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = prepare(&gcs, dir.path(), &settings(dir.path())).unwrap_err();
        assert!(
            err.to_string()
                .contains("secret file RESTIC_PASSWORD is missing")
        );
        std::fs::write(dir.path().join("RESTIC_PASSWORD"), "changeit").unwrap();
        std::fs::write(dir.path().join("GOOGLE_PROJECT_ID"), "p").unwrap();
        let err = prepare(&gcs, dir.path(), &settings(dir.path())).unwrap_err();
        assert_eq!(
            err,
            SetupError::MissingSecret {
                name: "GOOGLE_SERVICE_ACCOUNT_JSON_KEY".into(),
                dir: dir.path().display().to_string()
            }
        );
    }

    #[test]
    fn gcs_key_goes_to_a_private_file_and_values_into_the_env_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("RESTIC_PASSWORD"), "changeit").unwrap();
        std::fs::write(dir.path().join("GOOGLE_PROJECT_ID"), "proj\n").unwrap();
        std::fs::write(
            dir.path().join("GOOGLE_SERVICE_ACCOUNT_JSON_KEY"),
            "{\"k\":1}",
        )
        .unwrap();
        std::fs::write(dir.path().join("CA_CERT_DATA"), "PEM").unwrap();
        let gcs = Backend {
            gcs: Some(GcsSpec {
                bucket: "b".into(),
                prefix: None,
                max_connections: Some(3),
            }),
            ..Default::default()
        };
        let r = prepare(&gcs, dir.path(), &settings(dir.path())).unwrap();
        assert_eq!(r.env.get("GOOGLE_PROJECT_ID").unwrap(), "proj");
        assert!(
            r.env.get("RESTIC_PASSWORD").is_none(),
            "password stays in its file"
        );
        let key = PathBuf::from(r.env.get("GOOGLE_APPLICATION_CREDENTIALS").unwrap());
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "{\"k\":1}");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let args: Vec<String> = r
            .global_args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[0], "--cacert");
        assert!(args.contains(&"gs.connections=3".to_string()));
        assert!(args.contains(&"--no-cache".to_string()));
        assert!(!format!("{r:?}").contains("proj\""), "Debug hides values");
    }
}
