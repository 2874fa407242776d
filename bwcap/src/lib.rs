//! Bandwidth caps for a PlanetLab-style node: the node's outgoing cap set by
//! the site admin, a guaranteed rate and a ceiling per sliver, spare
//! capacity shared fairly, rate limits on traffic that alarms the Internet
//! (ICMP echo, IP options), and PlanetLab's daily byte budgets.
//!
//! The data flow of one pass ([`Bwcap::apply`]):
//!
//! - [`desired`]: what the node should look like (interface, node cap,
//!   slivers with cgroup and rspec), from `nodemgr` or a TOML state file;
//! - [`store`]: what bwcap remembers (class id table, counters, budgets);
//! - [`tc`]: the kernel's qdiscs and classes, read and written over rtnetlink
//!   (HTB's attributes built here on `netlink-packet-route`'s generic type);
//! - [`counters`], [`budget`]: traffic counted from the class statistics,
//!   ceilings lowered past 80 % of the daily budget;
//! - [`layout`]: the HTB tree wanted; [`reconcile`]: the difference, sent in
//!   one batch;
//! - [`bpf`]: a `cgroup_skb/egress` program per sliver cgroup that puts its
//!   packets in its class.
//!
//! [`usage`] reads counters and the layout back (for `bwcap show` and the
//! sensors). [`testbed`] builds network namespaces, veth pairs and cgroups
//! for the tests and the benchmark.

#![warn(missing_docs, missing_debug_implementations)]

pub mod bpf;
pub mod budget;
pub mod counters;
pub mod desired;
pub mod layout;
pub mod link;
pub mod names;
pub mod reconcile;
pub mod store;
pub mod tc;
pub mod testbed;
pub mod usage;

pub use desired::{DesiredState, SliverSpec, DEFAULT_DAILY_BUDGET};
pub use names::{InterfaceName, SliceName};
pub use reconcile::{ApplyReport, Bwcap, Error, DEFAULT_STATE_DIR};
pub use usage::{SliverUsage, Usage};
