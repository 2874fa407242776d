//! Nodes: registering them, their config files, boot states, bandwidth
//! caps, keys, reboots and logs.

use std::path::Path;

use config::api::BootState;
use config::node::{DnsName, NodeConfig, ServerUrl};
use config::units::Rate;
use config::{ConfigError, Timestamp};
use rusqlite::Connection;

use super::{Admin, AdminError};
use crate::model::{
    generate_node_key, AuthFailureCount, Node, NodeEvent, NodeNetwork, SiteName, UnregisteredNode,
};
use crate::registry::{self, NewNode, NodeRef, NodeSort, SortOrder};

/// Which boot server URLs a node config carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigUrls {
    /// The URLs in the server's configuration.
    #[default]
    FromServer,
    /// These URLs.
    These(Vec<ServerUrl>),
    /// None: the node uses the URLs on its boot CD.
    FromBootCd,
}

/// Everything the registry knows about one node (never its key).
#[derive(Debug, Clone)]
pub struct NodeDetails {
    /// The node.
    pub node: Node,
    /// Failed authentications counted for it, by reason.
    pub auth_failures: Vec<AuthFailureCount>,
}

/// A boot state changed by an admin.
#[derive(Debug, Clone)]
pub struct BootStateChange {
    /// The node, with its new state.
    pub node: Node,
    /// The state it had before.
    pub previous: BootState,
}

impl NewNode {
    /// A node of `site` called `name` (`host`, or `host.domain` when
    /// `domain` is `None`), that gets its address by DHCP on the first
    /// interface with a link, starts by installing (`reinstall`), and takes
    /// the next free id.
    pub fn new(site: SiteName, name: &str, domain: Option<DnsName>) -> Result<NewNode, AdminError> {
        let (hostname, domain) = split_hostname(name, domain)?;
        Ok(NewNode {
            site,
            hostname,
            domain,
            network: NodeNetwork {
                interface: None,
                mac: None,
                addressing: config::api::WireNetwork::Dhcp,
            },
            boot_state: BootState::Reinstall,
            id: None,
        })
    }
}

fn dns_name(text: &str) -> Result<DnsName, AdminError> {
    text.parse().map_err(|reason| AdminError::HostName {
        name: text.to_string(),
        reason,
    })
}

/// `host.domain` splits at the first dot, unless the domain is given apart.
fn split_hostname(
    name: &str,
    domain: Option<DnsName>,
) -> Result<(DnsName, Option<DnsName>), AdminError> {
    match (name.split_once('.'), domain) {
        (Some((host, dom)), None) => Ok((dns_name(host)?, Some(dns_name(dom)?))),
        (Some(_), Some(_)) => Err(AdminError::DomainTwice {
            hostname: name.to_string(),
        }),
        (None, domain) => Ok((dns_name(name)?, domain)),
    }
}

impl Admin {
    /// The node's config file as the node reads it, checked the way the
    /// node will check it: a config the node would refuse is never handed out.
    fn make_node_config(&self, node: &Node, urls: &ConfigUrls) -> Result<NodeConfig, AdminError> {
        let server_urls = match urls {
            ConfigUrls::FromServer => self.workdir.config.server.urls.clone(),
            ConfigUrls::These(urls) => urls.clone(),
            ConfigUrls::FromBootCd => Vec::new(),
        };
        let network = node
            .network
            .to_config()
            .map_err(|source| AdminError::NodeNetwork {
                node: node.fqdn.clone(),
                source,
            })?;
        let config = NodeConfig {
            node_id: node.id,
            key: node.key.clone(),
            hostname: node.hostname.clone(),
            domain: node.domain.clone(),
            network,
            server_urls,
            proxy: None,
            mirrors: Vec::new(),
        };
        match NodeConfig::from_toml(&config.to_toml(), Path::new("generated node.toml")) {
            Ok(_) => Ok(config),
            Err(ConfigError::Invalid { field, message, .. }) => {
                Err(AdminError::InvalidNodeConfig {
                    node: node.fqdn.clone(),
                    field,
                    reason: message,
                })
            }
            Err(other) => Err(AdminError::GeneratedConfig(other)),
        }
    }

    /// Registers a node with a new random key and makes its config. The
    /// node is stored only if its config passes the node's own checks.
    pub fn add_node(
        &self,
        spec: &NewNode,
        urls: &ConfigUrls,
    ) -> Result<(Node, NodeConfig), AdminError> {
        let key = generate_node_key().map_err(AdminError::NodeKey)?;
        let now = Timestamp::now();
        self.write(|c| {
            let node = registry::add_node(c, spec, &key, now)?;
            let config = self.make_node_config(&node, urls)?;
            Ok((node, config))
        })
    }

