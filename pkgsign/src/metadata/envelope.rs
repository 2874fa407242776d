//! The signed envelope `{"signatures":[…],"signed":{…}}`: parsing, signing
//! and threshold checks.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::roles::{Keyring, Role, RoleType};
use super::MetadataError;
use crate::canonical;
use crate::keys::{KeyId, SecretKey, SIGNATURE_LEN};

/// One signature: key id and hex signature over the canonical `signed` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    /// The key that claims to have signed; signatures by keys the role does
    /// not list are ignored, never counted.
    pub keyid: KeyId,
    /// The ed25519 signature as 128 hex digits; anything else simply does
    /// not count (it is not an error, so one bad entry cannot veto others).
    pub sig: String,
}

/// A parsed, not yet trusted document.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The signatures as given, at most [`MAX_SIGNATURES`]; none is checked yet.
    pub signatures: Vec<SignatureEntry>,
    /// The `signed` value, exactly as parsed.
    pub signed: Value,
    /// Its canonical encoding: the bytes the signatures cover.
    signed_bytes: Vec<u8>,
}

/// At most this many signatures are looked at; more is an error (keeps the
/// work an attacker can cause bounded).
pub const MAX_SIGNATURES: usize = 256;

impl Envelope {
    /// Parses a document's bytes (strict canonical-JSON parser).
    pub fn parse(bytes: &[u8]) -> Result<Envelope, MetadataError> {
        let value = canonical::parse(bytes)?;
        let Value::Object(mut map) = value else {
            return Err(MetadataError::Shape("document is not a JSON object".into()));
        };
        let signed = map
            .remove("signed")
            .ok_or_else(|| MetadataError::Shape("missing \"signed\"".into()))?;
        let signatures = map
            .remove("signatures")
            .ok_or_else(|| MetadataError::Shape("missing \"signatures\"".into()))?;
        if let Some(extra) = map.keys().next() {
            return Err(MetadataError::Shape(format!(
                "unexpected field {extra:?} in envelope"
            )));
        }
        let signatures: Vec<SignatureEntry> = serde_json::from_value(signatures)
            .map_err(|e| MetadataError::Shape(format!("signatures: {e}")))?;
        if signatures.len() > MAX_SIGNATURES {
            return Err(MetadataError::Shape(format!(
                "more than {MAX_SIGNATURES} signatures"
            )));
        }
        if !signed.is_object() {
            return Err(MetadataError::Shape("\"signed\" is not an object".into()));
        }
        let signed_bytes = canonical::encode(&signed)?;
        Ok(Envelope {
            signatures,
            signed,
            signed_bytes,
        })
    }

    /// The canonical bytes of `signed`.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed_bytes
    }

    /// The `_type` the document claims (untrusted until verified).
    pub fn claimed_type(&self) -> Option<RoleType> {
        self.signed
            .get("_type")
            .and_then(|t| serde_json::from_value(t.clone()).ok())
    }

    /// Key ids of `keyring` with a valid signature. Each key counts once,
    /// however many times it signed; signatures by keys outside the keyring
    /// are not even checked.
    pub fn valid_signers(&self, keyring: &Keyring) -> BTreeSet<KeyId> {
        let mut valid = BTreeSet::new();
        for entry in &self.signatures {
            if valid.contains(&entry.keyid) {
                continue;
            }
            let Some(key) = keyring.keys.get(&entry.keyid) else {
                continue;
            };
            let Ok(sig) = hex::decode(&entry.sig) else {
                continue;
            };
            if sig.len() == SIGNATURE_LEN && key.verify(&self.signed_bytes, &sig).is_ok() {
                valid.insert(entry.keyid);
            }
        }
        valid
    }

    /// Fails unless at least `keyring.threshold` distinct keys of the role signed.
    pub fn check_threshold(&self, keyring: &Keyring) -> Result<(), MetadataError> {
        let valid = self.valid_signers(keyring).len();
        if valid < keyring.threshold as usize {
            return Err(MetadataError::Threshold {
                role: keyring.role,
                valid,
                threshold: keyring.threshold,
            });
        }
        Ok(())
    }

    /// Interprets `signed` as role `T` and validates it. Does not check
    /// signatures: call [`Envelope::check_threshold`] first, or use
    /// [`Envelope::verify`].
    pub fn decode<T: Role>(&self) -> Result<T, MetadataError> {
        match self.claimed_type() {
            Some(found) if found != T::TYPE => {
                return Err(MetadataError::WrongType {
                    expected: T::TYPE,
                    found,
                })
            }
            _ => {}
        }
        let doc: T = T::deserialize(&self.signed).map_err(|e| MetadataError::Decode {
            role: T::TYPE,
            reason: e.to_string(),
        })?;
        doc.validate()?;
        Ok(doc)
    }

    /// Threshold check with `keyring`, then [`Envelope::decode`].
    pub fn verify<T: Role>(&self, keyring: &Keyring) -> Result<T, MetadataError> {
        if keyring.role != T::TYPE {
            return Err(MetadataError::WrongType {
                expected: T::TYPE,
                found: keyring.role,
            });
        }
        self.check_threshold(keyring)?;
        self.decode()
    }
}

/// Encodes `doc` and signs it with each of `keys` (duplicates signed once),
/// returning the document's bytes: the canonical JSON of the whole envelope.
pub fn sign_document<T: Role>(doc: &T, keys: &[&SecretKey]) -> Result<Vec<u8>, MetadataError> {
    let signed = serde_json::to_value(doc).map_err(|e| MetadataError::Shape(e.to_string()))?;
    let signed_bytes = canonical::encode(&signed)?;
    let mut signatures: Vec<SignatureEntry> = Vec::new();
    for key in keys {
        if signatures.iter().any(|s| s.keyid == *key.id()) {
            continue;
        }
        signatures.push(SignatureEntry {
            keyid: *key.id(),
            sig: hex::encode(key.sign(&signed_bytes)),
        });
    }
    signatures.sort_by_key(|s| s.keyid);
    let envelope = serde_json::json!({ "signatures": signatures, "signed": signed });
    Ok(canonical::encode(&envelope)?)
}

/// Adds signatures by `keys` to an existing document (for roots signed by
/// several holders in turn). The `signed` part is kept byte for byte.
pub fn add_signatures(document: &[u8], keys: &[&SecretKey]) -> Result<Vec<u8>, MetadataError> {
    let mut envelope = Envelope::parse(document)?;
    for key in keys {
        envelope.signatures.retain(|s| s.keyid != *key.id());
        envelope.signatures.push(SignatureEntry {
            keyid: *key.id(),
            sig: hex::encode(key.sign(&envelope.signed_bytes)),
        });
    }
    envelope.signatures.sort_by_key(|s| s.keyid);
    let value = serde_json::json!({ "signatures": envelope.signatures, "signed": envelope.signed });
    Ok(canonical::encode(&value)?)
}
