//! The verifier: the update workflow of DESIGN.md §1 with persisted state.
//!
//! [`Verifier::open`] loads the trusted state (or the initial root);
//! [`Verifier::check`] fetches and verifies new metadata without changing
//! anything on disk; [`Verifier::commit`] persists what `check` accepted.
//! [`Verifier::update`] does both.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::fetch::{fetch_to_vec, FetchError, Fetcher};
use crate::metadata::{
    Envelope, MetaInfo, MetadataError, Role, RoleType, Root, Sha256Digest, Snapshot, TargetInfo,
    Targets, Timestamp,
};

/// Size limits on fetched documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest root document read, in bytes (nothing signed gives its
    /// length); default 512 KiB.
    pub max_root_size: u64,
    /// Largest `timestamp.json` read, in bytes; default 16 KiB. Snapshot and
    /// targets are read up to the length the document above them signs.
    pub max_timestamp_size: u64,
    /// Root versions walked in one update at most.
    pub max_root_rotations: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_root_size: 512 * 1024,
            max_timestamp_size: 16 * 1024,
            max_root_rotations: 1024,
        }
    }
}

/// Why an update was refused.
///
/// In every case the trusted state is unchanged. `what` names the document
/// (`metadata/3.snapshot.json`).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A document could not be fetched, or was longer than its limit (the
    /// endless-data attack: [`FetchError::TooLong`]).
    #[error("fetching {what}: {source}")]
    Fetch {
        /// The document.
        what: String,
        /// Why.
        #[source]
        source: FetchError,
    },
    /// A document is malformed, of the wrong role, or lacks a threshold of
    /// valid signatures from the keys the trusted root gives its role (a
    /// new root lacking the previous root's threshold is
    /// [`MetadataError::Invalid`], its own is [`MetadataError::Threshold`]).
    #[error("{what}: {source}")]
    Metadata {
        /// The document.
        what: String,
        /// Why.
        #[source]
        source: MetadataError,
    },
    /// A document's version is not the one its name or the document above
    /// it requires (`N.root.json` must be version N; the snapshot and
    /// targets must be the versions the timestamp and snapshot pin).
    #[error("{what}: version {found}, expected {expected}")]
    WrongVersion {
        /// The document.
        what: String,
        /// The version required.
        expected: u64,
        /// The version it has.
        found: u64,
    },
    /// A version older than the one already trusted (the rollback attack):
    /// of the timestamp, snapshot or targets, or of the version one of them
    /// pins.
    #[error("{what}: rollback from trusted version {trusted} to {offered}")]
    Rollback {
        /// The document, or the pinned version, that went back.
        what: String,
        /// The version trusted so far.
        trusted: u64,
        /// The older version offered.
        offered: u64,
    },
    /// A document (the newest root included) expired at or before `now`
    /// (the freeze attack).
    #[error("{role} metadata expired at {expires} (now {now})")]
    Expired {
        /// The role of the expired document.
        role: RoleType,
        /// Its signed expiry.
        expires: floor::Timestamp,
        /// The time the check was made at.
        now: floor::Timestamp,
    },
    /// A snapshot or targets document shorter than the length signed for
    /// it (a longer one is [`VerifyError::Fetch`] with `TooLong`).
    #[error("{what}: length {found} differs from the signed {expected}")]
    WrongLength {
        /// The document.
        what: String,
        /// The signed length.
        expected: u64,
        /// The length received.
        found: u64,
    },
    /// A snapshot or targets document whose bytes are not the ones signed
    /// for it (mix-and-match, or tampering).
    #[error("{what}: sha256 {found} differs from the signed {expected}")]
    WrongHash {
        /// The document.
        what: String,
        /// The signed hash.
        expected: Sha256Digest,
        /// The hash of what was received.
        found: Sha256Digest,
    },
    /// The repository offered more root versions than [`Limits::max_root_rotations`].
    #[error("more than {0} new root versions in one update")]
    TooManyRoots(u64),
    /// The initial root (the CD's) is not a valid root signed by a
    /// threshold of its own root keys.
    #[error("initial root: {0}")]
    InitialRoot(#[source] MetadataError),
    /// The state directory could not be read or written.
    #[error("state directory {path}: {source}")]
    State {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// What a successful update established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRepo {
    /// Version of the trusted root after the update.
    pub root_version: u64,
    /// Version of the accepted timestamp.
    pub timestamp_version: u64,
    /// Version of the accepted snapshot.
    pub snapshot_version: u64,
    /// Version of the accepted targets.
    pub targets_version: u64,
    /// SHA-256 of the targets document (names this set of packages).
    pub targets_sha256: Sha256Digest,
    /// When the accepted targets expire.
    pub targets_expires: floor::Timestamp,
    /// Every package the targets list, by name.
    pub targets: BTreeMap<String, TargetInfo>,
}

/// A package named in verified metadata: the only thing the installer takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPackage {
    name: String,
    info: TargetInfo,
}

