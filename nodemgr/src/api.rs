//! The node manager's local API: D-Bus, peer to peer on a Unix socket
//! (`/run/plnode/nodemgr.sock`, also bound into every sliver), no bus
//! daemon, never on the network.
//!
//! The caller's identity is the socket's peer credentials (`SO_PEERCRED`),
//! read before a byte of D-Bus is spoken: host root is the node, a host id
//! inside a sliver's range is that sliver's slice, anyone else is hung up
//! on. D-Bus authentication is `ANONYMOUS`: a sliver's processes see other
//! uids than the node does, so `EXTERNAL`'s uid would not match.
//!
//! Interface [`INTERFACE`] at [`PATH`]:
//!
//! | method | arguments → reply |
//! | --- | --- |
//! | `Acquire` | rspec (TOML) → rcap (32 hex) |
//! | `Bind` | slice, rcap |
//! | `List` | → JSON array of [`SliverInfo`] |
//! | `Show` | slice → JSON of [`crate::service::SliverDetails`] |
//! | `Start`, `Stop`, `Delete` | slice |
//! | `SetKeys` | slice, `authorized_keys` text |
//! | `Enter` | slice (`""`: the caller's own), command, as slice user, `TERM`, terminal, stdin, stdout, stderr → session, terminal master (0 or 1 descriptors) |
//! | `Wait` | session → exit status |
//! | `WhoAmI` | → `node` or `slice:<name>` |
//!
//! Signal `SliverChanged(slice, event)`, event one of `created`,
//! `started`, `stopped`, `deleted`, `changed`, `lease_ended`; a slice's
//! connection hears about its own sliver only (a broker about all).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use zbus::object_server::SignalEmitter;

use crate::manager::EnterOptions;
use crate::name::SliceName;
use crate::rcap::{Principal, Rcap};
use crate::service::{line, Service, ServiceError, SliverInfo};
use crate::spawn::Entered;

/// The interface name.
pub const INTERFACE: &str = "org.plnode.NodeManager1";
/// The object path.
pub const PATH: &str = "/org/plnode/NodeManager";

/// An API error, as D-Bus errors `org.plnode.NodeManager1.Error.*`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.plnode.NodeManager1.Error")]
pub enum ApiError {
    /// A D-Bus error.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller may not do this (another slice, not a broker).
    Refused(String),
    /// Bad input: a slice name, an rspec, an rcap, keys.
    Invalid(String),
    /// The operation failed (admission control, a sliver error).
    Failed(String),
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        let text = line(&e);
        match e {
            ServiceError::Forbidden { .. }
            | ServiceError::NotBroker(_)
            | ServiceError::Stranger(_) => ApiError::Refused(text),
            ServiceError::Rspec(_) => ApiError::Invalid(text),
            _ => ApiError::Failed(text),
        }
    }
}

type Result<T> = std::result::Result<T, ApiError>;

fn slice_arg(name: &str) -> Result<SliceName> {
    SliceName::new(name).map_err(|e| ApiError::Invalid(e.to_string()))
}

/// Runs a blocking service call off the event loop.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, ServiceError> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::Failed(format!("the operation panicked: {e}"))),
    }
}

/// One connection's view of the API: the service and who is calling.
#[derive(Debug)]
pub struct Api {
    service: Service,
    caller: Principal,
    sessions: Arc<Mutex<HashMap<u32, Entered>>>,
}

static NEXT_SESSION: AtomicU32 = AtomicU32::new(1);

#[zbus::interface(name = "org.plnode.NodeManager1")]
impl Api {
    /// `acquire(rspec) → rcap`: the node and brokers only; admission
    /// controlled.
    async fn acquire(&self, rspec: String) -> Result<String> {
        let rspec: config::rspec::Rspec = toml::from_str(&rspec)
            .map_err(|e| ApiError::Invalid(format!("not an rspec: {}", e.message())))?;
        let (service, caller) = (self.service.clone(), self.caller.clone());
        let rcap = blocking(move || service.acquire(&caller, &rspec)).await?;
        Ok(rcap.to_string())
    }

