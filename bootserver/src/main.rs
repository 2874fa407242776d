//! `bootserver`: run the boot server and administer its registry.

use bootserver::cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(&args);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootserver: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
