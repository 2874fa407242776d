//! Installing verified packages: one streaming pass per package into a
//! staging directory beside the destination, then an atomic swap.
//!
//! ```text
//! source → length limit → verified (sha256 + length) → gunzip   [decoder thread]
//! → checked tar entries, each name created in archive order     [caller's thread]
//!   → files' content, owners and modes                          [writer thread]
//! → DEST.staging-… → syncfs → swap → old tree removed
//! ```
//!
//! Every extraction rule is decided on the caller's thread against the
//! tree on disk; the writer only fills in files that thread created.
//!
//! While the tree is written, a background thread flushes the file system
//! every few tens of megabytes, so that the syncfs before the swap has
//! little left to wait for.
//!
//! The hash and length are checked by [`crate::verified::VerifiedReader`]
//! when the stream ends; the installer reads every package to its end, so
//! nothing is committed unless every byte was the signed one.
//!
//! Any failure removes the staging directory and leaves the destination
//! as it was.

mod decode;
mod extract;
mod manifest;
mod swap;
mod write;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

pub use extract::{extract_tar, ExtractError, ExtractPolicy, ExtractStats};
pub use manifest::{
    verify_tree, EntryKind, Manifest, ManifestEntry, ManifestError, TreeError, TreeProblem,
};
pub use swap::remove_tree;

use crate::fetch::{FetchError, Fetcher};
use crate::verified::{Expected, Mismatch, VerifiedReader};
use crate::verify::VerifiedPackage;

/// Why an install failed. The destination is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A package could not be fetched (opening the source or reading it).
    #[error("package {package}: {source}")]
    Fetch {
        /// The package's name in the targets.
        package: String,
        /// Why.
        #[source]
        source: FetchError,
    },
    /// A package's archive broke an extraction rule, was unreadable, or
    /// could not be written; its bytes were the signed ones.
    #[error("package {package}: {source}")]
    Extract {
        /// The package's name in the targets.
        package: String,
        /// Why.
        #[source]
        source: ExtractError,
    },
    /// The package was not the signed one; when its archive also failed
    /// to extract, that is said too (the mismatch is the reason).
    #[error("{source}{}", .also.as_ref().map(|a| format!(" (and the archive failed: {a})")).unwrap_or_default())]
    Mismatch {
        /// Which package, and how its bytes differed (length or hash).
        #[source]
        source: Mismatch,
        /// The extraction error the wrong bytes also caused, if any.
        also: Option<Box<ExtractError>>,
    },
    /// Preparing or committing the destination failed (creating the
    /// staging directory, syncing, the swap).
    #[error("{path}: {source}")]
    Io {
        /// The path being worked on.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The package list was empty: an install of nothing would replace the
    /// destination with an empty tree.
    #[error("no packages to install")]
    Nothing,
}

/// Progress: bytes of packages read so far, and in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Compressed bytes read so far, over all packages.
    pub done: u64,
    /// The sum of the packages' signed lengths.
    pub total: u64,
}

/// How to install.
#[derive(Default)]
pub struct InstallOptions<'a> {
    /// Put each package in `DEST/<name>/` instead of merging all into `DEST`.
    pub into_subdirs: bool,
    /// Called as bytes arrive.
    pub progress: Option<&'a (dyn Fn(Progress) + Sync)>,
}

impl fmt::Debug for InstallOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallOptions")
            .field("into_subdirs", &self.into_subdirs)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What an install did.
