//! The node's sensor server, after §4.4 of the NSDI paper: an HTTP server
//! on the node's loopback (127.0.0.1:33080) exporting tables of
//! comma-separated values, one sensor per path, snapshot or streaming, and
//! the same figures as Prometheus metrics on `/metrics`.
//!
//! Data flow: [`sources`] read the kernel's files ([`procfs`]), nodemgr's
//! state and the node's own files into typed readings, kept briefly and
//! read once however many ask ([`cache`]); [`catalog`] turns a reading into
//! a sensor's [`table`], [`metrics`] into Prometheus series. Streaming
//! sensors are fed by [`events`] (the node's event journal) and
//! [`connections`] (the kernel's socket table over [`sockdiag`]).
//! [`server`] answers HTTP; [`serve`] ties it together.

#![warn(missing_docs)]

use std::future::Future;
use std::sync::{Arc, Mutex};

pub mod cache;
pub mod catalog;
pub mod connections;
pub mod events;
pub mod metrics;
pub mod procfs;
pub mod server;
pub mod settings;
pub mod sockdiag;
pub mod sources;
pub mod table;

pub use settings::Settings;

/// The shared state of a server over `settings`: starts the journal
/// follower (on the current tokio runtime) and the connections watcher
/// (a thread).
pub fn app(settings: &Settings) -> std::io::Result<Arc<server::App>> {
    let last_checkin = Arc::new(Mutex::new(None));
    let sources = Arc::new(sources::Sources {
        proc_dir: settings.proc_dir.clone(),
        node_config: settings.node_config.clone(),
        handover: settings.handover.clone(),
        nodemgr: settings.nodemgr.clone(),
        bwcap_state_dir: settings.bwcap_state_dir.clone(),
        last_checkin: last_checkin.clone(),
    });
    let events = events::start(settings.journal.clone(), last_checkin);
    let connections = Arc::new(connections::ConnectionsHub::new(settings.connections_kept));
    connections::start(
        connections.clone(),
        connections::WatchSettings {
            cgroup_root: settings.nodemgr.cgroup_root.clone(),
            nodemgr: settings.nodemgr.clone(),
            interval: settings.connections_interval,
        },
    )?;
    Ok(Arc::new(server::App {
        cache: cache::Cache::new(sources, settings.cache_ttl, settings.sensor_timeout),
        events,
        connections,
        limits: settings.limits.clone(),
    }))
}

/// Serves on `listener` (bound by the caller, to any address: peers are
/// checked against the limits) until `stop` completes.
pub async fn serve(
    settings: &Settings,
    listener: tokio::net::TcpListener,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = app(settings)?;
    server::serve(listener, app, stop).await;
    Ok(())
}