impl VerifiedPackage {
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, info: TargetInfo) -> VerifiedPackage {
        VerifiedPackage {
            name: name.to_string(),
            info,
        }
    }

    /// The package's name in the targets.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the verified targets say about it (length, hash, path, …).
    pub fn info(&self) -> &TargetInfo {
        &self.info
    }
}

impl VerifiedRepo {
    /// The package called `name`, if the targets list it.
    pub fn package(&self, name: &str) -> Option<VerifiedPackage> {
        self.targets.get(name).map(|info| VerifiedPackage {
            name: name.to_string(),
            info: info.clone(),
        })
    }

    /// All the named packages in the order given; `Err` carries the first
    /// name the targets do not list.
    pub fn packages(&self, names: &[impl AsRef<str>]) -> Result<Vec<VerifiedPackage>, String> {
        names
            .iter()
            .map(|n| {
                self.package(n.as_ref())
                    .ok_or_else(|| n.as_ref().to_string())
            })
            .collect()
    }
}

/// A trusted document: its bytes and their meaning.
#[derive(Debug, Clone)]
struct Trusted<T> {
    doc: T,
    bytes: Vec<u8>,
}

/// Accepted by [`Verifier::check`], not yet persisted.
#[derive(Debug, Clone)]
pub struct Update {
    new_roots: Vec<Trusted<Root>>,
    timestamp: Trusted<Timestamp>,
    snapshot: Trusted<Snapshot>,
    targets: Trusted<Targets>,
    repo: VerifiedRepo,
}

impl Update {
    /// What the update would establish.
    pub fn repo(&self) -> &VerifiedRepo {
        &self.repo
    }
}

const ROOT_FILE: &str = "root.json";
const TIMESTAMP_FILE: &str = "timestamp.json";
const SNAPSHOT_FILE: &str = "snapshot.json";
const TARGETS_FILE: &str = "targets.json";

