//! A directory of verified package files that downloads can resume into.
//!
//! A package arrives in `DIR/<its repository path>.part` and is renamed to
//! `DIR/<its repository path>` only when its length and SHA-256 match the
//! signed ones (through [`VerifiedReader`]), so the directory can be read
//! as a repository by a [`DirFetcher`]: every complete file in it is a
//! verified package. When a download stops early (the server went away,
//! the machine rebooted) the `.part` file stays, and the next attempt
//! continues it with `Range` + `If-Range` (the entity tag is the signed
//! SHA-256, so a server only continues the very file that was signed);
//! the kept bytes are hashed again on the way. A file that does not match
//! its signed hash is deleted: it could never be installed.
//!
//! ```
//! use pkgsign::cache::{PackageCache, Quiet};
//! use pkgsign::fetch::DirFetcher;
//! # fn example(repo: &pkgsign::VerifiedRepo) -> Result<(), Box<dyn std::error::Error>> {
//! let cache = PackageCache::new("/plnode/cache");
//! let package = repo.package("base").ok_or("no base package")?;
//! // From any source: an HTTPS boot server, a mirror, a directory.
//! let fetched = cache.ensure(&DirFetcher::new("/srv/repo"), &package, &Quiet)?;
//! println!("{} bytes downloaded, {} kept", fetched.downloaded, fetched.kept);
//! // The cache reads as a repository of verified packages.
//! let from_cache = cache.fetcher();
//! # let _ = from_cache; Ok(()) }
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::fetch::{DirFetcher, FetchError, Fetcher};
use crate::verified::{Expected, Mismatch, VerifiedReader};
use crate::verify::VerifiedPackage;

/// Why a package could not be put into the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The source could not be reached or the transfer broke for good; the
    /// partial file is kept for the next attempt.
    #[error("package {package}: download stopped (kept {kept} bytes to continue next time)")]
    Network {
        /// The package.
        package: String,
        /// Bytes kept in the partial file.
        kept: u64,
        /// What went wrong.
        #[source]
        source: FetchError,
    },
    /// The source sent something other than the signed package; nothing
    /// of it is kept.
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
    /// The source offered more bytes than the signed length.
    #[error("package {package}: refused")]
    TooLong {
        /// The package.
        package: String,
        /// The source's refusal.
        #[source]
        source: FetchError,
    },
    /// The cache directory could not be written.
    #[error("package {package}: {}", path.display())]
    Local {
        /// The package.
        package: String,
        /// The file or directory.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
}

impl CacheError {
    /// Whether the package itself was refused (as opposed to a network or
    /// disk problem that another attempt may not have).
    pub fn is_refusal(&self) -> bool {
        matches!(self, CacheError::Mismatch(_) | CacheError::TooLong { .. })
    }
}

/// What [`PackageCache::ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    /// Bytes transferred in this call.
    pub downloaded: u64,
    /// Bytes that were already in the cache (complete or partial).
    pub kept: u64,
}

/// Observes downloads into the cache (traffic counters, progress bars,
/// log lines). Every method does nothing unless overridden.
pub trait Watch {
    /// A request is about to be sent.
    fn request(&self) {}
    /// `bytes` more bytes of the package arrived.
    fn received(&self, bytes: u64) {
        let _ = bytes;
    }
    /// The download continues a partial file at byte `offset`.
    fn resumed(&self, package: &str, offset: u64) {
        let _ = (package, offset);
    }
}

/// A [`Watch`] that watches nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Watch for Quiet {}

/// The package files of an install or update, verified (see the module docs).
#[derive(Debug, Clone)]
pub struct PackageCache {
    dir: PathBuf,
}

