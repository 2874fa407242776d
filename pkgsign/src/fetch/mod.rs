//! Where repository files come from: a directory or an HTTPS base URL.
//!
//! A [`Fetcher`] opens `metadata/…` and `targets/…` relative to a base and
//! never yields more than the caller's limit: one byte more is an
//! [`FetchError::TooLong`] error (the "endless data" attack).

mod dir;
mod http;

use std::io::{self, Read};

pub use dir::DirFetcher;
pub use http::{DownloadPolicy, HttpFetcher};

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The file does not exist (a missing file, or HTTP 404). Ends the root
    /// walk normally; never retried.
    #[error("{location}: not found")]
    NotFound {
        /// The path or URL asked for.
        location: String,
    },
    /// The source has more than the caller's limit (the endless-data attack).
    #[error("{location}: longer than the allowed {limit} bytes")]
    TooLong {
        /// The path or URL.
        location: String,
        /// The limit in bytes: a signed length, or a fixed bound for
        /// documents whose length nothing signed yet.
        limit: u64,
    },
    /// Reading failed (local file system, or a broken stream).
    #[error("{location}: {source}")]
    Io {
        /// The path or URL.
        location: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The server answered with a status not worth retrying (a 4xx other
    /// than 404, 408 and 429; 304 for a conditional fetch; an unexpected
    /// answer to a resume).
    #[error("{location}: server answered HTTP {status}")]
    Status {
        /// The URL.
        location: String,
        /// The last status received.
        status: u16,
    },
    /// The server could not be reached, the TLS handshake failed, it kept
    /// answering 5xx, or the transfer kept breaking, through every attempt
    /// the [`DownloadPolicy`] allows; also a resume answered with another
    /// range than asked. `reason` is one readable line ([`crate::net::explain`]).
    #[error("{location}: {reason}")]
    Network {
        /// The URL.
        location: String,
        /// Why, for people.
        reason: String,
    },
    /// The transfer fell below the minimum rate over a whole window on the
    /// last attempt allowed (the slow-retrieval attack).
    #[error("{location}: transfer slower than {min_rate} bytes/s over {window_secs} s (slow-retrieval defence)")]
    TooSlow {
        /// The URL.
        location: String,
        /// [`DownloadPolicy::min_rate`], bytes per second.
        min_rate: u64,
        /// [`DownloadPolicy::rate_window`] in seconds.
        window_secs: u64,
    },
    /// A resumed download got the whole file back (`If-Range` did not
    /// match): the file changed on the server, so the part already read is
    /// worthless.
    #[error("{location}: the file changed on the server during the download")]
    Changed {
        /// The URL.
        location: String,
    },
    /// The relative path asked for is absolute, empty, or has `.`/`..`
    /// components: a caller bug or a hostile document, never fetched.
    #[error("invalid relative path {0:?}")]
    BadPath(String),
}

impl FetchError {
    /// Whether the file simply does not exist ([`FetchError::NotFound`]).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FetchError::NotFound { .. })
    }

    /// Recovers a `FetchError` carried inside an `io::Error` from a fetched
    /// stream, or wraps the `io::Error`.
    pub fn from_io(location: &str, err: io::Error) -> FetchError {
        if err.get_ref().is_some_and(|inner| inner.is::<FetchError>()) {
            if let Some(inner) = err.into_inner() {
                if let Ok(fetch) = inner.downcast::<FetchError>() {
                    return *fetch;
                }
            }
            return FetchError::Io {
                location: location.into(),
                source: io::Error::other("stream error"),
            };
        }
        FetchError::Io {
            location: location.into(),
            source: err,
        }
    }
}

/// A source of repository files.
pub trait Fetcher: Send + Sync {
    /// Opens `relative_path` (like `metadata/timestamp.json`). The stream
    /// fails with an error carrying [`FetchError::TooLong`] if the file has
    /// more than `max_len` bytes.
    fn fetch(&self, relative_path: &str, max_len: u64) -> Result<Box<dyn Read + Send>, FetchError>;

    /// Where `relative_path` lives, for messages (a path or a URL).
    fn location(&self, relative_path: &str) -> String;

    /// Continues a file an earlier attempt stopped after `offset` bytes,
    /// provided it is still the file with entity tag `validator` (quotes
    /// included, as in `If-Range`); yields the bytes after `offset`, at
    /// most `max_len - offset` (`max_len` limits the whole file). A source
    /// that cannot continue, or whose file changed, answers
    /// [`FetchError::Changed`]: start again from the first byte.
    fn fetch_from(
        &self,
        relative_path: &str,
        offset: u64,
        validator: &str,
        max_len: u64,
    ) -> Result<Box<dyn Read + Send>, FetchError> {
        let _ = (offset, validator, max_len);
        Err(FetchError::Changed {
            location: self.location(relative_path),
        })
    }
}

/// Reads a whole file of at most `max_len` bytes.
pub fn fetch_to_vec(
    fetcher: &dyn Fetcher,
    relative_path: &str,
    max_len: u64,
) -> Result<Vec<u8>, FetchError> {
    let mut reader = fetcher.fetch(relative_path, max_len)?;
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|e| FetchError::from_io(&fetcher.location(relative_path), e))?;
    Ok(out)
}

/// Checks that a relative path stays below the base: no empty, `.` or `..`
/// components, not absolute, printable ASCII only.
pub fn check_relative_path(path: &str) -> Result<(), FetchError> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && path.bytes().all(|b| b.is_ascii_graphic())
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(FetchError::BadPath(path.to_string()))
    }
}

/// Passes through at most `limit` bytes and fails if the source has more.
#[derive(Debug)]
pub struct LimitedReader<R> {
    inner: R,
    remaining: u64,
    limit: u64,
    location: String,
}

impl<R: Read> LimitedReader<R> {
    /// Reads `inner` up to `limit` bytes; a byte past it fails the read with
    /// [`FetchError::TooLong`] naming `location` (inside an `io::Error`;
    /// [`FetchError::from_io`] gets it back).
    pub fn new(inner: R, limit: u64, location: String) -> Self {
        LimitedReader {
            inner,
            remaining: limit,
            limit,
            location,
        }
    }
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            // Probe for one more byte: its presence is the error.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(FetchError::TooLong {
                    location: self.location.clone(),
                    limit: self.limit,
                })),
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limited_reader_allows_exact_and_rejects_one_more() {
        let mut exact = LimitedReader::new(&b"abcd"[..], 4, "x".into());
        let mut out = Vec::new();
        exact.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcd");
        let mut longer = LimitedReader::new(&b"abcde"[..], 4, "x".into());
        let err = longer.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(matches!(
            FetchError::from_io("x", err),
            FetchError::TooLong { limit: 4, .. }
        ));
    }

    #[test]
    fn relative_paths() {
        assert!(check_relative_path("metadata/1.root.json").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a/./b", "a b"] {
            assert!(check_relative_path(bad).is_err(), "{bad}");
        }
    }
}
