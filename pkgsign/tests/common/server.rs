//! A small HTTPS server on 127.0.0.1 (rustls, one thread per connection)
//! serving a directory under `/repo/`, with knobs to misbehave per file.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// A certificate authority made for one test.
pub struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names`, valid from `not_before` to `not_after`
    /// (unix seconds).
    pub fn leaf_valid(&self, names: &[&str], not_before: i64, not_after: i64) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    /// A certificate for 127.0.0.1 and localhost, valid now.
    pub fn leaf(&self) -> Leaf {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.leaf_valid(&["127.0.0.1", "localhost"], now - 86_400, now + 86_400)
    }
}

/// How to misbehave for one file.
#[derive(Debug, Clone)]
pub enum Knob {
    /// Send this many body bytes, then hold the connection without sending more.
    StallAfter(u64),
    /// Send the body one byte at a time at this rate.
    Trickle { bytes_per_sec: u64 },
    /// Append junk; with `advertise` it is counted in Content-Length, else
    /// the body is close-delimited.
    Extra { bytes: u64, advertise: bool },
    /// Drop the connection after this many body bytes, for the first `times` requests.
    BreakAfter { bytes: u64, times: u32 },
    /// Answer with `code` for the first `times` requests.
    Status { code: u16, times: u32 },
    /// Drop the first connection after `break_after` body bytes; requests
    /// that carry a Range header then get different content (a new ETag).
    ChangeOnResume { break_after: u64 },
    /// Drop the connection after `bytes`, then stall the resumed request
    /// after `resumed_bytes` (for the kill-midway test).
    BreakThenStall { bytes: u64, resumed_bytes: u64 },
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    knobs: HashMap<String, Knob>,
    requests: Vec<SeenRequest>,
    served: HashMap<String, u32>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    root: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves `root` as `/repo/…` over TLS with `leaf`.
    pub fn start(root: PathBuf, leaf: Leaf) -> TestServer {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(leaf.chain, leaf.key)
        .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop, root) = (state.clone(), stop.clone(), root.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((tcp, _)) => {
                            let (state, stop, root, config) =
                                (state.clone(), stop.clone(), root.clone(), config.clone());
                            std::thread::spawn(move || {
                                let _ = serve_connection(tcp, config, &root, &state, &stop);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        TestServer {
            addr,
            root,
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}/repo", self.addr.port())
    }

    pub fn set_knob(&self, path: &str, knob: Knob) {
        self.state
            .lock()
            .unwrap()
            .knobs
            .insert(path.to_string(), knob);
    }

    pub fn clear_knobs(&self) {
        self.state.lock().unwrap().knobs.clear();
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn root(&self) -> &PathBuf {
        &self.root
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The entity tag this server gives a file with content `body`.
pub fn etag(body: &[u8]) -> String {
    format!("\"{}\"", &hex::encode(Sha256::digest(body))[..16])
}

fn hold(stop: &AtomicBool, max: Duration) {
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) && start.elapsed() < max {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve_connection(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    root: &std::path::Path,
    state: &Mutex<State>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    tcp.set_nonblocking(false)?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let tls = rustls::StreamOwned::new(conn, tcp);
    let mut reader = BufReader::new(tls);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let seen = SeenRequest {
        path: path.clone(),
        headers,
    };
    let rel = path.strip_prefix("/repo/").unwrap_or("").to_string();
    let (knob, count) = {
        let mut st = state.lock().unwrap();
        st.requests.push(seen.clone());
        let count = {
            let count = st.served.entry(rel.clone()).or_insert(0);
            *count += 1;
            *count
        };
        (st.knobs.get(&rel).cloned(), count)
    };
    let stream = reader.get_mut();
    let bad = rel.is_empty() || rel.split('/').any(|c| c == ".." || c.is_empty());
    let mut body = if bad {
        None
    } else {
        std::fs::read(root.join(&rel)).ok()
    };
    if let (Some(Knob::ChangeOnResume { .. }), Some(b)) = (&knob, body.as_mut()) {
        if seen.header("range").is_some() {
            for byte in b.iter_mut() {
                *byte ^= 0x55;
            }
        }
    }
    let Some(mut body) = body else {
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        stream.flush()?;
        stream.conn.send_close_notify();
        return stream.flush();
    };
    if let Some(Knob::Status { code, times }) = knob {
        if count <= times {
            write!(
                stream,
                "HTTP/1.1 {code} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return stream.flush();
        }
    }
    let tag = etag(&body);
    if seen.header("if-none-match") == Some(tag.as_str()) {
        write!(
            stream,
            "HTTP/1.1 304 Not Modified\r\nETag: {tag}\r\nConnection: close\r\n\r\n"
        )?;
        stream.flush()?;
        stream.conn.send_close_notify();
        return stream.flush();
    }
    let mut status = "200 OK";
    let mut extra_headers = format!("ETag: {tag}\r\nAccept-Ranges: bytes\r\n");
    let mut start = 0u64;
    if let Some(range) = seen.header("range") {
        let if_range_ok = seen.header("if-range").is_none_or(|v| v == tag);
        let from = range
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<u64>().ok());
        if let (true, Some(from)) = (if_range_ok, from) {
            if from < body.len() as u64 {
                status = "206 Partial Content";
                extra_headers += &format!(
                    "Content-Range: bytes {from}-{}/{}\r\n",
                    body.len() - 1,
                    body.len()
                );
                start = from;
            }
        }
    }
    body.drain(..start as usize);
    let mut advertise = true;
    if let Some(Knob::Extra {
        bytes,
        advertise: adv,
    }) = knob
    {
        body.extend(std::iter::repeat_n(b'x', bytes as usize));
        advertise = adv;
    }
    let length_header = if advertise {
        format!("Content-Length: {}\r\n", body.len())
    } else {
        String::new()
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\n{extra_headers}{length_header}Connection: close\r\n\r\n"
    )?;
    let resumed = start > 0;
    match knob {
        Some(Knob::StallAfter(n)) => {
            let n = (n as usize).min(body.len());
            stream.write_all(&body[..n])?;
            stream.flush()?;
            hold(stop, Duration::from_secs(120));
            return Ok(());
        }
        Some(Knob::Trickle { bytes_per_sec }) => {
            let pause = Duration::from_secs_f64(1.0 / bytes_per_sec.max(1) as f64);
            for byte in &body {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                stream.write_all(std::slice::from_ref(byte))?;
                stream.flush()?;
                std::thread::sleep(pause);
            }
        }
        Some(Knob::ChangeOnResume { break_after }) if count == 1 => {
            let n = (break_after as usize).min(body.len());
            stream.write_all(&body[..n])?;
            stream.flush()?;
            return Ok(());
        }
        Some(Knob::BreakAfter { bytes, times }) if count <= times => {
            let n = (bytes as usize).min(body.len());
            stream.write_all(&body[..n])?;
            stream.flush()?;
            // Abrupt close: no TLS close_notify, no rest of the body.
            return Ok(());
        }
        Some(Knob::BreakThenStall {
            bytes,
            resumed_bytes,
        }) => {
            let n = if resumed { resumed_bytes } else { bytes };
            let n = (n as usize).min(body.len());
            stream.write_all(&body[..n])?;
            stream.flush()?;
            if resumed {
                hold(stop, Duration::from_secs(120));
            }
            return Ok(());
        }
        _ => {
            for chunk in body.chunks(64 * 1024) {
                stream.write_all(chunk)?;
            }
        }
    }
    stream.flush()?;
    stream.conn.send_close_notify();
    stream.flush()
}
