//! Cgroup v2: the fixed layout, a sliver's group, its limits read back.
//!
//! Layout under a cgroup2 root (`/sys/fs/cgroup` on a node): the node's own
//! services live in `system/` (the supervisor puts them there), slivers in
//! `slivers/<slice>/`. The sliver's processes sit directly in its group
//! (controllers are enabled in `slivers/`, never below a sliver), so other
//! parts (bwcap's BPF program) attach to exactly `slivers/<slice>`.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::name::SliceName;

/// The controllers slivers are limited by.
pub const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// Directory of the slivers' groups under the root.
pub const SLIVERS: &str = "slivers";

/// What went wrong with a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file or directory operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The cgroup file or directory.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
    /// The root is not a cgroup2 mount.
    #[error("{} is not a cgroup2 hierarchy (no cgroup.controllers)", .0.display())]
    NotCgroup2(PathBuf),
    /// Freezing or emptying did not finish in time.
    #[error("{}: {what} did not happen within {secs} s", path.display())]
    Timeout {
        /// The cgroup.
        path: PathBuf,
        /// What was waited for.
        what: &'static str,
        /// How long.
        secs: u64,
    },
    /// A cgroup file held something unexpected.
    #[error("{}: unexpected content {content:?}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Why limits cannot be applied: a typed condition, never a silent success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limits not enforced: the cgroup2 hierarchy at {} lacks the {} controller{} (a hybrid cgroup v1/v2 host?)", cgroup.display(), missing.join(", "), if missing.len() == 1 { "" } else { "s" })]
pub struct LimitsUnavailable {
    /// The group whose children would be limited.
    pub cgroup: PathBuf,
    /// Controllers that are not available there.
    pub missing: Vec<String>,
}

/// The cgroup2 root and its `slivers/` group.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    root: PathBuf,
}

impl CgroupRoot {
    /// Checks that `root` is a cgroup2 directory.
    pub fn open(root: &Path) -> Result<CgroupRoot, CgroupError> {
        if !root.join("cgroup.controllers").is_file() {
            return Err(CgroupError::NotCgroup2(root.to_path_buf()));
        }
        Ok(CgroupRoot {
            root: root.to_path_buf(),
        })
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `<root>/slivers`.
    pub fn slivers_dir(&self) -> PathBuf {
        self.root.join(SLIVERS)
    }

    /// Makes `slivers/` and enables the limit controllers for the slivers'
    /// groups (in the root's and in `slivers/`'s `cgroup.subtree_control`).
    /// Returns why limits are unavailable, when they are: on a hybrid host
    /// the v2 hierarchy has no controllers at all.
    pub fn prepare(&self) -> Result<Option<LimitsUnavailable>, CgroupError> {
        let slivers = self.slivers_dir();
        mkdir(&slivers)?;
        for dir in [&self.root, &slivers] {
            let available = read_words(&dir.join("cgroup.controllers"))?;
            let enabled = read_words(&dir.join("cgroup.subtree_control"))?;
            let missing: Vec<String> = CONTROLLERS
                .iter()
                .filter(|c| !available.iter().any(|a| a == *c))
                .map(|c| c.to_string())
                .collect();
            if !missing.is_empty() {
                return Ok(Some(LimitsUnavailable {
                    cgroup: dir.to_path_buf(),
                    missing,
                }));
            }
            let wanted: Vec<String> = CONTROLLERS
                .iter()
                .filter(|c| !enabled.iter().any(|e| e == *c))
                .map(|c| format!("+{c}"))
                .collect();
            if !wanted.is_empty() {
                let file = dir.join("cgroup.subtree_control");
                fs::write(&file, wanted.join(" ")).map_err(io_err(&file))?;
            }
        }
        Ok(None)
    }

    /// Whether the slivers' groups get limits (read only; see [`Self::prepare`]).
    pub fn check(&self) -> Result<Option<LimitsUnavailable>, CgroupError> {
        let slivers = self.slivers_dir();
        let file = slivers.join("cgroup.subtree_control");
        let enabled = if file.exists() {
            read_words(&file)?
        } else {
            Vec::new()
        };
        let missing: Vec<String> = CONTROLLERS
            .iter()
            .filter(|c| !enabled.iter().any(|e| e == *c))
            .map(|c| c.to_string())
            .collect();
        Ok((!missing.is_empty()).then_some(LimitsUnavailable {
            cgroup: slivers,
            missing,
        }))
    }

    /// The group of `slice` (whether or not it exists).
    pub fn sliver(&self, slice: &SliceName) -> SliverCgroup {
        SliverCgroup {
            dir: self.slivers_dir().join(slice.as_str()),
        }
    }

    /// Names of the groups under `slivers/`.
    pub fn sliver_groups(&self) -> Result<Vec<String>, CgroupError> {
        let dir = self.slivers_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            if entry.file_type().map_err(io_err(&dir))?.is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}

fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

fn read_words(path: &Path) -> Result<Vec<String>, CgroupError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    Ok(text.split_whitespace().map(str::to_string).collect())
}

/// One limit written and read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitValue {
    /// The interface file (`memory.max`).
    pub file: &'static str,
    /// What was written.
    pub wrote: String,
    /// What the kernel reports now.
    pub read: String,
}

/// The values written for a sliver (see [`crate::limits`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitWrite {
    /// Interface file.
    pub file: &'static str,
    /// Value to write, in the kernel's own notation.
    pub value: String,
}

