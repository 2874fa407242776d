//! The handlers of `nodemgr`'s commands: read files, call the library,
//! print.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use config::rspec::Rspec;
use nodemgr::manager::{Enforcement, EnterOptions};
use nodemgr::settings::Settings;
use nodemgr::storage::SliversFs;
use nodemgr::{AuthorizedKeys, NodeManager, SliceName};

use nodemgr::admission::Capacity;
use nodemgr::api_client::ApiClient;
use nodemgr::inside::RunStatus;
use nodemgr::logins::Logins;
use nodemgr::serve::ServeOptions;
use nodemgr::service::Service;

use crate::cli::{Cli, Command, NodeArgs, ServeArgs};

pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}

fn settings(args: &NodeArgs) -> Settings {
    let mut s = Settings::node();
    s.state_dir = args.state_dir.clone();
    s.run_dir = args.run_dir.clone();
    s.cgroup_root = args.cgroup_root.clone();
    s.reference_root = args.reference_root.clone();
    s.slivers_fs = match &args.slivers_dir {
        Some(dir) => SliversFs::Dir(dir.clone()),
        None => SliversFs::Image {
            image: args.slivers_image.clone(),
            size: args.slivers_image_size,
            mount_point: args.run_dir.join("fs"),
        },
    };
    s.require_limits = !args.allow_unlimited;
    s.require_quota = !args.allow_no_quota;
    s.script_timeout = std::time::Duration::from_secs(args.script_timeout.max(1));
    s
}

