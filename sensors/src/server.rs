//! The HTTP side: HTTP/1.1 on hyper (axum routes), GET and HEAD only.
//!
//! - `/` lists the sensors and their columns; `/<sensor>[/<arg>...]` reads
//!   one (path arguments select rows or columns, [`crate::table`]);
//!   `/metrics` is the Prometheus form of the same figures.
//! - Methods other than GET and HEAD get 405 with `Allow: GET,HEAD`; a
//!   request line hyper cannot parse gets 400.
//! - Peers outside loopback (and the networks the operator allowed) get
//!   403 and are closed, whatever address the server is bound to.
//! - Connections are bounded (past the bound: 503 and close); a request's
//!   head must arrive within the request timeout (this also ends idle
//!   keep-alive connections); a write that cannot proceed for the write
//!   timeout ends its connection, so a client that never reads holds its
//!   own connection for that long and nothing else.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Semaphore};
use tokio::time::Sleep;

use crate::cache::Cache;
use crate::catalog::{self, Kind, Sensor};
use crate::connections::ConnectionsHub;
use crate::events::{self, EventsHub};
use crate::metrics::{Families, Format};
use crate::sources::Source;
use crate::table::{self, Selection};

/// The `Content-Type` of every table.
pub const CSV: &str = "text/csv; charset=utf-8; header=present";

/// Bounds that keep one client from hurting the others.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time for a request's head to arrive (and for an idle keep-alive
    /// connection to send its next one).
    pub request_timeout: Duration,
    /// Time a write may make no progress before the connection is closed.
    pub write_timeout: Duration,
    /// Networks besides loopback whose peers are served.
    pub allow: Vec<IpNet>,
}

impl Limits {
    /// Whether a peer is served: loopback always, others when allowed.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        peer.is_loopback() || self.allow.iter().any(|n| n.contains(&peer))
    }
}

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    /// Snapshot readings.
    pub cache: Cache,
    /// The events sensor's feed.
    pub events: Arc<EventsHub>,
    /// The connections sensor's feed.
    pub connections: Arc<ConnectionsHub>,
    /// Connection bounds.
    pub limits: Limits,
}

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/{*path}", get(sensor))
        .with_state(app)
}

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

fn csv(body: String) -> Response {
    ([(header::CONTENT_TYPE, CSV)], body).into_response()
}

async fn index() -> Response {
    csv(catalog::index().to_csv(&Selection::all()))
}

async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    // Every source at once: a slow one costs its deadline, not the sum.
    let readings = futures_util::future::join_all(Source::ALL.into_iter().map(|s| {
        let app = app.clone();
        async move { (s, app.cache.get(s).await) }
    }))
    .await;
    let body = Families::from_readings(&readings)
        .with_followers(&[
            ("events", app.events.followers()),
            ("connections", app.connections.followers()),
        ])
        .encode(format);
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

/// The segments of a request path, percent-decoded (empty ones dropped).
pub fn segments(path: &str) -> Result<Vec<String>, String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|d| d.into_owned())
                .map_err(|_| format!("path segment `{s}` is not UTF-8 once decoded"))
        })
        .collect()
}

async fn sensor(State(app): State<Arc<App>>, uri: Uri) -> Response {
    let parts = match segments(uri.path()) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let Some((name, args)) = parts.split_first() else {
        return index().await;
    };
    let Some(sensor) = Sensor::find(name) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no sensor `{name}`; GET / lists them"),
        );
    };
    let selection = Selection::parse(sensor.columns(), args);
    match (sensor.kind(), sensor.source()) {
        (Kind::Snapshot, Some(source)) => snapshot(&app, sensor, source, &selection).await,
        _ => streaming(&app, sensor, selection),
    }
}

async fn snapshot(app: &App, sensor: Sensor, source: Source, selection: &Selection) -> Response {
    let outcome = if selection.keys.is_empty() {
        app.cache.get(source).await
    } else {
        app.cache.get_rows(source, &selection.keys).await
    };
    let reading = match outcome.as_ref() {
        Ok(r) => r,
        Err(e) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("sensor {}: {}", sensor.name(), floor::report::error_line(e)),
            )
        }
    };
    let table = sensor.table(reading);
    if let Some(key) = selection.missing_key(&table) {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "sensor {} has no column `{key}` and no row with that {}",
                sensor.name(),
                sensor.columns()[0].name
            ),
        );
    }
    csv(table.to_csv(selection))
}

/// A row as one CSV line, narrowed by the selection.
fn line(row: &[String], selection: &Selection) -> Bytes {
    let mut out = String::with_capacity(128);
    table::write_row(&mut out, row, selection);
    Bytes::from(out)
}

