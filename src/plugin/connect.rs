//! kubectl's own flags (`-n`, `--context`, `--kubeconfig`) and the client
//! they give. The kubeconfig is read as kubectl reads it (`--kubeconfig`,
//! else `$KUBECONFIG`, else `~/.kube/config`), and the namespace is `-n`,
//! else the context's, else `default`, so a plugin verb acts where the
//! `kubectl get` typed just before it looked.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// kubectl's global flags the plugin honours.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KubeFlags {
    /// The namespace (default: the context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
}

/// A client and the namespace every verb works in.
#[derive(Clone)]
pub struct Connected {
    pub client: Client,
    pub namespace: String,
}

impl Connected {
    /// A connection on an existing client (tests: a fake cluster's).
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }
}

/// The namespace kubectl would use: the flag, else the context's.
pub fn namespace(flag: Option<&str>, context_default: &str) -> String {
    flag.filter(|n| !n.is_empty())
        .unwrap_or(context_default)
        .to_string()
}

/// Reads the kubeconfig the flags name and builds the client.
pub async fn connect(flags: &KubeFlags) -> anyhow::Result<Connected> {
    let kubeconfig = read_kubeconfig(flags.kubeconfig.as_ref())?;
    let options = KubeConfigOptions {
        context: flags.context.clone(),
        ..Default::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot use the kubeconfig: {e}"))?;
    let ns = namespace(flags.namespace.as_deref(), &config.default_namespace);
    let client = Client::try_from(config)
        .map_err(|e| anyhow::anyhow!("cannot build a Kubernetes client: {e}"))?;
    Ok(Connected::new(client, ns))
}

/// The kubeconfig of `--kubeconfig`, `$KUBECONFIG` or `~/.kube/config`,
/// with a one-line error naming what was tried.
pub fn read_kubeconfig(flag: Option<&PathBuf>) -> anyhow::Result<Kubeconfig> {
    if let Some(path) = flag {
        return Kubeconfig::read_from(path)
            .map_err(|e| anyhow::anyhow!("no kubeconfig: cannot read {}: {e}", path.display()));
    }
    Kubeconfig::read().map_err(|e| {
        anyhow::anyhow!(
            "no kubeconfig: {e} (pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_the_context() {
        assert_eq!(namespace(Some("demo"), "team"), "demo");
        assert_eq!(namespace(None, "team"), "team");
        assert_eq!(namespace(Some(""), "team"), "team");
    }

    #[test]
    fn a_missing_kubeconfig_is_one_line_naming_the_file() {
        let err = read_kubeconfig(Some(&PathBuf::from("/nonexistent/kubeconfig"))).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("no kubeconfig: cannot read /nonexistent/kubeconfig"),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }

    #[tokio::test]
    async fn the_context_names_the_namespace() {
        let dir = std::env::temp_dir().join(format!("stash-plugin-kc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:6443'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: a\n  context: {cluster: c, user: u, namespace: team}\n- name: b\n  context: {cluster: c, user: u, namespace: demo}\n",
        )
        .unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let flags = KubeFlags {
            kubeconfig: Some(path.clone()),
            ..Default::default()
        };
        assert_eq!(connect(&flags).await.unwrap().namespace, "team");
        let flags = KubeFlags {
            kubeconfig: Some(path.clone()),
            context: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(connect(&flags).await.unwrap().namespace, "demo");
        let flags = KubeFlags {
            kubeconfig: Some(path),
            context: Some("b".into()),
            namespace: Some("x".into()),
        };
        assert_eq!(connect(&flags).await.unwrap().namespace, "x");
        let _ = std::fs::remove_dir_all(dir);
    }
}
