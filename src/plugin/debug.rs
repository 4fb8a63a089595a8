//! `debug backup NAME`: everything a person needs to see why no backup
//! happened, in one plain-text page of sections: the configuration
//! (schedule, paused, conditions), its Repository and storage Secret, the
//! CronJob, the sidecar in each pod of the target, the last sessions with
//! their hosts' errors, recent events of the configuration and its sessions,
//! and who holds the repository's restic locks when restic can reach it.
//!
//! Gathering is I/O and never stops at the first failure: a section that
//! cannot be read says why (`(cannot read: …)`) and the others are still
//! shown. Rendering and the findings at the top are pure functions of the
//! gathered [`Report`].

use std::path::PathBuf;

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};

use crate::api::{
    BackupConfiguration, BackupSession, BackupSessionPhase, HostBackupPhase, LABEL_INVOKER_NAME,
    Repository, SIDECAR_CONTAINER,
};
use crate::backup::locks::may_be_workload_pod;
use crate::backup::repository::restic_repository;
use crate::backup::restic::LockInfo;
use crate::reconcile::desired::cronjob_name;

use super::connect::Connected;
use super::errors::{
    BACKUP_CONFIGURATION, BACKUP_SESSION, CRONJOB, EVENT, POD, REPOSITORY, Request, SECRET,
    describe, is_not_found,
};
use super::repo::{RepoFlags, lock_line, locks, open};
use super::{Io, Outcome, say};

/// `debug backup` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DebugArgs {
    /// The BackupConfiguration.
    #[arg(
        required_unless_present = "backupconfig",
        conflicts_with = "backupconfig"
    )]
    pub name: Option<String>,
    /// The BackupConfiguration (as Stash's plugin spells it).
    #[arg(long)]
    pub backupconfig: Option<String>,
    /// How many of the latest BackupSessions to show.
    #[arg(long, default_value_t = 5)]
    pub sessions: usize,
    /// How many of the latest events to show.
    #[arg(long, default_value_t = 15)]
    pub events: usize,
    /// restic executable for the lock holders (looked up on PATH unless a path).
    #[arg(long, env = "STASH_RESTIC_BINARY", default_value = "restic")]
    pub restic_binary: PathBuf,
}

/// A section's content, or why it could not be read.
pub type Read<T> = Result<T, String>;

/// The target's pods, read through its selector.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `Deployment/stash-demo`.
    pub name: String,
    /// Its pods; `None` when the workload does not exist.
    pub pods: Option<Vec<Pod>>,
}

/// Everything `debug backup` gathered.
#[derive(Debug, Clone)]
pub struct Report {
    pub config: BackupConfiguration,
    pub repository: Read<Option<Repository>>,
    /// The storage Secret's key names (never values), `None` when absent.
    pub secret_keys: Read<Option<Vec<String>>>,
    pub cronjob: Read<Option<CronJob>>,
    pub workload: Read<Workload>,
    /// Newest first.
    pub sessions: Read<Vec<BackupSession>>,
    /// Oldest first.
    pub events: Read<Vec<Event>>,
    pub locks: Read<Vec<(String, LockInfo)>>,
    pub now: jiff::Timestamp,
}

/// Gathers and prints the report.
pub async fn backup(cx: &Connected, args: &DebugArgs, io: &mut Io<'_>) -> Outcome {
    let name = args
        .name
        .as_deref()
        .or(args.backupconfig.as_deref())
        .unwrap_or_default();
    let report = gather(cx, name, args).await?;
    for line in render(&report) {
        say(io, line)?;
    }
    Ok(())
}

