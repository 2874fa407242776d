//! Signed repository metadata: the four roles and the envelope. Expiry
//! times are the workspace's one time type, [`floor::Timestamp`].
//!
//! A document is parsed with the strict canonical-JSON parser
//! ([`crate::canonical`]); the `signed` value is re-encoded canonically and
//! the signatures are checked over those bytes; then that same value is
//! interpreted as a role. What is interpreted is exactly what was signed.

mod envelope;
mod roles;

pub use envelope::{add_signatures, sign_document, Envelope, SignatureEntry, MAX_SIGNATURES};
pub use floor::time::{parse_expiry, TimeError};
pub use roles::{
    valid_name, valid_target_path, Hashes, KeyEntry, KeyValue, Keyring, MetaInfo, Role, RoleKeys,
    RoleType, Root, Sha256Digest, Snapshot, SnapshotMeta, TargetInfo, Targets, Timestamp,
    TimestampMeta, SPEC_VERSION,
};

use crate::canonical;

/// Why a document is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error(transparent)]
    Parse(#[from] canonical::ParseError),
    #[error(transparent)]
    Encode(#[from] canonical::EncodeError),
    #[error("malformed envelope: {0}")]
    Shape(String),
    #[error("{role} metadata does not match its schema: {reason}")]
    Decode { role: RoleType, reason: String },
    #[error("{role} metadata is invalid: {reason}")]
    Invalid { role: RoleType, reason: String },
    #[error("expected {expected} metadata, found {found}")]
    WrongType { expected: RoleType, found: RoleType },
    #[error("{role} metadata has {valid} valid signature(s) from its keys; {threshold} required")]
    Threshold {
        role: RoleType,
        valid: usize,
        threshold: u32,
    },
}

impl MetadataError {
    pub(crate) fn invalid(role: RoleType, reason: impl Into<String>) -> Self {
        MetadataError::Invalid {
            role,
            reason: reason.into(),
        }
    }
}

/// Parses and decodes a document of role `T` without checking signatures
/// (for inspection tools and fuzzing; never trust the result).
pub fn parse_unverified<T: Role>(bytes: &[u8]) -> Result<(Envelope, T), MetadataError> {
    let envelope = Envelope::parse(bytes)?;
    let doc = envelope.decode()?;
    Ok((envelope, doc))
}
