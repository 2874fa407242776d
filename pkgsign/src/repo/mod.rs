//! The staff side: creating, filling, publishing and rotating a repository
//! laid out as in DESIGN.md §1.

mod package;
mod pending;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use package::unpacked_length;
pub use pending::Pending;

use crate::keys::{PublicKey, SecretKey};
use crate::metadata::{
    sign_document, Envelope, Keyring, MetaInfo, MetadataError, Role, RoleType, Root, Snapshot,
    TargetInfo, Targets, Timestamp,
};

/// Why a staff operation on a repository failed. Nothing is published
/// half-way: thresholds are checked before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A file of the repository (or a package being added) could not be
    /// read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The repository's own files disagree: `pending.json` does not parse,
    /// a document named by another is missing, a package changed size
    /// since it was added.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A metadata document of the repository is invalid (or a new one would be).
    #[error("{path}: {source}")]
    Metadata {
        /// The document (or the repository, for one being made).
        path: PathBuf,
        /// Why.
        #[source]
        source: MetadataError,
    },
    /// `init` found a root already there.
    #[error("{0}: a repository already exists here")]
    Exists(PathBuf),
    /// There is no `metadata/root.json` in the directory.
    #[error("{0}: no repository here (run `pkgsign repo init` first)")]
    NotARepository(PathBuf),
    /// Too few of the given secret keys belong to a role to sign for it.
    #[error("{role}: {have} of the given keys belong to the role; threshold is {need}")]
    Threshold {
        /// The role to sign.
        role: RoleType,
        /// Distinct given keys that are the role's.
        have: usize,
        /// The role's threshold.
        need: u32,
    },
    /// A root rotation lacks a threshold of the old root's keys or of the
    /// new root's keys (it needs both).
    #[error("new root: {have} of the given keys are {which} root keys; threshold is {need}")]
    RotationThreshold {
        /// `old` or `new`.
        which: &'static str,
        /// Distinct given keys of that root.
        have: usize,
        /// That root's threshold.
        need: u32,
    },
    /// A role given to `init` or `rotate_root` is unusable: missing, or a
    /// threshold of 0 or above its number of distinct keys.
    #[error("role {role}: {reason}")]
    BadRole {
        /// The role.
        role: RoleType,
        /// What is wrong with it.
        reason: String,
    },
    /// A package name or version that is not a [`crate::metadata::valid_name`].
    #[error("invalid name or version {0:?}: use letters, digits and . _ + - (starting with a letter or digit)")]
    BadName(String),
    /// The file to add is not a gzip'd tar the installer could extract.
    #[error("{path}: not a usable package: {reason}")]
    BadPackage {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The operation needs a published timestamp and there is none.
    #[error("nothing published yet: run `pkgsign repo publish` first")]
    NothingPublished,
    /// Removing a package that is neither published nor pending.
    #[error("package {0:?} is not in the repository")]
    UnknownPackage(String),
}

/// Public keys and threshold of one role.
#[derive(Debug, Clone)]
pub struct RoleSpec {
    /// The role's keys (duplicates count once).
    pub keys: Vec<PublicKey>,
    /// Distinct keys that must sign; 1 ≤ threshold ≤ distinct keys.
    pub threshold: u32,
}

/// Expiry times for the documents a publish writes.
#[derive(Debug, Clone, Copy)]
pub struct Expiries {
    /// Of the new targets (weeks or months: it changes only with packages).
    pub targets: floor::Timestamp,
    /// Of the new snapshot.
    pub snapshot: floor::Timestamp,
    /// Of the new timestamp (short: it bounds how long a node can be frozen
    /// on old metadata without noticing).
    pub timestamp: floor::Timestamp,
}

/// Versions written by a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Version of the new `N.targets.json`.
    pub targets_version: u64,
    /// Version of the new `N.snapshot.json`.
    pub snapshot_version: u64,
    /// Version of the new `timestamp.json`.
    pub timestamp_version: u64,
    /// Packages listed in the new targets.
    pub packages: usize,
}

/// What `repo show` prints.
#[derive(Debug, Clone)]
pub struct Status {
    /// The current root (its own threshold checked).
    pub root: Root,
    /// The published timestamp; `None` before the first publish.
    pub timestamp: Option<Timestamp>,
    /// The snapshot the timestamp names.
    pub snapshot: Option<Snapshot>,
    /// The targets the snapshot names.
    pub targets: Option<Targets>,
    /// Changes waiting for the next publish.
    pub pending: Pending,
}

/// A repository directory.
#[derive(Debug, Clone)]
pub struct Repository {
    dir: PathBuf,
}

