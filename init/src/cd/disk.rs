//! Preparing the install disk: choosing it (never removable media, never the
//! CD, never a disk in use), partitioning it (GPT, one partition) and making
//! the file system.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use crate::blockdev::{self, BlockDevice, DevKind};
use crate::cd::config_discovery::ROOT_LABEL;
use crate::proc;

/// GPT partition name of the node's file system.
pub const PARTITION_NAME: &str = "PLNODE-ROOT";

/// The smallest disk the node OS is installed on.
pub const MIN_DISK_BYTES: u64 = 2 << 30;

/// The smallest memory the installer runs with.
pub const MIN_RAM_BYTES: u64 = 384 << 20;

/// Why a disk was not taken, for the console and the server.
pub fn refusal(d: &BlockDevice, min_bytes: u64) -> Option<String> {
    if d.kind != DevKind::Disk {
        return Some(format!("{} is not a disk ({:?})", d.name, d.kind));
    }
    if d.removable {
        return Some(format!(
            "{} is removable media (USB or similar): never installed onto",
            d.name
        ));
    }
    if d.read_only {
        return Some(format!("{} is read-only", d.name));
    }
    if d.size_bytes < min_bytes {
        return Some(format!(
            "{} is too small: {} MiB, at least {} MiB needed",
            d.name,
            d.size_bytes >> 20,
            min_bytes >> 20
        ));
    }
    None
}

/// Chooses the install disk among `devices`: the one named on the command
/// line, else the first suitable disk. `mounted` tells which are in use.
pub fn choose(
    devices: &[BlockDevice],
    named: Option<&str>,
    min_bytes: u64,
    mounted: &dyn Fn(&str) -> Vec<String>,
) -> anyhow::Result<BlockDevice> {
    let disks: Vec<&BlockDevice> = devices
        .iter()
        .filter(|d| d.kind != DevKind::Partition && d.kind != DevKind::Virtual)
        .collect();
    let check = |d: &BlockDevice| -> Result<(), String> {
        if let Some(r) = refusal(d, min_bytes) {
            return Err(r);
        }
        let busy = mounted(&d.name);
        if !busy.is_empty() {
            return Err(format!(
                "{} has mounted partitions ({}); refusing to wipe a disk in use",
                d.name,
                busy.join(", ")
            ));
        }
        Ok(())
    };
    if let Some(name) = named {
        let d = disks
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| anyhow!("plnode.disk={name}: no such disk"))?;
        check(d).map_err(|r| anyhow!(r))?;
        return Ok((*d).clone());
    }
    let mut reasons = Vec::new();
    for d in &disks {
        match check(d) {
            Ok(()) => return Ok((*d).clone()),
            Err(r) => reasons.push(r),
        }
    }
    if reasons.is_empty() {
        bail!("no disk found (is the disk controller's driver on the CD?)");
    }
    bail!("no disk to install onto: {}", reasons.join("; "))
}