/// Rows from a broadcast receiver until it closes or the client falls so
/// far behind that rows were lost (the stream then ends: a client must not
/// take a gap for the truth).
fn follow<T: Send + Sync + 'static>(
    head: Vec<Bytes>,
    receiver: broadcast::Receiver<Arc<T>>,
    selection: Selection,
    to_row: fn(&T) -> Vec<String>,
) -> Body {
    let head = futures_util::stream::iter(head.into_iter().map(Ok::<_, std::convert::Infallible>));
    let tail = futures_util::stream::unfold(receiver, move |mut rx| {
        let selection = selection.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(item) => {
                        let row = to_row(&item);
                        if selection.wants_row(&row) {
                            return Some((Ok(line(&row, &selection)), rx));
                        }
                    }
                    Err(_) => return None,
                }
            }
        }
    });
    Body::from_stream(futures_util::StreamExt::chain(head, tail))
}

fn streaming(app: &App, sensor: Sensor, selection: Selection) -> Response {
    let mut header_line = String::new();
    table::header(&mut header_line, sensor.columns(), &selection);
    let mut head = vec![Bytes::from(header_line)];
    let body = match sensor {
        Sensor::Events => {
            if let Some(bad) = selection.keys.iter().find(|k| !events::is_kind(k)) {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("sensor events has no column `{bad}` and no kind of that name"),
                );
            }
            follow(head, app.events.subscribe(), selection, events::row)
        }
        _ => {
            if let Some(bad) = selection
                .keys
                .iter()
                .find(|k| nodemgr::SliceName::new(k).is_err())
            {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("sensor connections has no column `{bad}`, and it is no slice name"),
                );
            }
            let subscription = app.connections.subscribe();
            for c in &subscription.recent {
                let row = c.row();
                if selection.wants_row(&row) {
                    head.push(line(&row, &selection));
                }
            }
            follow(head, subscription.new, selection, |c| c.row())
        }
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CSV));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A stream whose writes fail once they have made no progress for a while.
#[derive(Debug)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> Deadline<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, timeout: Duration) -> Deadline<S> {
        Deadline {
            inner,
            timeout,
            stalled: None,
        }
    }

    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_ready() {
                    self.stalled = None;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client has read nothing for the write timeout",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, poll)
    }
}

/// Answers a connection we do not serve with a fixed response and closes
/// it, reading (and dropping) what the client sent for a moment first so
/// that the close does not reset the connection before the answer arrives.
async fn refuse(mut stream: TcpStream, status: &str, why: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{why}\n",
        why.len() + 1
    );
    let answer = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

/// Serves connections from `listener` until the future `stop` completes.
pub async fn serve(listener: TcpListener, app: Arc<App>, stop: impl Future<Output = ()>) {
    let router = router(app.clone());
    let connections = Arc::new(Semaphore::new(app.limits.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(64));
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut stop => return,
        };
        let (stream, peer): (TcpStream, SocketAddr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or memory: wait for some to come back
                // instead of spinning.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let refusal = if !app.limits.allows(peer.ip()) {
            Some(("403 Forbidden", "the sensors answer only local clients"))
        } else {
            None
        };
        let permit = match refusal {
            None => connections.clone().try_acquire_owned().ok(),
            Some(_) => None,
        };
        let Some(permit) = permit else {
            let (status, why) = refusal.unwrap_or((
                "503 Service Unavailable",
                "too many connections; try again shortly",
            ));
            if let Ok(r) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream, status, why).await;
                    drop(r);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let io = TokioIo::new(Deadline::new(stream, app.limits.write_timeout));
        let request_timeout = app.limits.request_timeout;
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(request_timeout)
                .max_buf_size(16 * 1024);
            let _ = builder.serve_connection(io, service).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_and_decode() {
        assert_eq!(segments("/slivers/pl_a/").unwrap(), ["slivers", "pl_a"]);
        assert_eq!(segments("/disk/%2Fplnode").unwrap(), ["disk", "/plnode"]);
        assert!(segments("/x/%FF").is_err());
        assert!(segments("/").unwrap().is_empty());
    }

    #[test]
    fn loopback_and_allowed_networks_only() {
        let limits = Limits {
            max_connections: 1,
            request_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            allow: vec!["10.1.0.0/16".parse().unwrap()],
        };
        for ok in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "::ffff:127.0.0.1",
            "10.1.2.3",
        ] {
            assert!(limits.allows(ok.parse().unwrap()), "{ok}");
        }
        for no in ["10.2.0.1", "192.0.2.1", "::ffff:192.0.2.1", "2001:db8::1"] {
            assert!(!limits.allows(no.parse().unwrap()), "{no}");
        }
    }
}
