//! Command-line arguments of `nodemgr` (types only; handlers are in main.rs).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Slivers on a PlanetLab-style node: make, run, enter and remove them.
///
/// A sliver is a slice's container on this node: its own user, mount, PID,
/// UTS, IPC and cgroup namespaces (the network is the node's), a
/// copy-on-write root over the reference root with a disk quota, and
/// cgroup v2 limits from the slice's rspec. State lives in the state
/// directory, so every command sees what earlier ones did; `restore`
/// (run at boot) starts the slivers that should run. Errors print one
/// line and exit non-zero, leaving nothing half-made.
#[derive(Debug, Parser)]
#[command(name = "nodemgr", version, about, long_about)]
pub struct Cli {
    /// More log output (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where things are (defaults: an installed node).
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// State directory: id table and one state file per sliver.
    #[arg(long, global = true, value_name = "DIR", default_value = nodemgr::settings::STATE_DIR, env = "NODEMGR_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Run-time directory (lock, mount points).
    #[arg(long, global = true, value_name = "DIR", default_value = nodemgr::settings::RUN_DIR, env = "NODEMGR_RUN_DIR")]
    pub run_dir: PathBuf,
    /// cgroup2 hierarchy; slivers go into slivers/<slice> below it.
    #[arg(long, global = true, value_name = "DIR", default_value = nodemgr::settings::CGROUP_ROOT, env = "NODEMGR_CGROUP_ROOT")]
    pub cgroup_root: PathBuf,
    /// Reference root file system (read-only lower layer of every sliver).
    #[arg(long, global = true, value_name = "DIR", default_value = nodemgr::settings::REFERENCE_ROOT, env = "NODEMGR_REFERENCE_ROOT")]
    pub reference_root: PathBuf,
    /// Slivers' file system as an ext4 image file (made with project
    /// quotas when missing, loop-mounted under the run directory).
    #[arg(long, global = true, value_name = "FILE", default_value = nodemgr::settings::SLIVERS_IMAGE, env = "NODEMGR_SLIVERS_IMAGE", conflicts_with = "slivers_dir")]
    pub slivers_image: PathBuf,
    /// Size of a new slivers' image (sparse).
    #[arg(long, global = true, value_name = "SIZE", default_value = "16GiB")]
    pub slivers_image_size: config::units::ByteSize,
    /// Slivers' file system as a directory instead (build hosts).
    #[arg(long, global = true, value_name = "DIR", env = "NODEMGR_SLIVERS_DIR")]
    pub slivers_dir: Option<PathBuf>,
    /// Start slivers even where cgroup limits cannot be applied (a
    /// hybrid cgroup v1/v2 build host); the condition is reported.
    #[arg(long, global = true, env = "NODEMGR_ALLOW_UNLIMITED")]
    pub allow_unlimited: bool,
    /// Create slivers even where the disk quota cannot be set (a file
    /// system without project quotas); the condition is reported.
    #[arg(long, global = true, env = "NODEMGR_ALLOW_NO_QUOTA")]
    pub allow_no_quota: bool,
    /// Act on the state directory directly even when `nodemgr serve` runs
    /// (by default commands go through its API when it does).
    #[arg(long, global = true)]
    pub local: bool,
    /// Seconds a script inside a sliver (initscript, PlanetLab-control)
    /// may run before it is killed.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 60)]
    pub script_timeout: u64,
}