/// Verifier state: the trusted root and the newest accepted documents.
///
/// # Example
///
/// A node starts from a root it trusts (on a real node, the CD's
/// `root.json`), updates from the repository, and reads a package through
/// a [`VerifiedReader`](crate::verified::VerifiedReader), which fails unless
/// the bytes are exactly the signed ones. The repository is made on the spot
/// with [`crate::repo::Repository`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::io::Read;
/// use std::time::SystemTime;
///
/// use pkgsign::fetch::{DirFetcher, Fetcher};
/// use pkgsign::verified::{Expected, VerifiedReader};
/// use pkgsign::Verifier;
/// # // Staff side: a repository with one package, one key for every role.
/// # use std::collections::BTreeMap;
/// # use pkgsign::metadata::{parse_expiry, RoleType};
/// # use pkgsign::repo::{Expiries, Repository, RoleSpec};
/// # use pkgsign::SecretKey;
/// # let work = tempfile::tempdir()?;
/// # let repo_dir = work.path().join("repo");
/// # let key = SecretKey::generate()?;
/// # let roles: BTreeMap<RoleType, RoleSpec> = RoleType::ALL
/// #     .into_iter()
/// #     .map(|role| (role, RoleSpec { keys: vec![key.public().clone()], threshold: 1 }))
/// #     .collect();
/// # let expires = parse_expiry("30d", floor::Timestamp::now())?;
/// # let repo = Repository::init(&repo_dir, &roles, expires, std::slice::from_ref(&key))?;
/// # let archive = work.path().join("hello.tar.gz");
/// # let gz = flate2::write::GzEncoder::new(std::fs::File::create(&archive)?, Default::default());
/// # let mut tar = tar::Builder::new(gz);
/// # let mut header = tar::Header::new_gnu();
/// # header.set_size(6);
/// # header.set_mode(0o644);
/// # header.set_cksum();
/// # tar.append_data(&mut header, "hello.txt", &b"hello\n"[..])?;
/// # tar.into_inner()?.finish()?;
/// # repo.add_package(&archive, "hello", "1.0", false, Default::default())?;
/// # let expiries = Expiries { targets: expires, snapshot: expires, timestamp: expires };
/// # repo.publish(std::slice::from_ref(&key), &expiries)?;
///
/// let initial_root = std::fs::read(repo_dir.join("metadata/1.root.json"))?;
/// let mut verifier = Verifier::open(&work.path().join("trust"), &initial_root)?;
///
/// // A directory here; `HttpFetcher` for a boot server.
/// let fetcher = DirFetcher::new(&repo_dir);
/// let repo = verifier.update(&fetcher, SystemTime::now())?;
/// assert_eq!(repo.targets_version, 1);
///
/// let package = repo.package("hello").expect("listed in the signed targets");
/// let stream = fetcher.fetch(&package.info().path, package.info().length)?;
/// let mut verified = VerifiedReader::new(stream, Expected::of_package(&package));
/// let mut archive = Vec::new();
/// verified.read_to_end(&mut archive)?; // an error unless length and hash match
/// assert!(verified.is_verified());
///
/// // The accepted metadata is now the trusted state: a later update from a
/// // repository serving older versions is refused as a rollback.
/// let reopened = Verifier::open(&work.path().join("trust"), &initial_root)?;
/// assert_eq!(reopened.trusted_repo(), Some(repo));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Verifier {
    state_dir: PathBuf,
    limits: Limits,
    root: Trusted<Root>,
    timestamp: Option<Trusted<Timestamp>>,
    snapshot: Option<Trusted<Snapshot>>,
    targets: Option<Trusted<Targets>>,
}

/// Parses a root and checks it is signed by a threshold of its own root keys.
fn self_signed_root(bytes: &[u8]) -> Result<Root, MetadataError> {
    let envelope = Envelope::parse(bytes)?;
    let root: Root = envelope.decode()?;
    envelope.check_threshold(&root.keyring(RoleType::Root)?)?;
    Ok(root)
}

fn load_trusted<T: Role>(
    dir: &Path,
    file: &str,
    root: &Root,
) -> Result<Option<Trusted<T>>, VerifyError> {
    let path = dir.join(file);
    let bytes = floor::durable::read_if_exists(&path).map_err(|e| VerifyError::State {
        path: path.clone(),
        source: e.into(),
    })?;
    let Some(bytes) = bytes else { return Ok(None) };
    // A document that no longer verifies (keys rotated, file damaged) is
    // forgotten rather than trusted.
    let verified = Envelope::parse(&bytes).and_then(|env| env.verify::<T>(&root.keyring(T::TYPE)?));
    match verified {
        Ok(doc) => Ok(Some(Trusted { doc, bytes })),
        Err(e) => {
            tracing::warn!("ignoring trusted {}: {e}", path.display());
            Ok(None)
        }
    }
}

impl Verifier {
    /// Opens the state in `state_dir` (created if missing). The trusted root
    /// is the stored one, or `initial_root` (the CD's) when there is none or
    /// when `initial_root` is newer.
    pub fn open(state_dir: &Path, initial_root: &[u8]) -> Result<Verifier, VerifyError> {
        Self::open_with_limits(state_dir, initial_root, Limits::default())
    }

