//! What the registry holds, as typed values: sites, nodes (the admins'
//! wishes apart from what the nodes report), events, slices.

use std::fmt;
use std::str::FromStr;

use config::api::{
    BootState, CheckinResponse, HardwareSummary, HealthSummary, RunLevel, WireNetwork,
};
use config::node::{
    Addressing, DnsName, InterfaceChoice, MacAddr, NetworkConfig, NodeId, NodeKey, Prefix,
    StaticNetwork,
};
use config::rspec::Rspec;
use config::units::Rate;
use config::Timestamp;
use serde::{Deserialize, Serialize};

/// A site's short name (PlanetLab's `login_base`): 1 to 32 lowercase
/// letters, digits, `_` and `-`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct SiteName(String);

impl SiteName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SiteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A site or slice name that breaks the naming rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a {what} (1 to 32 lowercase letters, digits or{allowed}, starting with a letter)")]
pub struct NameError {
    /// The text given.
    pub value: String,
    /// `site name` or `slice name`.
    pub what: &'static str,
    /// The punctuation allowed besides letters and digits, for the message.
    allowed: &'static str,
}

fn short_name(
    s: &str,
    what: &'static str,
    extra: &[char],
    allowed: &'static str,
) -> Result<String, NameError> {
    let ok = (1..=32).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(NameError {
            value: s.to_string(),
            what,
            allowed,
        })
    }
}

impl FromStr for SiteName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<SiteName, NameError> {
        short_name(s, "site name", &['_', '-'], " `_` `-`").map(SiteName)
    }
}

/// A slice's name, PlanetLab style `site_slice`: 1 to 32 lowercase letters,
/// digits and `_`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct SliceName(String);

impl SliceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SliceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SliceName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<SliceName, NameError> {
        // Slice names become Linux user and cgroup names on the node.
        short_name(s, "slice name", &['_'], " `_`").map(SliceName)
    }
}

/// An OpenSSH public key line: `type base64 [comment]`, one line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct SshPublicKey(String);

