//! Where the readings come from. Each [`Source`] is read by one blocking
//! call ([`Sources::read`]) into a typed [`Reading`]; sensors render
//! readings as tables ([`crate::catalog`]) and `/metrics` as series
//! ([`crate::metrics`]). Several sensors may share one source (`load` and
//! `load5` read `/proc/loadavg`).
//!
//! Node-wide sources read `/proc` and `statvfs`; per-sliver ones read
//! nodemgr's state through its library (read-only: its state files and
//! the slivers' cgroup files) and bwcap's counters. Nothing here runs a
//! program.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use config::events::NodeEvent;
use config::handover::Handover;
use config::Timestamp;
use nodemgr::limits::Limits;
use nodemgr::manager::NodeError;
use nodemgr::{NodeManager, SliceName};

use crate::procfs::{self, CpuTimes, LoadAvg, MemField, NetDevice, ParseError, Uptime};

/// A source of readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// `/proc/loadavg`.
    LoadAvg,
    /// `/proc/uptime`.
    Uptime,
    /// `/proc/meminfo`.
    Meminfo,
    /// The `cpu` lines of `/proc/stat`.
    Cpu,
    /// Mounted file systems (`/proc/self/mountinfo` and `statvfs`).
    Disk,
    /// `/proc/net/dev`.
    Net,
    /// The node's identity and versions.
    Node,
    /// Every sliver's state and usage (nodemgr).
    Slivers,
    /// Every sliver's traffic and byte budget (bwcap).
    Bandwidth,
}

impl Source {
    /// Every source, in the order `/metrics` reads them.
    pub const ALL: [Source; 9] = [
        Source::LoadAvg,
        Source::Uptime,
        Source::Meminfo,
        Source::Cpu,
        Source::Disk,
        Source::Net,
        Source::Node,
        Source::Slivers,
        Source::Bandwidth,
    ];

