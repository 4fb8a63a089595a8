//! `stash review`: the webhook's answers, offline.
//!
//! Reads an AdmissionReview (a file or stdin), or builds one from a plain
//! manifest, and prints what the webhook would answer, reading
//! BackupConfigurations and Repositories from a directory instead of a
//! cluster. Three modes:
//!
//! - default: as the API server would see it — the mutating decision for the
//!   object's kind (if any), then the validating one on the mutated object,
//!   merged into one response (the first's patch; allowed, denial and
//!   warnings of both);
//! - `--path ENDPOINT`: that endpoint alone, byte for byte what `serve`
//!   answers there;
//! - `--manifest FILE [--apply-patch]`: one request per document the webhooks
//!   handle; with `--apply-patch` the objects are printed as they would be
//!   stored (e.g. a Deployment carrying the sidecar).
//!
//! Exits non-zero when any answer is a denial, so CI can gate on it.
//!
//! Input is capped (`--max-input-size`, 32 MiB by default) and read once; a
//! manifest is pre-scanned for nesting and aliases ([`crate::store::yaml`])
//! and then decided one document at a time, so memory follows the largest
//! document, not the whole file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admission::{self, Answer, Decision, Endpoint, wire};
use crate::cli::PausedSessionPolicyArg;
use crate::settings::{DEFAULT_IMAGE, Settings};
use crate::store::{Snapshot, offline};

/// Command-line arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory (or file) of YAML holding the BackupConfigurations and
    /// Repositories the webhook would see.
    #[arg(long, value_name = "DIR", default_value = "manifests/examples")]
    pub offline: PathBuf,
    /// What to do with a BackupSession whose invoker is paused.
    #[arg(long, value_enum, default_value_t)]
    pub paused_session_policy: PausedSessionPolicyArg,
    /// Image of the injected sidecar.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// Ask this endpoint alone (e.g. /validate/backupsessions) and print its
    /// answer byte for byte.
    #[arg(long, value_name = "ENDPOINT", conflicts_with = "manifest")]
    pub path: Option<String>,
    /// Build the request(s) from this plain manifest (multi-document YAML)
    /// instead of reading an AdmissionReview.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Operation of the built request.
    #[arg(long, value_enum, default_value_t = ReviewOperation::Create, requires = "manifest")]
    pub operation: ReviewOperation,
    /// Print the objects as they would be stored (patch applied) instead of
    /// the responses.
    #[arg(long, requires = "manifest")]
    pub apply_patch: bool,
    /// The AdmissionReview to answer (`-` or absent: stdin).
    #[arg(value_name = "FILE", conflicts_with = "manifest")]
    pub file: Option<PathBuf>,
    /// Largest input read (the AdmissionReview or the manifest): bytes, or
    /// with a unit (KiB, MiB, GiB).
    #[arg(long, value_name = "SIZE", default_value = "32MiB", value_parser = parse_size)]
    pub max_input_size: u64,
}

/// A size: a number of bytes, optionally with a unit (`KiB`, `MiB`, `GiB`,
/// also `K`, `M`, `G`, or `B`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "{s:?} is not a size (e.g. 32MiB; units KiB, MiB, GiB)"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size (e.g. 32MiB; units KiB, MiB, GiB)"))
}

/// A size as it was most likely written: `32 MiB`, `1536 KiB`, `100 bytes`.
fn show_size(n: u64) -> String {
    for (unit, f) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n.is_multiple_of(f) {
            return format!("{} {unit}", n / f);
        }
    }
    format!("{n} bytes")
}

/// Operation of a request built from a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum ReviewOperation {
    Create,
    Update,
}

impl ReviewOperation {
    fn as_str(self) -> &'static str {
        match self {
            ReviewOperation::Create => "CREATE",
            ReviewOperation::Update => "UPDATE",
        }
    }
}

/// Runs the subcommand.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let loaded = offline::load(&args.offline)?;
    for problem in &loaded.problems {
        eprintln!("warning: {problem}");
    }
    let settings = Settings {
        paused_session_policy: args.paused_session_policy.into(),
        image: args.image.clone(),
    };
    let snap = loaded.snapshot;
    let mut out = std::io::stdout().lock();
    let denials = match &args.manifest {
        Some(manifest) => review_manifest(manifest, &args, &snap, &settings, &mut out)?,
        None => {
            let body = read_input(args.file.as_deref(), args.max_input_size)?;
            let answer = match &args.path {
                Some(path) => {
                    let endpoint = Endpoint::from_path(path).with_context(|| {
                        let known: Vec<&str> = Endpoint::ALL.iter().map(|e| e.path()).collect();
                        format!("unknown endpoint {path:?}: use one of {}", known.join(", "))
                    })?;
                    admission::handle(endpoint, &body, &snap, &settings)?
                }
                None => chained(&body, &snap, &settings)?.0,
            };
            out.write_all(&answer.body)?;
            out.write_all(b"\n")?;
            denial(&answer).into_iter().collect()
        }
    };
    out.flush()?;
    if !denials.is_empty() {
        bail!("denied: {}", denials.join("; "));
    }
    Ok(())
}