    /// The node's config again, with its current key.
    pub fn node_config(
        &self,
        node: &NodeRef,
        urls: &ConfigUrls,
    ) -> Result<(Node, NodeConfig), AdminError> {
        self.read(|c| {
            let node = registry::resolve_node(c, node)?;
            let config = self.make_node_config(&node, urls)?;
            Ok((node, config))
        })
    }

    /// Gives the node a new key (the old one stops authenticating at once)
    /// and returns its new config.
    pub fn rekey(
        &self,
        node: &NodeRef,
        urls: &ConfigUrls,
    ) -> Result<(Node, NodeConfig), AdminError> {
        let key = generate_node_key().map_err(AdminError::NodeKey)?;
        let now = Timestamp::now();
        self.write(|c| {
            let found = registry::resolve_node(c, node)?;
            registry::set_key(c, &found, &key, now, self.event_log_limit())?;
            let node = registry::get_node(c, found.id)?;
            let config = self.make_node_config(&node, urls)?;
            Ok((node, config))
        })
    }

    /// Nodes (of one site, or all), sorted by `sort`, ascending.
    pub fn list_nodes(
        &self,
        site: Option<&SiteName>,
        sort: NodeSort,
    ) -> Result<Vec<Node>, AdminError> {
        self.read(|c| {
            Ok(registry::list_nodes(
                c,
                site.map(SiteName::as_str),
                sort,
                SortOrder::Asc,
            )?)
        })
    }

    /// One node and the failed authentications counted for it.
    pub fn show_node(&self, node: &NodeRef) -> Result<NodeDetails, AdminError> {
        self.read(|c| {
            let node = registry::resolve_node(c, node)?;
            let auth_failures = registry::auth_failures(c, node.id.0)?;
            Ok(NodeDetails {
                node,
                auth_failures,
            })
        })
    }

    /// Sets the boot state the server tells the node at its next check-in.
    pub fn set_boot_state(
        &self,
        node: &NodeRef,
        state: BootState,
    ) -> Result<BootStateChange, AdminError> {
        self.change_node(node, |c, n, now, keep| {
            registry::set_boot_state(c, n, state, now, keep)
        })
        .map(|(before, node)| BootStateChange {
            previous: before.boot_state,
            node,
        })
    }

    /// Sets (or with `None` removes) the node's outgoing bandwidth cap.
    pub fn set_bwcap(&self, node: &NodeRef, cap: Option<Rate>) -> Result<Node, AdminError> {
        self.change_node(node, |c, n, now, keep| {
            registry::set_bwcap(c, n, cap, now, keep)
        })
        .map(|(_, node)| node)
    }

    /// Asks the running node to reboot at its next check-in.
    pub fn request_reboot(&self, node: &NodeRef) -> Result<Node, AdminError> {
        self.change_node(node, registry::request_reboot)
            .map(|(_, node)| node)
    }

    /// Removes a node from the registry; returns it as it was.
    pub fn delete_node(&self, node: &NodeRef) -> Result<Node, AdminError> {
        self.write(|c| {
            let node = registry::resolve_node(c, node)?;
            registry::delete_node(c, &node)?;
            Ok(node)
        })
    }

    /// The node and its newest `limit` log entries, newest first.
    pub fn node_log(
        &self,
        node: &NodeRef,
        limit: u32,
    ) -> Result<(Node, Vec<NodeEvent>), AdminError> {
        self.read(|c| {
            let node = registry::resolve_node(c, node)?;
            let events = registry::node_events(c, node.id, limit)?;
            Ok((node, events))
        })
    }

    /// Machines that said hello without being registered, latest first.
    pub fn unregistered(&self) -> Result<Vec<UnregisteredNode>, AdminError> {
        self.read(|c| Ok(registry::unregistered_nodes(c)?))
    }

    /// Forgets every unregistered machine; returns how many there were.
    pub fn forget_unregistered(&self) -> Result<usize, AdminError> {
        self.write(|c| Ok(registry::forget_unregistered(c)?))
    }

    /// Finds the node, applies `change`, and returns the node before and after.
    fn change_node(
        &self,
        node: &NodeRef,
        change: impl FnOnce(&Connection, &Node, Timestamp, u32) -> registry::Result<()>,
    ) -> Result<(Node, Node), AdminError> {
        let now = Timestamp::now();
        let keep = self.event_log_limit();
        self.write(|c| {
            let before = registry::resolve_node(c, node)?;
            change(c, &before, now, keep)?;
            let after = registry::get_node(c, before.id)?;
            Ok((before, after))
        })
    }
}
