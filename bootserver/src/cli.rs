//! The command line: one subcommand per job, acting on a working directory.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::model::{generate_node_key, Node, NodeNetwork, SiteName, SliceName, SshPublicKey};
use crate::registry::{self, NewNode, NodeSort, SortOrder};
use crate::server::Server;
use crate::workdir::{self, InitOptions, SiteCertificate, WorkDir};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use comfy_table::{presets, Table};
use config::api::{BootState, WireNetwork};
use config::node::{DnsName, MacAddr, NodeConfig, NodeId, NodeKey, ServerUrl};
use config::rspec::Rspec;
use config::units::Rate;
use config::Timestamp;
use rusqlite::{Connection, TransactionBehavior};

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
        site: Option<String>,
        /// Sort column: id, site, hostname, boot_state, run_level, os_version,
        /// last_contact, last_boot, last_error.
        #[arg(long, default_value = "id")]
        sort: NodeSort,
    },
    /// Show everything about one node (not its key).
    Show {
        /// Node id, full host name, or a unique short host name.
        node: String,
    },
    /// Set the boot state the server tells the node at its next check-in.
    State {
        /// Node id, full host name, or a unique short host name.
        node: String,
        /// boot, reinstall, debug or disabled.
        state: BootState,
    },
    /// Set the node's outgoing bandwidth cap (site admin), e.g. `10mbit`, or `none`.
    Bwcap {
        /// Node id, full host name, or a unique short host name.
        node: String,
        /// A rate in tc units (`10mbit`, `500kbit`), or `none` to remove the cap.
        rate: String,
    },
    /// Give the node a new key and write its config again (the old key stops working).
    Rekey {
        /// Node id, full host name, or a unique short host name.
        node: String,
        #[command(flatten)]
        output: ConfigOutput,
    },
    /// Write the node's config file again, with its current key.
    Config {
        /// Node id, full host name, or a unique short host name.
        node: String,
        #[command(flatten)]
        output: ConfigOutput,
    },
    /// Print the node's log: progress, failures with log tails, state changes; newest first.
    Log {
        /// Node id, full host name, or a unique short host name.
        node: String,
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Ask the running node to reboot (cleared once it has).
    Reboot {
        /// Node id, full host name, or a unique short host name.
        node: String,
    },
    /// Remove a node from the registry.
    Delete {
        /// Node id, full host name, or a unique short host name.
        node: String,
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
        nodes: Vec<String>,
    },
    /// Take nodes out of the slice.
    RemoveNode {
        name: SliceName,
        #[arg(required = true)]
        nodes: Vec<String>,
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

impl Lease {
    fn end(&self, now: Timestamp) -> Timestamp {
        self.until
            .unwrap_or_else(|| now.saturating_add_secs(i64::from(self.days) * 86_400))
    }
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

pub fn init_logging(cli: &Cli) {
    let default = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Init(args) => init(args, cli.json),
        Command::Serve(args) => serve(args.path.as_deref().unwrap_or(&cli.dir), args.listen),
        Command::Site(cmd) => site(&open(&cli.dir)?, cmd, cli.json),
        Command::Node(cmd) => node(&open(&cli.dir)?, cmd, cli.json),
        Command::Slice(cmd) => slice(&open(&cli.dir)?, cmd, cli.json),
        Command::Repo(cmd) => repo(&open(&cli.dir)?, cmd, cli.json),
    }
}

fn open(dir: &Path) -> Result<WorkDir> {
    Ok(WorkDir::open(dir)?)
}

/// Runs `f` in one immediate transaction (waits for the server's writer).
fn write_tx<T>(wd: &WorkDir, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    let mut conn = wd.open_db()?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context("waiting for the database")?;
    let value = f(&tx)?;
    tx.commit().context("committing")?;
    Ok(value)
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.iter().map(|h| h.to_uppercase()));
    t
}

fn when(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            let secs = now.unix() - t.unix();
            let ago = match secs {
                s if s < 0 => "in the future".to_string(),
                s if s < 120 => format!("{s}s ago"),
                s if s < 7200 => format!("{}m ago", s / 60),
                s if s < 172_800 => format!("{}h ago", s / 3600),
                s => format!("{}d ago", s / 86_400),
            };
            format!("{t} ({ago})")
        }
    }
}

