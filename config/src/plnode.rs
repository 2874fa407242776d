//! Import of PlanetLab's `plnode.txt` (`NAME="value"` lines), so the files
//! site admins already have keep working, and export of the same form.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use crate::error::{read_file_text, ConfigError, Location};
use crate::node::{
    Addressing, DnsName, InterfaceChoice, MacAddr, NetworkConfig, NodeConfig, NodeId, NodeKey,
    Prefix, StaticNetwork,
};

/// The names PlanetLab's boot CD understood.
const KNOWN: &[&str] = &[
    "NODE_ID",
    "NODE_KEY",
    "IP_METHOD",
    "IP_ADDRESS",
    "IP_GATEWAY",
    "IP_NETMASK",
    "IP_NETADDR",
    "IP_BROADCASTADDR",
    "IP_DNS1",
    "IP_DNS2",
    "HOST_NAME",
    "DOMAIN_NAME",
    "NET_DEVICE",
    "PROXY_SERVER",
];

/// The result of an import: the config and what was ignored along the way.
#[derive(Debug)]
pub struct Imported {
    /// The node config the lines describe, validated like a `node.toml`.
    pub config: NodeConfig,
    /// Lines that were understood but not used (unknown names), one message each.
    pub warnings: Vec<String>,
}

struct Value {
    text: String,
    line: usize,
}

/// Reads a `plnode.txt` file.
pub fn load(path: &Path) -> Result<Imported, ConfigError> {
    let text = read_file_text(path)?;
    parse(&text, path)
}

