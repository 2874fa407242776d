//! Command-line arguments of `sensors` (types only; handlers are in
//! commands.rs).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The node's sensor server: what the node and its slivers are doing, as
/// tables of comma-separated values over HTTP on the node's loopback, one
/// sensor per path (`curl http://127.0.0.1:33080/` lists them), and as
/// Prometheus metrics on /metrics.
///
/// Sensors: load, load5, uptime, meminfo, cpu, disk, net, node, slivers
/// (snapshots), events and connections (streams). Trailing path arguments
/// select rows by key or columns by name: /slivers/princeton_codeen,
/// /net/eth0/rx_bytes. Only GET and HEAD are served, and only to loopback
/// clients unless --allow-from names other networks.
#[derive(Debug, Parser)]
#[command(name = "sensors", version, about, long_about)]
pub struct Cli {
    /// More log output (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the sensors over HTTP until stopped.
    Serve(ServeArgs),
    /// Print one snapshot sensor's table (or /metrics) without a server,
    /// as GET PATH would answer it.
    Read(ReadArgs),
}

/// `sensors serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on. Binding wider than loopback does
    /// not serve other peers by itself: see --allow-from.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:33080")]
    pub listen: SocketAddr,
    /// Also serve peers in this network (CIDR, e.g. 10.0.0.0/8); repeat
    /// for more. Loopback is always served.
    #[arg(long, value_name = "NET")]
    pub allow_from: Vec<ipnet::IpNet>,
    /// Connections served at once; more are answered 503 and closed.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections: usize,
    /// Seconds for a request's head to arrive (and for an idle
    /// keep-alive connection to send its next request).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub request_timeout: u64,
    /// Seconds a client may read nothing of an answer before its
    /// connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub write_timeout: u64,
    /// Milliseconds a reading is reused (0: read for every request).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub cache_ms: u64,
    /// Milliseconds a request waits for a source before answering 503.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub sensor_timeout_ms: u64,
    /// Outgoing connections kept per slice for the connections sensor.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub connections_kept: usize,
    /// Milliseconds between two looks at the kernel's socket table.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub connections_interval_ms: u64,
    #[command(flatten)]
    pub sources: SourceArgs,
}

/// `sensors read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The path, as in a request: /load, /slivers/princeton_codeen, /metrics.
    pub path: String,
    #[command(flatten)]
    pub sources: SourceArgs,
}

/// Where the sources are (defaults: an installed node).
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// The proc file system.
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    pub proc: PathBuf,
    /// The node config.
    #[arg(long, value_name = "FILE", default_value = "/plnode/node.toml")]
    pub node_config: PathBuf,
    /// The CD's hand-over note.
    #[arg(long, value_name = "FILE", default_value = config::handover::HANDOVER_FILE)]
    pub handover: PathBuf,
    /// The node's event journal.
    #[arg(long, value_name = "FILE", default_value = config::events::JOURNAL)]
    pub journal: PathBuf,
    /// nodemgr's state directory.
    #[arg(long, value_name = "DIR", default_value = nodemgr::settings::STATE_DIR)]
    pub nodemgr_state_dir: PathBuf,
    /// The cgroup2 hierarchy (slivers are in slivers/<slice>).
    #[arg(long, value_name = "DIR", default_value = nodemgr::settings::CGROUP_ROOT)]
    pub cgroup_root: PathBuf,
    /// bwcap's state directory (per-sliver counters and budgets).
    #[arg(long, value_name = "DIR", default_value = bwcap::DEFAULT_STATE_DIR)]
    pub bwcap_state_dir: PathBuf,
    /// The slivers' file system when it is a directory (build hosts);
    /// by default nodemgr's image mount.
    #[arg(long, value_name = "DIR")]
    pub slivers_dir: Option<PathBuf>,
}
