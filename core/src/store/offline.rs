//! The offline feed: fills a [`Snapshot`] from a directory of (multi-document)
//! YAML or JSON files, as `kubectl apply -f DIR` would read them.
//!
//! Kinds other than BackupConfiguration, Repository and RestoreSession are skipped; a document
//! that cannot be read is reported with its file and position and the rest of
//! the directory still loads.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::Snapshot;
use crate::api::{BackupConfiguration, GROUP, Repository, RestoreSession, unknown::unknown_fields};

/// A problem with one document; loading went on without it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based index of the document within the file.
    pub document: usize,
    /// 1-based line, when the parser knows it.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file.display(), self.document)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What a directory held.
#[derive(Default)]
pub struct Loaded {
    pub snapshot: Snapshot,
    /// Documents that were skipped, and fields that were not understood.
    pub problems: Vec<Problem>,
}

/// Error reading the directory itself (not one document in it).
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct DirError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Loads every `*.yaml`, `*.yml` and `*.json` file directly in `dir` (or `dir`
/// itself when it is a file), in name order.
pub fn load(dir: &Path) -> Result<Loaded, DirError> {
    let err = |source| DirError {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = if dir.is_file() {
        vec![dir.to_path_buf()]
    } else {
        std::fs::read_dir(dir)
            .map_err(err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
            })
            .collect()
    };
    files.sort();
    let mut loaded = Loaded::default();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => load_text(&file, &text, &mut loaded),
            Err(e) => loaded.problems.push(Problem {
                file: file.clone(),
                document: 0,
                line: None,
                message: format!("cannot read file: {e}"),
            }),
        }
    }
    Ok(loaded)
}

/// Loads the documents of one file's text into `loaded`.
pub fn load_text(file: &Path, text: &str, loaded: &mut Loaded) {
    // Before the parser, whose time grows with the square of the nesting.
    if let Err(e) = super::yaml::check(text) {
        loaded.problems.push(Problem {
            file: file.to_path_buf(),
            document: e.document(),
            line: Some(e.line()),
            message: format!("{e}; the file was not read"),
        });
        return;
    }
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let problem = |line: Option<usize>, message: String| Problem {
            file: file.to_path_buf(),
            document: i + 1,
            line,
            message,
        };
        let value = match Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                let line = e.location().map(|l| l.line());
                loaded
                    .problems
                    .push(problem(line, format!("not valid YAML: {e}")));
                // A syntax error ends the stream: serde_yaml cannot resync after it.
                if line.is_some() {
                    break;
                }
                continue;
            }
        };
        if value.is_null() {
            continue; // empty document, e.g. a trailing `---`
        }
        match add_object(value, &mut loaded.snapshot) {
            Ok(unknown) => {
                for path in unknown {
                    loaded
                        .problems
                        .push(problem(None, format!("unknown field {path} was ignored")));
                }
            }
            Err(message) => loaded.problems.push(problem(None, message)),
        }
    }
}

/// Adds one object if it is one of ours; returns the unknown fields it had.
fn add_object(value: Value, snapshot: &mut Snapshot) -> Result<Vec<String>, String> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
    if group != GROUP {
        return Ok(Vec::new());
    }
    match (api_version, kind) {
        ("stash.appscode.com/v1beta1", "BackupConfiguration") => {
            let bc: BackupConfiguration = serde_json::from_value(value.clone())
                .map_err(|e| format!("invalid BackupConfiguration: {e}"))?;
            require_name(&bc)?;
            let unknown = unknown_fields(&value, &bc);
            snapshot.upsert_config(bc);
            Ok(unknown)
        }
        ("stash.appscode.com/v1alpha1", "Repository") => {
            let repo: Repository = serde_json::from_value(value.clone())
                .map_err(|e| format!("invalid Repository: {e}"))?;
            require_name(&repo)?;
            let unknown = unknown_fields(&value, &repo);
            snapshot.upsert_repository(repo);
            Ok(unknown)
        }
        ("stash.appscode.com/v1beta1", "RestoreSession") => {
            let rs: RestoreSession = serde_json::from_value(value.clone())
                .map_err(|e| format!("invalid RestoreSession: {e}"))?;
            require_name(&rs)?;
            let unknown = unknown_fields(&value, &rs);
            snapshot.upsert_restore(rs);
            Ok(unknown)
        }
        _ => Ok(Vec::new()),
    }
}

fn require_name<K: kube::Resource>(obj: &K) -> Result<(), String> {
    match obj.meta().name.as_deref() {
        Some(n) if !n.is_empty() => Ok(()),
        _ => Err("metadata.name is missing".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_document_does_not_poison_the_rest() {
        let text = r#"
apiVersion: stash.appscode.com/v1alpha1
kind: Repository
metadata: {name: r, namespace: demo}
spec: {backend: {gcs: {bucket: b}, storageSecretName: s}}
---
apiVersion: stash.appscode.com/v1beta1
kind: BackupConfiguration
metadata: {name: broken, namespace: demo}
spec: {paused: "yes please"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
---
apiVersion: stash.appscode.com/v1beta1
kind: BackupConfiguration
metadata: {name: ok, namespace: demo}
spec: {schedule: "* * * * *", repository: {name: r}}
"#;
        let mut loaded = Loaded::default();
        load_text(Path::new("x.yaml"), text, &mut loaded);
        assert!(loaded.snapshot.repository("demo", "r").is_some());
        assert!(loaded.snapshot.config("demo", "ok").is_some());
        assert!(loaded.snapshot.config("demo", "broken").is_none());
        assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
        let p = loaded.problems[0].to_string();
        assert!(
            p.starts_with("x.yaml: document 2: invalid BackupConfiguration"),
            "{p}"
        );
    }

    #[test]
    fn deep_or_alias_bombed_files_are_refused_at_once() {
        let deep = format!("a: {}{}\n", "[".repeat(30_000), "]".repeat(30_000));
        let started = std::time::Instant::now();
        let mut loaded = Loaded::default();
        load_text(Path::new("deep.yaml"), &deep, &mut loaded);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(loaded.problems.len(), 1);
        assert_eq!(
            loaded.problems[0].to_string(),
            "deep.yaml: document 1 (line 1): nesting deeper than 64 levels; the file was not read"
        );
        let bomb = "a: &a [x, x]\nb: &b [*a, *a]\n";
        let mut loaded = Loaded::default();
        load_text(Path::new("bomb.yaml"), bomb, &mut loaded);
        assert!(
            loaded.problems[0]
                .message
                .contains("alias *a inside an anchored node"),
            "{:?}",
            loaded.problems
        );
    }

    #[test]
    fn a_syntax_error_is_reported_with_its_line() {
        let text = "apiVersion: v1\nkind: [unclosed\n";
        let mut loaded = Loaded::default();
        load_text(Path::new("bad.yaml"), text, &mut loaded);
        assert_eq!(loaded.problems.len(), 1);
        assert!(loaded.problems[0].line.is_some(), "{:?}", loaded.problems);
    }
}
