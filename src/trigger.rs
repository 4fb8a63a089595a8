//! `stash create-backupsession`: what the backup CronJob runs.
//!
//! One pause check, then one write: while the BackupConfiguration is paused it
//! records a Normal `Backup Skipped` event on it (from `Backup Triggering
//! CronJob`) and creates nothing; otherwise it creates BackupSession
//! `<bc>-<unix seconds>`. The work is [`trigger`], a library function over a
//! `kube::Client` so tests can drive it against a mock API server; [`run`] is
//! only the command-line layer.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};

use crate::api::events::{COMPONENT_CRONJOB, REASON_BACKUP_SKIPPED, cronjob_skipped_message};
use crate::api::{
    BackupConfiguration, BackupInvokerRef, BackupSession, BackupSessionSpec, GROUP,
    INVOKER_KIND_BACKUP_CONFIGURATION, invoker_labels,
};
use crate::recorder::{EventType, Recorder};

/// Command-line arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kind of the invoker; only `BackupConfiguration` exists in the sidecar model.
    #[arg(long, default_value = INVOKER_KIND_BACKUP_CONFIGURATION)]
    pub invoker_kind: String,
    /// Name of the invoker.
    #[arg(long)]
    pub invoker_name: String,
    /// Namespace of the invoker (the CronJob passes its own through POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Created the BackupSession of this name.
    Created(String),
    /// The BackupSession of this name already existed (a retried Job within the same second).
    AlreadyExists(String),
    /// The configuration is paused; the `Backup Skipped` event was recorded.
    Skipped,
}

/// Why a run failed. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("unsupported invoker kind {0:?}: only BackupConfiguration can invoke a backup")]
    UnsupportedKind(String),
    #[error("no namespace: pass --namespace or set POD_NAMESPACE")]
    NoNamespace,
    #[error("invoker name must not be empty")]
    NoName,
    #[error("BackupConfiguration {0} not found")]
    NotFound(String),
    #[error("cannot read BackupConfiguration {name}: {source}")]
    Get { name: String, source: kube::Error },
    #[error("cannot record the Backup Skipped event on BackupConfiguration {name}: {source}")]
    Event { name: String, source: kube::Error },
    #[error("cannot create BackupSession {name}: {source}")]
    Create { name: String, source: kube::Error },
}

/// Runs the subcommand.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let namespace = args
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(TriggerError::NoNamespace)?;
    let client = Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("cannot build a Kubernetes client: {e}"))?;
    let recorder = Recorder::new(client.clone(), COMPONENT_CRONJOB);
    let outcome = trigger(
        client,
        &recorder,
        &namespace,
        &args.invoker_kind,
        &args.invoker_name,
        jiff::Timestamp::now(),
    )
    .await?;
    match outcome {
        Outcome::Created(name) => {
            tracing::info!(%namespace, session = %name, "created BackupSession")
        }
        Outcome::AlreadyExists(name) => {
            tracing::info!(%namespace, session = %name, "BackupSession already exists")
        }
        Outcome::Skipped => tracing::info!(
            %namespace,
            invoker = %args.invoker_name,
            "Skipping creating BackupSession. Reason: Backup Configuration is paused."
        ),
    }
    Ok(())
}

