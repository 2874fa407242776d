//! Shared by the boot server benchmarks: a working directory made through
//! the library `init` uses, the server started in-process on its own
//! runtime, and an async HTTPS/1.1 client over keep-alive connections.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bootserver::server::Server;
use bootserver::workdir::{InitOptions, WorkDir};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// `bootserver init DIR --host localhost --ip 127.0.0.1`, in-process.
pub fn init_workdir(root: &Path) -> Result<WorkDir> {
    let options = InitOptions {
        hosts: vec!["localhost".parse().map_err(anyhow::Error::msg)?],
        ips: vec!["127.0.0.1".parse()?],
        listen: "127.0.0.1:0".parse()?,
        urls: vec![],
        site_certificate: None,
    };
    Ok(WorkDir::init(root, &options)?)
}

/// The server on its own multi-threaded runtime (as `bootserver serve`
/// runs it), stopped when dropped.
pub struct RunningServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    pub fn start(wd: &WorkDir, worker_threads: usize) -> Result<RunningServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .enable_all()
            .thread_name("bootserver")
            .build()?;
        let server = runtime.block_on(Server::bind(wd, "127.0.0.1:0".parse()?))?;
        let addr = server.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = runtime.block_on(server.run(shutdown)) {
                eprintln!("server: {e}");
            }
        });
        Ok(RunningServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A rustls client trusting only `ca_pem` (ring provider, TLS 1.2/1.3).
pub fn tls_connector(ca_pem: &Path) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).context("reading the CA")? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One keep-alive HTTPS connection.
pub struct Connection {
    pub sender: SendRequest<Full<Bytes>>,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub suite: String,
}

pub async fn connect(addr: SocketAddr, tls: &TlsConnector) -> Result<Connection> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = tls
        .connect(ServerName::try_from("localhost")?, tcp)
        .await
        .context("TLS handshake")?;
    let suite = stream
        .get_ref()
        .1
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Connection { sender, suite })
}

/// Reads a response body to the end, returning how many bytes it had.
pub async fn drain(body: hyper::body::Incoming) -> Result<u64> {
    let mut body = body;
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

/// The value at quantile `q` (0..=1) of sorted samples.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
