//! Bringing up the node's network: pick the interface, get an address (DHCP
//! or static), add the default route, write resolv.conf. Links, addresses
//! and routes are set over rtnetlink.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use config::node::{Addressing, InterfaceChoice, NetworkConfig};

pub mod dhcp;

use crate::hardware::{self, Nic};
use dhcp::Lease;

/// The network as configured.
#[derive(Debug, Clone)]
pub struct Up {
    pub nic: Nic,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<IpAddr>,
    pub domain: Option<String>,
    /// Set when the address came from DHCP.
    pub lease: Option<Lease>,
}

impl Up {
    /// One-line summary for markers: `iface=eth0 ip=10.0.2.15/24 gw=10.0.2.2 via=dhcp`.
    pub fn summary(&self) -> String {
        format!(
            "iface={} ip={}/{} gw={} via={}",
            self.nic.name,
            self.address,
            self.prefix,
            self.gateway
                .map(|g| g.to_string())
                .unwrap_or_else(|| "none".into()),
            if self.lease.is_some() {
                "dhcp"
            } else {
                "static"
            }
        )
    }
}

/// Runs async rtnetlink requests to completion on a small runtime.
fn with_netlink<T>(
    f: impl AsyncFnOnce(rtnetlink::Handle) -> Result<T, rtnetlink::Error>,
) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the netlink runtime")?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(conn);
        f(handle).await.map_err(|e| anyhow!("netlink: {e}"))
    })
}

/// Sets a link up by interface index.
pub fn link_up(index: u32) -> anyhow::Result<()> {
    with_netlink(async move |h| {
        h.link()
            .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
    })
}

fn lo_index() -> u32 {
    std::fs::read_to_string("/sys/class/net/lo/ifindex")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1)
}

/// Adds an address and, when given, the default route through `gateway`.
pub fn configure(
    index: u32,
    address: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
) -> anyhow::Result<()> {
    with_netlink(async move |h| {
        h.address()
            .add(index, IpAddr::V4(address), prefix)
            .replace()
            .execute()
            .await?;
        if let Some(gw) = gateway {
            let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                .output_interface(index)
                .gateway(gw)
                .build();
            match h.route().add(route).replace().execute().await {
                Ok(()) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
}

/// Picks the interface the config names, or the first with a link. All
/// candidates are set up first (carrier is only known on an up link).
pub fn choose_interface(choice: &InterfaceChoice, wait: Duration) -> anyhow::Result<Nic> {
    let sys = Path::new("/sys/class/net");
    let all = hardware::nics(sys);
    if all.is_empty() {
        return Err(anyhow!(
            "no Ethernet interface found (is the driver on the CD? loaded modules are in the log)"
        ));
    }
    let candidates: Vec<Nic> = match choice {
        InterfaceChoice::FirstWithLink => all.clone(),
        InterfaceChoice::Name(n) => all.iter().filter(|x| &x.name == n).cloned().collect(),
        InterfaceChoice::Mac(m) => all.iter().filter(|x| &x.mac == m).cloned().collect(),
    };
    if candidates.is_empty() {
        let have: Vec<String> = all
            .iter()
            .map(|n| format!("{} ({})", n.name, n.mac))
            .collect();
        return Err(anyhow!(
            "the config asks for interface {choice:?}, but this machine has {}",
            have.join(", ")
        ));
    }
    let _ = link_up(lo_index());
    for nic in &candidates {
        link_up(nic.index).with_context(|| format!("setting {} up", nic.name))?;
    }
    let deadline = Instant::now() + wait;
    loop {
        let now = hardware::nics(sys);
        if let Some(nic) = now
            .into_iter()
            .find(|n| n.link && candidates.iter().any(|c| c.name == n.name))
        {
            return Ok(nic);
        }
        if Instant::now() >= deadline {
            // A named interface without carrier may still work (some
            // drivers never report it); an automatic choice needs a link.
            if !matches!(choice, InterfaceChoice::FirstWithLink) {
                return Ok(candidates[0].clone());
            }
            let names: Vec<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
            return Err(anyhow!(
                "no link on any interface ({}) after {} s: is a cable plugged in?",
                names.join(", "),
                wait.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Brings the network up as `config` says.
pub fn bring_up(
    config: &NetworkConfig,
    hostname: Option<&str>,
    domain: Option<&str>,
) -> anyhow::Result<Up> {
    let nic = choose_interface(&config.interface, Duration::from_secs(15))?;
    let up = match &config.addressing {
        Addressing::Static(s) => {
            configure(nic.index, s.address, s.prefix.bits(), s.gateway).with_context(|| {
                format!(
                    "configuring {}/{} on {}",
                    s.address,
                    s.prefix.bits(),
                    nic.name
                )
            })?;
            Up {
                nic,
                address: s.address,
                prefix: s.prefix.bits(),
                gateway: s.gateway,
                dns: s.dns.clone(),
                domain: domain.map(str::to_string),
                lease: None,
            }
        }
        Addressing::Dhcp => {
            let lease = dhcp::acquire(&nic.name, nic.mac, hostname, Duration::from_secs(60))?;
            configure(nic.index, lease.address, lease.prefix, lease.router).with_context(|| {
                format!(
                    "configuring {}/{} from DHCP on {}",
                    lease.address, lease.prefix, nic.name
                )
            })?;
            Up {
                address: lease.address,
                prefix: lease.prefix,
                gateway: lease.router,
                dns: lease.dns.iter().copied().map(IpAddr::V4).collect(),
                domain: domain.map(str::to_string).or_else(|| lease.domain.clone()),
                lease: Some(lease),
                nic,
            }
        }
    };
    write_resolv_conf(Path::new(RESOLV_CONF), &up.dns, up.domain.as_deref())?;
    Ok(up)
}

/// Where the name servers are written: `/run` is a tmpfs the CD's
/// `switch_root` carries into the installed system, whose root is
/// read-only; `/etc/resolv.conf` on the CD and in `base` links here.
pub const RESOLV_CONF: &str = "/run/plnode/resolv.conf";

/// The resolv.conf text for these servers and search domain.
pub fn resolv_conf(dns: &[IpAddr], domain: Option<&str>) -> String {
    let mut s = String::from("# written by plnode init\n");
    if let Some(d) = domain {
        s.push_str(&format!("search {d}\n"));
    }
    for server in dns.iter().take(3) {
        s.push_str(&format!("nameserver {server}\n"));
    }
    s
}

/// Writes resolv.conf atomically.
pub fn write_resolv_conf(path: &Path, dns: &[IpAddr], domain: Option<&str>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    floor::durable::write_atomic(path, resolv_conf(dns, domain).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lists_at_most_three_servers() {
        let dns: Vec<IpAddr> = ["10.0.2.3", "1.1.1.1", "8.8.8.8", "9.9.9.9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let text = resolv_conf(&dns, Some("example.org"));
        assert_eq!(text.matches("nameserver").count(), 3);
        assert!(text.contains("search example.org\n"));
        let dir = tempfile::tempdir().unwrap();
        write_resolv_conf(&dir.path().join("etc/resolv.conf"), &dns[..1], None).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/resolv.conf")).unwrap(),
            "# written by plnode init\nnameserver 10.0.2.3\n"
        );
    }
}
