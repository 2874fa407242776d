//! Keys, signed repository metadata, verification and safe package installation.
//!
//! See DESIGN.md §1 for the repository format. The public API:
//!
//! - [`keys`]: [`keys::SecretKey`] (generate, `save_new` as PKCS#8 PEM 0600,
//!   `load`, `sign`), [`keys::PublicKey`] (SPKI PEM `NAME.pub`, `load`,
//!   `verify`), [`keys::KeyId`] = hex(sha256(raw public key)),
//!   [`keys::generate_key_files`].
//! - [`canonical`]: the canonical JSON encoder and strict parser.
//! - [`metadata`]: the roles ([`metadata::Root`], [`metadata::Targets`],
//!   [`metadata::Snapshot`], [`metadata::Timestamp`]), [`metadata::TargetInfo`],
//!   the envelope ([`metadata::Envelope`], [`metadata::sign_document`]),
//!   and [`metadata::parse_expiry`] (`30d`, `12h`, RFC 3339) giving a
//!   [`floor::Timestamp`].
//! - [`repo`] (staff side): [`repo::Repository`] `init`, `add_package`,
//!   `publish`, `refresh_timestamp`, `rotate_root`, `show`.
//! - [`fetch`]: the [`fetch::Fetcher`] trait with [`fetch::DirFetcher`] and
//!   [`fetch::HttpFetcher`] (retries with backoff, minimum rate, resume with
//!   `Range` + `If-Range`).
//! - [`net`]: [`net::build_client`] (trusts only the given CA, timeouts,
//!   proxy, clock floor) and [`net::explain`] / [`net::explain_chain`]
//!   (one readable reason with a [`net::FailureKind`]).
//! - [`verify`]: [`verify::Verifier`] (`open`, `check` + `commit`, or
//!   `update`) producing a [`verify::VerifiedRepo`] whose
//!   [`verify::VerifiedPackage`]s are what [`install::install`] takes.
//! - [`install`]: [`install::install`] into a directory (atomic), with a
//!   [`install::Manifest`] of what was written and [`install::verify_tree`]
//!   to check a tree against it later; [`install::extract_tar`] for the bare
//!   safe extractor.
//! - [`verified`]: [`verified::VerifiedReader`], the one path for bytes
//!   that signed metadata vouches for (length and SHA-256 checked at the
//!   end of the stream, no byte past the signed length).
//! - [`cache`]: [`cache::PackageCache`], a directory of verified packages
//!   that downloads resume into (`Range` + `If-Range`).
//! - [`detached`]: detached signatures over a reader or a file (ISO images).

#![warn(missing_docs)]

pub mod cache;
pub mod canonical;
pub mod detached;
pub mod fetch;
pub mod install;
pub mod keys;
pub mod metadata;
pub mod net;
pub mod repo;
pub mod verified;
pub mod verify;

pub use keys::{KeyId, PublicKey, SecretKey};
pub use metadata::{RoleType, TargetInfo};
pub use verify::{VerifiedPackage, VerifiedRepo, Verifier};
