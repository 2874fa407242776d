//! The node configuration: who a node is, how it reaches the network and
//! which boot servers it talks to.
//!
//! The file form is TOML (see `config/examples/node-*.toml`). Parsing is
//! strict: unknown keys, bad addresses, a prefix out of range and missing
//! fields are errors that name the file, line and field. Trust roots (the CA,
//! the repository root keys) are deliberately not part of this type: a node
//! config may come from an unsigned place (a USB stick, the per-node part of
//! a CD) and must never be able to change what the node trusts.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{read_file_text, ConfigError, SourceText};

/// A node's number in the boot server's registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The node's shared secret with the boot server (the key of its request
/// HMAC). An opaque string of printable ASCII, at least 32 characters, so
/// PlanetLab's `NODE_KEY` values import unchanged; new nodes get 64 hex
/// characters. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct NodeKey(String);

impl NodeKey {
    /// Shortest key accepted, in characters (= bytes: the key is ASCII).
    pub const MIN_LEN: usize = 32;
    /// Longest key accepted, in characters; bounds what a hostile config
    /// can make the node hold and hash.
    pub const MAX_LEN: usize = 256;

    /// Checks a key: [`MIN_LEN`](Self::MIN_LEN) to [`MAX_LEN`](Self::MAX_LEN)
    /// printable ASCII characters without spaces or `"` (so it survives
    /// `plnode.txt` quoting). The error says which rule failed, never the key.
    pub fn new(key: impl Into<String>) -> Result<NodeKey, String> {
        let key = key.into();
        if key.len() < Self::MIN_LEN {
            return Err(format!(
                "node key is {} characters; at least {} are needed",
                key.len(),
                Self::MIN_LEN
            ));
        }
        if key.len() > Self::MAX_LEN {
            return Err(format!(
                "node key is longer than {} characters",
                Self::MAX_LEN
            ));
        }
        if let Some(c) = key.chars().find(|c| !c.is_ascii_graphic() || *c == '"') {
            return Err(format!(
                "node key contains {c:?}: only printable ASCII without spaces or quotes is allowed"
            ));
        }
        Ok(NodeKey(key))
    }

    /// The bytes used as the HMAC key.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The key as text, for writing it into a node config. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey(<{} characters, hidden>)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for NodeKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NodeKey, D::Error> {
        let s = String::deserialize(d)?;
        NodeKey::new(s).map_err(serde::de::Error::custom)
    }
}

/// A host name label or a dotted domain name (RFC 1123 letters, digits, hyphens).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DnsName(String);

impl DnsName {
    /// The name in lowercase, without a trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DnsName {
    type Err = String;
    fn from_str(s: &str) -> Result<DnsName, String> {
        let s = s.trim_end_matches('.');
        if s.is_empty() || s.len() > 253 {
            return Err(format!(
                "`{s}` is not a host or domain name (1 to 253 characters)"
            ));
        }
        for label in s.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(format!(
                    "`{s}` is not a valid host or domain name (label `{label}`: letters, digits and inner hyphens, at most 63)"
                ));
            }
        }
        Ok(DnsName(s.to_ascii_lowercase()))
    }
}