fn read_text(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("reading stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The running service's API, unless --local or no service runs.
fn daemon(cli: &Cli, settings: &Settings) -> Result<Option<ApiClient>> {
    if cli.node.local || matches!(cli.command, Command::Serve(_) | Command::Restore) {
        return Ok(None);
    }
    Ok(ApiClient::connect(&settings.api_socket())?)
}

fn through_daemon(api: &ApiClient, command: Command) -> Result<ExitCode> {
    match command {
        Command::Create {
            slice: name,
            rspec,
            keys,
            start,
        } => {
            let slice = slice(&name)?;
            let text = read_text(&rspec)?;
            read_rspec(&rspec)?;
            let keys = read_keys(keys.as_deref())?;
            let rcap = api.acquire(&text)?;
            api.bind(slice.as_str(), &rcap)?;
            if !keys.lines().is_empty() {
                api.set_keys(slice.as_str(), &keys.to_file())?;
            }
            println!("created {slice} (acquire + bind through nodemgr serve)");
            if !start {
                api.stop(slice.as_str())?;
            }
        }
        Command::Start { slice } => {
            api.start(&slice)?;
            println!("started {slice}");
        }
        Command::Stop { slice } => {
            api.stop(&slice)?;
            println!("stopped {slice}");
        }
        Command::Delete { slice } => {
            api.delete(&slice)?;
            println!("deleted {slice}");
        }
        Command::List { json } => {
            let list = api.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<32} {:<8} {:<9} {:<7} LEASE END",
                    "SLICE", "SHOULD", "STATE", "ORIGIN"
                );
                for s in list {
                    let state = match s.pid {
                        Some(pid) => format!("pid {pid}"),
                        None => "stopped".into(),
                    };
                    let lease = s
                        .lease_end
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "none".into());
                    println!(
                        "{:<32} {:<8} {:<9} {:<7} {lease}",
                        s.slice, s.desired, state, s.origin
                    );
                }
            }
        }
        Command::Show { slice, json } => {
            let details = api.show(&slice)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&details)?);
            } else {
                let report: nodemgr::manager::SliverReport =
                    serde_json::from_value(details["report"].clone())
                        .context("reading the service's report")?;
                print_report(&report);
                print_lease_left(details["lease_left_secs"].as_i64());
                print_status(&details["status"]);
            }
        }
        Command::Enter {
            slice,
            user,
            command,
        } => {
            let pty = std::io::stdin().is_terminal();
            let term = std::env::var("TERM").ok();
            let (session, master) = api.enter(&slice, &command, user, term.as_deref(), pty)?;
            if let Some(master) = master {
                nodemgr::terminal::relay(master).context("relaying the terminal")?;
            }
            let code = api.wait(session)?;
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        Command::Acquire { rspec } => {
            let text = read_text(&rspec)?;
            println!("{}", api.acquire(&text)?);
        }
        Command::Bind { slice, rcap } => {
            api.bind(&slice, &rcap)?;
            println!("bound to {slice}");
        }
        Command::Restore | Command::Serve(_) => unreachable!("never sent to the service"),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_lease_left(secs: Option<i64>) {
    match secs {
        Some(s) if s > 0 => println!(
            "lease left: {}d {}h {}m",
            s / 86_400,
            s % 86_400 / 3600,
            s % 3600 / 60
        ),
        Some(_) => println!("lease left: ended"),
        None => println!("lease left: no end"),
    }
}

fn print_status(status: &serde_json::Value) {
    let Ok(outcome) = serde_json::from_value::<nodemgr::inside::RunOutcome>(status.clone()) else {
        return;
    };
    match outcome.status {
        RunStatus::Skipped => println!("status:     no PlanetLab-control/status script"),
        RunStatus::TimedOut => println!("status:     the status script hung and was killed"),
        RunStatus::Exited(code) => {
            let text = outcome.output.trim_end();
            println!(
                "status:     {} (exit {code})",
                if text.is_empty() { "-" } else { text }
            );
        }
    }
}

fn serve(cli_node: &NodeArgs, settings: Settings, args: ServeArgs) -> Result<ExitCode> {
    let _ = cli_node;
    let manager = NodeManager::open(settings)?;
    let run_dir = manager.settings().run_dir.clone();
    let service = Service::new(
        manager,
        Capacity {
            cpu_shares: args.cpu_shares,
            bandwidth: args.bandwidth,
        },
    );
    let logins = Logins {
        node_passwd: args.node_passwd,
        passwd: args.passwd,
        homes: run_dir.join("homes"),
        shell: args.login_shell,
    };
    nodemgr::serve::serve(
        service,
        ServeOptions {
            partition: (!args.no_server).then_some(args.partition),
            handover: args.handover,
            poll_interval: std::time::Duration::from_secs(args.poll_interval.max(1)),
            poll_jitter: std::time::Duration::from_secs(args.poll_jitter),
            logins: Some(logins),
            api_link: Some(args.api_link),
            bandwidth: (!args.no_bandwidth).then_some(args.bwcap_state_dir),
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

fn slice(name: &str) -> Result<SliceName> {
    Ok(SliceName::new(name)?)
}

fn read_rspec(path: &Path) -> Result<Rspec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let rspec: Rspec =
        toml::from_str(&text).with_context(|| format!("{}: not a valid rspec", path.display()))?;
    rspec
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: rspec out of range: {e}", path.display()))?;
    Ok(rspec)
}

fn read_keys(path: Option<&Path>) -> Result<AuthorizedKeys> {
    let Some(path) = path else {
        return Ok(AuthorizedKeys::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    AuthorizedKeys::parse(&text)
        .with_context(|| format!("{}: not an authorized_keys file", path.display()))
}

fn report_enforcement(slice: &SliceName, e: &Enforcement) {
    for why in [&e.limits_unavailable, &e.quota_unavailable]
        .into_iter()
        .flatten()
    {
        eprintln!("nodemgr: warning: sliver {slice}: {why}");
    }
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let settings = settings(&cli.node);
    if let Some(api) = daemon(&cli, &settings)? {
        return through_daemon(&api, cli.command);
    }
    if let Command::Serve(args) = cli.command {
        return serve(&cli.node, settings, args);
    }
    let manager = NodeManager::open(settings)?;
    match cli.command {
        Command::Create {
            slice: name,
            rspec,
            keys,
            start,
        } => {
            // Input first: nothing is made for a bad name, rspec or key file.
            let slice = slice(&name)?;
            let rspec = read_rspec(&rspec)?;
            let keys = read_keys(keys.as_deref())?;
            let (created, started) = if start {
                let (c, s) = manager.create_and_start(&slice, &rspec, &keys)?;
                (c, Some(s))
            } else {
                (manager.create(&slice, &rspec, &keys)?, None)
            };
            report_enforcement(&slice, &created.enforcement);
            println!(
                "created {slice}: host ids {}..{}",
                created.ids.first,
                created.ids.first + nodemgr::ids::RANGE_SIZE - 1
            );
            if let Some(started) = started {
                println!("started {slice}: pid {}", started.pid);
            }
        }
        Command::Start { slice: name } => {
            let slice = slice(&name)?;
            let started = manager.start(&slice)?;
            report_enforcement(&slice, &started.enforcement);
            println!("started {slice}: pid {}", started.pid);
        }
        Command::Stop { slice: name } => {
            let slice = slice(&name)?;
            manager.stop(&slice)?;
            println!("stopped {slice}");
        }
        Command::Delete { slice: name } => {
            let slice = slice(&name)?;
            manager.delete(&slice)?;
            println!("deleted {slice}");
        }
        Command::List { json } => {
            let list = manager.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<32} {:<8} {:<9} {:>10}",
                    "SLICE", "SHOULD", "STATE", "FIRST ID"
                );
                for s in list {
                    let state = match s.pid {
                        Some(pid) => format!("pid {pid}"),
                        None => "stopped".into(),
                    };
                    let desired = serde_json::to_value(s.desired)?;
                    println!(
                        "{:<32} {:<8} {:<9} {:>10}",
                        s.slice,
                        desired.as_str().unwrap_or("?"),
                        state,
                        s.ids.first
                    );
                }
            }
        }
        Command::Show { slice: name, json } => {
            let slice = slice(&name)?;
            let r = manager.show(&slice)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_report(&r);
                print_lease_left(
                    r.state
                        .rspec
                        .lease_end
                        .map(|end| end.unix() - config::Timestamp::now().unix()),
                );
            }
        }
        Command::Enter {
            slice: name,
            user,
            command,
        } => {
            let slice = slice(&name)?;
            let pty = std::io::stdin().is_terminal();
            let options = EnterOptions {
                command,
                as_slice_user: user,
                pty,
                term: std::env::var("TERM").ok(),
            };
            let mut entered = manager.enter(&slice, &options)?;
            if let Some(master) = entered.pty_master.take() {
                nodemgr::terminal::relay(master).context("relaying the terminal")?;
            }
            let code = entered.wait()?;
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        Command::Restore => {
            let r = manager.restore()?;
            for s in &r.started {
                println!("started {s}");
            }
            for s in &r.running {
                println!("running {s}");
            }
            for c in &r.cleaned {
                println!("removed {c}");
            }
            for (s, why) in &r.failed {
                eprintln!("nodemgr: sliver {s} did not start: {why}");
            }
            if !r.failed.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Acquire { .. } | Command::Bind { .. } => {
            anyhow::bail!(
                "acquire and bind need the node manager service (nodemgr serve): it holds the rcaps"
            );
        }
        Command::Serve(_) => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &nodemgr::manager::SliverReport) {
    let s = &r.state;
    println!("slice:      {}", s.slice);
    println!(
        "state:      {} (should be {})",
        match r.pid {
            Some(pid) => format!(
                "running, PID 1 is host pid {pid}, {} processes",
                r.processes
            ),
            None => "stopped".to_string(),
        },
        serde_json::to_value(s.desired)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    );
    println!("created:    {}", s.created);
    match s.rspec.lease_end {
        Some(end) => println!("lease end:  {end}"),
        None => println!("lease end:  none"),
    }
    println!(
        "host ids:   {}..{} (root inside = {})",
        s.ids.first,
        s.ids.first + nodemgr::ids::RANGE_SIZE - 1,
        s.ids.first
    );
    println!("cgroup:     {}", r.cgroup.display());
    if let Some(why) = &r.limits_unavailable {
        println!("limits:     {why}");
    }
    for (file, value) in &r.limits {
        println!("  {file:<18} {value}");
    }
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    println!("memory:     {} bytes", opt(r.memory_bytes));
    println!("pids:       {}", opt(r.pids));
    println!("cpu:        {} µs", opt(r.cpu_usec));
    println!("disk:       {} bytes", r.disk_bytes);
    if let Some(why) = &r.quota_unavailable {
        println!("quota:      {why}");
    }
    println!("keys:       {}", s.keys.lines().len());
}
