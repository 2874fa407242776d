//! `sensors`: the node's sensor server.
//!
//! It only reads nodemgr's state, never starts a sliver or enters one, so
//! it need not run nodemgr's helpers (`nodemgr::helper_main`).

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    commands::init_logging(cli.verbose);
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sensors: {}", floor::report::one_line(e.chain()));
            ExitCode::FAILURE
        }
    }
}
