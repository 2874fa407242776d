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

use crate::cli::{Cli, Command, NodeArgs};

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
    s
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
    let manager = NodeManager::open(settings(&cli.node))?;
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