fn dash(s: Option<&str>) -> String {
    s.unwrap_or("-").to_string()
}

// ---------------------------------------------------------------- init, serve

fn init(args: &InitArgs, json: bool) -> Result<()> {
    let site_certificate = match (&args.cert, &args.key, &args.ca) {
        (Some(cert), Some(key), Some(ca)) => Some(SiteCertificate {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        }),
        _ => None,
    };
    let options = InitOptions {
        hosts: args.hosts.clone(),
        ips: args.ips.clone(),
        listen: args.listen,
        urls: args.urls.clone(),
        site_certificate,
    };
    let wd = WorkDir::init(&args.path, &options)
        .with_context(|| format!("creating {}", args.path.display()))?;
    if json {
        #[derive(serde::Serialize)]
        struct Made<'a> {
            dir: &'a Path,
            ca: PathBuf,
            cert: PathBuf,
            database: PathBuf,
            urls: &'a [ServerUrl],
        }
        return print_json(&Made {
            dir: wd.root(),
            ca: wd.ca_path(),
            cert: wd.cert_path(),
            database: wd.db_path(),
            urls: &wd.config.server.urls,
        });
    }
    println!("created {}", wd.root().display());
    println!("  CA for boot CDs:  {}", wd.ca_path().display());
    println!("  server cert:      {}", wd.cert_path().display());
    println!("  database:         {}", wd.db_path().display());
    let urls: Vec<String> = wd
        .config
        .server
        .urls
        .iter()
        .map(|u| u.to_string())
        .collect();
    if urls.is_empty() {
        println!("  node URLs:        none (node configs use the boot CD's, or `node add --url`)");
    } else {
        println!("  node URLs:        {}", urls.join(" "));
    }
    println!("next: bootserver serve {}", wd.root().display());
    Ok(())
}

