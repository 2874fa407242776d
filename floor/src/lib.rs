//! The floor every crate of the workspace stands on: the few basics that
//! the node and the server sides both need and that must behave the same
//! everywhere.
//!
//! - [`time`]: [`Timestamp`], the one point-in-time type (RFC 3339 UTC text,
//!   whole seconds) used on the wire, in files and in signed metadata.
//! - [`report`]: [`report::one_line`], an error and its causes on one line,
//!   each cause once, for every command-line tool.
//! - [`durable`]: writing files so that a crash at any instant leaves the
//!   old or the new content ([`durable::write_atomic`]), directory syncs that
//!   report failure, and clean-up of temporary files a crash left behind.
//!
//! - [`journal`]: a size-capped file of one-line records that several
//!   processes append to and others follow (the node's event journal).
//! - [`kmod`]: the kernel's module index (`modules.dep`, `.alias`, `.softdep`,
//!   `.builtin`), parsed one way for the image builder and the node's modprobe.
//!
//! - [`cgroup`]: where the cgroup v2 hierarchy is mounted, and a scratch
//!   group of one's own that takes its processes along when dropped (for
//!   tests, benchmarks and benches).
//!
//! This crate has no knowledge of the project's formats; it depends on
//! nothing of ours, so `config`, `pkgsign` and everything above can use it
//! without reaching across the architecture.

#![warn(missing_docs)]

pub mod cgroup;
pub mod durable;
pub mod journal;
pub mod kmod;
pub mod report;
pub mod time;

pub use time::Timestamp;
