//! What the machine has: the hardware summary reported to the boot server,
//! and the network interfaces the node may use.

use std::path::{Path, PathBuf};

use config::api::{DiskInfo, HardwareSummary, NicInfo};
use config::node::MacAddr;

use crate::blockdev::{self, DevKind};

/// `/lib/modules/$(uname -r)`.
pub fn module_dir() -> anyhow::Result<PathBuf> {
    let release = nix::sys::utsname::uname()?
        .release()
        .to_string_lossy()
        .into_owned();
    Ok(Path::new("/lib/modules").join(release))
}

/// An Ethernet interface as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
    /// Carrier detected (only meaningful once the interface is up).
    pub link: bool,
    pub driver: Option<String>,
}

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Ethernet interfaces under `sys_class_net` (`/sys/class/net`), by name.
pub fn nics(sys_class_net: &Path) -> Vec<Nic> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(sys_class_net) else {
        return out;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        // type 1 = ARPHRD_ETHER; virtual devices (lo, veth, bridges) have no `device`.
        if read_trim(&dir.join("type")).as_deref() != Some("1") || !dir.join("device").exists() {
            continue;
        }
        let Some(mac) = read_trim(&dir.join("address")).and_then(|m| m.parse().ok()) else {
            continue;
        };
        let index = read_trim(&dir.join("ifindex"))
            .and_then(|i| i.parse().ok())
            .unwrap_or(0);
        let link = read_trim(&dir.join("carrier")).as_deref() == Some("1");
        let driver = std::fs::read_link(dir.join("device/driver"))
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
        out.push(Nic {
            name,
            index,
            mac,
            link,
            driver,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The summary sent with check-ins and to the installer's preflight.
pub fn summary() -> HardwareSummary {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
        .max(1) as u32;
    let ram_bytes = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or(0);
    let disks = blockdev::list(Path::new("/sys/block"))
        .into_iter()
        .filter(|d| matches!(d.kind, DevKind::Disk | DevKind::Cdrom))
        .map(|d| DiskInfo {
            name: d.name,
            size_bytes: d.size_bytes,
            removable: d.removable || d.kind == DevKind::Cdrom,
            model: d.model,
        })
        .collect();
    let nics = nics(Path::new("/sys/class/net"))
        .into_iter()
        .map(|n| NicInfo {
            name: n.name,
            mac: n.mac,
            link: n.link,
            driver: n.driver,
        })
        .collect();
    HardwareSummary {
        cpu_model,
        cpus,
        ram_bytes,
        disks,
        nics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_physical_ethernet_interfaces_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        for (name, ty, mac, device) in [
            ("eth0", "1", "52:54:00:12:34:56", true),
            ("lo", "772", "00:00:00:00:00:00", false),
            ("veth0", "1", "aa:bb:cc:dd:ee:ff", false),
        ] {
            let d = sys.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("type"), ty).unwrap();
            std::fs::write(d.join("address"), mac).unwrap();
            std::fs::write(d.join("ifindex"), "2").unwrap();
            std::fs::write(d.join("carrier"), "1").unwrap();
            if device {
                std::fs::create_dir_all(d.join("device")).unwrap();
            }
        }
        let found = nics(sys);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "eth0");
        assert_eq!(found[0].mac.to_string(), "52:54:00:12:34:56");
        assert!(found[0].link);
    }

    #[test]
    fn the_summary_of_this_machine_is_plausible() {
        let s = summary();
        assert!(s.cpus >= 1);
        assert!(s.ram_bytes > 64 << 20, "{}", s.ram_bytes);
    }
}
