//! The hand-over note: what the CD's boot manager tells the installed
//! system it starts (`/run/plnode/handover.json`; `/run` moves along into
//! the new root). Written by init's CD wing; read by its node wing
//! (supervisor, updater) and by the sensor server's `node` sensor.

use serde::{Deserialize, Serialize};

/// What the CD tells the installed system (in `/run`, which moves along).
pub const HANDOVER_FILE: &str = "/run/plnode/handover.json";

/// `/run/plnode/handover.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// The deployment handed over to (`<base version>-<8 hex>`).
    pub deployment: String,
    /// The OS version of that deployment.
    pub os_version: String,
    /// Boots left while the deployment is on trial.
    pub trial_boots_left: Option<u32>,
    /// The version of the CD that booted the node.
    pub cd_version: String,
    /// The running kernel's release.
    pub kernel_release: String,
    /// The boot servers the CD used (the node config may name none).
    pub server_urls: Vec<String>,
    /// The newest time the CD could prove (its build time).
    pub clock_floor: crate::Timestamp,
}

impl Handover {
    /// Reads a note (JSON).
    pub fn parse(bytes: &[u8]) -> Result<Handover, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The boot servers the installed system talks to: the node config's,
    /// else (a config that names none, as PlanetLab's did) the CD's.
    pub fn server_urls(
        config: &crate::NodeConfig,
        handover: Option<&Handover>,
    ) -> Vec<crate::node::ServerUrl> {
        if !config.server_urls.is_empty() {
            return config.server_urls.clone();
        }
        handover
            .map(|h| {
                h.server_urls
                    .iter()
                    .filter_map(|u| u.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The newest time the CD could prove, or the epoch without a note.
    pub fn clock_floor(handover: Option<&Handover>) -> std::time::SystemTime {
        handover
            .map(|h| h.clock_floor.to_system_time())
            .unwrap_or(std::time::UNIX_EPOCH)
    }
}
