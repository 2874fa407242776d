//! Reusing an unchanged package from the running deployment.
//!
//! When a package's signed hash did not change, its extracted tree is
//! already on the disk, in the running deployment. Downloading it again
//! would cost the network; sharing it (hard links) would tie the new
//! deployment to files the running system may change in place (the
//! running root is writable), which would then break the new deployment's
//! check at the CD. So the tree is *copied*, entry by entry from the
//! manifest recorded when it was installed: every file is hashed while it
//! is copied and must match the manifest, which came from the signed
//! package; links, devices, modes and owners come from the manifest too.
//! The result is the tree the signed package would extract to, or an
//! error saying which file differs (then the package is downloaded).

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{mknod, Mode, SFlag};
use pkgsign::install::{verify_tree, EntryKind, Manifest, ManifestEntry};
use pkgsign::verified::{Expected, Mismatch, VerifiedReader};

/// Why a tree could not be reused.
#[derive(Debug, thiserror::Error)]
pub enum ReuseError {
    /// The running deployment's copy no longer matches what was installed.
    #[error("{path} differs from what was installed: {problem}")]
    Changed { path: String, problem: String },
    /// The finished copy does not match the manifest (a bug or a disk
    /// that lost writes: the copy is not used).
    #[error("the copy in {} does not match the manifest", path.display())]
    CopyDiffers {
        path: PathBuf,
        #[source]
        source: pkgsign::install::TreeError,
    },
    /// Writing the copy failed (for example, the disk is full).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ReuseError + '_ {
    move |source| ReuseError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn nix_err(path: &Path) -> impl FnOnce(nix::Error) -> ReuseError + '_ {
    move |e| ReuseError::Io {
        path: path.to_path_buf(),
        source: io::Error::from(e),
    }
}

/// Copies the tree at `from` into the new directory `to` as `manifest`
/// describes it, checking every file's content on the way. Returns the
/// bytes of file content copied. `to` must not exist; on error it may be
/// left partly written (the caller removes its staging directory).
pub fn copy_installed_tree(from: &Path, to: &Path, manifest: &Manifest) -> Result<u64, ReuseError> {
    let root_mode = fs::symlink_metadata(from)
        .map_err(io_err(from))?
        .permissions()
        .mode();
    fs::create_dir(to).map_err(io_err(to))?;
    let as_root = nix::unistd::geteuid().is_root();
    // Source inode → first copy, so hard links stay hard links.
    let mut linked: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs = Vec::new();
    let mut copied = 0u64;
    // BTreeMap order puts every directory before what it contains.
    for (rel, entry) in &manifest.entries {
        let src = from.join(rel);
        let dst = to.join(rel);
        let changed = |problem: String| ReuseError::Changed {
            path: rel.clone(),
            problem,
        };
        let meta = match fs::symlink_metadata(&src) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(changed("missing".into())),
            Err(e) => return Err(io_err(&src)(e)),
        };
        match entry.kind {
            EntryKind::Dir => {
                if !meta.is_dir() {
                    return Err(changed("no longer a directory".into()));
                }
                fs::create_dir(&dst).map_err(io_err(&dst))?;
                dirs.push((dst, entry));
                continue;
            }
            EntryKind::File => {
                if !meta.is_file() {
                    return Err(changed("no longer a regular file".into()));
                }
                let key = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = linked.get(&key) {
                        fs::hard_link(first, &dst).map_err(io_err(&dst))?;
                        continue;
                    }
                    linked.insert(key, dst.clone());
                }
                copied += copy_file(&src, &dst, entry).map_err(|e| match e {
                    CopyError::Changed(problem) => changed(problem),
                    CopyError::Io(path, source) => ReuseError::Io { path, source },
                })?;
            }
            EntryKind::Symlink => {
                let target =
                    fs::read_link(&src).map_err(|_| changed("no longer a symlink".into()))?;
                if entry.link.as_deref().map(Path::new) != Some(target.as_path()) {
                    return Err(changed(format!("points at {}", target.display())));
                }
                std::os::unix::fs::symlink(&target, &dst).map_err(io_err(&dst))?;
                if let (true, Some((uid, gid))) = (as_root, entry.owner) {
                    std::os::unix::fs::lchown(&dst, Some(uid), Some(gid)).map_err(io_err(&dst))?;
                }
                continue;
            }
            EntryKind::Char | EntryKind::Block | EntryKind::Fifo => {
                let kind = match entry.kind {
                    EntryKind::Char => SFlag::S_IFCHR,
                    EntryKind::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let rdev = entry.rdev.unwrap_or(0);
                mknod(&dst, kind, Mode::from_bits_truncate(0o600), rdev).map_err(nix_err(&dst))?;
            }
        }
        set_owner_and_mode(&dst, entry, as_root)?;
    }
    // Modes last: a read-only directory must still take its children.
    for (dst, entry) in dirs.iter().rev() {
        set_owner_and_mode(dst, entry, as_root)?;
    }
    fs::set_permissions(to, fs::Permissions::from_mode(root_mode & 0o7777)).map_err(io_err(to))?;
    verify_tree(to, manifest, false).map_err(|source| ReuseError::CopyDiffers {
        path: to.to_path_buf(),
        source,
    })?;
    Ok(copied)
}

/// Owner first: changing it clears setuid bits, which the mode then sets.
fn set_owner_and_mode(path: &Path, entry: &ManifestEntry, as_root: bool) -> Result<(), ReuseError> {
    if let (true, Some((uid, gid))) = (as_root, entry.owner) {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_err(path))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(entry.mode)).map_err(io_err(path))
}

enum CopyError {
    Changed(String),
    Io(PathBuf, io::Error),
}

/// Copies one file through a [`VerifiedReader`]: the content must be the
/// manifest's (size and SHA-256, recorded from the signed package).
fn copy_file(src: &Path, dst: &Path, entry: &ManifestEntry) -> Result<u64, CopyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e| CopyError::Io(path, e)
    };
    let Some(sha256) = entry.sha256 else {
        return Err(CopyError::Changed("the manifest has no hash for it".into()));
    };
    let input = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .map_err(io(src))?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(io(dst))?;
    let expected = Expected::new(src.display().to_string(), entry.size, sha256);
    let mut verified = VerifiedReader::new(input, expected);
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match verified.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                return Err(match Mismatch::take(e) {
                    Ok(Mismatch::WrongHash { .. }) => {
                        CopyError::Changed("content changed since it was installed".into())
                    }
                    Ok(Mismatch::WrongLength {
                        found, expected, ..
                    }) => CopyError::Changed(format!("{found} bytes, installed {expected}")),
                    Ok(Mismatch::TooLong { expected, .. }) => {
                        CopyError::Changed(format!("longer than the installed {expected} bytes"))
                    }
                    Err(e) => CopyError::Io(src.to_path_buf(), e),
                })
            }
        };
        output.write_all(&buf[..n]).map_err(io(dst))?;
        total += n as u64;
    }
    Ok(total)
}
