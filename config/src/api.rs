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
    /// `POST`, authenticated: [`CheckinRequest`](super::CheckinRequest) →
    /// [`CheckinResponse`](super::CheckinResponse).
    pub const CHECKIN: &str = "/api/v1/node/checkin";
    /// `POST`, authenticated: [`ProgressReport`](super::ProgressReport) → `{}`.
    pub const PROGRESS: &str = "/api/v1/node/progress";
    /// `POST`, authenticated: [`FailureReport`](super::FailureReport) → `{}`.
    pub const FAILURE: &str = "/api/v1/node/failure";
    /// `POST`, authenticated: [`InstallReport`](super::InstallReport) →
    /// [`CheckinResponse`](super::CheckinResponse), the state now `boot`.
    pub const INSTALLED: &str = "/api/v1/node/installed";
    /// `POST`, authenticated: [`UpdateReport`](super::UpdateReport) → `{}`.
    pub const UPDATE: &str = "/api/v1/node/update";
    /// `GET`, authenticated: → [`SliversResponse`](super::SliversResponse).
    pub const SLIVERS: &str = "/api/v1/node/slivers";
    /// The release the node may install now (the updater's own request).
    pub const RELEASE: &str = "/api/v1/node/release";
    /// `POST`, no authentication (the node has no key yet):
    /// [`HelloRequest`](super::HelloRequest) → [`HelloResponse`](super::HelloResponse).
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
    /// Every state, in the order the admin tools list them.
    pub const ALL: [BootState; 4] = [
        BootState::Boot,
        BootState::Reinstall,
        BootState::Debug,
        BootState::Disabled,
    ];

    /// The lowercase word on the wire, in the registry and on the admin's
    /// command line (`boot`, `reinstall`, `debug`, `disabled`); the inverse
    /// of [`FromStr`](std::str::FromStr).
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
    /// The lowercase word on the wire and on the status page.
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

/// The machine as the node's CD sees it, for the admins (status page) and
/// for recognising an unregistered node by its MAC addresses. Informational:
/// the server decides nothing from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HardwareSummary {
    /// `model name` of the first CPU in `/proc/cpuinfo` (`unknown` if absent).
    pub cpu_model: String,
    /// Logical CPUs online.
    pub cpus: u32,
    /// Total memory in bytes (`MemTotal`).
    pub ram_bytes: u64,
    /// Whole disks and CD drives (not partitions; loop, RAM and other
    /// virtual block devices left out).
    pub disks: Vec<DiskInfo>,
    /// Ethernet interfaces backed by a device (loopback, bridges, veth left out).
    pub nics: Vec<NicInfo>,
}

/// One whole disk of a [`HardwareSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Kernel name, e.g. `vda`.
    pub name: String,
    /// Capacity in bytes.
    pub size_bytes: u64,
    /// Removable media, a CD drive, or attached over USB: a reinstall never
    /// installs onto it.
    pub removable: bool,
    /// The vendor's model string, when the kernel reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// One network interface of a [`HardwareSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicInfo {
    /// Kernel name, e.g. `eth0`.
    pub name: String,
    /// Hardware address; what registers an unregistered node's hello.
    pub mac: MacAddr,
    /// Carrier present when the summary was taken.
    pub link: bool,
    /// Kernel driver bound to the device, when there is one (e.g. `virtio_net`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
}

/// The installed node's health, sent with each check-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HealthSummary {
    /// Services of the supervisor that are running now.
    pub services_up: u32,
    /// Services the supervisor was asked to run (up, restarting or failed).
    pub services_total: u32,
    /// Names of services given up on after a crash loop.
    #[serde(default)]
    pub failed_services: Vec<String>,
    /// Bytes free on the node's partition (what an update can still use).
    pub disk_free_bytes: u64,
    /// Size of the node's partition in bytes.
    pub disk_total_bytes: u64,
    /// 1-minute load average.
    pub load1: f64,
}

/// A node asking what to do, and saying how it is. Sent by the CD's boot
/// manager at every boot and by the installed node's supervisor every
/// [`CheckinResponse::checkin_interval_secs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckinRequest {
    /// Must be the node the request is authenticated as (else `bad_request`).
    pub node_id: NodeId,
    /// What the node is doing now.
    pub run_level: RunLevel,
    /// The version of the CD the node booted from ([`crate::cd::CdInfo::cd_version`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootcd_version: Option<String>,
    /// Version of the installed OS (the `base` package), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Id of the running or installed deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Sent by the CD (the installed node's hardware does not change under it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<HardwareSummary>,
    /// Sent by the installed node's supervisor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSummary>,
    /// Seconds since the kernel started (`CLOCK_BOOTTIME`).
    pub uptime_secs: u64,
    /// The node's own clock, so the server can show how far off it is.
    pub node_time: Timestamp,
}

/// The node's network as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum WireNetwork {
    /// Addresses from a DHCP server.
    Dhcp,
    /// A fixed IPv4 configuration.
    Static {
        /// The node's address.
        address: std::net::Ipv4Addr,
        /// Network prefix length, 0..=32.
        prefix: u8,
        /// Default route, if the node has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<std::net::Ipv4Addr>,
        /// Name servers, in order of preference.
        #[serde(default)]
        dns: Vec<std::net::IpAddr>,
    },
}

/// The server's answer to a check-in (and to [`InstallReport`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckinResponse {
    /// What the admins want the node to do now; it wins over whatever the
    /// node was doing.
    pub boot_state: BootState,
    /// The node's fully qualified name as registered.
    pub hostname: String,
    /// The node's network as registered (the node reports a difference; it
    /// keeps the config it booted with).
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
    /// The node's slices changed (assignments, keys, rspecs, leases) since
    /// it last fetched its slivers: the node manager polls now.
    SlicesChanged,
}

