//! What the reconciler wants, decided without the API server: the desired
//! objects and conditions of a BackupConfiguration (`desired`), a session's
//! deadlines (`deadline`) and phase changes (`transition`), and the memory of
//! the controller's own writes (`own_writes`). The controllers in the `stash`
//! crate read the cluster, call these, and write the answer.

pub mod deadline;
pub mod desired;
pub mod own_writes;
pub mod transition;