impl<'de> Deserialize<'de> for DnsName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DnsName, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An Ethernet address, `52:54:00:12:34:56` (dashes accepted, any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<MacAddr, String> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        let bad = || format!("`{s}` is not a MAC address (six hex pairs like 52:54:00:12:34:56)");
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(&parts) {
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An IPv4 prefix length, 0 to 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Prefix(u8);

impl Prefix {
    /// A prefix of `len` bits; an error above 32.
    pub fn new(len: u8) -> Result<Prefix, String> {
        if len > 32 {
            Err(format!("prefix length {len} is out of range (0 to 32)"))
        } else {
            Ok(Prefix(len))
        }
    }
    /// The length in bits, 0..=32.
    pub fn bits(self) -> u8 {
        self.0
    }
    /// The netmask with the first [`bits`](Self::bits) bits set (`/24` →
    /// 255.255.255.0, `/0` → 0.0.0.0).
    pub fn netmask(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(self.0)).unwrap_or(0))
    }
    /// The prefix of a contiguous netmask such as 255.255.255.0.
    pub fn from_netmask(mask: Ipv4Addr) -> Result<Prefix, String> {
        let bits = u32::from(mask);
        let len = bits.leading_ones();
        if bits.checked_shl(len).unwrap_or(0) != 0 {
            return Err(format!("netmask {mask} is not contiguous"));
        }
        Ok(Prefix(len as u8))
    }
    /// The network address of `addr` under this prefix (host bits cleared).
    pub fn network(self, addr: Ipv4Addr) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(addr) & u32::from(self.netmask()))
    }
    /// The broadcast address of `addr`'s network (host bits set).
    pub fn broadcast(self, addr: Ipv4Addr) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(addr) | !u32::from(self.netmask()))
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Prefix, D::Error> {
        let n = i64::deserialize(d)?;
        let n = u8::try_from(n)
            .map_err(|_| format!("prefix length {n} is out of range (0 to 32)"))
            .and_then(Prefix::new);
        n.map_err(serde::de::Error::custom)
    }
}

/// Which network interface the node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceChoice {
    /// The first Ethernet interface that reports a link.
    FirstWithLink,
    /// By kernel name, e.g. `eth0`.
    Name(String),
    /// By hardware address: stable across kernels and slot changes.
    Mac(MacAddr),
}

/// Static addressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNetwork {
    /// The node's address.
    pub address: Ipv4Addr,
    /// Length of the network prefix `address` is on.
    pub prefix: Prefix,
    /// Default route; `None` for a node that reaches only its own network.
    /// When set, it is inside `address`'s network (checked on load).
    pub gateway: Option<Ipv4Addr>,
    /// Name servers in order of preference; may be empty when the boot
    /// servers are given by address.
    pub dns: Vec<IpAddr>,
}

/// How the node gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    /// Ask a DHCP server (address, prefix, router and name servers).
    Dhcp,
    /// Use these, ask no one.
    Static(StaticNetwork),
}

/// The node's network: which interface, and how it is addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The interface to bring up (only one is used).
    pub interface: InterfaceChoice,
    /// How it gets its address.
    pub addressing: Addressing,
}

/// A boot server URL: `https://host[:port][/base]`. Only HTTPS: the node
/// trusts nothing it cannot authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ServerUrl(String);

impl ServerUrl {
    /// The URL as given, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The host part (name or address, without port or brackets).
    pub fn host(&self) -> &str {
        let rest = &self.0["https://".len()..];
        let authority = rest.split('/').next().unwrap_or("");
        if let Some(v6) = authority.strip_prefix('[') {
            return v6.split(']').next().unwrap_or("");
        }
        authority.split(':').next().unwrap_or("")
    }
    /// The URL joined with a path that starts with `/`.
    pub fn join(&self, path: &str) -> String {
        format!("{}{}", self.0.trim_end_matches('/'), path)
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ServerUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<ServerUrl, String> {
        let rest = s.strip_prefix("https://").ok_or_else(|| {
            format!("`{s}` is not an https:// URL (boot servers are reached over TLS only)")
        })?;
        let authority = rest.split('/').next().unwrap_or("");
        let url = ServerUrl(s.trim_end_matches('/').to_string());
        let host = url.host();
        if host.is_empty() {
            return Err(format!("`{s}` has no host"));
        }
        if host.parse::<IpAddr>().is_err() {
            host.parse::<DnsName>()?;
        }
        if let Some((_, port)) = authority
            .rsplit_once(':')
            .filter(|_| !authority.ends_with(']'))
        {
            if !authority.starts_with('[') || authority.contains("]:") {
                port.parse::<u16>()
                    .map_err(|_| format!("`{s}` has a bad port `{port}`"))?;
            }
        }
        if s.contains(char::is_whitespace) {
            return Err(format!("`{s}` contains white space"));
        }
        Ok(url)
    }
}

impl<'de> Deserialize<'de> for ServerUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ServerUrl, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A mirror of the signed repository: any static HTTPS server or CDN
/// serving `metadata/` and `targets/` under a base URL. What it serves is
/// trusted only through the signed metadata (whose root comes from the
/// CD); its CA only authenticates the transport to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawMirror", into = "RawMirror")]
pub struct Mirror {
    /// The repository's base URL on the mirror.
    pub url: ServerUrl,
    /// The CA certificate(s), PEM, that the mirror's TLS certificate must
    /// chain to; `None`: the boot server's CA (the CD's).
    pub ca: Option<String>,
}

/// The most PEM text a mirror's CA may have.
pub const MAX_MIRROR_CA_LEN: usize = 16 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    url: ServerUrl,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca: Option<String>,
}