/// The pause check and the one write, against any API server `client` reaches.
/// `now` names the session (`<bc>-<unix seconds>`).
pub async fn trigger(
    client: Client,
    recorder: &Recorder,
    namespace: &str,
    invoker_kind: &str,
    invoker_name: &str,
    now: jiff::Timestamp,
) -> Result<Outcome, TriggerError> {
    if invoker_kind != INVOKER_KIND_BACKUP_CONFIGURATION {
        return Err(TriggerError::UnsupportedKind(invoker_kind.to_string()));
    }
    if invoker_name.is_empty() {
        return Err(TriggerError::NoName);
    }
    let key = format!("{namespace}/{invoker_name}");
    let configs: Api<BackupConfiguration> = Api::namespaced(client.clone(), namespace);
    let bc = configs
        .get_opt(invoker_name)
        .await
        .map_err(|source| TriggerError::Get {
            name: key.clone(),
            source,
        })?
        .ok_or_else(|| TriggerError::NotFound(key.clone()))?;

    if bc.spec.paused {
        recorder
            .publish(
                &bc.object_ref(&()),
                EventType::Normal,
                REASON_BACKUP_SKIPPED,
                &cronjob_skipped_message(namespace, invoker_name),
            )
            .await
            .map_err(|source| TriggerError::Event { name: key, source })?;
        return Ok(Outcome::Skipped);
    }

    let session = session_for(&bc, now);
    let name = session.name_any();
    let sessions: Api<BackupSession> = Api::namespaced(client, namespace);
    match sessions.create(&PostParams::default(), &session).await {
        Ok(_) => Ok(Outcome::Created(name)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Outcome::AlreadyExists(name)),
        Err(source) => Err(TriggerError::Create {
            name: format!("{namespace}/{name}"),
            source,
        }),
    }
}

/// The BackupSession a scheduled run of `bc` creates at `now` (pure).
pub fn session_for(bc: &BackupConfiguration, now: jiff::Timestamp) -> BackupSession {
    let bc_name = bc.name_any();
    let labels: BTreeMap<String, String> =
        invoker_labels(INVOKER_KIND_BACKUP_CONFIGURATION, &bc_name)
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect();
    BackupSession {
        metadata: ObjectMeta {
            name: Some(format!("{bc_name}-{}", now.as_second())),
            namespace: bc.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![owner_reference(bc)]),
            ..Default::default()
        },
        spec: BackupSessionSpec {
            invoker: BackupInvokerRef {
                api_group: Some(GROUP.to_string()),
                kind: INVOKER_KIND_BACKUP_CONFIGURATION.to_string(),
                name: bc_name,
            },
        },
        status: None,
    }
}

/// An ownerReference to `bc` that is not a controller reference (as in Stash):
/// the session is collected with its configuration but no controller claims it.
fn owner_reference(bc: &BackupConfiguration) -> OwnerReference {
    OwnerReference {
        api_version: BackupConfiguration::api_version(&()).into_owned(),
        kind: BackupConfiguration::kind(&()).into_owned(),
        name: bc.name_any(),
        uid: bc.uid().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        BackupConfigurationSpec, LABEL_BACKUP_CONFIGURATION, LABEL_INVOKER_NAME, LABEL_INVOKER_TYPE,
    };

    #[tokio::test]
    async fn no_namespace_is_a_one_line_error_before_any_client() {
        let args = Args {
            invoker_kind: INVOKER_KIND_BACKUP_CONFIGURATION.into(),
            invoker_name: "pause-backup".into(),
            namespace: Some(String::new()),
        };
        let err = run(args).await.unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "no namespace: pass --namespace or set POD_NAMESPACE"
        );
    }

    #[test]
    fn session_is_named_by_unix_seconds_and_labelled() {
        let mut bc = BackupConfiguration::new("pause-backup", BackupConfigurationSpec::default());
        bc.metadata.namespace = Some("demo".into());
        bc.metadata.uid = Some("uid-1".into());
        let s = session_for(&bc, jiff::Timestamp::from_second(1_564_659_789).unwrap());
        assert_eq!(s.metadata.name.as_deref(), Some("pause-backup-1564659789"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("demo"));
        let labels = s.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_BACKUP_CONFIGURATION], "pause-backup");
        assert_eq!(labels[LABEL_INVOKER_TYPE], "BackupConfiguration");
        assert_eq!(labels[LABEL_INVOKER_NAME], "pause-backup");
        let owner = &s.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("BackupConfiguration", "uid-1")
        );
        assert_eq!(
            s.spec.invoker.api_group.as_deref(),
            Some("stash.appscode.com")
        );
    }
}
