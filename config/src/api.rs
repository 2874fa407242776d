//! The node API's wire types (JSON over HTTPS under `/api/v1/`), shared by
//! the boot server and the node so neither depends on the other.
//! `docs/DESIGN.md` §2 lists the endpoints.

pub mod auth;

use serde::{Deserialize, Serialize};

use crate::node::{MacAddr, Mirror, NodeId};
use crate::release::DeploymentId;
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
    /// The release the node may install now (the updater's own request).
    pub const RELEASE: &str = "/api/v1/node/release";
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
    /// Things a service of the node should do now; the supervisor wakes
    /// the services that asked for them (`wake_on` in supervisor.toml).
    #[serde(default)]
    pub hints: Hints,
}

/// One thing the boot server asks a node's service to do now. Each is a
/// nudge only: the service then asks the server itself (its own
/// authenticated request) what to do, so a hint carries no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hint {
    /// Check for an update now: the node's rollout wave opened, the
    /// rollout was aborted, or staff asked (`bootserver node update-now`).
    CheckUpdates,
}

impl Hint {
    /// Every hint, for messages.
    pub const ALL: [Hint; 1] = [Hint::CheckUpdates];

    /// The name used on the wire and in supervisor.toml's `wake_on`.
    pub fn as_str(self) -> &'static str {
        match self {
            Hint::CheckUpdates => "check_updates",
        }
    }
}

impl std::fmt::Display for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The hints of a check-in reply; all off unless the server sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Hints {
    /// See [`Hint::CheckUpdates`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub check_updates: bool,
}

impl Hints {
    /// The hints that are set.
    pub fn set(&self) -> Vec<Hint> {
        let mut out = Vec::new();
        if self.check_updates {
            out.push(Hint::CheckUpdates);
        }
        out
    }

    /// Whether `hint` is set.
    pub fn has(&self, hint: Hint) -> bool {
        match hint {
            Hint::CheckUpdates => self.check_updates,
        }
    }

    /// No hint is set.
    pub fn is_empty(&self) -> bool {
        self.set().is_empty()
    }
}

/// Where a rollout stands (DESIGN.md §2, rollouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Waves open one after the other.
    Active,
    /// Stopped by staff: no new node takes the release; time stands still.
    Paused,
    /// Stopped because failures in a wave passed the threshold; like
    /// `paused` until staff resume or abort.
    Halted,
    /// Given up: nodes that took the release go back to their previous one.
    Aborted,
    /// A newer rollout took its place.
    Superseded,
}

impl RolloutState {
    /// Every state.
    pub const ALL: [RolloutState; 5] = [
        RolloutState::Active,
        RolloutState::Paused,
        RolloutState::Halted,
        RolloutState::Aborted,
        RolloutState::Superseded,
    ];

    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Active => "active",
            RolloutState::Paused => "paused",
            RolloutState::Halted => "halted",
            RolloutState::Aborted => "aborted",
            RolloutState::Superseded => "superseded",
        }
    }
}

impl std::fmt::Display for RolloutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RolloutState {
    type Err = String;
    fn from_str(s: &str) -> Result<RolloutState, String> {
        RolloutState::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a rollout state"))
    }
}

/// What the node may install (the decision of [`ReleaseDirective`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReleaseAllow {
    /// No rollout governs the node: whatever the signed repository names.
    Latest,
    /// Exactly this release; if the signed repository names another, the
    /// node waits.
    Release {
        /// The release id (`config::release`).
        deployment: DeploymentId,
    },
    /// Nothing new: keep what runs (the node's wave has not opened, or the
    /// rollout is paused, halted or aborted).
    Hold,
}

/// The rollout behind a [`ReleaseDirective`], for the node's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutNote {
    /// The rollout's number.
    pub id: u64,
    /// The release it rolls out.
    pub deployment: DeploymentId,
    /// The node's wave, counted from 1.
    pub wave: u32,
    /// How many waves the rollout has.
    pub waves: u32,
    /// Where the rollout stands.
    pub state: RolloutState,
    /// When the node's wave opens, if it has not and the rollout is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opens_at: Option<Timestamp>,
}

/// Reply to `GET /api/v1/node/release`: which release the node may install
/// now. Asked conditionally (`If-None-Match`), so an unchanged answer is a
/// `304` with no body; a `304` is signed like a `200` over the body the
/// node already has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseDirective {
    /// What the node may install.
    pub allow: ReleaseAllow,
    /// A release the node must not run (its rollout was aborted): a node
    /// running it, or having it staged, goes back to its previous deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<DeploymentId>,
    /// The rollout that decided, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutNote>,
    /// The newest `timestamp.json` version the server has published: a
    /// repository source with an older one is stale and skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_version: Option<u64>,
    /// Mirrors of the signed repository (tried before the boot server;
    /// trusted only through the signed metadata).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
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
    /// The node waits: its rollout wave has not opened, or the rollout is
    /// paused, halted or aborted (reported once per change).
    Held,
    /// The release's rollout was aborted: the node staged its previous
    /// deployment again (or dropped the staged one).
    Reverted,
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
            hints: Hints {
                check_updates: true,
            },
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["boot_state"], "reinstall");
        assert_eq!(json["network"]["method"], "static");
        assert_eq!(json["server_time"], "2027-01-01T00:00:00Z");
        assert_eq!(json["bwcap"], "100mbit");
        assert_eq!(json["hints"]["check_updates"], true);
        let back: CheckinResponse = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn hints_are_off_unless_sent_and_name_themselves() {
        let old_server: CheckinResponse = serde_json::from_value(serde_json::json!({
            "boot_state": "boot", "hostname": "n1", "network": {"method": "dhcp"},
            "server_time": "2027-01-01T00:00:00Z", "checkin_interval_secs": 300
        }))
        .unwrap();
        assert!(old_server.hints.is_empty());
        assert_eq!(serde_json::to_string(&Hints::default()).unwrap(), "{}");
        let on = Hints {
            check_updates: true,
        };
        assert_eq!(on.set(), [Hint::CheckUpdates]);
        assert!(on.has(Hint::CheckUpdates));
        let named: Vec<Hint> = serde_json::from_str(r#"["check_updates"]"#).unwrap();
        assert_eq!(named, [Hint::CheckUpdates]);
        assert!(serde_json::from_str::<Vec<Hint>>(r#"["reboot_now"]"#).is_err());
    }

    #[test]
    fn a_release_directive_round_trips() {
        let d = ReleaseDirective {
            allow: ReleaseAllow::Release {
                deployment: DeploymentId::new("2-0a1b2c3d").unwrap(),
            },
            revert: None,
            rollout: Some(RolloutNote {
                id: 3,
                deployment: DeploymentId::new("2-0a1b2c3d").unwrap(),
                wave: 1,
                waves: 4,
                state: RolloutState::Active,
                opens_at: None,
            }),
            timestamp_version: Some(7),
            mirrors: vec![],
        };
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["allow"]["kind"], "release");
        assert_eq!(json["allow"]["deployment"], "2-0a1b2c3d");
        assert_eq!(json["rollout"]["state"], "active");
        assert_eq!(serde_json::from_value::<ReleaseDirective>(json).unwrap(), d);
        let hold: ReleaseDirective =
            serde_json::from_str(r#"{"allow":{"kind":"hold"},"revert":"2-0a1b2c3d"}"#).unwrap();
        assert_eq!(hold.allow, ReleaseAllow::Hold);
        assert!(serde_json::from_str::<ReleaseDirective>(
            r#"{"allow":{"kind":"release","deployment":"../etc"}}"#
        )
        .is_err());
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
