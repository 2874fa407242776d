//! The command line's arguments: one subcommand per job, acting on a
//! working directory. Only types here; `handlers` does the work.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use bootserver::admin::{NodeRef, NodeSort};
use bootserver::model::{SiteName, SliceName};
use bootserver::rollout::{FailureLimit, WavePlan};
use clap::{Args, Parser, Subcommand, ValueEnum};
use config::api::BootState;
use config::node::{DnsName, MacAddr, ServerUrl};
use config::units::Period;
use config::Timestamp;

#[derive(Parser, Debug)]
#[command(
    name = "bootserver",
    version,
    about = "The boot server: node registry, authenticated check-in, boot states, signed repository, status page",
    long_about = "The boot server every node talks to. It knows the nodes, decides each node's boot \
state, serves the signed repository, hears the nodes' progress and failures, and tells node \
managers which slivers to run.\n\n\
Start with `bootserver init DIR --host NAME --ip ADDR`, then `bootserver serve DIR`. Admin \
commands act on the working directory given by --dir (or BOOTSERVER_DIR, or the current \
directory) and may run while the server is serving."
)]
pub struct Cli {
    /// The server's working directory (made by `bootserver init`).
    #[arg(
        short = 'd',
        long,
        global = true,
        env = "BOOTSERVER_DIR",
        default_value = "."
    )]
    pub dir: PathBuf,

    /// Print JSON instead of tables (list, show, log commands).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a working directory: CA, server certificate, database, config.
    Init(InitArgs),
    /// Serve HTTPS: the node API, the repository and the status page.
    Serve(ServeArgs),
    /// Sites: the institutions nodes belong to.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Nodes: register, inspect, change boot state, bandwidth cap, key.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Slices: sets of slivers across nodes, with keys, resources and a lease.
    #[command(subcommand)]
    Slice(SliceCommand),
    /// The signed package repository the server publishes.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Roll the published release out in waves: watch, pause, resume, abort.
    #[command(subcommand)]
    Rollout(RolloutCommand),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Directory to create (must not exist or be empty).
    pub path: PathBuf,
    /// A DNS name nodes use to reach the server (repeatable); goes into the
    /// server certificate.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<DnsName>,
    /// An IP address nodes use to reach the server (repeatable); goes into
    /// the server certificate (a QEMU guest reaches the host's 127.0.0.1 as 10.0.2.2).
    #[arg(long = "ip", value_name = "ADDR")]
    pub ips: Vec<IpAddr>,
    /// Address and port `serve` listens on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// A URL nodes use (repeatable); default: https://NAME:PORT for every
    /// --host and --ip, PORT from --listen.
    #[arg(long = "url", value_name = "URL")]
    pub urls: Vec<ServerUrl>,
    /// Use this certificate chain (PEM) from the site's own PKI instead of
    /// generating a CA. Needs --key and --ca.
    #[arg(long, requires_all = ["key", "ca"])]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// The CA certificate (PEM) that issued --cert; boot CDs carry it.
    #[arg(long, requires = "cert")]
    pub ca: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Working directory (default: --dir).
    pub path: Option<PathBuf>,
    /// Listen here instead of the config's address; port 0 picks a free one.
    /// The chosen address is printed as `listening on https://ADDR:PORT`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

