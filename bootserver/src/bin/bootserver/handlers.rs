//! One handler per subcommand: arguments in, admin API calls, output out.

use std::io::Write;
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use bootserver::admin::{
    files, Admin, ConfigUrls, InitOptions, LeaseEnd, NewNode, NodeConfigFormat, RolloutSpec,
    SiteCertificate, SliceSpec,
};
use bootserver::model::{Node, NodeNetwork};
use bootserver::rollout::WavePlan;
use config::api::WireNetwork;
use config::node::NodeConfig;
use config::units::Rate;
use config::Timestamp;

use crate::cli::{
    Cli, Command, ConfigOutput, InitArgs, Lease, NetworkMethod, NodeAddArgs, NodeCommand,
    RepoCommand, RolloutCommand, SiteCommand, SliceCommand,
};
use crate::print;

/// Runs the command the arguments name.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init(args) => init(&args, cli.json),
        Command::Serve(args) => {
            let admin = Admin::open(args.path.as_deref().unwrap_or(&cli.dir))?;
            serve(&admin, args.listen)
        }
        Command::Site(cmd) => site(&Admin::open(&cli.dir)?, cmd, cli.json),
        Command::Node(cmd) => node(&Admin::open(&cli.dir)?, cmd, cli.json),
        Command::Slice(cmd) => slice(&Admin::open(&cli.dir)?, cmd, cli.json),
        Command::Repo(cmd) => repo(&Admin::open(&cli.dir)?, cmd, cli.json),
        Command::Rollout(cmd) => rollout(&Admin::open(&cli.dir)?, cmd, cli.json),
    }
}

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
    let admin = Admin::init(&args.path, &options)?;
    print::initialised(&admin, json)
}

fn serve(admin: &Admin, listen: Option<std::net::SocketAddr>) -> Result<()> {
    let mut printed = Ok(());
    admin.serve(
        listen,
        |addr| {
            // Scripts and tests wait for this line to learn the port.
            let mut out = std::io::stdout().lock();
            printed = writeln!(out, "listening on https://{addr}").and_then(|()| out.flush());
        },
        bootserver::admin::shutdown_signal(),
    )?;
    Ok(printed?)
}

fn site(admin: &Admin, cmd: SiteCommand, json: bool) -> Result<()> {
    match cmd {
        SiteCommand::Add { name, description } => {
            let site = admin.add_site(&name, &description)?;
            if json {
                return print::json(&site);
            }
            println!("site {} added", site.name);
        }
        SiteCommand::List => {
            let sites = admin.list_sites()?;
            if json {
                return print::json(&sites);
            }
            print::sites(&sites);
        }
        SiteCommand::Delete { name } => {
            admin.delete_site(&name)?;
            println!("site {name} deleted");
        }
    }
    Ok(())
}

/// The network a new node is given, from `--network` and its companions.
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
    Ok(NodeNetwork {
        interface: args.interface.clone(),
        mac: args.mac,
        addressing,
    })
}

fn config_urls(out: &ConfigOutput) -> ConfigUrls {
    if out.no_urls {
        ConfigUrls::FromBootCd
    } else if out.urls.is_empty() {
        ConfigUrls::FromServer
    } else {
        ConfigUrls::These(out.urls.clone())
    }
}

/// Writes the node's config where `-o` says (`-` is standard output).
fn write_node_config(node: &Node, config: &NodeConfig, out: &ConfigOutput) -> Result<()> {
    let Some(path) = &out.output else {
        eprintln!(
            "note: no config file written (-o PATH); `bootserver node config {} -o PATH` writes it",
            node.id
        );
        return Ok(());
    };
    let format = if out.plnode_txt {
        NodeConfigFormat::PlnodeTxt
    } else {
        NodeConfigFormat::NodeToml
    };
    if path.as_os_str() == "-" {
        print!("{}", format.render(config));
        return Ok(());
    }
    files::write_node_config(path, config, format)?;
    eprintln!("wrote {} (node {}, mode 0600)", path.display(), node.id);
    Ok(())
}