    /// `bind(slice, rcap)`: the rcap's resources go to the slice's sliver
    /// (made when missing).
    async fn bind(&self, slice: String, rcap: String) -> Result<()> {
        let slice = slice_arg(&slice)?;
        let rcap: Rcap = rcap
            .parse()
            .map_err(|e: crate::rcap::BadRcap| ApiError::Invalid(e.to_string()))?;
        let (service, caller) = (self.service.clone(), self.caller.clone());
        blocking(move || service.bind(&caller, &slice, &rcap)).await
    }

    /// The slivers the caller may see, as JSON.
    async fn list(&self) -> Result<String> {
        let (service, caller) = (self.service.clone(), self.caller.clone());
        let list: Vec<SliverInfo> = blocking(move || service.list(&caller)).await?;
        serde_json::to_string(&list).map_err(|e| ApiError::Failed(e.to_string()))
    }

    /// One sliver's details (and its `status` script's output), as JSON.
    async fn show(&self, slice: String) -> Result<String> {
        let slice = slice_arg(&slice)?;
        let (service, caller) = (self.service.clone(), self.caller.clone());
        let details = blocking(move || service.show(&caller, &slice)).await?;
        serde_json::to_string(&details).map_err(|e| ApiError::Failed(e.to_string()))
    }

    /// Starts a stopped sliver.
    async fn start(&self, slice: String) -> Result<()> {
        let slice = slice_arg(&slice)?;
        let (service, caller) = (self.service.clone(), self.caller.clone());
        blocking(move || service.start(&caller, &slice)).await
    }

    /// Stops a sliver (its `stop` script first).
    async fn stop(&self, slice: String) -> Result<()> {
        let slice = slice_arg(&slice)?;
        let (service, caller) = (self.service.clone(), self.caller.clone());
        blocking(move || service.stop(&caller, &slice)).await
    }

    /// Removes a sliver (its `stop` script first) and releases its rcap.
    async fn delete(&self, slice: String) -> Result<()> {
        let slice = slice_arg(&slice)?;
        let (service, caller) = (self.service.clone(), self.caller.clone());
        blocking(move || service.delete(&caller, &slice)).await
    }

    /// Replaces the slice users' keys.
    async fn set_keys(&self, slice: String, keys: String) -> Result<()> {
        let slice = slice_arg(&slice)?;
        let keys = crate::keys::AuthorizedKeys::parse(&keys)
            .map_err(|e| ApiError::Invalid(format!("keys: {e}")))?;
        let (service, caller) = (self.service.clone(), self.caller.clone());
        blocking(move || service.set_keys(&caller, &slice, &keys)).await
    }

    /// Who the node manager takes the caller for.
    async fn who_am_i(&self) -> String {
        match &self.caller {
            Principal::Node => "node".into(),
            Principal::Slice(s) => format!("slice:{s}"),
        }
    }

