//! `init`: PID 1 of the node.
//!
//! On the boot CD it is the boot manager (power-on to hand-over); on the
//! installed system the same binary is the supervisor. Run by hand (not as
//! PID 1) it offers a few tools for staff in a debug shell.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use init::{cd, console, node};

fn main() -> ExitCode {
    if std::process::id() == 1 {
        // On the CD the kernel starts us with stray command-line words as
        // arguments: ignore them. The CD starts the installed system's init
        // with `supervisor`.
        let first_arg = std::env::args().nth(1);
        if first_arg.as_deref() == Some("supervisor") || !std::path::Path::new(cd::CD_INFO).exists()
        {
            node::supervisor::run_as_pid1();
        }
        cd::run_as_pid1();
    }
    let cli = cli::Cli::parse();
    console::init(console::Output::Stderr);
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("init: error: {}", floor::report::one_line(e.chain()));
            ExitCode::FAILURE
        }
    }
}
