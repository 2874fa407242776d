//! `bootcd`: builds, signs, customises and inspects the node boot CD.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
    match commands::run(cli::Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bootcd: error: {}", floor::report::one_line(e.chain()));
            ExitCode::FAILURE
        }
    }
}
