//! `bwcap`: the node's bandwidth caps, for staff and tests.

mod cli;
mod handlers;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    handlers::init_logging(args.verbose);
    match handlers::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let error: &(dyn std::error::Error + 'static) = e.as_ref();
            eprintln!("bwcap: error: {}", floor::report::error_line(error));
            ExitCode::FAILURE
        }
    }
}
