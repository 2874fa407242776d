//! Serving the published repository: `/repo/metadata/*` and
//! `/repo/targets/*`, with strong ETags (the file's SHA-256, stable across
//! publishes), `If-None-Match`, single `Range` requests with `If-Range`
//! (so a node resumes a download), and keep-alive.
//!
//! A request is answered only for a name in the current snapshot's index:
//! the path a file is opened from is never built from request text, so
//! `..`, encoded slashes or symlinks cannot reach anything else.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::reply::Failure;
use super::App;
use crate::input::{etag_matches, parse_range, ByteRange, RangeRequest};
use crate::repo_store::{self, SnapshotIndex};

/// Files up to this size are kept in memory after their first request.
const CACHE_FILE_MAX: u64 = 1 << 20;
/// Total memory for cached files.
const CACHE_TOTAL: u64 = 64 << 20;
/// Read size when streaming a large file.
const CHUNK: usize = 256 * 1024;

struct FileEntry {
    path: PathBuf,
    length: u64,
    etag: HeaderValue,
    content_type: &'static str,
    immutable: bool,
    cached: OnceLock<Bytes>,
}

struct Snapshot {
    files: HashMap<String, Arc<FileEntry>>,
    /// The version of its `timestamp.json` (verified when it was published).
    timestamp_version: Option<u64>,
}

/// The server's view of the published repository; follows the `repo`
/// symlink when a publish switches it.
pub struct RepoFiles {
    link: PathBuf,
    current: Mutex<Option<(PathBuf, Arc<Snapshot>)>>,
    cached_bytes: AtomicU64,
}

/// The snapshot it serves and how much it caches, not the cached bytes.
impl std::fmt::Debug for RepoFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = match self.current.try_lock() {
            Ok(guard) => guard
                .as_ref()
                .map(|(dir, snapshot)| (dir.clone(), snapshot.files.len())),
            Err(_) => None,
        };
        f.debug_struct("RepoFiles")
            .field("link", &self.link)
            .field("current_dir_and_files", &current)
            .field("cached_bytes", &self.cached_bytes.load(Ordering::Relaxed))
            .finish()
    }
}

impl RepoFiles {
    pub fn new(link: &Path) -> RepoFiles {
        RepoFiles {
            link: link.to_path_buf(),
            current: Mutex::new(None),
            cached_bytes: AtomicU64::new(0),
        }
    }

    /// The current snapshot, reloading its index when the link moved.
    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        let dir = repo_store::current_snapshot(&self.link)?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((loaded, snap)) = current.as_ref() {
            if *loaded == dir {
                return Some(snap.clone());
            }
        }
        let index = match SnapshotIndex::load(&dir) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "cannot load the published repository's index");
                return None;
            }
        };
        let files = index
            .files
            .iter()
            .filter_map(|(key, entry)| {
                let (area, name) = repo_store::split_key(key)?;
                let file = FileEntry {
                    path: dir.join(area).join(name),
                    length: entry.length,
                    etag: HeaderValue::from_str(&format!("\"{}\"", entry.sha256)).ok()?,
                    content_type: content_type(name),
                    immutable: area == "targets",
                    cached: OnceLock::new(),
                };
                Some((key.clone(), Arc::new(file)))
            })
            .collect();
        let timestamp_version = std::fs::read(dir.join("metadata/timestamp.json"))
            .ok()
            .and_then(|bytes| {
                pkgsign::metadata::parse_unverified::<pkgsign::metadata::Timestamp>(&bytes).ok()
            })
            .map(|(_, ts)| ts.version);
        let snap = Arc::new(Snapshot {
            files,
            timestamp_version,
        });
        tracing::info!(snapshot = %dir.display(), files = snap.files.len(), "serving repository snapshot");
        // Cached bytes of the old snapshot are freed with it.
        self.cached_bytes.store(0, Ordering::Relaxed);
        *current = Some((dir, snap.clone()));
        Some(snap)
    }
}

impl RepoFiles {
    /// The `timestamp.json` version being served, if a repository is.
    pub fn timestamp_version(&self) -> Option<u64> {
        self.snapshot()?.timestamp_version
    }
}

fn content_type(name: &str) -> &'static str {
    if name.ends_with(".json") {
        "application/json"
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        "application/gzip"
    } else {
        "application/octet-stream"
    }
}

