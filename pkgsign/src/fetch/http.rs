//! Fetching over HTTPS with bounded retries, a minimum transfer rate and
//! transparent resumption of broken downloads (`Range` + `If-Range`).
//! Two additions for a node that polls: a conditional fetch
//! ([`HttpFetcher::fetch_if_none_match`], `If-None-Match` → 304) so an
//! empty check costs no body, and [`HttpFetcher::fetch_from`] to continue a
//! download that an earlier run left half done.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::header::{
    HeaderMap, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE,
};
use reqwest::StatusCode;

use super::{check_relative_path, FetchError, Fetcher, LimitedReader};
use crate::net::{explain, NetError};

/// How hard to try, and how slow a server may be.
#[derive(Debug, Clone)]
pub struct DownloadPolicy {
    /// Attempts per file, counting the first (connection failures, 5xx
    /// answers, broken or too-slow transfers each use one).
    pub max_attempts: u32,
    /// Wait before the first retry; doubles each time up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// The average rate over every `rate_window` must reach this (bytes/s),
    /// or the transfer is abandoned: a read timeout alone does not stop a
    /// server that trickles one byte at a time.
    pub min_rate: u64,
    /// The window `min_rate` is averaged over.
    pub rate_window: Duration,
}

impl Default for DownloadPolicy {
    fn default() -> Self {
        DownloadPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            min_rate: 4096,
            rate_window: Duration::from_secs(30),
        }
    }
}

/// A repository served under an HTTP(S) base URL.
#[derive(Debug, Clone)]
pub struct HttpFetcher {
    base: String,
    client: Client,
    policy: DownloadPolicy,
}

impl HttpFetcher {
    /// `base` like `https://boot.example.org/repo` (a trailing `/` is fine).
    pub fn new(base: &str, client: Client, policy: DownloadPolicy) -> Result<Self, NetError> {
        let parsed =
            reqwest::Url::parse(base).map_err(|e| NetError::BadUrl(format!("{base}: {e}")))?;
        if !matches!(parsed.scheme(), "https" | "http") {
            return Err(NetError::BadUrl(format!("{base}: not an http(s) URL")));
        }
        Ok(HttpFetcher {
            base: base.trim_end_matches('/').to_string(),
            client,
            policy,
        })
    }

    fn url(&self, relative_path: &str) -> String {
        format!("{}/{}", self.base, relative_path)
    }
}

