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
    /// Not strict JSON: a syntax error, a float, a duplicate key, nesting
    /// too deep.
    #[error(transparent)]
    Parse(#[from] canonical::ParseError),
    /// A document being signed has no canonical encoding (a float).
    #[error(transparent)]
    Encode(#[from] canonical::EncodeError),
    /// Not an envelope: not an object, `signed` or `signatures` missing or
    /// of the wrong type, an extra field, more than [`MAX_SIGNATURES`]
    /// signatures.
    #[error("malformed envelope: {0}")]
    Shape(String),
    /// `signed` does not deserialise as the role (a missing or unknown
    /// field, a wrong type); `reason` is serde's message.
    #[error("{role} metadata does not match its schema: {reason}")]
    Decode {
        /// The role it was read as.
        role: RoleType,
        /// What did not match.
        reason: String,
    },
    /// `signed` has the role's shape but breaks one of its rules (version
    /// 0, an unsupported `spec_version`, a key id that is not the key's
    /// hash, a threshold of 0 or above the keys listed, a target path that
    /// escapes `targets/`, …).
    #[error("{role} metadata is invalid: {reason}")]
    Invalid {
        /// The role.
        role: RoleType,
        /// Which rule.
        reason: String,
    },
    /// The document is of another role than expected (its `_type`, or the
    /// keyring it was checked against): a role swapped for another.
    #[error("expected {expected} metadata, found {found}")]
    WrongType {
        /// The role the caller asked for.
        expected: RoleType,
        /// The role the document or keyring is for.
        found: RoleType,
    },
    /// Fewer distinct keys of the role signed than its threshold (each key
    /// counts once, however often it signed).
    #[error("{role} metadata has {valid} valid signature(s) from its keys; {threshold} required")]
    Threshold {
        /// The role whose keys were counted.
        role: RoleType,
        /// Distinct keys of the role with a valid signature.
        valid: usize,
        /// Signatures the trusted root requires for the role.
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