/// Signs `doc` with those of `keys` that belong to `keyring`; fails below the threshold.
fn sign_role<T: Role>(
    doc: &T,
    keyring: &Keyring,
    keys: &[SecretKey],
) -> Result<Vec<u8>, RepoError> {
    let mine: Vec<&SecretKey> = keys
        .iter()
        .filter(|k| keyring.keys.contains_key(k.id()))
        .collect();
    let distinct: std::collections::BTreeSet<_> = mine.iter().map(|k| *k.id()).collect();
    if distinct.len() < keyring.threshold as usize {
        return Err(RepoError::Threshold {
            role: T::TYPE,
            have: distinct.len(),
            need: keyring.threshold,
        });
    }
    sign_document(doc, &mine).map_err(|source| RepoError::Metadata {
        path: PathBuf::from(T::TYPE.as_str()),
        source,
    })
}

fn check_spec(role: RoleType, spec: &RoleSpec) -> Result<(), RepoError> {
    let distinct: std::collections::BTreeSet<_> = spec.keys.iter().map(|k| *k.id()).collect();
    if spec.threshold == 0 || spec.threshold as usize > distinct.len() {
        return Err(RepoError::BadRole {
            role,
            reason: format!(
                "threshold {} with {} distinct key(s)",
                spec.threshold,
                distinct.len()
            ),
        });
    }
    Ok(())
}

fn role_map(specs: &BTreeMap<RoleType, RoleSpec>) -> BTreeMap<RoleType, (Vec<PublicKey>, u32)> {
    specs
        .iter()
        .map(|(role, spec)| (*role, (spec.keys.clone(), spec.threshold)))
        .collect()
}