impl HttpFetcher {
    fn body(&self, url: String, offset: u64, validator: Option<String>) -> ResumingBody {
        ResumingBody {
            client: self.client.clone(),
            policy: self.policy.clone(),
            url,
            response: None,
            offset,
            total: None,
            validator,
            if_none_match: None,
            failures: 0,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    /// Like [`Fetcher::fetch`], but sends `If-None-Match: <etag>` and
    /// returns `Ok(None)` when the server answers 304 Not Modified (the
    /// file still has that entity tag; `etag` is sent as given, quotes
    /// included). A server that ignores the header sends the file.
    pub fn fetch_if_none_match(
        &self,
        relative_path: &str,
        max_len: u64,
        etag: &str,
    ) -> Result<Option<Box<dyn Read + Send>>, FetchError> {
        check_relative_path(relative_path)?;
        let url = self.url(relative_path);
        let mut body = self.body(url.clone(), 0, None);
        body.if_none_match = Some(etag.to_string());
        match body.connect() {
            Ok(()) => {}
            Err(FetchError::Status { status: 304, .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(Some(limited(body, max_len, url)?))
    }
}

/// Refuses a body whose announced total exceeds `max_len` before reading
/// it, and cuts it at `max_len` otherwise (counting from the body's start
/// offset, since `max_len` limits the whole file).
fn limited(
    body: ResumingBody,
    max_len: u64,
    url: String,
) -> Result<Box<dyn Read + Send>, FetchError> {
    if let Some(total) = body.total {
        if total > max_len {
            return Err(FetchError::TooLong {
                location: url,
                limit: max_len,
            });
        }
    }
    let remaining = max_len.saturating_sub(body.offset);
    Ok(Box::new(LimitedReader::new(body, remaining, url)))
}

impl Fetcher for HttpFetcher {
    fn fetch(&self, relative_path: &str, max_len: u64) -> Result<Box<dyn Read + Send>, FetchError> {
        check_relative_path(relative_path)?;
        let url = self.url(relative_path);
        let mut body = self.body(url.clone(), 0, None);
        body.connect()?;
        limited(body, max_len, url)
    }

    fn location(&self, relative_path: &str) -> String {
        self.url(relative_path)
    }

    /// Continues a download that an earlier run stopped after `offset`
    /// bytes: asks for `Range: bytes=<offset>-` with `If-Range: <validator>`
    /// (the entity tag the file must still have) and yields the rest of the
    /// file, at most `max_len - offset` bytes (`max_len` is the whole file's
    /// limit). Breaks in this run are resumed as in [`Fetcher::fetch`]. A
    /// server whose file no longer matches `validator` answers with the
    /// whole file, which is [`FetchError::Changed`]: start again from 0.
    fn fetch_from(
        &self,
        relative_path: &str,
        offset: u64,
        validator: &str,
        max_len: u64,
    ) -> Result<Box<dyn Read + Send>, FetchError> {
        check_relative_path(relative_path)?;
        let url = self.url(relative_path);
        if offset == 0 {
            return self.fetch(relative_path, max_len);
        }
        if offset > max_len {
            return Err(FetchError::TooLong {
                location: url,
                limit: max_len,
            });
        }
        let mut body = self.body(url.clone(), offset, Some(validator.to_string()));
        body.connect()?;
        limited(body, max_len, url)
    }
}

/// The body of one file, re-requested from where it broke off when the
/// connection fails. Readers never see the break.
struct ResumingBody {
    client: Client,
    policy: DownloadPolicy,
    url: String,
    response: Option<Response>,
    offset: u64,
    /// Full length, when the server said it.
    total: Option<u64>,
    /// `ETag` (strong) or `Last-Modified` of the first response, sent as `If-Range`.
    validator: Option<String>,
    /// Sent as `If-None-Match` on the first request; a 304 answer ends the
    /// fetch with `FetchError::Status { status: 304 }`.
    if_none_match: Option<String>,
    failures: u32,
    window_start: Instant,
    window_bytes: u64,
}

enum Attempt {
    Retry(String),
    Fatal(FetchError),
}

impl ResumingBody {
    /// Opens (or reopens at `offset`) the response, retrying with backoff.
    fn connect(&mut self) -> Result<(), FetchError> {
        loop {
            match self.try_connect() {
                Ok(response) => {
                    self.response = Some(response);
                    self.window_start = Instant::now();
                    self.window_bytes = 0;
                    return Ok(());
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(reason)) => self.back_off(reason)?,
            }
        }
    }

    /// Counts a failure, then sleeps, saying what it waits for; fails when
    /// the attempts are used up.
    fn back_off(&mut self, reason: String) -> Result<(), FetchError> {
        self.failures += 1;
        if self.failures >= self.policy.max_attempts {
            return Err(FetchError::Network {
                location: self.url.clone(),
                reason: format!("{reason} (gave up after {} attempts)", self.failures),
            });
        }
        let exponent = self.failures.saturating_sub(1).min(16);
        let delay = self
            .policy
            .initial_backoff
            .saturating_mul(1 << exponent)
            .min(self.policy.max_backoff);
        tracing::warn!(
            "{}: {reason}; retrying {} in {:.1} s (attempt {} of {})",
            self.url,
            if self.offset > 0 {
                format!("from byte {}", self.offset)
            } else {
                "the download".into()
            },
            delay.as_secs_f64(),
            self.failures + 1,
            self.policy.max_attempts
        );
        std::thread::sleep(delay);
        Ok(())
    }

    fn try_connect(&mut self) -> Result<Response, Attempt> {
        let mut request = self.client.get(&self.url);
        if let (0, Some(etag)) = (self.offset, &self.if_none_match) {
            request = request.header(IF_NONE_MATCH, etag.as_str());
        }
        if self.offset > 0 {
            request = request.header(RANGE, format!("bytes={}-", self.offset));
            if let Some(validator) = &self.validator {
                request = request.header(IF_RANGE, validator.as_str());
            }
        }
        let response = request
            .send()
            .map_err(|e| Attempt::Retry(explain(&e).to_string()))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Err(Attempt::Fatal(FetchError::NotFound {
                location: self.url.clone(),
            }));
        }
        if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            return Err(Attempt::Retry(format!(
                "server answered HTTP {}",
                status.as_u16()
            )));
        }
        if self.offset == 0 {
            if status != StatusCode::OK {
                return Err(Attempt::Fatal(FetchError::Status {
                    location: self.url.clone(),
                    status: status.as_u16(),
                }));
            }
            self.total = header_u64(response.headers(), CONTENT_LENGTH);
            self.validator = validator_of(response.headers());
            return Ok(response);
        }
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok());
                if range.and_then(parse_content_range_start) != Some(self.offset) {
                    return Err(Attempt::Fatal(FetchError::Network {
                        location: self.url.clone(),
                        reason: format!("resume at byte {} got a different range", self.offset),
                    }));
                }
                // A download continued from an earlier run learns the
                // file's length here, so an early close is resumed too.
                if self.total.is_none() {
                    self.total = range.and_then(parse_content_range_total);
                }
                Ok(response)
            }
            // If-Range did not match (or the server ignores ranges): the
            // bytes already passed on cannot be taken back.
            StatusCode::OK => Err(Attempt::Fatal(FetchError::Changed {
                location: self.url.clone(),
            })),
            other => Err(Attempt::Fatal(FetchError::Status {
                location: self.url.clone(),
                status: other.as_u16(),
            })),
        }
    }

