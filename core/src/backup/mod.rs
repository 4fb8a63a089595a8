//! The decisions about backups that need no restic and no API server: which
//! BackupSession a sidecar should run next and who this sidecar is.

pub mod host;
pub mod session;
