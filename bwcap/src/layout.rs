//! The HTB tree bwcap wants, computed from the desired state (PlanetLab's
//! layout):
//!
//! ```text
//! 1:   htb qdisc on the egress interface, default class 1:3
//! └─ 1:1  node cap: rate = ceil = the node's cap
//!    ├─ 1:2   the node's own traffic (ssh, updates, check-ins): 5 % of the cap guaranteed
//!    ├─ 1:3   unclassified traffic (the default class)
//!    ├─ 1:4   ICMP echo requests from slivers: 10 packets/s
//!    ├─ 1:5   IPv4 packets with options from slivers: 10 packets/s
//!    └─ 1:10… one class per sliver: rate = guaranteed, ceil = min(max rate, cap)
//!             (lowered by the daily budget), quantum = 1514 bytes × cpu_share
//! ```
//!
//! Every leaf has its own queue: `fq_codel` where the kernel has it, else
//! `pfifo`; the two alarm classes always a short `pfifo`. Rates are bytes/s
//! in the kernel; bursts are at least two full frames and 10 ms at the rate.

use config::units::Rate;

use crate::names::SliceName;
use crate::tc::htb::{burst_ticks, HtbClassParams};
use crate::tc::Parent;

/// The node-cap class at the top of the tree.
pub const CLASS_NODE_CAP: u16 = 1;
/// The node's own traffic.
pub const CLASS_NODE: u16 = 2;
/// Unclassified traffic (HTB's default class).
pub const CLASS_DEFAULT: u16 = 3;
/// ICMP echo requests from slivers.
pub const CLASS_ICMP: u16 = 4;
/// IPv4 packets with options from slivers.
pub const CLASS_IP_OPTIONS: u16 = 5;
/// The first sliver class; lower minors are bwcap's own.
pub const FIRST_SLIVER_CLASS: u16 = 0x10;

/// A full Ethernet frame (1500-byte MTU plus header): the unit of quantum
/// and the alarm classes' charge per packet.
pub const FRAME_BYTES: u64 = 1514;
/// Packets per second the ICMP and IP-options classes let through.
pub const ALARM_PACKETS_PER_SEC: u64 = 10;
/// Queue length of the alarm classes: a flood is dropped, not queued for minutes.
pub const ALARM_QUEUE_PACKETS: u32 = 16;
/// Queue length of the other leaves.
pub const LEAF_QUEUE_PACKETS: u32 = 1000;
/// `fq_codel` flow queues per leaf (the default, 1024, costs 64 KiB per sliver).
pub const LEAF_FLOWS: u32 = 64;
/// Quantum per share: one full frame. HTB serves a class one packet per
/// turn (more while its deficit lasts), so with packets of one size the
/// sharing is exact whatever each class keeps queued. A large quantum
/// (a whole 64 KiB TSO burst) lets a class send all it has queued per turn,
/// and a single TCP flow keeps only two bursts queued (TCP small queues):
/// measured on this design's bench, ten equal slivers then share with a
/// Jain index of 0.37, against 1.00 with a frame and bounded bursts
/// ([`EGRESS_GSO_MAX_SEGS`]).
pub const QUANTUM_PER_SHARE: u64 = FRAME_BYTES;
/// The largest quantum (shares beyond 1000 add nothing).
pub const MAX_QUANTUM: u64 = 1000 * QUANTUM_PER_SHARE;
/// Segments per GSO/TSO burst on the egress interface. HTB schedules whole
/// bursts; with TCP's default of up to 45 segments (64 KiB) per burst, a
/// flow whose bursts are bigger gets more of a shared link and a slow class
/// moves in half-second lumps. Two segments keep packets nearly uniform
/// and leave most of the per-packet saving (measured in the benchmark).
pub const EGRESS_GSO_MAX_SEGS: u32 = 2;
/// Shares of the node's own class.
pub const NODE_SHARES: u64 = 10;

