//! The node manager's local operations on slivers: create, start, stop,
//! delete, list, show, enter, and restore after a reboot or a restart.
//!
//! nodemgr keeps no state in memory between calls: the state files say
//! what exists and what should run, the cgroups say what runs. A restarted
//! nodemgr (or a second one) therefore sees exactly what the first left.
//! Mutating operations hold an exclusive lock (`<run>/lock`).

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::rspec::Rspec;
use config::Timestamp;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use crate::cgroup::{
    CgroupError, CgroupRoot, LimitError, LimitValue, LimitsUnavailable, SliverCgroup,
};
use crate::ids::{IdError, IdRange, IdTable};
use crate::inside::{EnterPlan, InitPlan, RunOutcome, ScriptRun, SliceFiles};
use crate::keys::AuthorizedKeys;
use crate::limits::Limits;
use crate::name::SliceName;
use crate::settings::{Settings, SettingsError};
use crate::spawn::{self, Entered, SpawnError};
use crate::state::{Desired, Origin, SliverState, StateError};
use crate::storage::{self, QuotaUnavailable, SliverDirs, StorageError};
use crate::sys;

/// How long a sliver's PID 1 may take to build its root.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long freezing and killing a sliver may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an operation failed. Input errors (name, rspec, reference root,
/// unknown or existing slice) are found before anything is changed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A setting cannot work.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The rspec is out of range.
    #[error("rspec out of range: {0}")]
    Rspec(String),
    /// The reference root is missing or empty.
    #[error("reference root {}: {reason}", path.display())]
    ReferenceRoot {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No sliver of that slice exists.
    #[error("no sliver for slice {0} on this node")]
    Unknown(SliceName),
    /// The slice has a sliver already.
    #[error("slice {0} already has a sliver on this node")]
    Exists(SliceName),
    /// Start of a running sliver.
    #[error("sliver {0} is already running")]
    AlreadyRunning(SliceName),
    /// Enter of a stopped sliver.
    #[error("sliver {0} is not running")]
    NotRunning(SliceName),
    /// Limits are unavailable and required.
    #[error(transparent)]
    LimitsUnavailable(#[from] LimitsUnavailable),
    /// The disk quota is unavailable and required.
    #[error(transparent)]
    QuotaUnavailable(#[from] QuotaUnavailable),
    /// The id table.
    #[error(transparent)]
    Ids(#[from] IdError),
    /// A state file.
    #[error(transparent)]
    State(#[from] StateError),
    /// A cgroup.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Applying limits.
    #[error(transparent)]
    Limits(#[from] LimitError),
    /// The slivers' file system.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Starting a process in the sliver.
    #[error("sliver {slice}: {source}")]
    Spawn {
        /// The slice.
        slice: SliceName,
        /// What failed.
        #[source]
        source: SpawnError,
    },
    /// A file or directory of nodemgr's own.
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
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> NodeError + 'a {
    move |source| NodeError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether limits and the disk quota hold for a sliver.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Enforcement {
    /// The limits written and read back; empty when unavailable.
    pub limits: Vec<(String, String)>,
    /// Why limits are not enforced, when they are not.
    pub limits_unavailable: Option<String>,
    /// Why the disk quota is not enforced, when it is not.
    pub quota_unavailable: Option<String>,
}

impl Enforcement {
    fn limits_from(values: Vec<LimitValue>) -> Vec<(String, String)> {
        values
            .into_iter()
            .map(|v| (v.file.to_string(), v.read))
            .collect()
    }
}

/// What `create` did.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    /// The sliver's host ids.
    pub ids: IdRange,
    /// Limits and quota.
    pub enforcement: Enforcement,
}

/// What `start` did.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    /// Host pid of the sliver's PID 1.
    pub pid: i32,
    /// Limits and quota.
    pub enforcement: Enforcement,
}

/// A sliver as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SliverSummary {
    /// The slice.
    pub slice: SliceName,
    /// Whether it should run.
    pub desired: Desired,
    /// Host pid of its PID 1 when running.
    pub pid: Option<i32>,
    /// Its host ids.
    pub ids: IdRange,
}

/// Everything `show` reports about a sliver.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SliverReport {
    /// Its state file.
    pub state: SliverState,
    /// Host pid of its PID 1 when running.
    pub pid: Option<i32>,
    /// Processes in its cgroup.
    pub processes: usize,
    /// Its cgroup.
    pub cgroup: PathBuf,
    /// Limits read back from the cgroup (file, value); files the kernel
    /// does not offer are left out.
    pub limits: Vec<(String, String)>,
    /// Why limits are not enforced, when they are not.
    pub limits_unavailable: Option<String>,
    /// `memory.current`, bytes.
    pub memory_bytes: Option<u64>,
    /// `pids.current`.
    pub pids: Option<u64>,
    /// CPU time used (`cpu.stat` `usage_usec`), microseconds.
    pub cpu_usec: Option<u64>,
    /// Bytes used in its writable layer.
    pub disk_bytes: u64,
    /// Why the disk quota is not enforced, when it is not.
    pub quota_unavailable: Option<String>,
}

/// What `restore` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Restored {
    /// Slivers started.
    pub started: Vec<SliceName>,
    /// Slivers that were running already.
    pub running: Vec<SliceName>,
    /// Slivers that failed to start, with the reason.
    pub failed: Vec<(SliceName, String)>,
    /// Leftovers removed (id ranges, cgroups without a sliver).
    pub cleaned: Vec<String>,
}

/// How to run a command in a sliver.
#[derive(Debug, Clone, Default)]
pub struct EnterOptions {
    /// Program and arguments; empty: a login shell.
    pub command: Vec<String>,
    /// As the slice's user instead of root inside.
    pub as_slice_user: bool,
    /// With a new terminal (its master is returned).
    pub pty: bool,
    /// `TERM` for the terminal.
    pub term: Option<String>,
}

/// The node manager over one set of [`Settings`].
#[derive(Debug, Clone)]
pub struct NodeManager {
    settings: Settings,
}

impl NodeManager {
    /// Checks the settings and makes the state and run directories.
    /// Checks the settings; touches nothing (directories are made by the
    /// first operation that changes something, after its input checks).
    pub fn open(settings: Settings) -> Result<NodeManager, NodeError> {
        settings.validate()?;
        Ok(NodeManager { settings })
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Takes the lock, making nodemgr's directories first if needed.
    fn lock(&self) -> Result<Flock<fs::File>, NodeError> {
        for dir in [
            self.settings.sliver_states(),
            self.settings.run_dir.join("slivers"),
        ] {
            fs::create_dir_all(&dir).map_err(io_err("making", &dir))?;
        }
        let path = self.settings.run_dir.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening the lock", &path))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err("locking", &path)(e.into()))
    }

    fn cgroups(&self) -> Result<CgroupRoot, NodeError> {
        Ok(CgroupRoot::open(&self.settings.cgroup_root)?)
    }

    fn id_table(&self) -> Result<IdTable, NodeError> {
        Ok(IdTable::load(
            &self.settings.id_table(),
            self.settings.first_id,
            self.settings.max_slivers,
        )?)
    }

    fn load(&self, slice: &SliceName) -> Result<SliverState, NodeError> {
        SliverState::load(&self.settings.sliver_states(), slice)?
            .ok_or_else(|| NodeError::Unknown(slice.clone()))
    }

    fn dirs(&self, slice: &SliceName) -> SliverDirs {
        SliverDirs::new(self.settings.slivers_fs.root(), slice)
    }

    fn check_reference_root(&self) -> Result<(), NodeError> {
        let path = &self.settings.reference_root;
        let bad = |reason: String| NodeError::ReferenceRoot {
            path: path.clone(),
            reason,
        };
        let mut entries = fs::read_dir(path).map_err(|e| bad(e.to_string()))?;
        if entries.next().is_none() {
            return Err(bad("is empty".into()));
        }
        if !path.join("bin/sh").exists() {
            return Err(bad("has no /bin/sh: not a root file system".into()));
        }
        Ok(())
    }

    /// Makes a sliver for `slice` (stopped): an id range, its writable
    /// layer with the disk quota, its cgroup with the limits, its state
    /// file. On any error everything made is removed again.
    pub fn create(
        &self,
        slice: &SliceName,
        rspec: &Rspec,
        keys: &AuthorizedKeys,
    ) -> Result<Created, NodeError> {
        self.create_as(slice, rspec, keys, Desired::Stopped, Origin::Local, None)
    }

    /// [`Self::create`] and [`Self::start`] in one: the state file is
    /// written once, already saying "running". If the start fails, the
    /// sliver stays, stopped.
    pub fn create_and_start(
        &self,
        slice: &SliceName,
        rspec: &Rspec,
        keys: &AuthorizedKeys,
    ) -> Result<(Created, Started), NodeError> {
        self.create_and_start_from(slice, rspec, keys, Origin::Local, None)
    }

    /// [`Self::create_and_start`] for a sliver made by `origin`, with the
    /// slice's initscript (run later, once, by the node manager service).
    pub fn create_and_start_from(
        &self,
        slice: &SliceName,
        rspec: &Rspec,
        keys: &AuthorizedKeys,
        origin: Origin,
        initscript: Option<String>,
    ) -> Result<(Created, Started), NodeError> {
        let created = self.create_as(slice, rspec, keys, Desired::Running, origin, initscript)?;
        let _lock = self.lock()?;
        match self.start_locked(slice) {
            Ok(started) => Ok((created, started)),
            Err(e) => {
                if let Ok(mut state) = self.load(slice) {
                    state.desired = Desired::Stopped;
                    let _ = state.save(&self.settings.sliver_states());
                }
                Err(e)
            }
        }
    }

    fn create_as(
        &self,
        slice: &SliceName,
        rspec: &Rspec,
        keys: &AuthorizedKeys,
        desired: Desired,
        origin: Origin,
        initscript: Option<String>,
    ) -> Result<Created, NodeError> {
        rspec.validate().map_err(NodeError::Rspec)?;
        self.check_reference_root()?;
        let _lock = self.lock()?;
        let states = self.settings.sliver_states();
        if SliverState::load(&states, slice)?.is_some() {
            return Err(NodeError::Exists(slice.clone()));
        }
        let cgroups = self.cgroups()?;
        let cgroup = cgroups.sliver(slice);
        if cgroup.exists() && cgroup.populated()? {
            return Err(NodeError::Exists(slice.clone()));
        }
        storage::prepare(&self.settings.slivers_fs)?;
        let mut table = self.id_table()?;
        let ids = table.reserve(slice)?;
        let dirs = self.dirs(slice);
        let made = (|| {
            let limits = Limits::from_rspec(rspec, &self.settings.defaults);
            let mut enforcement = Enforcement::default();
            if let Some(unavailable) = dirs.create(&ids, limits.disk)? {
                if self.settings.require_quota {
                    return Err(NodeError::QuotaUnavailable(unavailable));
                }
                tracing::info!(%slice, "{unavailable}");
                enforcement.quota_unavailable = Some(unavailable.to_string());
            }
            self.apply_limits(&cgroups, &cgroup, &limits, &mut enforcement)?;
            let state = SliverState {
                slice: slice.clone(),
                rspec: rspec.clone(),
                keys: keys.clone(),
                ids,
                created: Timestamp::now(),
                desired,
                origin,
                initscript: initscript.clone(),
                initscript_ran: false,
                configured: false,
            };
            // The table and the state file are written at the same time, so
            // their syncs share the file system's journal commits. A crash
            // between the two leaves a state file whose range the table
            // lacks (restore adopts it) or a range without a state file
            // (restore frees it).
            let (saved_table, saved_state) = both(|| table.save(), || state.save(&states));
            saved_table?;
            saved_state?;
            Ok(enforcement)
        })();
        match made {
            Ok(enforcement) => Ok(Created { ids, enforcement }),
            Err(e) => {
                let _ = cgroup.remove();
                let _ = dirs.remove(&ids);
                let _ = SliverState::remove(&states, slice);
                table.unreserve(slice);
                let _ = table.save();
                Err(e)
            }
        }
    }

    /// Makes the sliver's cgroup and writes its limits, reading each back.
    fn apply_limits(
        &self,
        cgroups: &CgroupRoot,
        cgroup: &SliverCgroup,
        limits: &Limits,
        enforcement: &mut Enforcement,
    ) -> Result<(), NodeError> {
        let unavailable = cgroups.prepare()?;
        cgroup.create()?;
        match unavailable {
            None => {
                enforcement.limits = Enforcement::limits_from(cgroup.apply(&limits.writes())?);
                enforcement.limits_unavailable = None;
            }
            Some(u) if self.settings.require_limits => return Err(u.into()),
            Some(u) => {
                tracing::info!(cgroup = %cgroup.path().display(), "{u}");
                enforcement.limits_unavailable = Some(u.to_string());
            }
        }
        Ok(())
    }

    /// Starts a stopped sliver: limits and quota written again (the rspec
    /// may have changed), its PID 1 started in new namespaces in its cgroup,
    /// its root built. Marks it to be running after a reboot.
    pub fn start(&self, slice: &SliceName) -> Result<Started, NodeError> {
        self.load(slice)?;
        let _lock = self.lock()?;
        self.start_locked(slice)
    }

    fn start_locked(&self, slice: &SliceName) -> Result<Started, NodeError> {
        let mut state = self.load(slice)?;
        self.check_reference_root()?;
        let cgroups = self.cgroups()?;
        let cgroup = cgroups.sliver(slice);
        if cgroup.exists() && cgroup.populated()? {
            return Err(NodeError::AlreadyRunning(slice.clone()));
        }
        storage::prepare(&self.settings.slivers_fs)?;
        let limits = Limits::from_rspec(&state.rspec, &self.settings.defaults);
        let mut enforcement = Enforcement::default();
        self.apply_limits(&cgroups, &cgroup, &limits, &mut enforcement)?;
        let dirs = self.dirs(slice);
        if let Err(unavailable) = dirs.set_quota(&state.ids, limits.disk) {
            if self.settings.require_quota {
                return Err(unavailable.into());
            }
            enforcement.quota_unavailable = Some(unavailable.to_string());
        }
        let run = self.settings.sliver_run_dir(slice);
        let plan = InitPlan {
            slice: slice.to_string(),
            lower: run.join("lower"),
            root: run.join("root"),
            upper: dirs.upper.clone(),
            work: dirs.work.clone(),
            tmp_size: self.settings.defaults.tmp.bytes(),
            api_dir: Some(self.settings.api_dir()),
            files: slice_files(&state),
        };
        for dir in [&plan.lower, &plan.root, &self.settings.api_dir()] {
            fs::create_dir_all(dir).map_err(io_err("making", dir))?;
        }
        let cgroup_dir = cgroup.open_dir()?;
        let started = spawn::start_init(
            &self.settings.helper_program,
            cgroup_dir.as_fd(),
            &state.ids,
            &self.settings.reference_root,
            &plan,
            START_TIMEOUT,
        )
        .map_err(|source| NodeError::Spawn {
            slice: slice.clone(),
            source,
        })?;
        if state.desired != Desired::Running {
            state.desired = Desired::Running;
            state.save(&self.settings.sliver_states())?;
        }
        Ok(Started {
            pid: started.pid,
            enforcement,
        })
    }

    /// Stops a sliver: freezes its cgroup, kills everything in it, waits
    /// until it is empty, removes the group. Its mounts lived in its own
    /// mount namespace and are gone with it. Marks it to stay stopped after
    /// a reboot.
    pub fn stop(&self, slice: &SliceName) -> Result<(), NodeError> {
        self.load(slice)?;
        let _lock = self.lock()?;
        let mut state = self.load(slice)?;
        self.kill(slice)?;
        if state.desired != Desired::Stopped {
            state.desired = Desired::Stopped;
            state.save(&self.settings.sliver_states())?;
        }
        Ok(())
    }

    fn kill(&self, slice: &SliceName) -> Result<(), NodeError> {
        let cgroup = self.cgroups()?.sliver(slice);
        if !cgroup.exists() {
            return Ok(());
        }
        let init = find_init(&cgroup)?;
        cgroup.freeze_and_kill(STOP_TIMEOUT)?;
        if let Some(pid) = init {
            reap_if_child(pid);
        }
        // A group that has seen cgroup.kill is not used again: some kernels
        // (6.18 here) then kill every child cloned into it with
        // CLONE_INTO_CGROUP. A stopped sliver has no cgroup; start makes a
        // fresh one.
        cgroup.remove()?;
        Ok(())
    }

    /// Deletes a sliver: stops it, removes its cgroup, its writable layer,
    /// its run-time directories and state file, and returns its id range.
    pub fn delete(&self, slice: &SliceName) -> Result<(), NodeError> {
        self.load(slice)?;
        let _lock = self.lock()?;
        let state = self.load(slice)?;
        self.remove_everything(slice, Some(state.ids))
    }

    fn remove_everything(&self, slice: &SliceName, ids: Option<IdRange>) -> Result<(), NodeError> {
        self.kill(slice)?;
        self.cgroups()?.sliver(slice).remove()?;
        let mut table = self.id_table()?;
        if let Some(ids) = ids.or_else(|| table.get(slice)) {
            self.dirs(slice).remove(&ids)?;
        }
        let run = self.settings.sliver_run_dir(slice);
        match fs::remove_dir_all(&run) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &run)(e)),
        }
        table.unreserve(slice);
        let states = self.settings.sliver_states();
        let (saved_table, removed_state) =
            both(|| table.save(), || SliverState::remove(&states, slice));
        removed_state?;
        saved_table?;
        Ok(())
    }

    /// Every sliver with its state.
    pub fn list(&self) -> Result<Vec<SliverSummary>, NodeError> {
        let cgroups = self.cgroups()?;
        let mut out = Vec::new();
        for slice in SliverState::list(&self.settings.sliver_states())? {
            let state = self.load(&slice)?;
            let pid = find_init(&cgroups.sliver(&slice))?;
            out.push(SliverSummary {
                slice,
                desired: state.desired,
                pid,
                ids: state.ids,
            });
        }
        Ok(out)
    }

    /// State, limits read back and usage of one sliver.
    pub fn show(&self, slice: &SliceName) -> Result<SliverReport, NodeError> {
        let state = self.load(slice)?;
        let cgroups = self.cgroups()?;
        let cgroup = cgroups.sliver(slice);
        let mut limits = Vec::new();
        for w in Limits::from_rspec(&state.rspec, &self.settings.defaults).writes() {
            if let Some(v) = cgroup.read(w.file)? {
                limits.push((w.file.to_string(), v));
            }
        }
        let limits_unavailable = cgroups.check()?.map(|u| u.to_string());
        let number = |v: Option<String>| v.and_then(|s| s.parse::<u64>().ok());
        let cpu_usec = cgroup.read("cpu.stat")?.and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("usage_usec ").and_then(|v| v.parse().ok()))
        });
        let dirs = self.dirs(slice);
        let quota_unavailable = fs::File::open(&dirs.top)
            .ok()
            .and_then(|f| sys::project_quota_info(f.as_fd()).err())
            .map(|e| format!("disk quota not enforced: {}: {e}", dirs.top.display()));
        Ok(SliverReport {
            pid: find_init(&cgroup)?,
            processes: cgroup.procs()?.len(),
            cgroup: cgroup.path().to_path_buf(),
            limits,
            limits_unavailable,
            memory_bytes: number(cgroup.read("memory.current")?),
            pids: number(cgroup.read("pids.current")?),
            cpu_usec,
            disk_bytes: dirs.usage(&state.ids),
            quota_unavailable,
            state,
        })
    }

    /// Runs a command (or a shell) inside a running sliver. With
    /// `pty`, the returned [`Entered`] holds the terminal's master side.
    pub fn enter(&self, slice: &SliceName, options: &EnterOptions) -> Result<Entered, NodeError> {
        self.enter_with_stdio(slice, options, None)
    }

    /// [`Self::enter`] with the command's stdin, stdout and stderr given
    /// (without a terminal; a caller that passed its own descriptors, such
    /// as an ssh login over the API).
    pub fn enter_with_stdio(
        &self,
        slice: &SliceName,
        options: &EnterOptions,
        stdio: Option<[std::os::fd::BorrowedFd<'_>; 3]>,
    ) -> Result<Entered, NodeError> {
        self.load(slice)?;
        let plan = EnterPlan {
            slice: slice.to_string(),
            command: options.command.clone(),
            as_slice_user: options.as_slice_user,
            pty: options.pty,
            term: options.term.clone(),
            files: None,
            run: true,
            script: None,
        };
        let (cgroup_dir, pidfd) = self.running_init(slice)?;
        spawn::start_enter(
            &self.settings.helper_program,
            cgroup_dir.as_fd(),
            pidfd.as_fd(),
            &plan,
            stdio,
        )
        .map_err(|source| NodeError::Spawn {
            slice: slice.clone(),
            source,
        })
    }

    /// The cgroup directory and a pidfd of PID 1 of a running sliver.
    fn running_init(
        &self,
        slice: &SliceName,
    ) -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), NodeError> {
        let cgroup = self.cgroups()?.sliver(slice);
        let pid = find_init(&cgroup)?.ok_or_else(|| NodeError::NotRunning(slice.clone()))?;
        let pidfd = sys::pidfd_open(pid).map_err(|_| NodeError::NotRunning(slice.clone()))?;
        // The pid could have been reused between the lookup and the open.
        if find_init(&cgroup)? != Some(pid) {
            return Err(NodeError::NotRunning(slice.clone()));
        }
        Ok((cgroup.open_dir()?, pidfd))
    }

    /// Runs a node's script inside a running sliver (as root inside, or
    /// as the slice's user): `command` with `run`'s timeout, capture and
    /// treatment of a missing program.
    pub fn run_script(
        &self,
        slice: &SliceName,
        command: Vec<String>,
        as_slice_user: bool,
        run: ScriptRun,
    ) -> Result<RunOutcome, NodeError> {
        self.load(slice)?;
        let plan = EnterPlan {
            slice: slice.to_string(),
            command,
            as_slice_user,
            pty: false,
            term: None,
            files: None,
            run: true,
            script: Some(run),
        };
        self.inside(slice, &plan, Duration::from_secs(run.timeout_secs))
    }

    fn inside(
        &self,
        slice: &SliceName,
        plan: &EnterPlan,
        timeout: Duration,
    ) -> Result<RunOutcome, NodeError> {
        let (cgroup_dir, pidfd) = self.running_init(slice)?;
        spawn::run_inside(
            &self.settings.helper_program,
            cgroup_dir.as_fd(),
            pidfd.as_fd(),
            plan,
            // The helper enforces the script's timeout; this only stops
            // waiting for a helper that itself hangs.
            timeout + Duration::from_secs(30),
        )
        .map_err(|source| NodeError::Spawn {
            slice: slice.clone(),
            source,
        })
    }

    /// Rewrites the files the node keeps inside a running sliver (keys,
    /// resources, lease, initscript) from its state; a stopped sliver gets
    /// them at its next start.
    pub fn refresh_files(&self, slice: &SliceName) -> Result<(), NodeError> {
        let state = self.load(slice)?;
        if find_init(&self.cgroups()?.sliver(slice))?.is_none() {
            return Ok(());
        }
        let plan = EnterPlan {
            slice: slice.to_string(),
            command: Vec::new(),
            as_slice_user: false,
            pty: false,
            term: None,
            files: Some(slice_files(&state)),
            run: false,
            script: None,
        };
        self.inside(slice, &plan, Duration::from_secs(30))
            .map(|_| ())
    }

    /// Changes a sliver's state file with `change` (under the lock) and
    /// returns the new state.
    pub fn update_state(
        &self,
        slice: &SliceName,
        change: impl FnOnce(&mut SliverState),
    ) -> Result<SliverState, NodeError> {
        let _lock = self.lock()?;
        let mut state = self.load(slice)?;
        let before = state.clone();
        change(&mut state);
        // What the sliver is stays what it is.
        state.slice = before.slice.clone();
        state.ids = before.ids;
        if state != before {
            state.save(&self.settings.sliver_states())?;
        }
        Ok(state)
    }

    /// Puts a new rspec in effect: saved, and on a running sliver its
    /// cgroup limits and disk quota written (each read back) and its
    /// `resources` and lease files rewritten. Returns the limits read back.
    pub fn set_rspec(&self, slice: &SliceName, rspec: &Rspec) -> Result<Enforcement, NodeError> {
        rspec.validate().map_err(NodeError::Rspec)?;
        let state = self.update_state(slice, |s| s.rspec = rspec.clone())?;
        let limits = Limits::from_rspec(&state.rspec, &self.settings.defaults);
        let mut enforcement = Enforcement::default();
        let cgroups = self.cgroups()?;
        let cgroup = cgroups.sliver(slice);
        if cgroup.exists() {
            match cgroups.check()? {
                None => {
                    enforcement.limits = Enforcement::limits_from(cgroup.apply(&limits.writes())?)
                }
                Some(u) if self.settings.require_limits => return Err(u.into()),
                Some(u) => enforcement.limits_unavailable = Some(u.to_string()),
            }
        }
        if let Err(unavailable) = self.dirs(slice).set_quota(&state.ids, limits.disk) {
            if self.settings.require_quota {
                return Err(unavailable.into());
            }
            enforcement.quota_unavailable = Some(unavailable.to_string());
        }
        self.refresh_files(slice)?;
        Ok(enforcement)
    }

    /// After a boot or a crash: starts every sliver that should run and
    /// does not, and removes leftovers of interrupted deletes (id ranges
    /// and cgroups with no state file). One sliver's failure does not
    /// stop the others; it is reported.
    pub fn restore(&self) -> Result<Restored, NodeError> {
        let _lock = self.lock()?;
        let mut report = Restored::default();
        let cgroups = self.cgroups()?;
        let states = SliverState::list(&self.settings.sliver_states())?;
        // The table may have lost a range that a state file names (a crash
        // while both were written): take it back first.
        let mut table = self.id_table()?;
        let mut adopted = false;
        for slice in &states {
            let state = self.load(slice)?;
            if table.get(slice) != Some(state.ids) {
                table.adopt(slice, state.ids)?;
                adopted = true;
                report
                    .cleaned
                    .push(format!("id range of {slice} put back into the table"));
            }
        }
        if adopted {
            table.save()?;
        }
        for slice in &states {
            let state = self.load(slice)?;
            if state.desired != Desired::Running {
                continue;
            }
            if find_init(&cgroups.sliver(slice))?.is_some() {
                report.running.push(slice.clone());
                continue;
            }
            // A sliver whose PID 1 died leaves processes behind: clear them.
            if let Err(e) = self
                .kill(slice)
                .and_then(|()| self.start_locked(slice).map(|_| ()))
            {
                tracing::error!(%slice, "{e}");
                report.failed.push((slice.clone(), floor_line(&e)));
            } else {
                report.started.push(slice.clone());
            }
        }
        let table = self.id_table()?;
        let orphans: Vec<SliceName> = table
            .iter()
            .filter(|(s, _)| !states.contains(s))
            .map(|(s, _)| s.clone())
            .collect();
        for slice in orphans {
            self.remove_everything(&slice, None)?;
            report
                .cleaned
                .push(format!("id range and files of {slice}"));
        }
        for group in cgroups.sliver_groups()? {
            let known = SliceName::new(&group).is_ok_and(|s| states.contains(&s));
            if !known {
                let cgroup = SliverCgroup::at(cgroups.slivers_dir().join(&group));
                cgroup.freeze_and_kill(STOP_TIMEOUT)?;
                cgroup.remove()?;
                report
                    .cleaned
                    .push(format!("cgroup {}", cgroup.path().display()));
            }
        }
        Ok(report)
    }
}

