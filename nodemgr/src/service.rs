//! The node manager service's operations, as the local API and the
//! reconciliation with the boot server call them: who may do what
//! ([`Principal`]), rcaps and admission control, and the `PlanetLab-control`
//! scripts around each sliver's life.
//!
//! Every operation takes the caller. Root on the node may do anything; a
//! slice's sliver acts on its own slice only, unless its rspec says
//! `privileged` (a broker), which may also acquire rcaps and bind them to
//! other slices. Operations are blocking (they start processes and wait
//! for the kernel): the API runs them off its event loop.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use config::rspec::Rspec;
use config::Timestamp;
use serde::{Deserialize, Serialize};

use crate::admission::{self, Capacity, Refused, Reserved};
use crate::ids::RANGE_SIZE;
use crate::inside::{RunOutcome, RunStatus, ScriptRun, INITSCRIPT_PATH};
use crate::keys::AuthorizedKeys;
use crate::manager::{EnterOptions, NodeError, NodeManager, SliverReport, SliverSummary};
use crate::name::SliceName;
use crate::rcap::{Principal, Rcap, RcapError, RcapTable};
use crate::spawn::Entered;
use crate::state::{Origin, SliverState};

/// Bytes of a `status` script's output that are kept.
pub const STATUS_OUTPUT_MAX: usize = 4096;

/// A lifecycle event, sent as a D-Bus signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The slice.
    pub slice: SliceName,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to a sliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Made and started.
    Created,
    /// Started.
    Started,
    /// Stopped.
    Stopped,
    /// Removed.
    Deleted,
    /// Its rspec or keys changed.
    Changed,
    /// Its lease ended; it was removed.
    LeaseEnded,
}

impl EventKind {
    /// The word used in signals and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Started => "started",
            EventKind::Stopped => "stopped",
            EventKind::Deleted => "deleted",
            EventKind::Changed => "changed",
            EventKind::LeaseEnded => "lease_ended",
        }
    }
}

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The caller is not root and not a process of any sliver.
    #[error("host uid {0} is neither root nor a sliver's: refused")]
    Stranger(u32),
    /// The caller may not act on that slice.
    #[error("{caller} may not act on slice {target}: a sliver acts on itself only, unless its rspec is privileged")]
    Forbidden {
        /// Who asked.
        caller: Principal,
        /// The slice it named.
        target: SliceName,
    },
    /// Only root and privileged slices acquire.
    #[error("{0} may not acquire resources: only the node and privileged slices (brokers) do")]
    NotBroker(Principal),
    /// The rspec is out of range.
    #[error("rspec out of range: {0}")]
    Rspec(String),
    /// Admission control said no.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The rcap table.
    #[error(transparent)]
    Rcap(#[from] RcapError),
    /// No randomness for a new rcap.
    #[error("drawing a new rcap: {0}")]
    Random(getrandom::Error),
    /// The sliver operation.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A session started with `enter`.
    #[error("the session: {0}")]
    Session(#[source] crate::spawn::SpawnError),
}

/// A sliver as a caller of the API sees it in a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SliverInfo {
    /// The slice.
    pub slice: SliceName,
    /// Whether it should run (`running`, `stopped`).
    pub desired: String,
    /// Host pid of its PID 1 when running.
    pub pid: Option<i32>,
    /// Who made it (`server`, `local`).
    pub origin: String,
    /// Its lease end, if any.
    pub lease_end: Option<Timestamp>,
}

/// Everything `show` tells about a sliver.
#[derive(Debug, Clone, Serialize)]
pub struct SliverDetails {
    /// State, limits read back, usage.
    pub report: SliverReport,
    /// Who made it.
    pub origin: Origin,
    /// Seconds of lease left (`None`: no lease end).
    pub lease_left_secs: Option<i64>,
    /// The `status` script's outcome, when the sliver runs.
    pub status: Option<RunOutcome>,
}