/// What a class is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// 1:1, the node cap.
    NodeCap,
    /// 1:2, the node's own traffic.
    Node,
    /// 1:3, unclassified traffic.
    Default,
    /// 1:4, ICMP echo from slivers.
    Icmp,
    /// 1:5, IP options from slivers.
    IpOptions,
    /// A sliver's class.
    Sliver(SliceName),
}

impl Role {
    /// A word or the slice's name, for `bwcap show`.
    pub fn label(&self) -> String {
        match self {
            Role::NodeCap => "node cap".into(),
            Role::Node => "node".into(),
            Role::Default => "unclassified".into(),
            Role::Icmp => "icmp echo".into(),
            Role::IpOptions => "ip options".into(),
            Role::Sliver(s) => format!("slice {s}"),
        }
    }
}

/// The queue a leaf class gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafPlan {
    /// `fq_codel` if the kernel has it, else `pfifo`, of [`LEAF_QUEUE_PACKETS`].
    Fair,
    /// Always `pfifo` of this many packets.
    Fifo(u32),
}

/// One class of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedClass {
    /// `1:<minor>`.
    pub minor: u16,
    /// Its parent.
    pub parent: Parent,
    /// Rates, bursts, quantum.
    pub params: HtbClassParams,
    /// Its queue (every planned class but the node cap is a leaf).
    pub leaf: Option<LeafPlan>,
    /// What it is for.
    pub role: Role,
}

/// The whole tree, parents before children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The class unclassified packets go to.
    pub default_class: u16,
    /// The classes.
    pub classes: Vec<PlannedClass>,
}

/// A sliver's input to the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliverClass {
    /// The slice.
    pub slice: SliceName,
    /// Its class minor (from the allocation table).
    pub minor: u16,
    /// Guaranteed rate.
    pub guaranteed: Rate,
    /// Ceiling in force (max rate and node cap, lowered by the budget).
    pub ceiling: Rate,
    /// `cpu_share`.
    pub share: u32,
}

/// Bytes per second, at least 1.
pub fn bytes_per_sec(rate: Rate) -> u64 {
    (rate.bits_per_sec() / 8).max(1)
}

/// A class's burst for a rate in bytes/s: 10 ms of it, at least two frames.
pub fn burst_for(rate: u64) -> u64 {
    (rate / 100).max(2 * FRAME_BYTES)
}

fn shaped(rate: u64, ceil: u64, quantum: u64) -> HtbClassParams {
    let ceil = ceil.max(1);
    let rate = rate.clamp(1, ceil);
    HtbClassParams {
        rate,
        ceil,
        buffer: burst_ticks(burst_for(rate), rate),
        cbuffer: burst_ticks(burst_for(ceil), ceil),
        quantum: quantum.clamp(QUANTUM_PER_SHARE, MAX_QUANTUM) as u32,
        ..HtbClassParams::default()
    }
}

/// The guarantee of the node's own class: 5 % of the cap, at least 1 Mbit/s
/// (or the whole cap if that is less).
pub fn node_guarantee(cap: Rate) -> Rate {
    Rate::from_bits_per_sec(cap.bits_per_sec() / 20).clamp(Rate::mbit(1).min(cap), cap)
}