/// Runs `a` on another thread and `b` on this one; both results.
fn both<A: Send, B>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B) -> (A, B) {
    std::thread::scope(|scope| {
        let other = scope.spawn(a);
        let mine = b();
        let theirs = match other.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (theirs, mine)
    })
}

fn floor_line(e: &(dyn std::error::Error + 'static)) -> String {
    floor::report::one_line(std::iter::successors(Some(e), |e| e.source()))
}

/// The files the node keeps inside a sliver, from its state.
pub fn slice_files(state: &SliverState) -> SliceFiles {
    SliceFiles {
        authorized_keys: state.keys.to_file(),
        resources: resources_file(state),
        lease: match state.rspec.lease_end {
            Some(end) => format!("{end}\n"),
            None => "none\n".to_string(),
        },
        initscript: state.initscript.clone(),
    }
}

/// The `resources` file of the Phase 0 spec: the slice and the rspec in
/// effect, as TOML.
fn resources_file(state: &SliverState) -> String {
    #[derive(Serialize)]
    struct Resources<'a> {
        slice: &'a str,
        rspec: &'a Rspec,
    }
    let body = toml::to_string(&Resources {
        slice: state.slice.as_str(),
        rspec: &state.rspec,
    })
    .unwrap_or_default();
    format!(
        "# The resources of slice {} on this node, rewritten by the node when they change.\n{body}",
        state.slice
    )
}

