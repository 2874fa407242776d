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

/// Whether `path` is already a mount point (its device differs from its parent's).
pub fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(parent)) = (std::fs::metadata(path), path.parent()) else {
        return false;
    };
    match std::fs::metadata(parent) {
        Ok(p) => me.dev() != p.dev() || me.ino() == p.ino(),
        Err(_) => false,
    }
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
