//! The four roles' signed contents (DESIGN.md §1).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::MetadataError;
use crate::keys::{parse_lower_hex32, KeyId, PublicKey};
use floor::Timestamp as Time;

/// The only `spec_version` we write and accept.
pub const SPEC_VERSION: &str = "1.0";

/// The four roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleType {
    /// Lists the keys of every role (itself included) and their thresholds;
    /// the trust anchor, changed only by a rotation the old root signs.
    Root,
    /// Lists the packages: name → version, length, hash, path.
    Targets,
    /// Pins the targets document's version, length and hash, so a node
    /// cannot be given an older or another targets (mix-and-match).
    Snapshot,
    /// Pins the snapshot; short-lived and re-signed often, so a node notices
    /// when it is kept from new metadata (freeze).
    Timestamp,
}

impl RoleType {
    /// The four roles in the order a root lists them.
    pub const ALL: [RoleType; 4] = [
        RoleType::Root,
        RoleType::Targets,
        RoleType::Snapshot,
        RoleType::Timestamp,
    ];

    /// The `_type` word, also the file name stem (`root.json`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            RoleType::Root => "root",
            RoleType::Targets => "targets",
            RoleType::Snapshot => "snapshot",
            RoleType::Timestamp => "timestamp",
        }
    }
}

impl fmt::Display for RoleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A SHA-256 digest, spelled as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Sha256Digest(sha2::Sha256::digest(bytes).into())
    }

    /// The strong entity tag a repository server gives a file with this
    /// content (`"<hex>"`, quotes included; DESIGN.md §2).
    pub fn etag(&self) -> String {
        format!("\"{}\"", hex::encode(self.0))
    }

    /// From exactly 64 lowercase hex digits (the only spelling metadata
    /// uses, so a hash has one signed form); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        parse_lower_hex32(s).map(Sha256Digest)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Sha256Digest::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not 64 lowercase hex digits"))
        })
    }
}

/// `{"sha256": "<hex>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hashes {
    /// The only hash used; unknown algorithms are refused, not ignored.
    pub sha256: Sha256Digest,
}

/// Common interface of the four roles' signed contents.
pub trait Role: Serialize + DeserializeOwned {
    /// The role's `_type`.
    const TYPE: RoleType;
    /// The document's version (≥ 1 once validated).
    fn version(&self) -> u64;
    /// When the document stops being acceptable.
    fn expires(&self) -> Time;
    /// Checks of the contents beyond what parsing checks (spec version,
    /// version ≥ 1, names and paths, key sets).
    fn validate(&self) -> Result<(), MetadataError>;
}

fn check_common(
    role: RoleType,
    found: RoleType,
    spec_version: &str,
    version: u64,
) -> Result<(), MetadataError> {
    if found != role {
        return Err(MetadataError::WrongType {
            expected: role,
            found,
        });
    }
    if spec_version != SPEC_VERSION {
        return Err(MetadataError::invalid(
            role,
            format!("unsupported spec_version {spec_version:?}"),
        ));
    }
    if version == 0 {
        return Err(MetadataError::invalid(role, "version must be at least 1"));
    }
    Ok(())
}

// ---------------------------------------------------------------- root

/// `{"public": "<hex>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyValue {
    /// The raw ed25519 public key as 64 lowercase hex digits (checked when
    /// the key is resolved, [`KeyEntry::public_key`]).
    pub public: String,
}

/// A public key as listed in root: `keytype` and `scheme` are `ed25519`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Must be `ed25519`.
    pub keytype: String,
    /// Must be `ed25519`.
    pub scheme: String,
    /// The key itself.
    pub keyval: KeyValue,
}

impl KeyEntry {
    /// The root entry for an ed25519 key.
    pub fn ed25519(key: &PublicKey) -> Self {
        KeyEntry {
            keytype: "ed25519".into(),
            scheme: "ed25519".into(),
            keyval: KeyValue {
                public: key.to_hex(),
            },
        }
    }