fn serve(dir: &Path, listen: Option<SocketAddr>) -> Result<()> {
    let wd = open(dir)?;
    raise_open_file_limit(wd.config.limits.max_connections);
    let listen = listen.unwrap_or(wd.config.server.listen);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bootserver")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(&wd, listen).await?;
        let addr = server.local_addr().context("reading the bound address")?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on https://{addr}")?;
            out.flush()?;
        }
        tracing::info!(%addr, dir = %wd.root().display(), "serving");
        server.run(shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Every node connection is a descriptor: lift the soft limit to the hard
/// one (what nginx's `worker_rlimit_nofile` does), and say so if even that
/// is below `max_connections`.
fn raise_open_file_limit(max_connections: u32) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return;
            }
        }
    }
    // Descriptors beyond connections: the database, log, listener, files being served.
    if limit.rlim_cur < u64::from(max_connections) + 64 {
        tracing::warn!(
            open_files = limit.rlim_cur,
            max_connections,
            "the open-file limit is below limits.max_connections; connections beyond it wait"
        );
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

// ---------------------------------------------------------------- sites

fn site(wd: &WorkDir, cmd: &SiteCommand, json: bool) -> Result<()> {
    let now = Timestamp::now();
    match cmd {
        SiteCommand::Add { name, description } => {
            let site = write_tx(wd, |c| Ok(registry::add_site(c, name, description, now)?))?;
            if json {
                return print_json(&site);
            }
            println!("site {} added", site.name);
        }
        SiteCommand::List => {
            let sites = registry::list_sites(&wd.open_db()?)?;
            if json {
                return print_json(&sites);
            }
            let mut t = table(&["name", "nodes", "created", "description"]);
            for s in sites {
                t.add_row(vec![
                    s.name.to_string(),
                    s.nodes.to_string(),
                    s.created_at.to_string(),
                    s.description,
                ]);
            }
            println!("{t}");
        }
        SiteCommand::Delete { name } => {
            write_tx(wd, |c| Ok(registry::delete_site(c, name.as_str())?))?;
            println!("site {name} deleted");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- nodes

fn node_network(args: &NodeAddArgs) -> Result<NodeNetwork> {
    let addressing = match args.network {
        NetworkMethod::Dhcp => {
            if args.address.is_some() || args.gateway.is_some() {
                bail!("--address and --gateway are for --network static");
            }
            WireNetwork::Dhcp
        }
        NetworkMethod::Static => {
            let text = args
                .address
                .as_deref()
                .context("--network static needs --address ADDR/PREFIX")?;
            let (addr, prefix) = text
                .split_once('/')
                .with_context(|| format!("--address `{text}` needs a prefix, like 10.0.2.15/24"))?;
            let address: Ipv4Addr = addr
                .parse()
                .with_context(|| format!("--address: `{addr}` is not an IPv4 address"))?;
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| *p <= 32)
                .with_context(|| format!("--address: prefix `{prefix}` is not 0 to 32"))?;
            WireNetwork::Static {
                address,
                prefix,
                gateway: args.gateway,
                dns: args.dns.clone(),
            }
        }
    };
    let network = NodeNetwork {
        interface: args.interface.clone(),
        mac: args.mac,
        addressing,
    };
    // Validate the way the node will: through the config crate's checks.
    let probe = NodeConfig {
        node_id: NodeId(1),
        key: NodeKey::new("0".repeat(64)).map_err(anyhow::Error::msg)?,
        hostname: "probe".parse().map_err(anyhow::Error::msg)?,
        domain: None,
        network: network.to_config().map_err(anyhow::Error::msg)?,
        server_urls: vec![],
        proxy: None,
    };
    NodeConfig::from_toml(&probe.to_toml(), Path::new("--network options"))?;
    Ok(network)
}

fn split_hostname(name: &str, domain: Option<&DnsName>) -> Result<(DnsName, Option<DnsName>)> {
    match (name.split_once('.'), domain) {
        (Some((host, dom)), None) => Ok((
            host.parse().map_err(anyhow::Error::msg)?,
            Some(dom.parse().map_err(anyhow::Error::msg)?),
        )),
        (Some(_), Some(_)) => bail!("give either a dotted host name or --domain, not both"),
        (None, d) => Ok((name.parse().map_err(anyhow::Error::msg)?, d.cloned())),
    }
}

/// The node's config file as the node reads it.
fn node_config(wd: &WorkDir, node: &Node, out: &ConfigOutput) -> Result<NodeConfig> {
    let server_urls = if out.no_urls {
        Vec::new()
    } else if out.urls.is_empty() {
        wd.config.server.urls.clone()
    } else {
        out.urls.clone()
    };
    let config = NodeConfig {
        node_id: node.id,
        key: node.key.clone(),
        hostname: node.hostname.clone(),
        domain: node.domain.clone(),
        network: node.network.to_config().map_err(anyhow::Error::msg)?,
        server_urls,
        proxy: None,
    };
    // Never hand out a file the node would refuse.
    NodeConfig::from_toml(&config.to_toml(), Path::new("generated node.toml"))
        .context("the generated node config does not parse back")?;
    Ok(config)
}

fn write_node_config(wd: &WorkDir, node: &Node, out: &ConfigOutput) -> Result<()> {
    let Some(path) = &out.output else {
        eprintln!(
            "note: no config file written (-o PATH); `bootserver node config {} -o PATH` writes it",
            node.id
        );
        return Ok(());
    };
    let config = node_config(wd, node, out)?;
    let text = if out.plnode_txt {
        config::plnode::to_plnode_txt(&config)
    } else {
        config.to_toml()
    };
    if path.as_os_str() == "-" {
        print!("{text}");
        return Ok(());
    }
    workdir::write_file(path, text.as_bytes(), 0o600)?;
    eprintln!("wrote {} (node {}, mode 0600)", path.display(), node.id);
    Ok(())
}

fn node(wd: &WorkDir, cmd: &NodeCommand, json: bool) -> Result<()> {
    let now = Timestamp::now();
    let keep = wd.config.nodes.event_log_limit;
    match cmd {
        NodeCommand::Add(args) => {
            let (hostname, domain) = split_hostname(&args.hostname, args.domain.as_ref())?;
            let new = NewNode {
                site: args.site.clone(),
                hostname,
                domain,
                network: node_network(args)?,
                boot_state: args.state,
                id: args.id.map(NodeId),
            };
            let key = generate_node_key().context("drawing a random node key")?;
            // Check the output can be made before registering.
            let node = write_tx(wd, |c| {
                let node = registry::add_node(c, &new, &key, now)?;
                node_config(wd, &node, &args.output)?;
                Ok(node)
            })?;
            if json {
                print_json(&node)?;
            } else {
                println!(
                    "node {} added: {} at site {}, state {}",
                    node.id, node.fqdn, node.site, node.boot_state
                );
            }
            write_node_config(wd, &node, &args.output)?;
        }
        NodeCommand::List { site, sort } => {
            let conn = wd.open_db()?;
            let nodes = registry::list_nodes(&conn, site.as_deref(), *sort, SortOrder::Asc)?;
            if json {
                return print_json(&nodes);
            }
            let mut t = table(&[
                "id",
                "site",
                "hostname",
                "boot state",
                "run level",
                "os version",
                "last contact",
                "last error",
            ]);
            for n in nodes {
                t.add_row(vec![
                    n.id.to_string(),
                    n.site.to_string(),
                    n.fqdn.clone(),
                    n.boot_state.to_string(),
                    dash(n.report.run_level.map(|r| r.as_str())),
                    dash(n.report.os_version.as_deref()),
                    when(n.report.last_contact, now),
                    n.report
                        .last_error
                        .as_ref()
                        .map(|e| format!("{}: {}", e.step, e.message))
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            println!("{t}");
        }
        NodeCommand::Show { node } => {
            let conn = wd.open_db()?;
            let n = registry::find_node(&conn, node)?;
            let failures = registry::auth_failures(&conn, n.id.0)?;
            if json {
                #[derive(serde::Serialize)]
                struct Shown<'a> {
                    #[serde(flatten)]
                    node: &'a Node,
                    auth_failures: &'a [crate::model::AuthFailureCount],
                }
                return print_json(&Shown {
                    node: &n,
                    auth_failures: &failures,
                });
            }
            show_node(&n, &failures, now);
        }
        NodeCommand::State { node, state } => {
            let n = write_tx(wd, |c| {
                let n = registry::find_node(c, node)?;
                registry::set_boot_state(c, &n, *state, now, keep)?;
                Ok(n)
            })?;
            println!(
                "node {} ({}): boot state {} -> {state}",
                n.id, n.fqdn, n.boot_state
            );
        }
        NodeCommand::Bwcap { node, rate } => {
            let cap = match rate.as_str() {
                "none" | "off" => None,
                text => Some(text.parse::<Rate>().map_err(|e| anyhow::anyhow!("{e}"))?),
            };
            let n = write_tx(wd, |c| {
                let n = registry::find_node(c, node)?;
                registry::set_bwcap(c, &n, cap, now, keep)?;
                Ok(n)
            })?;
            let shown = cap.map_or_else(|| "none".to_string(), |c| c.to_string());
            println!("node {} ({}): bandwidth cap {shown}", n.id, n.fqdn);
        }
        NodeCommand::Rekey { node, output } => {
            let key = generate_node_key().context("drawing a random node key")?;
            let n = write_tx(wd, |c| {
                let n = registry::find_node(c, node)?;
                registry::set_key(c, &n, &key, now, keep)?;
                Ok(registry::get_node(c, n.id)?)
            })?;
            println!(
                "node {} ({}): new key; the old one no longer authenticates",
                n.id, n.fqdn
            );
            write_node_config(wd, &n, output)?;
        }
        NodeCommand::Config { node, output } => {
            let n = registry::find_node(&wd.open_db()?, node)?;
            if output.output.is_none() {
                bail!("give -o PATH (or -o - for standard output)");
            }
            write_node_config(wd, &n, output)?;
        }
        NodeCommand::Log { node, limit } => {
            let conn = wd.open_db()?;
            let n = registry::find_node(&conn, node)?;
            let events = registry::node_events(&conn, n.id, *limit)?;
            if json {
                return print_json(&events);
            }
            println!("log of node {} ({}), newest first:", n.id, n.fqdn);
            if events.is_empty() {
                println!("  (nothing reported yet)");
            }
            for e in events {
                let percent = e.percent.map(|p| format!(" {p}%")).unwrap_or_default();
                let step = if e.step.is_empty() {
                    String::new()
                } else {
                    format!(" {}", e.step)
                };
                println!(
                    "{}  {}{step}{percent}: {}",
                    e.received_at,
                    e.kind.as_str(),
                    e.message
                );
                for line in &e.log_tail {
                    println!("    | {line}");
                }
            }
        }
        NodeCommand::Reboot { node } => {
            let n = write_tx(wd, |c| {
                let n = registry::find_node(c, node)?;
                registry::request_reboot(c, &n, now, keep)?;
                Ok(n)
            })?;
            println!(
                "node {} ({}): reboot requested for its next check-in",
                n.id, n.fqdn
            );
        }
        NodeCommand::Delete { node } => {
            let n = write_tx(wd, |c| {
                let n = registry::find_node(c, node)?;
                registry::delete_node(c, &n)?;
                Ok(n)
            })?;
            println!("node {} ({}) deleted", n.id, n.fqdn);
        }
        NodeCommand::Unregistered { forget } => {
            if *forget {
                let n = write_tx(wd, |c| Ok(registry::forget_unregistered(c)?))?;
                println!("forgot {n} unregistered machine(s)");
                return Ok(());
            }
            let list = registry::unregistered_nodes(&wd.open_db()?)?;
            if json {
                return print_json(&list);
            }
            let mut t = table(&[
                "macs",
                "address",
                "cpu",
                "ram mib",
                "disks",
                "boot cd",
                "first seen",
                "last seen",
                "hellos",
            ]);
            for u in list {
                t.add_row(vec![
                    u.macs
                        .iter()
                        .map(|m| m.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    u.peer,
                    format!("{} x {}", u.hardware.cpus, u.hardware.cpu_model),
                    (u.hardware.ram_bytes >> 20).to_string(),
                    u.hardware
                        .disks
                        .iter()
                        .map(|d| format!("{}:{}G", d.name, d.size_bytes >> 30))
                        .collect::<Vec<_>>()
                        .join(","),
                    dash(u.bootcd_version.as_deref()),
                    u.first_seen.to_string(),
                    when(Some(u.last_seen), now),
                    u.count.to_string(),
                ]);
            }
            println!("{t}");
        }
    }
    Ok(())
}

fn show_node(n: &Node, failures: &[crate::model::AuthFailureCount], now: Timestamp) {
    let r = &n.report;
    let mut t = table(&["field", "value"]);
    let mut row = |k: &str, v: String| {
        t.add_row(vec![k.to_string(), v]);
    };
    row("id", n.id.to_string());
    row("hostname", n.fqdn.clone());
    row("site", n.site.to_string());
    row("network", n.network.summary());
    row(
        "boot state (admin)",
        format!("{} since {}", n.boot_state, n.boot_state_at),
    );
    row(
        "bandwidth cap",
        n.bwcap.map_or_else(|| "none".into(), |c| c.to_string()),
    );
    row("key changed", n.key_changed_at.to_string());
    row("reboot requested", when(n.reboot_requested_at, now));
    row("run level (node)", dash(r.run_level.map(|l| l.as_str())));
    row("boot cd", dash(r.bootcd_version.as_deref()));
    row("os version", dash(r.os_version.as_deref()));
    row("deployment", dash(r.deployment.as_deref()));
    row("last contact", when(r.last_contact, now));
    row("last peer", dash(r.last_peer.as_deref()));
    row("last boot", when(r.last_boot, now));
    row(
        "clock offset",
        r.clock_offset_secs
            .map_or_else(|| "-".into(), |o| format!("{o} s")),
    );
    row("installed", when(r.installed_at, now));
    row(
        "last error",
        r.last_error.as_ref().map_or_else(
            || "-".into(),
            |e| format!("{}: {} ({})", e.step, e.message, e.at),
        ),
    );
    if let Some(h) = &r.hardware {
        row("cpu", format!("{} x {}", h.cpus, h.cpu_model));
        row("ram", format!("{} MiB", h.ram_bytes >> 20));
        for nic in &h.nics {
            row(
                "nic",
                format!(
                    "{} {}{}",
                    nic.name,
                    nic.mac,
                    if nic.link { " link" } else { "" }
                ),
            );
        }
        for d in &h.disks {
            row("disk", format!("{} {} MiB", d.name, d.size_bytes >> 20));
        }
    }
    for f in failures {
        row(
            "auth failures",
            format!(
                "{} x {} (last {} from {})",
                f.count, f.reason, f.last_at, f.last_peer
            ),
        );
    }
    println!("{t}");
}

// ---------------------------------------------------------------- slices

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn read_rspec(path: &Path) -> Result<Rspec> {
    let text = read_text(path)?;
    let rspec: Rspec = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    rspec
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(rspec)
}

fn read_keys(path: &Path) -> Result<Vec<SshPublicKey>> {
    let text = read_text(path)?;
    let keys = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| {
            l.parse::<SshPublicKey>()
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect::<Result<Vec<_>>>()?;
    if keys.is_empty() {
        bail!("{} holds no ssh public key", path.display());
    }
    Ok(keys)
}

fn slice(wd: &WorkDir, cmd: &SliceCommand, json: bool) -> Result<()> {
    let now = Timestamp::now();
    match cmd {
        SliceCommand::Create {
            name,
            description,
            rspec,
            initscript,
            lease,
        } => {
            let rspec = rspec
                .as_deref()
                .map(read_rspec)
                .transpose()?
                .unwrap_or_default();
            let script = initscript.as_deref().map(read_text).transpose()?;
            let s = write_tx(wd, |c| {
                Ok(registry::create_slice(
                    c,
                    name,
                    description,
                    &rspec,
                    script.as_deref(),
                    lease.end(now),
                    now,
                )?)
            })?;
            if json {
                return print_json(&s);
            }
            println!("slice {} created, lease until {}", s.name, s.expires);
        }
        SliceCommand::Delete { name } => {
            write_tx(wd, |c| Ok(registry::delete_slice(c, name)?))?;
            println!("slice {name} deleted");
        }
        SliceCommand::AddNode { name, nodes } | SliceCommand::RemoveNode { name, nodes } => {
            let adding = matches!(cmd, SliceCommand::AddNode { .. });
            let changed = write_tx(wd, |c| {
                let mut changed = Vec::new();
                for ident in nodes {
                    let n = registry::find_node(c, ident)?;
                    let did = if adding {
                        registry::slice_add_node(c, name, &n)?
                    } else {
                        registry::slice_remove_node(c, name, &n)?
                    };
                    changed.push((n.fqdn, did));
                }
                Ok(changed)
            })?;
            for (fqdn, did) in changed {
                let verb = match (adding, did) {
                    (true, true) => "added to",
                    (true, false) => "was already in",
                    (false, true) => "removed from",
                    (false, false) => "was not in",
                };
                println!("{fqdn} {verb} slice {name}");
            }
        }
        SliceCommand::AddKey { name, file } | SliceCommand::RemoveKey { name, file } => {
            let adding = matches!(cmd, SliceCommand::AddKey { .. });
            let keys = read_keys(file)?;
            let changed = write_tx(wd, |c| {
                let mut n = 0;
                for k in &keys {
                    let did = if adding {
                        registry::slice_add_key(c, name, k)?
                    } else {
                        registry::slice_remove_key(c, name, k)?
                    };
                    n += usize::from(did);
                }
                Ok(n)
            })?;
            let verb = if adding { "added to" } else { "removed from" };
            println!("{changed} of {} key(s) {verb} slice {name}", keys.len());
        }
        SliceCommand::SetRspec { name, file } => {
            let rspec = read_rspec(file)?;
            write_tx(wd, |c| Ok(registry::slice_set_rspec(c, name, &rspec)?))?;
            println!("slice {name}: resources replaced");
        }
        SliceCommand::SetInitscript { name, file, none } => {
            let script = if *none {
                None
            } else {
                file.as_deref().map(read_text).transpose()?
            };
            write_tx(wd, |c| {
                Ok(registry::slice_set_initscript(c, name, script.as_deref())?)
            })?;
            println!(
                "slice {name}: init script {}",
                if script.is_some() {
                    "replaced"
                } else {
                    "removed"
                }
            );
        }
        SliceCommand::Renew { name, lease } => {
            let until = lease.end(now);
            write_tx(wd, |c| Ok(registry::slice_renew(c, name, until, now)?))?;
            println!("slice {name}: lease until {until}");
        }
        SliceCommand::List => {
            let slices = registry::list_slices(&wd.open_db()?)?;
            if json {
                return print_json(&slices);
            }
            let mut t = table(&[
                "name",
                "nodes",
                "keys",
                "cpu share",
                "net max",
                "lease end",
                "description",
            ]);
            for s in slices {
                t.add_row(vec![
                    s.name.to_string(),
                    s.nodes.len().to_string(),
                    s.ssh_keys.len().to_string(),
                    s.rspec.cpu_share.to_string(),
                    s.rspec.net_max_rate.to_string(),
                    s.expires.to_string(),
                    s.description,
                ]);
            }
            println!("{t}");
        }
        SliceCommand::Show { name } => {
            let s = registry::get_slice(&wd.open_db()?, name)?;
            if json {
                return print_json(&s);
            }
            println!("slice {} (lease until {})", s.name, s.expires);
            if !s.description.is_empty() {
                println!("  {}", s.description);
            }
            println!(
                "rspec:\n{}",
                toml::to_string(&s.rspec).unwrap_or_default().trim_end()
            );
            println!(
                "nodes: {}",
                if s.nodes.is_empty() {
                    "-".into()
                } else {
                    s.nodes.join(", ")
                }
            );
            println!("ssh keys:");
            for k in &s.ssh_keys {
                println!("  {k}");
            }
            if let Some(script) = &s.initscript {
                println!("initscript:\n{script}");
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- repository

fn repo(wd: &WorkDir, cmd: &RepoCommand, json: bool) -> Result<()> {
    match cmd {
        RepoCommand::Publish { repo, root } => {
            let published = crate::publish::publish(wd, repo, root.as_deref())
                .with_context(|| format!("publishing {}", repo.display()))?;
            if json {
                return print_json(&published);
            }
            println!(
                "published {}: targets v{}, snapshot v{}, timestamp v{}, root v{}; {} package(s), {} bytes",
                repo.display(),
                published.targets_version,
                published.snapshot_version,
                published.timestamp_version,
                published.root_version,
                published.packages,
                published.bytes
            );
        }
        RepoCommand::Show => {
            let history = registry::publishes(&wd.open_db()?, 10)?;
            if json {
                return print_json(&history);
            }
            if history.is_empty() {
                println!("nothing published yet (bootserver repo publish DIR)");
                return Ok(());
            }
            let mut t = table(&[
                "published",
                "snapshot dir",
                "root",
                "targets",
                "snapshot",
                "timestamp",
                "packages",
                "bytes",
            ]);
            for p in history {
                t.add_row(vec![
                    p.published_at.to_string(),
                    p.snapshot_dir,
                    p.root_version.to_string(),
                    p.targets_version.to_string(),
                    p.snapshot_version.to_string(),
                    p.timestamp_version.to_string(),
                    p.packages.to_string(),
                    p.bytes.to_string(),
                ]);
            }
            println!("{t}");
        }
    }
    Ok(())
}