/// Parses `plnode.txt` text; `source` names it in errors.
pub fn parse(text: &str, source: &Path) -> Result<Imported, ConfigError> {
    let at =
        |line: usize, field: Option<&str>, message: String| error_at(source, line, field, message);
    let mut values: BTreeMap<&str, Value> = BTreeMap::new();
    let mut warnings = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (name, value) = trimmed.split_once('=').ok_or_else(|| {
            at(
                line,
                None,
                format!("expected NAME=\"value\", found `{trimmed}`"),
            )
        })?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(at(
                line,
                None,
                format!("`{name}` is not a variable name (upper case letters, digits, _)"),
            ));
        }
        let value = unquote(value.trim()).map_err(|m| at(line, Some(name), m))?;
        match KNOWN.iter().find(|k| **k == name) {
            Some(known) => {
                if let Some(first) = values.get(known) {
                    return Err(at(
                        line,
                        Some(name),
                        format!("set twice (first on line {})", first.line),
                    ));
                }
                values.insert(known, Value { text: value, line });
            }
            None => warnings.push(format!(
                "{}:{line}: {name} is not used and was ignored",
                source.display()
            )),
        }
    }
    // An empty value means "not set", as the old shell scripts read it.
    values.retain(|_, v| !v.text.is_empty());

    let first_line = 1;
    let require = |name: &str| {
        values.get(name).ok_or_else(|| {
            at(
                first_line,
                Some(name),
                format!("missing: {name} must be set"),
            )
        })
    };
    let typed = |name: &str, v: &Value| TypedAt {
        source,
        name: name.to_string(),
        line: v.line,
    };

    let id = require("NODE_ID")?;
    let node_id = typed("NODE_ID", id).check(
        id.text
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{}` is not a node id (a positive number)", id.text)),
    )?;
    let key = require("NODE_KEY")?;
    let key = typed("NODE_KEY", key).check(NodeKey::new(key.text.clone()))?;
    let host = require("HOST_NAME")?;
    let mut hostname: DnsName = typed("HOST_NAME", host).check(host.text.parse())?;
    let mut domain = match values.get("DOMAIN_NAME") {
        Some(v) => Some(typed("DOMAIN_NAME", v).check(v.text.parse::<DnsName>())?),
        None => None,
    };
    // Old files often put the whole name in HOST_NAME.
    if domain.is_none() {
        if let Some((h, d)) = hostname.as_str().split_once('.') {
            let (h, d) = (h.to_string(), d.to_string());
            domain = Some(typed("HOST_NAME", host).check(d.parse())?);
            hostname = typed("HOST_NAME", host).check(h.parse())?;
        }
    }

    let interface = match values.get("NET_DEVICE") {
        None => InterfaceChoice::FirstWithLink,
        Some(v) => match v.text.parse::<MacAddr>() {
            Ok(mac) => InterfaceChoice::Mac(mac),
            Err(_) if v.text.len() <= 15 && !v.text.contains(['/', ' ', ':']) => {
                InterfaceChoice::Name(v.text.clone())
            }
            Err(e) => {
                return Err(at(
                    v.line,
                    Some("NET_DEVICE"),
                    format!("{e}, nor an interface name"),
                ))
            }
        },
    };

    let ipv4 = |name: &str| -> Result<Option<Ipv4Addr>, ConfigError> {
        match values.get(name) {
            None => Ok(None),
            Some(v) => typed(name, v).check(
                v.text
                    .parse::<Ipv4Addr>()
                    .map(Some)
                    .map_err(|_| format!("`{}` is not an IPv4 address", v.text)),
            ),
        }
    };

    let method = require("IP_METHOD")?;
    let addressing = match method.text.to_ascii_lowercase().as_str() {
        "dhcp" => Addressing::Dhcp,
        "static" => {
            let address = ipv4("IP_ADDRESS")?.ok_or_else(|| {
                at(
                    method.line,
                    Some("IP_ADDRESS"),
                    "missing: IP_METHOD=\"static\" needs IP_ADDRESS".into(),
                )
            })?;
            let mask_value = require("IP_NETMASK")?;
            let mask = ipv4("IP_NETMASK")?.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let prefix = typed("IP_NETMASK", mask_value).check(Prefix::from_netmask(mask))?;
            if let (Some(net), Some(v)) = (ipv4("IP_NETADDR")?, values.get("IP_NETADDR")) {
                if net != prefix.network(address) {
                    return Err(at(
                        v.line,
                        Some("IP_NETADDR"),
                        format!(
                            "{net} is not the network of {address}/{} (that is {})",
                            prefix.bits(),
                            prefix.network(address)
                        ),
                    ));
                }
            }
            if let (Some(bcast), Some(v)) =
                (ipv4("IP_BROADCASTADDR")?, values.get("IP_BROADCASTADDR"))
            {
                if bcast != prefix.broadcast(address) {
                    return Err(at(
                        v.line,
                        Some("IP_BROADCASTADDR"),
                        format!(
                            "{bcast} is not the broadcast address of {address}/{} (that is {})",
                            prefix.bits(),
                            prefix.broadcast(address)
                        ),
                    ));
                }
            }
            let gateway = ipv4("IP_GATEWAY")?;
            if let (Some(g), Some(v)) = (gateway, values.get("IP_GATEWAY")) {
                if prefix.network(g) != prefix.network(address) || g == address {
                    return Err(at(
                        v.line,
                        Some("IP_GATEWAY"),
                        format!(
                            "gateway {g} is not another host in {}/{}",
                            prefix.network(address),
                            prefix.bits()
                        ),
                    ));
                }
            }
            let dns: Vec<IpAddr> = [ipv4("IP_DNS1")?, ipv4("IP_DNS2")?]
                .into_iter()
                .flatten()
                .map(IpAddr::V4)
                .collect();
            Addressing::Static(StaticNetwork {
                address,
                prefix,
                gateway,
                dns,
            })
        }
        other => {
            return Err(at(
                method.line,
                Some("IP_METHOD"),
                format!("`{other}` is not a method (dhcp or static)"),
            ))
        }
    };

    let proxy = match values.get("PROXY_SERVER") {
        None => None,
        Some(v) if v.text.starts_with("http://") => Some(v.text.clone()),
        // PlanetLab wrote bare `host:port`.
        Some(v) if !v.text.contains("://") && !v.text.contains(char::is_whitespace) => {
            Some(format!("http://{}", v.text))
        }
        Some(v) => {
            return Err(at(
                v.line,
                Some("PROXY_SERVER"),
                format!(
                    "`{}` is not a proxy (host:port or http://host:port)",
                    v.text
                ),
            ))
        }
    };

    Ok(Imported {
        config: NodeConfig {
            node_id: NodeId(node_id),
            key,
            hostname,
            domain,
            network: NetworkConfig {
                interface,
                addressing,
            },
            server_urls: Vec::new(),
            proxy,
            mirrors: Vec::new(),
        },
        warnings,
    })
}

fn error_at(source: &Path, line: usize, field: Option<&str>, message: String) -> ConfigError {
    ConfigError::Invalid {
        location: Location {
            source: source.to_path_buf(),
            line: Some(line),
            column: None,
        },
        field: field.map(str::to_string),
        message,
    }
}

/// Attaches the place of one `NAME="value"` line to a conversion's error.
struct TypedAt<'a> {
    source: &'a Path,
    name: String,
    line: usize,
}

impl TypedAt<'_> {
    fn check<T>(&self, r: Result<T, String>) -> Result<T, ConfigError> {
        r.map_err(|m| error_at(self.source, self.line, Some(&self.name), m))
    }
}

fn unquote(value: &str) -> Result<String, String> {
    for q in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(q) {
            let inner = inner
                .strip_suffix(q)
                .ok_or_else(|| format!("unterminated quote in `{value}`"))?;
            if inner.contains(q) {
                return Err(format!("stray quote inside `{value}`"));
            }
            return Ok(inner.to_string());
        }
    }
    if value.contains(char::is_whitespace) {
        return Err(format!("`{value}` has spaces: quote the value"));
    }
    Ok(value.to_string())
}

/// Writes a config in the `plnode.txt` form (for admins whose tools expect it).
pub fn to_plnode_txt(c: &NodeConfig) -> String {
    let mut out = String::from("# PlanetLab node configuration (plnode.txt form)\n");
    let mut put = |k: &str, v: String| out.push_str(&format!("{k}=\"{v}\"\n"));
    put("NODE_ID", c.node_id.to_string());
    put("NODE_KEY", c.key.expose().to_string());
    put("HOST_NAME", c.hostname.to_string());
    if let Some(d) = &c.domain {
        put("DOMAIN_NAME", d.to_string());
    }
    match &c.network.interface {
        InterfaceChoice::FirstWithLink => {}
        InterfaceChoice::Name(n) => put("NET_DEVICE", n.clone()),
        InterfaceChoice::Mac(m) => put("NET_DEVICE", m.to_string()),
    }
    match &c.network.addressing {
        Addressing::Dhcp => put("IP_METHOD", "dhcp".into()),
        Addressing::Static(s) => {
            put("IP_METHOD", "static".into());
            put("IP_ADDRESS", s.address.to_string());
            put("IP_NETMASK", s.prefix.netmask().to_string());
            put("IP_NETADDR", s.prefix.network(s.address).to_string());
            put(
                "IP_BROADCASTADDR",
                s.prefix.broadcast(s.address).to_string(),
            );
            if let Some(g) = s.gateway {
                put("IP_GATEWAY", g.to_string());
            }
            let v4: Vec<Ipv4Addr> = s
                .dns
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V4(v) => Some(*v),
                    IpAddr::V6(_) => None,
                })
                .collect();
            for (name, addr) in ["IP_DNS1", "IP_DNS2"].iter().zip(v4) {
                put(name, addr.to_string());
            }
        }
    }
    if let Some(p) = &c.proxy {
        put("PROXY_SERVER", p.trim_start_matches("http://").to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATIC: &str = r#"# written by the PlanetLab site admin page
IP_METHOD="static"
IP_ADDRESS="128.112.139.71"
IP_GATEWAY="128.112.139.1"
IP_NETMASK="255.255.255.0"
IP_NETADDR="128.112.139.0"
IP_BROADCASTADDR="128.112.139.255"
IP_DNS1="128.112.136.10"
IP_DNS2="128.112.136.12"
HOST_NAME="planetlab-1"
DOMAIN_NAME="cs.princeton.edu"
NET_DEVICE="00:30:48:2A:5B:1C"
NODE_KEY="79efbe871722771675de604a227db8386e3f0e3cd6e7b3f2"
NODE_ID="121"
"#;

    fn parse_str(text: &str) -> Result<Imported, ConfigError> {
        parse(text, Path::new("plnode.txt"))
    }

    #[test]
    fn a_planetlab_static_file_imports() {
        let imported = parse_str(STATIC).unwrap();
        let c = imported.config;
        assert!(imported.warnings.is_empty());
        assert_eq!(c.node_id, NodeId(121));
        assert_eq!(c.fqdn(), "planetlab-1.cs.princeton.edu");
        assert_eq!(
            c.network.interface,
            InterfaceChoice::Mac("00:30:48:2a:5b:1c".parse().unwrap())
        );
        let Addressing::Static(s) = c.network.addressing else {
            panic!("static expected")
        };
        assert_eq!(s.prefix.bits(), 24);
        assert_eq!(s.gateway, Some(Ipv4Addr::new(128, 112, 139, 1)));
        assert_eq!(s.dns.len(), 2);
    }

    #[test]
    fn the_export_imports_back_to_the_same_config() {
        let c = parse_str(STATIC).unwrap().config;
        let again = parse_str(&to_plnode_txt(&c)).unwrap().config;
        assert_eq!(c, again);
    }

    #[test]
    fn dhcp_with_a_full_host_name_and_bare_proxy() {
        let text = "IP_METHOD=dhcp\nHOST_NAME='node7.example.org'\nNODE_ID=7\n\
                    NODE_KEY=\"abcdefghijklmnopqrstuvwxyz0123456789\"\nPROXY_SERVER=\"proxy:3128\"\nNET_DEVICE=eth1\n";
        let c = parse_str(text).unwrap().config;
        assert_eq!(c.hostname.as_str(), "node7");
        assert_eq!(c.domain.unwrap().as_str(), "example.org");
        assert_eq!(c.proxy.as_deref(), Some("http://proxy:3128"));
        assert_eq!(c.network.interface, InterfaceChoice::Name("eth1".into()));
    }

    #[test]
    fn errors_name_the_line_and_variable() {
        let bad = STATIC.replace("255.255.255.0", "255.0.255.0");
        let e = parse_str(&bad).unwrap_err();
        assert_eq!((e.line(), e.field()), (Some(5), Some("IP_NETMASK")), "{e}");

        let bad = STATIC.replace("128.112.139.255", "128.112.139.254");
        let e = parse_str(&bad).unwrap_err();
        assert_eq!(e.field(), Some("IP_BROADCASTADDR"), "{e}");

        let bad = STATIC.replace("NODE_ID=\"121\"", "NODE_ID=\"abc\"");
        let e = parse_str(&bad).unwrap_err();
        assert_eq!((e.line(), e.field()), (Some(14), Some("NODE_ID")), "{e}");

        let e = parse_str(&STATIC.replace("NODE_KEY", "# NODE_KEY")).unwrap_err();
        assert_eq!(e.field(), Some("NODE_KEY"), "{e}");
        assert!(e.to_string().contains("must be set"), "{e}");

        let e = parse_str(&format!("{STATIC}IP_METHOD=\"dhcp\"\n")).unwrap_err();
        assert!(e.to_string().contains("set twice (first on line 2)"), "{e}");

        let e = parse_str("this is not a config\n").unwrap_err();
        assert!(e.to_string().contains("expected NAME=\"value\""), "{e}");
    }

    #[test]
    fn unknown_names_are_reported_not_fatal() {
        let imported = parse_str(&format!("{STATIC}DISCONNECTED_OPERATION=\"\"\n")).unwrap();
        assert_eq!(imported.warnings.len(), 1);
        assert!(imported.warnings[0].contains("DISCONNECTED_OPERATION"));
    }
}
