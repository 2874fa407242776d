//! Where the verifier's documents come from during an update check.
//!
//! A node polls every few minutes and almost always finds nothing new, so
//! an empty check must be cheap. The verifier always walks the same chain
//! (`N+1.root.json` until not found, `timestamp.json`, then the snapshot
//! and targets versions the newer document names); this source answers it
//! with as little traffic as possible and without weakening any check:
//!
//! - `timestamp.json` is asked for conditionally (`If-None-Match` with the
//!   trusted copy's entity tag, which the boot server defines as the file's
//!   SHA-256, DESIGN.md §2). A 304 hands the verifier the trusted bytes,
//!   which it verifies again (signatures, expiry) like any other answer.
//! - A snapshot or targets document is taken from the trusted state only
//!   when the document just passed to the verifier names exactly those
//!   bytes (same SHA-256): the verifier checks length and hash anyway.
//! - Everything else goes to the server.
//!
//! It also counts what went over the network: requests and body bytes.

use std::collections::HashMap;
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pkgsign::fetch::{FetchError, Fetcher, HttpFetcher};
use pkgsign::metadata::{parse_unverified, Sha256Digest, Snapshot, Timestamp};

/// pkgsign's verifier state files (in the trust directory).
const TRUSTED_TIMESTAMP: &str = "timestamp.json";
const TRUSTED_SNAPSHOT: &str = "snapshot.json";
const TRUSTED_TARGETS: &str = "targets.json";
const TIMESTAMP_PATH: &str = "metadata/timestamp.json";

/// What one check sent over the network.
#[derive(Debug, Default)]
pub struct Traffic {
    requests: AtomicU64,
    bytes: AtomicU64,
    not_modified: AtomicU64,
}

impl Traffic {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    /// Response body bytes received.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// Conditional requests answered 304.
    pub fn not_modified(&self) -> u64 {
        self.not_modified.load(Ordering::Relaxed)
    }
    pub fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.not_modified.store(0, Ordering::Relaxed);
    }
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn received(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub(crate) fn not_modified_hit(&self) {
        self.not_modified.fetch_add(1, Ordering::Relaxed);
    }
}

/// Package downloads into the cache count as this check's traffic.
impl pkgsign::cache::Watch for Traffic {
    fn request(&self) {
        Traffic::request(self);
    }
    fn received(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    fn resumed(&self, package: &str, offset: u64) {
        crate::console::line(&format!(
            "updater: package {package}: continuing the download at byte {offset}"
        ));
    }
}

/// A stream that counts what it reads into [`Traffic`].
#[derive(Debug)]
pub struct Counted<R> {
    inner: R,
    traffic: Arc<Traffic>,
}

impl<R> Counted<R> {
    pub fn new(inner: R, traffic: Arc<Traffic>) -> Counted<R> {
        Counted { inner, traffic }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.traffic.received(n);
        Ok(n)
    }
}

/// The entity tag the boot server gives a repository file (DESIGN.md §2).
pub fn etag_of(sha256: &Sha256Digest) -> String {
    sha256.etag()
}

/// The verifier's fetcher for an update check (see the module docs).
#[derive(Debug)]
pub struct MetadataSource<'a> {
    http: &'a HttpFetcher,
    trust_dir: PathBuf,
    traffic: Arc<Traffic>,
    /// Hashes that documents already handed out name, by relative path.
    named: Mutex<HashMap<String, Sha256Digest>>,
}

impl<'a> MetadataSource<'a> {
    pub fn new(http: &'a HttpFetcher, trust_dir: &Path, traffic: Arc<Traffic>) -> Self {
        MetadataSource {
            http,
            trust_dir: trust_dir.to_path_buf(),
            traffic,
            named: Mutex::new(HashMap::new()),
        }
    }

    fn trusted(&self, file: &str) -> Option<Vec<u8>> {
        std::fs::read(self.trust_dir.join(file)).ok()
    }

    /// Remembers which snapshot or targets bytes a document names, so the
    /// next request for it can be answered from the trusted state.
    fn note(&self, relative_path: &str, bytes: &[u8]) {
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        if relative_path == TIMESTAMP_PATH {
            if let Ok((_, ts)) = parse_unverified::<Timestamp>(bytes) {
                let m = &ts.meta.snapshot;
                named.insert(
                    format!("metadata/{}.snapshot.json", m.version),
                    m.hashes.sha256,
                );
            }
        } else if relative_path.ends_with(".snapshot.json") {
            if let Ok((_, snap)) = parse_unverified::<Snapshot>(bytes) {
                let m = &snap.meta.targets;
                named.insert(
                    format!("metadata/{}.targets.json", m.version),
                    m.hashes.sha256,
                );
            }
        }
    }

    /// The trusted copy of `relative_path` if the chain names exactly it.
    fn trusted_copy(&self, relative_path: &str) -> Option<Vec<u8>> {
        let file = if relative_path.ends_with(".snapshot.json") {
            TRUSTED_SNAPSHOT
        } else if relative_path.ends_with(".targets.json") {
            TRUSTED_TARGETS
        } else {
            return None;
        };
        let wanted = *self
            .named
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(relative_path)?;
        let bytes = self.trusted(file)?;
        (Sha256Digest::of(&bytes) == wanted).then_some(bytes)
    }

    /// Reads a whole document from the network (at most `max_len` bytes).
    fn read_all(
        &self,
        relative_path: &str,
        reader: Box<dyn Read + Send>,
    ) -> Result<Vec<u8>, FetchError> {
        let mut out = Vec::new();
        Counted::new(reader, self.traffic.clone())
            .read_to_end(&mut out)
            .map_err(|e| FetchError::from_io(&self.http.location(relative_path), e))?;
        Ok(out)
    }
}

impl Fetcher for MetadataSource<'_> {
    fn fetch(&self, relative_path: &str, max_len: u64) -> Result<Box<dyn Read + Send>, FetchError> {
        if !relative_path.starts_with("metadata/") {
            self.traffic.request();
            let reader = self.http.fetch(relative_path, max_len)?;
            return Ok(Box::new(Counted::new(reader, self.traffic.clone())));
        }
        if let Some(bytes) = self.trusted_copy(relative_path) {
            self.note(relative_path, &bytes);
            return Ok(Box::new(Cursor::new(bytes)));
        }
        let bytes = match (relative_path, self.trusted(TRUSTED_TIMESTAMP)) {
            (TIMESTAMP_PATH, Some(trusted)) => {
                self.traffic.request();
                let tag = etag_of(&Sha256Digest::of(&trusted));
                match self
                    .http
                    .fetch_if_none_match(relative_path, max_len, &tag)?
                {
                    None => {
                        self.traffic.not_modified.fetch_add(1, Ordering::Relaxed);
                        trusted
                    }
                    Some(reader) => self.read_all(relative_path, reader)?,
                }
            }
            _ => {
                self.traffic.request();
                let reader = self.http.fetch(relative_path, max_len)?;
                self.read_all(relative_path, reader)?
            }
        };
        self.note(relative_path, &bytes);
        Ok(Box::new(Cursor::new(bytes)))
    }

    fn location(&self, relative_path: &str) -> String {
        self.http.location(relative_path)
    }
}