fn read_input(file: Option<&Path>, max: u64) -> anyhow::Result<Vec<u8>> {
    match file {
        None => read_capped(std::io::stdin().lock(), "stdin", max),
        Some(p) if p == Path::new("-") => read_capped(std::io::stdin().lock(), "stdin", max),
        Some(p) => read_file(p, max),
    }
}

/// Reads at most `max` bytes of `path`; more is an error naming the limit.
fn read_file(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    // A regular file's size is known: refuse it before reading a byte.
    if let Ok(meta) = file.metadata()
        && meta.is_file()
        && meta.len() > max
    {
        bail!("{}", too_large(&path.display().to_string(), max));
    }
    read_capped(file, &path.display().to_string(), max)
}

fn read_capped(reader: impl Read, what: &str, max: u64) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    reader
        .take(max.saturating_add(1))
        .read_to_end(&mut body)
        .with_context(|| format!("cannot read {what}"))?;
    if body.len() as u64 > max {
        bail!("{}", too_large(what, max));
    }
    Ok(body)
}

fn too_large(what: &str, max: u64) -> String {
    format!(
        "{what} is larger than the input limit of {} (raise it with --max-input-size)",
        show_size(max)
    )
}

fn denial(answer: &Answer) -> Option<String> {
    (!answer.allowed).then(|| {
        let what = format!("{} {}/{}", answer.kind, answer.namespace, answer.name);
        format!(
            "{what}: {}",
            answer.decision.message.as_deref().unwrap_or("denied")
        )
    })
}

/// Answers `body` as the API server would see it: mutating endpoint first,
/// validating ones on the mutated object, merged. Also returns the object as
/// it would be stored (None for DELETE or when denied).
pub fn chained(
    body: &[u8],
    snap: &Snapshot,
    settings: &Settings,
) -> Result<(Answer, Option<Value>), admission::ReviewError> {
    let (api_version, req) = wire::parse(body)?;
    // `parse` accepted it, so it is a JSON object with a request and this
    // cannot fail; if it did, it is the same error `parse` would give.
    let mut review: Value = serde_json::from_slice(body)
        .map_err(|e| admission::ReviewError::NotJson(wire::one_line(&e.to_string())))?;
    let endpoints = Endpoint::for_kind(&req.kind.group, &req.kind.kind);
    let mut merged = Decision::allow();
    let mut object = review
        .pointer("/request/object")
        .cloned()
        .filter(|o| !o.is_null());
    for endpoint in endpoints {
        // A `Value` always serializes (its map keys are strings); never an
        // empty body in its place.
        let body = serde_json::to_vec(&review)
            .map_err(|e| admission::ReviewError::Internal(wire::one_line(&e.to_string())))?;
        let answer = admission::handle(endpoint, &body, snap, settings)?;
        let d = answer.decision;
        merged.warnings.extend(d.warnings);
        if !d.allowed {
            merged.allowed = false;
            merged.message = d.message;
            merged.patch.clear();
            object = None;
            break;
        }
        if merged.message.is_none() {
            merged.message = d.message;
        }
        if endpoint.is_mutating() && !d.patch.is_empty() {
            if let Some(obj) = object.as_mut() {
                if let Err(e) = json_patch::patch(obj, &crate::patch::to_json_patch(&d.patch)) {
                    merged.allowed = false;
                    merged.message = Some(format!("the webhook's own patch does not apply: {e}"));
                    object = None;
                    break;
                }
                review["request"]["object"] = obj.clone();
            }
            if merged.patch.is_empty() {
                merged.patch = d.patch;
            }
        }
    }
    Ok((wire::answer(&api_version, &req, merged), object))
}

/// The AdmissionReview the API server would send for `object`.
pub fn request_for(object: &Value, operation: ReviewOperation, uid: &str) -> Value {
    request_for_owned(object.clone(), operation, uid)
}