    /// Runs a command (empty: a login shell) in a sliver, with the
    /// caller's descriptors as its stdio, or a terminal inside the sliver
    /// whose master comes back. A slice's caller enters its own sliver
    /// only, as the slice's user.
    #[allow(clippy::too_many_arguments)]
    async fn enter(
        &self,
        slice: String,
        command: Vec<String>,
        as_slice_user: bool,
        term: String,
        pty: bool,
        stdin: zbus::OwnedFd,
        stdout: zbus::OwnedFd,
        stderr: zbus::OwnedFd,
    ) -> Result<(u32, Vec<zbus::OwnedFd>)> {
        let slice = match (&self.caller, slice.as_str()) {
            (Principal::Slice(own), "") => own.clone(),
            (Principal::Node, "") => {
                return Err(ApiError::Invalid("the node must name a slice".into()))
            }
            (_, name) => slice_arg(name)?,
        };
        let options = EnterOptions {
            command,
            as_slice_user,
            pty,
            term: (!term.is_empty()).then_some(term),
        };
        let (service, caller) = (self.service.clone(), self.caller.clone());
        let stdio: [OwnedFd; 3] = [stdin.into(), stdout.into(), stderr.into()];
        let mut entered = blocking(move || {
            let fds = [stdio[0].as_fd(), stdio[1].as_fd(), stdio[2].as_fd()];
            service.enter(&caller, &slice, &options, (!options.pty).then_some(fds))
        })
        .await?;
        let master: Vec<zbus::OwnedFd> = entered
            .pty_master
            .take()
            .map(zbus::OwnedFd::from)
            .into_iter()
            .collect();
        let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, entered);
        Ok((id, master))
    }

    /// Waits for a session of this connection to end; its exit status.
    async fn wait(&self, session: u32) -> Result<i32> {
        let entered = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&session)
            .ok_or_else(|| ApiError::Invalid(format!("no session {session} on this connection")))?;
        blocking(move || entered.wait().map_err(ServiceError::Session)).await
    }

    /// A sliver's lifecycle event.
    #[zbus(signal)]
    async fn sliver_changed(
        emitter: &SignalEmitter<'_>,
        slice: &str,
        event: &str,
    ) -> zbus::Result<()>;
}

/// Serves the API on `listener` until `shutdown` resolves; every
/// connection in a task of its own.
pub async fn serve(
    service: Service,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let service = service.clone();
                    tokio::spawn(async move {
                        if let Err(e) = connection(service, stream).await {
                            tracing::info!("API connection: {}", line(&e));
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("API socket: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// An API connection that ended or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The peer's credentials could not be read.
    #[error("reading the peer's credentials: {0}")]
    Credentials(#[source] std::io::Error),
    /// The peer is not allowed.
    #[error(transparent)]
    Refused(ServiceError),
    /// D-Bus.
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    /// The socket.
    #[error("the socket: {0}")]
    Socket(#[source] std::io::Error),
}

async fn connection(
    service: Service,
    stream: tokio::net::UnixStream,
) -> std::result::Result<(), ConnectionError> {
    let uid = stream
        .peer_cred()
        .map_err(ConnectionError::Credentials)?
        .uid();
    let who = {
        let service = service.clone();
        tokio::task::spawn_blocking(move || service.principal_of(uid))
            .await
            .map_err(|e| ConnectionError::Socket(std::io::Error::other(e)))?
            .map_err(ConnectionError::Refused)?
    };
    tracing::debug!(uid, caller = %who, "API connection");
    let stream = stream.into_std().map_err(ConnectionError::Socket)?;
    let api = Api {
        service: service.clone(),
        caller: who.clone(),
        sessions: Arc::new(Mutex::new(HashMap::new())),
    };
    let conn = zbus::connection::Builder::unix_stream(stream)
        .server(zbus::Guid::generate())
        .p2p()
        .auth_mechanism(zbus::connection::AuthMechanism::Anonymous)
        .serve_at(PATH, api)
        .build()
        .await?;
    let broker = {
        let service = service.clone();
        let who = who.clone();
        tokio::task::spawn_blocking(move || service.is_privileged(&who).unwrap_or(false))
            .await
            .unwrap_or(false)
    };
    let mut events = service.subscribe();
    let emitter = SignalEmitter::new(&conn, PATH)?;
    // Ends when the peer hangs up.
    let mut incoming = zbus::MessageStream::from(&conn);
    loop {
        tokio::select! {
            message = futures_util::StreamExt::next(&mut incoming) => {
                if message.is_none() {
                    return Ok(());
                }
            }
            event = events.recv() => match event {
                Ok(event) => {
                    let visible = broker || who == Principal::Slice(event.slice.clone());
                    if visible
                        && Api::sliver_changed(&emitter, event.slice.as_str(), event.kind.as_str())
                            .await
                            .is_err()
                    {
                        return Ok(());
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(caller = %who, "{n} lifecycle signals were dropped for a slow peer");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }
}
