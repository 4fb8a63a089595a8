//! Kubeconfigs for ServiceAccounts: each local `stash` process of the
//! real-cluster test runs with the identity its pod has in a cluster (the
//! server as the install's `stash-webhook`, the CronJob's container as
//! `stash-backup-<bc>`, the sidecar and `stash-init` as the workload's), so a
//! write the install's RBAC or admission policies deny fails the test instead
//! of passing under the admin's rights.
//!
//! The token comes from the TokenRequest API (`POST
//! …/serviceaccounts/<name>/token`, what the kubelet does for a projected
//! token), with the API server's default audience; the kubeconfig keeps the
//! admin kubeconfig's cluster entry (server URL, CA, TLS server name, proxy)
//! and replaces only the user. It is written with mode 0600: it holds a
//! bearer token.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};

/// Lifetime asked of each token: longer than the whole test (the API server's
/// minimum is 600 s), short enough that a leaked one soon stops working.
pub const TOKEN_SECONDS: i64 = 3600;

/// The user name the API server gives ServiceAccount `ns/name`.
pub fn username(ns: &str, name: &str) -> String {
    format!("system:serviceaccount:{ns}:{name}")
}

/// Asks the TokenRequest API for a token of ServiceAccount `ns/name` (the
/// caller needs `create` on `serviceaccounts/token`; the admin has it).
/// No audience: the API server's own, so the token authenticates to it.
pub async fn request_token(admin: &kube::Client, ns: &str, name: &str) -> anyhow::Result<String> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(TOKEN_SECONDS),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {ns}/{name}"))?;
    let token = answer
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            anyhow!("TokenRequest for ServiceAccount {ns}/{name}: no token in the answer")
        })?;
    Ok(token)
}

/// A kubeconfig whose only context is the admin kubeconfig's current
/// cluster with `user` authenticating by `token`.
pub fn kubeconfig_for(admin: &Kubeconfig, user: &str, token: &str) -> anyhow::Result<Kubeconfig> {
    let cluster = current_cluster(admin)?;
    let context: NamedContext = serde_json::from_value(serde_json::json!({
        "name": user,
        "context": {"cluster": cluster.name, "user": user},
    }))
    .context("a kubeconfig context")?;
    let auth: NamedAuthInfo = serde_json::from_value(serde_json::json!({
        "name": user,
        "user": {"token": token},
    }))
    .context("a kubeconfig user")?;
    Ok(Kubeconfig {
        clusters: vec![cluster],
        auth_infos: vec![auth],
        contexts: vec![context],
        current_context: Some(user.to_string()),
        ..Kubeconfig::default()
    })
}

/// The cluster entry of the kubeconfig's current context.
fn current_cluster(kc: &Kubeconfig) -> anyhow::Result<NamedCluster> {
    let current = kc
        .current_context
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| anyhow!("the kubeconfig has no current-context"))?;
    let context = kc
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| anyhow!("the kubeconfig has no context {current:?}"))?;
    let cluster = context.cluster.as_str();
    kc.clusters
        .iter()
        .find(|c| c.name == cluster)
        .cloned()
        .ok_or_else(|| {
            anyhow!("context {current:?} names cluster {cluster:?}, which the kubeconfig lacks")
        })
}

/// Writes `text` to `path`, readable and writable by its owner only, at
/// once: a temp file (0600 from its creation) renamed over `path`, so a
/// process starting meanwhile reads the old file or the new one, never half
/// of one, and a file there before with wider permissions is replaced.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} names no file", path.display()))?;
    let mut temp_name = name.to_os_string();
    temp_name.push(".tmp");
    let temp = path.with_file_name(temp_name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("open {}", temp.display()))?;
    // The mode of `open` applies only to a file it creates.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", temp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", temp.display()))?;
    std::fs::rename(&temp, path)
        .with_context(|| format!("rename {} to {}", temp.display(), path.display()))?;
    Ok(())
}

