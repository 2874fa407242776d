//! HTTPS clients that trust only one CA, and failures explained in one line.
//!
//! A node trusts exactly the boot server CA from its CD: no system roots.
//! Its clock may be years behind (a dead RTC battery), so the client can be
//! given a *clock floor*: certificate validity is judged at
//! max(system time, floor), where the floor is a time the node can prove
//! (for example the CD's build time).

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::time_provider::TimeProvider;
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// Errors building a client.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The CA PEM holds no `CERTIFICATE` block: a client that trusts
    /// nothing would fail every connection, so it is not built.
    #[error("CA file holds no PEM certificate")]
    NoCaCertificate,
    /// A `CERTIFICATE` block is not valid PEM or not a certificate rustls
    /// accepts as a trust anchor.
    #[error("CA certificate rejected: {0}")]
    BadCaCertificate(String),
    /// rustls refused the configuration (no protocol version in common with
    /// the provider).
    #[error("TLS configuration failed: {0}")]
    Tls(String),
    /// The proxy is not a URL reqwest accepts (`http://host:port`).
    #[error("bad proxy URL {0:?}")]
    BadProxy(String),
    /// A repository base URL that does not parse, or is not `http(s)`.
    #[error("bad URL {0}")]
    BadUrl(String),
    /// reqwest could not build the client; the text explains why.
    #[error("building the HTTP client failed: {0}")]
    Client(String),
}

/// How to build a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// PEM of the only CA(s) to trust.
    pub ca_pem: Vec<u8>,
    /// Longest wait for the TCP connection and TLS handshake.
    pub connect_timeout: Duration,
    /// Longest wait for any single read (and for the response headers).
    pub read_timeout: Duration,
    /// `http://host:port` proxy for all requests, if any.
    pub proxy: Option<String>,
    /// Certificates are judged at max(system time, floor).
    pub clock_floor: Option<SystemTime>,
}

impl ClientOptions {
    /// Trusts `ca_pem` only; 10 s to connect, 30 s per read, no proxy, no
    /// clock floor.
    pub fn new(ca_pem: Vec<u8>) -> Self {
        ClientOptions {
            ca_pem,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            proxy: None,
            clock_floor: None,
        }
    }
}

/// Wall time, but never earlier than `floor`.
#[derive(Debug)]
pub struct FlooredClock {
    floor: Duration,
}

impl FlooredClock {
    /// A clock that never reads earlier than `floor` (a time before 1970
    /// counts as 1970).
    pub fn new(floor: SystemTime) -> Self {
        FlooredClock {
            floor: floor.duration_since(UNIX_EPOCH).unwrap_or_default(),
        }
    }
}

impl TimeProvider for FlooredClock {
    fn current_time(&self) -> Option<UnixTime> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Some(UnixTime::since_unix_epoch(now.max(self.floor)))
    }
}

/// The system clock, for configs without a floor.
#[derive(Debug)]
struct SystemClock;

impl TimeProvider for SystemClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::now())
    }
}

