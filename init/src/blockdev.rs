//! Block devices: what disks there are, which are removable, and what file
//! system (and label) each holds, read from the superblocks themselves (the
//! CD has no blkid/udev).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevKind {
    Disk,
    Partition,
    Cdrom,
    /// loop, ram, zram, device-mapper: never candidates for anything.
    Virtual,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name: `vda`, `vda1`, `sr0`.
    pub name: String,
    /// `/dev/NAME`.
    pub dev: PathBuf,
    pub kind: DevKind,
    pub size_bytes: u64,
    /// Removable media or attached by USB (install never goes there).
    pub removable: bool,
    pub read_only: bool,
    /// For a partition, the disk it is on.
    pub parent: Option<String>,
    pub model: Option<String>,
}

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Lists disks and their partitions from `/sys/block` (`sys_block`).
pub fn list(sys_block: &Path) -> Vec<BlockDevice> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return out;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let dir = sys_block.join(&name);
        let kind = if ["loop", "ram", "zram", "dm-", "md", "nbd"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            DevKind::Virtual
        } else if name.starts_with("sr") {
            DevKind::Cdrom
        } else {
            DevKind::Disk
        };
        // The sysfs path shows the bus: a USB disk is removable to us even
        // when it does not say so (many USB SSDs report removable=0).
        let via_usb = std::fs::read_link(&dir)
            .map(|l| l.to_string_lossy().contains("/usb"))
            .unwrap_or(false);
        let removable = read_trim(&dir.join("removable")).as_deref() == Some("1") || via_usb;
        let sectors: u64 = read_trim(&dir.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let disk = BlockDevice {
            name: name.clone(),
            dev: PathBuf::from("/dev").join(&name),
            kind: kind.clone(),
            size_bytes: sectors * 512,
            removable,
            read_only: read_trim(&dir.join("ro")).as_deref() == Some("1"),
            parent: None,
            model: read_trim(&dir.join("device/model")).filter(|m| !m.is_empty()),
        };
        let mut parts = Vec::new();
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.flatten() {
                let cname = child.file_name().to_string_lossy().into_owned();
                if !cname.starts_with(&name) || !child.path().join("partition").exists() {
                    continue;
                }
                let sectors: u64 = read_trim(&child.path().join("size"))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                parts.push(BlockDevice {
                    name: cname.clone(),
                    dev: PathBuf::from("/dev").join(&cname),
                    kind: if kind == DevKind::Virtual {
                        DevKind::Virtual
                    } else {
                        DevKind::Partition
                    },
                    size_bytes: sectors * 512,
                    removable,
                    read_only: disk.read_only,
                    parent: Some(name.clone()),
                    model: None,
                });
            }
        }
        parts.sort_by(|a, b| a.name.cmp(&b.name));
        out.push(disk);
        out.extend(parts);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Ext,
    Vfat,
    Iso9660,
}

impl FsKind {
    /// The name `mount(2)` takes.
    pub fn mount_type(self) -> &'static str {
        match self {
            FsKind::Ext => "ext4",
            FsKind::Vfat => "vfat",
            FsKind::Iso9660 => "iso9660",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    pub kind: FsKind,
    pub label: Option<String>,
}

/// How much of a device the superblock probe reads.
pub const PROBE_BYTES: usize = 0x8000 + 2048;

fn label_from(bytes: &[u8]) -> Option<String> {
    let text: String = bytes
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    let text = text.trim().to_string();
    (!text.is_empty() && text != "NO NAME").then_some(text)
}

/// Recognises ext2/3/4, FAT and ISO 9660 from the first bytes of a device.
pub fn parse_superblock(b: &[u8]) -> Option<FsInfo> {
    // ext: superblock at 1024, magic 0xEF53 at +56, volume name at +120.
    if b.len() >= 1024 + 136 && b[1024 + 56..1024 + 58] == [0x53, 0xEF] {
        return Some(FsInfo {
            kind: FsKind::Ext,
            label: label_from(&b[1024 + 120..1024 + 136]),
        });
    }
    // ISO 9660: primary volume descriptor at 32 KiB, volume id at +40.
    if b.len() >= 0x8000 + 72 && b[0x8000] == 1 && &b[0x8001..0x8006] == b"CD001" {
        return Some(FsInfo {
            kind: FsKind::Iso9660,
            label: label_from(&b[0x8000 + 40..0x8000 + 72]),
        });
    }
    // FAT: boot signature, then the type string tells where the label is.
    if b.len() >= 512 && b[510..512] == [0x55, 0xAA] {
        if &b[82..87] == b"FAT32" {
            return Some(FsInfo {
                kind: FsKind::Vfat,
                label: label_from(&b[71..82]),
            });
        }
        if &b[54..57] == b"FAT" {
            return Some(FsInfo {
                kind: FsKind::Vfat,
                label: label_from(&b[43..54]),
            });
        }
    }
    None
}

/// Reads the start of `dev` and recognises its file system.
pub fn probe(dev: &Path) -> Option<FsInfo> {
    let mut buf = vec![0u8; PROBE_BYTES];
    let mut f = File::open(dev).ok()?;
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(_) => break,
        }
    }
    parse_superblock(&buf[..filled])
}

