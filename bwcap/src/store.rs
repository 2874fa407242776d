//! What bwcap remembers between passes, in its state directory: the class
//! id of every sliver (an allocation table, never derived from uids), its
//! counters and budget period, and records of removed slivers for 24 hours
//! (so a slice deleted and created again cannot reset its budget). One JSON
//! file, replaced atomically (`floor::durable`); a lock file keeps two
//! passes from interleaving.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use config::units::{ByteSize, Rate};
use config::Timestamp;
use floor::durable::{self, DurableError};
use serde::{Deserialize, Serialize};

use crate::budget::{BudgetPeriod, BudgetState};
use crate::counters::Counters;
use crate::layout::FIRST_SLIVER_CLASS;
use crate::names::{InterfaceName, SliceName};

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "state.json";
/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "lock";
/// How long a removed sliver's record (class id, counters, budget) is kept.
pub const KEEP_REMOVED_SECS: i64 = 86_400;

const FORMAT_VERSION: u32 = 1;

/// A state directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading, writing or locking failed.
    #[error(transparent)]
    Io(#[from] DurableError),
    /// The lock could not be taken.
    #[error("locking {}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not what bwcap writes.
    #[error("{}: not a bwcap state file", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The state file was written by a newer bwcap.
    #[error("{}: format version {found}, this bwcap reads {FORMAT_VERSION}", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// Every class id is taken.
    #[error("no free class id left for sliver {slice}")]
    ClassesExhausted {
        /// The sliver that got none.
        slice: SliceName,
    },
}

/// Everything in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// The interface of the last pass.
    #[serde(default)]
    pub interface: Option<InterfaceName>,
    /// The node cap in force after the last pass.
    #[serde(default)]
    pub node_cap: Option<Rate>,
    /// Whether that cap was the link's speed (no cap set).
    #[serde(default)]
    pub cap_is_line_rate: bool,
    /// The node cgroup of the last pass.
    #[serde(default)]
    pub node_cgroup: Option<PathBuf>,
    /// When the last pass ran.
    #[serde(default)]
    pub last_pass: Option<Timestamp>,
    /// The interface's GSO limit before bwcap changed it (restored by `remove`).
    #[serde(default)]
    pub original_gso_max_segs: Option<u32>,
    /// Every sliver bwcap knows, present or removed in the last 24 hours.
    #[serde(default)]
    pub slivers: BTreeMap<SliceName, SliverRecord>,
}

impl Default for State {
    fn default() -> State {
        State {
            version: FORMAT_VERSION,
            interface: None,
            node_cap: None,
            cap_is_line_rate: false,
            node_cgroup: None,
            last_pass: None,
            original_gso_max_segs: None,
            slivers: BTreeMap::new(),
        }
    }
}

/// One sliver's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliverRecord {
    /// Its class: `1:<class>`.
    pub class: u16,
    /// Its cgroup.
    pub cgroup: PathBuf,
    /// When bwcap first saw it.
    pub since: Timestamp,
    /// When it was removed (kept 24 hours, then forgotten).
    #[serde(default)]
    pub removed_at: Option<Timestamp>,
    /// Its daily budget.
    pub daily_budget: ByteSize,
    /// Its guaranteed rate.
    pub guaranteed: Rate,
    /// Its ceiling without the budget (min of its max rate and the node cap).
    pub normal_ceiling: Rate,
    /// The ceiling in force (lowered past 80 % of the budget).
    pub ceiling: Rate,
    /// Where it stands against its budget.
    pub budget_state: BudgetState,
    /// The current budget period.
    pub budget: BudgetPeriod,
    /// Byte and packet counters.
    pub counters: Counters,
}

