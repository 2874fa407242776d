//! Reading back what is in force: the layout with the kernel's counters, and
//! per sliver its rates, budget and traffic over the last minute, hour and
//! day. Read-only (the sensors server calls it; `bwcap show` prints it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use config::units::{ByteSize, Rate};
use config::Timestamp;
use serde::Serialize;

use crate::budget::BudgetState;
use crate::counters::Window;
use crate::layout::{
    Role, CLASS_DEFAULT, CLASS_ICMP, CLASS_IP_OPTIONS, CLASS_NODE, CLASS_NODE_CAP,
};
use crate::link;
use crate::names::{InterfaceName, SliceName};
use crate::reconcile::{Bwcap, Error};
use crate::store::{State, KEEP_REMOVED_SECS};
use crate::tc::decode::Stats;
use crate::tc::{
    handle_text, major_of, minor_of, HtbClassParams, KernelClass, RouteSocket, HTB_MAJOR,
};

/// The layout and the counters, as of one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// The egress interface.
    pub interface: InterfaceName,
    /// The node cap in force.
    pub node_cap: Option<Rate>,
    /// Whether that cap is the link's speed (no cap set).
    pub cap_is_line_rate: bool,
    /// When the last pass ran.
    pub last_pass: Option<Timestamp>,
    /// The time of this reading.
    pub at: Timestamp,
    /// Every HTB class on the interface, as the kernel has it.
    pub classes: Vec<ClassUsage>,
    /// Every sliver bwcap knows (present, or removed less than a day ago).
    pub slivers: Vec<SliverUsage>,
}

/// One class as the kernel has it.
#[derive(Debug, Clone, Serialize)]
pub struct ClassUsage {
    /// `1:<minor>`.
    pub minor: u16,
    /// Its parent, as `tc` prints it.
    pub parent: String,
    /// What it is for (`node cap`, `slice x`, ...), if bwcap made it.
    pub role: Option<String>,
    /// Rates (bytes/s), bursts, quantum.
    pub params: HtbClassParams,
    /// The kernel's counters.
    pub stats: Stats,
    /// Its leaf queue's handle, as `tc` prints it.
    pub leaf: Option<String>,
}

/// One sliver's rates, budget and traffic.
#[derive(Debug, Clone, Serialize)]
pub struct SliverUsage {
    /// The slice.
    pub slice: SliceName,
    /// Its class, `1:<class>`.
    pub class: u16,
    /// When it was removed, if it was (its record is kept a day).
    pub removed_at: Option<Timestamp>,
    /// Guaranteed rate.
    pub guaranteed: Rate,
    /// Ceiling in force.
    pub ceiling: Rate,
    /// Ceiling without the budget.
    pub normal_ceiling: Rate,
    /// Daily budget.
    pub daily_budget: ByteSize,
    /// Bytes sent in the current budget period.
    pub budget_used: u64,
    /// Bytes left in it.
    pub budget_left: u64,
    /// Normal, throttled or exhausted.
    pub budget_state: BudgetState,
    /// When the budget period began.
    pub period_start: Timestamp,
    /// When it ends.
    pub period_end: Timestamp,
    /// Bytes since bwcap first saw the sliver.
    pub total_bytes: u64,
    /// Packets since then.
    pub total_packets: u64,
    /// The last 60 seconds.
    pub last_minute: Window,
    /// The last hour.
    pub last_hour: Window,
    /// The last 24 hours.
    pub last_day: Window,
}

fn fixed_role(minor: u16) -> Option<Role> {
    match minor {
        CLASS_NODE_CAP => Some(Role::NodeCap),
        CLASS_NODE => Some(Role::Node),
        CLASS_DEFAULT => Some(Role::Default),
        CLASS_ICMP => Some(Role::Icmp),
        CLASS_IP_OPTIONS => Some(Role::IpOptions),
        _ => None,
    }
}

