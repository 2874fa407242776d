//! Talking to the boot server: authenticated JSON requests over HTTPS that
//! trust only the CD's CA, tried against each server URL in turn, with
//! failures explained (certificate, host name, clock, network).

use std::time::{Duration, SystemTime};

use config::api::auth::{self, Nonce, RESPONSE_SIG_HEADER};
use config::api::ApiError;
use config::node::{NodeId, NodeKey, ServerUrl};
use config::Timestamp;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No server could be reached; one reason per URL.
    #[error("no boot server reachable: {}", .0.iter().map(|(u, f)| format!("{u}: {f}")).collect::<Vec<_>>().join("; "))]
    Unreachable(Vec<(String, String)>),
    /// The server refused us (bad key, unknown node, bad request).
    #[error("{url} refused the request (HTTP {status} {code}): {message}")]
    Refused {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The API's error code (`unknown_node`, `bad_signature`, …).
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// Our clock is too far from the server's for it to accept the request.
    #[error("{url}: our clock is off (server time {server_time})")]
    Stale {
        /// The URL asked.
        url: String,
        /// The server's time, from its signed reply.
        server_time: Timestamp,
    },
    /// The reply was not what the API promises (or not signed for us).
    #[error("{url}: bad reply: {reason}")]
    BadReply {
        /// The URL asked.
        url: String,
        /// What is wrong with the reply.
        reason: String,
    },
}

/// A client that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Neither the node config nor the CD names a boot server.
    #[error("no boot server URL (neither the node config nor the CD names one)")]
    NoServer,
    /// The HTTPS client (CA, TLS settings, proxy) could not be built.
    #[error("building the HTTPS client")]
    Https(#[source] pkgsign::net::NetError),
}

/// A signed reply kept to ask for it again conditionally: its entity tag
/// and the body its signatures cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedReply {
    /// The reply's entity tag.
    pub etag: String,
    /// The body its signature covered.
    pub body: Vec<u8>,
}

/// The answer to a conditional request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditional {
    /// A new body (signature checked), with its entity tag.
    Changed(CachedReply),
    /// `304`: the cached body is still the answer (the signature, checked
    /// over the cached body, proves the server said so for this request).
    Unchanged,
}

/// What one exchange with one URL gave.
enum Exchange {
    Body(Vec<u8>, Option<String>),
    NotModified,
}

/// A node's client for the boot server API.
#[derive(Debug)]
pub struct ServerClient {
    urls: Vec<ServerUrl>,
    client: reqwest::blocking::Client,
    /// The node's identity; `None` for an unregistered node.
    identity: Option<(NodeId, NodeKey)>,
    /// Index of the URL that answered last: tried first next time.
    preferred: usize,
}

/// Largest reply the node accepts.
const MAX_REPLY: usize = 1 << 20;

impl ServerClient {
    /// A client trusting only `ca_pem`, asking `urls` in turn (through
    /// `proxy` if given), refusing certificates that expired before
    /// `clock_floor`, and signing as `identity` (`None`: an unregistered
    /// node, whose requests are not signed).
    pub fn new(
        ca_pem: &[u8],
        urls: Vec<ServerUrl>,
        proxy: Option<String>,
        clock_floor: SystemTime,
        identity: Option<(NodeId, NodeKey)>,
    ) -> Result<ServerClient, ClientError> {
        if urls.is_empty() {
            return Err(ClientError::NoServer);
        }
        let mut options = pkgsign::net::ClientOptions::new(ca_pem.to_vec());
        options.proxy = proxy;
        options.clock_floor = Some(clock_floor);
        options.connect_timeout = Duration::from_secs(10);
        options.read_timeout = Duration::from_secs(30);
        let client = pkgsign::net::build_client(&options).map_err(ClientError::Https)?;
        Ok(ServerClient {
            urls,
            client,
            identity,
            preferred: 0,
        })
    }

    /// The servers asked, in order.
    pub fn urls(&self) -> &[ServerUrl] {
        &self.urls
    }

    /// The HTTP client (trusting only the CD's CA), for repository downloads.
    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    /// The URL that answered last.
    pub fn current_url(&self) -> &ServerUrl {
        &self.urls[self.preferred.min(self.urls.len() - 1)]
    }

