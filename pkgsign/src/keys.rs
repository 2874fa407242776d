//! ed25519 keys: generation, PEM files on disk, signing and verification.
//!
//! Secret keys are stored as PKCS#8 PEM (mode 0600) and public keys as SPKI
//! PEM in `NAME.pub`, so `openssl pkey` reads both. A key is named by its
//! [`KeyId`]: the hex SHA-256 of the raw 32-byte public key.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::{DecodePublicKey, EncodePublicKey};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Length of an ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// Errors about keys and key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A new key file would replace an existing one; key files are never
    /// overwritten (a lost release key cannot be recovered).
    #[error("{path}: already exists; refusing to overwrite a key file")]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// The file is not a PKCS#8 PEM ed25519 secret key (wrong format, wrong
    /// algorithm, or a public key).
    #[error("{path}: not a PKCS#8 PEM ed25519 secret key")]
    BadSecretPem {
        /// The file.
        path: PathBuf,
    },
    /// The file is neither an SPKI PEM ed25519 public key nor (where
    /// accepted) a secret key to derive one from.
    #[error("{path}: not an SPKI PEM ed25519 public key")]
    BadPublicPem {
        /// The file.
        path: PathBuf,
    },
    /// 32 bytes that are not a usable ed25519 public key (not a curve point,
    /// or a small-order point that would accept forged signatures), or text
    /// that is not 64 lowercase hex digits.
    #[error("not an ed25519 public key: {0}")]
    BadPublicKey(String),
    /// A key id that is not 64 lowercase hex digits.
    #[error("invalid key id {0:?}: expected 64 lowercase hex digits")]
    BadKeyId(String),
    /// A signature that is not 64 bytes (128 hex digits).
    #[error("bad signature encoding: expected 128 hex digits")]
    BadSignatureEncoding,
    /// The signature is well formed but not valid for this key and message
    /// (strict ed25519: non-canonical encodings are refused too).
    #[error("signature does not verify")]
    BadSignature,
    /// The operating system's random generator failed; no key was made.
    #[error("system random generator failed: {0}")]
    Random(String),
    /// Encoding a key as PEM failed (the encoder's message).
    #[error("encoding key as PEM failed: {0}")]
    Encode(String),
}

/// A key id: SHA-256 of the raw 32-byte ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; 32]);

impl KeyId {
    /// The key id of a raw public key.
    pub fn of_public_bytes(public: &[u8; 32]) -> Self {
        KeyId(Sha256::digest(public).into())
    }

    /// The 32 bytes of the SHA-256.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// First 8 hex digits, for messages.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self)
    }
}

impl FromStr for KeyId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Ok(KeyId(
            parse_lower_hex32(s).ok_or_else(|| KeyError::BadKeyId(s.to_string()))?,
        ))
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses exactly 64 lowercase hex digits (the only spelling we sign, so one
/// value has one encoding).
pub(crate) fn parse_lower_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// An ed25519 public key together with its id.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

impl PublicKey {
    /// From the raw 32-byte encoding. Rejects points that are not valid keys
    /// and weak (small-order) keys, which would make forged signatures easy.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key =
            VerifyingKey::from_bytes(bytes).map_err(|e| KeyError::BadPublicKey(e.to_string()))?;
        if key.is_weak() {
            return Err(KeyError::BadPublicKey("weak (small-order) key".into()));
        }
        Ok(PublicKey {
            key,
            id: KeyId::of_public_bytes(bytes),
        })
    }

    /// From 64 lowercase hex digits (the metadata's `keyval.public`).
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let bytes = parse_lower_hex32(s).ok_or_else(|| {
            KeyError::BadPublicKey(format!("{s:?} is not 64 lowercase hex digits"))
        })?;
        Self::from_bytes(&bytes)
    }

    /// The 64 lowercase hex digits of the raw key (the metadata's
    /// `keyval.public`); [`PublicKey::from_hex`] reads it back.
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// The raw 32-byte ed25519 public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// The key's id, hex(sha256(raw key)), as metadata names it.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// From SPKI PEM text.
    pub fn from_pem(pem: &str) -> Option<Self> {
        let key = VerifyingKey::from_public_key_pem(pem).ok()?;
        Self::from_bytes(key.as_bytes()).ok()
    }

    /// Loads an SPKI PEM file (`NAME.pub`).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_pem(&text).ok_or_else(|| KeyError::BadPublicPem { path: path.into() })
    }

    /// Loads a public key file, or derives the public key from a secret key
    /// file, whichever `path` holds.
    pub fn load_public_or_secret(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.into(),
            source,
        })?;
        if let Some(key) = Self::from_pem(&text) {
            return Ok(key);
        }
        match SecretKey::from_pem(&text) {
            Some(secret) => Ok(secret.public().clone()),
            None => Err(KeyError::BadPublicPem { path: path.into() }),
        }
    }

    /// SPKI PEM text (what `NAME.pub` holds and `openssl pkey -pubin` reads).
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))
    }

    /// Verifies a signature over `message` (strict: rejects malleable encodings).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        let bytes: &[u8; SIGNATURE_LEN] = signature
            .try_into()
            .map_err(|_| KeyError::BadSignatureEncoding)?;
        let sig = Signature::from_bytes(bytes);
        self.key
            .verify_strict(message, &sig)
            .map_err(|_| KeyError::BadSignature)
    }
}

