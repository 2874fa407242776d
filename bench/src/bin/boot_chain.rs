//! Figures of the boot chain under QEMU/TCG, beside the bare boot of the
//! same kernel with a trivial init: QEMU start to the init banner, to
//! check-in, install time, hand-over, the installed node's first check-in,
//! the second boot from disk; an update of `base` end to end (staging by
//! the node's updater, the reboot, activation by the CD, the health check);
//! and power cuts during installs (how many left a node that did not come
//! up).
//!
//!     cargo run --release -p bench --bin boot_chain -- [--trials 20]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;

use qemu_tests::powercut::PowerCuts;
use qemu_tests::qemu::{Disk, Firmware, Qemu, QemuConfig};
use qemu_tests::world::{quick_update_services, Boot, Lab};

#[derive(Parser)]
#[command(
    about = "Boot chain figures under QEMU (TCG), with a bare-kernel baseline and power-cut trials"
)]
struct Args {
    /// Power cuts during installs (each followed by a boot that must come up).
    #[arg(long, default_value_t = 20)]
    trials: u32,
    /// Runs of the bare-kernel baseline and of the full chain.
    #[arg(long, default_value_t = 2)]
    runs: u32,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("boot_chain: {e:#}");
        std::process::exit(1);
    }
}

/// A newc initramfs whose /init (busybox sh) prints a marker and powers off.
fn trivial_initramfs(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = dir.join("bare-root");
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("dev"))?;
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("copying /bin/busybox (apt-get install busybox-static)")?;
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).ok();
    let init = root.join("init");
    std::fs::write(
        &init,
        // Debian's kernel does not mount devtmpfs by itself.
        "#!/bin/sh\n/bin/busybox mount -t devtmpfs devtmpfs /dev\n/bin/busybox echo BARE-INIT-UP > /dev/ttyS0\n/bin/busybox poweroff -f\n",
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    let out = dir.join("bare.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio -o -H newc --quiet > {}",
            root.display(),
            out.display()
        ))
        .status()?;
    if !status.success() {
        bail!("cpio failed");
    }
    Ok(out)
}

fn kernel() -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| anyhow!("no /boot/vmlinuz-* (apt-get install linux-image-amd64)"))
}

/// Seconds from QEMU start to the trivial init's marker.
fn bare_boot(dir: &Path, initrd: &Path) -> anyhow::Result<f64> {
    let kernel = kernel()?;
    let mut cfg = QemuConfig::new(Firmware::Bios, dir.join("bare-run"));
    cfg.network = false;
    cfg.extra_args = vec![
        "-kernel".into(),
        kernel.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        "console=ttyS0 panic=-1".into(),
    ];
    let mut q = Qemu::start(&cfg).map_err(|e| anyhow!("{e}"))?;
    let m = q
        .wait_for_marker("BARE-INIT-UP", Duration::from_secs(300))
        .map_err(|e| anyhow!("{e}"))?;
    Ok(m.elapsed.as_secs_f64())
}

fn seconds(q: &mut Qemu, marker: &str, secs: u64) -> anyhow::Result<f64> {
    let m = q
        .wait_for_marker(marker, Duration::from_secs(secs))
        .map_err(|e| anyhow!("{e}"))?;
    if m.line.contains(" fail") && m.line.starts_with("@step") {
        bail!("{}", m.line);
    }
    Ok(m.elapsed.as_secs_f64())
}

struct ChainRun {
    banner: f64,
    checkin: f64,
    install: f64,
    handover: f64,
    node_checkin: f64,
    second_handover: f64,
    second_checkin: f64,
}

