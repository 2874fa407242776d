//! The node's outgoing bandwidth caps (DESIGN.md §7), kept by `nodemgr
//! serve` through the `bwcap` library after every reconciliation pass (so
//! at least every poll, and after each sliver started, whose cgroup is new
//! and needs its classifier again): the site's cap for the node from the
//! server's answer, and per running sliver its rspec's guaranteed rate and
//! ceiling, on the interface of the default route.

use std::path::{Path, PathBuf};

use config::units::Rate;
use config::Timestamp;

use crate::service::{line, Service};

/// The interface of the IPv4 default route (`/proc/net/route`).
pub fn default_route_interface(route_table: &str) -> Option<String> {
    route_table.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace();
        let (iface, dest) = (f.next()?, f.next()?);
        (dest == "00000000").then(|| iface.to_string())
    })
}

/// What went wrong applying the caps.
#[derive(Debug, thiserror::Error)]
pub enum BandwidthError {
    /// No default route: no egress interface to cap.
    #[error("no default route in /proc/net/route: no interface to cap")]
    NoInterface,
    /// A name bwcap refuses.
    #[error("{0}")]
    Name(String),
    /// bwcap failed.
    #[error(transparent)]
    Bwcap(#[from] bwcap::Error),
    /// The slivers could not be listed.
    #[error(transparent)]
    Service(#[from] crate::service::ServiceError),
}

/// Applies the node cap and every running sliver's rates.
pub fn apply(
    service: &Service,
    state_dir: &Path,
    node_cap: Option<Rate>,
) -> Result<bwcap::ApplyReport, BandwidthError> {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let interface: bwcap::InterfaceName = default_route_interface(&routes)
        .ok_or(BandwidthError::NoInterface)?
        .parse()
        .map_err(|e: bwcap::names::NameError| BandwidthError::Name(e.to_string()))?;
    let cgroup_root = service.manager().settings().cgroup_root.clone();
    let running: Vec<_> = service
        .manager()
        .list()
        .map_err(crate::service::ServiceError::from)?
        .into_iter()
        .filter(|s| s.pid.is_some())
        .collect();
    let mut slivers = Vec::new();
    for s in running {
        let Some(state) = service
            .sliver_states()?
            .into_iter()
            .find(|st| st.slice == s.slice)
        else {
            continue;
        };
        let slice: bwcap::SliceName = s
            .slice
            .as_str()
            .parse()
            .map_err(|e: bwcap::names::NameError| BandwidthError::Name(e.to_string()))?;
        slivers.push(bwcap::SliverSpec::new(
            slice,
            cgroup_root.join("slivers").join(s.slice.as_str()),
            state.rspec,
        ));
    }
    let desired = bwcap::DesiredState {
        interface,
        node_cap,
        node_cgroup: Some(PathBuf::from(&cgroup_root)),
        slivers,
    };
    let report = bwcap::Bwcap::new(state_dir).apply(&desired, Timestamp::now())?;
    for w in &report.warnings {
        tracing::warn!("bandwidth: {w}");
    }
    Ok(report)
}

/// [`apply`], logged instead of returned.
pub fn apply_logged(service: &Service, state_dir: &Path, node_cap: Option<Rate>) {
    if let Err(e) = apply(service, state_dir, node_cap) {
        tracing::warn!("bandwidth caps: {}", line(&e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_routes_interface_is_found() {
        let table = "Iface\tDestination\tGateway\tFlags\n\
                     ens3\t0002000A\t00000000\t0001\n\
                     ens3\t00000000\t0202000A\t0003\n";
        assert_eq!(default_route_interface(table).as_deref(), Some("ens3"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
    }
}
