//! What each subcommand does, on top of the library.

use anyhow::{Context, Result};
use bwcap::{Bwcap, DesiredState};
use config::Timestamp;

use crate::cli::{Cli, Command};

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> Result<()> {
    let bwcap = Bwcap::new(&cli.state_dir);
    match cli.command {
        Command::Apply { state, at } => {
            let desired = DesiredState::load(&state)?;
            let report = bwcap
                .apply(&desired, at.unwrap_or_else(Timestamp::now))
                .with_context(|| format!("applying {}", state.display()))?;
            for change in &report.changes {
                println!("{change}");
            }
            for warning in &report.warnings {
                eprintln!("bwcap: warning: {warning}");
            }
            let cap = if report.cap_is_line_rate {
                format!("no cap set, line rate {}", report.node_cap)
            } else {
                format!("node cap {}", report.node_cap)
            };
            println!(
                "{}: {} slivers, {cap}; {} changes ({} netlink messages in {} sends, {} programs attached, {} detached) in {:.1} ms",
                desired.interface,
                desired.slivers.len(),
                report.changes.len(),
                report.netlink_messages,
                report.netlink_sends,
                report.programs_attached,
                report.programs_detached,
                report.timings.total.as_secs_f64() * 1000.0
            );
        }
        Command::Show { json, at } => {
            let usage = bwcap.usage(at.unwrap_or_else(Timestamp::now))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&usage)?);
            } else {
                print!("{}", usage.render());
            }
        }
        Command::Remove { interface } => {
            let report = bwcap.remove(&interface)?;
            for change in &report.changes {
                println!("{change}");
            }
            println!("{interface}: {} changes", report.changes.len());
        }
    }
    Ok(())
}

/// Logs to stderr; `-v` for info, `-vv` for debug, RUST_LOG overrides.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