    /// The key, checked: [`MetadataError::Invalid`] for another key type or
    /// scheme, a malformed or weak key.
    pub fn public_key(&self) -> Result<PublicKey, MetadataError> {
        if self.keytype != "ed25519" || self.scheme != "ed25519" {
            return Err(MetadataError::invalid(
                RoleType::Root,
                format!("unsupported key type {:?}/{:?}", self.keytype, self.scheme),
            ));
        }
        PublicKey::from_hex(&self.keyval.public)
            .map_err(|e| MetadataError::invalid(RoleType::Root, e.to_string()))
    }
}

/// Which keys sign a role, and how many must.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleKeys {
    /// The role's keys, each listed in the root's `keys`; no duplicates.
    pub keyids: Vec<KeyId>,
    /// Distinct keys that must sign; 1 ≤ threshold ≤ number of keys.
    pub threshold: u32,
}

/// The keys of one role, resolved, with the threshold: what a signature
/// check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    /// The role these keys sign for.
    pub role: RoleType,
    /// The role's keys by id (each id checked to be its key's hash).
    pub keys: BTreeMap<KeyId, PublicKey>,
    /// Distinct valid signatures needed; 1 ≤ threshold ≤ `keys.len()`.
    pub threshold: u32,
}

/// The root role's signed contents: every role's keys and threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    /// `_type`: always `root` (checked, so a document of one role
    /// cannot stand in for another).
    #[serde(rename = "_type")]
    pub role_type: RoleType,
    /// Always [`SPEC_VERSION`].
    pub spec_version: String,
    /// Starts at 1; each new root is exactly one more and is signed by
    /// a threshold of the previous root's root keys as well as its own.
    pub version: u64,
    /// After this instant a verifier refuses the document (freeze attack).
    pub expires: Time,
    /// Every key any role uses, by id; an id must be its key's hash.
    pub keys: BTreeMap<KeyId, KeyEntry>,
    /// Keys and threshold of each of the four roles (all four required).
    pub roles: BTreeMap<RoleType, RoleKeys>,
    /// Always `true`: snapshots and targets are fetched by version
    /// (`N.targets.json`), never by a name a publish rewrites.
    pub consistent_snapshot: bool,
}

impl Root {
    /// A root listing `role_keys` (public keys and threshold per role).
    pub fn new(
        version: u64,
        expires: Time,
        role_keys: &BTreeMap<RoleType, (Vec<PublicKey>, u32)>,
    ) -> Self {
        let mut keys = BTreeMap::new();
        let mut roles = BTreeMap::new();
        for (role, (public_keys, threshold)) in role_keys {
            let mut ids: Vec<KeyId> = Vec::new();
            for key in public_keys {
                keys.insert(*key.id(), KeyEntry::ed25519(key));
                if !ids.contains(key.id()) {
                    ids.push(*key.id());
                }
            }
            ids.sort();
            roles.insert(
                *role,
                RoleKeys {
                    keyids: ids,
                    threshold: *threshold,
                },
            );
        }
        Root {
            role_type: RoleType::Root,
            spec_version: SPEC_VERSION.into(),
            version,
            expires,
            keys,
            roles,
            consistent_snapshot: true,
        }
    }

    /// The resolved keys and threshold of `role`.
    pub fn keyring(&self, role: RoleType) -> Result<Keyring, MetadataError> {
        let role_keys = self.roles.get(&role).ok_or_else(|| {
            MetadataError::invalid(RoleType::Root, format!("no keys for role {role}"))
        })?;
        let mut keys = BTreeMap::new();
        for id in &role_keys.keyids {
            let entry = self.keys.get(id).ok_or_else(|| {
                MetadataError::invalid(
                    RoleType::Root,
                    format!("role {role} names unknown key {id}"),
                )
            })?;
            let key = entry.public_key()?;
            if key.id() != id {
                return Err(MetadataError::invalid(
                    RoleType::Root,
                    format!("key id {id} does not match its key"),
                ));
            }
            if keys.insert(*id, key).is_some() {
                return Err(MetadataError::invalid(
                    RoleType::Root,
                    format!("role {role} lists key {id} twice"),
                ));
            }
        }
        let threshold = role_keys.threshold;
        if threshold == 0 || threshold as usize > keys.len() {
            return Err(MetadataError::invalid(
                RoleType::Root,
                format!(
                    "role {role}: threshold {threshold} with {} keys",
                    keys.len()
                ),
            ));
        }
        Ok(Keyring {
            role,
            keys,
            threshold,
        })
    }
}

