//! Handing the machine over to the installed OS.
//!
//! The installed root is `deployments/<id>/root` on the node's partition.
//! It becomes `/` by `switch_root`: bind it on `/sysroot`, put the
//! deployment's kernel modules on `/lib/modules` and the whole partition on
//! `/plnode`, the partition's `state/root` and `state/var` on `/root` and
//! `/var`, make the deployment read-only, move `/dev`, `/proc`, `/sys` and
//! `/run` over, free the initramfs, make `/sysroot` the root and exec its
//! `/sbin/init`.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use nix::mount::{mount, MsFlags};

use crate::deploy::{DeploymentRecord, Disk};
use crate::handover_note::{Handover, HANDOVER_FILE};
use crate::{console, pid1};

/// Where the new root is assembled.
pub const SYSROOT: &str = "/sysroot";
/// Where the installed root finds the node's partition.
pub const PARTITION_MOUNT: &str = "plnode";

fn bind(src: &Path, dst: &Path) -> anyhow::Result<()> {
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .with_context(|| format!("binding {} on {}", src.display(), dst.display()))
}

fn remount_read_only(path: &Path) -> anyhow::Result<()> {
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .with_context(|| format!("making {} read-only", path.display()))
}

fn move_mount(src: &Path, dst: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    mount(Some(src), dst, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .with_context(|| format!("moving {} to {}", src.display(), dst.display()))
}

/// The module directory names (kernel releases) in a kernel package.
pub fn kernel_releases(kernel_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(kernel_dir.join("lib/modules"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Deletes the initramfs's files (they live in RAM) without crossing into
/// other file systems, as `switch_root` does.
fn free_initramfs(root_dev: u64, skip: &Path) {
    fn walk(dir: &Path, root_dev: u64, skip: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path == skip {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if meta.dev() != root_dev {
                    continue;
                }
                walk(&path, root_dev, skip);
                let _ = std::fs::remove_dir(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    walk(Path::new("/"), root_dev, skip);
}

/// Hands over to deployment `record` on `disk` (mounted read-write at
/// `disk.root`). Returns only on failure, before anything irreversible
/// when it can.
pub fn switch_root(disk: &Disk, record: &DeploymentRecord, handover: &Handover) -> anyhow::Error {
    match try_switch_root(disk, record, handover) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// Places in the root the running system writes to (staff keys in
/// /root/.ssh, logs and scratch files under /var), with the directories
/// each needs and their modes. They live on the node's partition under
/// `state/`, bound over the deployment's own: the deployment stays exactly
/// as installed (the CD checks it against its manifests at every boot), and
/// what is written survives updates.
const PERSISTENT: &[(&str, &[(&str, u32)])] = &[
    ("root", &[("", 0o700)]),
    ("var", &[("", 0o755), ("log", 0o755), ("tmp", 0o1777)]),
];

/// `state/DIR` on the partition, made with `subdirs` when missing.
fn persistent_dir(disk: &Disk, dir: &str, subdirs: &[(&str, u32)]) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let state = disk.state_dir().join(dir);
    for (sub, mode) in subdirs {
        let path = state.join(sub);
        if !path.is_dir() {
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
                .with_context(|| format!("setting the mode of {}", path.display()))?;
        }
    }
    Ok(state)
}

fn try_switch_root(
    disk: &Disk,
    record: &DeploymentRecord,
    handover: &Handover,
) -> anyhow::Result<std::convert::Infallible> {
    let deployment = disk.deployment_path(&record.id);
    let root = deployment.join("root");
    let init = root.join("sbin/init");
    // Checked before anything is moved: a root without an init would strand us.
    let init_meta = std::fs::symlink_metadata(&init)
        .with_context(|| format!("{} has no /sbin/init", root.display()))?;
    anyhow::ensure!(
        init_meta.is_file() || init_meta.file_type().is_symlink(),
        "{} is not a program",
        init.display()
    );

    let sysroot = PathBuf::from(SYSROOT);
    std::fs::create_dir_all(&sysroot).context("creating /sysroot")?;
    bind(&root, &sysroot)?;
    let modules = deployment.join("kernel/lib/modules");
    let target_modules = sysroot.join("lib/modules");
    if modules.is_dir() && target_modules.is_dir() {
        bind(&modules, &target_modules)?;
    }
    for (dir, subdirs) in PERSISTENT {
        let target = sysroot.join(dir);
        if target.is_dir() {
            let state = persistent_dir(disk, dir, subdirs)?;
            bind(&state, &target)?;
        }
    }
    let partition = sysroot.join(PARTITION_MOUNT);
    if partition.is_dir() {
        bind(&disk.root, &partition)?;
    } else {
        tracing::warn!("the installed root has no /{PARTITION_MOUNT}: the node's partition will not be visible to it");
    }
    // The deployment runs read-only: what the system writes goes to /run
    // and /tmp (RAM), /root and /var (state/ on the partition) and /plnode,
    // so a stray write fails with EROFS instead of failing the next boot's
    // check of the deployment.
    remount_read_only(&sysroot)?;
    if pid1::is_mount_point(&target_modules) {
        remount_read_only(&target_modules)?;
    }

    std::fs::create_dir_all("/run/plnode").context("creating /run/plnode")?;
    std::fs::write(HANDOVER_FILE, serde_json::to_vec_pretty(handover)?)
        .context("writing the hand-over note")?;
    console::step(
        "boot/handover",
        console::StepStatus::Ok,
        &format!(
            "switch_root deployment={} os={}",
            record.id, record.os_version
        ),
    );
    console::detach_log_file();

    for m in ["/dev", "/proc", "/sys", "/run"] {
        move_mount(Path::new(m), &sysroot.join(m.trim_start_matches('/')))?;
    }
    let root_dev = std::fs::metadata("/").map(|m| m.dev()).unwrap_or(0);
    std::env::set_current_dir(&sysroot).context("entering /sysroot")?;
    free_initramfs(root_dev, &sysroot);
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("moving /sysroot to /")?;
    nix::unistd::chroot(".").context("chroot into the new root")?;
    std::env::set_current_dir("/").context("entering the new root")?;

    let prog = c"/sbin/init".to_owned();
    let args = [c"/sbin/init".to_owned(), c"supervisor".to_owned()];
    let env: [CString; 0] = [];
    match nix::unistd::execve(&prog, &args, &env) {
        Ok(never) => match never {},
        Err(e) => Err(anyhow!("exec of the installed /sbin/init failed: {e} (the old root is gone; only a reboot helps now)")),
    }
}