/// A file system mounted (read-only unless asked) for as long as this lives.
#[derive(Debug)]
pub struct Mounted {
    pub dir: PathBuf,
    pub dev: PathBuf,
}

impl Mounted {
    pub fn new(dev: &Path, dir: &Path, kind: FsKind, read_only: bool) -> anyhow::Result<Mounted> {
        use nix::mount::{mount, MsFlags};
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        // A read-only look must write nothing: ext4 would otherwise replay
        // a journal left by a crash, even on a read-only mount.
        let data = match (read_only, kind) {
            (true, FsKind::Ext) => Some("norecovery"),
            // The kernel's default character set for FAT names (ascii)
            // is a module the CD need not carry; utf8 and cp437 it does.
            (_, FsKind::Vfat) => Some("iocharset=utf8,codepage=437"),
            _ => None,
        };
        if read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(Some(dev), dir, Some(kind.mount_type()), flags, data).with_context(|| {
            format!(
                "mounting {} ({}) on {}",
                dev.display(),
                kind.mount_type(),
                dir.display()
            )
        })?;
        Ok(Mounted {
            dir: dir.to_path_buf(),
            dev: dev.to_path_buf(),
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::empty());
    }
}

/// Whether any partition of `disk` (or the disk itself) is mounted now.
pub fn mounted_parts(disk: &str) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|src| src.strip_prefix("/dev/"))
        .filter(|name| {
            *name == disk
                || (name.starts_with(disk)
                    && name[disk.len()..]
                        .trim_start_matches('p')
                        .chars()
                        .all(|c| c.is_ascii_digit()))
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_labels_are_read() {
        let mut b = vec![0u8; PROBE_BYTES];
        b[1024 + 56] = 0x53;
        b[1024 + 57] = 0xEF;
        b[1024 + 120..1024 + 131].copy_from_slice(b"PLNODE_ROOT");
        assert_eq!(
            parse_superblock(&b),
            Some(FsInfo {
                kind: FsKind::Ext,
                label: Some("PLNODE_ROOT".into())
            })
        );
    }

    #[test]
    fn fat_and_iso_are_recognised() {
        let mut b = vec![0u8; PROBE_BYTES];
        b[510] = 0x55;
        b[511] = 0xAA;
        b[82..90].copy_from_slice(b"FAT32   ");
        b[71..82].copy_from_slice(b"PLNODE     ");
        assert_eq!(
            parse_superblock(&b).unwrap().label.as_deref(),
            Some("PLNODE")
        );
        let mut iso = vec![0u8; PROBE_BYTES];
        iso[0x8000] = 1;
        iso[0x8001..0x8006].copy_from_slice(b"CD001");
        iso[0x8000 + 40..0x8000 + 49].copy_from_slice(b"PLNODE_CD");
        assert_eq!(
            parse_superblock(&iso),
            Some(FsInfo {
                kind: FsKind::Iso9660,
                label: Some("PLNODE_CD".into())
            })
        );
        assert_eq!(parse_superblock(&[0u8; 100]), None);
    }

    #[test]
    fn a_real_ext4_image_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
        let ok = std::process::Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "PLNODE_ROOT"])
            .arg(&img)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("SKIP: mke2fs is not available");
            return;
        }
        assert_eq!(
            probe(&img),
            Some(FsInfo {
                kind: FsKind::Ext,
                label: Some("PLNODE_ROOT".into())
            })
        );
    }

    #[test]
    fn sysfs_listing_finds_disks_partitions_and_removable_media() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        for (name, size, removable) in [
            ("vda", "41943040", "0"),
            ("sdb", "2097152", "1"),
            ("loop0", "0", "0"),
            ("sr0", "30000", "1"),
        ] {
            std::fs::create_dir_all(sys.join(name)).unwrap();
            std::fs::write(sys.join(name).join("size"), size).unwrap();
            std::fs::write(sys.join(name).join("removable"), removable).unwrap();
        }
        std::fs::create_dir_all(sys.join("vda/vda1")).unwrap();
        std::fs::write(sys.join("vda/vda1/partition"), "1").unwrap();
        std::fs::write(sys.join("vda/vda1/size"), "41940000").unwrap();
        let all = list(sys);
        let names: Vec<&str> = all.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["loop0", "sdb", "sr0", "vda", "vda1"]);
        let vda = all.iter().find(|d| d.name == "vda").unwrap();
        assert_eq!(
            (vda.kind.clone(), vda.size_bytes, vda.removable),
            (DevKind::Disk, 20 << 30, false)
        );
        assert!(all.iter().find(|d| d.name == "sdb").unwrap().removable);
        assert_eq!(
            all.iter()
                .find(|d| d.name == "vda1")
                .unwrap()
                .parent
                .as_deref(),
            Some("vda")
        );
        assert_eq!(
            all.iter().find(|d| d.name == "sr0").unwrap().kind,
            DevKind::Cdrom
        );
    }
}
