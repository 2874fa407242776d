//! Running the HTTPS server on the working directory.

use std::future::Future;
use std::net::SocketAddr;

use super::{Admin, AdminError};
use crate::server::Server;

impl Admin {
    /// Serves the node API, the repository and the status page on `listen`
    /// (the configured address when `None`; port 0 picks a free one) until
    /// `shutdown` resolves, then drains requests in flight. `on_listening`
    /// is called with the bound address once connections are accepted.
    /// Blocks: it runs its own async runtime.
    pub fn serve(
        &self,
        listen: Option<SocketAddr>,
        on_listening: impl FnOnce(SocketAddr),
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AdminError> {
        let wd = &self.workdir;
        raise_open_file_limit(wd.config.limits.max_connections);
        let listen = listen.unwrap_or(wd.config.server.listen);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("bootserver")
            .build()
            .map_err(AdminError::Runtime)?;
        runtime.block_on(async {
            let server = Server::bind(wd, listen).await?;
            let addr = server.local_addr().map_err(AdminError::LocalAddr)?;
            on_listening(addr);
            tracing::info!(%addr, dir = %wd.root().display(), "serving");
            server.run(shutdown).await?;
            tracing::info!("stopped");
            Ok(())
        })
    }
}

/// Resolves at SIGINT or SIGTERM: what `bootserver serve` stops on.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Every node connection is a descriptor: lift the soft limit to the hard
/// one (what nginx's `worker_rlimit_nofile` does), and say so if even that
/// is below `max_connections`.
fn raise_open_file_limit(max_connections: u32) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return;
            }
        }
    }
    // Descriptors beyond connections: the database, log, listener, files being served.
    if limit.rlim_cur < u64::from(max_connections) + 64 {
        tracing::warn!(
            open_files = limit.rlim_cur,
            max_connections,
            "the open-file limit is below limits.max_connections; connections beyond it wait"
        );
    }
}
