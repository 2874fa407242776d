//! A blocking client of the node manager's API (see [`crate::api`]), for
//! the command line, `vsh` and programs inside slivers.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::api::{INTERFACE, PATH};
use crate::service::SliverInfo;

/// Talking to the API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No async runtime for the connection.
    #[error("starting the client's event loop: {0}")]
    Runtime(#[source] std::io::Error),
    /// The socket could not be reached.
    #[error("connecting to {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: std::path::PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// D-Bus failed (the handshake, a closed connection).
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    /// The node manager refused or failed the call.
    #[error("{message}")]
    Remote {
        /// The D-Bus error name (`org.plnode.NodeManager1.Error.Refused`, …).
        name: String,
        /// The node manager's explanation.
        message: String,
    },
    /// The reply is not what the API promises.
    #[error("unexpected reply to {method}: {reason}")]
    Reply {
        /// The method.
        method: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A descriptor could not be duplicated for sending.
    #[error("duplicating a descriptor: {0}")]
    Fd(#[source] std::io::Error),
}

/// A connection to the node manager.
#[derive(Debug)]
pub struct ApiClient {
    runtime: tokio::runtime::Runtime,
    conn: zbus::Connection,
}

impl ApiClient {
    /// Connects to the API socket at `path`; `Ok(None)` when no node
    /// manager listens there (no socket, or nothing accepting on it).
    pub fn connect(path: &Path) -> Result<Option<ApiClient>, ClientError> {
        let stream = match std::os::unix::net::UnixStream::connect(path) {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None)
            }
            Err(source) => {
                return Err(ClientError::Connect {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        let conn = runtime.block_on(
            zbus::connection::Builder::unix_stream(stream)
                .p2p()
                .auth_mechanism(zbus::connection::AuthMechanism::Anonymous)
                .build(),
        )?;
        Ok(Some(ApiClient { runtime, conn }))
    }

    /// The connection (to receive signals).
    pub fn connection(&self) -> &zbus::Connection {
        &self.conn
    }

    /// Runs `future` on the client's event loop.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    fn call<A, R>(&self, method: &'static str, args: &A) -> Result<R, ClientError>
    where
        A: serde::Serialize + zbus::DynamicType,
        R: DeserializeOwned + zbus::Type,
    {
        let reply = self.runtime.block_on(self.conn.call_method(
            None::<&str>,
            PATH,
            Some(INTERFACE),
            method,
            args,
        ));
        let reply = match reply {
            Ok(m) => m,
            Err(zbus::Error::MethodError(name, message, _)) => {
                return Err(ClientError::Remote {
                    name: name.to_string(),
                    message: message.unwrap_or_default(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        reply
            .body()
            .deserialize::<R>()
            .map_err(|e| ClientError::Reply {
                method,
                reason: e.to_string(),
            })
    }

    /// `acquire(rspec)` (TOML) → rcap.
    pub fn acquire(&self, rspec_toml: &str) -> Result<String, ClientError> {
        self.call("Acquire", &(rspec_toml,))
    }

    /// `bind(slice, rcap)`.
    pub fn bind(&self, slice: &str, rcap: &str) -> Result<(), ClientError> {
        self.call("Bind", &(slice, rcap))
    }

    /// The slivers the caller may see.
    pub fn list(&self) -> Result<Vec<SliverInfo>, ClientError> {
        let json: String = self.call("List", &())?;
        serde_json::from_str(&json).map_err(|e| ClientError::Reply {
            method: "List",
            reason: e.to_string(),
        })
    }

    /// One sliver's details, as the JSON the API sends.
    pub fn show(&self, slice: &str) -> Result<serde_json::Value, ClientError> {
        let json: String = self.call("Show", &(slice,))?;
        serde_json::from_str(&json).map_err(|e| ClientError::Reply {
            method: "Show",
            reason: e.to_string(),
        })
    }

    /// Starts a sliver.
    pub fn start(&self, slice: &str) -> Result<(), ClientError> {
        self.call("Start", &(slice,))
    }

    /// Stops a sliver.
    pub fn stop(&self, slice: &str) -> Result<(), ClientError> {
        self.call("Stop", &(slice,))
    }

    /// Deletes a sliver.
    pub fn delete(&self, slice: &str) -> Result<(), ClientError> {
        self.call("Delete", &(slice,))
    }

    /// Replaces the slice users' keys.
    pub fn set_keys(&self, slice: &str, keys: &str) -> Result<(), ClientError> {
        self.call("SetKeys", &(slice, keys))
    }

    /// Who the node manager takes this process for.
    pub fn who_am_i(&self) -> Result<String, ClientError> {
        self.call("WhoAmI", &())
    }

    /// Starts a command in a sliver (`slice` empty: the caller's own) with
    /// this process's stdin, stdout and stderr, or with a terminal inside
    /// (`pty`), whose master is returned. [`Self::wait`] gives its status.
    pub fn enter(
        &self,
        slice: &str,
        command: &[String],
        as_slice_user: bool,
        term: Option<&str>,
        pty: bool,
    ) -> Result<(u32, Option<OwnedFd>), ClientError> {
        let dup = |fd: std::os::fd::BorrowedFd<'_>| -> Result<zbus::OwnedFd, ClientError> {
            Ok(zbus::OwnedFd::from(
                fd.try_clone_to_owned().map_err(ClientError::Fd)?,
            ))
        };
        let stdin = dup(std::io::stdin().as_fd())?;
        let stdout = dup(std::io::stdout().as_fd())?;
        let stderr = dup(std::io::stderr().as_fd())?;
        let (session, mut masters): (u32, Vec<zbus::OwnedFd>) = self.call(
            "Enter",
            &(
                slice,
                command,
                as_slice_user,
                term.unwrap_or(""),
                pty,
                stdin,
                stdout,
                stderr,
            ),
        )?;
        Ok((session, masters.pop().map(OwnedFd::from)))
    }

    /// Waits for a session started with [`Self::enter`]; its exit status.
    pub fn wait(&self, session: u32) -> Result<i32, ClientError> {
        self.call("Wait", &(session,))
    }
}
