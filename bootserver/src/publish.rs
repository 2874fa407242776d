//! `bootserver repo publish DIR`: take a signed repository made by
//! `pkgsign`, verify it exactly as a node will, and serve it.
//!
//! The copy is verified, not the source (which could change between a
//! check and a copy): the repository is copied into a staging snapshot
//! first, pkgsign's verifier runs on that copy against the server's own
//! trusted state (so an unsigned, tampered or older repository is refused,
//! like a node would refuse it), every package the signed targets name must
//! be there with its signed length and hash, and only then is the snapshot
//! switched in. Publishes are serialised by a lock on the working directory.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use config::Timestamp;
use pkgsign::fetch::DirFetcher;
use pkgsign::verify::{Verifier, VerifyError};

use crate::model::RepoPublish;
use crate::registry::{self, RegistryError};
use crate::repo_store::{self, StoreError};
use crate::workdir::WorkDir;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the server has no trusted root for the repository yet: give --root ROOT.json (the root metadata the boot CDs carry) on the first publish")]
    NoTrustedRoot,
    #[error("{}: cannot read the root metadata: {source}", path.display())]
    ReadRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the repository does not verify: {0}")]
    Verify(#[from] VerifyError),
    #[error(
        "package {name}: {path} is named by the signed targets but missing from the repository"
    )]
    MissingPackage { name: String, path: String },
    #[error("package {name}: {path} has {found}, but the signed targets say {expected}")]
    PackageMismatch {
        name: String,
        path: String,
        expected: String,
        found: String,
    },
    #[error("{}: cannot take the publish lock: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("recording the publish: {0}")]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("no repository has been published yet (`bootserver repo publish`)")]
    NothingPublished,
    #[error("the published repository is not a node OS release")]
    NotARelease(#[source] config::release::ReleaseError),
}

/// The node OS release the server publishes now, as the nodes will compute
/// it from the signed targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedRelease {
    /// The release id (`config::release`).
    pub deployment: config::release::DeploymentId,
    /// Its `base` version.
    pub os_version: String,
    /// The signed targets version it came in.
    pub targets_version: u64,
}

/// Reads the release from the server's trusted state (what the last
/// publish verified); no network, no expiry check.
pub fn published_release(wd: &WorkDir) -> Result<PublishedRelease, PublishError> {
    let trust_dir = wd.trust_dir();
    let root_path = trust_dir.join("root.json");
    let root = match fs::read(&root_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PublishError::NothingPublished)
        }
        Err(source) => {
            return Err(PublishError::ReadRoot {
                path: root_path,
                source,
            })
        }
    };
    let verifier = Verifier::open(&trust_dir, &root)?;
    let repo = verifier
        .trusted_repo()
        .ok_or(PublishError::NothingPublished)?;
    let signed: Vec<config::release::SignedPackage<'_>> = repo
        .targets
        .iter()
        .map(|(name, info)| config::release::SignedPackage {
            name,
            version: &info.version,
            sha256: info.sha256().0,
        })
        .collect();
    let deployment = config::release::deployment_id(&signed).map_err(PublishError::NotARelease)?;
    Ok(PublishedRelease {
        os_version: deployment.os_version().to_string(),
        deployment,
        targets_version: repo.targets_version,
    })
}

/// An exclusive lock held while publishing (released on drop).
struct PublishLock {
    _file: fs::File,
}

impl PublishLock {
    fn take(path: &Path) -> Result<PublishLock, PublishError> {
        let lock_err = |source| PublishError::Lock {
            path: path.to_path_buf(),
            source,
        };
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(lock_err)?;
        // SAFETY: flock on a descriptor we own; it does not touch memory.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(lock_err(std::io::Error::last_os_error()));
        }
        Ok(PublishLock { _file: file })
    }
}

/// Verifies and publishes the repository at `source`. `initial_root` is the
/// repository's root metadata for the first publish; later publishes trust
/// what the server accepted before (and follow signed root rotations).
pub fn publish(
    wd: &WorkDir,
    source: &Path,
    initial_root: Option<&Path>,
) -> Result<RepoPublish, PublishError> {
    let _lock = PublishLock::take(&wd.root().join("repo.lock"))?;
    let trust_dir = wd.trust_dir();
    let root_bytes = match initial_root {
        Some(path) => fs::read(path).map_err(|source| PublishError::ReadRoot {
            path: path.to_path_buf(),
            source,
        })?,
        None => {
            let stored = trust_dir.join("root.json");
            match fs::read(&stored) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(PublishError::NoTrustedRoot)
                }
                Err(source) => {
                    return Err(PublishError::ReadRoot {
                        path: stored,
                        source,
                    })
                }
            }
        }
    };

    let store = wd.repo_store();
    let (staging, index) = repo_store::stage_copy(source, &store)?;
    let result = verify_and_activate(wd, &trust_dir, &root_bytes, &staging, &index);
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

fn verify_and_activate(
    wd: &WorkDir,
    trust_dir: &Path,
    root_bytes: &[u8],
    staging: &Path,
    index: &repo_store::SnapshotIndex,
) -> Result<RepoPublish, PublishError> {
    let mut verifier = Verifier::open(trust_dir, root_bytes)?;
    let update = verifier.check(&DirFetcher::new(staging), SystemTime::now())?;
    let repo = update.repo().clone();
    for (name, info) in &repo.targets {
        let entry = index
            .files
            .get(&info.path)
            .ok_or_else(|| PublishError::MissingPackage {
                name: name.clone(),
                path: info.path.clone(),
            })?;
        let expected_hash = info.sha256().to_string();
        if entry.length != info.length || entry.sha256 != expected_hash {
            return Err(PublishError::PackageMismatch {
                name: name.clone(),
                path: info.path.clone(),
                expected: format!("{} bytes, sha256 {expected_hash}", info.length),
                found: format!("{} bytes, sha256 {}", entry.length, entry.sha256),
            });
        }
    }
    // Trust moves forward before the switch: if the switch then fails, a
    // retry of the same repository is still accepted (same versions), while
    // an older one is refused either way.
    verifier.commit(update)?;

    let store = wd.repo_store();
    let link = wd.repo_link();
    let previous = repo_store::current_snapshot(&link)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let name = repo_store::activate(staging, index, &store, &link)?;
    let mut keep = vec![name.as_str()];
    if let Some(prev) = previous.as_deref() {
        keep.push(prev);
    }
    match repo_store::prune(&store, &keep) {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(?removed, "old repository snapshots removed")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not remove old repository snapshots"),
    }

    let record = RepoPublish {
        published_at: Timestamp::now(),
        snapshot_dir: name,
        root_version: repo.root_version,
        targets_version: repo.targets_version,
        snapshot_version: repo.snapshot_version,
        timestamp_version: repo.timestamp_version,
        packages: repo.targets.len() as u64,
        bytes: index.total_bytes(),
    };
    let conn = wd.open_db()?;
    registry::record_publish(&conn, &record)?;
    Ok(record)
}
