//! Handing over into the installed kernel when it is not the CD's.
//!
//! A kernel can only load modules built for it, so a deployment whose
//! kernel differs from the CD's cannot simply be `switch_root`ed into: the
//! CD loads that kernel with `kexec_file_load(2)` instead. Its initramfs is
//! the CD's own (the running root file system, written out again as a newc
//! cpio: the init, the trust roots, the tools), with the CD's modules left
//! out and the deployment's modules added, plus the hand-over note. The
//! command line gains `plnode.handover=<id>`, which tells the init in the
//! new kernel to load its drivers, mount the disk and `switch_root` into
//! that deployment at once: the deployment was checked before the kexec.
//!
//! Loading is reversible (nothing happens until `reboot(RB_KEXEC)`), so a
//! kernel that refuses the image leaves the CD free to hand over with its
//! own kernel instead.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};

use crate::handover_note::Handover;

/// Where the hand-over note sits in the kexec initramfs.
pub const KEXEC_NOTE: &str = "/etc/plnode/kexec-handover.json";
/// Where the initramfs for the new kernel is assembled (tmpfs).
const INITRD_PATH: &str = "/run/plnode/kexec-initrd.img";

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// A newc cpio being written: each entry gets its own inode number.
struct Cpio<W: Write> {
    out: W,
    next_ino: u32,
    bytes: u64,
}

impl<W: Write> Cpio<W> {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> anyhow::Result<()> {
        self.next_ino += 1;
        let size = u32::try_from(data.len()).map_err(|_| anyhow!("{name}: too large for cpio"))?;
        let mut w = cpio::newc::Builder::new(name)
            .ino(self.next_ino)
            .mode(mode)
            .nlink(if mode & S_IFDIR != 0 { 2 } else { 1 })
            .write(&mut self.out, size);
        w.write_all(data)
            .with_context(|| format!("writing {name} into the initramfs"))?;
        w.finish()
            .with_context(|| format!("writing {name} into the initramfs"))?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Streams the file at `path` (`len` bytes) into the archive.
    fn file(&mut self, name: &str, mode: u32, path: &Path, len: u64) -> anyhow::Result<()> {
        self.next_ino += 1;
        let size = u32::try_from(len).map_err(|_| anyhow!("{name}: too large for cpio"))?;
        let mut source = File::open(path)
            .with_context(|| format!("reading {}", path.display()))?
            .take(len);
        let mut w = cpio::newc::Builder::new(name)
            .ino(self.next_ino)
            .mode(mode)
            .nlink(1)
            .write(&mut self.out, size);
        let copied = std::io::copy(&mut source, &mut w)
            .with_context(|| format!("copying {} into the initramfs", path.display()))?;
        anyhow::ensure!(copied == len, "{} shrank while being read", path.display());
        w.finish()
            .with_context(|| format!("writing {name} into the initramfs"))?;
        self.bytes += len;
        Ok(())
    }

    fn char_device(&mut self, name: &str, mode: u32, major: u32, minor: u32) -> anyhow::Result<()> {
        self.next_ino += 1;
        cpio::newc::Builder::new(name)
            .ino(self.next_ino)
            .mode(S_IFCHR | mode)
            .rdev_major(major)
            .rdev_minor(minor)
            .write(&mut self.out, 0)
            .finish()
            .with_context(|| format!("writing {name} into the initramfs"))?;
        Ok(())
    }

