//! The six admission decisions and their wire format.
//!
//! `handle` is the whole webhook minus the socket: bytes of an AdmissionReview
//! in, bytes of the answer out. The server and `stash review` both call it, so
//! what `review` prints is byte for byte what `serve` answers.
//!
//! Each endpoint's rule lives in its own module as a pure function from
//! (request, store snapshot, settings) to a [`Decision`]; this module only
//! parses, dispatches and serializes.

pub mod backupconfigurations;
pub mod backupsessions;
pub mod cron;
pub mod read;
pub mod repositories;
pub mod restoresessions;
pub mod validate;
pub mod view;
pub mod wire;
pub mod workloads;

use std::fmt;

pub use wire::{Answer, Decision, Object, Request, ReviewError};

use crate::settings::Settings;
use crate::store::Snapshot;

/// One webhook endpoint of docs/design.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    MutateWorkloads,
    MutateBackupSessions,
    ValidateBackupSessions,
    ValidateBackupConfigurations,
    ValidateRepositories,
    ValidateRestoreSessions,
}

impl Endpoint {
    /// Every endpoint, in the order of docs/design.md's table.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::MutateWorkloads,
        Endpoint::MutateBackupSessions,
        Endpoint::ValidateBackupSessions,
        Endpoint::ValidateBackupConfigurations,
        Endpoint::ValidateRepositories,
        Endpoint::ValidateRestoreSessions,
    ];

    /// The URL path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::MutateWorkloads => "/mutate/workloads",
            Endpoint::MutateBackupSessions => "/mutate/backupsessions",
            Endpoint::ValidateBackupSessions => "/validate/backupsessions",
            Endpoint::ValidateBackupConfigurations => "/validate/backupconfigurations",
            Endpoint::ValidateRepositories => "/validate/repositories",
            Endpoint::ValidateRestoreSessions => "/validate/restoresessions",
        }
    }

    /// The endpoint serving `path`, if any.
    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.path() == path)
    }

    /// A short label for metrics and logs (`mutate-workloads`).
    pub fn label(self) -> &'static str {
        &self.path()[1..]
    }

    /// Whether this endpoint may return a patch.
    pub fn is_mutating(self) -> bool {
        matches!(
            self,
            Endpoint::MutateWorkloads | Endpoint::MutateBackupSessions
        )
    }

    /// The endpoints the API server would call for an object of this
    /// group/kind, mutating first: what `stash review` chains by default.
    pub fn for_kind(group: &str, kind: &str) -> Vec<Endpoint> {
        match (group, kind) {
            ("apps", k) if crate::api::WORKLOAD_KINDS.contains(&k) => {
                vec![Endpoint::MutateWorkloads]
            }
            ("stash.appscode.com", "BackupSession") => {
                vec![
                    Endpoint::MutateBackupSessions,
                    Endpoint::ValidateBackupSessions,
                ]
            }
            ("stash.appscode.com", "BackupConfiguration") => {
                vec![Endpoint::ValidateBackupConfigurations]
            }
            ("stash.appscode.com", "Repository") => vec![Endpoint::ValidateRepositories],
            ("stash.appscode.com", "RestoreSession") => vec![Endpoint::ValidateRestoreSessions],
            _ => Vec::new(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// Runs one endpoint's rule on a parsed request.
pub fn decide(endpoint: Endpoint, req: &Request, snap: &Snapshot, settings: &Settings) -> Decision {
    match endpoint {
        Endpoint::MutateWorkloads => workloads::mutate(req, snap, settings),
        Endpoint::MutateBackupSessions => backupsessions::mutate(req, snap, settings),
        Endpoint::ValidateBackupSessions => backupsessions::validate(req, snap, settings),
        Endpoint::ValidateBackupConfigurations => {
            backupconfigurations::validate(req, snap, settings)
        }
        Endpoint::ValidateRepositories => repositories::validate(req, snap, settings),
        Endpoint::ValidateRestoreSessions => restoresessions::validate(req, snap, settings),
    }
}

/// The whole webhook minus the socket: an AdmissionReview's bytes in, the
/// answer's bytes out. Errors are bodies that are not an AdmissionReview, or
/// (never in practice) an answer that does not serialize.
pub fn handle(
    endpoint: Endpoint,
    body: &[u8],
    snap: &Snapshot,
    settings: &Settings,
) -> Result<Answer, ReviewError> {
    let (api_version, req) = wire::parse(body)?;
    let decision = decide(endpoint, &req, snap, settings);
    Ok(wire::answer(&api_version, &req, decision))
}
