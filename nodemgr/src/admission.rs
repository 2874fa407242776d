//! Admission control: the guaranteed CPU shares and guaranteed outgoing
//! bandwidth promised on the node never add up to more than the node has.
//!
//! A sliver whose rspec says `guaranteed` reserves its `cpu_share` out of
//! the node's pool of CPU shares (the NSDI paper's node: 1,000, so a share
//! is at least 0.1 % of the slivers' CPU under contention) and its
//! `net_min_rate` out of the node's outgoing bandwidth (the site's cap, or
//! 100 Mbit/s, the paper's default root rate). Best-effort slivers reserve
//! nothing and are always admitted. What is promised counts the rspecs of
//! every sliver and of every acquired rcap not yet bound.

use config::rspec::Rspec;
use config::units::Rate;
use serde::Serialize;

/// What the node can promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// CPU shares that guaranteed slivers may reserve in total.
    pub cpu_shares: u64,
    /// Outgoing bandwidth that guaranteed slivers may reserve in total.
    pub bandwidth: Rate,
}

impl Default for Capacity {
    fn default() -> Capacity {
        Capacity {
            cpu_shares: 1000,
            bandwidth: Rate::mbit(100),
        }
    }
}

/// What is reserved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Reserved {
    /// CPU shares.
    pub cpu_shares: u64,
    /// Bits per second.
    pub bandwidth_bps: u64,
}

impl Reserved {
    /// The reservations of `rspecs` (best-effort ones count nothing).
    pub fn of<'a>(rspecs: impl IntoIterator<Item = &'a Rspec>) -> Reserved {
        let mut r = Reserved::default();
        for rspec in rspecs {
            r.add(rspec);
        }
        r
    }

    fn add(&mut self, rspec: &Rspec) {
        if rspec.guaranteed {
            self.cpu_shares += u64::from(rspec.cpu_share);
            self.bandwidth_bps += rspec.net_min_rate.bits_per_sec();
        }
    }
}

/// An rspec that does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not enough CPU shares left.
    #[error("admission control: {asked} guaranteed CPU shares asked, {free} of the node's {total} are free")]
    Cpu {
        /// Shares asked.
        asked: u64,
        /// Shares free.
        free: u64,
        /// The node's pool.
        total: u64,
    },
    /// Not enough bandwidth left.
    #[error("admission control: {} guaranteed outgoing bandwidth asked, {} of the node's {} is free", Rate::from_bits_per_sec(*asked_bps), Rate::from_bits_per_sec(*free_bps), Rate::from_bits_per_sec(*total_bps))]
    Bandwidth {
        /// Bits per second asked.
        asked_bps: u64,
        /// Bits per second free.
        free_bps: u64,
        /// The node's bandwidth.
        total_bps: u64,
    },
}

/// Whether `rspec` fits beside what is `reserved` on a node of `capacity`.
pub fn admit(capacity: &Capacity, reserved: &Reserved, rspec: &Rspec) -> Result<(), Refused> {
    if !rspec.guaranteed {
        return Ok(());
    }
    let asked = u64::from(rspec.cpu_share);
    let free = capacity.cpu_shares.saturating_sub(reserved.cpu_shares);
    if asked > free {
        return Err(Refused::Cpu {
            asked,
            free,
            total: capacity.cpu_shares,
        });
    }
    let asked_bps = rspec.net_min_rate.bits_per_sec();
    let total_bps = capacity.bandwidth.bits_per_sec();
    let free_bps = total_bps.saturating_sub(reserved.bandwidth_bps);
    if asked_bps > free_bps {
        return Err(Refused::Bandwidth {
            asked_bps,
            free_bps,
            total_bps,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guaranteed(cpu: u32, mbit: u64) -> Rspec {
        Rspec {
            cpu_share: cpu,
            net_min_rate: Rate::mbit(mbit),
            net_max_rate: Rate::mbit(mbit.max(10)),
            guaranteed: true,
            ..Rspec::default()
        }
    }

    #[test]
    fn guarantees_never_exceed_the_node_and_best_effort_always_fits() {
        let cap = Capacity::default();
        let taken = [guaranteed(600, 40), guaranteed(300, 40)];
        let reserved = Reserved::of(&taken);
        assert_eq!(reserved.cpu_shares, 900);
        admit(&cap, &reserved, &guaranteed(100, 20)).unwrap();
        let e = admit(&cap, &reserved, &guaranteed(101, 1)).unwrap_err();
        assert!(matches!(e, Refused::Cpu { free: 100, .. }), "{e}");
        let e = admit(&cap, &reserved, &guaranteed(10, 21)).unwrap_err();
        assert!(e.to_string().contains("20mbit"), "{e}");
        let huge = Rspec {
            cpu_share: 10_000,
            ..Rspec::default()
        };
        admit(&cap, &Reserved::of(&[guaranteed(1000, 100)]), &huge).unwrap();
    }
}