/// The pids of a process in each PID namespace, ours first (`NSpid:`).
fn ns_pids(status: &str) -> Vec<&str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|ids| ids.split_whitespace().collect())
        .unwrap_or_default()
}

/// The sliver's PID 1: the process in its cgroup that is pid 1 of a PID
/// namespace exactly one level below ours (a PID namespace the sliver made
/// inside itself has an init of its own, one level further down).
pub fn find_init(cgroup: &SliverCgroup) -> Result<Option<i32>, CgroupError> {
    if !cgroup.exists() {
        return Ok(None);
    }
    let own = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let depth = ns_pids(&own).len().max(1);
    for pid in cgroup.procs()? {
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        // A PID 1 that died and was not reaped yet (nodemgr serve is its
        // parent) is not a running sliver.
        if status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains("zombie"))
        {
            continue;
        }
        let ids = ns_pids(&status);
        if ids.len() == depth + 1 && ids.last() == Some(&"1") {
            return Ok(Some(pid));
        }
    }
    Ok(None)
}

/// Reaps `pid` if it is a child of this process (a sliver started by this
/// process and now killed); leaves others to their parent.
fn reap_if_child(pid: i32) {
    let parent = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The command name may hold spaces: fields follow the last ')'.
            s.rsplit_once(')').and_then(|(_, rest)| {
                rest.split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse::<u32>().ok())
            })
        });
    if parent == Some(std::process::id()) {
        // SAFETY: waitpid on a child of ours; its pid stays reserved
        // until reaped, so this cannot take another process's status.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
}
