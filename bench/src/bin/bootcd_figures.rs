//! Figures for the boot CD, each beside what a user would otherwise run:
//!
//! - `bootcd build` (first and second run in this process) against
//!   `grub-mkrescue` packing the same kernel and initramfs;
//! - ISO size;
//! - `bootcd customize` against a plain `cp` of the image and against a
//!   full rebuild with the node config (the other way to get a per-node CD);
//! - QEMU (TCG) start to init's banner, SeaBIOS and OVMF.
//!
//! Run: `cargo run --release -p bench --bin bootcd_figures [-- --boots N]`.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use qemu_tests::{artifacts, ArtifactError, CdTrust, Firmware, Qemu, QemuConfig};

#[derive(Parser)]
struct Args {
    /// Boots per firmware (each is 10-20 s under TCG).
    #[arg(long, default_value_t = 1)]
    boots: usize,
    /// Skip the QEMU boots.
    #[arg(long)]
    no_boot: bool,
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let start = Instant::now();
    let value = f()?;
    Ok((value, start.elapsed()))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::Builder::new()
        .prefix("bootcd-figures-")
        .tempdir()?;
    let init = match artifacts::build_init() {
        Ok(init) => init,
        Err(ArtifactError::Unavailable(reason)) => {
            println!("SKIP: {reason}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let trust = CdTrust::generate(&dir.path().join("trust"))?;
    let iso = dir.path().join("cd.iso");
    let opts = artifacts::cd_options(&iso, &init, &trust, "2026.11.1", "https://10.0.2.2:8443")?;

    let (report, first) = timed(|| Ok(artifacts::build_cd(&opts)?))?;
    let (_, second) = timed(|| Ok(artifacts::build_cd(&opts)?))?;
    println!(
        "ISO size: {} bytes ({:.1} MiB; initramfs {:.1} MiB, {} modules)",
        report.iso_bytes,
        report.iso_bytes as f64 / 1048576.0,
        report.initrd_bytes as f64 / 1048576.0,
        report.modules
    );
    println!(
        "bootcd build: first {} , second {}",
        secs(first),
        secs(second)
    );

    // grub-mkrescue on the same kernel and initramfs (no signing, no initramfs build).
    let stage = dir.path().join("rescue");
    let extract = |path: &str| -> Result<Vec<u8>> {
        let mut image = bootcd::iso9660::IsoImage::open(std::fs::File::open(&iso)?)?;
        Ok(image.read_file(path, 1 << 30)?)
    };
    std::fs::create_dir_all(stage.join("boot/grub"))?;
    std::fs::write(stage.join("boot/vmlinuz"), extract("boot/vmlinuz")?)?;
    std::fs::write(stage.join("boot/initrd.img"), extract("boot/initrd.img")?)?;
    std::fs::write(
        stage.join("boot/grub/grub.cfg"),
        "set timeout=0\nmenuentry cd {\n linux /boot/vmlinuz console=ttyS0\n initrd /boot/initrd.img\n}\n",
    )?;
    let rescue_iso = dir.path().join("rescue.iso");
    let rescue = timed(|| {
        run(Command::new("grub-mkrescue")
            .arg("-o")
            .arg(&rescue_iso)
            .arg(&stage)
            .env("SOURCE_DATE_EPOCH", "1795000000"))
    });
    match rescue {
        Ok((_, t)) => println!(
            "grub-mkrescue (same kernel + initramfs, default options): {} , {} bytes; bootcd build / grub-mkrescue = {:.2}",
            secs(t),
            std::fs::metadata(&rescue_iso)?.len(),
            second.as_secs_f64() / t.as_secs_f64()
        ),
        Err(e) => println!("grub-mkrescue: not measured ({e:#})"),
    }

    // customize against cp and against a rebuild with the config.
    let node_toml = dir.path().join("node.toml");
    std::fs::write(
        &node_toml,
        format!(
            "[node]\nid = 9\nkey = \"{}\"\nhostname = \"n9\"\n\n[network]\nmethod = \"dhcp\"\n",
            "ab".repeat(32)
        ),
    )?;
    let mut best_customize = Duration::MAX;
    let mut best_cp = Duration::MAX;
    for i in 0..5 {
        let out = dir.path().join(format!("node-{i}.iso"));
        let (_, t) = timed(|| Ok(bootcd::customize::customize(&iso, &node_toml, &out)?))?;
        best_customize = best_customize.min(t);
        let copy = dir.path().join(format!("copy-{i}.iso"));
        let (_, t) = timed(|| run(Command::new("cp").arg(&iso).arg(&copy)))?;
        best_cp = best_cp.min(t);
        std::fs::remove_file(&out)?;
        std::fs::remove_file(&copy)?;
    }
    let mut rebuild_opts = opts.clone();
    rebuild_opts.output = dir.path().join("rebuilt.iso");
    rebuild_opts.node_config = Some(node_toml.clone());
    let (_, rebuild) = timed(|| Ok(artifacts::build_cd(&rebuild_opts)?))?;
    println!(
        "bootcd customize (best of 5): {} ; cp of the image: {} (customize / cp = {:.2}); full rebuild with the config: {} (rebuild / customize = {:.0})",
        secs(best_customize),
        secs(best_cp),
        best_customize.as_secs_f64() / best_cp.as_secs_f64(),
        secs(rebuild),
        rebuild.as_secs_f64() / best_customize.as_secs_f64()
    );

    if args.no_boot {
        return Ok(());
    }
    for firmware in [Firmware::Bios, Firmware::Uefi] {
        if let Err(e) = qemu_tests::qemu::available(firmware) {
            println!("QEMU {firmware:?}: SKIP: {e}");
            continue;
        }
        let mut times = Vec::new();
        for i in 0..args.boots {
            let work = dir.path().join(format!("qemu-{firmware:?}-{i}"));
            let mut guest = Qemu::start(&QemuConfig::new(firmware, &work).cdrom(&iso))?;
            let banner = guest.wait_for(r"^@banner plnode-init ", Duration::from_secs(300))?;
            times.push(banner.elapsed);
            guest.kill();
        }
        let line: Vec<String> = times.iter().map(|t| secs(*t)).collect();
        println!(
            "QEMU start to init banner, {firmware:?} CD (TCG): {}",
            line.join(", ")
        );
    }
    Ok(())
}
