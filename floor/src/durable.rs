//! Files that survive a crash: a write replaces a file with the old or the
//! new content, never a mix, and a rename or removal is on disk before the
//! call returns.
//!
//! The policy, the same for every caller: write a temporary file with a
//! name no other writer uses (`.tmp-<pid>-<counter>-<random><suffix>` in
//! the same directory), `fsync` it, `rename` it over the target, `fsync`
//! the directory, and report a failure of any of these (a directory sync
//! that fails is an error, not a log line). On error the temporary file is
//! removed. Temporary files a killed process left behind are removed by
//! [`remove_stale_temps`].

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What was being done when a durable operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Creating or writing the temporary file.
    Write,
    /// Flushing a file or directory to disk.
    Sync,
    /// Renaming into place.
    Rename,
    /// Removing a file.
    Remove,
    /// Reading a file.
    Read,
    /// The target exists and must not be replaced.
    Exists,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Write => "writing",
            Op::Sync => "syncing",
            Op::Rename => "renaming into",
            Op::Remove => "removing",
            Op::Read => "reading",
            Op::Exists => "refusing to replace",
        })
    }
}

/// A durable operation failed; names the operation and the path.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}", path.display())]
pub struct DurableError {
    /// What was being done.
    pub op: Op,
    /// The file or directory it was done to.
    pub path: PathBuf,
    /// The system's reason.
    #[source]
    pub source: io::Error,
}

impl DurableError {
    fn new(op: Op, path: &Path) -> impl FnOnce(io::Error) -> DurableError + '_ {
        move |source| DurableError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The underlying error's kind (`NotFound`, `StorageFull`, ...).
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

impl From<DurableError> for io::Error {
    fn from(e: DurableError) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

const TEMP_PREFIX: &str = ".tmp-";

/// A name in `dir` that no other writer is using:
/// `.tmp-<pid>-<counter>-<random><suffix>`.
pub fn temp_path_in(dir: &Path, suffix: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = getrandom::u64().unwrap_or(0);
    let mut name = OsString::from(format!(
        "{TEMP_PREFIX}{}-{n}-{random:016x}",
        std::process::id()
    ));
    name.push(suffix);
    dir.join(name)
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Flushes a directory, so that renames and removals inside it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), DurableError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(DurableError::new(Op::Sync, dir))
}

/// Replaces `path` with `contents` (mode 0644); after a crash `path` holds
/// either the old or the new contents.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), DurableError> {
    write_atomic_mode(path, contents, 0o644)
}

/// [`write_atomic`] with the new file's permission bits (before the umask).
pub fn write_atomic_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), DurableError> {
    write_atomic_with(path, mode, |w| w.write_all(contents))
}

/// [`write_atomic_mode`] with the content produced by `fill` into a buffered
/// writer (large JSON documents, streamed archives).
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), DurableError> {
    let dir = parent_of(path);
    let tmp = write_temp(dir, mode, fill)?;
    let result = fs::rename(&tmp, path)
        .map_err(DurableError::new(Op::Rename, path))
        .and_then(|()| sync_dir(dir));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` with `contents` only if nothing is there yet (a key file
/// must never be overwritten): durable like [`write_atomic`], and fails
/// with [`Op::Exists`] when `path` exists, leaving it untouched.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), DurableError> {
    let dir = parent_of(path);
    let tmp = write_temp(dir, mode, |w| w.write_all(contents))?;
    // link(2) fails if the target exists, unlike rename(2).
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(DurableError {
            op: Op::Exists,
            path: path.to_path_buf(),
            source: e,
        }),
        Err(e) => Err(DurableError::new(Op::Write, path)(e)),
    }
}

fn write_temp(
    dir: &Path,
    mode: u32,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<PathBuf, DurableError> {
    let tmp = temp_path_in(dir, ".part");
    let result = (|| {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(DurableError::new(Op::Write, &tmp))?;
        let mut out = io::BufWriter::with_capacity(1 << 16, file);
        fill(&mut out).map_err(DurableError::new(Op::Write, &tmp))?;
        let file = out
            .into_inner()
            .map_err(|e| DurableError::new(Op::Write, &tmp)(e.into_error()))?;
        file.sync_all().map_err(DurableError::new(Op::Sync, &tmp))
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Renames `from` to `to` and syncs the directories involved.
pub fn rename(from: &Path, to: &Path) -> Result<(), DurableError> {
    fs::rename(from, to).map_err(DurableError::new(Op::Rename, to))?;
    let (a, b) = (parent_of(from), parent_of(to));
    sync_dir(b)?;
    if a != b {
        sync_dir(a)?;
    }
    Ok(())
}

/// Removes `path` and syncs its directory. Returns whether there was
/// anything to remove.
pub fn remove_file(path: &Path) -> Result<bool, DurableError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent_of(path)).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(DurableError::new(Op::Remove, path)(e)),
    }
}

/// Reads a file if it exists; `Ok(None)` when it does not.
pub fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, DurableError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DurableError::new(Op::Read, path)(e)),
    }
}

/// Removes the temporary files in `dir` left by writers that are gone (the
/// pid in the name is not running). Returns the names removed.
pub fn remove_stale_temps(dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(TEMP_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if !process_exists(pid) && fs::remove_file(entry.path()).is_ok() {
            removed.push(name);
        }
    }
    removed
}

fn process_exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for the process; it has no
    // memory-safety preconditions.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_writes_replace_and_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(names(dir.path()), ["state.json"]);
        write_atomic_mode(&path, b"secret", 0o600).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"old").unwrap();
        let e = write_atomic_with(&path, 0o644, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("encoder failed"))
        })
        .unwrap_err();
        assert_eq!(e.op, Op::Write);
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["f"]);
    }

    #[test]
    fn errors_name_the_operation_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_atomic(&dir.path().join("missing/f"), b"x").unwrap_err();
        assert!(e.to_string().starts_with("writing "), "{e}");
        assert!(e.to_string().contains("missing"), "{e}");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn write_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_new(&path, b"first", 0o600).unwrap();
        let e = write_new(&path, b"second", 0o600).unwrap_err();
        assert_eq!(e.op, Op::Exists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(names(dir.path()), ["key"]);
    }

    #[test]
    fn stale_temporaries_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // pid 0x7ffffffe is beyond pid_max on every Linux.
        fs::write(dir.path().join(".tmp-2147483646-0-00.part"), b"x").unwrap();
        let mine = temp_path_in(dir.path(), ".part");
        fs::write(&mine, b"x").unwrap();
        fs::write(dir.path().join("keep"), b"x").unwrap();
        assert_eq!(
            remove_stale_temps(dir.path()),
            [".tmp-2147483646-0-00.part"]
        );
        assert!(mine.exists());
        assert!(dir.path().join("keep").exists());
    }

    #[test]
    fn remove_and_read_if_exists_tolerate_absence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert_eq!(read_if_exists(&path).unwrap(), None);
        assert!(!remove_file(&path).unwrap());
        write_atomic(&path, b"x").unwrap();
        assert_eq!(read_if_exists(&path).unwrap().as_deref(), Some(&b"x"[..]));
        assert!(remove_file(&path).unwrap());
    }
}
