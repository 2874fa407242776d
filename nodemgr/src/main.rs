//! `nodemgr`: slivers on a PlanetLab-style node.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;

fn main() -> ExitCode {
    // A sliver's PID 1 and the `enter` helper are this program under
    // another name: they never reach the command line.
    if let Some(code) = nodemgr::helper_main() {
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let cli = cli::Cli::parse();
    commands::init_logging(cli.verbose);
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nodemgr: {}", floor::report::one_line(e.chain()));
            ExitCode::FAILURE
        }
    }
}