    fn check_rate(&mut self) -> Result<(), FetchError> {
        let elapsed = self.window_start.elapsed();
        if elapsed < self.policy.rate_window {
            return Ok(());
        }
        let needed = (self.policy.min_rate as f64 * elapsed.as_secs_f64()) as u64;
        if self.window_bytes < needed {
            return Err(FetchError::TooSlow {
                location: self.url.clone(),
                min_rate: self.policy.min_rate,
                window_secs: self.policy.rate_window.as_secs(),
            });
        }
        self.window_start = Instant::now();
        self.window_bytes = 0;
        Ok(())
    }
}

impl Read for ResumingBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.response.is_none() {
                self.connect().map_err(io::Error::other)?;
            }
            let Some(response) = self.response.as_mut() else {
                continue;
            };
            let reason = match response.read(buf) {
                Ok(0) => match self.total {
                    Some(total) if self.offset < total => {
                        format!("connection closed after {} of {total} bytes", self.offset)
                    }
                    _ => return Ok(0),
                },
                Ok(n) => {
                    self.offset += n as u64;
                    self.window_bytes += n as u64;
                    if let Err(slow) = self.check_rate() {
                        self.response = None;
                        self.back_off(slow.to_string())
                            .map_err(|_| io::Error::other(slow))?;
                    }
                    return Ok(n);
                }
                Err(e) => match e.get_ref() {
                    Some(inner) => crate::net::explain_chain(inner).to_string(),
                    None => e.to_string(),
                },
            };
            self.response = None;
            self.back_off(reason).map_err(io::Error::other)?;
        }
    }
}

fn header_u64(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn validator_of(headers: &HeaderMap) -> Option<String> {
    let etag = headers.get(ETAG).and_then(|v| v.to_str().ok());
    match etag {
        Some(tag) if !tag.starts_with("W/") => Some(tag.to_string()),
        _ => headers
            .get(LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}

/// `bytes START-END/TOTAL` → START.
fn parse_content_range_start(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix("bytes ")?;
    rest.split('-').next()?.trim().parse().ok()
}

/// `bytes START-END/TOTAL` → TOTAL (`*` → unknown).
fn parse_content_range_total(value: &str) -> Option<u64> {
    value.trim().rsplit('/').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range_start("bytes */200"), None);
        assert_eq!(parse_content_range_total("bytes 100-199/200"), Some(200));
        assert_eq!(parse_content_range_total("bytes 100-199/*"), None);
    }
}