/// A rustls client config (ring provider) trusting only the CAs in `ca_pem`.
pub fn tls_config(
    ca_pem: &[u8],
    clock_floor: Option<SystemTime>,
) -> Result<ClientConfig, NetError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| NetError::BadCaCertificate(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| NetError::BadCaCertificate(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(NetError::NoCaCertificate);
    }
    let clock: Arc<dyn TimeProvider> = match clock_floor {
        Some(floor) => Arc::new(FlooredClock::new(floor)),
        None => Arc::new(SystemClock),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_details(provider, clock)
        .with_safe_default_protocol_versions()
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A blocking HTTPS client trusting only the given CA, with timeouts, an
/// optional proxy (never the environment's) and an optional clock floor.
pub fn build_client(options: &ClientOptions) -> Result<reqwest::blocking::Client, NetError> {
    let tls = tls_config(&options.ca_pem, options.clock_floor)?;
    let mut builder = reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(options.connect_timeout)
        .timeout(options.read_timeout)
        .user_agent(concat!("pkgsign/", env!("CARGO_PKG_VERSION")))
        .no_gzip()
        .no_deflate()
        .no_brotli()
        .no_zstd();
    builder = match &options.proxy {
        Some(url) => {
            builder.proxy(reqwest::Proxy::all(url).map_err(|_| NetError::BadProxy(url.clone()))?)
        }
        None => builder.no_proxy(),
    };
    builder
        .build()
        .map_err(|e| NetError::Client(explain(&e).to_string()))
}

/// What kind of failure a request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The server's certificate does not chain to the trusted CA.
    UntrustedCertificate,
    /// The certificate is for another host name.
    HostNameMismatch,
    /// The certificate is expired or not yet valid (often: the clock is wrong).
    CertificateTime,
    /// Another TLS failure (handshake, protocol, alert).
    Tls,
    /// Nothing listens at the address (or a firewall said so).
    ConnectionRefused,
    /// Connecting, or waiting for data, took longer than allowed.
    Timeout,
    /// The host name could not be resolved.
    Dns,
    /// Anything else (connection reset, bad response, …).
    Other,
}

impl FailureKind {
    /// A short phrase for people, with a hint where one helps.
    pub fn label(&self) -> &'static str {
        match self {
            FailureKind::UntrustedCertificate => "certificate not trusted (unknown CA)",
            FailureKind::HostNameMismatch => "certificate host name mismatch",
            FailureKind::CertificateTime => {
                "certificate expired or not yet valid (check the clock)"
            }
            FailureKind::Tls => "TLS failure",
            FailureKind::ConnectionRefused => "connection refused",
            FailureKind::Timeout => "timed out",
            FailureKind::Dns => "host name lookup failed (DNS)",
            FailureKind::Other => "request failed",
        }
    }
}

/// One readable reason for a failed request: a category and the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The category, for a caller's decisions (retry, report).
    pub kind: FailureKind,
    /// The innermost useful cause, e.g. rustls's or the OS's message.
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.label(), self.detail)
    }
}

/// Explains a failed reqwest request.
pub fn explain(err: &reqwest::Error) -> Failure {
    let mut failure = explain_chain(err);
    if failure.kind == FailureKind::Other && err.is_timeout() {
        failure.kind = FailureKind::Timeout;
    }
    if let Some(url) = err.url() {
        let host = url.host_str().unwrap_or("?");
        let port = url
            .port_or_known_default()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        failure.detail = format!("{host}{port}: {}", failure.detail);
    }
    failure
}

/// Explains any error by walking its source chain, looking inside
/// `io::Error`s for the rustls error they carry.
pub fn explain_chain(err: &(dyn StdError + 'static)) -> Failure {
    let mut innermost = err.to_string();
    let mut kind = FailureKind::Other;
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        let message = e.to_string();
        if !message.is_empty() {
            innermost = message;
        }
        if let Some(found) = classify(e) {
            // Keep the most specific category found along the chain.
            if kind == FailureKind::Other
                || kind == FailureKind::Tls
                || kind == FailureKind::Timeout
            {
                kind = found;
            }
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = classify(inner) {
                    if kind == FailureKind::Other
                        || kind == FailureKind::Tls
                        || kind == FailureKind::Timeout
                    {
                        kind = found;
                    }
                    innermost = inner.to_string();
                }
            }
        }
        current = e.source();
    }
    Failure {
        kind,
        detail: innermost,
    }
}

fn classify(e: &(dyn StdError + 'static)) -> Option<FailureKind> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(classify_tls(tls));
    }
    if let Some(io) = e.downcast_ref::<io::Error>() {
        if let Some(inner) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return Some(classify_tls(inner));
        }
        return match io.kind() {
            io::ErrorKind::ConnectionRefused => Some(FailureKind::ConnectionRefused),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Some(FailureKind::Timeout),
            _ => None,
        };
    }
    let text = e.to_string();
    if text.contains("dns error") || text.contains("failed to lookup address") {
        return Some(FailureKind::Dns);
    }
    if text.contains("operation timed out")
        || text == "timed out"
        || text.contains("deadline has elapsed")
    {
        return Some(FailureKind::Timeout);
    }
    None
}

fn classify_tls(err: &rustls::Error) -> FailureKind {
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                FailureKind::UntrustedCertificate
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                FailureKind::HostNameMismatch
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => FailureKind::CertificateTime,
            _ => FailureKind::Tls,
        },
        _ => FailureKind::Tls,
    }
}