    /// POSTs `body` as JSON to `path` and returns the decoded reply.
    pub fn post<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, ServerError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ServerError::BadReply {
            url: path.into(),
            reason: format!("encoding the request: {e}"),
        })?;
        self.request("POST", path, bytes)
    }

    /// GETs `path` and decodes the reply.
    pub fn get<Resp: DeserializeOwned>(&mut self, path: &str) -> Result<Resp, ServerError> {
        self.request("GET", path, Vec::new())
    }

    /// GETs `path` conditionally: with `cached`, `If-None-Match` its entity
    /// tag, and a signed `304` means it is still the answer.
    pub fn get_if_changed(
        &mut self,
        path: &str,
        cached: Option<&CachedReply>,
    ) -> Result<Conditional, ServerError> {
        match self.exchange("GET", path, &[], cached)? {
            Exchange::NotModified => Ok(Conditional::Unchanged),
            Exchange::Body(body, etag) => Ok(Conditional::Changed(CachedReply {
                etag: etag.unwrap_or_default(),
                body,
            })),
        }
    }

    fn request<Resp: DeserializeOwned>(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Resp, ServerError> {
        match self.exchange(method, path, &body, None)? {
            Exchange::Body(bytes, _) => {
                let url = self.current_url().join(path);
                serde_json::from_slice(&bytes).map_err(|e| ServerError::BadReply {
                    url,
                    reason: format!("not the expected JSON: {e}"),
                })
            }
            Exchange::NotModified => Err(ServerError::BadReply {
                url: self.current_url().join(path),
                reason: "304 Not Modified to an unconditional request".into(),
            }),
        }
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        cached: Option<&CachedReply>,
    ) -> Result<Exchange, ServerError> {
        let mut failures = Vec::new();
        let n = self.urls.len();
        for k in 0..n {
            let i = (self.preferred + k) % n;
            let url = self.urls[i].join(path);
            match self.once(method, path, &url, body, cached) {
                Ok(reply) => {
                    self.preferred = i;
                    return Ok(reply);
                }
                Err(Attempt::Final(e)) => {
                    self.preferred = i;
                    return Err(e);
                }
                Err(Attempt::TryNext(reason)) => {
                    tracing::warn!("{}: {reason}", self.urls[i]);
                    failures.push((self.urls[i].to_string(), reason));
                }
            }
        }
        Err(ServerError::Unreachable(failures))
    }

    fn once(
        &self,
        method: &str,
        path: &str,
        url: &str,
        body: &[u8],
        cached: Option<&CachedReply>,
    ) -> Result<Exchange, Attempt> {
        let mut req = match method {
            "GET" => self.client.get(url),
            _ => self
                .client
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_vec()),
        };
        let mut nonce = None;
        if let Some((id, key)) = &self.identity {
            let n = fresh_nonce();
            let ts = Timestamp::now().unix();
            let header = auth::sign_request(key, *id, method, path, body, ts, n);
            req = req.header("authorization", header.to_header_value());
            nonce = Some(n);
        }
        if let Some(c) = cached.filter(|c| !c.etag.is_empty()) {
            req = req.header("if-none-match", c.etag.as_str());
        }
        let resp = req
            .send()
            .map_err(|e| Attempt::TryNext(pkgsign::net::explain(&e).to_string()))?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let sig = header(RESPONSE_SIG_HEADER);
        let etag = header("etag");
        let bytes =
            read_limited(resp).map_err(|e| Attempt::TryNext(format!("reading the reply: {e}")))?;
        // A 304 answers with the body we hold; the signature must cover it.
        let not_modified = status == 304 && cached.is_some();
        let signed_body = match (not_modified, cached) {
            (true, Some(c)) => c.body.as_slice(),
            _ => bytes.as_slice(),
        };
        if !(200..300).contains(&status) && !not_modified {
            let err: Option<ApiError> = serde_json::from_slice(&bytes).ok();
            return Err(match err {
                Some(ApiError {
                    error,
                    server_time: Some(t),
                    ..
                }) if error == "stale_timestamp" => Attempt::Final(ServerError::Stale {
                    url: url.into(),
                    server_time: t,
                }),
                Some(e) if status < 500 => Attempt::Final(ServerError::Refused {
                    url: url.into(),
                    status,
                    code: e.error,
                    message: e.message,
                }),
                Some(e) => Attempt::TryNext(format!("HTTP {status} {}: {}", e.error, e.message)),
                None if status < 500 => Attempt::Final(ServerError::Refused {
                    url: url.into(),
                    status,
                    code: "unknown".into(),
                    message: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
                }),
                None => Attempt::TryNext(format!("HTTP {status}")),
            });
        }
        if let (Some((_, key)), Some(n)) = (&self.identity, nonce) {
            let sig = sig.ok_or_else(|| {
                Attempt::Final(ServerError::BadReply {
                    url: url.into(),
                    reason: "the reply carries no response signature".into(),
                })
            })?;
            auth::verify_response(key, n, signed_body, &sig).map_err(|e| {
                Attempt::Final(ServerError::BadReply {
                    url: url.into(),
                    reason: format!("response signature: {e}"),
                })
            })?;
        }
        if not_modified {
            return Ok(Exchange::NotModified);
        }
        Ok(Exchange::Body(bytes, etag))
    }
}

enum Attempt {
    /// A network/TLS problem with this URL: the next URL may work.
    TryNext(String),
    /// The server answered: no point asking another.
    Final(ServerError),
}

fn read_limited(resp: reqwest::blocking::Response) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    resp.take(MAX_REPLY as u64 + 1).read_to_end(&mut out)?;
    if out.len() > MAX_REPLY {
        return Err(std::io::Error::other(format!(
            "reply larger than {MAX_REPLY} bytes"
        )));
    }
    Ok(out)
}

/// A nonce from the kernel's random source.
pub fn fresh_nonce() -> Nonce {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // Unreachable on Linux ≥ 3.17; a time-derived nonce still differs per request.
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b.copy_from_slice(&t.to_le_bytes());
    }
    Nonce::from_random_bytes(b)
}

/// The repository base URL on a boot server.
pub fn repo_base(server: &config::node::ServerUrl) -> String {
    server.join(config::api::paths::REPO)
}