/// Reads every section; only a missing or unreadable configuration fails.
pub async fn gather(cx: &Connected, name: &str, args: &DebugArgs) -> anyhow::Result<Report> {
    let ns = cx.namespace.as_str();
    let configs: Api<BackupConfiguration> = Api::namespaced(cx.client.clone(), ns);
    let config = configs.get(name).await.map_err(|e| {
        anyhow::anyhow!(describe(
            &Request::new("get", BACKUP_CONFIGURATION, Some(name), ns),
            &e
        ))
    })?;
    let repo_name = config.repository_name().map(str::to_string);
    let repository = match &repo_name {
        Some(r) => get_opt::<Repository>(cx, r, REPOSITORY).await,
        None => Ok(None),
    };
    let secret_name = repository
        .as_ref()
        .ok()
        .and_then(Option::as_ref)
        .and_then(|r| r.spec.backend.storage_secret_name.clone());
    let secret_keys = match &secret_name {
        Some(s) => get_opt::<Secret>(cx, s, SECRET)
            .await
            .map(|o| o.map(|s| s.data.unwrap_or_default().into_keys().collect())),
        None => Ok(None),
    };
    let cronjob = get_opt::<CronJob>(cx, &cronjob_name(name), CRONJOB).await;
    let workload = workload(cx, &config).await;
    let sessions = sessions(cx, name, args.sessions).await;
    let events = events(cx, name, sessions.as_deref().unwrap_or(&[]), args.events).await;
    let locks = match (&repo_name, &repository) {
        (Some(r), Ok(Some(_))) => {
            let flags = RepoFlags {
                repository: r.clone(),
                restic_binary: args.restic_binary.clone(),
            };
            match open(cx, &flags, "list locks").await {
                Ok(opened) => locks(&opened.restic).await.map_err(|e| e.to_string()),
                Err(e) => Err(format!("{e:#}")),
            }
        }
        _ => Err("no Repository".to_string()),
    };
    Ok(Report {
        config,
        repository,
        secret_keys,
        cronjob,
        workload,
        sessions,
        events,
        locks,
        now: jiff::Timestamp::now(),
    })
}

async fn get_opt<K>(cx: &Connected, name: &str, kind: super::errors::Kind) -> Read<Option<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(cx.client.clone(), &cx.namespace);
    match api.get(name).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(describe(
            &Request::new("get", kind, Some(name), &cx.namespace),
            &e,
        )),
    }
}

async fn workload(cx: &Connected, config: &BackupConfiguration) -> Read<Workload> {
    let target = config
        .target_ref()
        .ok_or_else(|| "the configuration has no target".to_string())?;
    let label = format!("{}/{}", target.kind, target.name);
    let gvk = GroupVersionKind::gvk("apps", "v1", &target.kind);
    let plural = format!("{}s", target.kind.to_lowercase());
    let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let api: Api<DynamicObject> = Api::namespaced_with(cx.client.clone(), &cx.namespace, &resource);
    let object = match api.get(&target.name).await {
        Ok(o) => o,
        Err(e) if is_not_found(&e) => {
            return Ok(Workload {
                name: label,
                pods: None,
            });
        }
        Err(e) => {
            return Err(format!(
                "cannot get {label}: {}",
                super::errors::one_line(&e.to_string())
            ));
        }
    };
    let selector = selector_of(&object.data).ok_or_else(|| format!("{label} has no selector"))?;
    let pods: Api<Pod> = Api::namespaced(cx.client.clone(), &cx.namespace);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| describe(&Request::new("list", POD, None, &cx.namespace), &e))?;
    let mut items = list.items;
    items.sort_by_key(|p| p.name_any());
    Ok(Workload {
        name: label,
        pods: Some(items),
    })
}

