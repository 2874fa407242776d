//! `bootserver`: run the boot server and administer its registry.
//!
//! [`cli`] holds the arguments, [`handlers`] turn them into calls of the
//! library's admin API (`bootserver::admin`), [`print`] shows the results.

mod cli;
mod handlers;
mod print;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    init_logging(&args);
    match handlers::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootserver: error: {}", floor::report::one_line(e.chain()));
            ExitCode::FAILURE
        }
    }
}

/// Logs go to standard error: `info` while serving, `warn` for admin
/// commands, or what `RUST_LOG` says.
fn init_logging(cli: &cli::Cli) {
    let default = match cli.command {
        cli::Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