fn chain(lab: &Lab, run: u32) -> anyhow::Result<ChainRun> {
    let node = lab.add_node(&format!("bench{run}"), &[])?;
    let iso = lab.node_iso(&node)?;
    let disk = lab.blank_disk(&format!("bench{run}"), 4)?;
    let boot = |name: &str, disk: Disk| {
        lab.boot(
            name,
            Boot {
                firmware: Firmware::Bios,
                iso: iso.clone(),
                disks: vec![disk],
                rtc_base: None,
                extra_args: vec![],
            },
        )
    };
    let mut q = boot(&format!("bench{run}-install"), disk.clone())?;
    let banner = seconds(&mut q, "@banner plnode-init", 300)?;
    let checkin = seconds(&mut q, "@step checkin ok", 300)?;
    let committed = seconds(&mut q, "@step reinstall/commit ok", 900)?;
    let handover = seconds(&mut q, "@step boot/handover ok", 300)?;
    let node_checkin = seconds(&mut q, "@step supervisor/checkin ok", 300)?;
    lab.server.request_reboot(node.id)?;
    seconds(&mut q, "@step supervisor/shutdown ok", 120)?;
    q.kill();
    let mut q = boot(&format!("bench{run}-second"), disk)?;
    let second_handover = seconds(&mut q, "@step boot/handover ok", 300)?;
    let second_checkin = seconds(&mut q, "@step supervisor/checkin ok", 300)?;
    q.kill();
    Ok(ChainRun {
        banner,
        checkin,
        install: committed - checkin,
        handover,
        node_checkin,
        second_handover,
        second_checkin,
    })
}

struct UpdateRun {
    staging: f64,
    stage_cost: String,
    shutdown: f64,
    handover: f64,
    marked_good: f64,
}

