//! Detached signatures over large files (ISO images).
//!
//! The signature covers a domain-separated message naming the length and
//! SHA-256 of the content, so the content is hashed in one streaming pass.
//! The signature file is a small JSON object:
//! `{"keyid":"…","length":N,"sha256":"…","sig":"…"}`.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::canonical;
use crate::keys::{KeyId, PublicKey, SecretKey};
use crate::metadata::Sha256Digest;

/// Largest signature file accepted.
pub const MAX_SIGNATURE_FILE: u64 = 4096;

/// A signature file (`FILE.sig`): the length and hash of the content, and one
/// key's signature over them. Only [`check_signature`](Self::check_signature)
/// makes the fields trustworthy; until then they are what the file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachedSignature {
    /// The key that signed; must be among the verifier's trusted keys.
    pub keyid: KeyId,
    /// SHA-256 of the whole content.
    pub sha256: Sha256Digest,
    /// Length of the content in bytes; a verifier reads at most one byte more.
    pub length: u64,
    /// The ed25519 signature (128 hex digits) over the domain-separated
    /// message naming `length` and `sha256`.
    pub sig: String,
}

/// Why signing or verifying a detached signature failed.
#[derive(Debug, thiserror::Error)]
pub enum DetachedError {
    /// A named file (the content or the signature file) could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// Reading the content stream failed part-way.
    #[error("reading the signed content: {0}")]
    Read(#[source] io::Error),
    /// The signature file is not a valid signature: not canonical-JSON
    /// parsable, an unknown or missing field, `sig` not hex, or larger than
    /// [`MAX_SIGNATURE_FILE`].
    #[error("signature file: {0}")]
    Format(String),
    /// The signing key is not among the trusted keys.
    #[error("signed by key {0}, which is not trusted")]
    UnknownKey(KeyId),
    /// The signature does not verify with the named (trusted) key: the
    /// length or hash in the file was changed, or it was not signed by it.
    #[error("signature does not verify with key {0}")]
    BadSignature(KeyId),
    /// The content is shorter or longer than signed.
    #[error("content is {found} bytes, signature covers {expected}")]
    WrongLength {
        /// The signed length.
        expected: u64,
        /// Bytes read; at most `expected + 1`, since reading stops there.
        found: u64,
    },
    /// The content has the signed length but other bytes.
    #[error("content sha256 {found} differs from the signed {expected}")]
    WrongHash {
        /// The signed hash.
        expected: Sha256Digest,
        /// The hash of what was read.
        found: Sha256Digest,
    },
}

/// The bytes actually signed.
fn message(length: u64, sha256: &Sha256Digest) -> Vec<u8> {
    format!("pkgsign detached signature v1\nlength {length}\nsha256 {sha256}\n").into_bytes()
}

/// Hashes a stream: (length, sha256).
pub fn hash_reader(mut reader: impl Read) -> io::Result<(u64, Sha256Digest)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut length = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        length += n as u64;
    }
    Ok((length, Sha256Digest(hasher.finalize().into())))
}

impl DetachedSignature {
    /// The signature file's bytes: canonical JSON and a newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = canonical::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Parses a signature file strictly (canonical-JSON parser: no duplicate
    /// keys, no floats; no unknown fields). Does not check the signature.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DetachedError> {
        let value = canonical::parse(bytes).map_err(|e| DetachedError::Format(e.to_string()))?;
        serde_json::from_value(value).map_err(|e| DetachedError::Format(e.to_string()))
    }

    /// Reads and parses a signature file of at most [`MAX_SIGNATURE_FILE`]
    /// bytes (a larger one is [`DetachedError::Format`]).
    pub fn load(path: &Path) -> Result<Self, DetachedError> {
        let io_err = |source| DetachedError::Io {
            path: path.into(),
            source,
        };
        let file = fs::File::open(path).map_err(io_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_SIGNATURE_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
        if bytes.len() as u64 > MAX_SIGNATURE_FILE {
            return Err(DetachedError::Format(format!(
                "{} is larger than {MAX_SIGNATURE_FILE} bytes",
                path.display()
            )));
        }
        Self::from_json(&bytes)
    }

    /// Checks the signature itself (not the content) against `trusted` keys.
    pub fn check_signature(&self, trusted: &[PublicKey]) -> Result<(), DetachedError> {
        let key = trusted
            .iter()
            .find(|k| *k.id() == self.keyid)
            .ok_or(DetachedError::UnknownKey(self.keyid))?;
        let sig =
            hex::decode(&self.sig).map_err(|_| DetachedError::Format("sig is not hex".into()))?;
        key.verify(&message(self.length, &self.sha256), &sig)
            .map_err(|_| DetachedError::BadSignature(self.keyid))
    }
}

/// Signs the content of `reader`.
pub fn sign_reader(key: &SecretKey, reader: impl Read) -> Result<DetachedSignature, DetachedError> {
    let (length, sha256) = hash_reader(reader).map_err(DetachedError::Read)?;
    let sig = hex::encode(key.sign(&message(length, &sha256)));
    Ok(DetachedSignature {
        keyid: *key.id(),
        sha256,
        length,
        sig,
    })
}

/// Verifies the content of `reader` against `signature` and `trusted` keys.
pub fn verify_reader(
    signature: &DetachedSignature,
    trusted: &[PublicKey],
    reader: impl Read,
) -> Result<(), DetachedError> {
    signature.check_signature(trusted)?;
    // Read one byte past the signed length at most: endless input fails fast.
    let (length, sha256) = hash_reader(reader.take(signature.length.saturating_add(1)))
        .map_err(DetachedError::Read)?;
    if length != signature.length {
        return Err(DetachedError::WrongLength {
            expected: signature.length,
            found: length,
        });
    }
    if sha256 != signature.sha256 {
        return Err(DetachedError::WrongHash {
            expected: signature.sha256,
            found: sha256,
        });
    }
    Ok(())
}

/// Signs `file`, returning the signature (write it with [`DetachedSignature::to_json`]).
pub fn sign_file(key: &SecretKey, file: &Path) -> Result<DetachedSignature, DetachedError> {
    let reader = fs::File::open(file).map_err(|source| DetachedError::Io {
        path: file.into(),
        source,
    })?;
    sign_reader(key, reader)
}

/// Verifies `file` against the signature file `signature`.
pub fn verify_file(
    file: &Path,
    signature: &Path,
    trusted: &[PublicKey],
) -> Result<(), DetachedError> {
    let signature = DetachedSignature::load(signature)?;
    let reader = fs::File::open(file).map_err(|source| DetachedError::Io {
        path: file.into(),
        source,
    })?;
    verify_reader(&signature, trusted, reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_stream() {
        let key = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let data = vec![7u8; 3 << 20];
        let sig = sign_reader(&key, &data[..]).unwrap();
        let parsed = DetachedSignature::from_json(&sig.to_json()).unwrap();
        verify_reader(&parsed, &[key.public().clone()], &data[..]).unwrap();
        let mut flipped = data.clone();
        flipped[12345] ^= 1;
        assert!(matches!(
            verify_reader(&parsed, &[key.public().clone()], &flipped[..]),
            Err(DetachedError::WrongHash { .. })
        ));
        assert!(matches!(
            verify_reader(&parsed, &[other.public().clone()], &data[..]),
            Err(DetachedError::UnknownKey(_))
        ));
        let mut longer = data.clone();
        longer.push(0);
        assert!(matches!(
            verify_reader(&parsed, &[key.public().clone()], &longer[..]),
            Err(DetachedError::WrongLength { .. })
        ));
    }
}
