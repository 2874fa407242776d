//! The node API's wire types (JSON over HTTPS under `/api/v1/`), shared by
//! the boot server and the node so neither depends on the other.
//! `docs/DESIGN.md` §2 lists the endpoints.

pub mod auth;

use serde::{Deserialize, Serialize};

use crate::node::{MacAddr, NodeId};
use crate::rspec::Rspec;
use crate::timestamp::Timestamp;
use crate::units::Rate;

/// Endpoint paths.
pub mod paths {
    pub const CHECKIN: &str = "/api/v1/node/checkin";
    pub const PROGRESS: &str = "/api/v1/node/progress";
    pub const FAILURE: &str = "/api/v1/node/failure";
    pub const INSTALLED: &str = "/api/v1/node/installed";
    pub const UPDATE: &str = "/api/v1/node/update";
    pub const SLIVERS: &str = "/api/v1/node/slivers";
    pub const HELLO: &str = "/api/v1/unregistered/hello";
    /// Base of the signed repository (metadata/ and targets/ below it).
    pub const REPO: &str = "/repo";
}

/// What the admins want the node to do (the server's decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootState {
    /// Verify the installed OS and hand over to it.
    Boot,
    /// Wipe the disk, install, then boot.
    Reinstall,
    /// Network and ssh for staff; touch nothing on disk.
    Debug,
    /// Stay idle, report, re-check now and then.
    Disabled,
}

impl BootState {
    pub const ALL: [BootState; 4] = [
        BootState::Boot,
        BootState::Reinstall,
        BootState::Debug,
        BootState::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BootState::Boot => "boot",
            BootState::Reinstall => "reinstall",
            BootState::Debug => "debug",
            BootState::Disabled => "disabled",
        }
    }
}

impl std::fmt::Display for BootState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BootState {
    type Err = String;
    fn from_str(s: &str) -> Result<BootState, String> {
        BootState::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a boot state (boot, reinstall, debug, disabled)"))
    }
}

/// What the node is actually doing (reported; kept apart from [`BootState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunLevel {
    /// Running the CD's boot manager, before acting on a state.
    Bootcd,
    /// Partitioning, installing.
    Installing,
    /// Running the installed OS.
    Boot,
    /// In the debug environment (by request or after a failure).
    Debug,
    /// Idle by request.
    Disabled,
}

impl RunLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            RunLevel::Bootcd => "bootcd",
            RunLevel::Installing => "installing",
            RunLevel::Boot => "boot",
            RunLevel::Debug => "debug",
            RunLevel::Disabled => "disabled",
        }
    }
}