impl Hint {
    /// Every hint, for messages.
    pub const ALL: [Hint; 2] = [Hint::CheckUpdates, Hint::SlicesChanged];

    /// The name used on the wire and in supervisor.toml's `wake_on`.
    pub fn as_str(self) -> &'static str {
        match self {
            Hint::CheckUpdates => "check_updates",
            Hint::SlicesChanged => "slices_changed",
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
    /// See [`Hint::SlicesChanged`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub slices_changed: bool,
}

impl Hints {
    /// The hints that are set.
    pub fn set(&self) -> Vec<Hint> {
        let mut out = Vec::new();
        if self.check_updates {
            out.push(Hint::CheckUpdates);
        }
        if self.slices_changed {
            out.push(Hint::SlicesChanged);
        }
        out
    }

    /// Whether `hint` is set.
    pub fn has(&self, hint: Hint) -> bool {
        match hint {
            Hint::CheckUpdates => self.check_updates,
            Hint::SlicesChanged => self.slices_changed,
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

/// One step of a boot or install as the node saw it, for the server's
/// progress log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressEvent {
    /// A step name from DESIGN.md §5, e.g. `reinstall/install`.
    pub step: String,
    /// How far the step is, 0..=100, for steps that can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    /// One line for people (at most 4096 bytes on the server).
    pub message: String,
    /// The node's clock when the event happened.
    pub at: Timestamp,
}

/// Progress events sent together (the node batches them in the background).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressReport {
    /// In the order they happened.
    pub events: Vec<ProgressEvent>,
}

/// A step that failed, and where the node went because of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureReport {
    /// The step that failed (DESIGN.md §5 names).
    pub step: String,
    /// The error with its causes on one line.
    pub error: String,
    /// The last lines of the node's log.
    pub log_tail: Vec<String>,
    /// Where the node went after the failure (normally `debug`).
    pub now_in: RunLevel,
    /// The node's clock when the step failed.
    pub at: Timestamp,
}

/// A package of an installed deployment, as its signed target said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    /// Package name in the repository's targets (`kernel`, `base`, …).
    pub name: String,
    /// The version the signed target gives.
    pub version: String,
    /// Hex SHA-256 of the package archive, as signed.
    pub sha256: String,
}

/// Sent after a successful reinstall; the server then moves the node to `boot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallReport {
    /// Version of the `base` package installed.
    pub os_version: String,
    /// Id of the deployment now `current` (`<base version>-<8 hex>`).
    pub deployment: String,
    /// Every package of the deployment.
    pub packages: Vec<InstalledPackage>,
    /// Seconds the reinstall took, from preflight to commit.
    pub install_secs: u64,
}

/// A step in the life of an update on the installed node.
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

/// The updater telling the server what happened to an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateReport {
    /// What happened.
    pub event: UpdateEvent,
    /// Version of the `base` package of the deployment concerned.
    pub os_version: String,
    /// Id of the deployment concerned (for `failed`, the one that was tried).
    pub deployment: String,
    /// Why, for `rolled_back` and `failed` (the error on one line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The node's clock when it happened.
    pub at: Timestamp,
}

/// A slice's presence on this node, as the server assigns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sliver {
    /// The slice's name, e.g. `princeton_codeen`.
    pub name: String,
    /// OpenSSH public key lines allowed to log in to the sliver.
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
    /// The node the list is for (the authenticated one).
    pub node_id: NodeId,
    /// The server's clock when it made the list.
    pub generated_at: Timestamp,
    /// The site's outgoing bandwidth cap for the whole node, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bwcap: Option<Rate>,
    /// The complete list: a sliver the node has that is not here is no
    /// longer assigned to it.
    pub slivers: Vec<Sliver>,
}

/// An unregistered node announcing itself (no key yet, so no auth).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloRequest {
    /// The version of the CD the machine booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootcd_version: Option<String>,
    /// What the machine is; admins find it by its MAC addresses.
    pub hardware: HardwareSummary,
}

/// The server's answer to a [`HelloRequest`]: it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloResponse {
    /// What the person at the console should do next (register the node).
    pub message: String,
    /// The server's clock. The reply is unauthenticated (the node has no
    /// key), so it must never set a node's clock.
    pub server_time: Timestamp,
}

/// Body of every 4xx/5xx reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Machine-readable: `unknown_node`, `bad_signature`, `stale_timestamp`,
    /// `replayed_nonce`, `bad_request`, `too_large`, `not_found`, …
    pub error: String,
    /// For people: what was wrong, naming the field when there is one.
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
                slices_changed: true,
            },
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["boot_state"], "reinstall");
        assert_eq!(json["network"]["method"], "static");
        assert_eq!(json["server_time"], "2027-01-01T00:00:00Z");
        assert_eq!(json["bwcap"], "100mbit");
        assert_eq!(json["hints"]["check_updates"], true);
        assert_eq!(json["hints"]["slices_changed"], true);
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
            ..Hints::default()
        };
        assert_eq!(on.set(), [Hint::CheckUpdates]);
        assert!(on.has(Hint::CheckUpdates));
        let named: Vec<Hint> =
            serde_json::from_str(r#"["check_updates", "slices_changed"]"#).unwrap();
        assert_eq!(named, [Hint::CheckUpdates, Hint::SlicesChanged]);
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