impl Role for Root {
    const TYPE: RoleType = RoleType::Root;
    fn version(&self) -> u64 {
        self.version
    }
    fn expires(&self) -> Time {
        self.expires
    }
    fn validate(&self) -> Result<(), MetadataError> {
        check_common(
            RoleType::Root,
            self.role_type,
            &self.spec_version,
            self.version,
        )?;
        if !self.consistent_snapshot {
            return Err(MetadataError::invalid(
                RoleType::Root,
                "consistent_snapshot must be true",
            ));
        }
        for role in RoleType::ALL {
            self.keyring(role)?;
        }
        for (id, entry) in &self.keys {
            if entry.public_key()?.id() != id {
                return Err(MetadataError::invalid(
                    RoleType::Root,
                    format!("key id {id} does not match its key"),
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- targets

/// What the signed metadata says about one package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetInfo {
    /// The package's version, a [`valid_name`]; informational (rollback is
    /// prevented by the metadata versions, not by comparing these).
    pub version: String,
    /// Exact size of the archive in bytes; the installer reads at most this.
    pub length: u64,
    /// Hash of the archive; checked when the stream ends.
    pub hashes: Hashes,
    /// Relative to the repository base: `targets/<sha256>.<name>-<version>.tar.gz`.
    pub path: String,
    /// Total bytes of regular-file content in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpacked_length: Option<u64>,
    /// Base images may carry device nodes, setuid files and absolute symlinks,
    /// and keep their ownership.
    #[serde(default)]
    pub base_image: bool,
    /// Free-form, signed.
    #[serde(default)]
    pub custom: Map<String, Value>,
}

impl TargetInfo {
    /// The archive's signed SHA-256.
    pub fn sha256(&self) -> &Sha256Digest {
        &self.hashes.sha256
    }

    /// The most unpacked content the installer accepts.
    pub fn unpacked_limit(&self) -> u64 {
        self.unpacked_length
            .unwrap_or_else(|| self.length.saturating_mul(64))
    }
}

/// Package names and versions: `[A-Za-z0-9][A-Za-z0-9._+-]*`, at most 128 bytes.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

/// A target path is `targets/<file>` with a plain file name: it can never
/// name something outside the repository.
pub fn valid_target_path(path: &str) -> bool {
    match path.strip_prefix("targets/") {
        Some(file) => file.len() <= 255 && valid_name(file),
        None => false,
    }
}

/// The targets role's signed contents: the packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    /// `_type`: always `targets` (checked, so a document of one role
    /// cannot stand in for another).
    #[serde(rename = "_type")]
    pub role_type: RoleType,
    /// Always [`SPEC_VERSION`].
    pub spec_version: String,
    /// Starts at 1 and never goes down (rollback attack); the snapshot
    /// names the exact version to fetch.
    pub version: u64,
    /// After this instant a verifier refuses the document (freeze attack).
    pub expires: Time,
    /// Every package by name (a [`valid_name`]); the path of each is a
    /// [`valid_target_path`].
    pub targets: BTreeMap<String, TargetInfo>,
}

impl Targets {
    /// A targets document of the current spec version.
    pub fn new(version: u64, expires: Time, targets: BTreeMap<String, TargetInfo>) -> Self {
        Targets {
            role_type: RoleType::Targets,
            spec_version: SPEC_VERSION.into(),
            version,
            expires,
            targets,
        }
    }
}

impl Role for Targets {
    const TYPE: RoleType = RoleType::Targets;
    fn version(&self) -> u64 {
        self.version
    }
    fn expires(&self) -> Time {
        self.expires
    }
    fn validate(&self) -> Result<(), MetadataError> {
        check_common(
            RoleType::Targets,
            self.role_type,
            &self.spec_version,
            self.version,
        )?;
        for (name, info) in &self.targets {
            if !valid_name(name) {
                return Err(MetadataError::invalid(
                    RoleType::Targets,
                    format!("bad package name {name:?}"),
                ));
            }
            if !valid_name(&info.version) {
                return Err(MetadataError::invalid(
                    RoleType::Targets,
                    format!("{name}: bad version {:?}", info.version),
                ));
            }
            if !valid_target_path(&info.path) {
                return Err(MetadataError::invalid(
                    RoleType::Targets,
                    format!("{name}: bad path {:?}", info.path),
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- snapshot, timestamp

/// Version, length and hash of another document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaInfo {
    /// The version the named document must have; it is fetched as
    /// `metadata/<version>.<role>.json`.
    pub version: u64,
    /// Its exact size in bytes; the fetch is cut off one byte past it.
    pub length: u64,
    /// Its hash.
    pub hashes: Hashes,
}

impl MetaInfo {
    /// Describes `bytes` as version `version` of a document.
    pub fn describe(version: u64, bytes: &[u8]) -> Self {
        MetaInfo {
            version,
            length: bytes.len() as u64,
            hashes: Hashes {
                sha256: Sha256Digest::of(bytes),
            },
        }
    }
}

/// The snapshot's `meta`: exactly one entry, `targets.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotMeta {
    /// The targets document this snapshot pins (version ≥ 1).
    #[serde(rename = "targets.json")]
    pub targets: MetaInfo,
}

/// The snapshot role's signed contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// `_type`: always `snapshot` (checked, so a document of one role
    /// cannot stand in for another).
    #[serde(rename = "_type")]
    pub role_type: RoleType,
    /// Always [`SPEC_VERSION`].
    pub spec_version: String,
    /// Starts at 1 and never goes down; the timestamp names the exact
    /// version to fetch.
    pub version: u64,
    /// After this instant a verifier refuses the document (freeze attack).
    pub expires: Time,
    /// What it pins.
    pub meta: SnapshotMeta,
}

impl Snapshot {
    /// A snapshot of the current spec version pinning `targets`.
    pub fn new(version: u64, expires: Time, targets: MetaInfo) -> Self {
        Snapshot {
            role_type: RoleType::Snapshot,
            spec_version: SPEC_VERSION.into(),
            version,
            expires,
            meta: SnapshotMeta { targets },
        }
    }
}

impl Role for Snapshot {
    const TYPE: RoleType = RoleType::Snapshot;
    fn version(&self) -> u64 {
        self.version
    }
    fn expires(&self) -> Time {
        self.expires
    }
    fn validate(&self) -> Result<(), MetadataError> {
        check_common(
            RoleType::Snapshot,
            self.role_type,
            &self.spec_version,
            self.version,
        )?;
        if self.meta.targets.version == 0 {
            return Err(MetadataError::invalid(
                RoleType::Snapshot,
                "targets version must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The timestamp's `meta`: exactly one entry, `snapshot.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampMeta {
    /// The snapshot document this timestamp pins (version ≥ 1).
    #[serde(rename = "snapshot.json")]
    pub snapshot: MetaInfo,
}

/// The timestamp role's signed contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timestamp {
    /// `_type`: always `timestamp` (checked, so a document of one role
    /// cannot stand in for another).
    #[serde(rename = "_type")]
    pub role_type: RoleType,
    /// Always [`SPEC_VERSION`].
    pub spec_version: String,
    /// Starts at 1 and never goes down (a replayed old timestamp is
    /// refused).
    pub version: u64,
    /// After this instant a verifier refuses the document (freeze attack).
    pub expires: Time,
    /// What it pins.
    pub meta: TimestampMeta,
}

impl Timestamp {
    /// A timestamp of the current spec version pinning `snapshot`.
    pub fn new(version: u64, expires: Time, snapshot: MetaInfo) -> Self {
        Timestamp {
            role_type: RoleType::Timestamp,
            spec_version: SPEC_VERSION.into(),
            version,
            expires,
            meta: TimestampMeta { snapshot },
        }
    }
}

impl Role for Timestamp {
    const TYPE: RoleType = RoleType::Timestamp;
    fn version(&self) -> u64 {
        self.version
    }
    fn expires(&self) -> Time {
        self.expires
    }
    fn validate(&self) -> Result<(), MetadataError> {
        check_common(
            RoleType::Timestamp,
            self.role_type,
            &self.spec_version,
            self.version,
        )?;
        if self.meta.snapshot.version == 0 {
            return Err(MetadataError::invalid(
                RoleType::Timestamp,
                "snapshot version must be at least 1",
            ));
        }
        Ok(())
    }
}
