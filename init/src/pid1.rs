//! What only PID 1 does: mount the kernel's file systems, keep the process
//! table clean, and power the machine off or reboot it.

use std::path::Path;

use anyhow::Context as _;
use nix::mount::{mount, MsFlags};

use crate::console;

/// A file system to mount early.
struct Early {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

const EARLY: &[Early] = &[
    Early {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOEXEC,
        data: None,
    },
    Early {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOEXEC,
        data: None,
    },
    // CONFIG_DEVTMPFS_MOUNT is off in Debian's kernel: /dev is ours to mount.
    Early {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    Early {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("gid=5,mode=620,ptmxmode=000"),
    },
    Early {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
    Early {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
];

/// Whether `path` is a mount point. Bind mounts of a directory on the same
/// file system look like plain directories to `stat`, so the kernel's
/// mount table decides; before /proc is mounted, a device change does.
pub fn is_mount_point(path: &Path) -> bool {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(table) => mount_points(&table).any(|m| Path::new(&m) == target),
        Err(_) => {
            use std::os::unix::fs::MetadataExt;
            let (Ok(me), Some(parent)) = (std::fs::metadata(path), path.parent()) else {
                return false;
            };
            match std::fs::metadata(parent) {
                Ok(p) => me.dev() != p.dev() || me.ino() == p.ino(),
                Err(_) => false,
            }
        }
    }
}

/// The mount points listed in a `/proc/self/mountinfo` text (field 5,
/// with the kernel's octal escapes for space, tab, newline and backslash).
pub fn mount_points(mountinfo: &str) -> impl Iterator<Item = String> + '_ {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_field)
}

fn unescape_mount_field(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(b as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Mounts proc, sys, dev, dev/pts, run and tmp (each once).
pub fn mount_early() -> anyhow::Result<()> {
    for m in EARLY {
        let target = Path::new(m.target);
        std::fs::create_dir_all(target).with_context(|| format!("creating {}", m.target))?;
        if is_mount_point(target) {
            continue;
        }
        mount(Some(m.source), target, Some(m.fstype), m.flags, m.data)
            .with_context(|| format!("mounting {} on {}", m.fstype, m.target))?;
    }
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
    let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    Ok(())
}

/// Prints a panic as a marker and to the log instead of letting it vanish;
/// the boot manager catches the unwind and falls to `debug`.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        console::line(&format!("@panic {message}{location}@"));
    }));
}

/// How to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    PowerOff,
    Reboot,
}

/// Syncs and powers off or reboots. Only returns if the kernel refuses.
pub fn shutdown(how: Shutdown) -> anyhow::Error {
    nix::unistd::sync();
    let cmd = match how {
        Shutdown::PowerOff => nix::sys::reboot::RebootMode::RB_POWER_OFF,
        Shutdown::Reboot => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
    };
    match nix::sys::reboot::reboot(cmd) {
        Ok(never) => match never {},
        Err(e) => anyhow::anyhow!("the kernel refused to {how:?}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_come_from_mountinfo_with_escapes() {
        let table = "22 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n\
                     30 22 254:1 /deployments/x/root /sysroot rw - ext4 /dev/vda1 rw\n\
                     31 22 0:5 / /mnt/my\\040disk rw - tmpfs tmpfs rw\n";
        let points: Vec<String> = mount_points(table).collect();
        assert_eq!(points, ["/", "/sysroot", "/mnt/my disk"]);
    }

    #[test]
    fn this_machine_has_its_root_and_proc_mounted() {
        assert!(is_mount_point(Path::new("/")));
        assert!(is_mount_point(Path::new("/proc")));
        assert!(!is_mount_point(Path::new("/proc/self")));
    }
}