impl Bwcap {
    /// The layout and counters now (in the calling thread's network
    /// namespace), for the interface of the last pass.
    pub fn usage(&self, now: Timestamp) -> Result<Usage, Error> {
        let state = State::load(self.state_dir()).map_err(|source| Error::Store {
            dir: self.state_dir().to_path_buf(),
            source,
        })?;
        let Some(interface) = state.interface.clone() else {
            return Err(Error::NothingApplied {
                dir: self.state_dir().to_path_buf(),
            });
        };
        let netlink = |source| Error::Netlink {
            interface: interface.clone(),
            source,
        };
        let ifindex = link::index(&interface).map_err(|source| Error::UnknownInterface {
            name: interface.clone(),
            source,
        })?;
        let mut socket = RouteSocket::open().map_err(netlink)?;
        let kernel: Vec<KernelClass> = socket
            .classes(ifindex)
            .map_err(netlink)?
            .into_iter()
            .filter(|c| major_of(c.handle) == HTB_MAJOR && c.kind == "htb")
            .collect();
        Ok(Usage::from_parts(&state, &kernel, interface, now))
    }
}

impl Usage {
    /// Combines the stored state with the kernel's classes.
    pub fn from_parts(
        state: &State,
        kernel: &[KernelClass],
        interface: InterfaceName,
        now: Timestamp,
    ) -> Usage {
        let by_class: BTreeMap<u16, &SliceName> = state
            .slivers
            .iter()
            .filter(|(_, r)| r.removed_at.is_none())
            .map(|(s, r)| (r.class, s))
            .collect();
        let live: BTreeMap<u16, &KernelClass> =
            kernel.iter().map(|c| (minor_of(c.handle), c)).collect();
        let mut classes: Vec<ClassUsage> = kernel
            .iter()
            .filter_map(|c| {
                let minor = minor_of(c.handle);
                let role = fixed_role(minor).map(|r| r.label()).or_else(|| {
                    by_class
                        .get(&minor)
                        .map(|s| Role::Sliver((*s).clone()).label())
                });
                Some(ClassUsage {
                    minor,
                    parent: handle_text(c.parent),
                    role,
                    params: c.htb?,
                    stats: c.stats,
                    leaf: (c.leaf != 0).then(|| handle_text(c.leaf)),
                })
            })
            .collect();
        classes.sort_by_key(|c| c.minor);
        let slivers = state
            .slivers
            .iter()
            .map(|(slice, r)| {
                let live_totals = live
                    .get(&r.class)
                    .filter(|_| {
                        r.removed_at.is_none() && state.interface.as_ref() == Some(&interface)
                    })
                    .map(|k| r.counters.live_totals(k.stats.bytes, k.stats.packets));
                let (total_bytes, total_packets) =
                    live_totals.unwrap_or((r.counters.total_bytes, r.counters.total_packets));
                let unbooked = total_bytes.saturating_sub(r.counters.total_bytes);
                let budget_used = if now < r.budget.end() {
                    r.budget.bytes.saturating_add(unbooked)
                } else {
                    unbooked
                };
                SliverUsage {
                    slice: slice.clone(),
                    class: r.class,
                    removed_at: r.removed_at,
                    guaranteed: r.guaranteed,
                    ceiling: r.ceiling,
                    normal_ceiling: r.normal_ceiling,
                    daily_budget: r.daily_budget,
                    budget_used,
                    budget_left: r.daily_budget.bytes().saturating_sub(budget_used),
                    budget_state: r.budget_state,
                    period_start: r.budget.start,
                    period_end: r.budget.end(),
                    total_bytes,
                    total_packets,
                    last_minute: r.counters.window(now, 60, live_totals),
                    last_hour: r.counters.window(now, 3600, live_totals),
                    last_day: r.counters.window(now, 86_400, live_totals),
                }
            })
            .collect();
        Usage {
            interface,
            node_cap: state.node_cap,
            cap_is_line_rate: state.cap_is_line_rate,
            last_pass: state.last_pass,
            at: now,
            classes,
            slivers,
        }
    }

