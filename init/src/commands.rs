//! What `init` does when run by hand: each command calls the library.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use init::node::{supervisor, updater};
use init::{cd, console, hardware, kernel_cmdline::Cmdline, modprobe};
use nix::sys::signal::Signal;

use crate::cli::{Command, UpdateArgs};

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Modprobe { modules, names } => self::modprobe(modules, names),
        Command::Hwinfo => {
            println!("{}", serde_json::to_string_pretty(&hardware::summary())?);
            Ok(())
        }
        Command::Supervisor { root, checkin } => {
            let opts = supervisor::Options {
                root,
                machine: false,
                checkin,
            };
            let ending = supervisor::run(&opts)?;
            println!("supervisor ended: {ending:?}");
            Ok(())
        }
        Command::Update(args) => update(args),
        Command::CheckNextBoot { partition } => {
            init::deploy::Disk::new(&partition).request_full_check()?;
            println!("the CD re-hashes every file of the deployment at the next boot");
            Ok(())
        }
        Command::Reboot => signal_init(Signal::SIGTERM),
        Command::Poweroff => signal_init(Signal::SIGUSR2),
        Command::FindConfig => {
            match cd::config_discovery::discover(&Cmdline::read())? {
                Some(found) => println!(
                    "node {} ({}) from {}",
                    found.config.node_id,
                    found.config.fqdn(),
                    found.source
                ),
                None => println!("no node config found"),
            }
            Ok(())
        }
    }
}

fn modprobe(modules: Option<std::path::PathBuf>, names: Vec<String>) -> anyhow::Result<()> {
    let dir = match modules {
        Some(d) => d,
        None => hardware::module_dir()?,
    };
    let mut loader = modprobe::Loader::new(modprobe::ModuleIndex::load(&dir)?);
    if names.is_empty() {
        let (loaded, failures) = loader.load_for_hardware(Path::new("/sys/devices"));
        println!("loaded: {}", loaded.join(" "));
        for f in failures {
            eprintln!("failed: {f}");
        }
        return Ok(());
    }
    for n in names {
        let loaded = loader.load(&n)?;
        let what = if loaded.is_empty() {
            "nothing new".to_string()
        } else {
            loaded.join(" ")
        };
        println!("{n}: loaded {what}");
    }
    Ok(())
}

fn update(args: UpdateArgs) -> anyhow::Result<()> {
    console::init(console::Output::Stdout);
    let options = updater::Options {
        partition: args.partition,
        handover: args.handover,
        reboot: args.reboot,
        download: pkgsign::fetch::DownloadPolicy::default(),
    };
    let schedule = args.daemon.then(|| updater::Schedule {
        interval: Duration::from_secs(args.interval),
        retry_min: Duration::from_secs(args.retry_min),
        retry_max: Duration::from_secs(args.retry_max.max(args.retry_min)),
    });
    updater::run_service(options, schedule)
}

fn signal_init(sig: Signal) -> anyhow::Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(1), sig)
        .with_context(|| format!("signalling PID 1 ({sig})"))
}