/// The device node of partition `n` of `disk` (`vda` → `vda1`, `nvme0n1` → `nvme0n1p1`).
pub fn partition_path(disk: &str, n: u32) -> PathBuf {
    let sep = if disk.chars().last().is_some_and(|c| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    PathBuf::from(format!("/dev/{disk}{sep}{n}"))
}

/// Writes a new GPT with one partition spanning the disk (1 MiB aligned).
/// `dev` may be a block device or an image file.
pub fn write_partition_table(dev: &Path) -> anyhow::Result<()> {
    let size = {
        let mut f = OpenOptions::new()
            .read(true)
            .open(dev)
            .with_context(|| format!("opening {}", dev.display()))?;
        use std::io::Seek;
        f.seek(std::io::SeekFrom::End(0))?
    };
    let sectors = size / 512;
    anyhow::ensure!(
        sectors > 4096,
        "{} is too small for a partition table",
        dev.display()
    );
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .with_context(|| format!("opening {} for writing", dev.display()))?;
    // Old signatures at the start (a previous file system, an old MBR) would
    // confuse probing; the GPT writer only rewrites what it owns.
    file.write_all(&vec![0u8; 1 << 20])
        .context("clearing the start of the disk")?;
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(&mut file)
        .context("writing the protective MBR")?;
    let mut gdisk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(file, None)
        .context("creating the GPT")?;
    let free = gdisk.find_free_sectors();
    let (first, len) = free
        .iter()
        .copied()
        .max_by_key(|(_, l)| *l)
        .ok_or_else(|| anyhow!("no free space on {}", dev.display()))?;
    // 1 MiB alignment, as every partitioning tool does.
    let start = first.div_ceil(2048) * 2048;
    let usable = (first + len).saturating_sub(start);
    anyhow::ensure!(
        usable > 2048,
        "{} has no room for a partition",
        dev.display()
    );
    gdisk
        .add_partition_at(
            PARTITION_NAME,
            1,
            start,
            usable,
            gpt::partition_types::LINUX_FS,
            0,
        )
        .context("adding the partition")?;
    let file = gdisk.write().context("writing the GPT")?;
    file.sync_all().context("syncing the partition table")?;
    Ok(())
}

/// Asks the kernel to re-read the partition table and waits for the
/// partition's device node.
pub fn reread_partitions(disk: &Path, part: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let f = OpenOptions::new()
        .read(true)
        .open(disk)
        .with_context(|| format!("opening {}", disk.display()))?;
    // BLKRRPART = _IO(0x12, 95)
    nix::ioctl_none!(blkrrpart, 0x12, 95);
    // SAFETY: BLKRRPART takes no argument; the fd is a block device we opened.
    unsafe { blkrrpart(f.as_raw_fd()) }
        .with_context(|| format!("re-reading the partition table of {}", disk.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !part.exists() {
        if Instant::now() > deadline {
            bail!(
                "{} did not appear after re-reading the partition table",
                part.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Makes the ext4 file system labelled `PLNODE_ROOT` (mke2fs from the CD).
pub fn make_filesystem(part: &Path) -> anyhow::Result<()> {
    let mke2fs = ["/sbin/mke2fs", "/usr/sbin/mke2fs", "/sbin/mkfs.ext4"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("mke2fs");
    proc::run(
        Command::new(mke2fs)
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-L",
                ROOT_LABEL,
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
            ])
            .arg(part),
    )?;
    Ok(())
}

/// The partition on `disk` labelled PLNODE_ROOT, if the disk has one.
pub fn find_root_partition(sys_block: &Path) -> Option<BlockDevice> {
    blockdev::list(sys_block)
        .into_iter()
        .filter(|d| d.kind == DevKind::Partition && !d.removable)
        .find(|d| blockdev::probe(&d.dev).is_some_and(|fs| fs.label.as_deref() == Some(ROOT_LABEL)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, gib: u64, removable: bool) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            dev: PathBuf::from(format!("/dev/{name}")),
            kind: DevKind::Disk,
            size_bytes: gib << 30,
            removable,
            read_only: false,
            parent: None,
            model: None,
        }
    }

    #[test]
    fn removable_small_and_busy_disks_are_refused_with_reasons() {
        let devices = vec![
            disk("sda", 16, true),
            disk("vda", 1, false),
            BlockDevice {
                kind: DevKind::Cdrom,
                ..disk("sr0", 1, true)
            },
            disk("vdb", 20, false),
        ];
        let none = |_: &str| Vec::new();
        assert_eq!(
            choose(&devices, None, MIN_DISK_BYTES, &none).unwrap().name,
            "vdb"
        );
        let busy = |d: &str| {
            if d == "vdb" {
                vec!["vdb1".to_string()]
            } else {
                Vec::new()
            }
        };
        let e = choose(&devices, None, MIN_DISK_BYTES, &busy)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sda is removable"), "{e}");
        assert!(
            e.contains("vda is too small: 1024 MiB, at least 2048 MiB needed"),
            "{e}"
        );
        assert!(e.contains("vdb has mounted partitions (vdb1)"), "{e}");
        let e = choose(&devices, Some("sda"), MIN_DISK_BYTES, &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("removable"), "{e}");
        assert!(choose(&[], None, MIN_DISK_BYTES, &none)
            .unwrap_err()
            .to_string()
            .contains("no disk found"));
    }

    #[test]
    fn partition_names_follow_the_kernel() {
        assert_eq!(partition_path("vda", 1), PathBuf::from("/dev/vda1"));
        assert_eq!(
            partition_path("nvme0n1", 1),
            PathBuf::from("/dev/nvme0n1p1")
        );
        assert_eq!(
            partition_path("mmcblk0", 2),
            PathBuf::from("/dev/mmcblk0p2")
        );
    }

    #[test]
    fn the_partition_table_is_one_aligned_partition_readable_by_sfdisk() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(64 << 20).unwrap();
        write_partition_table(&img).unwrap();
        let g = gpt::GptConfig::new().writable(false).open(&img).unwrap();
        let parts: Vec<_> = g.partitions().values().collect();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].name, PARTITION_NAME);
        assert_eq!(parts[0].first_lba % 2048, 0);
        assert!(
            parts[0].last_lba > (60 << 20) / 512,
            "{}",
            parts[0].last_lba
        );
        if let Ok(out) = Command::new("sfdisk").arg("--dump").arg(&img).output() {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("label: gpt"), "{text}");
            assert!(text.contains("name=\"PLNODE-ROOT\""), "{text}");
        }
    }
}