impl std::fmt::Display for RunLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HardwareSummary {
    pub cpu_model: String,
    pub cpus: u32,
    pub ram_bytes: u64,
    pub disks: Vec<DiskInfo>,
    pub nics: Vec<NicInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Kernel name, e.g. `vda`.
    pub name: String,
    pub size_bytes: u64,
    pub removable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicInfo {
    pub name: String,
    pub mac: MacAddr,
    pub link: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
}

/// The installed node's health, sent with each check-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HealthSummary {
    pub services_up: u32,
    pub services_total: u32,
    #[serde(default)]
    pub failed_services: Vec<String>,
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    /// 1-minute load average.
    pub load1: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckinRequest {
    pub node_id: NodeId,
    pub run_level: RunLevel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootcd_version: Option<String>,
    /// Version of the installed OS (the `base` package), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Id of the running or installed deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<HardwareSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSummary>,
    pub uptime_secs: u64,
    /// The node's own clock, so the server can show how far off it is.
    pub node_time: Timestamp,
}

/// The node's network as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum WireNetwork {
    Dhcp,
    Static {
        address: std::net::Ipv4Addr,
        prefix: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<std::net::Ipv4Addr>,
        #[serde(default)]
        dns: Vec<std::net::IpAddr>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckinResponse {
    pub boot_state: BootState,
    pub hostname: String,
    pub network: WireNetwork,
    /// The server's clock when it answered; the reply is bound to the
    /// request's nonce (see [`auth`]), so a node may set its clock from it.
    pub server_time: Timestamp,
    /// How long to wait before the next check-in (the node adds jitter).
    pub checkin_interval_secs: u64,
    /// Keys that may log in as root in `debug` (staff).
    #[serde(default)]
    pub debug_ssh_keys: Vec<String>,
    /// The site's outgoing bandwidth cap for the node, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bwcap: Option<Rate>,
    /// The admins asked the running node to reboot.
    #[serde(default)]
    pub reboot_requested: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressEvent {
    /// A step name from DESIGN.md §5, e.g. `reinstall/install`.
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    pub message: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressReport {
    pub events: Vec<ProgressEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureReport {
    pub step: String,
    pub error: String,
    /// The last lines of the node's log.
    pub log_tail: Vec<String>,
    /// Where the node went after the failure (normally `debug`).
    pub now_in: RunLevel,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// Sent after a successful reinstall; the server then moves the node to `boot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallReport {
    pub os_version: String,
    pub deployment: String,
    pub packages: Vec<InstalledPackage>,
    pub install_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateEvent {
    /// A new deployment is on disk, waiting for a reboot.
    Staged,
    /// The node booted the new deployment (on trial).
    Activated,
    /// The new deployment came up healthy and is now the good one.
    MarkedGood,
    /// The new deployment failed its trial; the previous one runs again.
    RolledBack,
    /// Verification or download failed; nothing was staged.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateReport {
    pub event: UpdateEvent,
    pub os_version: String,
    pub deployment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sliver {
    /// The slice's name, e.g. `princeton_codeen`.
    pub name: String,
    pub ssh_keys: Vec<String>,
    /// Resources; `rspec.lease_end` is the slice's lease.
    pub rspec: Rspec,
    /// Run once inside the sliver after creation (the spec's `configure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initscript: Option<String>,
}

/// `GetSlivers`: every slice assigned to the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliversResponse {
    pub node_id: NodeId,
    pub generated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bwcap: Option<Rate>,
    pub slivers: Vec<Sliver>,
}

/// An unregistered node announcing itself (no key yet, so no auth).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootcd_version: Option<String>,
    pub hardware: HardwareSummary,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloResponse {
    pub message: String,
    pub server_time: Timestamp,
}

/// Body of every 4xx/5xx reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Machine-readable: `unknown_node`, `bad_signature`, `stale_timestamp`,
    /// `replayed_nonce`, `bad_request`, `too_large`, `not_found`, …
    pub error: String,
    pub message: String,
    /// Set on `stale_timestamp` so a node with a wrong clock can fix it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_time: Option<Timestamp>,
}

/// An empty JSON object reply, `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkin_response_json_shape_is_stable() {
        let r = CheckinResponse {
            boot_state: BootState::Reinstall,
            hostname: "n1.example.org".into(),
            network: WireNetwork::Static {
                address: "10.0.2.15".parse().unwrap(),
                prefix: 24,
                gateway: Some("10.0.2.2".parse().unwrap()),
                dns: vec!["10.0.2.3".parse().unwrap()],
            },
            server_time: Timestamp::from_unix(1_798_761_600),
            checkin_interval_secs: 300,
            debug_ssh_keys: vec![],
            bwcap: Some(Rate::mbit(100)),
            reboot_requested: false,
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["boot_state"], "reinstall");
        assert_eq!(json["network"]["method"], "static");
        assert_eq!(json["server_time"], "2027-01-01T00:00:00Z");
        assert_eq!(json["bwcap"], "100mbit");
        let back: CheckinResponse = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn boot_states_parse_from_admin_words() {
        assert_eq!("debug".parse::<BootState>().unwrap(), BootState::Debug);
        assert!("rescue"
            .parse::<BootState>()
            .unwrap_err()
            .contains("not a boot state"));
    }
}