impl SshPublicKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A line that is not an OpenSSH public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{shown}` is not an OpenSSH public key line (like `ssh-ed25519 AAAA… comment`)")]
pub struct SshKeyError {
    /// The line's first 40 characters.
    pub shown: String,
    /// What is wrong with it.
    #[source]
    pub reason: config::sshkey::KeyLineError,
}

impl FromStr for SshPublicKey {
    type Err = SshKeyError;
    /// The same check as the node's (`config::sshkey`): a key the server
    /// takes is one the node installs.
    fn from_str(s: &str) -> Result<SshPublicKey, SshKeyError> {
        let line = s.trim();
        config::sshkey::check_public_key(line).map_err(|reason| SshKeyError {
            shown: line.chars().take(40).collect(),
            reason,
        })?;
        Ok(SshPublicKey(line.to_string()))
    }
}

/// A stored node network that no node config can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// An interface is chosen both by name and by MAC.
    #[error("both an interface name and a MAC are set")]
    InterfaceAndMac,
    /// The prefix length is out of range (`config` says why, as text).
    #[error("prefix /{prefix}: {message}")]
    Prefix {
        /// The stored prefix length.
        prefix: u8,
        /// The `config` crate's reason.
        message: String,
    },
}

/// The node's network as the registry keeps it (JSON in `nodes.network`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeNetwork {
    /// Interface by kernel name, if chosen that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Interface by MAC address, if chosen that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    pub addressing: WireNetwork,
}

impl NodeNetwork {
    pub fn from_config(c: &NetworkConfig) -> NodeNetwork {
        let (interface, mac) = match &c.interface {
            InterfaceChoice::FirstWithLink => (None, None),
            InterfaceChoice::Name(n) => (Some(n.clone()), None),
            InterfaceChoice::Mac(m) => (None, Some(*m)),
        };
        let addressing = match &c.addressing {
            Addressing::Dhcp => WireNetwork::Dhcp,
            Addressing::Static(s) => WireNetwork::Static {
                address: s.address,
                prefix: s.prefix.bits(),
                gateway: s.gateway,
                dns: s.dns.clone(),
            },
        };
        NodeNetwork {
            interface,
            mac,
            addressing,
        }
    }

    /// The network as a node config holds it.
    pub fn to_config(&self) -> Result<NetworkConfig, NetworkError> {
        let interface = match (&self.interface, self.mac) {
            (Some(_), Some(_)) => return Err(NetworkError::InterfaceAndMac),
            (Some(n), None) => InterfaceChoice::Name(n.clone()),
            (None, Some(m)) => InterfaceChoice::Mac(m),
            (None, None) => InterfaceChoice::FirstWithLink,
        };
        let addressing = match &self.addressing {
            WireNetwork::Dhcp => Addressing::Dhcp,
            WireNetwork::Static {
                address,
                prefix,
                gateway,
                dns,
            } => Addressing::Static(StaticNetwork {
                address: *address,
                prefix: Prefix::new(*prefix).map_err(|message| NetworkError::Prefix {
                    prefix: *prefix,
                    message,
                })?,
                gateway: *gateway,
                dns: dns.clone(),
            }),
        };
        Ok(NetworkConfig {
            interface,
            addressing,
        })
    }

    /// `dhcp` or `10.0.2.15/24 via 10.0.2.2`, for tables.
    pub fn summary(&self) -> String {
        let addr = match &self.addressing {
            WireNetwork::Dhcp => "dhcp".to_string(),
            WireNetwork::Static {
                address,
                prefix,
                gateway,
                ..
            } => match gateway {
                Some(g) => format!("{address}/{prefix} via {g}"),
                None => format!("{address}/{prefix}"),
            },
        };
        match (&self.interface, &self.mac) {
            (Some(n), _) => format!("{addr} on {n}"),
            (_, Some(m)) => format!("{addr} on {m}"),
            _ => addr,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Site {
    pub id: i64,
    pub name: SiteName,
    pub description: String,
    pub created_at: Timestamp,
    pub nodes: u64,
}

/// The last failure a node reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub step: String,
    pub message: String,
    pub at: Timestamp,
}

/// What the node last told the server (never what the admins want).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct NodeReport {
    pub run_level: Option<RunLevel>,
    pub bootcd_version: Option<String>,
    pub os_version: Option<String>,
    pub deployment: Option<String>,
    pub hardware: Option<HardwareSummary>,
    pub health: Option<HealthSummary>,
    pub uptime_secs: Option<u64>,
    pub last_contact: Option<Timestamp>,
    /// Server time minus the node's uptime at its last check-in.
    pub last_boot: Option<Timestamp>,
    /// The node's clock minus the server's, at the last check-in.
    pub clock_offset_secs: Option<i64>,
    pub last_peer: Option<String>,
    pub last_error: Option<LastError>,
    pub installed_at: Option<Timestamp>,
}

/// A registered node. The key is never serialised: JSON output of the CLI
/// and the status page must not leak it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub id: NodeId,
    pub site: SiteName,
    pub hostname: DnsName,
    pub domain: Option<DnsName>,
    pub fqdn: String,
    #[serde(skip)]
    pub key: NodeKey,
    pub key_changed_at: Timestamp,
    pub network: NodeNetwork,
    pub created_at: Timestamp,
    /// What the admins want the node to do.
    pub boot_state: BootState,
    pub boot_state_at: Timestamp,
    pub bwcap: Option<Rate>,
    pub reboot_requested_at: Option<Timestamp>,
    /// What the node reports it is doing.
    pub report: NodeReport,
}

/// The few columns a node request needs: its key to authenticate and what
/// the check-in reply tells it.
#[derive(Debug, Clone)]
pub struct NodeAuth {
    pub id: NodeId,
    pub key: NodeKey,
    pub fqdn: String,
    pub network: WireNetwork,
    pub boot_state: BootState,
    pub bwcap: Option<Rate>,
    pub reboot_requested: bool,
}

impl NodeAuth {
    pub fn checkin_response(
        &self,
        now: Timestamp,
        interval_secs: u64,
        debug_ssh_keys: &[String],
    ) -> CheckinResponse {
        CheckinResponse {
            boot_state: self.boot_state,
            hostname: self.fqdn.clone(),
            network: self.network.clone(),
            server_time: now,
            checkin_interval_secs: interval_secs,
            debug_ssh_keys: debug_ssh_keys.to_vec(),
            bwcap: self.bwcap,
            reboot_requested: self.reboot_requested,
            hints: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A step's progress, from the node.
    Progress,
    /// A failure report with the node's log tail.
    Failure,
    /// The node finished a reinstall.
    Installed,
    /// The node's updater said something.
    Update,
    /// The node's run level changed between check-ins.
    RunLevel,
    /// An admin changed something about the node.
    Admin,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Progress => "progress",
            EventKind::Failure => "failure",
            EventKind::Installed => "installed",
            EventKind::Update => "update",
            EventKind::RunLevel => "run_level",
            EventKind::Admin => "admin",
        }
    }
}

/// A stored word (event kind, run level, boot state) this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`")]
pub struct UnknownWord {
    /// What the word should have named.
    pub what: &'static str,
    /// The word found.
    pub value: String,
}

impl FromStr for EventKind {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<EventKind, UnknownWord> {
        [
            EventKind::Progress,
            EventKind::Failure,
            EventKind::Installed,
            EventKind::Update,
            EventKind::RunLevel,
            EventKind::Admin,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| UnknownWord {
            what: "event kind",
            value: s.to_string(),
        })
    }
}

