//! Staging directories beside the destination and the atomic swap into place.

use std::ffi::{CString, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use floor::durable::sync_dir;

const STAGING_MARK: &str = ".staging-";

/// A private directory `DEST.staging-<pid>-<random>` on DEST's file
/// system. Removed on drop unless it was swapped into place.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    keep: bool,
}

fn staging_prefix(dest: &Path) -> Option<OsString> {
    let mut name = dest.file_name()?.to_owned();
    name.push(STAGING_MARK);
    Some(name)
}

impl Staging {
    pub fn create(dest: &Path) -> io::Result<Staging> {
        let prefix = staging_prefix(dest).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "destination has no file name")
        })?;
        let parent = parent_of(dest);
        if !parent.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("directory {} does not exist", parent.display()),
            ));
        }
        let random = getrandom::u64().map_err(|e| io::Error::other(e.to_string()))?;
        let mut name = prefix;
        name.push(format!("{}-{random:016x}", std::process::id()));
        let path = parent.join(name);
        fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Staging { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the staged tree to `dest` atomically: `renameat2(RENAME_EXCHANGE)`
    /// when `dest` exists (then the old tree is removed), else a rename that
    /// refuses to replace anything. After a crash at any instant `dest` is
    /// either the old or the new tree.
    pub fn commit(mut self, dest: &Path) -> io::Result<()> {
        let parent = parent_of(dest);
        match fs::symlink_metadata(dest) {
            Ok(meta) if meta.file_type().is_dir() => {
                rename_exchange(&self.path, dest)?;
                sync_dir(&parent).map_err(io::Error::from)?;
                // `self.path` now holds the old tree; Drop removes it.
                if let Err(e) = fs::remove_dir_all(&self.path) {
                    tracing::warn!("removing old tree {}: {e}", self.path.display());
                }
                self.keep = true;
                Ok(())
            }
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "destination exists and is not a directory",
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                rename_noreplace(&self.path, dest)?;
                sync_dir(&parent).map_err(io::Error::from)?;
                self.keep = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = remove_tree(&self.path) {
                tracing::warn!("removing staging directory {}: {e}", self.path.display());
            }
        }
    }
}

/// Removes a tree even where read-only directories would stop `remove_dir_all`.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(path);
            fs::remove_dir_all(path)
        }
    }
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            make_writable(&entry.path());
        }
    }
}

/// Removes staging directories left by installs that were killed (their
/// process no longer exists).
pub fn remove_stale(dest: &Path) {
    let Some(prefix) = staging_prefix(dest) else {
        return;
    };
    let parent = parent_of(dest);
    let Ok(entries) = fs::read_dir(&parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.as_bytes().strip_prefix(prefix.as_bytes()) else {
            continue;
        };
        let pid = rest
            .split(|&b| b == b'-')
            .next()
            .and_then(|p| std::str::from_utf8(p).ok()?.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        tracing::info!(
            "removing stale staging directory {}",
            entry.path().display()
        );
        let _ = remove_tree(&entry.path());
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (from, to) = (c_path(from)?, c_path(to)?);
    // The raw system call: musl's libc (the static init is built with it)
    // has no renameat2 wrapper.
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them
    // relative to the working directory like rename(2).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn rename_exchange(a: &Path, b: &Path) -> io::Result<()> {
    renameat2(a, b, libc::RENAME_EXCHANGE)
}

fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match renameat2(from, to, libc::RENAME_NOREPLACE) {
        // Some file systems lack RENAME_NOREPLACE; `to` was just seen absent.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => fs::rename(from, to),
        other => other,
    }
}

/// Flushes the file system holding `path` (syncfs(2)).
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    syncfs(&fs::File::open(path)?)
}

fn syncfs(file: &fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is valid for the lifetime of `file`.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Flushes a file system from a background thread whenever asked, so that
/// written data goes to disk while extraction goes on and the final
/// [`sync_filesystem`] before the swap finds little left to do. Requests
/// made while a flush runs are merged into one more flush. Durability still
/// rests on the final `sync_filesystem` alone: these flushes only start it
/// early, and their errors are left for that one to report.
#[derive(Debug)]
pub struct BackgroundSync {
    request: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundSync {
    /// Starts the thread for the file system holding `path`.
    pub fn start(path: &Path) -> io::Result<BackgroundSync> {
        let dir = fs::File::open(path)?;
        let (request, requests) = sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("pkgsign-sync".into())
            .spawn(move || {
                while requests.recv().is_ok() {
                    let _ = syncfs(&dir);
                }
            })?;
        Ok(BackgroundSync {
            request: Some(request),
            thread: Some(thread),
        })
    }

    /// Asks for a flush (at once if none is running, else after it).
    pub fn request(&self) {
        if let Some(request) = &self.request {
            let _ = request.try_send(());
        }
    }

    /// Waits for a running flush to end and stops the thread.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.request = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for BackgroundSync {
    fn drop(&mut self) {
        self.stop();
    }
}