/// The tree for a node cap and slivers.
pub fn plan(node_cap: Rate, slivers: &[SliverClass]) -> Plan {
    let cap = bytes_per_sec(node_cap);
    let alarm_rate = ALARM_PACKETS_PER_SEC * FRAME_BYTES;
    let alarm = HtbClassParams {
        mpu: FRAME_BYTES as u16,
        buffer: burst_ticks(alarm_rate, alarm_rate),
        cbuffer: burst_ticks(alarm_rate, alarm_rate),
        ..shaped(alarm_rate, alarm_rate, QUANTUM_PER_SHARE)
    };
    let under_cap = Parent::Class(CLASS_NODE_CAP);
    let mut classes = vec![
        PlannedClass {
            minor: CLASS_NODE_CAP,
            parent: Parent::Qdisc,
            params: shaped(cap, cap, QUANTUM_PER_SHARE),
            leaf: None,
            role: Role::NodeCap,
        },
        PlannedClass {
            minor: CLASS_NODE,
            parent: under_cap,
            params: shaped(
                bytes_per_sec(node_guarantee(node_cap)),
                cap,
                NODE_SHARES * QUANTUM_PER_SHARE,
            ),
            leaf: Some(LeafPlan::Fair),
            role: Role::Node,
        },
        PlannedClass {
            minor: CLASS_DEFAULT,
            parent: under_cap,
            params: shaped(
                bytes_per_sec(Rate::mbit(1).min(node_cap)),
                cap,
                QUANTUM_PER_SHARE,
            ),
            leaf: Some(LeafPlan::Fair),
            role: Role::Default,
        },
        PlannedClass {
            minor: CLASS_ICMP,
            parent: under_cap,
            params: alarm,
            leaf: Some(LeafPlan::Fifo(ALARM_QUEUE_PACKETS)),
            role: Role::Icmp,
        },
        PlannedClass {
            minor: CLASS_IP_OPTIONS,
            parent: under_cap,
            params: alarm,
            leaf: Some(LeafPlan::Fifo(ALARM_QUEUE_PACKETS)),
            role: Role::IpOptions,
        },
    ];
    for s in slivers {
        let ceil = bytes_per_sec(s.ceiling.min(node_cap));
        classes.push(PlannedClass {
            minor: s.minor,
            parent: under_cap,
            params: shaped(
                bytes_per_sec(s.guaranteed),
                ceil,
                QUANTUM_PER_SHARE.saturating_mul(u64::from(s.share)),
            ),
            leaf: Some(LeafPlan::Fair),
            role: Role::Sliver(s.slice.clone()),
        });
    }
    Plan {
        default_class: CLASS_DEFAULT,
        classes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sliver(minor: u16, guaranteed: Rate, ceiling: Rate, share: u32) -> SliverClass {
        SliverClass {
            slice: "a".parse().unwrap(),
            minor,
            guaranteed,
            ceiling,
            share,
        }
    }

    #[test]
    fn planetlab_layout() {
        let p = plan(
            Rate::mbit(100),
            &[
                sliver(0x10, Rate::kbit(5), Rate::mbit(10), 1),
                sliver(0x11, Rate::mbit(200), Rate::mbit(500), 3),
            ],
        );
        let minors: Vec<u16> = p.classes.iter().map(|c| c.minor).collect();
        assert_eq!(minors, [1, 2, 3, 4, 5, 0x10, 0x11]);
        let cap = &p.classes[0];
        assert_eq!((cap.params.rate, cap.params.ceil), (12_500_000, 12_500_000));
        assert_eq!(cap.parent, Parent::Qdisc);
        let node = &p.classes[1];
        assert_eq!(node.params.rate, 625_000);
        let a = &p.classes[5];
        assert_eq!(
            (a.params.rate, a.params.ceil, a.params.quantum),
            (625, 1_250_000, 1514)
        );
        // The ceiling never exceeds the cap, the guarantee never the ceiling.
        let b = &p.classes[6];
        assert_eq!(
            (b.params.rate, b.params.ceil, b.params.quantum),
            (12_500_000, 12_500_000, 4542)
        );
        let icmp = &p.classes[3];
        assert_eq!((icmp.params.rate, icmp.params.mpu), (15_140, 1514));
        assert_eq!(icmp.leaf, Some(LeafPlan::Fifo(ALARM_QUEUE_PACKETS)));
    }

    #[test]
    fn tiny_caps_keep_every_rate_nonzero_and_below_the_cap() {
        let p = plan(
            Rate::from_bits_per_sec(8),
            &[sliver(0x10, Rate::kbit(5), Rate::mbit(10), 10_000)],
        );
        for c in &p.classes {
            assert!(
                c.params.rate >= 1 && c.params.ceil >= c.params.rate,
                "{c:?}"
            );
            assert!(c.params.buffer > 0 && c.params.cbuffer > 0);
            assert!(u64::from(c.params.quantum) <= MAX_QUANTUM);
        }
    }
}