/// Time between two attempts at a sliver's initscript and `configure`
/// when their helper failed.
const AFTER_START_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// The node manager service over one [`NodeManager`].
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    manager: NodeManager,
    capacity: Mutex<Capacity>,
    /// Serialises read-modify-write of the rcap table and admission.
    table: Mutex<()>,
    events: tokio::sync::broadcast::Sender<Event>,
    /// Slivers whose after-start scripts are running now (never two runs
    /// for one sliver at once).
    after_start: Mutex<std::collections::BTreeSet<SliceName>>,
}

impl Service {
    /// A service over `manager` promising at most `capacity`.
    pub fn new(manager: NodeManager, capacity: Capacity) -> Service {
        let (events, _) = tokio::sync::broadcast::channel(256);
        Service {
            inner: Arc::new(Inner {
                manager,
                capacity: Mutex::new(capacity),
                table: Mutex::new(()),
                events,
                after_start: Mutex::new(std::collections::BTreeSet::new()),
            }),
        }
    }

    /// The node manager.
    pub fn manager(&self) -> &NodeManager {
        &self.inner.manager
    }

    /// Lifecycle events from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    fn emit(&self, slice: &SliceName, kind: EventKind) {
        tracing::info!(%slice, event = kind.as_str(), "sliver");
        // The node's event journal (the sensors stream it); best effort.
        let event = config::events::NodeEvent::now(
            config::events::EventKind::Sliver,
            slice.as_str(),
            kind.as_str(),
        );
        if let Err(e) = config::events::journal().append(&event.to_line()) {
            tracing::debug!("event journal: {e}");
        }
        let _ = self.inner.events.send(Event {
            slice: slice.clone(),
            kind,
        });
    }

    /// The node's capacity for guarantees.
    pub fn capacity(&self) -> Capacity {
        *self
            .inner
            .capacity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the outgoing bandwidth guarantees are taken from (the site's
    /// cap for the node, from the boot server).
    pub fn set_bandwidth(&self, bandwidth: config::units::Rate) {
        self.inner
            .capacity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bandwidth = bandwidth;
    }

    fn rcaps_path(&self) -> PathBuf {
        self.manager().settings().state_dir.join("rcaps.json")
    }

    fn state(&self, slice: &SliceName) -> Result<Option<SliverState>, ServiceError> {
        Ok(
            SliverState::load(&self.manager().settings().sliver_states(), slice)
                .map_err(NodeError::from)?,
        )
    }

    fn states(&self) -> Result<Vec<SliverState>, ServiceError> {
        let dir = self.manager().settings().sliver_states();
        let mut out = Vec::new();
        for slice in SliverState::list(&dir).map_err(NodeError::from)? {
            if let Some(state) = SliverState::load(&dir, &slice).map_err(NodeError::from)? {
                out.push(state);
            }
        }
        Ok(out)
    }

    /// Who a caller with host uid `uid` is: root is the node, an id in a
    /// sliver's range is that sliver's slice, anyone else is refused.
    pub fn principal_of(&self, uid: u32) -> Result<Principal, ServiceError> {
        if uid == 0 {
            return Ok(Principal::Node);
        }
        for state in self.states()? {
            let first = state.ids.first;
            if uid >= first && u64::from(uid) < u64::from(first) + u64::from(RANGE_SIZE) {
                return Ok(Principal::Slice(state.slice));
            }
        }
        Err(ServiceError::Stranger(uid))
    }

    /// Whether `who` acts for others: the node, or a privileged slice.
    pub fn is_privileged(&self, who: &Principal) -> Result<bool, ServiceError> {
        self.privileged(who)
    }

    fn privileged(&self, who: &Principal) -> Result<bool, ServiceError> {
        Ok(match who {
            Principal::Node => true,
            Principal::Slice(s) => self.state(s)?.is_some_and(|st| st.rspec.privileged),
        })
    }

    /// Refuses unless `who` may act on `target`.
    pub fn authorize(&self, who: &Principal, target: &SliceName) -> Result<(), ServiceError> {
        match who {
            Principal::Slice(s) if s != target && !self.privileged(who)? => {
                Err(ServiceError::Forbidden {
                    caller: who.clone(),
                    target: target.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// What is reserved now, leaving out the sliver of `except`.
    fn reserved(
        &self,
        table: &RcapTable,
        except: Option<&SliceName>,
    ) -> Result<Reserved, ServiceError> {
        let states = self.states()?;
        let slivers = states
            .iter()
            .filter(|s| Some(&s.slice) != except)
            .map(|s| &s.rspec);
        Ok(Reserved::of(slivers.chain(table.unbound_rspecs())))
    }

    /// `acquire(rspec)`: an rcap for `rspec` if the node can promise it.
    pub fn acquire(&self, who: &Principal, rspec: &Rspec) -> Result<Rcap, ServiceError> {
        if !self.privileged(who)? {
            return Err(ServiceError::NotBroker(who.clone()));
        }
        self.acquire_replacing(who, rspec, None)
    }

    /// Acquires for a sliver's new rspec: its current reservation is not
    /// counted against it (it goes when the new rcap is bound).
    fn acquire_replacing(
        &self,
        who: &Principal,
        rspec: &Rspec,
        replacing: Option<&SliceName>,
    ) -> Result<Rcap, ServiceError> {
        rspec.validate().map_err(ServiceError::Rspec)?;
        let _table = self.inner.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut table = RcapTable::load(&self.rcaps_path())?;
        let now = Timestamp::now();
        table.expire(now);
        let reserved = self.reserved(&table, replacing)?;
        admission::admit(&self.capacity(), &reserved, rspec)?;
        let rcap = Rcap::generate().map_err(ServiceError::Random)?;
        table.insert(&rcap, rspec.clone(), who.clone(), now);
        table.save()?;
        Ok(rcap)
    }

    /// `bind(slice, rcap)`: the rcap's resources go to `slice`'s sliver,
    /// which is made and started when it does not exist. The rcap is bound
    /// once; the rcap bound to the slice before is released.
    pub fn bind(
        &self,
        who: &Principal,
        slice: &SliceName,
        rcap: &Rcap,
    ) -> Result<(), ServiceError> {
        self.authorize(who, slice)?;
        self.bind_as(slice, rcap, Origin::Local, None)
    }

    fn bind_as(
        &self,
        slice: &SliceName,
        rcap: &Rcap,
        origin: Origin,
        new: Option<(&AuthorizedKeys, Option<String>)>,
    ) -> Result<(), ServiceError> {
        let _table = self.inner.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut table = RcapTable::load(&self.rcaps_path())?;
        let rspec = table.unbound(rcap)?.rspec.clone();
        let created = match self.state(slice)? {
            Some(_) => {
                self.manager().set_rspec(slice, &rspec)?;
                false
            }
            None => {
                let (keys, initscript) = match new {
                    Some((k, i)) => (k.clone(), i),
                    None => (AuthorizedKeys::default(), None),
                };
                self.manager()
                    .create_and_start_from(slice, &rspec, &keys, origin, initscript)?;
                true
            }
        };
        table.bind(rcap, slice)?;
        table.save()?;
        drop(_table);
        if created {
            self.emit(slice, EventKind::Created);
            self.after_start_in_background(slice.clone());
        } else {
            self.emit(slice, EventKind::Changed);
        }
        Ok(())
    }

    /// Makes a sliver for a slice the boot server assigned (acquire and
    /// bind as the node).
    pub fn create_for_server(
        &self,
        slice: &SliceName,
        rspec: &Rspec,
        keys: &AuthorizedKeys,
        initscript: Option<String>,
    ) -> Result<(), ServiceError> {
        let rcap = self.acquire_replacing(&Principal::Node, rspec, None)?;
        let result = self.bind_as(slice, &rcap, Origin::Server, Some((keys, initscript)));
        if result.is_err() {
            self.release_unbound(&rcap);
        }
        result
    }

    /// Puts a new rspec into an existing sliver, admission-controlled
    /// against everything but the sliver's current rspec.
    pub fn change_rspec(&self, slice: &SliceName, rspec: &Rspec) -> Result<(), ServiceError> {
        let rcap = self.acquire_replacing(&Principal::Node, rspec, Some(slice))?;
        let result = self.bind_as(slice, &rcap, Origin::Server, None);
        if result.is_err() {
            self.release_unbound(&rcap);
        }
        result
    }

    fn release_unbound(&self, rcap: &Rcap) {
        let _table = self.inner.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(mut table) = RcapTable::load(&self.rcaps_path()) {
            if table.remove_unbound(rcap) {
                let _ = table.save();
            }
        }
    }

    /// Replaces the slice users' keys (a running sliver gets them at once).
    pub fn set_keys(
        &self,
        who: &Principal,
        slice: &SliceName,
        keys: &AuthorizedKeys,
    ) -> Result<(), ServiceError> {
        self.authorize(who, slice)?;
        let before = self.manager().update_state(slice, |_| {})?;
        if &before.keys == keys {
            return Ok(());
        }
        self.manager()
            .update_state(slice, |s| s.keys = keys.clone())?;
        self.manager().refresh_files(slice)?;
        self.emit(slice, EventKind::Changed);
        Ok(())
    }

    /// Records the slice's initscript (it runs once, after creation: a
    /// new one does not run again in an existing sliver).
    pub fn set_initscript(
        &self,
        slice: &SliceName,
        initscript: Option<String>,
    ) -> Result<(), ServiceError> {
        self.manager()
            .update_state(slice, |s| s.initscript = initscript)?;
        Ok(())
    }

    /// Makes a sliver the server's (a slice it now assigns that was made
    /// on the node).
    pub fn adopt(&self, slice: &SliceName) -> Result<(), ServiceError> {
        self.manager()
            .update_state(slice, |s| s.origin = Origin::Server)?;
        Ok(())
    }

    /// Starts a stopped sliver, then its `start` script.
    pub fn start(&self, who: &Principal, slice: &SliceName) -> Result<(), ServiceError> {
        self.authorize(who, slice)?;
        self.manager().start(slice)?;
        self.emit(slice, EventKind::Started);
        self.after_start_in_background(slice.clone());
        Ok(())
    }

    /// Runs the `stop` script, then stops the sliver.
    pub fn stop(&self, who: &Principal, slice: &SliceName) -> Result<(), ServiceError> {
        self.authorize(who, slice)?;
        self.manager().show(slice)?;
        self.stop_script(slice);
        self.manager().stop(slice)?;
        self.emit(slice, EventKind::Stopped);
        Ok(())
    }

    /// Runs the `stop` script, then removes the sliver and releases its rcap.
    pub fn delete(&self, who: &Principal, slice: &SliceName) -> Result<(), ServiceError> {
        self.authorize(who, slice)?;
        self.remove(slice, EventKind::Deleted)
    }

    fn remove(&self, slice: &SliceName, kind: EventKind) -> Result<(), ServiceError> {
        if self.state(slice)?.is_none() {
            return Err(NodeError::Unknown(slice.clone()).into());
        }
        self.stop_script(slice);
        self.manager().delete(slice)?;
        {
            let _table = self.inner.table.lock().unwrap_or_else(|p| p.into_inner());
            let mut table = RcapTable::load(&self.rcaps_path())?;
            if table.release_slice(slice) {
                table.save()?;
            }
        }
        self.emit(slice, kind);
        Ok(())
    }

    /// The slivers `who` may see: all for the node and brokers, its own
    /// for any other slice.
    pub fn list(&self, who: &Principal) -> Result<Vec<SliverInfo>, ServiceError> {
        let all = self.privileged(who)?;
        let summaries: Vec<SliverSummary> = self.manager().list()?;
        let mut out = Vec::new();
        for s in summaries {
            if !all && Principal::Slice(s.slice.clone()) != *who {
                continue;
            }
            let state = self.state(&s.slice)?;
            out.push(SliverInfo {
                desired: serde_json::to_value(s.desired)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                pid: s.pid,
                origin: match state.as_ref().map(|st| st.origin) {
                    Some(Origin::Server) => "server".into(),
                    _ => "local".into(),
                },
                lease_end: state.and_then(|st| st.rspec.lease_end),
                slice: s.slice,
            });
        }
        Ok(out)
    }

    /// State, limits, usage, remaining lease and the `status` script's
    /// output of a sliver.
    pub fn show(&self, who: &Principal, slice: &SliceName) -> Result<SliverDetails, ServiceError> {
        self.authorize(who, slice)?;
        let report = self.manager().show(slice)?;
        let status = if report.pid.is_some() {
            match self.control_script(slice, "status", Some(STATUS_OUTPUT_MAX)) {
                Ok(outcome) => Some(outcome),
                Err(e) => {
                    tracing::warn!(%slice, "status script: {}", line(&e));
                    None
                }
            }
        } else {
            None
        };
        let lease_left_secs = report
            .state
            .rspec
            .lease_end
            .map(|end| end.unix() - Timestamp::now().unix());
        Ok(SliverDetails {
            origin: report.state.origin,
            report,
            lease_left_secs,
            status,
        })
    }

    /// A command (or a login shell) inside `slice`'s sliver with the
    /// caller's stdio or a terminal: root's enter, or a slice user's login
    /// (as the slice's user, into its own sliver only).
    pub fn enter(
        &self,
        who: &Principal,
        slice: &SliceName,
        options: &EnterOptions,
        stdio: Option<[std::os::fd::BorrowedFd<'_>; 3]>,
    ) -> Result<Entered, ServiceError> {
        let options = match who {
            Principal::Node => options.clone(),
            Principal::Slice(own) if own == slice => EnterOptions {
                as_slice_user: true,
                ..options.clone()
            },
            Principal::Slice(_) => {
                return Err(ServiceError::Forbidden {
                    caller: who.clone(),
                    target: slice.clone(),
                })
            }
        };
        Ok(self.manager().enter_with_stdio(slice, &options, stdio)?)
    }

    /// Removes every sliver whose lease ended by `now` (its `stop` script
    /// first) and releases unbound rcaps whose lease ended; the slices
    /// removed, and failures.
    pub fn end_leases(&self, now: Timestamp) -> (Vec<SliceName>, Vec<(SliceName, String)>) {
        let (mut ended, mut failed) = (Vec::new(), Vec::new());
        if let Ok(states) = self.states() {
            for state in states {
                if state.rspec.lease_end.is_some_and(|end| end <= now) {
                    match self.remove(&state.slice, EventKind::LeaseEnded) {
                        Ok(()) => ended.push(state.slice),
                        Err(e) => failed.push((state.slice, line(&e))),
                    }
                }
            }
        }
        let _table = self.inner.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(mut table) = RcapTable::load(&self.rcaps_path()) {
            if table.expire(now) > 0 {
                let _ = table.save();
            }
        }
        (ended, failed)
    }

    /// The next lease end after `now` among the slivers, if any.
    pub fn next_lease_end(&self) -> Option<Timestamp> {
        self.states()
            .ok()?
            .iter()
            .filter_map(|s| s.rspec.lease_end)
            .min()
    }

    /// Every sliver's state.
    pub fn sliver_states(&self) -> Result<Vec<SliverState>, ServiceError> {
        self.states()
    }

    // --- the PlanetLab-control scripts --------------------------------

    fn script_run(&self, capture: Option<usize>) -> ScriptRun {
        ScriptRun {
            timeout_secs: self.manager().settings().script_timeout.as_secs().max(1),
            capture,
            skip_if_missing: true,
        }
    }

    /// Runs `~/PlanetLab-control/<name>` as the slice's user; a missing
    /// script is skipped.
    pub fn control_script(
        &self,
        slice: &SliceName,
        name: &str,
        capture: Option<usize>,
    ) -> Result<RunOutcome, ServiceError> {
        let path = format!("/home/{slice}/PlanetLab-control/{name}");
        Ok(self
            .manager()
            .run_script(slice, vec![path], true, self.script_run(capture))?)
    }

    fn log_outcome(slice: &SliceName, what: &str, result: &Result<RunOutcome, ServiceError>) {
        match result {
            Ok(RunOutcome {
                status: RunStatus::Exited(code),
                ..
            }) => tracing::info!(%slice, "{what} exited {code}"),
            Ok(RunOutcome {
                status: RunStatus::TimedOut,
                ..
            }) => tracing::warn!(%slice, "{what} ran past its timeout and was killed"),
            Ok(RunOutcome {
                status: RunStatus::Skipped,
                ..
            }) => tracing::debug!(%slice, "no {what}"),
            Err(e) => tracing::warn!(%slice, "{what}: {}", line(e)),
        }
    }

    /// After a start: once after creation the initscript (root inside)
    /// and `configure`, then at every start `start` (the slice's user).
    /// A script that ran counts whatever its exit status; one that could
    /// not be run (its helper failed or hung) leaves the sliver
    /// unconfigured, and the next reconciliation pass tries again.
    pub fn after_start(&self, slice: &SliceName) {
        let Ok(Some(state)) = self.state(slice) else {
            return;
        };
        if !state.configured {
            let mut ran = false;
            let mut initscript = state.initscript.is_some() && !state.initscript_ran;
            // A helper that failed is tried again twice, a few seconds
            // apart, before the sliver waits for the next pass; an
            // initscript that ran is not run again.
            for attempt in 0..3 {
                if attempt > 0 {
                    std::thread::sleep(AFTER_START_RETRY);
                    if !matches!(self.state(slice), Ok(Some(_))) {
                        return;
                    }
                }
                ran = self.initscript_and_configure(slice, &mut initscript);
                if ran {
                    break;
                }
            }
            // The sliver may have gone while its scripts ran.
            if !matches!(self.state(slice), Ok(Some(_))) {
                return;
            }
            if !ran {
                tracing::warn!(%slice, "not configured yet: trying again at the next pass");
                return;
            }
            if let Err(e) = self.manager().update_state(slice, |s| s.configured = true) {
                tracing::warn!(%slice, "{}", line(&e));
            }
        }
        let r = self.control_script(slice, "start", None);
        Self::log_outcome(slice, "start", &r);
    }

    /// The initscript (when `initscript` says it is still to run; cleared
    /// once it ran), then `configure`; whether both could be run (whatever
    /// their exit status).
    fn initscript_and_configure(&self, slice: &SliceName, initscript: &mut bool) -> bool {
        if *initscript {
            let r = self
                .manager()
                .run_script(
                    slice,
                    vec!["/bin/sh".into(), INITSCRIPT_PATH.into()],
                    false,
                    self.script_run(None),
                )
                .map_err(ServiceError::from);
            Self::log_outcome(slice, "initscript", &r);
            if r.is_err() {
                return false;
            }
            *initscript = false;
            if let Err(e) = self
                .manager()
                .update_state(slice, |s| s.initscript_ran = true)
            {
                tracing::warn!(%slice, "{}", line(&e));
            }
        }
        let r = self.control_script(slice, "configure", None);
        Self::log_outcome(slice, "configure", &r);
        r.is_ok()
    }

    /// [`Self::after_start`] on a thread of its own: a slow script holds
    /// up nothing else. Nothing happens while the sliver's scripts run
    /// already.
    pub fn after_start_in_background(&self, slice: SliceName) {
        {
            let mut running = self
                .inner
                .after_start
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !running.insert(slice.clone()) {
                return;
            }
        }
        let service = self.clone();
        std::thread::spawn(move || {
            service.after_start(&slice);
            service
                .inner
                .after_start
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&slice);
        });
    }

    fn stop_script(&self, slice: &SliceName) {
        if self
            .manager()
            .list()
            .ok()
            .and_then(|l| l.into_iter().find(|s| &s.slice == slice))
            .and_then(|s| s.pid)
            .is_none()
        {
            return;
        }
        let r = self.control_script(slice, "stop", None);
        Self::log_outcome(slice, "stop", &r);
    }
}

/// An error and its causes on one line.
pub fn line(e: &(dyn std::error::Error + 'static)) -> String {
    floor::report::one_line(std::iter::successors(Some(e), |e| e.source()))
}