/// [`request_for`], taking the object (no copy of it is made for CREATE).
pub fn request_for_owned(object: Value, operation: ReviewOperation, uid: &str) -> Value {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let namespace = crate::api::namespace_in(&object);
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": plural(kind)});
    let mut request = json!({
        "uid": uid,
        "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": name, "namespace": namespace,
        "operation": operation.as_str(),
        "userInfo": {"username": "stash-review"},
        "object": object,
        "dryRun": true,
    });
    if operation == ReviewOperation::Update {
        request["oldObject"] = request["object"].clone();
    }
    json!({"apiVersion": wire::ADMISSION_V1, "kind": "AdmissionReview", "request": request})
}

/// The resource (plural) of a kind, as the API server names it.
fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{lower}s"),
    }
}

/// Reviews every document of `manifest` some webhook handles; returns the denials.
fn review_manifest(
    manifest: &Path,
    args: &Args,
    snap: &Snapshot,
    settings: &Settings,
    out: &mut impl Write,
) -> anyhow::Result<Vec<String>> {
    let text = read_manifest(manifest, args.max_input_size)?;
    let mut review = Reviewing {
        manifest,
        args,
        snap,
        settings,
        out,
        denials: Vec::new(),
        printed: 0,
        n: 0,
    };
    // One document at a time: only the one being decided is held as a value.
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(doc).with_context(|| {
            format!(
                "{}: document {} is not valid YAML",
                manifest.display(),
                i + 1
            )
        })?;
        for object in objects_of(value) {
            review.object(object, i + 1)?;
        }
    }
    if review.printed == 0 && review.denials.is_empty() {
        bail!(
            "{} holds no object any stash webhook handles (apps/v1 workloads, BackupSessions, BackupConfigurations, Repositories)",
            manifest.display()
        );
    }
    Ok(review.denials)
}

/// The text of `manifest`, checked to be UTF-8 and YAML of a bounded nesting.
fn read_manifest(manifest: &Path, max_input_size: u64) -> anyhow::Result<String> {
    let bytes = read_file(manifest, max_input_size)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!("{}: not UTF-8 text: {}", manifest.display(), e.utf8_error())
    })?;
    // Before the parser, whose time grows with the square of the nesting.
    if let Err(e) = crate::store::yaml::check(&text) {
        bail!(
            "{}: document {} (line {}): {e}",
            manifest.display(),
            e.document(),
            e.line()
        );
    }
    Ok(text)
}

/// The objects of one document: none for an empty one, the `items` of a
/// `kind: List` (what `kubectl get -o yaml` prints), else the document.
fn objects_of(value: Value) -> Vec<Value> {
    match value {
        Value::Null => Vec::new(),
        Value::Object(mut map)
            if map.get("kind").and_then(Value::as_str) == Some("List")
                && map.get("items").is_some_and(Value::is_array) =>
        {
            match map.remove("items") {
                Some(Value::Array(items)) => items,
                // The guard above saw an array under "items".
                _ => unreachable!("items was checked to be an array"),
            }
        }
        other => vec![other],
    }
}

/// Whether some stash webhook sees objects of this object's kind.
fn handled(object: &Value) -> bool {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    !Endpoint::for_kind(group, kind).is_empty()
}

/// One manifest under review: where answers go, and what came of it so far.
struct Reviewing<'a, W: Write> {
    manifest: &'a Path,
    args: &'a Args,
    snap: &'a Snapshot,
    settings: &'a Settings,
    out: &'a mut W,
    denials: Vec<String>,
    /// Answers (or patched objects) written.
    printed: usize,
    /// Objects reviewed, numbering the requests.
    n: usize,
}

impl<W: Write> Reviewing<'_, W> {
    /// Reviews one object of document `doc` (1-based), skipping a kind no
    /// webhook sees (the guide's PVC).
    fn object(&mut self, object: Value, doc: usize) -> anyhow::Result<()> {
        if !handled(&object) {
            return Ok(());
        }
        self.n += 1;
        let review = request_for_owned(
            object,
            self.args.operation,
            &format!("stash-review-{}", self.n),
        );
        let body = serde_json::to_vec(&review)?;
        drop(review);
        let (answer, stored) = chained(&body, self.snap, self.settings)
            .with_context(|| format!("{}: document {doc}", self.manifest.display()))?;
        for w in &answer.decision.warnings {
            eprintln!("Warning: {w}");
        }
        self.denials.extend(denial(&answer));
        if self.args.apply_patch {
            if let Some(stored) = stored {
                self.out.write_all(b"---\n")?;
                self.out
                    .write_all(serde_yaml::to_string(&stored)?.as_bytes())?;
                self.printed += 1;
            }
        } else {
            self.out.write_all(&answer.body)?;
            self.out.write_all(b"\n")?;
            self.printed += 1;
        }
        Ok(())
    }
}
