//! The command line of `init` run by hand (not as PID 1): argument types only.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use init::handover_note::HANDOVER_FILE;

#[derive(Debug, Parser)]
#[command(
    name = "init",
    version,
    about = "PID 1 of a PlanetLab-style node: the CD's boot manager and the installed node's supervisor",
    long_about = "PID 1 of a PlanetLab-style node. Started by the kernel as PID 1 it is the boot CD's \
                  boot manager, or (with `supervisor`, or on an installed root) the node's supervisor. \
                  Run by hand it offers the tools below, for staff in a debug shell and for tests."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the kernel modules for the hardware this machine has (as the CD does at boot).
    Modprobe {
        /// Module index directory (default: /lib/modules/$(uname -r)).
        #[arg(long)]
        modules: Option<PathBuf>,
        /// Load these modules (and their dependencies) instead of scanning the hardware.
        names: Vec<String>,
    },
    /// Print the hardware summary the node reports to its boot server, as JSON.
    Hwinfo,
    /// Find the node config as the boot CD would, and say where it came from.
    FindConfig,
    /// Run the supervisor as an ordinary process (tests, or under another init):
    /// services from ROOT/etc/plnode/supervisor.toml, logs in ROOT/plnode/log.
    Supervisor {
        /// The directory standing in for the installed root.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Check in with the boot server (needs ROOT/plnode/node.toml and trust/ca.pem).
        #[arg(long)]
        checkin: bool,
    },
    /// Check the boot server for a signed update of the installed node and
    /// stage it for the CD to activate (the supervisor runs this as the
    /// service `updater` with --daemon --reboot).
    Update(UpdateArgs),
    /// Ask the CD to re-hash every file of the installed deployment at the
    /// next boot (the usual check compares types, sizes, modes and links).
    CheckNextBoot {
        /// The node's partition.
        #[arg(long, default_value = "/plnode")]
        partition: PathBuf,
    },
    /// Ask PID 1 to reboot the node in order (services stopped, disks synced).
    Reboot,
    /// Ask PID 1 to power the node off in order.
    Poweroff,
}

/// `init update`: the command line of the updater.
#[derive(Debug, Clone, clap::Args)]
pub struct UpdateArgs {
    /// The node's partition: node.toml, trust/ (verifier state and the boot
    /// server CA), deployments/, and the current/previous/staged links.
    #[arg(long, default_value = "/plnode")]
    pub partition: PathBuf,
    /// The CD's hand-over note (server URLs when the node config names
    /// none; the clock floor for certificate checks).
    #[arg(long, default_value = HANDOVER_FILE)]
    pub handover: PathBuf,
    /// Keep checking: every --interval seconds (give or take half), and
    /// while the server cannot be reached from --retry-min doubling up to
    /// --retry-max seconds. Without it: check once and exit (status 1 on
    /// failure).
    #[arg(long)]
    pub daemon: bool,
    /// After staging a new deployment, ask PID 1 for an orderly reboot so
    /// the CD verifies and activates it.
    #[arg(long)]
    pub reboot: bool,
    /// Seconds between checks (jittered ±50%).
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: u64,
    /// First wait in seconds after the server could not be reached.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_min: u64,
    /// Longest wait in seconds while the server cannot be reached.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_max: u64,
}