    /// [`Verifier::open`] with other [`Limits`] (tests of the limits, tools
    /// for unusual repositories).
    pub fn open_with_limits(
        state_dir: &Path,
        initial_root: &[u8],
        limits: Limits,
    ) -> Result<Verifier, VerifyError> {
        let initial = self_signed_root(initial_root).map_err(VerifyError::InitialRoot)?;
        let root_path = state_dir.join(ROOT_FILE);
        let stored =
            floor::durable::read_if_exists(&root_path).map_err(|e| VerifyError::State {
                path: root_path.clone(),
                source: e.into(),
            })?;
        let root = match stored {
            Some(bytes) => {
                let doc = self_signed_root(&bytes).map_err(|source| VerifyError::Metadata {
                    what: root_path.display().to_string(),
                    source,
                })?;
                if doc.version >= initial.version {
                    Trusted { doc, bytes }
                } else {
                    Trusted {
                        doc: initial,
                        bytes: initial_root.to_vec(),
                    }
                }
            }
            None => Trusted {
                doc: initial,
                bytes: initial_root.to_vec(),
            },
        };
        let timestamp = load_trusted(state_dir, TIMESTAMP_FILE, &root.doc)?;
        let snapshot = load_trusted(state_dir, SNAPSHOT_FILE, &root.doc)?;
        let targets = load_trusted(state_dir, TARGETS_FILE, &root.doc)?;
        Ok(Verifier {
            state_dir: state_dir.to_path_buf(),
            limits,
            root,
            timestamp,
            snapshot,
            targets,
        })
    }

    /// The trusted root.
    pub fn root(&self) -> &Root {
        &self.root.doc
    }

    /// The last accepted set of packages, from the state alone (no network,
    /// no expiry check): what is installed was verified when installed.
    pub fn trusted_repo(&self) -> Option<VerifiedRepo> {
        let (ts, snap, targets) = (
            self.timestamp.as_ref()?,
            self.snapshot.as_ref()?,
            self.targets.as_ref()?,
        );
        Some(repo_of(&self.root.doc, &ts.doc, &snap.doc, targets))
    }

    /// Fetch, verify, persist.
    pub fn update(
        &mut self,
        fetcher: &dyn Fetcher,
        now: SystemTime,
    ) -> Result<VerifiedRepo, VerifyError> {
        let update = self.check(fetcher, now)?;
        let repo = update.repo.clone();
        self.commit(update)?;
        Ok(repo)
    }

    /// Fetches and verifies new metadata; changes nothing.
    pub fn check(&self, fetcher: &dyn Fetcher, now: SystemTime) -> Result<Update, VerifyError> {
        let now = floor::Timestamp::from(now);
        let (new_roots, root) = self.walk_roots(fetcher)?;
        if root.expires <= now {
            return Err(VerifyError::Expired {
                role: RoleType::Root,
                expires: root.expires,
                now,
            });
        }
        // Fast-forward recovery: new timestamp or snapshot keys void the
        // versions trusted under the old ones.
        let keys_changed = |role| match (self.root.doc.keyring(role), root.keyring(role)) {
            (Ok(old), Ok(new)) => old != new,
            _ => true,
        };
        let (trusted_ts, trusted_snap) =
            if keys_changed(RoleType::Timestamp) || keys_changed(RoleType::Snapshot) {
                (None, None)
            } else {
                (self.timestamp.as_ref(), self.snapshot.as_ref())
            };
        let trusted_targets = if keys_changed(RoleType::Targets) {
            None
        } else {
            self.targets.as_ref()
        };

        let timestamp = self.fetch_timestamp(fetcher, &root, trusted_ts, now)?;
        let snapshot = fetch_snapshot(
            fetcher,
            &root,
            &timestamp.doc.meta.snapshot,
            trusted_snap,
            now,
        )?;
        let targets = fetch_targets(
            fetcher,
            &root,
            &snapshot.doc.meta.targets,
            trusted_targets,
            now,
        )?;
        let repo = repo_of(&root, &timestamp.doc, &snapshot.doc, &targets);
        Ok(Update {
            new_roots,
            timestamp,
            snapshot,
            targets,
            repo,
        })
    }

