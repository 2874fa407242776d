//! The HTTPS server: TLS (rustls, TLS 1.3 and 1.2) in front of HTTP/1.1
//! with keep-alive, the node API, the repository and the status page.

mod api;
mod reply;
mod repo;
pub mod slivers_seen;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use config::api::paths;
use config::Timestamp;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::db::{DbError, ReadPool};
use crate::pki::PkiError;
use crate::replay::ReplayCache;
use crate::workdir::WorkDir;
use crate::writer::{self, Writer, WriterSettings};

pub use repo::RepoFiles;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] PkiError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("reading the CA of mirror {url} ({})", path.display())]
    MirrorCa {
        url: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mirror {url}")]
    Mirror {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What handlers need from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub clock_skew_secs: u32,
    pub checkin_interval_secs: u64,
    pub debug_ssh_keys: Vec<String>,
    pub max_body: usize,
    /// Mirrors named in every release directive, their CAs read in.
    pub mirrors: Vec<config::node::Mirror>,
    /// Whether `/repo/targets/…` is served here.
    pub serve_packages: bool,
}

/// The configured mirrors with their CA files read, checked as a node
/// config would check them.
fn load_mirrors(workdir: &WorkDir) -> Result<Vec<config::node::Mirror>, ServerError> {
    let mut out = Vec::new();
    for m in &workdir.config.repository.mirrors {
        let ca = match &m.ca {
            Some(path) => {
                let path = config::server::ServerConfig::resolve(workdir.root(), path);
                let text =
                    std::fs::read_to_string(&path).map_err(|source| ServerError::MirrorCa {
                        url: m.url.to_string(),
                        path: path.clone(),
                        source,
                    })?;
                Some(text)
            }
            None => None,
        };
        let value = serde_json::json!({ "url": m.url.as_str(), "ca": ca });
        let mirror: config::node::Mirror =
            serde_json::from_value(value).map_err(|e| ServerError::Mirror {
                url: m.url.to_string(),
                source: Box::new(e),
            })?;
        out.push(mirror);
    }
    Ok(out)
}

/// Shared by every request.
#[derive(Debug)]
pub struct App {
    pub settings: Settings,
    pub reads: ReadPool,
    pub writer: Writer,
    pub replay: ReplayCache,
    pub repo: RepoFiles,
    pub started_at: Timestamp,
    /// What each node last fetched from `GET slivers` (for the check-in
    /// hint that its slices changed).
    pub slivers_seen: slivers_seen::SliversSeen,
}

/// The client's address, put on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// A TLS handshake that takes longer is dropped (slow or idle clients must
/// not hold connection slots).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a request's headers to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound, ready server.
pub struct Server {
    listener: TcpListener,
    tls: TlsAcceptor,
    app: Arc<App>,
    max_connections: usize,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("app", &self.app)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Loads the TLS identity, opens the database, refills the replay cache
    /// and binds `listen` (port 0 picks a free port).
    pub async fn bind(workdir: &WorkDir, listen: SocketAddr) -> Result<Server, ServerError> {
        let config = &workdir.config;
        let tls = TlsAcceptor::from(workdir.tls_config()?);
        let db_path = workdir.db_path();
        let writer = Writer::start(
            &db_path,
            WriterSettings {
                event_log_limit: config.nodes.event_log_limit,
                clock_skew_secs: config.auth.clock_skew_secs,
            },
        )?;
        let reads = ReadPool::new(&db_path);
        let replay = ReplayCache::new(config.auth.clock_skew_secs);
        let since = Timestamp::now().unix() - i64::from(config.auth.clock_skew_secs);
        let recent = reads.with(|c| writer::load_recent_nonces(c, since))??;
        replay.preload(recent);
        tracing::info!(nonces = replay.len(), "replay cache loaded");
        let app = Arc::new(App {
            settings: Settings {
                clock_skew_secs: config.auth.clock_skew_secs,
                checkin_interval_secs: config.nodes.checkin_interval_secs,
                debug_ssh_keys: config.nodes.debug_ssh_keys.clone(),
                max_body: config.limits.max_body.bytes() as usize,
                mirrors: load_mirrors(workdir)?,
                serve_packages: config.repository.serve_packages,
            },
            reads,
            writer,
            replay,
            repo: RepoFiles::new(&workdir.repo_link()),
            started_at: Timestamp::now(),
            slivers_seen: Default::default(),
        });
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: listen,
                source,
            })?;
        Ok(Server {
            listener,
            tls,
            app,
            max_connections: config.limits.max_connections as usize,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains requests in flight and
    /// lets the database writer commit what it holds.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let Server {
            listener,
            tls,
            app,
            max_connections,
        } = self;
        let router = router(app.clone());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(max_connections));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = &mut shutdown => break,
            };
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, go on.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let _ = tcp.set_nodelay(true);
            let tls = tls.clone();
            let router = router.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _permit = permit;
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let service =
                    hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(PeerAddr(peer));
                        router.clone().oneshot(req.map(axum::body::Body::new))
                    });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        drop(router);
        tracing::info!("shutting down: draining connections");
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("connections still open after the drain timeout"),
        }
        if !stop_writer(app) {
            tracing::warn!("requests still running; the database writer stops with the process");
        }
        Ok(())
    }
}

/// Takes the writer out of the last reference to the app so it can commit
/// what is queued and stop; if a connection still holds the app, the
/// writer stops when the process exits (every commit is already durable).
fn stop_writer(app: Arc<App>) -> bool {
    match Arc::try_unwrap(app) {
        Ok(app) => {
            app.writer.shutdown();
            true
        }
        Err(_) => false,
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(paths::CHECKIN, post(api::checkin))
        .route(paths::PROGRESS, post(api::progress))
        .route(paths::FAILURE, post(api::failure))
        .route(paths::INSTALLED, post(api::installed))
        .route(paths::UPDATE, post(api::update))
        .route(paths::SLIVERS, get(api::slivers))
        .route(paths::RELEASE, get(api::release))
        .route(paths::HELLO, post(api::hello))
        .route("/repo/{area}/{name}", get(repo::serve))
        .route("/status", get(status::overview_page))
        .route("/status.json", get(status::overview_json))
        .route("/status/node/{id}", get(status::node))
        .route("/", get(|| async { Redirect::to("/status") }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

async fn not_found(req: Request) -> Response {
    reply::Failure::not_found(format!("nothing is served at {}", req.uri().path())).into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    reply::Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
    .into_response()
}
