//! The slivers' file system: where each sliver's writable layer (overlayfs
//! upper and work directories) lives, and its disk quota.
//!
//! On a node it is an ext4 image file on the node partition, made with
//! project quotas (`mke2fs -t ext4 -O quota,project -E quotatype=prjquota`)
//! and loop-mounted with `prjquota`; on a build host it may be a plain
//! directory. Each sliver's directory `<fs>/<slice>/` is in the sliver's
//! own ext4 project (`FS_XFLAG_PROJINHERIT`), so `upper/` and `work/`
//! below it, and everything the sliver writes, count against one quota.
//! Both must be in the same project: ext4 refuses a rename between
//! directories of different projects, and overlayfs renames from `work/`
//! into `upper/`.
//!
//! Whether the quota binds the sliver's root depends on who mounts the
//! overlay: see [`crate::inside`].

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use config::units::ByteSize;

use crate::ids::IdRange;
use crate::name::SliceName;
use crate::sys;

/// Where the slivers' writable layers go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliversFs {
    /// A directory (build hosts: quotas only if it is a project-quota ext4).
    Dir(PathBuf),
    /// An ext4 image file, made when missing and loop-mounted at `mount_point`.
    Image {
        /// The image file.
        image: PathBuf,
        /// Its size when it has to be made (a sparse file).
        size: ByteSize,
        /// Where it is mounted.
        mount_point: PathBuf,
    },
}

impl SliversFs {
    /// The directory holding the slivers' directories.
    pub fn root(&self) -> &Path {
        match self {
            SliversFs::Dir(dir) => dir,
            SliversFs::Image { mount_point, .. } => mount_point,
        }
    }
}

/// What went wrong with the slivers' file system.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
    /// `mke2fs` failed or is missing.
    #[error("making the slivers' file system {}: {reason}", image.display())]
    Mkfs {
        /// The image.
        image: PathBuf,
        /// Why.
        reason: String,
    },
    /// Quotas are not available and were required.
    #[error(transparent)]
    Quota(#[from] QuotaUnavailable),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Why a disk quota is not enforced: a typed condition the caller reports
/// (and refuses to go on with, on a node).
#[derive(Debug, thiserror::Error)]
#[error("disk quota not enforced: {}: {reason}", fs.display())]
pub struct QuotaUnavailable {
    /// The slivers' file system.
    pub fs: PathBuf,
    /// Why.
    pub reason: String,
    /// The system's error, when there was one.
    #[source]
    pub source: Option<io::Error>,
}

/// Makes the image when missing and mounts it (when it is not mounted
/// already); for a directory, checks it exists.
pub fn prepare(fs_spec: &SliversFs) -> Result<(), StorageError> {
    match fs_spec {
        SliversFs::Dir(dir) => {
            let meta = fs::metadata(dir).map_err(io_err("reading", dir))?;
            if !meta.is_dir() {
                return Err(io_err("using", dir)(io::Error::other("not a directory")));
            }
            Ok(())
        }
        SliversFs::Image {
            image,
            size,
            mount_point,
        } => {
            if is_mount_point(mount_point)? {
                return Ok(());
            }
            if !image.exists() {
                make_image(image, *size)?;
            }
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(mount_point)
                .map_err(io_err("making", mount_point))?;
            mount_image(image, mount_point)
        }
    }
}

fn is_mount_point(path: &Path) -> Result<bool, StorageError> {
    let mountinfo = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(mountinfo).map_err(io_err("reading", mountinfo))?;
    let Ok(canonical) = fs::canonicalize(path) else {
        return Ok(false);
    };
    let wanted = canonical.to_string_lossy();
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape_mountinfo(m) == wanted))
}