#[derive(Debug, Clone)]
pub struct InstallReport {
    /// Every entry now in the destination (with `into_subdirs`, paths start
    /// with the package name).
    pub manifest: Manifest,
    /// Compressed bytes read.
    pub bytes: u64,
    /// Bytes of regular-file content written.
    pub unpacked_bytes: u64,
    /// Entries written, over all packages.
    pub entries: u64,
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Installs `packages` into `dest` (see the module docs).
///
/// # Example
///
/// Install a verified package, then check the tree against the manifest the
/// install returned (as a node does at every boot). The repository is made
/// on the spot with [`crate::repo::Repository`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::SystemTime;
///
/// use pkgsign::fetch::DirFetcher;
/// use pkgsign::install::{install, verify_tree, InstallError, InstallOptions};
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
/// # let initial_root = std::fs::read(repo_dir.join("metadata/1.root.json"))?;
/// # let mut verifier = Verifier::open(&work.path().join("trust"), &initial_root)?;
/// let fetcher = DirFetcher::new(&repo_dir);
/// let repo = verifier.update(&fetcher, SystemTime::now())?;
/// let packages = repo.packages(&["hello"]).expect("listed in the signed targets");
///
/// let dest = work.path().join("root");
/// let report = install(&fetcher, &packages, &dest, &InstallOptions::default())?;
/// assert_eq!(std::fs::read(dest.join("hello.txt"))?, b"hello\n");
/// assert!(report.manifest.entries.contains_key("hello.txt"));
///
/// // Later: the tree still is what was installed (`true` re-hashes files).
/// verify_tree(&dest, &report.manifest, true)?;
///
/// // A package file swapped on the server is refused, and `dest` is kept.
/// let on_server = repo_dir.join(&packages[0].info().path);
/// let mut swapped = std::fs::read(&on_server)?;
/// let last = swapped.len() - 1;
/// swapped[last] ^= 0xff;
/// std::fs::write(&on_server, swapped)?;
/// let refused = install(&fetcher, &packages, &dest, &InstallOptions::default());
/// assert!(matches!(refused, Err(InstallError::Mismatch { .. })));
/// verify_tree(&dest, &report.manifest, true)?;
/// # Ok(())
/// # }
/// ```
pub fn install(
    fetcher: &dyn Fetcher,
    packages: &[VerifiedPackage],
    dest: &Path,
    options: &InstallOptions<'_>,
) -> Result<InstallReport, InstallError> {
    if packages.is_empty() {
        return Err(InstallError::Nothing);
    }
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Io { path, source }
    };
    let started = std::time::Instant::now();
    swap::remove_stale(dest);
    let staging = swap::Staging::create(dest).map_err(io_err(dest))?;
    let total: u64 = packages.iter().map(|p| p.info().length).sum();
    let mut report = InstallReport {
        manifest: Manifest::default(),
        bytes: 0,
        unpacked_bytes: 0,
        entries: 0,
    };
    let background_sync = swap::BackgroundSync::start(staging.path()).map_err(io_err(dest))?;
    for package in packages {
        let (root, prefix) = if options.into_subdirs {
            let dir = staging.path().join(package.name());
            std::fs::create_dir(&dir).map_err(io_err(&dir))?;
            report
                .manifest
                .entries
                .insert(package.name().to_string(), dir_entry());
            (dir, format!("{}/", package.name()))
        } else {
            (staging.path().to_path_buf(), String::new())
        };
        let done_before = report.bytes;
        let progress = |done: u64| {
            if let Some(callback) = options.progress {
                callback(Progress {
                    done: done_before + done,
                    total,
                });
            }
        };
        let stats = install_one(
            fetcher,
            package,
            &root,
            &prefix,
            &mut report.manifest,
            &progress,
            &|| background_sync.request(),
        )?;
        report.bytes += package.info().length;
        report.unpacked_bytes += stats.unpacked_bytes;
        report.entries += stats.entries;
    }
    let extracted = started.elapsed();
    background_sync.finish();
    let waited = started.elapsed();
    set_root_mode(staging.path()).map_err(io_err(staging.path()))?;
    swap::sync_filesystem(staging.path()).map_err(io_err(staging.path()))?;
    let synced = started.elapsed();
    staging.commit(dest).map_err(io_err(dest))?;
    tracing::debug!(
        "installed {} entries into {}: extracted after {extracted:.2?}, background \
         flush done after {waited:.2?}, final syncfs done after {synced:.2?}, swapped \
         after {:.2?}",
        report.entries,
        dest.display(),
        started.elapsed()
    );
    Ok(report)
}

fn dir_entry() -> ManifestEntry {
    ManifestEntry {
        kind: EntryKind::Dir,
        mode: 0o755,
        size: 0,
        sha256: None,
        link: None,
        owner: None,
        rdev: None,
    }
}

/// The staging directory was created 0700; unless the archive set the
/// root's mode, it becomes 0755 like any directory.
fn set_root_mode(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if mode == 0o700 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Bytes of tar stream between background flushes.
const FLUSH_EVERY: u64 = 32 << 20;
/// Chunks of tar stream in flight between the decoder and the extractor.
const CHUNKS_IN_FLIGHT: usize = 8;

/// Streams one package into `root`.
fn install_one(
    fetcher: &dyn Fetcher,
    package: &VerifiedPackage,
    root: &Path,
    prefix: &str,
    manifest: &mut Manifest,
    progress: &(dyn Fn(u64) + Sync),
    flush: &(dyn Fn() + Sync),
) -> Result<ExtractStats, InstallError> {
    let info = package.info();
    let name = package.name().to_string();
    let policy = ExtractPolicy {
        base_image: info.base_image,
        preserve_ownership: info.base_image && running_as_root(),
        max_unpacked: info.unpacked_limit(),
    };
    let source = fetcher
        .fetch(&info.path, info.length)
        .map_err(|source| InstallError::Fetch {
            package: name.clone(),
            source,
        })?;
    let location = fetcher.location(&info.path);
    let source = VerifiedReader::new(source, Expected::of_package(package));

    std::thread::scope(|scope| {
        let (data_tx, data_rx) = sync_channel(CHUNKS_IN_FLIGHT);
        let (spare_tx, spare_rx) = sync_channel(CHUNKS_IN_FLIGHT + 2);
        let decoder = std::thread::Builder::new()
            .name("pkgsign-decode".into())
            .spawn_scoped(scope, move || {
                decode::decode(source, data_tx, spare_rx, progress, flush, FLUSH_EVERY)
            })
            .map_err(|source| InstallError::Io {
                path: root.to_path_buf(),
                source,
            })?;
        let extracted = extract::extract_buffered(
            decode::ChunkReader::new(data_rx, spare_tx),
            root,
            prefix,
            &policy,
            manifest,
        );
        // The extractor has hung up; the decoder reads the rest, so that
        // the whole package is verified whatever happened here.
        let read = decoder
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("decoder thread panicked")));
        match read.map_err(Mismatch::take) {
            Ok(()) => {}
            Err(Ok(mismatch)) => {
                return Err(InstallError::Mismatch {
                    source: mismatch,
                    also: extracted.err().map(Box::new),
                })
            }
            Err(Err(e)) => {
                return Err(InstallError::Fetch {
                    package: name,
                    source: FetchError::from_io(&location, e),
                })
            }
        }
        extracted.map_err(|source| InstallError::Extract {
            package: name,
            source,
        })
    })
}
