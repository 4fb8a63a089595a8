//! `stash serve` over real sockets on 127.0.0.1: TLS and both HTTP versions
//! (`tls`), bad and hostile input (`inputs`, `hardening`), certificate
//! reload (`reload`), signals (`signal`) and the drain (`drain`).
//!
//! One test binary per topic (each binary is a link on a small machine);
//! the shared fake cluster and helpers are the `stash-testkit` crate
//! (`tests/support`).

mod drain;
mod hardening;
mod inputs;
mod process;
mod reload;
mod signal;
mod tls;
