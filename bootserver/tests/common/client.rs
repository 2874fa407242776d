//! A small blocking HTTPS client speaking HTTP/1.1 over one keep-alive
//! rustls connection. Requests are built as bytes, so a test can capture a
//! signed request and send the very same bytes again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use config::api::auth::{sign_request, verify_response, Nonce, RESPONSE_SIG_HEADER};
use config::node::{NodeId, NodeKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

pub fn tls_config(ca_pem: &Path) -> Arc<rustls::ClientConfig> {
    tls_config_versions(ca_pem, &[&rustls::version::TLS13, &rustls::version::TLS12])
}

pub fn tls_config_versions(
    ca_pem: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// Opens a TLS connection and completes the handshake.
pub fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let sock = TcpStream::connect(addr)?;
    let mut stream = rustls::StreamOwned::new(conn, sock);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "reply {} is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "reply {} does not parse ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` code of a JSON error reply.
    pub fn error_code(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Reads one HTTP/1.1 response (Content-Length or chunked body).
pub fn read_reply(stream: &mut Stream, head_request: bool) -> std::io::Result<Reply> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a reply",
            ));
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if head_request || status == 304 || status == 204 {
        // no body
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().unwrap();
        body.resize(len, 0);
        stream.read_exact(&mut body)?;
    } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                stream.read_exact(&mut byte)?;
                line.push(byte[0]);
            }
            let size_text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
            let mut chunk = vec![0u8; size + 2];
            stream.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        stream.read_to_end(&mut body)?;
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// A plain (unsigned) request's bytes.
pub fn raw_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

pub fn fresh_nonce() -> Nonce {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    Nonce::from_random_bytes(b)
}

pub fn unix_now() -> i64 {
    config::Timestamp::now().unix()
}

/// A node's view of the server: its id, key, and one keep-alive connection.
pub struct NodeClient {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    server_name: String,
    pub node_id: NodeId,
    pub key: NodeKey,
    stream: Option<Stream>,
}

impl NodeClient {
    pub fn new(
        addr: SocketAddr,
        ca: &Path,
        server_name: &str,
        config: &config::NodeConfig,
    ) -> NodeClient {
        NodeClient::with_identity(addr, ca, server_name, config.node_id, config.key.clone())
    }

    pub fn with_identity(
        addr: SocketAddr,
        ca: &Path,
        server_name: &str,
        node_id: NodeId,
        key: NodeKey,
    ) -> NodeClient {
        NodeClient {
            addr,
            tls: tls_config(ca),
            server_name: server_name.to_string(),
            node_id,
            key,
            stream: None,
        }
    }

    /// The bytes of a request signed at `ts` with `nonce`.
    pub fn signed_request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        ts: i64,
        nonce: Nonce,
    ) -> Vec<u8> {
        let auth = sign_request(&self.key, self.node_id, method, path, body, ts, nonce);
        raw_request(
            method,
            path,
            &[
                ("Authorization", &auth.to_header_value()),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    }

    /// Sends bytes on the kept-alive connection (reconnecting once if the
    /// server closed it) and reads the reply.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<Reply> {
        let head = bytes.starts_with(b"HEAD ");
        let mut last_error = None;
        for _attempt in 0..2 {
            if self.stream.is_none() {
                self.stream = Some(connect(self.addr, self.tls.clone(), &self.server_name)?);
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            let result = stream
                .write_all(bytes)
                .and_then(|()| stream.flush())
                .and_then(|()| read_reply(stream, head));
            match result {
                Ok(reply) => {
                    if reply
                        .header("connection")
                        .is_some_and(|c| c.eq_ignore_ascii_case("close"))
                    {
                        self.stream = None;
                    }
                    return Ok(reply);
                }
                Err(e) => {
                    self.stream = None;
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| std::io::Error::other("no connection")))
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> Reply {
        self.try_send_raw(bytes)
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    /// Signs and sends; checks the reply's signature when it carries one.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Reply {
        let nonce = fresh_nonce();
        let bytes = self.signed_request(method, path, body, unix_now(), nonce);
        let reply = self.send_raw(&bytes);
        if let Some(sig) = reply.header(RESPONSE_SIG_HEADER) {
            verify_response(&self.key, nonce, &reply.body, sig)
                .expect("the reply's signature verifies for this request's nonce");
        }
        reply
    }

    pub fn post_json<T: serde::Serialize>(&mut self, path: &str, value: &T) -> Reply {
        let body = serde_json::to_vec(value).unwrap();
        self.request("POST", path, &body)
    }

    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let bytes = raw_request("GET", path, headers, b"");
        self.send_raw(&bytes)
    }

    pub fn checkin(&mut self, run_level: config::api::RunLevel) -> Reply {
        self.post_json(
            config::api::paths::CHECKIN,
            &checkin_body(self.node_id, run_level),
        )
    }
}

pub fn checkin_body(
    node_id: NodeId,
    run_level: config::api::RunLevel,
) -> config::api::CheckinRequest {
    config::api::CheckinRequest {
        node_id,
        run_level,
        bootcd_version: Some("2026.11.1".into()),
        os_version: Some("plnode-1.0".into()),
        deployment: None,
        hardware: Some(config::api::HardwareSummary {
            cpu_model: "QEMU Virtual CPU".into(),
            cpus: 2,
            ram_bytes: 512 << 20,
            disks: vec![config::api::DiskInfo {
                name: "vda".into(),
                size_bytes: 8 << 30,
                removable: false,
                model: None,
            }],
            nics: vec![config::api::NicInfo {
                name: "eth0".into(),
                mac: "52:54:00:12:34:56".parse().unwrap(),
                link: true,
                driver: Some("virtio_net".into()),
            }],
        }),
        health: None,
        uptime_secs: 42,
        node_time: config::Timestamp::now(),
    }
}
