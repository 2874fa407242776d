//! The CD from `bootcd build` boots under SeaBIOS and under OVMF (TCG) and
//! runs the project's init, which prints its banner with the CD's version;
//! a `bootcd customize`d copy, written to a disk as with `dd`, gives init
//! the node config from its per-node area.
//!
//! Slow (each boot is 10-20 s of emulation), so there are only three boots.
//! Needs qemu-system-x86, ovmf, xorriso, grub-efi-amd64-bin, isolinux,
//! mtools, busybox-static, dropbear-bin, a Debian kernel and the Rust
//! musl target; prints SKIP naming what is missing.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use qemu_tests::{artifacts, ArtifactError, CdTrust, Disk, DiskBus, Firmware, Qemu, QemuConfig};

const CD_VERSION: &str = "2026.11.1-test";
const NODE_ID: u64 = 4242;
/// Per wait: generous, TCG on a shared 2-core machine is slow.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

struct Setup {
    dir: PathBuf,
    iso: PathBuf,
    customized: PathBuf,
}

fn setup() -> Result<&'static Setup, String> {
    static SETUP: OnceLock<Result<Setup, String>> = OnceLock::new();
    SETUP
        .get_or_init(|| {
            let prepare = || -> Result<Setup, ArtifactError> {
                let dir = artifacts::target_dir().join("qemu-tests").join("bootcd-boot");
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).map_err(|e| ArtifactError::Failed(e.to_string()))?;
                qemu_tests::qemu::available(Firmware::Uefi).map_err(|e| ArtifactError::Unavailable(e.to_string()))?;
                let init = artifacts::build_init()?;
                let trust = CdTrust::generate(&dir.join("trust"))?;
                let iso = dir.join("node-cd.iso");
                let opts = artifacts::cd_options(&iso, &init, &trust, CD_VERSION, "https://10.0.2.2:8443")?;
                artifacts::build_cd(&opts)?;
                let node_toml = dir.join("node.toml");
                std::fs::write(
                    &node_toml,
                    format!(
                        "[node]\nid = {NODE_ID}\nkey = \"{}\"\nhostname = \"qemu-node\"\n\n[network]\nmethod = \"dhcp\"\n",
                        "5a".repeat(32)
                    ),
                )
                .map_err(|e| ArtifactError::Failed(e.to_string()))?;
                let customized = dir.join("node-4242.iso");
                bootcd::customize::customize(&iso, &node_toml, &customized)
                    .map_err(|e| ArtifactError::Failed(format!("bootcd customize: {e}")))?;
                Ok(Setup { dir, iso, customized })
            };
            match prepare() {
                Ok(setup) => Ok(setup),
                Err(ArtifactError::Unavailable(reason)) => Err(reason),
                Err(ArtifactError::Failed(reason)) => panic!("preparing the CD failed: {reason}"),
            }
        })
        .as_ref()
        .map_err(Clone::clone)
}

macro_rules! setup_or_skip {
    () => {
        match setup() {
            Ok(setup) => setup,
            Err(reason) => {
                eprintln!("SKIP: {reason}");
                return;
            }
        }
    };
}

fn banner_pattern() -> String {
    format!(
        r"^@banner plnode-init \S+ cd={}@$",
        regex::escape(CD_VERSION)
    )
}

fn boot_cd(firmware: Firmware, name: &str) {
    let setup = setup_or_skip!();
    let config = QemuConfig::new(firmware, setup.dir.join(name)).cdrom(&setup.iso);
    let mut guest = Qemu::start(&config).expect("starting QEMU");
    let banner = guest
        .wait_for(&banner_pattern(), BOOT_TIMEOUT)
        .expect("init's banner on the serial console");
    eprintln!(
        "{name}: init banner {:?} after {:.1} s",
        banner.line,
        banner.elapsed.as_secs_f64()
    );
}

#[test]
fn cd_boots_to_init_under_seabios() {
    boot_cd(Firmware::Bios, "bios-cd");
}

#[test]
fn cd_boots_to_init_under_ovmf() {
    boot_cd(Firmware::Uefi, "uefi-cd");
}

#[test]
fn customized_image_on_a_disk_gives_init_its_node_config() {
    let setup = setup_or_skip!();
    let config = QemuConfig::new(Firmware::Uefi, setup.dir.join("uefi-disk")).disk(Disk {
        path: setup.customized.clone(),
        format: "raw",
        bus: DiskBus::Virtio,
        snapshot: true,
    });
    let mut guest = Qemu::start(&config).expect("starting QEMU");
    guest
        .wait_for(&banner_pattern(), BOOT_TIMEOUT)
        .expect("init's banner on the serial console");
    let step = guest
        .wait_for(
            &format!(r"^@step config ok source=\S+ node={NODE_ID}( |@)"),
            BOOT_TIMEOUT,
        )
        .expect("init found the node config of the per-node area");
    eprintln!(
        "uefi-disk: {:?} after {:.1} s",
        step.line,
        step.elapsed.as_secs_f64()
    );
}
