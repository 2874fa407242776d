//! The main job, end to end: build the node OS and a signed CD, start a boot
//! server on loopback, register a node, boot it in QEMU from a blank disk
//! through the install to a running node, and say where to look.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use qemu_tests::qemu::{Firmware, Qemu};
use qemu_tests::world::{free_port, Boot, Lab, OS_VERSION};
use qemu_tests::ArtifactError;

#[derive(Parser)]
#[command(
    name = "plnode-demo",
    about = "Boots a PlanetLab-style node in QEMU from a signed CD, through install, to a running node"
)]
struct Args {
    /// Boot with UEFI (OVMF) instead of BIOS (SeaBIOS).
    #[arg(long)]
    uefi: bool,
    /// Keep the node and the boot server running until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
    /// How long the whole boot may take before giving up (seconds; QEMU runs
    /// without KVM here, so it is slow).
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

/// The slice the demo assigns to its node.
const DEMO_SLICE: &str = "demo_hello";

/// The steps shown, in order: the marker name (DESIGN.md §5) and what it means.
const STEPS: &[(&str, &str)] = &[
    ("banner", "CD booted, init running"),
    ("modules", "drivers loaded"),
    ("config", "node config found"),
    ("network", "network up"),
    ("tls", "TLS to the boot server (CD's CA only)"),
    ("checkin", "authenticated check-in"),
    ("reinstall/metadata", "signed metadata verified"),
    ("reinstall/download", "packages downloaded and hash-checked"),
    ("reinstall/partition", "disk partitioned (GPT)"),
    ("reinstall/mkfs", "file system made"),
    ("reinstall/install", "packages installed"),
    ("reinstall/commit", "deployment committed"),
    ("boot/verify", "installed OS verified"),
    ("boot/handover", "handed over (switch_root)"),
    ("supervisor/start", "installed node's supervisor running"),
    ("service/sshd", "ssh service up"),
    ("service/nodemgr", "node manager up (slivers)"),
    ("supervisor/checkin", "node checked in with run level boot"),
];

/// `@step NAME STATUS …@` → (NAME, STATUS); the banner counts as `banner ok`.
fn marker(line: &str) -> Option<(&str, &str)> {
    if line.starts_with("@banner ") {
        return Some(("banner", "ok"));
    }
    let mut words = line.strip_prefix("@step ")?.split([' ', '@']);
    Some((words.next()?, words.next()?))
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("plnode-demo: {e:#}");
        std::process::exit(1);
    }
}

fn say(what: &str) {
    eprintln!("==> {what}");
}

