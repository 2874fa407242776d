//! Downloading changed packages into `/plnode/cache`, resumable across runs.
//!
//! A package goes to `cache/<its repository path>.part` while it arrives
//! and is renamed to `cache/<its repository path>` once its length and
//! SHA-256 match the signed ones, so the installer can read the cache as a
//! repository directory. Within a run, pkgsign's fetcher resumes broken
//! transfers itself; when the run ends early (server gone, node rebooted,
//! updater restarted) the `.part` file stays, and the next run continues it
//! with `Range` + `If-Range` (the entity tag is the signed SHA-256, so the
//! server only continues the very file that was signed). A package that
//! does not match its signed hash is deleted: it would never install.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pkgsign::fetch::{FetchError, Fetcher, HttpFetcher};
use pkgsign::VerifiedPackage;
use sha2::{Digest, Sha256};

use super::metadata::{etag_of, Counted, Traffic};

/// Why a package could not be downloaded.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server could not be reached or the transfer broke for good; the
    /// partial file is kept for the next run.
    #[error("package {name}: {source} (kept {kept} bytes to continue next time)")]
    Network {
        name: String,
        kept: u64,
        #[source]
        source: FetchError,
    },
    /// The server sent something other than the signed package.
    #[error("package {name}: {reason}")]
    Refused { name: String, reason: String },
    #[error("package {name}: {}: {source}", path.display())]
    Local {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The package files of an update, in the partition's cache.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: &Path) -> Cache {
        Cache {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// Bytes of `package` already on disk (complete or partial).
    pub fn have(&self, package: &VerifiedPackage) -> u64 {
        let len = |p: PathBuf| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        len(self.complete_path(package))
            .max(len(self.partial_path(package)))
            .min(package.info().length)
    }

    /// Removes every file except those of `keep` (complete or partial).
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

    /// Makes sure the verified `package` is in the cache, downloading what
    /// is missing. Returns the bytes fetched in this call.
    pub fn fetch(
        &self,
        http: &HttpFetcher,
        package: &VerifiedPackage,
        traffic: &Arc<Traffic>,
    ) -> Result<u64, DownloadError> {
        let name = package.name().to_string();
        let info = package.info();
        let complete = self.complete_path(package);
        let partial = self.partial_path(package);
        let local = |path: &Path| {
            let (name, path) = (name.clone(), path.to_path_buf());
            move |source| DownloadError::Local { name, path, source }
        };
        if let Ok(found) = hash_file(&complete, info.length) {
            if found == Some(info.sha256().0) {
                return Ok(0);
            }
            let _ = fs::remove_file(&complete);
        }
        if let Some(dir) = partial.parent() {
            fs::create_dir_all(dir).map_err(local(dir))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&partial)
            .map_err(local(&partial))?;
        let mut kept = file.metadata().map_err(local(&partial))?.len();
        if kept > info.length {
            file.set_len(0).map_err(local(&partial))?;
            kept = 0;
        }
        // The hash covers the kept bytes too: read them once more.
        let mut hasher = Sha256::new();
        if kept > 0 {
            let mut f = File::open(&partial).map_err(local(&partial))?;
            io::copy(&mut (&mut f).take(kept), &mut HashWriter(&mut hasher))
                .map_err(local(&partial))?;
        }
        let network = |kept: u64, source: FetchError| DownloadError::Network {
            name: name.clone(),
            kept,
            source,
        };
        let reader: Box<dyn Read + Send> = if kept == info.length {
            // Complete but not yet renamed when the last run ended.
            Box::new(io::empty())
        } else if kept > 0 {
            traffic.request();
            match http.fetch_from(&info.path, kept, &etag_of(info.sha256()), info.length) {
                Ok(r) => {
                    crate::console::line(&format!(
                        "updater: package {name}: continuing the download at byte {kept}"
                    ));
                    r
                }
                // The server's file is not the one we started: begin again.
                Err(FetchError::Changed { .. }) | Err(FetchError::Status { .. }) => {
                    file.set_len(0).map_err(local(&partial))?;
                    kept = 0;
                    hasher = Sha256::new();
                    traffic.request();
                    http.fetch(&info.path, info.length)
                        .map_err(|e| network(0, e))?
                }
                Err(e) => return Err(network(kept, e)),
            }
        } else {
            traffic.request();
            http.fetch(&info.path, info.length)
                .map_err(|e| network(0, e))?
        };
        let mut reader = Counted::new(reader, traffic.clone());
        let mut got = kept;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = file.sync_data();
                    let e = FetchError::from_io(&http.location(&info.path), e);
                    return Err(match e {
                        FetchError::TooLong { .. } => {
                            drop(file);
                            let _ = fs::remove_file(&partial);
                            DownloadError::Refused {
                                name: name.clone(),
                                reason: e.to_string(),
                            }
                        }
                        other => network(got, other),
                    });
                }
            };
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(local(&partial))?;
            got += n as u64;
        }
        let found: [u8; 32] = hasher.finalize().into();
        if got != info.length || found != info.sha256().0 {
            drop(file);
            let _ = fs::remove_file(&partial);
            return Err(DownloadError::Refused {
                name,
                reason: if got != info.length {
                    format!("{got} bytes, but the signed length is {}", info.length)
                } else {
                    format!(
                        "sha256 {} differs from the signed {} (the server's file is not the one that was signed)",
                        hex::encode(found),
                        hex::encode(info.sha256().0)
                    )
                },
            });
        }
        file.sync_all().map_err(local(&partial))?;
        drop(file);
        fs::rename(&partial, &complete).map_err(local(&complete))?;
        Ok(got - kept)
    }
}

/// SHA-256 of a file of exactly `length` bytes; `None` if its size differs.
fn hash_file(path: &Path, length: u64) -> io::Result<Option<[u8; 32]>> {
    let mut f = File::open(path)?;
    if f.metadata()?.len() != length {
        return Ok(None);
    }
    let mut hasher = Sha256::new();
    io::copy(&mut f, &mut HashWriter(&mut hasher))?;
    Ok(Some(hasher.finalize().into()))
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