/// A workload's `spec.selector` as a label selector string.
pub fn selector_of(workload: &serde_json::Value) -> Option<String> {
    let sel = workload.pointer("/spec/selector")?;
    let mut terms: Vec<String> = Vec::new();
    if let Some(labels) = sel.get("matchLabels").and_then(|m| m.as_object()) {
        for (k, v) in labels {
            terms.push(format!("{k}={}", v.as_str()?));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
    {
        let key = e.get("key")?.as_str()?;
        let values: Vec<&str> = e
            .get("values")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        terms.push(match e.get("operator")?.as_str()? {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    (!terms.is_empty()).then(|| terms.join(","))
}

async fn sessions(cx: &Connected, name: &str, keep: usize) -> Read<Vec<BackupSession>> {
    let api: Api<BackupSession> = Api::namespaced(cx.client.clone(), &cx.namespace);
    let params = ListParams::default().labels(&format!("{LABEL_INVOKER_NAME}={name}"));
    let list = api.list(&params).await.map_err(|e| {
        describe(
            &Request::new("list", BACKUP_SESSION, None, &cx.namespace),
            &e,
        )
    })?;
    let mut items: Vec<BackupSession> = list
        .items
        .into_iter()
        .filter(|s| s.spec.invoker.name == name)
        .collect();
    items.sort_by(|a, b| {
        let key = |s: &BackupSession| {
            (
                s.metadata.creation_timestamp.clone().map(|t| t.0),
                s.name_any(),
            )
        };
        key(b).cmp(&key(a))
    });
    items.truncate(keep);
    Ok(items)
}

async fn events(
    cx: &Connected,
    name: &str,
    sessions: &[BackupSession],
    keep: usize,
) -> Read<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(cx.client.clone(), &cx.namespace);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| describe(&Request::new("list", EVENT, None, &cx.namespace), &e))?;
    let session_names: Vec<String> = sessions.iter().map(|s| s.name_any()).collect();
    let mut items: Vec<Event> = list
        .items
        .into_iter()
        .filter(|e| concerns(e, name, &session_names))
        .collect();
    items.sort_by_key(event_time);
    let skip = items.len().saturating_sub(keep);
    Ok(items.split_off(skip))
}

/// Whether an event is about the configuration or one of its sessions.
pub fn concerns(e: &Event, config: &str, sessions: &[String]) -> bool {
    let o = &e.involved_object;
    match (o.kind.as_deref(), o.name.as_deref()) {
        (Some("BackupConfiguration"), Some(n)) => n == config,
        (Some("BackupSession"), Some(n)) => sessions.iter().any(|s| s == n),
        _ => false,
    }
}

fn event_time(e: &Event) -> Option<jiff::Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

// ---- rendering (pure) -------------------------------------------------------

/// kubectl's AGE: `45s`, `7m`, `3h`, `2d`.
pub fn age(then: Option<jiff::Timestamp>, now: jiff::Timestamp) -> String {
    let Some(then) = then else {
        return "<unknown>".to_string();
    };
    let secs = now.as_second().saturating_sub(then.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The whole page.
pub fn render(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let ns = r.config.namespace().unwrap_or_default();
    let name = r.config.name_any();
    out.push(format!("BackupConfiguration {ns}/{name}"));
    out.push("== Findings".to_string());
    out.extend(findings(r).into_iter().map(|f| format!("  - {f}")));
    section(&mut out, "Configuration", config_lines(r));
    section(&mut out, "Repository", repository_lines(r));
    section(&mut out, "CronJob", cronjob_lines(r));
    section(&mut out, "Pods", pod_lines(r));
    section(&mut out, "BackupSessions (newest first)", session_lines(r));
    section(&mut out, "Events (oldest first)", event_lines(r));
    section(&mut out, "Repository locks", lock_lines(r));
    out
}

fn section(out: &mut Vec<String>, title: &str, lines: Vec<String>) {
    out.push(String::new());
    out.push(format!("== {title}"));
    out.extend(lines.into_iter().map(|l| format!("  {l}")));
}

fn config_lines(r: &Report) -> Vec<String> {
    let c = &r.config;
    let mut lines = vec![
        format!(
            "Schedule:    {}",
            c.spec.schedule.as_deref().unwrap_or("<none>")
        ),
        format!(
            "Paused:      {}",
            if c.spec.paused {
                "true (the CronJob creates no BackupSession; instant ones are Skipped)"
            } else {
                "false"
            }
        ),
        format!("Repository:  {}", c.repository_name().unwrap_or("<none>")),
    ];
    if let Some(t) = c.spec.target.as_ref() {
        lines.push(format!(
            "Target:      {}/{} paths {}",
            t.target_ref.kind,
            t.target_ref.name,
            t.paths.join(", ")
        ));
    }
    let status = c.status.clone().unwrap_or_default();
    lines.push(format!(
        "Generation:  {} (observed by the reconciler: {})",
        c.metadata.generation.unwrap_or(0),
        status
            .observed_generation
            .map_or("never".to_string(), |g| g.to_string())
    ));
    if c.is_deleting() {
        lines.push("Deleting:    yes (deletionTimestamp set)".to_string());
    }
    if status.conditions.is_empty() {
        lines.push("Conditions:  none".to_string());
    } else {
        lines.push("Conditions:".to_string());
        for cond in &status.conditions {
            lines.push(
                format!(
                    "  {} {} {} {}",
                    cond.type_,
                    cond.status,
                    cond.reason.as_deref().unwrap_or(""),
                    cond.message.as_deref().unwrap_or("")
                )
                .trim_end()
                .to_string(),
            );
        }
    }
    lines
}

fn repository_lines(r: &Report) -> Vec<String> {
    let name = r.config.repository_name().unwrap_or("<none>");
    let repo = match &r.repository {
        Err(e) => return vec![format!("(cannot read: {e})")],
        Ok(None) => return vec![format!("{name}: NOT FOUND")],
        Ok(Some(repo)) => repo,
    };
    let backend = &repo.spec.backend;
    let url = restic_repository(backend).unwrap_or_else(|e| format!("invalid: {e}"));
    let kind = backend.configured().join(",");
    let st = repo.status.clone().unwrap_or_default();
    let secret = backend.storage_secret_name.as_deref().unwrap_or("<none>");
    let keys = match &r.secret_keys {
        Err(e) => format!("(cannot read: {e})"),
        Ok(None) => "NOT FOUND".to_string(),
        Ok(Some(k)) => format!("keys {}", k.join(", ")),
    };
    vec![
        format!("{name}: {kind} backend, {url}"),
        format!("Secret:      {secret}: {keys}"),
        format!(
            "Integrity:   {}",
            st.integrity
                .map_or("unknown".to_string(), |i| i.to_string())
        ),
        format!(
            "Snapshots:   {}, size {}",
            st.snapshot_count.map_or("?".to_string(), |n| n.to_string()),
            st.size.as_deref().unwrap_or("?")
        ),
        format!(
            "Last backup: {}",
            st.last_backup_time
                .as_ref()
                .map_or("never".to_string(), |t| format!(
                    "{} ({} ago)",
                    t.0,
                    age(Some(t.0), r.now)
                ))
        ),
    ]
}

fn cronjob_lines(r: &Report) -> Vec<String> {
    let name = cronjob_name(&r.config.name_any());
    let cj = match &r.cronjob {
        Err(e) => return vec![format!("(cannot read: {e})")],
        Ok(None) => return vec![format!("{name}: NOT FOUND")],
        Ok(Some(cj)) => cj,
    };
    let spec = cj.spec.clone().unwrap_or_default();
    let st = cj.status.clone().unwrap_or_default();
    let when = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map_or("never".to_string(), |t| {
            format!("{} ({} ago)", t.0, age(Some(t.0), r.now))
        })
    };
    vec![
        format!(
            "{name}: schedule {}, suspend {}",
            spec.schedule,
            spec.suspend.unwrap_or(false)
        ),
        format!("Last schedule:   {}", when(st.last_schedule_time.as_ref())),
        format!(
            "Last successful: {}",
            when(st.last_successful_time.as_ref())
        ),
        format!("Active jobs:     {}", st.active.map_or(0, |a| a.len())),
    ]
}

/// One pod: phase and whether the `stash` sidecar is in it and ready.
pub fn pod_line(pod: &Pod) -> String {
    let name = pod.name_any();
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Unknown".into());
    let has = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().any(|c| c.name == SIDECAR_CONTAINER));
    if !has {
        return format!("{name} {phase}: sidecar MISSING");
    }
    let state = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == SIDECAR_CONTAINER))
        .map(|c| {
            format!(
                "{}, {} restart{}",
                if c.ready { "ready" } else { "not ready" },
                c.restart_count,
                if c.restart_count == 1 { "" } else { "s" }
            )
        })
        .unwrap_or_else(|| "no status yet".into());
    format!("{name} {phase}: sidecar present ({state})")
}

fn pod_lines(r: &Report) -> Vec<String> {
    match &r.workload {
        Err(e) => vec![format!("(cannot read: {e})")],
        Ok(Workload { name, pods: None }) => vec![format!("{name}: NOT FOUND")],
        Ok(Workload {
            name,
            pods: Some(pods),
        }) if pods.is_empty() => vec![format!("{name}: no pods")],
        Ok(Workload {
            name,
            pods: Some(pods),
        }) => std::iter::once(format!("{name}:"))
            .chain(pods.iter().map(|p| format!("  {}", pod_line(p))))
            .collect(),
    }
}

fn session_lines(r: &Report) -> Vec<String> {
    let sessions = match &r.sessions {
        Err(e) => return vec![format!("(cannot read: {e})")],
        Ok(s) if s.is_empty() => return vec!["none".to_string()],
        Ok(s) => s,
    };
    let mut lines = Vec::new();
    for s in sessions {
        let created = s.metadata.creation_timestamp.as_ref().map(|t| t.0);
        lines.push(format!(
            "{} {} {} ago",
            s.name_any(),
            s.phase().as_str(),
            age(created, r.now)
        ));
        for h in s.status.iter().flat_map(|st| &st.stats) {
            let phase = h.phase.map_or("?", |p| match p {
                HostBackupPhase::Running => "Running",
                HostBackupPhase::Succeeded => "Succeeded",
                HostBackupPhase::Failed => "Failed",
            });
            let error = h
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            lines.push(format!("  {} {phase}{error}", h.hostname));
        }
    }
    lines
}

fn event_lines(r: &Report) -> Vec<String> {
    match &r.events {
        Err(e) => vec![format!("(cannot read: {e})")],
        Ok(ev) if ev.is_empty() => vec!["none".to_string()],
        Ok(ev) => ev
            .iter()
            .map(|e| {
                let o = &e.involved_object;
                format!(
                    "{} ago {} {:?} {}/{} from {:?}: {}",
                    age(event_time(e), r.now),
                    e.type_.as_deref().unwrap_or(""),
                    e.reason.as_deref().unwrap_or(""),
                    o.kind.as_deref().unwrap_or(""),
                    o.name.as_deref().unwrap_or(""),
                    e.source
                        .as_ref()
                        .and_then(|s| s.component.as_deref())
                        .or(e.reporting_component.as_deref())
                        .unwrap_or(""),
                    super::errors::one_line(e.message.as_deref().unwrap_or(""))
                )
            })
            .collect(),
    }
}

fn lock_lines(r: &Report) -> Vec<String> {
    match &r.locks {
        Err(e) => vec![format!("(not reachable from this machine: {e})")],
        Ok(l) if l.is_empty() => vec!["none".to_string()],
        Ok(l) => l
            .iter()
            .map(|(id, lock)| match gone_holder(r, &lock.hostname) {
                true => format!(
                    "{} (its pod is gone: stale, kubectl stash unlock removes it)",
                    lock_line(id, lock)
                ),
                false => lock_line(id, lock),
            })
            .collect(),
    }
}

/// Whether a lock's hostname is a pod of the target that no longer exists.
fn gone_holder(r: &Report, hostname: &str) -> bool {
    let Some(target) = r.config.target_ref() else {
        return false;
    };
    let Ok(Workload {
        pods: Some(pods), ..
    }) = &r.workload
    else {
        return false;
    };
    may_be_workload_pod(hostname, &target.name) && !pods.iter().any(|p| p.name_any() == hostname)
}

/// What stands between this configuration and a backup, most likely first;
/// "nothing" when nothing does.
pub fn findings(r: &Report) -> Vec<String> {
    let mut f = Vec::new();
    configuration_findings(r, &mut f);
    repository_findings(r, &mut f);
    cronjob_findings(r, &mut f);
    condition_findings(r, &mut f);
    workload_findings(r, &mut f);
    session_findings(r, &mut f);
    lock_findings(r, &mut f);
    if f.is_empty() {
        f.push("nothing found that stops a backup".to_string());
    }
    f
}

/// The configuration is being deleted, or paused.
fn configuration_findings(r: &Report, f: &mut Vec<String>) {
    let c = &r.config;
    if c.is_deleting() {
        f.push("the configuration is being deleted".to_string());
    }
    if c.spec.paused {
        let name = c.name_any();
        let ns = c.namespace().unwrap_or_default();
        f.push(format!(
            "paused: scheduled runs create no BackupSession and instant ones are Skipped; resume with kubectl stash resume backup {name} -n {ns}"
        ));
    }
}

/// The Repository, or its storage Secret, is missing.
fn repository_findings(r: &Report, f: &mut Vec<String>) {
    match &r.repository {
        Ok(None) => f.push(format!(
            "Repository {:?} not found: the sidecar has nowhere to back up",
            r.config.repository_name().unwrap_or("")
        )),
        Ok(Some(_)) if matches!(r.secret_keys, Ok(None)) => f.push(
            "the Repository's storage Secret is missing: restic cannot open the repository"
                .to_string(),
        ),
        _ => {}
    }
}

/// The CronJob is missing or suspended.
fn cronjob_findings(r: &Report, f: &mut Vec<String>) {
    if matches!(r.cronjob, Ok(None)) {
        f.push(format!(
            "CronJob {} not found: nothing fires on schedule (is stash serve, the reconciler, running?)",
            cronjob_name(&r.config.name_any())
        ));
    }
    if let Ok(Some(cj)) = &r.cronjob
        && cj.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)
    {
        f.push("the CronJob is suspended: it does not fire".to_string());
    }
}

