//! The processes, assembled: each subcommand whose process is more than one
//! call puts its pieces together here, on top of every other module
//! (nothing below imports `cmd`).

pub mod serve;
