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
    Root,
    Targets,
    Snapshot,
    Timestamp,
}

impl RoleType {
    pub const ALL: [RoleType; 4] = [
        RoleType::Root,
        RoleType::Targets,
        RoleType::Snapshot,
        RoleType::Timestamp,
    ];

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
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Sha256Digest(sha2::Sha256::digest(bytes).into())
    }

    /// The strong entity tag a repository server gives a file with this
    /// content (`"<hex>"`, quotes included; DESIGN.md §2).
    pub fn etag(&self) -> String {
        format!("\"{}\"", hex::encode(self.0))
    }

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
    pub sha256: Sha256Digest,
}

/// Common interface of the four roles' signed contents.
pub trait Role: Serialize + DeserializeOwned {
    const TYPE: RoleType;
    fn version(&self) -> u64;
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
    pub public: String,
}

/// A public key as listed in root: `keytype` and `scheme` are `ed25519`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub keytype: String,
    pub scheme: String,
    pub keyval: KeyValue,
}

impl KeyEntry {
    pub fn ed25519(key: &PublicKey) -> Self {
        KeyEntry {
            keytype: "ed25519".into(),
            scheme: "ed25519".into(),
            keyval: KeyValue {
                public: key.to_hex(),
            },
        }
    }

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
    pub keyids: Vec<KeyId>,
    pub threshold: u32,
}

/// The keys of one role, resolved, with the threshold: what a signature
/// check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    pub role: RoleType,
    pub keys: BTreeMap<KeyId, PublicKey>,
    pub threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    #[serde(rename = "_type")]
    pub role_type: RoleType,
    pub spec_version: String,
    pub version: u64,
    pub expires: Time,
    pub keys: BTreeMap<KeyId, KeyEntry>,
    pub roles: BTreeMap<RoleType, RoleKeys>,
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
    pub version: String,
    pub length: u64,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    #[serde(rename = "_type")]
    pub role_type: RoleType,
    pub spec_version: String,
    pub version: u64,
    pub expires: Time,
    pub targets: BTreeMap<String, TargetInfo>,
}

impl Targets {
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
    pub version: u64,
    pub length: u64,
    pub hashes: Hashes,
}

impl MetaInfo {
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotMeta {
    #[serde(rename = "targets.json")]
    pub targets: MetaInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    #[serde(rename = "_type")]
    pub role_type: RoleType,
    pub spec_version: String,
    pub version: u64,
    pub expires: Time,
    pub meta: SnapshotMeta,
}

impl Snapshot {
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampMeta {
    #[serde(rename = "snapshot.json")]
    pub snapshot: MetaInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timestamp {
    #[serde(rename = "_type")]
    pub role_type: RoleType,
    pub spec_version: String,
    pub version: u64,
    pub expires: Time,
    pub meta: TimestampMeta,
}

impl Timestamp {
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