/// One entry of a node's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeEvent {
    pub id: i64,
    /// When the server received it.
    pub received_at: Timestamp,
    /// When it happened by the node's clock (the server's for admin events).
    pub at: Timestamp,
    pub kind: EventKind,
    pub step: String,
    pub percent: Option<u8>,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
}

/// Failed authentications of one node for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthFailureCount {
    pub reason: String,
    pub count: u64,
    pub last_at: Timestamp,
    pub last_peer: String,
    /// For unknown nodes: the id the last request claimed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_claimed_id: Option<u64>,
}

/// A machine that said hello without being registered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnregisteredNode {
    pub macs: Vec<MacAddr>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub count: u64,
    pub peer: String,
    pub bootcd_version: Option<String>,
    pub hardware: HardwareSummary,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slice {
    pub id: i64,
    pub name: SliceName,
    pub description: String,
    pub rspec: Rspec,
    pub initscript: Option<String>,
    /// The lease end on every node (the rspec's `lease_end` on the wire).
    pub expires: Timestamp,
    pub created_at: Timestamp,
    pub ssh_keys: Vec<String>,
    pub nodes: Vec<String>,
}

/// A record of one `repo publish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoPublish {
    pub published_at: Timestamp,
    pub snapshot_dir: String,
    pub root_version: u64,
    pub targets_version: u64,
    pub snapshot_version: u64,
    pub timestamp_version: u64,
    pub packages: u64,
    pub bytes: u64,
}

/// Converts the stored boot state text; the schema's CHECK keeps it valid.
pub(crate) fn parse_boot_state(s: &str) -> Result<BootState, UnknownWord> {
    s.parse().map_err(|_: String| UnknownWord {
        what: "boot state",
        value: s.to_string(),
    })
}

pub(crate) fn parse_run_level(s: &str) -> Result<RunLevel, UnknownWord> {
    [
        RunLevel::Bootcd,
        RunLevel::Installing,
        RunLevel::Boot,
        RunLevel::Debug,
        RunLevel::Disabled,
    ]
    .into_iter()
    .find(|r| r.as_str() == s)
    .ok_or_else(|| UnknownWord {
        what: "run level",
        value: s.to_string(),
    })
}

/// The key a new node gets: 32 random bytes as 64 hex characters.
pub fn generate_node_key() -> Result<NodeKey, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let key = hex::encode(bytes);
    // 64 printable characters always satisfy NodeKey's rules.
    NodeKey::new(key).map_err(|_| getrandom::Error::UNSUPPORTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_planetlab_rules() {
        assert!("princeton".parse::<SiteName>().is_ok());
        assert!("Princeton".parse::<SiteName>().is_err());
        assert!("princeton_codeen".parse::<SliceName>().is_ok());
        assert!("princeton-codeen".parse::<SliceName>().is_err());
        assert!("1abc".parse::<SliceName>().is_err());
        assert!("".parse::<SiteName>().is_err());
    }

    #[test]
    fn ssh_keys_must_look_like_keys() {
        assert!(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyBody alice@example"
                .parse::<SshPublicKey>()
                .is_ok()
        );
        assert!("hello world".parse::<SshPublicKey>().is_err());
        assert!("ssh-rsa AAAA\nssh-rsa BBBB"
            .parse::<SshPublicKey>()
            .is_err());
        // What the node would refuse, the server refuses when it is
        // entered (not silently dropped on the node later).
        for refused_by_the_node in [
            "ssh-foo AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyBody",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
            "no-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyBody",
        ] {
            assert!(config::sshkey::check_public_key(refused_by_the_node).is_err());
            let e = refused_by_the_node.parse::<SshPublicKey>().unwrap_err();
            assert!(
                std::error::Error::source(&e).is_some(),
                "{refused_by_the_node}: the reason comes with it"
            );
        }
    }

    #[test]
    fn node_networks_convert_both_ways() {
        let net = NodeNetwork {
            interface: None,
            mac: Some("52:54:00:12:34:56".parse().unwrap()),
            addressing: WireNetwork::Static {
                address: "10.0.2.15".parse().unwrap(),
                prefix: 24,
                gateway: Some("10.0.2.2".parse().unwrap()),
                dns: vec![],
            },
        };
        let config = net.to_config().unwrap();
        assert_eq!(NodeNetwork::from_config(&config), net);
        assert_eq!(
            net.summary(),
            "10.0.2.15/24 via 10.0.2.2 on 52:54:00:12:34:56"
        );
    }

    #[test]
    fn generated_keys_are_64_hex_characters() {
        let a = generate_node_key().unwrap();
        let b = generate_node_key().unwrap();
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