    /// Persists what `check` accepted: each file written atomically
    /// (temp, fsync, rename, fsync dir), the timestamp last.
    pub fn commit(&mut self, update: Update) -> Result<(), VerifyError> {
        let dir = &self.state_dir;
        let state_err = |path: &Path, source| VerifyError::State {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(|e| state_err(dir, e))?;
        let write = |file: &str, bytes: &[u8]| {
            let path = dir.join(file);
            floor::durable::write_atomic(&path, bytes).map_err(|e| state_err(&path, e.into()))
        };
        let root = update
            .new_roots
            .last()
            .cloned()
            .unwrap_or_else(|| self.root.clone());
        write(ROOT_FILE, &root.bytes)?;
        write(TARGETS_FILE, &update.targets.bytes)?;
        write(SNAPSHOT_FILE, &update.snapshot.bytes)?;
        write(TIMESTAMP_FILE, &update.timestamp.bytes)?;
        self.root = root;
        self.targets = Some(update.targets);
        self.snapshot = Some(update.snapshot);
        self.timestamp = Some(update.timestamp);
        Ok(())
    }

    /// Step 1: walk `N+1.root.json`, `N+2.root.json`, … until not found.
    fn walk_roots(&self, fetcher: &dyn Fetcher) -> Result<(Vec<Trusted<Root>>, Root), VerifyError> {
        let mut current = self.root.doc.clone();
        let mut new_roots = Vec::new();
        loop {
            let next_version = current.version.saturating_add(1);
            let what = format!("metadata/{next_version}.root.json");
            let bytes = match fetch_to_vec(fetcher, &what, self.limits.max_root_size) {
                Ok(bytes) => bytes,
                Err(e) if e.is_not_found() => break,
                // An object store that does not allow listing answers 403
                // for a file that does not exist; python-tuf takes it as
                // "no newer root" too. Nothing is trusted on its word: the
                // walk just ends at the root already verified.
                Err(FetchError::Status {
                    status: 403,
                    location,
                }) => {
                    tracing::info!(
                        "{location}: 403 Forbidden, taken as not found (an object store without listing answers so for a missing file): no root newer than version {}",
                        current.version
                    );
                    break;
                }
                Err(source) => return Err(VerifyError::Fetch { what, source }),
            };
            if new_roots.len() as u64 >= self.limits.max_root_rotations {
                return Err(VerifyError::TooManyRoots(self.limits.max_root_rotations));
            }
            let meta_err = |source| VerifyError::Metadata {
                what: what.clone(),
                source,
            };
            let envelope = Envelope::parse(&bytes).map_err(meta_err)?;
            envelope
                .check_threshold(&current.keyring(RoleType::Root).map_err(meta_err)?)
                .map_err(|e| {
                    meta_err(match e {
                        MetadataError::Threshold {
                            valid, threshold, ..
                        } => MetadataError::Invalid {
                            role: RoleType::Root,
                            reason: format!(
                            "signed by {valid} of the previous root's keys; {threshold} required"
                        ),
                        },
                        other => other,
                    })
                })?;
            let next: Root = envelope.decode().map_err(meta_err)?;
            envelope
                .check_threshold(&next.keyring(RoleType::Root).map_err(meta_err)?)
                .map_err(meta_err)?;
            if next.version != next_version {
                return Err(VerifyError::WrongVersion {
                    what,
                    expected: next_version,
                    found: next.version,
                });
            }
            new_roots.push(Trusted {
                doc: next.clone(),
                bytes,
            });
            current = next;
        }
        Ok((new_roots, current))
    }

    /// Step 2: `timestamp.json`.
    fn fetch_timestamp(
        &self,
        fetcher: &dyn Fetcher,
        root: &Root,
        trusted: Option<&Trusted<Timestamp>>,
        now: floor::Timestamp,
    ) -> Result<Trusted<Timestamp>, VerifyError> {
        let what = "metadata/timestamp.json".to_string();
        let bytes =
            fetch_to_vec(fetcher, &what, self.limits.max_timestamp_size).map_err(|source| {
                VerifyError::Fetch {
                    what: what.clone(),
                    source,
                }
            })?;
        let doc: Timestamp = verify_doc(&bytes, root, &what)?;
        if let Some(trusted) = trusted {
            no_rollback(&what, trusted.doc.version, doc.version)?;
            no_rollback(
                "snapshot version in timestamp",
                trusted.doc.meta.snapshot.version,
                doc.meta.snapshot.version,
            )?;
        }
        not_expired(&doc, now)?;
        Ok(Trusted { doc, bytes })
    }
}

/// Steps 3: the snapshot the timestamp names.
fn fetch_snapshot(
    fetcher: &dyn Fetcher,
    root: &Root,
    meta: &MetaInfo,
    trusted: Option<&Trusted<Snapshot>>,
    now: floor::Timestamp,
) -> Result<Trusted<Snapshot>, VerifyError> {
    let what = format!("metadata/{}.snapshot.json", meta.version);
    let bytes = fetch_described(fetcher, &what, meta)?;
    let doc: Snapshot = verify_doc(&bytes, root, &what)?;
    if doc.version != meta.version {
        return Err(VerifyError::WrongVersion {
            what,
            expected: meta.version,
            found: doc.version,
        });
    }
    if let Some(trusted) = trusted {
        no_rollback(&what, trusted.doc.version, doc.version)?;
        no_rollback(
            "targets version in snapshot",
            trusted.doc.meta.targets.version,
            doc.meta.targets.version,
        )?;
    }
    not_expired(&doc, now)?;
    Ok(Trusted { doc, bytes })
}

/// Step 4: the targets the snapshot names.
fn fetch_targets(
    fetcher: &dyn Fetcher,
    root: &Root,
    meta: &MetaInfo,
    trusted: Option<&Trusted<Targets>>,
    now: floor::Timestamp,
) -> Result<Trusted<Targets>, VerifyError> {
    let what = format!("metadata/{}.targets.json", meta.version);
    let bytes = fetch_described(fetcher, &what, meta)?;
    let doc: Targets = verify_doc(&bytes, root, &what)?;
    if doc.version != meta.version {
        return Err(VerifyError::WrongVersion {
            what,
            expected: meta.version,
            found: doc.version,
        });
    }
    if let Some(trusted) = trusted {
        no_rollback(&what, trusted.doc.version, doc.version)?;
    }
    not_expired(&doc, now)?;
    Ok(Trusted { doc, bytes })
}

/// Fetches a document whose length and hash another signed document gives.
fn fetch_described(
    fetcher: &dyn Fetcher,
    what: &str,
    meta: &MetaInfo,
) -> Result<Vec<u8>, VerifyError> {
    let bytes = fetch_to_vec(fetcher, what, meta.length).map_err(|source| VerifyError::Fetch {
        what: what.into(),
        source,
    })?;
    if bytes.len() as u64 != meta.length {
        return Err(VerifyError::WrongLength {
            what: what.into(),
            expected: meta.length,
            found: bytes.len() as u64,
        });
    }
    let found = Sha256Digest::of(&bytes);
    if found != meta.hashes.sha256 {
        return Err(VerifyError::WrongHash {
            what: what.into(),
            expected: meta.hashes.sha256,
            found,
        });
    }
    Ok(bytes)
}

fn verify_doc<T: Role>(bytes: &[u8], root: &Root, what: &str) -> Result<T, VerifyError> {
    let meta_err = |source| VerifyError::Metadata {
        what: what.to_string(),
        source,
    };
    let envelope = Envelope::parse(bytes).map_err(meta_err)?;
    envelope
        .verify(&root.keyring(T::TYPE).map_err(meta_err)?)
        .map_err(meta_err)
}

fn no_rollback(what: &str, trusted: u64, offered: u64) -> Result<(), VerifyError> {
    if offered < trusted {
        return Err(VerifyError::Rollback {
            what: what.to_string(),
            trusted,
            offered,
        });
    }
    Ok(())
}

fn not_expired<T: Role>(doc: &T, now: floor::Timestamp) -> Result<(), VerifyError> {
    if doc.expires() <= now {
        return Err(VerifyError::Expired {
            role: T::TYPE,
            expires: doc.expires(),
            now,
        });
    }
    Ok(())
}

fn repo_of(
    root: &Root,
    ts: &Timestamp,
    snap: &Snapshot,
    targets: &Trusted<Targets>,
) -> VerifiedRepo {
    VerifiedRepo {
        root_version: root.version,
        timestamp_version: ts.version,
        snapshot_version: snap.version,
        targets_version: targets.doc.version,
        targets_sha256: Sha256Digest::of(&targets.bytes),
        targets_expires: targets.doc.expires,
        targets: targets.doc.targets.clone(),
    }
}