fn node(admin: &Admin, cmd: NodeCommand, json: bool) -> Result<()> {
    let now = Timestamp::now();
    match cmd {
        NodeCommand::Add(args) => {
            let mut spec = NewNode::new(args.site.clone(), &args.hostname, args.domain.clone())?;
            spec.network = node_network(&args)?;
            spec.boot_state = args.state;
            spec.id = args.id.map(config::node::NodeId);
            let (node, config) = admin.add_node(&spec, &config_urls(&args.output))?;
            if json {
                print::json(&node)?;
            } else {
                println!(
                    "node {} added: {} at site {}, state {}",
                    node.id, node.fqdn, node.site, node.boot_state
                );
            }
            write_node_config(&node, &config, &args.output).with_context(|| {
                format!(
                    "node {} is registered, but its config is not written \
                     (`bootserver node config {} -o PATH` writes it)",
                    node.id, node.id
                )
            })?;
        }
        NodeCommand::List { site, sort } => {
            let nodes = admin.list_nodes(site.as_ref(), sort)?;
            if json {
                return print::json(&nodes);
            }
            print::nodes(&nodes, now);
        }
        NodeCommand::Show { node } => {
            print::node_details(&admin.show_node(&node)?, json, now)?;
        }
        NodeCommand::State { node, state } => {
            let change = admin.set_boot_state(&node, state)?;
            let n = &change.node;
            println!(
                "node {} ({}): boot state {} -> {}",
                n.id, n.fqdn, change.previous, n.boot_state
            );
        }
        NodeCommand::Bwcap { node, rate } => {
            let cap = match rate.as_str() {
                "none" | "off" => None,
                text => Some(text.parse::<Rate>()?),
            };
            let n = admin.set_bwcap(&node, cap)?;
            let shown = n
                .bwcap
                .map_or_else(|| "none".to_string(), |c| c.to_string());
            println!("node {} ({}): bandwidth cap {shown}", n.id, n.fqdn);
        }
        NodeCommand::Rekey { node, output } => {
            let (n, config) = admin.rekey(&node, &config_urls(&output))?;
            println!(
                "node {} ({}): new key; the old one no longer authenticates",
                n.id, n.fqdn
            );
            write_node_config(&n, &config, &output)?;
        }
        NodeCommand::Config { node, output } => {
            let (n, config) = admin.node_config(&node, &config_urls(&output))?;
            if output.output.is_none() {
                bail!("give -o PATH (or -o - for standard output)");
            }
            write_node_config(&n, &config, &output)?;
        }
        NodeCommand::Log { node, limit } => {
            let (n, events) = admin.node_log(&node, limit)?;
            print::node_log(&n, &events, json)?;
        }
        NodeCommand::UpdateNow { node } => {
            let n = admin.update_now(&node)?;
            println!(
                "node {} ({}): told to check for an update at its next check-in",
                n.id, n.fqdn
            );
        }
        NodeCommand::Reboot { node } => {
            let n = admin.request_reboot(&node)?;
            println!(
                "node {} ({}): reboot requested for its next check-in",
                n.id, n.fqdn
            );
        }
        NodeCommand::Delete { node } => {
            let n = admin.delete_node(&node)?;
            println!("node {} ({}) deleted", n.id, n.fqdn);
        }
        NodeCommand::Unregistered { forget } => {
            if forget {
                let n = admin.forget_unregistered()?;
                println!("forgot {n} unregistered machine(s)");
                return Ok(());
            }
            let list = admin.unregistered()?;
            if json {
                return print::json(&list);
            }
            print::unregistered(&list, now);
        }
    }
    Ok(())
}

fn lease_end(lease: &Lease) -> LeaseEnd {
    match lease.until {
        Some(end) => LeaseEnd::At(end),
        None => LeaseEnd::DaysFromNow(lease.days),
    }
}