    /// Copies the tree at `dir` to `name` in the archive, staying on the
    /// file system `dev` (other mounts appear as empty directories) and
    /// leaving out `skip`.
    fn tree(&mut self, dir: &Path, name: &str, dev: u64, skip: &[PathBuf]) -> anyhow::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            if skip.contains(&path) {
                continue;
            }
            let child = if name.is_empty() {
                e.file_name().to_string_lossy().into_owned()
            } else {
                format!("{name}/{}", e.file_name().to_string_lossy())
            };
            let meta = std::fs::symlink_metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let perm = meta.permissions().mode() & 0o7777;
            let kind = meta.file_type();
            if kind.is_dir() {
                self.entry(&child, S_IFDIR | perm, &[])?;
                if meta.dev() == dev {
                    self.tree(&path, &child, dev, skip)?;
                }
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path)
                    .with_context(|| format!("reading the link {}", path.display()))?;
                self.entry(&child, S_IFLNK | 0o777, target.as_os_str().as_bytes())?;
            } else if kind.is_file() {
                self.file(&child, S_IFREG | perm, &path, meta.len())?;
            }
            // Device nodes, FIFOs and sockets of the running root are not
            // needed: the new kernel's init mounts devtmpfs.
        }
        Ok(())
    }
}

/// Writes the initramfs for `release` (the deployment's kernel, whose
/// modules are under `kernel_dir/lib/modules/<release>`) to `out`.
/// Returns its size in bytes.
pub fn write_initramfs(
    out: &Path,
    root: &Path,
    kernel_dir: &Path,
    release: &str,
    note: &Handover,
) -> anyhow::Result<u64> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cpio = Cpio {
        out: BufWriter::new(file),
        next_ino: 0,
        bytes: 0,
    };
    let dev = std::fs::metadata(root)
        .with_context(|| format!("reading {}", root.display()))?
        .dev();
    // The kernel opens /dev/console before init runs.
    cpio.entry("dev", S_IFDIR | 0o755, &[])?;
    cpio.char_device("dev/console", 0o600, 5, 1)?;
    let skip = vec![
        root.join("lib/modules"),
        root.join("sysroot"),
        root.join("dev"),
        out.to_path_buf(),
    ];
    cpio.tree(root, "", dev, &skip)?;
    cpio.entry("lib/modules", S_IFDIR | 0o755, &[])?;
    let modules = kernel_dir.join("lib/modules").join(release);
    let target = format!("lib/modules/{release}");
    cpio.entry(&target, S_IFDIR | 0o755, &[])?;
    let modules_dev = std::fs::metadata(&modules)
        .with_context(|| format!("reading {}", modules.display()))?
        .dev();
    cpio.tree(&modules, &target, modules_dev, &[])
        .context("adding the deployment's kernel modules")?;
    cpio.entry("etc/plnode", S_IFDIR | 0o755, &[])?;
    cpio.entry(
        KEXEC_NOTE.trim_start_matches('/'),
        S_IFREG | 0o644,
        &serde_json::to_vec_pretty(note)?,
    )?;
    cpio::newc::trailer(&mut cpio.out).context("finishing the initramfs")?;
    let mut out_file = cpio
        .out
        .into_inner()
        .map_err(|e| e.into_error())
        .context("writing the initramfs")?;
    out_file.flush()?;
    Ok(cpio.bytes)
}

/// Loads `image` with a fresh initramfs and `cmdline` as the kernel to
/// run at the next `reboot(RB_KEXEC)`. Returns the initramfs's size.
pub fn load(
    image: &Path,
    kernel_dir: &Path,
    release: &str,
    note: &Handover,
    cmdline: &str,
) -> anyhow::Result<u64> {
    std::fs::create_dir_all("/run/plnode").context("creating /run/plnode")?;
    let initrd = Path::new(INITRD_PATH);
    let size = write_initramfs(initrd, Path::new("/"), kernel_dir, release, note)?;
    let kernel = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let initrd_file =
        File::open(initrd).with_context(|| format!("opening {}", initrd.display()))?;
    let cmdline = std::ffi::CString::new(cmdline).context("a NUL in the kernel command line")?;
    // SAFETY: the descriptors are open, the command line is NUL-terminated
    // and its length includes the NUL, as the system call wants.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel.as_raw_fd(),
            initrd_file.as_raw_fd(),
            cmdline.as_bytes_with_nul().len() as libc::c_ulong,
            cmdline.as_ptr(),
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        let _ = std::fs::remove_file(initrd);
        return Err(anyhow!(
            "kexec_file_load of {}: {error}{}",
            image.display(),
            if error.raw_os_error() == Some(libc::EKEYREJECTED)
                || error.raw_os_error() == Some(libc::EPERM)
            {
                " (a locked-down kernel, e.g. under Secure Boot, loads only signed kernels)"
            } else {
                ""
            }
        ));
    }
    // The kernel has its own copy now.
    let _ = std::fs::remove_file(initrd);
    Ok(size)
}