impl PackageCache {
    /// A cache in `dir` (created when the first package arrives).
    pub fn new(dir: impl Into<PathBuf>) -> PackageCache {
        PackageCache { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fetcher that reads the cache as a repository directory.
    pub fn fetcher(&self) -> DirFetcher {
        DirFetcher::new(self.dir.clone())
    }

    /// Where a complete, verified package lives.
    pub fn complete_path(&self, package: &VerifiedPackage) -> PathBuf {
        self.dir.join(&package.info().path)
    }

    fn partial_path(&self, package: &VerifiedPackage) -> PathBuf {
        let mut p = self.complete_path(package).into_os_string();
        p.push(".part");
        PathBuf::from(p)
    }

    /// Bytes of `package` already in the cache (complete or partial).
    pub fn have(&self, package: &VerifiedPackage) -> u64 {
        let len = |p: PathBuf| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        len(self.complete_path(package))
            .max(len(self.partial_path(package)))
            .min(package.info().length)
    }

    /// Removes every package file except those of `keep` (complete or
    /// partial). Returns the names of the files removed.
    pub fn retain(&self, keep: &[VerifiedPackage]) -> Vec<String> {
        let wanted: Vec<PathBuf> = keep
            .iter()
            .flat_map(|p| [self.complete_path(p), self.partial_path(p)])
            .collect();
        let mut removed = Vec::new();
        let Ok(entries) = fs::read_dir(self.dir.join("targets")) else {
            return removed;
        };
        for e in entries.flatten() {
            let path = e.path();
            if !wanted.contains(&path) && fs::remove_file(&path).is_ok() {
                removed.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        removed
    }

    /// Makes sure the verified `package` is complete in the cache,
    /// transferring from `source` only what is missing.
    pub fn ensure(
        &self,
        source: &dyn Fetcher,
        package: &VerifiedPackage,
        watch: &dyn Watch,
    ) -> Result<Fetched, CacheError> {
        let name = package.name().to_string();
        let info = package.info();
        let expected = Expected::of_package(package);
        let complete = self.complete_path(package);
        let partial = self.partial_path(package);
        let local = |path: &Path| {
            let (package, path) = (name.clone(), path.to_path_buf());
            move |source| CacheError::Local {
                package,
                path,
                source,
            }
        };
        if let Ok(file) = File::open(&complete) {
            let mut check = VerifiedReader::new(file, expected.clone());
            if io::copy(&mut check, &mut io::sink()).is_ok() {
                return Ok(Fetched {
                    downloaded: 0,
                    kept: info.length,
                });
            }
            floor::durable::remove_file(&complete).map_err(|e| local(&complete)(e.into()))?;
        }
        if let Some(dir) = partial.parent() {
            fs::create_dir_all(dir).map_err(local(dir))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)
            .map_err(local(&partial))?;
        let mut kept = file.metadata().map_err(local(&partial))?.len();
        if kept > info.length {
            file.set_len(0).map_err(local(&partial))?;
            kept = 0;
        }
        // A source that announces more than the signed length (a file or a
        // Content-Length too long) is refused before a byte is read, like
        // one that sends more: nothing it gave is kept for the next attempt.
        let not_opened = |file: &File, kept: u64, source: FetchError| match source {
            FetchError::TooLong { .. } => {
                drop(file.set_len(0));
                let _ = fs::remove_file(&partial);
                CacheError::TooLong {
                    package: name.clone(),
                    source,
                }
            }
            source => CacheError::Network {
                package: name.clone(),
                kept,
                source,
            },
        };
        let network = |kept: u64, source: FetchError| CacheError::Network {
            package: name.clone(),
            kept,
            source,
        };
        let rest: Box<dyn Read + Send> = if kept == info.length {
            // Complete but not yet renamed when the last attempt ended.
            Box::new(io::empty())
        } else if kept > 0 {
            watch.request();
            match source.fetch_from(&info.path, kept, &info.sha256().etag(), info.length) {
                Ok(r) => {
                    watch.resumed(&name, kept);
                    r
                }
                // The source's file is not the one we started, or it cannot
                // continue: begin again.
                Err(FetchError::Changed { .. }) | Err(FetchError::Status { .. }) => {
                    file.set_len(0).map_err(local(&partial))?;
                    kept = 0;
                    watch.request();
                    source
                        .fetch(&info.path, info.length)
                        .map_err(|e| not_opened(&file, 0, e))?
                }
                Err(e) => return Err(not_opened(&file, kept, e)),
            }
        } else {
            watch.request();
            source
                .fetch(&info.path, info.length)
                .map_err(|e| not_opened(&file, 0, e))?
        };
        let held = File::open(&partial).map_err(local(&partial))?.take(kept);
        let (mut verified, _) =
            VerifiedReader::resume(held, rest, expected).map_err(local(&partial))?;
        let mut buf = vec![0u8; 1 << 16];
        let mut downloaded = 0u64;
        loop {
            let n = match verified.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let refused = |source: CacheError| {
                        drop(file.set_len(0));
                        let _ = fs::remove_file(&partial);
                        source
                    };
                    return Err(match Mismatch::take(e) {
                        Ok(mismatch) => refused(CacheError::Mismatch(mismatch)),
                        Err(e) => match FetchError::from_io(&source.location(&info.path), e) {
                            e @ FetchError::TooLong { .. } => refused(CacheError::TooLong {
                                package: name.clone(),
                                source: e,
                            }),
                            other => {
                                let _ = file.sync_data();
                                network(kept + downloaded, other)
                            }
                        },
                    });
                }
            };
            file.write_all(&buf[..n]).map_err(local(&partial))?;
            downloaded += n as u64;
            watch.received(n as u64);
        }
        file.sync_all().map_err(local(&partial))?;
        drop(file);
        floor::durable::rename(&partial, &complete).map_err(|e| local(&complete)(e.into()))?;
        Ok(Fetched { downloaded, kept })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{Hashes, Sha256Digest, TargetInfo};

    fn package(content: &[u8]) -> VerifiedPackage {
        let info = TargetInfo {
            version: "1".into(),
            length: content.len() as u64,
            hashes: Hashes {
                sha256: Sha256Digest::of(content),
            },
            path: format!("targets/{}.base-1.tar.gz", Sha256Digest::of(content)),
            unpacked_length: None,
            base_image: false,
            custom: serde_json::Map::new(),
        };
        VerifiedPackage::for_tests("base", info)
    }

    fn repo_with(dir: &Path, p: &VerifiedPackage, content: &[u8]) {
        let path = dir.join(&p.info().path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    #[test]
    fn a_package_arrives_verified_and_is_not_fetched_twice() {
        let (repo, cache_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let content = b"the signed package bytes".repeat(1000);
        let p = package(&content);
        repo_with(repo.path(), &p, &content);
        let cache = PackageCache::new(cache_dir.path());
        let f = cache
            .ensure(&DirFetcher::new(repo.path()), &p, &Quiet)
            .unwrap();
        assert_eq!(
            f,
            Fetched {
                downloaded: content.len() as u64,
                kept: 0
            }
        );
        assert_eq!(fs::read(cache.complete_path(&p)).unwrap(), content);
        let f = cache
            .ensure(&DirFetcher::new(repo.path()), &p, &Quiet)
            .unwrap();
        assert_eq!(
            f,
            Fetched {
                downloaded: 0,
                kept: content.len() as u64
            }
        );
    }

    #[test]
    fn a_partial_file_is_continued_and_its_kept_bytes_checked() {
        let (repo, cache_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let content: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let p = package(&content);
        repo_with(repo.path(), &p, &content);
        let cache = PackageCache::new(cache_dir.path());
        let partial = cache.partial_path(&p);
        fs::create_dir_all(partial.parent().unwrap()).unwrap();
        fs::write(&partial, &content[..40_000]).unwrap();
        let f = cache
            .ensure(&DirFetcher::new(repo.path()), &p, &Quiet)
            .unwrap();
        assert_eq!(
            f,
            Fetched {
                downloaded: 60_000,
                kept: 40_000
            }
        );
        assert_eq!(fs::read(cache.complete_path(&p)).unwrap(), content);
        assert!(!partial.exists());

        // Kept bytes that are not the signed ones: refused, nothing left.
        let other = tempfile::tempdir().unwrap();
        let cache = PackageCache::new(other.path());
        let partial = cache.partial_path(&p);
        fs::create_dir_all(partial.parent().unwrap()).unwrap();
        fs::write(&partial, vec![0xffu8; 40_000]).unwrap();
        let e = cache
            .ensure(&DirFetcher::new(repo.path()), &p, &Quiet)
            .unwrap_err();
        assert!(
            matches!(e, CacheError::Mismatch(Mismatch::WrongHash { .. })),
            "{e}"
        );
        assert!(e.is_refusal());
        assert!(!partial.exists() && !cache.complete_path(&p).exists());
    }

    #[test]
    fn a_swapped_or_damaged_file_is_refused_and_removed() {
        let (repo, cache_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let p = package(b"signed");
        repo_with(repo.path(), &p, b"evil!!");
        let cache = PackageCache::new(cache_dir.path());
        let e = cache
            .ensure(&DirFetcher::new(repo.path()), &p, &Quiet)
            .unwrap_err();
        assert!(e.to_string().contains("differs from the signed"), "{e}");
        assert!(!cache.complete_path(&p).exists());
        assert!(!cache.partial_path(&p).exists());
        // A complete file damaged in the cache is fetched again.
        repo_with(repo.path(), &p, b"signed");
        fs::write(cache.complete_path(&p), b"rotten").unwrap();
        let f = cache
            .ensure(&DirFetcher::new(repo.path()), &p, &Quiet)
            .unwrap();
        assert_eq!(f.downloaded, 6);
        assert_eq!(fs::read(cache.complete_path(&p)).unwrap(), b"signed");
    }

    #[test]
    fn a_source_announcing_more_than_signed_is_refused_and_leaves_nothing() {
        let (repo, cache_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let p = package(b"signed");
        let cache = PackageCache::new(cache_dir.path());
        let partial = cache.partial_path(&p);
        fs::create_dir_all(partial.parent().unwrap()).unwrap();
        // Kept from an earlier attempt at the same hostile source; then the
        // source offers more than the signed length, whether the download
        // starts over or resumes.
        for kept in [&b""[..], b"evi"] {
            fs::write(&partial, kept).unwrap();
            repo_with(repo.path(), &p, b"evil and more");
            let e = cache
                .ensure(&DirFetcher::new(repo.path()), &p, &Quiet)
                .unwrap_err();
            assert!(matches!(e, CacheError::TooLong { .. }), "{e}");
            assert!(e.is_refusal());
            assert!(!partial.exists(), "kept bytes of a refused source");
            // So the signed file, from anywhere, arrives in one attempt.
            repo_with(repo.path(), &p, b"signed");
            cache
                .ensure(&DirFetcher::new(repo.path()), &p, &Quiet)
                .unwrap();
            fs::remove_file(cache.complete_path(&p)).unwrap();
        }
    }

    #[test]
    fn a_missing_source_keeps_what_arrived() {
        let cache_dir = tempfile::tempdir().unwrap();
        let p = package(b"0123456789");
        let cache = PackageCache::new(cache_dir.path());
        let partial = cache.partial_path(&p);
        fs::create_dir_all(partial.parent().unwrap()).unwrap();
        fs::write(&partial, b"01234").unwrap();
        let nowhere = tempfile::tempdir().unwrap();
        let e = cache
            .ensure(&DirFetcher::new(nowhere.path()), &p, &Quiet)
            .unwrap_err();
        assert!(matches!(e, CacheError::Network { kept: 5, .. }), "{e}");
        assert!(!e.is_refusal());
        assert_eq!(fs::read(&partial).unwrap(), b"01234");
        assert_eq!(cache.have(&p), 5);
        assert_eq!(
            cache.retain(&[]),
            [partial.file_name().unwrap().to_string_lossy()]
        );
    }
}