/// The configuration's False conditions.
fn condition_findings(r: &Report, f: &mut Vec<String>) {
    for cond in r.config.status.iter().flat_map(|s| &s.conditions) {
        if cond.status == "False" {
            f.push(format!(
                "condition {} is False: {}",
                cond.type_,
                cond.message
                    .as_deref()
                    .or(cond.reason.as_deref())
                    .unwrap_or("")
            ));
        }
    }
}

/// The target is missing, has no pods, or pods without the sidecar.
fn workload_findings(r: &Report, f: &mut Vec<String>) {
    match &r.workload {
        Ok(Workload { name, pods: None }) => f.push(format!("the target {name} does not exist")),
        Ok(Workload {
            name,
            pods: Some(pods),
        }) => {
            let missing = pods
                .iter()
                .filter(|p| pod_line(p).ends_with("sidecar MISSING"))
                .count();
            if pods.is_empty() {
                f.push(format!(
                    "no pod of {name} exists: no sidecar runs to back up"
                ));
            } else if missing > 0 {
                f.push(format!(
                    "{missing} of {} pod(s) of {name} run without the stash sidecar",
                    pods.len()
                ));
            }
        }
        Err(_) => {}
    }
}

/// The last BackupSession Failed, and the hosts' errors.
fn session_findings(r: &Report, f: &mut Vec<String>) {
    if let Ok(sessions) = &r.sessions
        && let Some(last) = sessions.first()
        && last.phase() == BackupSessionPhase::Failed
    {
        let errors: Vec<String> = last
            .status
            .iter()
            .flat_map(|s| &s.stats)
            .filter_map(|h| h.error.as_ref().map(|e| format!("{}: {e}", h.hostname)))
            .collect();
        f.push(format!(
            "the last BackupSession {} Failed: {}",
            last.name_any(),
            errors.join("; ")
        ));
    }
}