#[derive(Subcommand, Debug)]
pub enum SiteCommand {
    /// Register a site.
    Add {
        /// Short name, e.g. `princeton` (lowercase letters, digits, _ and -).
        name: SiteName,
        /// Free text shown in listings.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List sites.
    List,
    /// Delete a site that has no nodes.
    Delete { name: SiteName },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NetworkMethod {
    Dhcp,
    Static,
}

/// Where and how to write a node's config file.
#[derive(Args, Debug)]
pub struct ConfigOutput {
    /// Write the node's config file here (`-` for standard output). It holds
    /// the node's key: the file is created with mode 0600.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Write PlanetLab's plnode.txt form instead of node.toml.
    #[arg(long)]
    pub plnode_txt: bool,
    /// Boot server URL for the config (repeatable); default: the server's
    /// configured URLs.
    #[arg(long = "url", value_name = "URL")]
    pub urls: Vec<ServerUrl>,
    /// Write no server URLs: the node uses the ones on its boot CD.
    #[arg(long, conflicts_with = "urls")]
    pub no_urls: bool,
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Register a node and write its config file (with a new 64-hex-digit key).
    Add(NodeAddArgs),
    /// List nodes.
    List {
        /// Only this site's nodes.
        #[arg(long)]
        site: Option<SiteName>,
        /// Sort column: id, site, hostname, boot_state, run_level, os_version,
        /// last_contact, last_boot, last_error.
        #[arg(long, default_value = "id")]
        sort: NodeSort,
    },
    /// Show everything about one node (not its key).
    Show {
        /// Node id, full host name, or a unique short host name.
        node: NodeRef,
    },
    /// Set the boot state the server tells the node at its next check-in.
    State {
        /// Node id, full host name, or a unique short host name.
        node: NodeRef,
        /// boot, reinstall, debug or disabled.
        state: BootState,
    },
    /// Set the node's outgoing bandwidth cap (site admin), e.g. `10mbit`, or `none`.
    Bwcap {
        /// Node id, full host name, or a unique short host name.
        node: NodeRef,
        /// A rate in tc units (`10mbit`, `500kbit`), or `none` to remove the cap.
        rate: String,
    },
    /// Give the node a new key and write its config again (the old key stops working).
    Rekey {
        /// Node id, full host name, or a unique short host name.
        node: NodeRef,
        #[command(flatten)]
        output: ConfigOutput,
    },
    /// Write the node's config file again, with its current key.
    Config {
        /// Node id, full host name, or a unique short host name.
        node: NodeRef,
        #[command(flatten)]
        output: ConfigOutput,
    },
    /// Print the node's log: progress, failures with log tails, state changes; newest first.
    Log {
        /// Node id, full host name, or a unique short host name.
        node: NodeRef,
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Ask the running node to check for an update at its next check-in
    /// (what it may install is still the rollout's decision).
    UpdateNow {
        /// Node id, full host name, or a unique short host name.
        node: NodeRef,
    },
    /// Ask the running node to reboot (cleared once it has).
    Reboot {
        /// Node id, full host name, or a unique short host name.
        node: NodeRef,
    },
    /// Remove a node from the registry.
    Delete {
        /// Node id, full host name, or a unique short host name.
        node: NodeRef,
    },
    /// Machines that said hello without being registered (hardware, MACs, time).
    Unregistered {
        /// Forget them all.
        #[arg(long)]
        forget: bool,
    },
}

#[derive(Args, Debug)]
pub struct NodeAddArgs {
    /// Host name; `name.domain` sets the domain too unless --domain is given.
    pub hostname: String,
    /// The site the node belongs to (see `site add`).
    #[arg(long)]
    pub site: SiteName,
    /// DNS domain, e.g. `cs.example.edu`.
    #[arg(long)]
    pub domain: Option<DnsName>,
    /// How the node gets its address.
    #[arg(long, value_enum, default_value = "dhcp")]
    pub network: NetworkMethod,
    /// Static address with prefix, e.g. 10.0.2.15/24 (with --network static).
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub address: Option<String>,
    /// Default gateway (with --network static).
    #[arg(long)]
    pub gateway: Option<Ipv4Addr>,
    /// DNS server (repeatable).
    #[arg(long)]
    pub dns: Vec<IpAddr>,
    /// Use the interface with this name.
    #[arg(long, conflicts_with = "mac")]
    pub interface: Option<String>,
    /// Use the interface with this MAC address.
    #[arg(long)]
    pub mac: Option<MacAddr>,
    /// Boot state to start in; a new machine needs an install.
    #[arg(long, default_value = "reinstall")]
    pub state: BootState,
    /// A fixed node id (e.g. when importing PlanetLab nodes).
    #[arg(long)]
    pub id: Option<u64>,
    #[command(flatten)]
    pub output: ConfigOutput,
}

#[derive(Subcommand, Debug)]
pub enum SliceCommand {
    /// Create a slice.
    Create {
        /// Name like `princeton_codeen` (lowercase letters, digits, _).
        name: SliceName,
        /// Free text shown in listings.
        #[arg(long, default_value = "")]
        description: String,
        /// Resources (rspec TOML, see config/examples/rspec.toml); default rspec if absent.
        #[arg(long)]
        rspec: Option<PathBuf>,
        /// Script run once inside each new sliver.
        #[arg(long)]
        initscript: Option<PathBuf>,
        #[command(flatten)]
        lease: Lease,
    },
    /// Delete a slice (its slivers go at the nodes' next poll).
    Delete { name: SliceName },
    /// Assign nodes to the slice.
    AddNode {
        name: SliceName,
        #[arg(required = true)]
        nodes: Vec<NodeRef>,
    },
    /// Take nodes out of the slice.
    RemoveNode {
        name: SliceName,
        #[arg(required = true)]
        nodes: Vec<NodeRef>,
    },
    /// Add ssh public keys (one per line in FILE) for the slice's users.
    AddKey { name: SliceName, file: PathBuf },
    /// Remove ssh public keys (one per line in FILE).
    RemoveKey { name: SliceName, file: PathBuf },
    /// Replace the slice's resources with an rspec TOML file.
    SetRspec { name: SliceName, file: PathBuf },
    /// Replace the slice's init script (`--none` removes it).
    SetInitscript {
        name: SliceName,
        #[arg(required_unless_present = "none")]
        file: Option<PathBuf>,
        #[arg(long)]
        none: bool,
    },
    /// Extend (or shorten) the slice's lease.
    Renew {
        name: SliceName,
        #[command(flatten)]
        lease: Lease,
    },
    /// List slices.
    List,
    /// Show one slice.
    Show { name: SliceName },
}

#[derive(Args, Debug)]
pub struct Lease {
    /// Lease end, RFC 3339 (2027-01-01T00:00:00Z).
    #[arg(long, conflicts_with = "days")]
    pub until: Option<Timestamp>,
    /// Lease length from now in days.
    #[arg(long, default_value_t = 28)]
    pub days: u32,
}

#[derive(Subcommand, Debug)]
pub enum RepoCommand {
    /// Verify a signed repository made by `pkgsign` and serve it (atomically;
    /// an unsigned, tampered or older repository is refused).
    Publish {
        /// The repository directory (with metadata/ and targets/).
        repo: PathBuf,
        /// The repository's initial root metadata (the root.json on the boot
        /// CDs); needed for the first publish, after which the server keeps
        /// its own trusted copy.
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Show what is published.
    Show,
}

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Start rolling out the published release VERSION in waves. Nodes fall
    /// into waves by a stable hash of their id (the same nodes always go
    /// first); each wave opens --interval after the one before (paused time
    /// does not count), and its nodes are told to check at their next
    /// check-in. A node never installs a release no rollout allows. A new
    /// rollout replaces the one before.
    Start {
        /// The published release: its `base` version (e.g. 2026.11.3) or its
        /// full id (2026.11.3-0a1b2c3d, as `rollout status` shows).
        version: String,
        /// Cumulative shares of the nodes per wave, the last 100%.
        #[arg(long, default_value = "1%,10%,50%,100%", conflicts_with = "now")]
        waves: WavePlan,
        /// Time between two waves (`90s`, `10m`, `2h`).
        #[arg(long, default_value = "10m", conflicts_with = "now")]
        interval: Period,
        /// Every node at once: one wave.
        #[arg(long)]
        now: bool,
        /// Halt when the nodes failing in one wave pass this: a share of the
        /// wave (`5%`) or a count (`3`).
        #[arg(long, default_value = "5%")]
        max_failures: FailureLimit,
    },
    /// Per wave: nodes that took the release, are healthy on it, failed,
    /// were reverted, or have not reported.
    Status,
    /// Stop new nodes from taking the release (the wave clock stops).
    Pause,
    /// Go on after a pause or an automatic halt.
    Resume,
    /// Give the rollout up: nodes that took the release go back to their
    /// previous deployment.
    Abort,
    /// Past rollouts, newest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}