/// A node with a quickly polling updater gets a new `base`: its staging,
/// the reboot, the CD activating it, and its health check.
fn update(lab: &Lab) -> anyhow::Result<UpdateRun> {
    lab.publish("2026.11.2", &["base"], Some(&quick_update_services("")))?;
    let node = lab.add_node("bench-update", &[])?;
    let iso = lab.node_iso(&node)?;
    let disk = lab.blank_disk("bench-update", 4)?;
    let boot = |name: &str| {
        lab.boot(
            name,
            Boot {
                firmware: Firmware::Bios,
                iso: iso.clone(),
                disks: vec![disk.clone()],
                rtc_base: None,
                extra_args: vec![],
            },
        )
    };
    let mut q = boot("bench-update-install")?;
    seconds(&mut q, "@step supervisor/healthy ok", 900)?;
    seconds(&mut q, "@step update/check ok", 120)?;
    lab.publish("2026.11.3", &["base"], Some(&quick_update_services("")))?;
    let start = seconds(&mut q, "@step update/stage start", 120)?;
    let line = q
        .wait_for_marker("@step update/stage ", Duration::from_secs(300))
        .map_err(|e| anyhow!("{e}"))?;
    if !line.line.contains("update/stage ok") {
        bail!("{}", line.line);
    }
    let stage_cost = line
        .line
        .rsplit_once('[')
        .map(|(_, c)| format!("[{}", c.trim_end_matches('@')))
        .unwrap_or_default();
    let staged = line.elapsed.as_secs_f64();
    let down = seconds(&mut q, "@step supervisor/shutdown ok", 120)?;
    q.kill();
    let mut q = boot("bench-update-activate")?;
    let handover = seconds(&mut q, "@step boot/handover ok", 300)?;
    let good = q
        .wait_for_marker("@step supervisor/trial ", Duration::from_secs(300))
        .map_err(|e| anyhow!("{e}"))?;
    if !good.line.contains("marked good") {
        bail!("{}", good.line);
    }
    q.kill();
    Ok(UpdateRun {
        staging: staged - start,
        stage_cost,
        shutdown: down - staged,
        handover,
        marked_good: good.elapsed.as_secs_f64(),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run(args: &Args) -> anyhow::Result<()> {
    let lab = Lab::new("bench-boot-chain").map_err(|e| anyhow!("{e}"))?;
    if args.runs > 0 {
        figures(&lab, args)?;
    }
    if args.trials == 0 {
        return Ok(());
    }

    // Power cuts at random moments of installs; each must be followed by a
    // boot that comes up.
    let node = lab.add_node("bench-power", &[])?;
    let iso = lab.node_iso(&node)?;
    // PLNODE_POWER_CUT_SEED replays a run.
    let mut cuts = PowerCuts::new(args.trials);
    let mut unbootable = 0;
    let started = Instant::now();
    for trial in 1..=args.trials {
        lab.server
            .set_state(node.id, config::api::BootState::Reinstall)?;
        let disk = lab.blank_disk(&format!("cut{trial}"), 4)?;
        let boot = |name: String| {
            lab.boot(
                &name,
                Boot {
                    firmware: Firmware::Bios,
                    iso: iso.clone(),
                    disks: vec![disk.clone()],
                    rtc_base: None,
                    extra_args: vec![],
                },
            )
        };
        let mut q = boot(format!("cut{trial}"))?;
        seconds(&mut q, "@step reinstall/partition start", 400)?;
        std::thread::sleep(cuts.next_within(Duration::from_secs(9)));
        q.kill();
        let mut q = boot(format!("cut{trial}-after"))?;
        match seconds(&mut q, "@step supervisor/checkin ok", 600) {
            Ok(_) => println!("  power cut {trial}: came up"),
            Err(e) => {
                unbootable += 1;
                println!("  power cut {trial}: DID NOT COME UP: {e}");
            }
        }
        q.kill();
    }
    println!(
        "power cuts during installs: {} trial(s), {unbootable} ended unbootable ({:.0} s)",
        args.trials,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The timing figures: the bare baseline, the chain, an update.
fn figures(lab: &Lab, args: &Args) -> anyhow::Result<()> {
    let bare_initrd = trivial_initramfs(&lab.dir)?;
    let bare: Vec<f64> = (0..args.runs)
        .map(|_| bare_boot(&lab.dir, &bare_initrd))
        .collect::<anyhow::Result<_>>()?;
    let runs: Vec<ChainRun> = (0..args.runs)
        .map(|r| chain(lab, r))
        .collect::<anyhow::Result<_>>()?;
    let bare_s = median(bare);
    let pick = |f: fn(&ChainRun) -> f64| median(runs.iter().map(f).collect());
    let rows = [
        ("bare kernel + trivial init (baseline)", bare_s),
        ("QEMU start -> init banner (CD)", pick(|r| r.banner)),
        ("QEMU start -> authenticated check-in", pick(|r| r.checkin)),
        ("install (check-in -> committed)", pick(|r| r.install)),
        ("QEMU start -> hand-over (first boot)", pick(|r| r.handover)),
        (
            "QEMU start -> installed node checked in",
            pick(|r| r.node_checkin),
        ),
        (
            "QEMU start -> hand-over (boot from disk)",
            pick(|r| r.second_handover),
        ),
        (
            "QEMU start -> node checked in (from disk)",
            pick(|r| r.second_checkin),
        ),
    ];
    println!("boot chain under TCG, median of {} run(s):", args.runs);
    for (what, s) in rows {
        println!(
            "  {what:<45} {s:>7.1} s   {:>5.2}x the bare boot",
            s / bare_s
        );
    }
    println!("  boot-to-running-sliver: not measured (no node manager yet)");
    std::io::stdout().flush().ok();

    let u = update(lab)?;
    println!("update of `base` end to end (updater on the installed node, QEMU/TCG):");
    println!(
        "  staging (verify metadata, download, copy, extract):  {:6.1} s  {}",
        u.staging, u.stage_cost
    );
    println!(
        "  orderly shutdown after staging:                      {:6.1} s",
        u.shutdown
    );
    println!(
        "  QEMU start -> new deployment activated and handed over: {:6.1} s",
        u.handover
    );
    println!(
        "  QEMU start -> new deployment marked good:            {:6.1} s",
        u.marked_good
    );
    println!(
        "  total, staging start -> marked good:                 {:6.1} s",
        u.staging + u.shutdown + u.marked_good
    );
    std::io::stdout().flush().ok();

    Ok(())
}