/// A limit the kernel did not take as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: wrote {wrote:?}, the kernel reports {read:?}", path.display())]
pub struct LimitMismatch {
    /// The file.
    pub path: PathBuf,
    /// What was written.
    pub wrote: String,
    /// What was read back.
    pub read: String,
}

/// Errors applying limits.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// A file could not be written or read.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Read back differs.
    #[error(transparent)]
    Mismatch(#[from] LimitMismatch),
}

/// A sliver's group, `slivers/<slice>`.
#[derive(Debug, Clone)]
pub struct SliverCgroup {
    dir: PathBuf,
}

impl SliverCgroup {
    /// The group at `dir`.
    pub fn at(dir: PathBuf) -> SliverCgroup {
        SliverCgroup { dir }
    }

    /// The group's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether the directory exists.
    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    /// Makes the group (fine when it exists).
    pub fn create(&self) -> Result<(), CgroupError> {
        mkdir(&self.dir)
    }

    /// Opens the directory for `CLONE_INTO_CGROUP`.
    pub fn open_dir(&self) -> Result<OwnedFd, CgroupError> {
        let file = fs::File::open(&self.dir).map_err(io_err(&self.dir))?;
        Ok(file.into())
    }

    /// Reads an interface file (trimmed); `None` when it does not exist
    /// (the controller is not enabled).
    pub fn read(&self, file: &str) -> Result<Option<String>, CgroupError> {
        let path = self.dir.join(file);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn write(&self, file: &str, value: &str) -> Result<(), CgroupError> {
        let path = self.dir.join(file);
        fs::write(&path, value).map_err(io_err(&path))
    }

    /// Writes each value, then reads it back; a difference is an error.
    pub fn apply(&self, writes: &[LimitWrite]) -> Result<Vec<LimitValue>, LimitError> {
        let mut out = Vec::new();
        for w in writes {
            self.write(w.file, &w.value)?;
            let path = self.dir.join(w.file);
            let read = self.read(w.file)?.ok_or_else(|| CgroupError::Io {
                path: path.clone(),
                source: io::Error::from(io::ErrorKind::NotFound),
            })?;
            if read != w.value {
                return Err(LimitMismatch {
                    path,
                    wrote: w.value.clone(),
                    read,
                }
                .into());
            }
            out.push(LimitValue {
                file: w.file,
                wrote: w.value.clone(),
                read,
            });
        }
        Ok(out)
    }

    /// The pids in the group.
    pub fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let Some(text) = self.read("cgroup.procs")? else {
            return Ok(Vec::new());
        };
        text.lines()
            .map(|l| {
                l.trim().parse().map_err(|_| CgroupError::Parse {
                    path: self.dir.join("cgroup.procs"),
                    content: l.to_string(),
                })
            })
            .collect()
    }

    /// A key of `cgroup.events` (`populated`, `frozen`).
    fn event(&self, key: &str) -> Result<bool, CgroupError> {
        let Some(text) = self.read("cgroup.events")? else {
            return Ok(false);
        };
        Ok(text.lines().any(|l| l.split_once(' ') == Some((key, "1"))))
    }

    /// Whether any process is in the group.
    pub fn populated(&self) -> Result<bool, CgroupError> {
        self.event("populated")
    }

    /// Freezes the group (`cgroup.freeze`), so nothing forks away while it
    /// is killed, then kills everything in it (`cgroup.kill`) and waits
    /// until it is empty.
    pub fn freeze_and_kill(&self, timeout: Duration) -> Result<(), CgroupError> {
        if !self.exists() || !self.populated()? {
            return Ok(());
        }
        self.write("cgroup.freeze", "1")?;
        self.wait_for("frozen", true, timeout)?;
        self.write("cgroup.kill", "1")?;
        self.wait_for("populated", false, timeout)?;
        // A frozen empty group would freeze whatever is started in it next.
        self.write("cgroup.freeze", "0")?;
        Ok(())
    }

    /// Waits until `cgroup.events` says `key` is `value`. The kernel
    /// signals every change of that file to poll(2) as POLLPRI, so this
    /// wakes up at once instead of sleeping in steps.
    fn wait_for(
        &self,
        key: &'static str,
        value: bool,
        timeout: Duration,
    ) -> Result<(), CgroupError> {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join("cgroup.events");
        let file = fs::File::open(&path).map_err(io_err(&path))?;
        let start = Instant::now();
        let mut buf = [0u8; 256];
        loop {
            // Reading through the polled descriptor re-arms it.
            let n = file.read_at(&mut buf, 0).map_err(io_err(&path))?;
            let text = String::from_utf8_lossy(&buf[..n]);
            let flag = |k: &str| text.lines().any(|l| l.split_once(' ') == Some((k, "1")));
            // A group that emptied while freezing needs no freeze.
            if flag(key) == value || (key == "frozen" && !flag("populated")) {
                return Ok(());
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(CgroupError::Timeout {
                    path: self.dir.clone(),
                    what: if value { key } else { "emptying" },
                    secs: timeout.as_secs(),
                });
            }
            let ms = left.as_millis().min(100) as u16;
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&file),
                nix::poll::PollFlags::POLLPRI,
            )];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(io_err(&path)(e.into())),
            }
        }
    }

    /// Removes the (empty) group; fine when it is gone.
    pub fn remove(&self) -> Result<(), CgroupError> {
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&self.dir)(e)),
        }
    }
}