    /// The layout in the manner of `tc -s class show`, with the slice names,
    /// budgets and counters beside the classes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let cap = match (self.node_cap, self.cap_is_line_rate) {
            (Some(c), false) => format!("node cap {c}"),
            (Some(c), true) => format!("no node cap set (line rate {c})"),
            (None, _) => "no node cap".into(),
        };
        let _ = writeln!(
            out,
            "bwcap on {}: {cap}; last pass {}",
            self.interface,
            self.last_pass.map_or("never".into(), |t| t.to_string())
        );
        let slivers: BTreeMap<u16, &SliverUsage> = self
            .slivers
            .iter()
            .filter(|s| s.removed_at.is_none())
            .map(|s| (s.class, s))
            .collect();
        for c in &self.classes {
            let p = &c.params;
            let mut line = format!("class htb 1:{:x} ", c.minor);
            if c.parent == "root" {
                line.push_str("root ");
            } else {
                let _ = write!(line, "parent {} ", c.parent);
            }
            if let Some(leaf) = &c.leaf {
                let _ = write!(line, "leaf {leaf} ");
            }
            let _ = write!(
                line,
                "prio {} quantum {} rate {} ceil {} burst {}b cburst {}b",
                p.prio,
                p.quantum,
                Rate::from_bits_per_sec(p.rate.saturating_mul(8)),
                Rate::from_bits_per_sec(p.ceil.saturating_mul(8)),
                crate::tc::htb::burst_bytes(p.buffer, p.rate),
                crate::tc::htb::burst_bytes(p.cbuffer, p.ceil),
            );
            if p.mpu != 0 {
                let _ = write!(line, " mpu {}b", p.mpu);
            }
            if let Some(role) = &c.role {
                let _ = write!(line, "  [{role}]");
            }
            let _ = writeln!(out, "{line}");
            let s = &c.stats;
            let _ = writeln!(
                out,
                " Sent {} bytes {} pkt (dropped {}, overlimits {} requeues {})",
                s.bytes, s.packets, s.drops, s.overlimits, s.requeues
            );
            let _ = writeln!(out, " backlog {}b {}p", s.backlog_bytes, s.backlog_packets);
            if let Some(sliver) = slivers.get(&c.minor) {
                out.push_str(&sliver_lines(sliver));
            }
        }
        for s in self.slivers.iter().filter(|s| s.removed_at.is_some()) {
            let removed = s.removed_at.unwrap_or(self.at);
            let _ = writeln!(
                out,
                "removed slice {} (class 1:{:x}) at {removed}; record kept until {}",
                s.slice,
                s.class,
                removed.saturating_add_secs(KEEP_REMOVED_SECS)
            );
            out.push_str(&sliver_lines(s));
        }
        out
    }
}

fn sliver_lines(s: &SliverUsage) -> String {
    let percent = |used: u64, of: u64| {
        if of == 0 {
            0
        } else {
            (u128::from(used) * 100 / u128::from(of)) as u64
        }
    };
    let state = match s.budget_state {
        BudgetState::Normal => format!("ceiling {} (normal)", s.ceiling),
        BudgetState::Throttled => format!(
            "ceiling lowered to {} (normal {}) past 80 %",
            s.ceiling, s.normal_ceiling
        ),
        BudgetState::Exhausted => format!("budget spent: guaranteed rate {} only", s.ceiling),
    };
    let window = |name: &str, w: &Window| {
        format!(
            "{name} {} bytes {} pkt ({}/s over {} s)",
            w.bytes,
            w.packets,
            Rate::from_bits_per_sec(w.bits_per_sec()),
            w.seconds
        )
    };
    format!(
        " budget {}/day: used {} bytes ({} %), {} left, period ends {}; {state}\n {}; {}; {}\n",
        s.daily_budget,
        s.budget_used,
        percent(s.budget_used, s.daily_budget.bytes()),
        ByteSize::from_bytes(s.budget_left),
        s.period_end,
        window("last minute", &s.last_minute),
        window("hour", &s.last_hour),
        window("day", &s.last_day),
    )
}

/// Reads a state directory's usage without a [`Bwcap`] (for the sensors).
pub fn usage(state_dir: &Path, now: Timestamp) -> Result<Usage, Error> {
    Bwcap::new(state_dir).usage(now)
}