/// Undoes the octal escapes (`\040` for a space) of `/proc/self/mountinfo`.
pub fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let octal = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok());
            if let Some(v) = octal {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn make_image(image: &Path, size: ByteSize) -> Result<(), StorageError> {
    // Made beside the target and renamed into place, so a crash never
    // leaves a half-made image that would be mounted next time.
    let tmp = floor::durable::temp_path_in(floor::durable::parent_of(image), ".img");
    let result = (|| {
        let file = fs::File::create(&tmp).map_err(io_err("making", &tmp))?;
        file.set_len(size.bytes()).map_err(io_err("sizing", &tmp))?;
        drop(file);
        let out = Command::new("mke2fs")
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-O",
                "quota,project",
                "-E",
                "quotatype=prjquota",
                "-L",
                "PLNODE_SLIVERS",
            ])
            .arg(&tmp)
            .output()
            .map_err(|e| StorageError::Mkfs {
                image: image.to_path_buf(),
                reason: format!("running mke2fs (e2fsprogs): {e}"),
            })?;
        if !out.status.success() {
            return Err(StorageError::Mkfs {
                image: image.to_path_buf(),
                reason: format!(
                    "mke2fs failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        floor::durable::rename(&tmp, image).map_err(|e| StorageError::Io {
            what: "renaming",
            path: image.to_path_buf(),
            source: e.into(),
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn mount_image(image: &Path, mount_point: &Path) -> Result<(), StorageError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io_err("opening", image))?;
    let (device, _keep) =
        sys::attach_loop(file.as_fd()).map_err(io_err("attaching a loop device to", image))?;
    nix::mount::mount(
        Some(device.as_str()),
        mount_point,
        Some("ext4"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some("prjquota"),
    )
    .map_err(|e| StorageError::Io {
        what: "mounting",
        path: mount_point.to_path_buf(),
        source: e.into(),
    })
}

/// A sliver's directories on the slivers' file system.
#[derive(Debug, Clone)]
pub struct SliverDirs {
    /// `<fs>/<slice>`: in the sliver's quota project.
    pub top: PathBuf,
    /// The overlay's upper directory.
    pub upper: PathBuf,
    /// The overlay's work directory.
    pub work: PathBuf,
}

impl SliverDirs {
    /// The directories of `slice` under `root`.
    pub fn new(root: &Path, slice: &SliceName) -> SliverDirs {
        let top = root.join(slice.as_str());
        SliverDirs {
            upper: top.join("upper"),
            work: top.join("work"),
            top,
        }
    }

    /// Makes the directories: `top` (root's, 0755, put into the sliver's
    /// quota project), `upper` and `work` (owned by the sliver's root, so
    /// the overlay it mounts can write there). Then sets the quota.
    /// Returns why the quota is not enforced, when it is not.
    pub fn create(
        &self,
        range: &IdRange,
        disk: u64,
    ) -> Result<Option<QuotaUnavailable>, StorageError> {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&self.top)
            .map_err(io_err("making", &self.top))?;
        let quota = self.set_quota(range, disk);
        for dir in [&self.upper, &self.work] {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(dir)
                .map_err(io_err("making", dir))?;
            std::os::unix::fs::chown(dir, Some(range.first), Some(range.first))
                .map_err(io_err("giving to the sliver's root", dir))?;
        }
        // The upper directory is the sliver's `/`: 0755 like any root.
        fs::set_permissions(&self.upper, fs::Permissions::from_mode(0o755))
            .map_err(io_err("setting the mode of", &self.upper))?;
        Ok(quota.err())
    }

    /// Puts `top` into the sliver's project and sets the project's limits
    /// (blocks, and one inode per 2 KiB so a sliver cannot use up the
    /// file system's inodes with empty files).
    pub fn set_quota(&self, range: &IdRange, disk: u64) -> Result<(), QuotaUnavailable> {
        let unavailable = |reason: &str, source: io::Error| QuotaUnavailable {
            fs: self.top.clone(),
            reason: reason.to_string(),
            source: Some(source),
        };
        let dir = fs::File::open(&self.top).map_err(|e| unavailable("opening", e))?;
        sys::project_quota_info(dir.as_fd())
            .map_err(|e| unavailable("no project quota on this file system (ext4 with -O quota,project, mounted with prjquota, and the quota_v2 module)", e))?;
        sys::set_project(dir.as_fd(), range.project_id())
            .map_err(|e| unavailable("setting the directory's project", e))?;
        let kib = disk.div_ceil(1024);
        let inodes = (disk / 2048).max(1024);
        sys::set_project_quota(dir.as_fd(), range.project_id(), kib, inodes)
            .map_err(|e| unavailable("setting the project's limits", e))?;
        Ok(())
    }

    /// Bytes in use (from the quota when there is one, else by walking
    /// the upper directory).
    pub fn usage(&self, range: &IdRange) -> u64 {
        if let Ok(dir) = fs::File::open(&self.top) {
            if let Ok(q) = sys::get_project_quota(dir.as_fd(), range.project_id()) {
                return q.curspace;
            }
        }
        disk_usage(&self.top)
    }

    /// Removes everything (nothing is followed through symlinks) and lifts
    /// the project's limits.
    pub fn remove(&self, range: &IdRange) -> Result<(), StorageError> {
        if let Ok(dir) = fs::File::open(&self.top) {
            // Zero limits: the project id is free for the range's next owner.
            let _ = sys::set_project_quota(dir.as_fd(), range.project_id(), 0, 0);
        }
        match fs::remove_dir_all(&self.top) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &self.top)(e)),
        }
    }
}

/// Allocated bytes under `path` (like `du`), not following symlinks.
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                total += disk_usage(&entry.path());
            }
        }
    }
    total
}