/// How `nodemgr serve` runs.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The node's partition: node.toml (id, key, servers) and trust/ca.pem.
    #[arg(long, value_name = "DIR", default_value = "/plnode")]
    pub partition: std::path::PathBuf,
    /// Do not poll a boot server: manage slivers made on the node only.
    #[arg(long)]
    pub no_server: bool,
    /// The CD's hand-over note (server URLs when node.toml names none).
    #[arg(long, value_name = "FILE", default_value = nodeclient::HANDOVER_FILE)]
    pub handover: std::path::PathBuf,
    /// Seconds between polls of the boot server's slivers API.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub poll_interval: u64,
    /// Up to this many seconds are added to each interval at random.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub poll_jitter: u64,
    /// Guaranteed CPU shares the node can promise in total.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub cpu_shares: u64,
    /// Guaranteed outgoing bandwidth the node can promise in total, until
    /// the boot server names the site's cap.
    #[arg(long, value_name = "RATE", default_value = "100mbit")]
    pub bandwidth: config::units::Rate,
    /// The node's own accounts; with it, every sliver gets an ssh login
    /// account in --passwd (none when the file does not exist).
    #[arg(long, value_name = "FILE", default_value = nodemgr::logins::NODE_PASSWD)]
    pub node_passwd: std::path::PathBuf,
    /// The passwd file written for ssh logins (/etc/passwd links here).
    #[arg(long, value_name = "FILE", default_value = nodemgr::logins::RUN_PASSWD)]
    pub passwd: std::path::PathBuf,
    /// The slices' login shell.
    #[arg(long, value_name = "FILE", default_value = nodemgr::logins::VSH_PATH)]
    pub login_shell: std::path::PathBuf,
    /// Do not apply the bandwidth caps (bwcap) after each pass.
    #[arg(long)]
    pub no_bandwidth: bool,
    /// bwcap's state directory.
    #[arg(long, value_name = "DIR", default_value = bwcap::DEFAULT_STATE_DIR)]
    pub bwcap_state_dir: std::path::PathBuf,
    /// A link to the API socket made at start.
    #[arg(long, value_name = "FILE", default_value = nodemgr::settings::API_SOCKET_LINK)]
    pub api_link: std::path::PathBuf,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a sliver for SLICE (stopped unless --start).
    Create {
        /// Slice name, PlanetLab's site_slice form: [a-z0-9_], 1-32, a letter first.
        slice: String,
        /// The slice's rspec (TOML: cpu_share, memory, disk, pids, lease_end, ...).
        #[arg(long, value_name = "FILE")]
        rspec: PathBuf,
        /// The slice users' ssh public keys (authorized_keys format).
        #[arg(long, value_name = "FILE")]
        keys: Option<PathBuf>,
        /// Start it right away.
        #[arg(long)]
        start: bool,
    },
    /// Start a sliver (and keep it running across reboots).
    Start {
        /// The slice.
        slice: String,
    },
    /// Stop a sliver: freeze, kill everything in it (stays stopped).
    Stop {
        /// The slice.
        slice: String,
    },
    /// Stop and remove a sliver: processes, files, cgroup, id range.
    Delete {
        /// The slice.
        slice: String,
    },
    /// List the slivers.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A sliver's state, limits read back from its cgroup, and usage.
    Show {
        /// The slice.
        slice: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a shell or a command inside a running sliver (root inside;
    /// a terminal when stdin is one).
    Enter {
        /// The slice.
        slice: String,
        /// As the slice's user instead of root.
        #[arg(long)]
        user: bool,
        /// Command and arguments (after --); default: a login shell.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Start every sliver that should run and clean up after interrupted
    /// deletes.
    Restore,
    /// Run the node manager service: restore the slivers, serve the local
    /// API (D-Bus on the API socket), reconcile with the boot server every
    /// poll interval and at once on SIGUSR1, end leases, keep the slices'
    /// ssh logins current. SIGTERM stops it; the slivers keep running.
    Serve(ServeArgs),
    /// Acquire resources: an rcap (printed) for the rspec, if admission
    /// control lets it (the node and privileged slices only).
    Acquire {
        /// The rspec (TOML file; `-` reads stdin).
        rspec: PathBuf,
    },
    /// Bind an rcap's resources to SLICE's sliver (made when missing).
    Bind {
        /// The slice.
        slice: String,
        /// The rcap `acquire` printed.
        rcap: String,
    },
}