fn slice(admin: &Admin, cmd: SliceCommand, json: bool) -> Result<()> {
    match cmd {
        SliceCommand::Create {
            name,
            description,
            rspec,
            initscript,
            lease,
        } => {
            let spec = SliceSpec {
                name,
                description,
                rspec: rspec
                    .as_deref()
                    .map(files::read_rspec)
                    .transpose()?
                    .unwrap_or_default(),
                initscript: initscript.as_deref().map(files::read_text).transpose()?,
                lease: lease_end(&lease),
            };
            let s = admin.create_slice(&spec)?;
            if json {
                return print::json(&s);
            }
            println!("slice {} created, lease until {}", s.name, s.expires);
        }
        SliceCommand::Delete { name } => {
            admin.delete_slice(&name)?;
            println!("slice {name} deleted");
        }
        SliceCommand::AddNode { name, nodes } => {
            for m in admin.add_nodes_to_slice(&name, &nodes)? {
                let verb = if m.changed {
                    "added to"
                } else {
                    "was already in"
                };
                println!("{} {verb} slice {name}", m.node);
            }
        }
        SliceCommand::RemoveNode { name, nodes } => {
            for m in admin.remove_nodes_from_slice(&name, &nodes)? {
                let verb = if m.changed {
                    "removed from"
                } else {
                    "was not in"
                };
                println!("{} {verb} slice {name}", m.node);
            }
        }
        SliceCommand::AddKey { name, file } => {
            let keys = files::read_ssh_keys(&file)?;
            let changed = admin.add_slice_keys(&name, &keys)?;
            println!("{changed} of {} key(s) added to slice {name}", keys.len());
        }
        SliceCommand::RemoveKey { name, file } => {
            let keys = files::read_ssh_keys(&file)?;
            let changed = admin.remove_slice_keys(&name, &keys)?;
            println!(
                "{changed} of {} key(s) removed from slice {name}",
                keys.len()
            );
        }
        SliceCommand::SetRspec { name, file } => {
            admin.set_rspec(&name, &files::read_rspec(&file)?)?;
            println!("slice {name}: resources replaced");
        }
        SliceCommand::SetInitscript { name, file, none } => {
            let script = if none {
                None
            } else {
                file.as_deref().map(files::read_text).transpose()?
            };
            admin.set_initscript(&name, script.as_deref())?;
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
            let until = admin.renew(&name, lease_end(&lease))?;
            println!("slice {name}: lease until {until}");
        }
        SliceCommand::List => {
            let slices = admin.list_slices()?;
            if json {
                return print::json(&slices);
            }
            print::slices(&slices);
        }
        SliceCommand::Show { name } => {
            let s = admin.show_slice(&name)?;
            if json {
                return print::json(&s);
            }
            print::slice(&s);
        }
    }
    Ok(())
}

fn repo(admin: &Admin, cmd: RepoCommand, json: bool) -> Result<()> {
    match cmd {
        RepoCommand::Publish { repo, root } => {
            let published = admin.publish(&repo, root.as_deref())?;
            if json {
                return print::json(&published);
            }
            print::published(&repo, &published);
        }
        RepoCommand::Show => {
            let history = admin.publishes(10)?;
            if json {
                return print::json(&history);
            }
            print::publishes(&history);
        }
    }
    Ok(())
}

fn rollout(admin: &Admin, cmd: RolloutCommand, json: bool) -> Result<()> {
    let changed = match cmd {
        RolloutCommand::Start {
            version,
            waves,
            interval,
            now,
            max_failures,
        } => {
            let spec = RolloutSpec {
                release: version,
                waves: if now { WavePlan::one_wave() } else { waves },
                interval,
                max_failures,
            };
            admin.start_rollout(&spec)?
        }
        RolloutCommand::Status => {
            let status = admin.rollout_status()?;
            if json {
                return print::json(&status);
            }
            print::rollout_status(&status);
            return Ok(());
        }
        RolloutCommand::List { limit } => {
            let list = admin.rollouts(limit)?;
            if json {
                return print::json(&list);
            }
            print::rollouts(&list);
            return Ok(());
        }
        RolloutCommand::Pause => admin.pause_rollout()?,
        RolloutCommand::Resume => admin.resume_rollout()?,
        RolloutCommand::Abort => admin.abort_rollout()?,
    };
    if json {
        return print::json(&changed);
    }
    print::rollout_changed(&changed);
    Ok(())
}