impl TryFrom<RawMirror> for Mirror {
    type Error = String;
    fn try_from(raw: RawMirror) -> Result<Mirror, String> {
        if let Some(ca) = &raw.ca {
            let pem_like = ca.len() <= MAX_MIRROR_CA_LEN
                && ca.contains("-----BEGIN CERTIFICATE-----")
                && ca.contains("-----END CERTIFICATE-----");
            if !pem_like {
                return Err(format!(
                    "the CA of mirror {} is not PEM certificate text (-----BEGIN CERTIFICATE----- …, at most {MAX_MIRROR_CA_LEN} bytes)",
                    raw.url
                ));
            }
        }
        Ok(Mirror {
            url: raw.url,
            ca: raw.ca,
        })
    }
}

impl From<Mirror> for RawMirror {
    fn from(m: Mirror) -> RawMirror {
        RawMirror {
            url: m.url,
            ca: m.ca,
        }
    }
}

/// A validated node configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The node's number in the boot server's registry; names it in every
    /// authenticated request.
    pub node_id: NodeId,
    /// The secret shared with the boot server (see [`NodeKey`]).
    pub key: NodeKey,
    /// The host name; with `domain` set, the part before it (see
    /// [`NodeConfig::fqdn`]).
    pub hostname: DnsName,
    /// The DNS domain the host name is in, if given separately.
    pub domain: Option<DnsName>,
    /// How the node reaches the network.
    pub network: NetworkConfig,
    /// Boot servers to try in order; empty means "the ones on the CD".
    pub server_urls: Vec<ServerUrl>,
    /// An HTTP proxy for reaching the boot server, `http://host:port`.
    pub proxy: Option<String>,
    /// Mirrors of the signed repository, tried before the boot server.
    pub mirrors: Vec<Mirror>,
}

impl NodeConfig {
    /// The fully qualified name, `hostname.domain`.
    pub fn fqdn(&self) -> String {
        match &self.domain {
            Some(d) => format!("{}.{}", self.hostname, d),
            None => self.hostname.to_string(),
        }
    }

    /// Reads and validates a `node.toml` file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = read_file_text(path)?;
        NodeConfig::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `source` names it in errors.
    pub fn from_toml(text: &str, source: &Path) -> Result<NodeConfig, ConfigError> {
        let src = SourceText::new(source, text);
        let file: file::NodeFile = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        file.validate(&src)
    }

    /// The TOML form, as written by the boot server's `node add`.
    pub fn to_toml(&self) -> String {
        let file = file::NodeFile::from_config(self);
        let body = toml::to_string(&file).unwrap_or_default();
        format!(
            "# Node configuration for {} (node {}).\n# Keep it secret: it holds the node's key.\n\n{body}",
            self.fqdn(),
            self.node_id
        )
    }
}