/// An ed25519 secret key.
pub struct SecretKey {
    key: SigningKey,
    public: PublicKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public.id)
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Self::from_signing_key(key)
    }

    fn from_signing_key(key: SigningKey) -> Result<Self, KeyError> {
        let public = PublicKey::from_bytes(key.verifying_key().as_bytes())?;
        Ok(SecretKey { key, public })
    }

    /// From PKCS#8 PEM text.
    pub fn from_pem(pem: &str) -> Option<Self> {
        let key = SigningKey::from_pkcs8_pem(pem).ok()?;
        Self::from_signing_key(key).ok()
    }

    /// Loads a PKCS#8 PEM secret key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_pem(&text).ok_or_else(|| KeyError::BadSecretPem { path: path.into() })
    }

    /// PKCS#8 PEM text of the secret key. The text is the secret: write it
    /// only to a file of mode 0600 ([`SecretKey::save_new`] does).
    pub fn to_pem(&self) -> Result<String, KeyError> {
        // PKCS#8 v1 (seed only): OpenSSL 3.0 does not read the v2 form
        // that also embeds the public key.
        let bytes = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        };
        bytes
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.as_str().to_owned())
            .map_err(|e| KeyError::Encode(e.to_string()))
    }

    /// The matching public key.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The id of the matching public key.
    pub fn id(&self) -> &KeyId {
        &self.public.id
    }

    /// The ed25519 signature of `message` (deterministic: the same key and
    /// message always give the same signature).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        use ed25519_dalek::Signer;
        self.key.sign(message).to_bytes()
    }

    /// Writes this key to `path` (PKCS#8 PEM, mode 0600) without ever
    /// replacing an existing file: the key is written to a temporary file and
    /// hard-linked into place, which fails if `path` exists.
    pub fn save_new(&self, path: &Path) -> Result<(), KeyError> {
        write_new_file(path, self.to_pem()?.as_bytes(), 0o600)
    }
}

/// Generates a key pair and writes `out` (secret) and `out.pub` (public).
/// Refuses if either file exists; on failure neither file is left behind.
pub fn generate_key_files(out: &Path) -> Result<SecretKey, KeyError> {
    let public_path = public_key_path(out);
    for path in [out, public_path.as_path()] {
        if path.symlink_metadata().is_ok() {
            return Err(KeyError::Exists { path: path.into() });
        }
    }
    let secret = SecretKey::generate()?;
    secret.save_new(out)?;
    if let Err(e) = write_new_file(&public_path, secret.public().to_pem()?.as_bytes(), 0o644) {
        let _ = fs::remove_file(out);
        return Err(e);
    }
    Ok(secret)
}

/// `NAME` → `NAME.pub`.
pub fn public_key_path(secret_path: &Path) -> PathBuf {
    let mut name = secret_path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    floor::durable::write_new(path, contents, mode).map_err(|e| match e.op {
        floor::durable::Op::Exists => KeyError::Exists { path: path.into() },
        _ => KeyError::Io {
            path: path.into(),
            source: e.into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_pem_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let secret = generate_key_files(&path).unwrap();
        let loaded = SecretKey::load(&path).unwrap();
        let public = PublicKey::load(&public_key_path(&path)).unwrap();
        assert_eq!(loaded.id(), secret.id());
        assert_eq!(public.id(), secret.id());
        let sig = loaded.sign(b"hello");
        public.verify(b"hello", &sig).unwrap();
        assert!(public.verify(b"hellO", &sig).is_err());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(
            generate_key_files(&path),
            Err(KeyError::Exists { .. })
        ));
        assert_eq!(SecretKey::load(&path).unwrap().id(), secret.id());
    }

    #[test]
    fn key_id_is_hash_of_raw_public_key() {
        let secret = SecretKey::generate().unwrap();
        let expected = hex::encode(Sha256::digest(secret.public().as_bytes()));
        assert_eq!(secret.id().to_string(), expected);
        assert_eq!(expected.parse::<KeyId>().unwrap(), *secret.id());
        assert!(expected.to_uppercase().parse::<KeyId>().is_err());
    }
}