/// restic locks held by pods that are gone.
fn lock_findings(r: &Report, f: &mut Vec<String>) {
    if let Ok(l) = &r.locks {
        let stale = l
            .iter()
            .filter(|(_, lock)| gone_holder(r, &lock.hostname))
            .count();
        if stale > 0 {
            f.push(format!(
                "{stale} restic lock(s) held by pods that are gone: kubectl stash unlock {} -n {ns}",
                r.config.repository_name().unwrap_or(""),
                ns = r.config.namespace().unwrap_or_default()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_read_like_kubectl() {
        assert_eq!(
            selector_of(&json!({"spec": {"selector": {"matchLabels": {"app": "stash-demo"}}}})),
            Some("app=stash-demo".into())
        );
        assert_eq!(
            selector_of(&json!({"spec": {"selector": {"matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "x", "operator": "DoesNotExist"}]}}})),
            Some("tier in (a,b),!x".into())
        );
        assert_eq!(selector_of(&json!({"spec": {}})), None);
    }

    #[test]
    fn ages() {
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let at = |s: i64| Some(jiff::Timestamp::from_second(1_000_000 - s).unwrap());
        assert_eq!(age(at(5), now), "5s");
        assert_eq!(age(at(600), now), "10m");
        assert_eq!(age(at(3 * 3600), now), "3h");
        assert_eq!(age(at(3 * 86_400), now), "3d");
        assert_eq!(age(None, now), "<unknown>");
    }

    #[test]
    fn pods_show_the_sidecar() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p1"},
            "spec": {"containers": [{"name": "busybox"}, {"name": "stash"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "stash", "ready": true, "restartCount": 1, "image": "i", "imageID": ""}]}
        }))
        .unwrap();
        assert_eq!(
            pod_line(&pod),
            "p1 Running: sidecar present (ready, 1 restart)"
        );
        let bare: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p2"}, "spec": {"containers": [{"name": "busybox"}]}
        }))
        .unwrap();
        assert_eq!(pod_line(&bare), "p2 Unknown: sidecar MISSING");
    }
}
