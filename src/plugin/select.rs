//! `pause backup` / `resume backup`: set `spec.paused` on one, several, a
//! label selector's or every BackupConfiguration of the namespace.
//!
//! The write is the guide's own (`kubectl patch --type=merge` with
//! `{"spec":{"paused":true}}`, and `false` to resume), so the webhooks and
//! the CRD see exactly what they see from kubectl. Named configurations are
//! all read before any is changed: a typo fails the command with nothing
//! changed. A configuration already in the asked state is not written (no
//! new resourceVersion, no reconcile) and says so.

use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::api::BackupConfiguration;

use super::connect::Connected;
use super::errors::{BACKUP_CONFIGURATION, Request, describe};
use super::{Io, Outcome, say};

/// Which BackupConfigurations a verb acts on (exactly one way of naming them).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Selection {
    /// BackupConfiguration names (as positional arguments).
    #[arg(value_name = "NAME", conflicts_with_all = ["selector", "all"])]
    pub names: Vec<String>,
    /// A BackupConfiguration's name; repeat for several.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["selector", "all"])]
    pub backupconfig: Vec<String>,
    /// Label selector (`app=db,tier!=cache`) of the BackupConfigurations.
    #[arg(short = 'l', long, conflicts_with = "all")]
    pub selector: Option<String>,
    /// Every BackupConfiguration of the namespace.
    #[arg(long)]
    pub all: bool,
}

/// The selection, resolved to one way of naming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Names(Vec<String>),
    Selector(String),
    All,
}

impl Selection {
    /// Which way the configurations were named; an error when none was.
    pub fn target(&self) -> Result<Target, String> {
        let mut names: Vec<String> = Vec::new();
        for n in self.backupconfig.iter().chain(&self.names) {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        match (names.is_empty(), &self.selector, self.all) {
            (false, _, _) => Ok(Target::Names(names)),
            (true, Some(s), _) => Ok(Target::Selector(s.clone())),
            (true, None, true) => Ok(Target::All),
            (true, None, false) => Err(
                "name the BackupConfigurations: --backupconfig NAME (or NAME …), -l SELECTOR, or --all"
                    .to_string(),
            ),
        }
    }
}

/// What one configuration needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Write `spec.paused`.
    Write,
    /// Already in the asked state.
    Nothing,
}

/// Whether a configuration whose `spec.paused` is `paused` needs a write to become `want`.
pub fn change(paused: bool, want: bool) -> Change {
    if paused == want {
        Change::Nothing
    } else {
        Change::Write
    }
}

/// The report line for one configuration, kubectl style.
pub fn line(name: &str, want: bool, change: Change) -> String {
    let what = match (want, change) {
        (true, Change::Write) => "paused",
        (false, Change::Write) => "resumed",
        (true, Change::Nothing) => "already paused",
        (false, Change::Nothing) => "not paused (nothing to resume)",
    };
    format!("backupconfiguration.stash.appscode.com/{name} {what}")
}

/// The guide's merge patch.
pub fn patch(want: bool) -> serde_json::Value {
    serde_json::json!({"spec": {"paused": want}})
}

/// Pauses (`want`) or resumes every selected configuration.
pub async fn set_paused(cx: &Connected, sel: &Selection, want: bool, io: &mut Io<'_>) -> Outcome {
    let target = sel.target().map_err(anyhow::Error::msg)?;
    let configs = resolve(cx, &target).await?;
    if configs.is_empty() {
        let scope = match &target {
            Target::Selector(s) => format!(" matching {s:?}"),
            _ => String::new(),
        };
        say(
            io,
            format!(
                "no BackupConfiguration{scope} in namespace {:?}",
                cx.namespace
            ),
        )?;
        return Ok(());
    }
    let api: Api<BackupConfiguration> = Api::namespaced(cx.client.clone(), &cx.namespace);
    for bc in configs {
        let name = bc.name_any();
        let c = change(bc.spec.paused, want);
        if c == Change::Write {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch(want)))
                .await
                .map_err(|e| {
                    let req =
                        Request::new("patch", BACKUP_CONFIGURATION, Some(&name), &cx.namespace);
                    anyhow::anyhow!(describe(&req, &e))
                })?;
        }
        say(io, line(&name, want, c))?;
    }
    Ok(())
}

/// The selected configurations, read now. Named ones are all read first, so
/// a missing one fails before anything changed.
async fn resolve(cx: &Connected, target: &Target) -> anyhow::Result<Vec<BackupConfiguration>> {
    let api: Api<BackupConfiguration> = Api::namespaced(cx.client.clone(), &cx.namespace);
    match target {
        Target::Names(names) => {
            let mut found = Vec::with_capacity(names.len());
            for name in names {
                let bc = api.get(name).await.map_err(|e| {
                    let req = Request::new("get", BACKUP_CONFIGURATION, Some(name), &cx.namespace);
                    anyhow::anyhow!(describe(&req, &e))
                })?;
                found.push(bc);
            }
            Ok(found)
        }
        Target::Selector(_) | Target::All => {
            let mut params = ListParams::default();
            if let Target::Selector(s) = target {
                params = params.labels(s);
            }
            let mut list = api.list(&params).await.map_err(|e| {
                let req = Request::new("list", BACKUP_CONFIGURATION, None, &cx.namespace);
                anyhow::anyhow!(describe(&req, &e))
            })?;
            list.items.sort_by_key(|bc| bc.name_any());
            Ok(list.items)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_way_of_naming() {
        let mut sel = Selection::default();
        assert!(sel.target().is_err());
        sel.all = true;
        assert_eq!(sel.target().unwrap(), Target::All);
        sel.selector = Some("app=db".into());
        assert_eq!(sel.target().unwrap(), Target::Selector("app=db".into()));
        sel.backupconfig = vec!["a".into(), "b".into()];
        sel.names = vec!["b".into(), "c".into()];
        assert_eq!(
            sel.target().unwrap(),
            Target::Names(vec!["a".into(), "b".into(), "c".into()])
        );
    }

    #[test]
    fn lines_say_what_happened() {
        assert_eq!(
            line("pause-backup", true, change(false, true)),
            "backupconfiguration.stash.appscode.com/pause-backup paused"
        );
        assert_eq!(
            line("pause-backup", true, change(true, true)),
            "backupconfiguration.stash.appscode.com/pause-backup already paused"
        );
        assert_eq!(
            line("pause-backup", false, change(true, false)),
            "backupconfiguration.stash.appscode.com/pause-backup resumed"
        );
        assert_eq!(
            line("pause-backup", false, change(false, false)),
            "backupconfiguration.stash.appscode.com/pause-backup not paused (nothing to resume)"
        );
        assert_eq!(patch(false), serde_json::json!({"spec": {"paused": false}}));
    }
}