    /// A short name for logs, errors and `plnode_sensor_up`.
    pub fn name(self) -> &'static str {
        match self {
            Source::LoadAvg => "loadavg",
            Source::Uptime => "uptime",
            Source::Meminfo => "meminfo",
            Source::Cpu => "cpu",
            Source::Disk => "disk",
            Source::Net => "net",
            Source::Node => "node",
            Source::Slivers => "slivers",
            Source::Bandwidth => "bandwidth",
        }
    }
}

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
    /// A kernel file did not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The node config is invalid.
    #[error(transparent)]
    NodeConfig(#[from] config::ConfigError),
    /// The hand-over note is not valid JSON of its kind.
    #[error("{}: not a hand-over note", path.display())]
    Handover {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// nodemgr's state could not be read.
    #[error("nodemgr: {0}")]
    Nodemgr(#[source] Box<NodeError>),
    /// bwcap's state or the kernel's classes could not be read.
    #[error("bwcap: {0}")]
    Bwcap(#[source] Box<bwcap::Error>),
    /// The source took longer than the sensors wait.
    #[error("{0} did not answer within {1:?}")]
    TimedOut(&'static str, std::time::Duration),
    /// The reading task failed (a bug: it panicked).
    #[error("{0}: the reading task failed")]
    Task(&'static str),
}

fn read_text(path: &Path) -> Result<String, SourceError> {
    fs::read_to_string(path).map_err(|source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// One mounted file system and its usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    /// Where it is mounted.
    pub mount: String,
    /// The device or source.
    pub device: String,
    /// The file system type.
    pub fstype: String,
    /// Size in bytes.
    pub size: u64,
    /// Bytes in use.
    pub used: u64,
    /// Bytes available to unprivileged users.
    pub avail: u64,
    /// Inodes in total.
    pub inodes: u64,
    /// Inodes in use.
    pub inodes_used: u64,
}

/// The node's identity and versions. Empty fields were not found: a
/// build host has no node config or hand-over note.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's number at the boot server.
    pub node_id: Option<u64>,
    /// Its host name (fully qualified).
    pub hostname: String,
    /// The running OS version.
    pub os_version: String,
    /// The version of the CD that booted it.
    pub cd_version: String,
    /// The boot state the boot server named at the last check-in (`boot`
    /// before the first: the CD hands over only in that state).
    pub boot_state: String,
    /// The running deployment.
    pub deployment: String,
    /// The running kernel's release.
    pub kernel: String,
}

/// Whether a sliver runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliverRun {
    /// Its PID 1 runs.
    Running,
    /// It is stopped, as wanted.
    Stopped,
    /// It should run and does not.
    Down,
}

impl SliverRun {
    /// The state's name in the rows.
    pub fn as_str(self) -> &'static str {
        match self {
            SliverRun::Running => "running",
            SliverRun::Stopped => "stopped",
            SliverRun::Down => "down",
        }
    }
}

/// One sliver's state and usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliverFigures {
    /// The slice.
    pub slice: SliceName,
    /// Whether it runs.
    pub state: SliverRun,
    /// Its CPU share (`cpu.weight`).
    pub cpu_share: u32,
    /// CPU time used in its current run (`cpu.stat`), microseconds.
    pub cpu_usec: Option<u64>,
    /// `memory.current`, bytes (none where the kernel has no memory
    /// controller for it).
    pub memory_used: Option<u64>,
    /// `memory.max` as read back, else the limit its rspec grants.
    pub memory_limit: u64,
    /// Processes in its cgroup.
    pub processes: usize,
    /// Bytes used in its writable layer.
    pub disk_used: u64,
    /// Its disk quota, bytes.
    pub disk_quota: u64,
    /// When its lease ends.
    pub lease_end: Option<Timestamp>,
    /// Its host ids (first of 65,536), for matching sockets by owner.
    pub first_uid: u32,
}

/// A typed reading of one source.
#[derive(Debug, Clone)]
pub enum Reading {
    /// `/proc/loadavg`.
    LoadAvg(LoadAvg),
    /// `/proc/uptime`.
    Uptime(Uptime),
    /// `/proc/meminfo`.
    Meminfo(Vec<MemField>),
    /// CPU times, and the clock ticks per second they are counted in.
    Cpu(Vec<CpuTimes>, u64),
    /// File systems.
    Disk(Vec<Filesystem>),
    /// Network interfaces.
    Net(Vec<NetDevice>),
    /// The node.
    Node(NodeInfo),
    /// Slivers, sorted by slice.
    Slivers(Vec<SliverFigures>),
    /// Slivers' traffic and budgets, sorted by slice (empty before bwcap's
    /// first pass).
    Bandwidth(Vec<bwcap::SliverUsage>),
}

/// Which rows a reading must hold: all, or those with these keys (a
/// source that can read only those does; others read everything).
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// Every row.
    All,
    /// The rows with these keys.
    Keys(&'a [String]),
}

/// Where the sources are.
#[derive(Debug)]
pub struct Sources {
    /// The proc file system (`/proc`; a copy in tests of the parsers).
    pub proc_dir: PathBuf,
    /// The node config (`/plnode/node.toml`).
    pub node_config: PathBuf,
    /// The CD's hand-over note.
    pub handover: PathBuf,
    /// nodemgr's settings (its state directory, cgroup root, slivers' fs).
    pub nodemgr: nodemgr::Settings,
    /// bwcap's state directory (its counters and budgets).
    pub bwcap_state_dir: PathBuf,
    /// The last check-in the event journal told of (kept by
    /// [`crate::events`]).
    pub last_checkin: Arc<Mutex<Option<NodeEvent>>>,
}

impl Sources {
    /// Reads `source` (blocking).
    pub fn read(&self, source: Source, rows: Rows<'_>) -> Result<Reading, SourceError> {
        let proc = |name: &str| self.proc_dir.join(name);
        Ok(match source {
            Source::LoadAvg => Reading::LoadAvg(procfs::loadavg(&read_text(&proc("loadavg"))?)?),
            Source::Uptime => Reading::Uptime(procfs::uptime(&read_text(&proc("uptime"))?)?),
            Source::Meminfo => Reading::Meminfo(procfs::meminfo(&read_text(&proc("meminfo"))?)?),
            Source::Cpu => Reading::Cpu(
                procfs::cpu_times(&read_text(&proc("stat"))?)?,
                clock_ticks(),
            ),
            Source::Net => Reading::Net(procfs::net_dev(&read_text(&proc("net/dev"))?)?),
            Source::Disk => Reading::Disk(self.filesystems(&proc("self/mountinfo"), rows)?),
            Source::Node => Reading::Node(self.node()?),
            Source::Slivers => Reading::Slivers(self.slivers(rows)?),
            Source::Bandwidth => Reading::Bandwidth(self.bandwidth(rows)?),
        })
    }

    fn filesystems(
        &self,
        mountinfo: &Path,
        rows: Rows<'_>,
    ) -> Result<Vec<Filesystem>, SourceError> {
        let mut out = Vec::new();
        for m in procfs::mountinfo(&read_text(mountinfo)?)? {
            // Only the mounts asked for are looked at (a dead network
            // mount elsewhere cannot hold up the answer).
            if let Rows::Keys(keys) = rows {
                if !keys.contains(&m.point) {
                    continue;
                }
            }
            // A mount that vanished meanwhile, or one we may not look at,
            // is left out.
            let Ok(st) = nix::sys::statvfs::statvfs(m.point.as_str()) else {
                continue;
            };
            // Pseudo file systems (proc, sysfs, cgroup2, ...) have no blocks.
            if st.blocks() == 0 {
                continue;
            }
            let frsize = st.fragment_size();
            let bytes = |blocks: u64| blocks.saturating_mul(frsize);
            out.push(Filesystem {
                mount: m.point,
                device: m.source,
                fstype: m.fstype,
                size: bytes(st.blocks()),
                used: bytes(st.blocks().saturating_sub(st.blocks_free())),
                avail: bytes(st.blocks_available()),
                inodes: st.files(),
                inodes_used: st.files().saturating_sub(st.files_free()),
            });
        }
        Ok(out)
    }

    fn node(&self) -> Result<NodeInfo, SourceError> {
        let mut info = NodeInfo::default();
        if self.node_config.exists() {
            let (config, _) = config::load_any_node_config(&self.node_config)?;
            info.node_id = Some(config.node_id.0);
            info.hostname = config.fqdn();
        }
        match fs::read(&self.handover) {
            Ok(bytes) => {
                let h = Handover::parse(&bytes).map_err(|source| SourceError::Handover {
                    path: self.handover.clone(),
                    source,
                })?;
                info.os_version = h.os_version;
                info.cd_version = h.cd_version;
                info.deployment = h.deployment;
                info.kernel = h.kernel_release;
                info.boot_state = "boot".into();
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(SourceError::Read {
                    path: self.handover.clone(),
                    source,
                })
            }
        }
        if info.kernel.is_empty() {
            info.kernel = read_text(&self.proc_dir.join("sys/kernel/osrelease"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
        }
        let last = self
            .last_checkin
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        if let Some(checkin) = last.filter(|e| e.subject != "failed") {
            info.boot_state = checkin.subject;
        }
        Ok(info)
    }

    fn slivers(&self, rows: Rows<'_>) -> Result<Vec<SliverFigures>, SourceError> {
        let nodemgr = |e: NodeError| SourceError::Nodemgr(Box::new(e));
        let manager = NodeManager::open(self.nodemgr.clone()).map_err(nodemgr)?;
        let slices: Vec<SliceName> = match rows {
            Rows::All => manager
                .list()
                .map_err(nodemgr)?
                .into_iter()
                .map(|s| s.slice)
                .collect(),
            // Only the slivers asked for: work in proportion to the answer.
            Rows::Keys(keys) => keys.iter().filter_map(|k| SliceName::new(k).ok()).collect(),
        };
        let mut out = Vec::with_capacity(slices.len());
        for slice in slices {
            let report = match manager.show(&slice) {
                Ok(r) => r,
                // Deleted since it was listed, or never there.
                Err(NodeError::Unknown(_)) => continue,
                Err(e) => return Err(nodemgr(e)),
            };
            let limits = Limits::from_rspec(&report.state.rspec, &self.nodemgr.defaults);
            let read_back = |file: &str| {
                report
                    .limits
                    .iter()
                    .find(|(f, _)| f == file)
                    .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            };
            let state = match (report.pid, report.state.desired) {
                (Some(_), _) => SliverRun::Running,
                (None, nodemgr::state::Desired::Stopped) => SliverRun::Stopped,
                (None, nodemgr::state::Desired::Running) => SliverRun::Down,
            };
            out.push(SliverFigures {
                state,
                cpu_share: report.state.rspec.cpu_share,
                cpu_usec: report.cpu_usec,
                memory_used: report.memory_bytes,
                memory_limit: read_back("memory.max").unwrap_or(limits.memory_max),
                processes: report.processes,
                disk_used: report.disk_bytes,
                disk_quota: limits.disk,
                lease_end: report.state.rspec.lease_end,
                first_uid: report.state.ids.first,
                slice,
            });
        }
        out.sort_by(|a, b| a.slice.cmp(&b.slice));
        Ok(out)
    }
}

impl Sources {
    /// The slivers bwcap shapes now, with their counters read live from
    /// the kernel's classes. Slivers removed less than a day ago (whose
    /// budgets bwcap keeps) are left out: they send nothing.
    fn bandwidth(&self, rows: Rows<'_>) -> Result<Vec<bwcap::SliverUsage>, SourceError> {
        let usage = match bwcap::usage::usage(&self.bwcap_state_dir, Timestamp::now()) {
            Ok(u) => u,
            // No pass yet (bwcap off, or nodemgr not started): nothing shaped.
            Err(bwcap::Error::NothingApplied { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(SourceError::Bwcap(Box::new(e))),
        };
        let mut out: Vec<bwcap::SliverUsage> = usage
            .slivers
            .into_iter()
            .filter(|s| s.removed_at.is_none())
            .filter(|s| match rows {
                Rows::All => true,
                Rows::Keys(keys) => keys.iter().any(|k| k == s.slice.as_str()),
            })
            .collect();
        out.sort_by(|a, b| a.slice.as_str().cmp(b.slice.as_str()));
        Ok(out)
    }
}

/// Clock ticks per second (`USER_HZ`), the unit of `/proc/stat`.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100)
}