impl State {
    /// Reads a state file's text (`path` only names it in errors).
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<State, StoreError> {
        #[derive(Deserialize)]
        struct Header {
            version: u32,
        }
        let header: Header =
            serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
                path: path.to_path_buf(),
                source,
            })?;
        if header.version != FORMAT_VERSION {
            return Err(StoreError::Version {
                path: path.to_path_buf(),
                found: header.version,
            });
        }
        serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads `dir/state.json`; an empty state when there is none yet.
    pub fn load(dir: &Path) -> Result<State, StoreError> {
        let path = dir.join(STATE_FILE);
        match durable::read_if_exists(&path)? {
            Some(bytes) => State::from_json(&bytes, &path),
            None => Ok(State::default()),
        }
    }

    /// Writes `dir/state.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), StoreError> {
        let path = dir.join(STATE_FILE);
        durable::write_atomic_with(&path, 0o644, |w| {
            serde_json::to_writer(&mut *w, self).map_err(std::io::Error::other)?;
            w.write_all(b"\n")
        })?;
        Ok(())
    }

    /// The class of `slice`: its record's, or the lowest free one.
    pub fn allocate(&mut self, slice: &SliceName) -> Result<u16, StoreError> {
        if let Some(r) = self.slivers.get(slice) {
            return Ok(r.class);
        }
        let taken: std::collections::BTreeSet<u16> =
            self.slivers.values().map(|r| r.class).collect();
        (FIRST_SLIVER_CLASS..=u16::MAX)
            .find(|c| !taken.contains(c))
            .ok_or_else(|| StoreError::ClassesExhausted {
                slice: slice.clone(),
            })
    }

    /// Forgets slivers removed more than 24 hours before `now`.
    pub fn forget_expired(&mut self, now: Timestamp) -> Vec<SliceName> {
        let expired: Vec<SliceName> = self
            .slivers
            .iter()
            .filter(|(_, r)| {
                r.removed_at
                    .is_some_and(|at| now.unix() - at.unix() >= KEEP_REMOVED_SECS)
            })
            .map(|(s, _)| s.clone())
            .collect();
        for s in &expired {
            self.slivers.remove(s);
        }
        expired
    }
}

/// An exclusive lock on a state directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Creates the directory if needed, then waits for its lock.
    pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join(LOCK_FILE);
        let lock_error = |source| StoreError::Lock {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(lock_error)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_error)?;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is involved.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(lock_error(e));
            }
        }
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(s: &str) -> SliceName {
        s.parse().unwrap()
    }

    fn record(class: u16, removed_at: Option<Timestamp>) -> SliverRecord {
        let t = Timestamp::from_unix(1_800_000_000);
        SliverRecord {
            class,
            cgroup: PathBuf::from("/sys/fs/cgroup/slivers/x"),
            since: t,
            removed_at,
            daily_budget: ByteSize::gib(10),
            guaranteed: Rate::kbit(5),
            normal_ceiling: Rate::mbit(10),
            ceiling: Rate::mbit(10),
            budget_state: BudgetState::Normal,
            budget: BudgetPeriod::starting(t),
            counters: Counters::starting(t),
        }
    }

    #[test]
    fn classes_come_from_the_table_and_removed_ones_stay_reserved() {
        let mut s = State::default();
        assert_eq!(s.allocate(&slice("a")).unwrap(), 0x10);
        s.slivers.insert(slice("a"), record(0x10, None));
        let gone = Timestamp::from_unix(1_800_000_000);
        s.slivers.insert(slice("b"), record(0x11, Some(gone)));
        assert_eq!(s.allocate(&slice("c")).unwrap(), 0x12);
        assert_eq!(s.allocate(&slice("b")).unwrap(), 0x11);
        assert!(s
            .forget_expired(gone.saturating_add_secs(KEEP_REMOVED_SECS - 1))
            .is_empty());
        assert_eq!(
            s.forget_expired(gone.saturating_add_secs(KEEP_REMOVED_SECS)),
            [slice("b")]
        );
        assert_eq!(s.allocate(&slice("c")).unwrap(), 0x11);
    }

    #[test]
    fn the_example_state_reads() {
        let bytes = include_bytes!("../tests/data/state/state.json");
        let s = State::from_json(bytes, Path::new("state.json")).unwrap();
        assert_eq!(s.slivers.len(), 2);
        assert_eq!(s.original_gso_max_segs, Some(65535));
    }

    #[test]
    fn state_round_trips_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::default();
        s.slivers.insert(slice("a"), record(0x10, None));
        s.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), s);
        std::fs::write(
            dir.path().join(STATE_FILE),
            b"{\"version\": 1, \"slivers\": 5}",
        )
        .unwrap();
        let e = State::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("state.json: not a bwcap state file"), "{e}");
        std::fs::write(dir.path().join(STATE_FILE), b"{\"version\": 9}").unwrap();
        let e = State::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("format version 9"), "{e}");
    }
}
