//! The boot server: node registry, authenticated check-in, boot states,
//! repository, status page (docs/DESIGN.md §2).
//!
//! - [`workdir`]: the working directory (`bootserver init`): config, TLS
//!   identity ([`pki`]), the SQLite registry ([`db`]), published repository
//!   snapshots ([`repo_store`]).
//! - [`registry`]: sites, nodes, slices and logs as typed values ([`model`]);
//!   the admin API and the status page read and change them through it.
//! - [`server`]: HTTPS with rustls; the node API authenticates every request
//!   (`config::api::auth`), refuses stale and replayed ones ([`replay`]) and
//!   stores reports through one group-committing writer ([`writer`]).
//! - [`admin`]: the admin API, one typed call per `bootserver` subcommand
//!   (the command line in `src/bin/bootserver` prints what they return; the
//!   QEMU harness and the benchmarks call them in-process).
//! - [`publish`]: `repo publish`, verifying a pkgsign repository before it
//!   is served; [`rollout`]: a published release goes out in waves.

pub mod admin;
pub mod db;
pub mod input;
pub mod model;
pub mod overview;
pub mod pki;
pub mod publish;
pub mod registry;
pub mod replay;
pub mod repo_store;
pub mod rollout;
pub mod server;
pub mod workdir;
pub mod writer;