impl Repository {
    /// The repository directory (holding `metadata/` and `targets/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn metadata_dir(&self) -> PathBuf {
        self.dir.join("metadata")
    }

    fn meta_path(&self, file: &str) -> PathBuf {
        self.metadata_dir().join(file)
    }

    fn pending_path(&self) -> PathBuf {
        self.dir.join("pending.json")
    }

    /// Opens an existing repository.
    pub fn open(dir: &Path) -> Result<Repository, RepoError> {
        let repo = Repository {
            dir: dir.to_path_buf(),
        };
        if !repo.meta_path("root.json").is_file() {
            return Err(RepoError::NotARepository(dir.to_path_buf()));
        }
        Ok(repo)
    }

    /// Creates a repository with root version 1 listing `roles` (all four
    /// required), signed by a threshold of the root keys among `signing_keys`.
    pub fn init(
        dir: &Path,
        roles: &BTreeMap<RoleType, RoleSpec>,
        expires: floor::Timestamp,
        signing_keys: &[SecretKey],
    ) -> Result<Repository, RepoError> {
        let repo = Repository {
            dir: dir.to_path_buf(),
        };
        if repo.meta_path("root.json").exists() || repo.meta_path("1.root.json").exists() {
            return Err(RepoError::Exists(dir.to_path_buf()));
        }
        for role in RoleType::ALL {
            let spec = roles.get(&role).ok_or(RepoError::BadRole {
                role,
                reason: "no keys given".into(),
            })?;
            check_spec(role, spec)?;
        }
        let root = Root::new(1, expires, &role_map(roles));
        root.validate().map_err(|source| RepoError::Metadata {
            path: dir.into(),
            source,
        })?;
        let keyring = root
            .keyring(RoleType::Root)
            .map_err(|source| RepoError::Metadata {
                path: dir.into(),
                source,
            })?;
        let bytes = sign_role(&root, &keyring, signing_keys)?;
        for sub in ["metadata", "targets"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|source| RepoError::Io { path, source })?;
        }
        repo.write_meta("1.root.json", &bytes)?;
        repo.write_meta("root.json", &bytes)?;
        Ok(repo)
    }

    fn write_meta(&self, file: &str, bytes: &[u8]) -> Result<(), RepoError> {
        let path = self.meta_path(file);
        floor::durable::write_atomic(&path, bytes).map_err(|e| RepoError::Io {
            path,
            source: e.into(),
        })
    }

    fn read_meta(&self, file: &str) -> Result<Option<Vec<u8>>, RepoError> {
        let path = self.meta_path(file);
        floor::durable::read_if_exists(&path).map_err(|e| RepoError::Io {
            path,
            source: e.into(),
        })
    }

    fn parse_meta<T: Role>(&self, file: &str) -> Result<Option<T>, RepoError> {
        let Some(bytes) = self.read_meta(file)? else {
            return Ok(None);
        };
        let path = self.meta_path(file);
        let envelope = Envelope::parse(&bytes).map_err(|source| RepoError::Metadata {
            path: path.clone(),
            source,
        })?;
        envelope
            .decode()
            .map(Some)
            .map_err(|source| RepoError::Metadata { path, source })
    }

    /// The current root, checked to be signed by its own threshold.
    pub fn root(&self) -> Result<Root, RepoError> {
        let path = self.meta_path("root.json");
        let bytes = self
            .read_meta("root.json")?
            .ok_or_else(|| RepoError::NotARepository(self.dir.clone()))?;
        let meta_err = |source| RepoError::Metadata {
            path: path.clone(),
            source,
        };
        let envelope = Envelope::parse(&bytes).map_err(meta_err)?;
        let root: Root = envelope.decode().map_err(meta_err)?;
        envelope
            .check_threshold(&root.keyring(RoleType::Root).map_err(meta_err)?)
            .map_err(meta_err)?;
        Ok(root)
    }

    /// The published timestamp, snapshot and targets, if any.
    fn published(&self) -> Result<Option<(Timestamp, Snapshot, Targets)>, RepoError> {
        let Some(timestamp) = self.parse_meta::<Timestamp>("timestamp.json")? else {
            return Ok(None);
        };
        let snapshot_file = format!("{}.snapshot.json", timestamp.meta.snapshot.version);
        let snapshot: Snapshot =
            self.parse_meta(&snapshot_file)?
                .ok_or_else(|| RepoError::Corrupt {
                    path: self.meta_path(&snapshot_file),
                    reason: "named by timestamp.json but missing".into(),
                })?;
        let targets_file = format!("{}.targets.json", snapshot.meta.targets.version);
        let targets: Targets =
            self.parse_meta(&targets_file)?
                .ok_or_else(|| RepoError::Corrupt {
                    path: self.meta_path(&targets_file),
                    reason: "named by the snapshot but missing".into(),
                })?;
        Ok(Some((timestamp, snapshot, targets)))
    }

    /// Copies a package into `targets/` and lists it in `pending.json`.
    pub fn add_package(
        &self,
        file: &Path,
        name: &str,
        version: &str,
        base_image: bool,
        custom: Map<String, Value>,
    ) -> Result<TargetInfo, RepoError> {
        let info = package::store_package(
            &self.dir.join("targets"),
            file,
            name,
            version,
            base_image,
            custom,
        )?;
        let mut pending = Pending::load(&self.pending_path())?;
        pending.remove.remove(name);
        pending.add.insert(name.to_string(), info.clone());
        pending.save(&self.pending_path())?;
        Ok(info)
    }

    /// Lists a package for removal at the next publish.
    pub fn remove_package(&self, name: &str) -> Result<(), RepoError> {
        let mut pending = Pending::load(&self.pending_path())?;
        let published = self
            .published()?
            .map(|(_, _, t)| t.targets)
            .unwrap_or_default();
        if !published.contains_key(name) && !pending.add.contains_key(name) {
            return Err(RepoError::UnknownPackage(name.to_string()));
        }
        pending.add.remove(name);
        pending.remove.insert(name.to_string());
        pending.save(&self.pending_path())
    }

    /// Publishes the pending changes: new targets, snapshot and timestamp
    /// versions, each signed with those of `keys` that belong to its role.
    /// Checks every threshold before writing anything; writes the versioned
    /// documents first and `timestamp.json` last.
    pub fn publish(&self, keys: &[SecretKey], expiries: &Expiries) -> Result<Published, RepoError> {
        let root = self.root()?;
        let meta_err = |source| RepoError::Metadata {
            path: self.meta_path("root.json"),
            source,
        };
        let pending = Pending::load(&self.pending_path())?;
        let previous = self.published()?;
        let (old_ts, old_snap, old_targets) = match &previous {
            Some((ts, snap, targets)) => (ts.version, snap.version, Some(targets)),
            None => (0, 0, None),
        };
        let packages = pending.apply(&old_targets.map(|t| t.targets.clone()).unwrap_or_default());
        for (name, info) in &pending.add {
            let path = self.dir.join(&info.path);
            let len = fs::metadata(&path)
                .map(|m| m.len())
                .map_err(|source| RepoError::Io {
                    path: path.clone(),
                    source,
                })?;
            if len != info.length {
                return Err(RepoError::Corrupt {
                    path,
                    reason: format!("package {name}: length changed since `repo add`"),
                });
            }
        }
        let targets_version = old_targets.map(|t| t.version).unwrap_or(0) + 1;
        let targets = Targets::new(targets_version, expiries.targets, packages);
        targets.validate().map_err(meta_err)?;
        let targets_bytes = sign_role(
            &targets,
            &root.keyring(RoleType::Targets).map_err(meta_err)?,
            keys,
        )?;
        let snapshot = Snapshot::new(
            old_snap + 1,
            expiries.snapshot,
            MetaInfo::describe(targets_version, &targets_bytes),
        );
        let snapshot_bytes = sign_role(
            &snapshot,
            &root.keyring(RoleType::Snapshot).map_err(meta_err)?,
            keys,
        )?;
        let timestamp = Timestamp::new(
            old_ts + 1,
            expiries.timestamp,
            MetaInfo::describe(snapshot.version, &snapshot_bytes),
        );
        let timestamp_bytes = sign_role(
            &timestamp,
            &root.keyring(RoleType::Timestamp).map_err(meta_err)?,
            keys,
        )?;

        self.write_meta(&format!("{targets_version}.targets.json"), &targets_bytes)?;
        self.write_meta(
            &format!("{}.snapshot.json", snapshot.version),
            &snapshot_bytes,
        )?;
        self.write_meta("timestamp.json", &timestamp_bytes)?;
        if !pending.is_empty() {
            Pending::default().save(&self.pending_path())?;
        }
        Ok(Published {
            targets_version,
            snapshot_version: snapshot.version,
            timestamp_version: timestamp.version,
            packages: targets.targets.len(),
        })
    }

    /// Re-signs only the timestamp (same snapshot, new version and expiry).
    pub fn refresh_timestamp(
        &self,
        keys: &[SecretKey],
        expires: floor::Timestamp,
    ) -> Result<u64, RepoError> {
        let root = self.root()?;
        let meta_err = |source| RepoError::Metadata {
            path: self.meta_path("root.json"),
            source,
        };
        let old: Timestamp = self
            .parse_meta("timestamp.json")?
            .ok_or(RepoError::NothingPublished)?;
        let timestamp = Timestamp::new(old.version + 1, expires, old.meta.snapshot);
        let bytes = sign_role(
            &timestamp,
            &root.keyring(RoleType::Timestamp).map_err(meta_err)?,
            keys,
        )?;
        self.write_meta("timestamp.json", &bytes)?;
        Ok(timestamp.version)
    }

    /// Writes root N+1 with the roles in `changes` replaced (others kept),
    /// signed by a threshold of the old root keys and of the new ones, all
    /// found among `keys`. Returns the new version.
    pub fn rotate_root(
        &self,
        changes: &BTreeMap<RoleType, RoleSpec>,
        expires: floor::Timestamp,
        keys: &[SecretKey],
    ) -> Result<u64, RepoError> {
        let old = self.root()?;
        let meta_err = |source| RepoError::Metadata {
            path: self.meta_path("root.json"),
            source,
        };
        let mut specs = BTreeMap::new();
        for role in RoleType::ALL {
            let spec = match changes.get(&role) {
                Some(spec) => spec.clone(),
                None => {
                    let ring = old.keyring(role).map_err(meta_err)?;
                    RoleSpec {
                        keys: ring.keys.into_values().collect(),
                        threshold: ring.threshold,
                    }
                }
            };
            check_spec(role, &spec)?;
            specs.insert(role, spec);
        }
        let new = Root::new(old.version + 1, expires, &role_map(&specs));
        new.validate().map_err(meta_err)?;
        let old_ring = old.keyring(RoleType::Root).map_err(meta_err)?;
        let new_ring = new.keyring(RoleType::Root).map_err(meta_err)?;
        let count = |ring: &Keyring| {
            keys.iter()
                .filter(|k| ring.keys.contains_key(k.id()))
                .map(|k| *k.id())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        };
        if count(&old_ring) < old_ring.threshold as usize {
            return Err(RepoError::RotationThreshold {
                which: "old",
                have: count(&old_ring),
                need: old_ring.threshold,
            });
        }
        if count(&new_ring) < new_ring.threshold as usize {
            return Err(RepoError::RotationThreshold {
                which: "new",
                have: count(&new_ring),
                need: new_ring.threshold,
            });
        }
        let signers: Vec<&SecretKey> = keys
            .iter()
            .filter(|k| old_ring.keys.contains_key(k.id()) || new_ring.keys.contains_key(k.id()))
            .collect();
        let bytes = sign_document(&new, &signers).map_err(meta_err)?;
        self.write_meta(&format!("{}.root.json", new.version), &bytes)?;
        self.write_meta("root.json", &bytes)?;
        Ok(new.version)
    }

    /// Everything `repo show` prints.
    pub fn status(&self) -> Result<Status, RepoError> {
        let root = self.root()?;
        let pending = Pending::load(&self.pending_path())?;
        Ok(match self.published()? {
            Some((ts, snap, targets)) => Status {
                root,
                timestamp: Some(ts),
                snapshot: Some(snap),
                targets: Some(targets),
                pending,
            },
            None => Status {
                root,
                timestamp: None,
                snapshot: None,
                targets: None,
                pending,
            },
        })
    }
}
