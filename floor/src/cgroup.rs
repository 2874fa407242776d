//! The cgroup v2 hierarchy as tests, benchmarks and test benches use it:
//! where it is mounted, and a directory of one's own in it that takes
//! everything below it along when it goes.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// `CGROUP2_SUPER_MAGIC`.
const CGROUP2_MAGIC: u64 = 0x6367_7270;

/// Whether `path` is the root of a mounted cgroup v2 file system.
pub fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: statfs reads a NUL-terminated path and writes a struct we own.
    let r = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    // SAFETY: initialised by the successful call.
    r == 0 && unsafe { st.assume_init() }.f_type as u64 == CGROUP2_MAGIC
}

/// Where this machine's cgroup v2 hierarchy is mounted: `/sys/fs/cgroup`
/// on a node (pure v2), `/sys/fs/cgroup/unified` on a host with v1
/// controllers.
pub fn cgroup2_mount() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| is_cgroup2(p))
}

/// A cgroup directory of a test's or benchmark's own, directly under the
/// cgroup2 root: on drop, every process below it is killed
/// (`cgroup.kill`) and the whole tree removed, deepest first.
#[derive(Debug)]
pub struct ScratchCgroup {
    dir: PathBuf,
}

impl ScratchCgroup {
    /// Makes `<cgroup2>/<prefix>-<pid>-<n>`.
    pub fn new(prefix: &str) -> io::Result<ScratchCgroup> {
        static N: AtomicU32 = AtomicU32::new(0);
        let root = cgroup2_mount()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 hierarchy"))?;
        let dir = root.join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&dir)?;
        Ok(ScratchCgroup { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

fn subtree(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                subtree(&e.path(), out);
            }
        }
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::read_to_string(self.dir.join("cgroup.events"))
            .is_ok_and(|e| e.contains("populated 1"))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut dirs = Vec::new();
        subtree(&self.dir, &mut dirs);
        // Deepest first; a group whose last process just exited may need a moment.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            for _ in 0..50 {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_group_takes_its_processes_and_subgroups_along() {
        if !cfg!(target_os = "linux")
            || unsafe { libc::geteuid() } != 0
            || cgroup2_mount().is_none()
        {
            eprintln!("SKIP: needs root and a cgroup2 hierarchy");
            return;
        }
        let scratch = ScratchCgroup::new("floor-test").unwrap();
        let dir = scratch.path().to_path_buf();
        let inner = dir.join("a/b");
        fs::create_dir_all(&inner).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        fs::write(inner.join("cgroup.procs"), child.id().to_string()).unwrap();
        drop(scratch);
        assert!(!dir.exists(), "{} is still there", dir.display());
        let status = child.wait().unwrap();
        assert!(!status.success(), "the process was killed: {status}");
    }
}
