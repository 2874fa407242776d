//! What the server needs to know: where it listens, its bounds, and where
//! its sources are. [`Settings::node`] is an installed node's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use floor::journal::Journal;

use crate::server::Limits;

/// The port of the NSDI paper's sensor server.
pub const PORT: u16 = 33080;

/// Everything [`crate::serve`] needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen (loopback by default; peers outside loopback are
    /// refused unless [`Limits::allow`] names their network).
    pub listen: SocketAddr,
    /// Connection bounds and timeouts.
    pub limits: Limits,
    /// How long a reading is reused.
    pub cache_ttl: Duration,
    /// How long a request waits for a source.
    pub sensor_timeout: Duration,
    /// Outgoing connections kept per slice.
    pub connections_kept: usize,
    /// Time between two looks at the socket table.
    pub connections_interval: Duration,
    /// The proc file system.
    pub proc_dir: PathBuf,
    /// The node config.
    pub node_config: PathBuf,
    /// The CD's hand-over note.
    pub handover: PathBuf,
    /// The node's event journal.
    pub journal: Journal,
    /// nodemgr's places (read only).
    pub nodemgr: nodemgr::Settings,
    /// bwcap's state directory (read only).
    pub bwcap_state_dir: PathBuf,
}

impl Settings {
    /// An installed node's settings.
    pub fn node() -> Settings {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], PORT)),
            limits: Limits {
                max_connections: 256,
                request_timeout: Duration::from_secs(10),
                write_timeout: Duration::from_secs(10),
                allow: Vec::new(),
            },
            cache_ttl: Duration::from_secs(1),
            sensor_timeout: Duration::from_secs(2),
            connections_kept: 100,
            connections_interval: Duration::from_millis(500),
            proc_dir: "/proc".into(),
            node_config: "/plnode/node.toml".into(),
            handover: config::handover::HANDOVER_FILE.into(),
            journal: config::events::journal(),
            nodemgr: nodemgr::Settings::node(),
            bwcap_state_dir: bwcap::DEFAULT_STATE_DIR.into(),
        }
    }
}
