//! Why `restic backup` could not read a file, in words a user can act on.
//!
//! restic 0.14 reports an unreadable file or directory on stderr as
//! `{"message_type":"error","error":{},"during":"scan","item":"…"}`: the Go
//! error serializes as `{}`, so restic's own reason is lost, and a session
//! that failed for it said `"error":{}`. The sidecar runs in the same
//! container as restic and sees the same paths, so it looks at the item
//! itself (`lstat`, then opening it as restic would) and reports the item's
//! owner and mode, the OS's words and who the sidecar runs as, with the
//! setting that fixes it. [`probe`] is the I/O; [`describe`] the line.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::restic::ItemError;

/// An item's owner and permission bits, as `lstat` saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// The permission bits (`mode & 0o7777`).
    pub mode: u32,
}

/// What the sidecar itself sees of an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `None` when even `lstat` failed (its parent cannot be searched).
    pub owner: Option<Owner>,
    /// The OS's words for why opening it failed (`permission denied`);
    /// `None` when the sidecar can open it now.
    pub reason: Option<String>,
}

/// Looks at `path` as this process: `lstat`, then `read_dir` of a directory
/// or `open` of a file.
pub fn probe(path: &Path) -> Seen {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return Seen {
                owner: None,
                reason: Some(os_words(&e)),
            };
        }
    };
    let owner = Some(Owner {
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode() & 0o7777,
    });
    let opened = if meta.is_dir() {
        std::fs::read_dir(path).map(drop)
    } else if meta.is_file() {
        std::fs::File::open(path).map(drop)
    } else {
        Ok(())
    };
    Seen {
        owner,
        reason: opened.err().map(|e| os_words(&e)),
    }
}

/// An I/O error as the OS words it, lower case, without `(os error N)`.
fn os_words(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "unknown error".to_string(),
    }
}

/// The host's one-line error for the first unreadable item, `seen` by the
/// sidecar running as `euid`; `others` more items failed too. `config` is
/// `demo/x`, the BackupConfiguration whose runtimeSettings would fix it.
pub fn describe(item: &ItemError, seen: &Seen, others: usize, euid: u32, config: &str) -> String {
    let owner = seen.owner.map_or_else(String::new, |o| {
        format!(" (owner {}:{}, mode {:04o})", o.uid, o.gid, o.mode)
    });
    let reason = item
        .message
        .clone()
        .or_else(|| seen.reason.clone())
        .unwrap_or_else(|| "restic gave no reason and the sidecar can read it now".to_string());
    let during = if item.during.is_empty() {
        String::new()
    } else {
        format!(" during {}", item.during)
    };
    let more = match others {
        0 => String::new(),
        1 => ", and 1 more path".to_string(),
        n => format!(", and {n} more paths"),
    };
    let user = match seen.owner {
        Some(o) if o.uid != euid => o.uid.to_string(),
        _ => "<the files' owner>".to_string(),
    };
    format!(
        "restic backup could not read {}{owner}{during}: {reason}{more}; the sidecar runs as uid {euid}: set spec.runtimeSettings.container.securityContext.runAsUser: {user} in BackupConfiguration {config}, or let the workload declare its user",
        item.item
    )
}

/// [`describe`] of the first of `items`, probed as this process; `None`
/// when there are none.
pub fn report(items: &[ItemError], config: &str) -> Option<String> {
    let first = items.first()?;
    let seen = probe(Path::new(&first.item));
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    Some(describe(first, &seen, items.len() - 1, euid, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(message: Option<&str>) -> ItemError {
        ItemError {
            item: "/source/data/pgdata".into(),
            during: "scan".into(),
            message: message.map(String::from),
        }
    }

    #[test]
    fn one_line_names_path_owner_mode_reason_and_the_fix() {
        let seen = Seen {
            owner: Some(Owner {
                uid: 999,
                gid: 999,
                mode: 0o700,
            }),
            reason: Some("permission denied".into()),
        };
        assert_eq!(
            describe(&item(None), &seen, 0, 65532, "demo/x"),
            "restic backup could not read /source/data/pgdata (owner 999:999, mode 0700) during scan: permission denied; the sidecar runs as uid 65532: set spec.runtimeSettings.container.securityContext.runAsUser: 999 in BackupConfiguration demo/x, or let the workload declare its user"
        );
        // restic's own words win; more paths are counted.
        let line = describe(&item(Some("open: EACCES")), &seen, 2, 65532, "demo/x");
        assert!(
            line.contains("during scan: open: EACCES, and 2 more paths; "),
            "{line}"
        );
        // Unknown owner: no owner part, no uid to suggest.
        let unknown = Seen {
            owner: None,
            reason: Some("permission denied".into()),
        };
        let line = describe(&item(None), &unknown, 0, 65532, "demo/x");
        assert!(
            line.starts_with(
                "restic backup could not read /source/data/pgdata during scan: permission denied; "
            ) && line.contains("runAsUser: <the files' owner> in"),
            "{line}"
        );
    }

    #[test]
    fn probe_reports_the_os_words() {
        let dir = tempfile::tempdir().unwrap();
        let seen = probe(&dir.path().join("missing"));
        assert_eq!(seen.owner, None);
        assert_eq!(seen.reason.as_deref(), Some("no such file or directory"));
        let seen = probe(dir.path());
        assert_eq!(seen.reason, None);
        assert!(seen.owner.is_some());
    }
}