/// The TOML file's shape, field for field; `validate` turns it into the
/// types above and checks what one field alone cannot.
mod file {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct NodeFile {
        pub node: NodeSection,
        pub network: NetworkSection,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub server: Option<ServerSection>,
        #[serde(default, rename = "mirror", skip_serializing_if = "Vec::is_empty")]
        pub mirrors: Vec<Mirror>,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct NodeSection {
        pub id: Spanned<u64>,
        pub key: NodeKey,
        pub hostname: DnsName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub domain: Option<DnsName>,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Clone, Copy)]
    #[serde(rename_all = "lowercase")]
    pub(super) enum Method {
        Dhcp,
        Static,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct NetworkSection {
        pub method: Spanned<Method>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub interface: Option<Spanned<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub mac: Option<Spanned<MacAddr>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub address: Option<Spanned<Ipv4Addr>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub prefix: Option<Spanned<Prefix>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub gateway: Option<Spanned<Ipv4Addr>>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub dns: Vec<IpAddr>,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct ServerSection {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub urls: Vec<ServerUrl>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub proxy: Option<Spanned<String>>,
    }

    fn spanned<T>(value: T) -> Spanned<T> {
        Spanned::new(0..0, value)
    }

    impl NodeFile {
        pub(super) fn validate(self, src: &SourceText<'_>) -> Result<NodeConfig, ConfigError> {
            let err = |span: std::ops::Range<usize>, field: &str, msg: String| {
                src.error(Some(span), Some(field.to_string()), msg)
            };
            if *self.node.id.get_ref() == 0 {
                return Err(err(
                    self.node.id.span(),
                    "node.id",
                    "node id must be at least 1".into(),
                ));
            }
            let net = self.network;
            let interface = match (&net.interface, &net.mac) {
                (Some(name), Some(_)) => {
                    return Err(err(
                        name.span(),
                        "network.interface",
                        "give either `interface` (a name) or `mac`, not both".into(),
                    ))
                }
                (Some(name), None) => {
                    let n = name.get_ref();
                    if n.is_empty() || n.len() > 15 || n.contains(['/', ' ']) {
                        return Err(err(
                            name.span(),
                            "network.interface",
                            format!("`{n}` is not an interface name (1 to 15 characters, no `/` or spaces)"),
                        ));
                    }
                    InterfaceChoice::Name(n.clone())
                }
                (None, Some(mac)) => InterfaceChoice::Mac(*mac.get_ref()),
                (None, None) => InterfaceChoice::FirstWithLink,
            };
            let addressing = match *net.method.get_ref() {
                Method::Dhcp => {
                    let stray = [
                        ("address", net.address.as_ref().map(|s| s.span())),
                        ("prefix", net.prefix.as_ref().map(|s| s.span())),
                        ("gateway", net.gateway.as_ref().map(|s| s.span())),
                    ];
                    if let Some((name, Some(span))) = stray.into_iter().find(|(_, s)| s.is_some()) {
                        return Err(err(
                            span,
                            &format!("network.{name}"),
                            format!(
                                "`{name}` is only for method = \"static\"; this node uses DHCP"
                            ),
                        ));
                    }
                    Addressing::Dhcp
                }
                Method::Static => {
                    let missing = |name: &str| {
                        err(
                            net.method.span(),
                            &format!("network.{name}"),
                            format!("missing field `{name}`: method = \"static\" needs address and prefix"),
                        )
                    };
                    let address = net.address.ok_or_else(|| missing("address"))?;
                    let prefix = net.prefix.ok_or_else(|| missing("prefix"))?;
                    let (addr, prefix_len) = (*address.get_ref(), *prefix.get_ref());
                    if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
                        return Err(err(
                            address.span(),
                            "network.address",
                            format!("{addr} cannot be a host address"),
                        ));
                    }
                    if let Some(gw) = &net.gateway {
                        let g = *gw.get_ref();
                        if prefix_len.network(g) != prefix_len.network(addr) || g == addr {
                            return Err(err(
                                gw.span(),
                                "network.gateway",
                                format!(
                                    "gateway {g} is not another host in {}/{}",
                                    prefix_len.network(addr),
                                    prefix_len.bits()
                                ),
                            ));
                        }
                    }
                    Addressing::Static(StaticNetwork {
                        address: addr,
                        prefix: prefix_len,
                        gateway: net.gateway.map(|g| g.into_inner()),
                        dns: net.dns,
                    })
                }
            };
            let (server_urls, proxy) = match self.server {
                Some(server) => {
                    let proxy = match server.proxy {
                        Some(p) => {
                            let text = p.get_ref();
                            let ok = text.strip_prefix("http://").is_some_and(|rest| {
                                !rest.is_empty() && !rest.contains(char::is_whitespace)
                            });
                            if !ok {
                                return Err(err(
                                    p.span(),
                                    "server.proxy",
                                    format!("`{text}` is not a proxy URL like http://proxy.example.org:3128"),
                                ));
                            }
                            Some(p.into_inner())
                        }
                        None => None,
                    };
                    (server.urls, proxy)
                }
                None => (Vec::new(), None),
            };
            Ok(NodeConfig {
                node_id: NodeId(self.node.id.into_inner()),
                key: self.node.key,
                hostname: self.node.hostname,
                domain: self.node.domain,
                network: NetworkConfig {
                    interface,
                    addressing,
                },
                server_urls,
                proxy,
                mirrors: self.mirrors,
            })
        }

        pub(super) fn from_config(c: &NodeConfig) -> NodeFile {
            let (mut interface, mut mac) = (None, None);
            match &c.network.interface {
                InterfaceChoice::FirstWithLink => {}
                InterfaceChoice::Name(n) => interface = Some(spanned(n.clone())),
                InterfaceChoice::Mac(m) => mac = Some(spanned(*m)),
            }
            let (method, address, prefix, gateway, dns) = match &c.network.addressing {
                Addressing::Dhcp => (Method::Dhcp, None, None, None, Vec::new()),
                Addressing::Static(s) => (
                    Method::Static,
                    Some(spanned(s.address)),
                    Some(spanned(s.prefix)),
                    s.gateway.map(spanned),
                    s.dns.clone(),
                ),
            };
            let server = if c.server_urls.is_empty() && c.proxy.is_none() {
                None
            } else {
                Some(ServerSection {
                    urls: c.server_urls.clone(),
                    proxy: c.proxy.clone().map(spanned),
                })
            };
            NodeFile {
                node: NodeSection {
                    id: spanned(c.node_id.0),
                    key: c.key.clone(),
                    hostname: c.hostname.clone(),
                    domain: c.domain.clone(),
                },
                network: NetworkSection {
                    method: spanned(method),
                    interface,
                    mac,
                    address,
                    prefix,
                    gateway,
                    dns,
                },
                server,
                mirrors: c.mirrors.clone(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::from_toml(text, Path::new("node.toml"))
    }

    fn static_config(extra: &str) -> String {
        format!(
            "[node]\nid = 7\nkey = \"{KEY}\"\nhostname = \"planetlab-1\"\ndomain = \"cs.example.edu\"\n\n\
             [network]\nmethod = \"static\"\nmac = \"52:54:00:12:34:56\"\naddress = \"10.0.2.15\"\n\
             prefix = 24\ngateway = \"10.0.2.2\"\ndns = [\"10.0.2.3\"]\n{extra}"
        )
    }

    #[test]
    fn a_static_config_parses_into_typed_values() {
        let c = parse(&static_config(
            "\n[server]\nurls = [\"https://boot.example.org:8443/\", \"https://10.0.2.2:8443\"]\n",
        ))
        .unwrap();
        assert_eq!(c.node_id, NodeId(7));
        assert_eq!(c.fqdn(), "planetlab-1.cs.example.edu");
        assert_eq!(
            c.network.interface,
            InterfaceChoice::Mac(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
        );
        let Addressing::Static(s) = &c.network.addressing else {
            panic!("expected static")
        };
        assert_eq!(s.prefix.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.server_urls[0].as_str(), "https://boot.example.org:8443");
        assert_eq!(c.server_urls[0].host(), "boot.example.org");
        assert_eq!(c.server_urls[1].host(), "10.0.2.2");
    }

    #[test]
    fn the_toml_form_round_trips() {
        let c = parse(&static_config(
            "\n[server]\nproxy = \"http://proxy:3128\"\n",
        ))
        .unwrap();
        let again = parse(&c.to_toml()).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn mirrors_parse_round_trip_and_refuse_what_is_not_a_ca() {
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let c = parse(&static_config(&format!(
            "\n[[mirror]]\nurl = \"https://cdn.example.org/plnode/repo/\"\nca = \"\"\"\n{ca}\"\"\"\n\n[[mirror]]\nurl = \"https://10.0.2.2:8444\"\n"
        )))
        .unwrap();
        assert_eq!(c.mirrors.len(), 2);
        assert_eq!(
            c.mirrors[0].url.as_str(),
            "https://cdn.example.org/plnode/repo"
        );
        assert!(c.mirrors[0]
            .ca
            .as_deref()
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
        assert_eq!(c.mirrors[1].ca, None);
        assert_eq!(parse(&c.to_toml()).unwrap(), c);

        let e = parse(&static_config(
            "\n[[mirror]]\nurl = \"https://m.example.org\"\nca = \"hello\"\n",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("not PEM certificate text"), "{e}");
        let e = parse(&static_config(
            "\n[[mirror]]\nurl = \"http://m.example.org\"\n",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("not an https:// URL"), "{e}");
    }

    #[test]
    fn an_unknown_key_names_line_and_field() {
        let e = parse(&static_config("mtu = 1500\n")).unwrap_err();
        assert_eq!(e.line(), Some(14), "{e}");
        assert_eq!(e.field(), Some("network.mtu"), "{e}");
        assert!(
            e.to_string()
                .starts_with("node.toml:14:1: network.mtu: unknown field `mtu`"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_address_names_line_and_field() {
        let text = static_config("").replace("10.0.2.15", "10.0.2");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field(), Some("network.address"), "{e}");
        assert_eq!(e.line(), Some(10), "{e}");
        assert!(e.to_string().contains("invalid IPv4 address"), "{e}");
    }

    #[test]
    fn a_prefix_out_of_range_is_refused() {
        let text = static_config("").replace("prefix = 24", "prefix = 33");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field(), Some("network.prefix"), "{e}");
        assert!(e.to_string().contains("out of range (0 to 32)"), "{e}");
    }

    #[test]
    fn a_missing_field_is_named() {
        let text = static_config("").replace("hostname = \"planetlab-1\"\n", "");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field(), Some("node.hostname"), "{e}");
        assert_eq!(e.line(), Some(1), "{e}");

        let text = static_config("").replace("address = \"10.0.2.15\"\n", "");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field(), Some("network.address"), "{e}");
    }

    #[test]
    fn a_gateway_outside_the_subnet_is_refused() {
        let text = static_config("").replace("10.0.2.2\"", "192.168.1.1\"");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field(), Some("network.gateway"), "{e}");
        assert!(
            e.to_string().contains("not another host in 10.0.2.0/24"),
            "{e}"
        );
    }

    #[test]
    fn dhcp_needs_no_addresses_and_refuses_them() {
        let ok = format!(
            "[node]\nid = 1\nkey = \"{KEY}\"\nhostname = \"n1\"\n[network]\nmethod = \"dhcp\"\n"
        );
        let c = parse(&ok).unwrap();
        assert_eq!(c.network.addressing, Addressing::Dhcp);
        assert_eq!(c.network.interface, InterfaceChoice::FirstWithLink);
        assert!(c.server_urls.is_empty());
        let e = parse(&format!("{ok}address = \"10.0.0.1\"\n")).unwrap_err();
        assert_eq!(e.field(), Some("network.address"), "{e}");
    }

    #[test]
    fn only_https_servers_are_accepted() {
        let e = parse(&static_config(
            "[server]\nurls = [\"http://boot.example.org\"]\n",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("not an https:// URL"), "{e}");
        assert_eq!(e.field(), Some("server.urls"), "{e}");
    }

    #[test]
    fn short_keys_are_refused_and_keys_never_print() {
        let text = static_config("").replace(KEY, "short");
        let e = parse(&text).unwrap_err();
        assert!(e.to_string().contains("at least 32"), "{e}");
        let c = parse(&static_config("")).unwrap();
        assert!(!format!("{c:?}").contains(KEY));
    }

    #[test]
    fn netmask_and_prefix_convert_both_ways() {
        let p = Prefix::from_netmask(Ipv4Addr::new(255, 255, 252, 0)).unwrap();
        assert_eq!(p.bits(), 22);
        assert_eq!(p.netmask(), Ipv4Addr::new(255, 255, 252, 0));
        assert!(Prefix::from_netmask(Ipv4Addr::new(255, 0, 255, 0)).is_err());
        assert_eq!(Prefix::new(0).unwrap().netmask(), Ipv4Addr::UNSPECIFIED);
    }
}
