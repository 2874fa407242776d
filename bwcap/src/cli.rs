//! The command line's arguments (handlers are in `handlers.rs`).

use std::path::PathBuf;

use bwcap::{InterfaceName, DEFAULT_STATE_DIR};
use clap::{Parser, Subcommand};
use config::Timestamp;

/// The node's outgoing bandwidth: caps, guarantees and daily budgets.
#[derive(Debug, Parser)]
#[command(
    name = "bwcap",
    version,
    about = "The node's outgoing bandwidth: HTB caps per node and sliver, daily byte budgets",
    long_about = "Programs the node's egress traffic control over netlink: an HTB qdisc whose top \
class holds the node's cap (set by the site admin), one class per sliver with its guaranteed rate \
and ceiling, a class for the node's own traffic, and rate-limited classes for ICMP echo and IP \
options. A cgroup eBPF program puts each sliver's packets into its class. Past 80 % of its daily \
byte budget a sliver's ceiling drops so that the rest lasts the day.\n\n\
`bwcap apply STATE` brings the kernel to a state file (format: docs/DESIGN.md, \"Bandwidth \
caps\"); running it again changes nothing. `bwcap show` prints the layout like \
`tc -s class show`, with slice names, budgets and counters. nodemgr runs the same passes \
through the library; this tool is for staff and tests."
)]
pub struct Cli {
    /// Where bwcap keeps its class table, counters and budgets.
    #[arg(long, global = true, env = "BWCAP_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// More log output (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring the kernel to a state file (TOML): interface, node cap, slivers.
    ///
    /// Everything is checked before the first change: a bad rate, an
    /// unknown interface or a missing cgroup leaves the layout as it was.
    Apply {
        /// The state file.
        state: PathBuf,
        /// Take this as the time (RFC 3339) for budgets and counters,
        /// instead of the clock (for tests and what-ifs).
        #[arg(long, value_name = "TIME")]
        at: Option<Timestamp>,
    },
    /// Print the layout like `tc -s class show`, with slice names, rates,
    /// ceilings, budgets and the last minute, hour and day of traffic.
    Show {
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
        /// Take this as the time (RFC 3339) instead of the clock.
        #[arg(long, value_name = "TIME")]
        at: Option<Timestamp>,
    },
    /// Take bwcap off an interface: delete its HTB qdisc and detach its
    /// programs from the cgroups it knows. Counters and budgets are kept.
    Remove {
        /// The interface.
        interface: InterfaceName,
    },
}