/// "Kubeconfig for ServiceAccount `ns/name`": a fresh token for it, in a
/// kubeconfig next to the admin's cluster entry, written (0600) to
/// `dir/kubeconfig-<ns>-<name>`; its path.
pub async fn service_account_kubeconfig(
    admin: &kube::Client,
    admin_kubeconfig: &Path,
    ns: &str,
    name: &str,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let kc = Kubeconfig::read_from(admin_kubeconfig)
        .with_context(|| format!("read {}", admin_kubeconfig.display()))?;
    let token = request_token(admin, ns, name).await?;
    let config = kubeconfig_for(&kc, &username(ns, name), &token)?;
    let text = serde_yaml::to_string(&config).context("serialize a kubeconfig")?;
    let path = dir.join(format!("kubeconfig-{ns}-{name}"));
    write_private(&path, &text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ADMIN: &str = r#"
apiVersion: v1
kind: Config
current-context: admin@e2e
clusters:
- name: other
  cluster: {server: "https://other.invalid:6443"}
- name: e2e
  cluster:
    server: "https://127.0.0.1:6443"
    certificate-authority-data: "Q0EgUEVNIEJZVEVT"
    tls-server-name: kubernetes.default
users:
- name: admin
  user: {client-certificate-data: "Q0VSVA==", client-key-data: "S0VZ"}
contexts:
- name: admin@e2e
  context: {cluster: e2e, user: admin, namespace: kube-system}
"#;

    fn admin() -> Kubeconfig {
        Kubeconfig::from_yaml(ADMIN).expect("the admin kubeconfig parses")
    }

    #[test]
    fn the_kubeconfig_keeps_the_current_cluster_and_replaces_the_user() {
        let user = username("stash-system", "stash-webhook");
        assert_eq!(user, "system:serviceaccount:stash-system:stash-webhook");
        let kc = kubeconfig_for(&admin(), &user, "t0ken").expect("a kubeconfig");
        let v = serde_json::to_value(&kc).unwrap();
        assert_eq!(v["current-context"], user);
        assert_eq!(v["clusters"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(
            v["clusters"][0]["cluster"],
            json!({
                "server": "https://127.0.0.1:6443",
                "certificate-authority-data": "Q0EgUEVNIEJZVEVT",
                "tls-server-name": "kubernetes.default"
            })
        );
        assert_eq!(
            v["users"],
            json!([{"name": user, "user": {"token": "t0ken"}}])
        );
        assert_eq!(
            v["contexts"],
            json!([{"name": user, "context": {"cluster": "e2e", "user": user}}])
        );
    }

    #[test]
    fn a_kubeconfig_without_a_current_context_is_refused() {
        let mut kc = admin();
        kc.current_context = None;
        let err = kubeconfig_for(&kc, "u", "t").expect_err("no current context");
        assert!(err.to_string().contains("current-context"), "{err:#}");
        let mut kc = admin();
        kc.contexts[0].context.as_mut().unwrap().cluster = "gone".into();
        let err = kubeconfig_for(&kc, "u", "t").expect_err("no such cluster");
        assert!(err.to_string().contains("\"gone\""), "{err:#}");
    }

    #[tokio::test]
    async fn kube_reads_the_written_kubeconfig_as_the_service_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        let kc = kubeconfig_for(&admin(), &username("ns", "sa"), "t0ken").unwrap();
        write_private(&path, &serde_yaml::to_string(&kc).unwrap()).unwrap();
        let read = Kubeconfig::read_from(&path).expect("kube reads it");
        let config = kube::Config::from_custom_kubeconfig(read, &Default::default())
            .await
            .expect("kube makes a config of it");
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(
            config.tls_server_name.as_deref(),
            Some("kubernetes.default")
        );
        // AuthInfo serializes its token in the clear (kubeconfig format).
        let auth = serde_json::to_value(&config.auth_info).unwrap();
        assert_eq!(auth["token"], "t0ken", "a bearer token");
        assert!(auth.get("client-certificate-data").is_none(), "{auth}");
    }

    #[test]
    fn the_kubeconfig_file_is_private_even_if_it_was_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, "old, longer content than the new one\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, "new\n").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let fresh = dir.path().join("fresh");
        write_private(&fresh, "x").unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn the_token_is_asked_of_the_token_request_api() {
        let (client, mut server) = stash_testkit::scripted::client();
        let asked =
            tokio::spawn(
                async move { request_token(&client, "stash-system", "stash-webhook").await },
            );
        let ex = server
            .expect(
                "POST",
                "/api/v1/namespaces/stash-system/serviceaccounts/stash-webhook/token",
            )
            .await;
        assert_eq!(ex.body["kind"], "TokenRequest", "{}", ex.body);
        assert_eq!(ex.body["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(ex.body["spec"]["expirationSeconds"], TOKEN_SECONDS);
        let audiences = &ex.body["spec"]["audiences"];
        assert!(
            audiences.is_null() || *audiences == json!([]),
            "the API server's default audience: {audiences}"
        );
        ex.created(json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": "stash-webhook", "namespace": "stash-system"},
            "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600},
            "status": {"token": "eyJ.x.y", "expirationTimestamp": "2026-01-01T01:00:00Z"}
        }));
        let token = asked.await.unwrap().expect("a token");
        assert_eq!(token, "eyJ.x.y");
    }

    #[tokio::test]
    async fn a_refused_token_request_names_the_service_account() {
        let (client, mut server) = stash_testkit::scripted::client();
        let asked = tokio::spawn(async move { request_token(&client, "ns", "sa").await });
        server
            .expect("POST", "/api/v1/namespaces/ns/serviceaccounts/sa/token")
            .await
            .not_found();
        let err = asked.await.unwrap().expect_err("404");
        assert!(
            format!("{err:#}").contains("ServiceAccount ns/sa"),
            "{err:#}"
        );
    }
}
