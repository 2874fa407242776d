//! `init`: PID 1 of the node.
//!
//! On the boot CD it is the boot manager (power-on to hand-over); on the
//! installed system the same binary is the supervisor. Run by hand (not as
//! PID 1) it offers a few tools for staff in a debug shell.

use clap::{Parser, Subcommand};

use init::{bootmgr, console, modprobe, supervisor};

#[derive(Parser)]
#[command(
    name = "init",
    version,
    about = "PID 1 of a PlanetLab-style node: the CD's boot manager and the installed node's supervisor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the kernel modules for the hardware this machine has (as the CD does at boot).
    Modprobe {
        /// Module index directory (default: /lib/modules/$(uname -r)).
        #[arg(long)]
        modules: Option<std::path::PathBuf>,
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
        root: std::path::PathBuf,
        /// Check in with the boot server (needs ROOT/plnode/node.toml and trust/ca.pem).
        #[arg(long)]
        checkin: bool,
    },
    /// Check the boot server for a signed update of the installed node and
    /// stage it for the CD to activate (the supervisor runs this as the
    /// service `updater` with --daemon --reboot).
    Update(init::updater::UpdateArgs),
    /// Ask PID 1 to reboot the node in order (services stopped, disks synced).
    Reboot,
    /// Ask PID 1 to power the node off in order.
    Poweroff,
}

fn main() {
    let first_arg = std::env::args().nth(1);
    if std::process::id() == 1 {
        // On the CD the kernel starts us with stray command-line words as
        // arguments: ignore them. The CD starts the installed system's init
        // with `supervisor`.
        if first_arg.as_deref() == Some("supervisor")
            || !std::path::Path::new(bootmgr::CD_INFO).exists()
        {
            supervisor::run_as_pid1();
        }
        bootmgr::run_as_pid1();
    }
    let cli = Cli::parse();
    console::init(console::Output::Stderr);
    if let Err(e) = run(cli) {
        eprintln!("init: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Modprobe { modules, names } => {
            let dir = match modules {
                Some(d) => d,
                None => init::hardware::module_dir()?,
            };
            let mut loader = modprobe::Loader::new(modprobe::ModuleIndex::load(&dir)?);
            if names.is_empty() {
                let (loaded, failures) =
                    loader.load_for_hardware(std::path::Path::new("/sys/devices"));
                println!("loaded: {}", loaded.join(" "));
                for f in failures {
                    eprintln!("failed: {f}");
                }
            } else {
                for n in names {
                    let loaded = loader.load(&n)?;
                    println!(
                        "{n}: loaded {}",
                        if loaded.is_empty() {
                            "nothing new".to_string()
                        } else {
                            loaded.join(" ")
                        }
                    );
                }
            }
        }
        Command::Hwinfo => {
            let hw = init::hardware::summary();
            println!("{}", serde_json::to_string_pretty(&hw)?);
        }
        Command::Supervisor { root, checkin } => {
            let opts = supervisor::Options {
                root,
                machine: false,
                checkin,
            };
            let ending = supervisor::run(&opts)?;
            println!("supervisor ended: {ending:?}");
        }
        Command::Update(args) => init::updater::run_cli(args)?,
        Command::Reboot => signal_init(nix::sys::signal::Signal::SIGTERM)?,
        Command::Poweroff => signal_init(nix::sys::signal::Signal::SIGUSR2)?,
        Command::FindConfig => {
            let cmdline = init::cmdline::Cmdline::read();
            match init::nodecfg::discover(&cmdline)? {
                Some(found) => println!(
                    "node {} ({}) from {}",
                    found.config.node_id,
                    found.config.fqdn(),
                    found.source
                ),
                None => println!("no node config found"),
            }
        }
    }
    Ok(())
}

fn signal_init(sig: nix::sys::signal::Signal) -> anyhow::Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(1), sig)
        .map_err(|e| anyhow::anyhow!("signalling PID 1: {e}"))
}