pub async fn serve(
    State(app): State<Arc<App>>,
    UrlPath((area, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match serve_file(&app, &area, &name, &headers).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

async fn serve_file(
    app: &App,
    area: &str,
    name: &str,
    headers: &HeaderMap,
) -> Result<Response, Failure> {
    let key = format!("{area}/{name}");
    let not_found =
        || Failure::not_found(format!("/repo/{key} is not in the published repository"));
    if repo_store::split_key(&key).is_none() {
        return Err(not_found());
    }
    if area == "targets" && !app.settings.serve_packages {
        return Err(Failure::not_found(format!(
            "/repo/{key}: this server serves the signed metadata only; packages come from the repository's mirrors"
        )));
    }
    let snapshot = app.repo.snapshot().ok_or_else(|| {
        Failure::not_found(
            "no repository has been published on this server (bootserver repo publish)",
        )
    })?;
    let file = snapshot.files.get(&key).cloned().ok_or_else(not_found)?;

    let mut builder = Response::builder()
        .header(header::ETAG, file.etag.clone())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::CACHE_CONTROL,
            if file.immutable {
                "public, max-age=31536000, immutable"
            } else {
                // Metadata changes with every publish: always revalidate.
                "no-cache"
            },
        );

    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if etag_matches(inm, file.etag.to_str().unwrap_or("")) {
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .map_err(|e| Failure::internal_error(&e));
        }
    }

    let if_range_ok = headers
        .get(header::IF_RANGE)
        // If-Range compares strongly: the exact ETag or nothing.
        .map(|v| v.as_bytes() == file.etag.as_bytes())
        .unwrap_or(true);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if if_range_ok => parse_range(v, file.length),
        _ => RangeRequest::Whole,
    };
    let (status, span) = match range {
        RangeRequest::Whole => (
            StatusCode::OK,
            ByteRange {
                start: 0,
                end: file.length,
            },
        ),
        RangeRequest::Part(r) => {
            builder = builder.header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", r.start, r.end - 1, file.length),
            );
            (StatusCode::PARTIAL_CONTENT, r)
        }
        RangeRequest::Unsatisfiable => {
            let mut f = Failure::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the file has {} bytes", file.length),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", file.length)) {
                f.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(f);
        }
    };

    let body = body_for(app, &file, span).await?;
    builder
        .status(status)
        .header(header::CONTENT_TYPE, file.content_type)
        .header(header::CONTENT_LENGTH, span.end - span.start)
        .body(body)
        .map_err(|e| Failure::internal_error(&e))
}

async fn body_for(app: &App, file: &Arc<FileEntry>, span: ByteRange) -> Result<Body, Failure> {
    let read_failed = |e: std::io::Error| {
        tracing::error!(file = %file.path.display(), error = %e, "reading a repository file failed");
        Failure::internal("reading the file failed")
    };
    if file.length <= CACHE_FILE_MAX {
        let bytes = match file.cached.get() {
            Some(b) => b.clone(),
            None => {
                let data = Bytes::from(tokio::fs::read(&file.path).await.map_err(read_failed)?);
                if data.len() as u64 != file.length {
                    return Err(read_failed(std::io::Error::other(
                        "its size differs from the published index",
                    )));
                }
                let budget = &app.repo.cached_bytes;
                if budget.fetch_add(file.length, Ordering::Relaxed) + file.length <= CACHE_TOTAL {
                    let _ = file.cached.set(data.clone());
                } else {
                    budget.fetch_sub(file.length, Ordering::Relaxed);
                }
                data
            }
        };
        return Ok(Body::from(
            bytes.slice(span.start as usize..span.end as usize),
        ));
    }
    let mut f = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&file.path)
        .await
        .map_err(read_failed)?;
    if span.start > 0 {
        f.seek(SeekFrom::Start(span.start))
            .await
            .map_err(read_failed)?;
    }
    f.set_max_buf_size(CHUNK);
    let remaining = span.end - span.start;
    let stream = futures_util::stream::unfold((f, remaining), |(mut f, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let want = remaining.min(CHUNK as u64) as usize;
        let mut buf = BytesMut::with_capacity(want);
        match f.read_buf(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file is shorter than published",
                )),
                (f, 0),
            )),
            Ok(n) => Some((Ok(buf.freeze()), (f, remaining - n as u64))),
            Err(e) => Some((Err(e), (f, 0))),
        }
    });
    Ok(Body::from_stream(stream))
}