/// The running kernel's command line for the next one: without an earlier
/// hand-over, with `plnode.handover=<deployment>`.
pub fn next_cmdline(current: &str, deployment: &str) -> String {
    let mut words: Vec<&str> = current
        .split_whitespace()
        .filter(|w| !w.starts_with("plnode.handover="))
        .collect();
    let handover = format!("plnode.handover={deployment}");
    words.push(&handover);
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_command_line_names_the_deployment_once() {
        assert_eq!(
            next_cmdline(
                "console=ttyS0,115200n8 plnode.handover=old panic=-1\n",
                "2026.11.2-abcd0123"
            ),
            "console=ttyS0,115200n8 panic=-1 plnode.handover=2026.11.2-abcd0123"
        );
    }

    #[test]
    fn the_initramfs_holds_the_root_the_new_modules_and_the_note() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("sbin")).unwrap();
        std::fs::write(r.join("sbin/init"), b"\x7fELF init").unwrap();
        std::fs::set_permissions(r.join("sbin/init"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("sbin/init", r.join("init")).unwrap();
        std::fs::create_dir_all(r.join("lib/modules/6.1.0-cd/kernel")).unwrap();
        std::fs::write(r.join("lib/modules/6.1.0-cd/kernel/old.ko"), b"old").unwrap();
        let kernel = tempfile::tempdir().unwrap();
        let m = kernel.path().join("lib/modules/6.1.0-new");
        std::fs::create_dir_all(m.join("kernel")).unwrap();
        std::fs::write(m.join("kernel/new.ko"), b"new").unwrap();
        std::fs::write(m.join("modules.dep"), b"kernel/new.ko:\n").unwrap();
        let note = Handover {
            deployment: "2026.11.2-abcd0123".into(),
            os_version: "2026.11.2".into(),
            trial_boots_left: Some(2),
            cd_version: "cd".into(),
            kernel_release: "6.1.0-new".into(),
            server_urls: vec![],
            clock_floor: config::Timestamp::now(),
        };
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("initrd.img");
        write_initramfs(&out, r, kernel.path(), "6.1.0-new", &note).unwrap();

        let bytes = std::fs::read(&out).unwrap();
        let mut rest: &[u8] = &bytes;
        let mut found = std::collections::BTreeMap::new();
        loop {
            let mut reader = cpio::NewcReader::new(rest).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            let name = reader.entry().name().to_string();
            let mode = reader.entry().mode();
            let mut data = Vec::new();
            reader.read_to_end(&mut data).unwrap();
            found.insert(name, (mode, data));
            rest = reader.finish().unwrap();
        }
        assert_eq!(
            found["sbin/init"],
            (S_IFREG | 0o755, b"\x7fELF init".to_vec())
        );
        assert_eq!(found["init"], (S_IFLNK | 0o777, b"sbin/init".to_vec()));
        assert_eq!(found["dev/console"].0, S_IFCHR | 0o600);
        assert_eq!(found["lib/modules/6.1.0-new/kernel/new.ko"].1, b"new");
        assert!(found.contains_key("lib/modules/6.1.0-new/modules.dep"));
        assert!(
            !found.keys().any(|k| k.contains("6.1.0-cd")),
            "the CD's modules are useless to the new kernel"
        );
        let read_back: Handover =
            serde_json::from_slice(&found[KEXEC_NOTE.trim_start_matches('/')].1).unwrap();
        assert_eq!(read_back, note);
    }
}