fn run(args: &Args) -> anyhow::Result<()> {
    say("building the node OS packages, the signed repository and the signed boot CD (cached after the first run)");
    let (staff_key, staff_pub) = qemu_tests::ssh::staff_key()?;
    let lab = match Lab::with_staff_keys("demo", std::slice::from_ref(&staff_pub)) {
        Ok(lab) => lab,
        Err(ArtifactError::Unavailable(why)) => {
            return Err(anyhow!(
                "cannot run here: {why} (scripts/setup installs what is missing)"
            ))
        }
        Err(e) => return Err(anyhow!("{e}")),
    };
    let shared = lab.shared;
    eprintln!("    release key:      {}", shared.release_key.display());
    eprintln!("    repository:       {}", shared.repo.display());
    eprintln!("    boot CD:          {} (+ .sig)", shared.iso.display());
    say(&format!(
        "boot server running on https://127.0.0.1:{} (working directory {}, SQLite registry.db)",
        lab.server.port,
        lab.server.workdir.display()
    ));
    let node = lab
        .add_node("node1.demo.plnode", &[])
        .context("registering the node")?;
    say(&format!(
        "registered node {} ({}), state reinstall; its config: {}",
        node.id,
        node.hostname,
        node.config.display()
    ));
    // A slice for the node: its sliver is made when the node manager first
    // polls the server, and its user (here: the staff key) logs in to it.
    lab.server
        .assign_slice(
            DEMO_SLICE,
            config::rspec::Rspec {
                pids: Some(128),
                ..config::rspec::Rspec::default()
            },
            Some("#!/bin/sh\necho 'made by the slice initscript' > /etc/hello\n"),
            std::slice::from_ref(&staff_pub),
            node.id,
        )
        .context("assigning a slice to the node")?;
    say(&format!(
        "slice {DEMO_SLICE} assigned to the node (bootserver slice create / add-key / add-node)"
    ));
    let iso = lab.node_iso(&node)?;
    say(&format!(
        "customised the CD for the node: {}",
        iso.display()
    ));
    let disk = lab.blank_disk("node1-disk", 4)?;
    let firmware = if args.uefi {
        Firmware::Uefi
    } else {
        Firmware::Bios
    };
    say(&format!(
        "booting QEMU ({firmware:?}, TCG) with a blank 4 GiB disk"
    ));
    let ssh_port = free_port()?;
    let mut qemu = lab.boot_forwarding(
        "node1",
        Boot {
            firmware,
            iso,
            disks: vec![disk],
            rtc_base: None,
            extra_args: vec![],
        },
        &[(ssh_port, 22)],
    )?;
    let console_log = qemu.serial_log().to_path_buf();
    follow(&mut qemu, args.timeout).map_err(|e| anyhow!("{e}\n{}", lab.diagnostics(node.id)))?;

    let shown = lab.server.node(node.id)?;
    say(&format!(
        "the boot server shows node {}: boot state {}, run level {}, OS {}",
        node.id, shown["boot_state"], shown["report"]["run_level"], shown["report"]["os_version"]
    ));
    let ssh = qemu_tests::ssh::Ssh::root(&staff_key, ssh_port);
    say(&format!(
        "logging in over ssh as staff (the boot server gave the node the key {})",
        staff_key.with_extension("pub").display()
    ));
    let answer = ssh.run_ok(
        "echo \"logged in to $(hostname) as $(id -un)\"; grep PRETTY_NAME /etc/os-release; uptime",
    )?;
    eprintln!("    {}", answer.trim().replace('\n', "\n    "));
    let sliver = qemu_tests::ssh::Ssh {
        user: DEMO_SLICE.into(),
        ..ssh.clone()
    };
    say(&format!(
        "logging in over ssh as the slice {DEMO_SLICE}: the login lands inside its sliver"
    ));
    let answer = sliver.run_ok(
        "echo \"in the sliver as $(id -un) (uid $(id -u) inside)\"; cat /etc/hello; ps -o pid,user,comm",
    )?;
    eprintln!("    {}", answer.trim().replace('\n', "\n    "));
    eprintln!();
    eprintln!("Where to look:");
    eprintln!("  status page:   https://127.0.0.1:{}/status  (CA: {}; e.g. curl --cacert {} https://localhost:{}/status.json)", lab.server.port, shared.ca_pem.display(), shared.ca_pem.display(), lab.server.port);
    eprintln!("  node console:  {}", console_log.display());
    eprintln!(
        "  node's log:    cargo run -q -p bootserver -- --dir {} node log {}",
        lab.server.workdir.display(),
        node.id
    );
    eprintln!(
        "  admin:         cargo run -q -p bootserver -- --dir {} node list",
        lab.server.workdir.display()
    );
    eprintln!("  OS version:    {OS_VERSION}");
    eprintln!(
        "  ssh (staff):   {}{}",
        ssh.command_line().join(" "),
        if args.keep_running {
            ""
        } else {
            "  (with --keep-running)"
        }
    );
    eprintln!(
        "  sliver:        {}   (nodemgr list / show / enter {DEMO_SLICE} as staff)",
        sliver.command_line().join(" ")
    );
    if args.keep_running {
        eprintln!();
        say("the node and the boot server keep running; Ctrl-C stops both");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    say("stopping the node in order (through the boot server: `node reboot`)");
    lab.server.request_reboot(node.id)?;
    match qemu.wait_for_marker("@step supervisor/shutdown ok", Duration::from_secs(120)) {
        Ok(_) => say("the node stopped its services, synced and unmounted its disk"),
        Err(e) => eprintln!("the node did not stop in order: {e}"),
    }
    qemu.kill();
    Ok(())
}

/// Shows each step as it passes, with the console's latest line below.
fn follow(qemu: &mut Qemu, timeout: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("    {spinner} {elapsed:>4} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        Some(b)
    } else {
        None
    };
    let mut next = 0;
    let mut seen = 0;
    while next < STEPS.len() {
        if started.elapsed() > Duration::from_secs(timeout) {
            return Err(anyhow!(
                "the node did not get through `{}` within {timeout} s; last console lines:\n{}",
                STEPS[next].1,
                qemu.tail(30)
            ));
        }
        let lines = qemu.lines().to_vec();
        for line in &lines[seen..] {
            if let Some(b) = &bar {
                b.set_message(format!(
                    "console: {}",
                    line.chars().take(120).collect::<String>()
                ));
            }
            let Some((name, status)) = marker(line) else {
                continue;
            };
            if status == "fail" && !name.starts_with("service/") {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                return Err(anyhow!("{line}\nlast console lines:\n{}", qemu.tail(30)));
            }
            if status != "ok" {
                continue;
            }
            // Steps may be skipped (no sshd in a custom base): move on to the one that passed.
            if let Some(i) = STEPS[next..].iter().position(|(m, _)| *m == name) {
                let (_, what) = STEPS[next + i];
                let text = format!(
                    "  ✔ {:>6.1} s  {what:<40} {line}",
                    started.elapsed().as_secs_f64()
                );
                match &bar {
                    Some(b) => b.println(text),
                    None => eprintln!("{text}"),
                }
                next += i + 1;
            }
        }
        seen = lines.len();
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(())
}
