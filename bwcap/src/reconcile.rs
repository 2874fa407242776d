//! One pass: read the kernel, bring it to the desired state, remember what
//! was counted. Idempotent: a second pass with the same input and no
//! traffic sends nothing.
//!
//! Order of a pass: check everything that can be checked (the state, the
//! interface, every cgroup, the programs that must be loaded) before the
//! first change; read counters from the kernel's class statistics; work out
//! the plan and the difference to the kernel; send it in one batch; attach
//! the classifiers; save the state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use config::units::Rate;
use config::Timestamp;

use crate::bpf::cgroup::Loaded;
use crate::bpf::{BpfError, Cgroup, Program};
use crate::budget;
use crate::counters::Counters;
use crate::desired::{DesiredState, InvalidState};
use crate::layout::{
    self, LeafPlan, Plan, PlannedClass, SliverClass, CLASS_DEFAULT, CLASS_ICMP, CLASS_IP_OPTIONS,
    CLASS_NODE, CLASS_NODE_CAP, EGRESS_GSO_MAX_SEGS, LEAF_FLOWS, LEAF_QUEUE_PACKETS,
};
use crate::link;
use crate::names::{InterfaceName, SliceName};
use crate::store::{DirLock, SliverRecord, State, StoreError};
use crate::tc::decode::QdiscOptions;
use crate::tc::{
    handle, major_of, minor_of, KernelClass, KernelQdisc, LeafQdisc, NetlinkError, Parent,
    RouteSocket, TcRequest, HTB_MAJOR, TC_H_ROOT,
};

/// The default state directory on a node.
pub const DEFAULT_STATE_DIR: &str = "/plnode/bwcap";

/// Why a pass failed. Validation errors come before any change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The desired state is not applicable.
    #[error(transparent)]
    Invalid(#[from] InvalidState),
    /// The egress interface does not exist (in this network namespace).
    #[error("interface {name}: not found")]
    UnknownInterface {
        /// The interface.
        name: InterfaceName,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A sliver's cgroup cannot be classified.
    #[error("sliver {slice}")]
    SliverCgroup {
        /// The slice.
        slice: SliceName,
        /// What is wrong.
        #[source]
        source: BpfError,
    },
    /// The node's cgroup cannot be classified.
    #[error("node cgroup")]
    NodeCgroup(#[source] BpfError),
    /// The state directory cannot be used.
    #[error("state directory {}", dir.display())]
    Store {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        #[source]
        source: StoreError,
    },
    /// The kernel refused or did not answer.
    #[error("interface {interface}")]
    Netlink {
        /// The interface.
        interface: InterfaceName,
        /// What happened.
        #[source]
        source: NetlinkError,
    },
    /// Attaching or detaching a classifier failed.
    #[error("classifying traffic")]
    Bpf(#[source] BpfError),
    /// The interface of the last pass is not known (nothing applied yet).
    #[error("nothing applied yet: no interface in {}", dir.display())]
    NothingApplied {
        /// The state directory.
        dir: PathBuf,
    },
}

/// What a pass did.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Every change, in words, in the order made.
    pub changes: Vec<String>,
    /// Netlink messages sent (changes only; dumps not counted).
    pub netlink_messages: usize,
    /// `sendmsg` calls they took.
    pub netlink_sends: usize,
    /// Classifier programs attached.
    pub programs_attached: usize,
    /// Classifier programs detached.
    pub programs_detached: usize,
    /// The node cap in force.
    pub node_cap: Rate,
    /// Whether that cap is the link's speed (no cap set).
    pub cap_is_line_rate: bool,
    /// The leaf queue used for new leaves (`fq_codel` or `pfifo`), if any were made.
    pub leaf_qdisc: Option<&'static str>,
    /// Things that work but deserve a look (guarantees above the cap, ...).
    pub warnings: Vec<String>,
    /// Where the time went.
    pub timings: Timings,
}

impl ApplyReport {
    /// Whether the pass changed nothing.
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Time spent in a pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Checks, state, dumps and planning.
    pub prepare: Duration,
    /// Of that: checking the input and opening every cgroup.
    pub checks: Duration,
    /// Of that: reading the kernel's qdiscs, classes and interface.
    pub dumps: Duration,
    /// Of that: loading the classifiers that must be attached.
    pub loads: Duration,
    /// Sending the batch and reading its acknowledgements.
    pub netlink: Duration,
    /// Loading, attaching and detaching classifiers.
    pub bpf: Duration,
    /// Writing the state file.
    pub save: Duration,
    /// The whole pass.
    pub total: Duration,
}

/// The bandwidth cap manager of one node (one state directory).
#[derive(Debug)]
pub struct Bwcap {
    state_dir: PathBuf,
    /// Whether the kernel has `fq_codel`, once a leaf creation told us.
    fq_codel: Mutex<Option<bool>>,
}

/// The batch for the kernel: what to send, in two phases (leaf queues last,
/// because their kind may fall back).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Root, deletions, class additions and changes, bad leaves removed.
    pub structure: Vec<TcRequest>,
    /// Leaf queues to add: (class minor, queue).
    pub leaves: Vec<(u16, LeafPlan)>,
}

impl Diff {
    /// Whether the kernel already matches.
    pub fn is_empty(&self) -> bool {
        self.structure.is_empty() && self.leaves.is_empty()
    }
}

fn root_is_ours(plan: &Plan, qdiscs: &[KernelQdisc]) -> bool {
    qdiscs.iter().any(|q| {
        q.parent == TC_H_ROOT
            && q.handle == handle(HTB_MAJOR, 0)
            && q.kind == "htb"
            && matches!(q.options, QdiscOptions::Htb(h) if h.default_class == u32::from(plan.default_class))
    })
}

fn same_params(planned: &PlannedClass, kernel: &crate::tc::HtbClassParams) -> bool {
    let p = &planned.params;
    p.rate == kernel.rate
        && p.ceil == kernel.ceil
        && p.buffer == kernel.buffer
        && p.cbuffer == kernel.cbuffer
        && p.mpu == kernel.mpu
        && p.overhead == kernel.overhead
        // HTB keeps quantum and prio of inner classes as they were.
        && (kernel.level != 0 || (p.quantum == kernel.quantum && p.prio == kernel.prio))
}

fn leaf_ok(plan: LeafPlan, minor: u16, qdisc: Option<&KernelQdisc>) -> bool {
    let Some(q) = qdisc else { return false };
    if q.handle != handle(minor, 0) {
        return false;
    }
    match plan {
        LeafPlan::Fair => q.kind == "fq_codel" || q.kind == "pfifo",
        LeafPlan::Fifo(limit) => {
            q.kind == "pfifo"
                && matches!(q.options, QdiscOptions::Leaf(l) if l.limit == Some(limit))
        }
    }
}

/// What must be sent to turn the kernel's `qdiscs` and `classes` (of one
/// interface) into `plan`.
pub fn diff(plan: &Plan, qdiscs: &[KernelQdisc], classes: &[KernelClass]) -> Diff {
    let mut out = Diff::default();
    let kernel: BTreeMap<u16, &KernelClass> = classes
        .iter()
        .filter(|c| major_of(c.handle) == HTB_MAJOR && c.kind == "htb" && c.htb.is_some())
        .map(|c| (minor_of(c.handle), c))
        .collect();
    let cap_misplaced = kernel
        .get(&CLASS_NODE_CAP)
        .is_some_and(|c| c.parent != Parent::Qdisc.dumped_handle());
    if !root_is_ours(plan, qdiscs) || cap_misplaced {
        if qdiscs
            .iter()
            .any(|q| q.parent == TC_H_ROOT && q.handle != 0)
        {
            out.structure.push(TcRequest::DeleteRootQdisc);
        }
        out.structure.push(TcRequest::AddRootQdisc {
            default_class: plan.default_class,
        });
        for c in &plan.classes {
            out.structure.push(TcRequest::AddClass {
                id: c.minor,
                parent: c.parent,
                params: c.params,
            });
            if let Some(leaf) = c.leaf {
                out.leaves.push((c.minor, leaf));
            }
        }
        return out;
    }

    let planned: BTreeMap<u16, &PlannedClass> = plan.classes.iter().map(|c| (c.minor, c)).collect();
    // Classes to delete: strays, and planned classes in the wrong place or
    // with children (a planned leaf must stay a leaf). Leaves first.
    let mut doomed: Vec<&KernelClass> = kernel
        .values()
        .filter(|k| match planned.get(&minor_of(k.handle)) {
            None => true,
            Some(p) => {
                k.parent != p.parent.dumped_handle()
                    || (p.leaf.is_some() && k.htb.is_some_and(|h| h.level != 0))
            }
        })
        .copied()
        .collect();
    doomed.sort_by_key(|k| (k.htb.map_or(0, |h| h.level), std::cmp::Reverse(k.handle)));
    let doomed_minors: BTreeSet<u16> = doomed.iter().map(|k| minor_of(k.handle)).collect();
    for k in &doomed {
        out.structure.push(TcRequest::DeleteClass {
            id: minor_of(k.handle),
        });
    }

    let leaf_qdiscs: BTreeMap<u32, &KernelQdisc> = qdiscs
        .iter()
        .filter(|q| major_of(q.parent) == HTB_MAJOR && q.parent != TC_H_ROOT)
        .map(|q| (q.parent, q))
        .collect();
    let mut leaf_fixes = Vec::new();
    for c in &plan.classes {
        let existing = kernel
            .get(&c.minor)
            .filter(|_| !doomed_minors.contains(&c.minor));
        match existing {
            None => {
                out.structure.push(TcRequest::AddClass {
                    id: c.minor,
                    parent: c.parent,
                    params: c.params,
                });
                if let Some(leaf) = c.leaf {
                    out.leaves.push((c.minor, leaf));
                }
            }
            Some(k) => {
                if !k.htb.is_some_and(|h| same_params(c, &h)) {
                    out.structure.push(TcRequest::ChangeClass {
                        id: c.minor,
                        parent: c.parent,
                        params: c.params,
                    });
                }
                if let Some(leaf) = c.leaf {
                    let current = leaf_qdiscs.get(&handle(HTB_MAJOR, c.minor)).copied();
                    if !leaf_ok(leaf, c.minor, current) {
                        if let Some(q) = current.filter(|q| q.handle != 0) {
                            leaf_fixes.push(TcRequest::DeleteQdisc {
                                handle: q.handle,
                                parent: q.parent,
                            });
                        }
                        out.leaves.push((c.minor, leaf));
                    }
                }
            }
        }
    }
    out.structure.extend(leaf_fixes);
    out
}

/// The class minors whose kernel counters a successful request restarts.
fn restarts(request: &TcRequest) -> Option<u16> {
    match request {
        TcRequest::AddClass { id, .. } | TcRequest::DeleteClass { id } => Some(*id),
        _ => None,
    }
}

fn is_unknown_kind(e: &NetlinkError) -> bool {
    matches!(e.errno(), Some(libc::ENOENT) | Some(libc::EOPNOTSUPP))
}

impl Bwcap {
    /// A manager keeping its state in `state_dir` (on a node
    /// [`DEFAULT_STATE_DIR`]; created on the first pass).
    pub fn new(state_dir: impl Into<PathBuf>) -> Bwcap {
        Bwcap {
            state_dir: state_dir.into(),
            fq_codel: Mutex::new(None),
        }
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn store_error(&self) -> impl FnOnce(StoreError) -> Error + '_ {
        move |source| Error::Store {
            dir: self.state_dir.clone(),
            source,
        }
    }

    /// Brings the kernel (in the calling thread's network namespace) to
    /// `desired`, with `now` as the time for budgets and counters.
    ///
    /// Without a node cap the cap is the link's speed, or
    /// [`link::UNKNOWN_LINE_RATE`] when the driver reports none. Nothing is
    /// changed when the desired state, the interface or a cgroup is wrong.
    /// Call it again at least once a minute: budgets lower ceilings only
    /// when a pass runs.
    pub fn apply(&self, desired: &DesiredState, now: Timestamp) -> Result<ApplyReport, Error> {
        let started = Instant::now();
        let mut report = ApplyReport::default();
        let iface = &desired.interface;
        let netlink = |source| Error::Netlink {
            interface: iface.clone(),
            source,
        };

        // 1. Everything that can be wrong with the input, before any change.
        desired.validate()?;
        let ifindex = link::index(iface).map_err(|source| Error::UnknownInterface {
            name: iface.clone(),
            source,
        })?;
        let mut classifiers: Vec<(Cgroup, Program)> = Vec::new();
        if let Some(root) = &desired.node_cgroup {
            let cgroup = Cgroup::open(root).map_err(Error::NodeCgroup)?;
            classifiers.push((
                cgroup,
                Program::Node {
                    class: handle(HTB_MAJOR, CLASS_NODE),
                },
            ));
            let slivers_dir = root.join("slivers");
            if slivers_dir.is_dir() {
                let cgroup = Cgroup::open(&slivers_dir).map_err(Error::NodeCgroup)?;
                classifiers.push((cgroup, sliver_program(CLASS_DEFAULT)));
            }
        }
        let mut sliver_cgroups = Vec::with_capacity(desired.slivers.len());
        for s in &desired.slivers {
            let cgroup = Cgroup::open(&s.cgroup).map_err(|source| Error::SliverCgroup {
                slice: s.slice.clone(),
                source,
            })?;
            sliver_cgroups.push(cgroup);
        }

        report.timings.checks = started.elapsed();

        let _lock = DirLock::acquire(&self.state_dir).map_err(self.store_error())?;
        let mut state = State::load(&self.state_dir).map_err(self.store_error())?;
        let dumps_started = Instant::now();
        let mut socket = RouteSocket::open().map_err(netlink)?;
        let qdiscs = socket.qdiscs(ifindex).map_err(netlink)?;
        let classes = socket.classes(ifindex).map_err(netlink)?;
        let gso_max_segs = socket.gso_max_segs(ifindex).map_err(netlink)?;
        report.timings.dumps = dumps_started.elapsed();

        // 2. Counters, from the classes as they are now.
        let kernel_classes: BTreeMap<u16, &KernelClass> = classes
            .iter()
            .filter(|c| major_of(c.handle) == HTB_MAJOR && c.kind == "htb")
            .map(|c| (minor_of(c.handle), c))
            .collect();
        let counted = state.interface.as_ref() == Some(iface)
            && qdiscs
                .iter()
                .any(|q| q.parent == TC_H_ROOT && q.handle == handle(HTB_MAJOR, 0));
        for record in state.slivers.values_mut() {
            match kernel_classes.get(&record.class).filter(|_| counted) {
                Some(k) if record.removed_at.is_none() => {
                    let (bytes, _) = record.counters.observe(k.stats.bytes, k.stats.packets);
                    record.budget.bytes = record.budget.bytes.saturating_add(bytes);
                }
                _ => record.counters.class_restarted(),
            }
            record.budget.roll(now);
            record.counters.sample(now);
        }

        // 3. Who is here: allocate classes, mark the departed, forget the long gone.
        let mut departed: Vec<PathBuf> = Vec::new();
        let wanted: BTreeSet<&SliceName> = desired.slivers.iter().map(|s| &s.slice).collect();
        for (slice, record) in state.slivers.iter_mut() {
            if !wanted.contains(slice) && record.removed_at.is_none() {
                record.removed_at = Some(now);
                departed.push(record.cgroup.clone());
            }
        }
        state.forget_expired(now);
        let (cap, line_rate) = match desired.node_cap {
            Some(cap) => (cap, false),
            None => (link::speed(iface).unwrap_or(link::UNKNOWN_LINE_RATE), true),
        };
        let mut sliver_classes = Vec::with_capacity(desired.slivers.len());
        let mut guaranteed_sum: u128 = 0;
        for s in &desired.slivers {
            let class = state.allocate(&s.slice).map_err(self.store_error())?;
            let record = state
                .slivers
                .entry(s.slice.clone())
                .or_insert_with(|| new_record(class, now));
            if record.removed_at.take().is_some() {
                // Back within a day: same class, counters and budget.
                record.counters.class_restarted();
            }
            record.cgroup = s.cgroup.clone();
            record.daily_budget = s.daily_budget;
            record.guaranteed = s.rspec.net_min_rate;
            record.normal_ceiling = s.rspec.net_max_rate.min(cap);
            let (ceiling, budget_state) = budget::ceiling(
                record.normal_ceiling,
                record.guaranteed,
                s.daily_budget.bytes(),
                &record.budget,
                now,
            );
            record.ceiling = ceiling;
            record.budget_state = budget_state;
            guaranteed_sum += u128::from(s.rspec.net_min_rate.bits_per_sec());
            sliver_classes.push(SliverClass {
                slice: s.slice.clone(),
                minor: class,
                guaranteed: s.rspec.net_min_rate,
                ceiling,
                share: s.rspec.cpu_share,
            });
        }
        if guaranteed_sum > u128::from(cap.bits_per_sec()) {
            report.warnings.push(format!(
                "the slivers' guaranteed rates add up to {}, above the node cap {cap}: guarantees cannot all hold",
                Rate::from_bits_per_sec(u64::try_from(guaranteed_sum).unwrap_or(u64::MAX))
            ));
        }

        // 4. The plan, the difference, and the classifiers to load.
        let plan = layout::plan(cap, &sliver_classes);
        let diff = diff(&plan, &qdiscs, &classes);
        for (cgroup, record) in sliver_cgroups.into_iter().zip(&sliver_classes) {
            classifiers.push((cgroup, sliver_program(record.minor)));
        }
        let loads_started = Instant::now();
        let to_attach = prepare_all(classifiers).map_err(Error::Bpf)?;
        report.timings.loads = loads_started.elapsed();
        report.timings.prepare = started.elapsed();

        // 5. Departed slivers lose their classifier first, then the kernel batch.
        let bpf_started = Instant::now();
        let mut detach_error = None;
        for path in departed {
            // A sliver whose cgroup is gone already lost its program with it.
            if let Ok(cgroup) = Cgroup::open(&path) {
                match cgroup.detach_ours() {
                    Ok(0) => {}
                    Ok(n) => {
                        report.programs_detached += n;
                        report
                            .changes
                            .push(format!("detached the classifier from {}", path.display()));
                    }
                    Err(e) => detach_error = Some(e),
                }
            }
        }
        let mut bpf_time = bpf_started.elapsed();

        let netlink_started = Instant::now();
        if gso_max_segs != Some(EGRESS_GSO_MAX_SEGS) {
            // Fairness suffers without it, shaping does not: a warning.
            let request = [TcRequest::SetGsoMaxSegs {
                segs: EGRESS_GSO_MAX_SEGS,
            }];
            match socket
                .execute(ifindex, &request, true)
                .and_then(|o| o.first_error())
            {
                Ok(()) => {
                    if state.original_gso_max_segs.is_none() || state.interface.as_ref() != Some(iface) {
                        state.original_gso_max_segs = gso_max_segs;
                    }
                    report.netlink_messages += 1;
                    report.netlink_sends += 1;
                    report.changes.push(request[0].to_string());
                }
                Err(e) => report.warnings.push(format!(
                    "{iface}: GSO bursts stay as they are, so sharing is per burst, not per byte: {}",
                    floor::report::error_line(&e)
                )),
            }
        }
        let result = self.send(&mut socket, ifindex, &diff, &mut state, &mut report);
        report.timings.netlink = netlink_started.elapsed();

        // 6. Classifiers for everyone present (only after their classes exist).
        let bpf_started = Instant::now();
        let mut attach_error = None;
        if result.is_ok() {
            for (cgroup, loaded) in to_attach {
                let name = loaded.name().to_string();
                match cgroup.attach(loaded) {
                    Ok(()) => {
                        report.programs_attached += 1;
                        report
                            .changes
                            .push(format!("attached {name} to {}", cgroup.path().display()));
                    }
                    Err(e) => {
                        attach_error.get_or_insert(e);
                    }
                }
            }
        }
        bpf_time += bpf_started.elapsed();
        report.timings.bpf = bpf_time;

        // 7. Remember, whatever happened: counters already taken must not be lost.
        state.interface = Some(iface.clone());
        state.node_cap = Some(cap);
        state.cap_is_line_rate = line_rate;
        state.node_cgroup = desired.node_cgroup.clone();
        state.last_pass = Some(now);
        let save_started = Instant::now();
        let saved = state.save(&self.state_dir).map_err(self.store_error());
        report.timings.save = save_started.elapsed();
        report.node_cap = cap;
        report.cap_is_line_rate = line_rate;
        report.timings.total = started.elapsed();
        result.map_err(netlink)?;
        if let Some(e) = detach_error.or(attach_error) {
            return Err(Error::Bpf(e));
        }
        saved?;
        Ok(report)
    }

    fn send(
        &self,
        socket: &mut RouteSocket,
        ifindex: i32,
        diff: &Diff,
        state: &mut State,
        report: &mut ApplyReport,
    ) -> Result<(), NetlinkError> {
        let by_class: BTreeMap<u16, SliceName> = state
            .slivers
            .iter()
            .map(|(s, r)| (r.class, s.clone()))
            .collect();
        let mut sent = Sent {
            by_class: &by_class,
            state,
            report,
        };
        if !diff.structure.is_empty() {
            let outcome = socket.execute(ifindex, &diff.structure, true)?;
            sent.record(&diff.structure, outcome)?;
        }

        // Leaf queues: fq_codel where the kernel has it. Unless an earlier
        // pass found out, the first fair leaf goes alone to find out.
        let mut leaves = diff.leaves.clone();
        let mut fq_codel = *self.fq_codel.lock().unwrap_or_else(|e| e.into_inner());
        if fq_codel.is_none() {
            if let Some(pos) = leaves.iter().position(|(_, l)| *l == LeafPlan::Fair) {
                let probe = [leaf_request(leaves[pos].0, LeafPlan::Fair, true)];
                let outcome = socket.execute(ifindex, &probe, true)?;
                if outcome.results[0].as_ref().is_some_and(is_unknown_kind) {
                    fq_codel = Some(false);
                    sent.report.netlink_messages += 1;
                    sent.report.netlink_sends += outcome.sends;
                } else {
                    fq_codel = Some(true);
                    sent.report.leaf_qdisc = Some("fq_codel");
                    sent.record(&probe, outcome)?;
                    leaves.remove(pos);
                }
                *self.fq_codel.lock().unwrap_or_else(|e| e.into_inner()) = fq_codel;
            }
        }
        let fq_codel = fq_codel.unwrap_or(true);
        if leaves.iter().any(|(_, l)| *l == LeafPlan::Fair) {
            sent.report.leaf_qdisc = Some(fair_leaf(fq_codel).kind());
        }
        let requests: Vec<TcRequest> = leaves
            .iter()
            .map(|(class, leaf)| leaf_request(*class, *leaf, fq_codel))
            .collect();
        if !requests.is_empty() {
            let outcome = socket.execute(ifindex, &requests, true)?;
            sent.record(&requests, outcome)?;
        }
        Ok(())
    }

    /// Removes bwcap from `interface` (the root qdisc, if it is bwcap's)
    /// and from every cgroup its state names. Counters and records stay.
    pub fn remove(&self, interface: &InterfaceName) -> Result<ApplyReport, Error> {
        let mut report = ApplyReport::default();
        let ifindex = link::index(interface).map_err(|source| Error::UnknownInterface {
            name: interface.clone(),
            source,
        })?;
        let _lock = DirLock::acquire(&self.state_dir).map_err(self.store_error())?;
        let mut state = State::load(&self.state_dir).map_err(self.store_error())?;
        let netlink = |source| Error::Netlink {
            interface: interface.clone(),
            source,
        };
        let mut cgroups: Vec<PathBuf> = state.slivers.values().map(|r| r.cgroup.clone()).collect();
        if let Some(root) = &state.node_cgroup {
            cgroups.push(root.clone());
            cgroups.push(root.join("slivers"));
        }
        for path in cgroups {
            if let Ok(cgroup) = Cgroup::open(&path) {
                let n = cgroup.detach_ours().map_err(Error::Bpf)?;
                if n > 0 {
                    report.programs_detached += n;
                    report
                        .changes
                        .push(format!("detached the classifier from {}", path.display()));
                }
            }
        }
        let mut socket = RouteSocket::open().map_err(netlink)?;
        let qdiscs = socket.qdiscs(ifindex).map_err(netlink)?;
        let ours = qdiscs
            .iter()
            .any(|q| q.parent == TC_H_ROOT && q.handle == handle(HTB_MAJOR, 0) && q.kind == "htb");
        if ours {
            let requests = [TcRequest::DeleteRootQdisc];
            let outcome = socket.execute(ifindex, &requests, true).map_err(netlink)?;
            report.netlink_messages += 1;
            report.netlink_sends += outcome.sends;
            outcome.first_error().map_err(netlink)?;
            report.changes.push(requests[0].to_string());
        }
        if let Some(segs) = state
            .original_gso_max_segs
            .filter(|_| state.interface.as_ref() == Some(interface))
        {
            let requests = [TcRequest::SetGsoMaxSegs { segs }];
            let outcome = socket.execute(ifindex, &requests, true).map_err(netlink)?;
            report.netlink_messages += 1;
            report.netlink_sends += outcome.sends;
            outcome.first_error().map_err(netlink)?;
            report.changes.push(requests[0].to_string());
            state.original_gso_max_segs = None;
            state.save(&self.state_dir).map_err(self.store_error())?;
        }
        Ok(report)
    }
}

/// Checks every cgroup's classifier and loads those that must be attached,
/// on all cores: the kernel verifies and compiles each program in the
/// calling thread, and that is most of a first pass over many slivers.
fn prepare_all(classifiers: Vec<(Cgroup, Program)>) -> Result<Vec<(Cgroup, Loaded)>, BpfError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let chunk = classifiers.len().div_ceil(threads).max(1);
    let mut chunks: Vec<Vec<(Cgroup, Program)>> = Vec::new();
    let mut rest = classifiers.into_iter().peekable();
    while rest.peek().is_some() {
        chunks.push(rest.by_ref().take(chunk).collect());
    }
    let prepare = |chunk: Vec<(Cgroup, Program)>| -> Result<Vec<(Cgroup, Loaded)>, BpfError> {
        let mut out = Vec::new();
        for (cgroup, program) in chunk {
            if let Some(loaded) = cgroup.prepare(&program)? {
                out.push((cgroup, loaded));
            }
        }
        Ok(out)
    };
    if chunks.len() <= 1 {
        return chunks.into_iter().next().map_or(Ok(Vec::new()), prepare);
    }
    let results: Vec<Result<Vec<(Cgroup, Loaded)>, BpfError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || prepare(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    let mut out = Vec::new();
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// Books the outcome of a batch: counters of recreated classes restart,
/// changes are listed, the first refusal is the result.
struct Sent<'a> {
    by_class: &'a BTreeMap<u16, SliceName>,
    state: &'a mut State,
    report: &'a mut ApplyReport,
}

impl Sent<'_> {
    fn record(
        &mut self,
        requests: &[TcRequest],
        outcome: crate::tc::BatchOutcome,
    ) -> Result<(), NetlinkError> {
        self.report.netlink_messages += outcome.results.len();
        self.report.netlink_sends += outcome.sends;
        let mut first_error = None;
        for (request, result) in requests.iter().zip(outcome.results) {
            match result {
                None => {
                    if let Some(minor) = restarts(request) {
                        if let Some(record) = self
                            .by_class
                            .get(&minor)
                            .and_then(|s| self.state.slivers.get_mut(s))
                        {
                            record.counters.class_restarted();
                        }
                    }
                    self.report.changes.push(request.to_string());
                }
                Some(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn fair_leaf(fq_codel: bool) -> LeafQdisc {
    if fq_codel {
        LeafQdisc::FqCodel {
            limit: LEAF_QUEUE_PACKETS,
            flows: LEAF_FLOWS,
        }
    } else {
        LeafQdisc::Pfifo {
            limit: LEAF_QUEUE_PACKETS,
        }
    }
}

fn leaf_request(class: u16, leaf: LeafPlan, fq_codel: bool) -> TcRequest {
    TcRequest::AddLeaf {
        class,
        qdisc: match leaf {
            LeafPlan::Fair => fair_leaf(fq_codel),
            LeafPlan::Fifo(limit) => LeafQdisc::Pfifo { limit },
        },
    }
}

fn sliver_program(class: u16) -> Program {
    Program::Sliver {
        class: handle(HTB_MAJOR, class),
        icmp: handle(HTB_MAJOR, CLASS_ICMP),
        ip_options: handle(HTB_MAJOR, CLASS_IP_OPTIONS),
    }
}

fn new_record(class: u16, now: Timestamp) -> SliverRecord {
    SliverRecord {
        class,
        cgroup: PathBuf::new(),
        since: now,
        removed_at: None,
        daily_budget: crate::desired::DEFAULT_DAILY_BUDGET,
        guaranteed: Rate::default(),
        normal_ceiling: Rate::default(),
        ceiling: Rate::default(),
        budget_state: budget::BudgetState::Normal,
        budget: budget::BudgetPeriod::starting(now),
        counters: Counters::starting(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tc::decode::{LeafOptions, Stats};
    use crate::tc::htb::HtbQdiscParams;

    fn plan_for(slivers: &[(u16, Rate)]) -> Plan {
        let s: Vec<SliverClass> = slivers
            .iter()
            .map(|(minor, ceiling)| SliverClass {
                slice: format!("s{minor}").parse().unwrap(),
                minor: *minor,
                guaranteed: Rate::kbit(5),
                ceiling: *ceiling,
                share: 1,
            })
            .collect();
        layout::plan(Rate::mbit(100), &s)
    }

    /// The kernel's view after `plan` was applied (with `fq_codel` leaves).
    fn kernel_after(plan: &Plan) -> (Vec<KernelQdisc>, Vec<KernelClass>) {
        let mut qdiscs = vec![KernelQdisc {
            ifindex: 2,
            handle: handle(1, 0),
            parent: TC_H_ROOT,
            kind: "htb".into(),
            options: QdiscOptions::Htb(HtbQdiscParams {
                default_class: 3,
                rate2quantum: 10,
                direct_packets: 0,
            }),
            stats: Stats::default(),
        }];
        let mut classes = Vec::new();
        for c in &plan.classes {
            let mut params = c.params;
            if c.leaf.is_none() {
                params.level = 7;
                params.quantum = 1;
            }
            classes.push(KernelClass {
                handle: handle(1, c.minor),
                parent: c.parent.dumped_handle(),
                leaf: 0,
                kind: "htb".into(),
                htb: Some(params),
                stats: Stats::default(),
            });
            if let Some(leaf) = c.leaf {
                let (kind, limit) = match leaf {
                    LeafPlan::Fair => ("fq_codel", LEAF_QUEUE_PACKETS),
                    LeafPlan::Fifo(l) => ("pfifo", l),
                };
                qdiscs.push(KernelQdisc {
                    ifindex: 2,
                    handle: handle(c.minor, 0),
                    parent: handle(1, c.minor),
                    kind: kind.into(),
                    options: QdiscOptions::Leaf(LeafOptions {
                        limit: Some(limit),
                        flows: None,
                    }),
                    stats: Stats::default(),
                });
            }
        }
        (qdiscs, classes)
    }

    #[test]
    fn an_empty_interface_gets_the_whole_tree() {
        let plan = plan_for(&[(0x10, Rate::mbit(10))]);
        let noqueue = KernelQdisc {
            ifindex: 2,
            handle: 0,
            parent: TC_H_ROOT,
            kind: "noqueue".into(),
            options: QdiscOptions::Other,
            stats: Stats::default(),
        };
        let d = diff(&plan, &[noqueue], &[]);
        assert!(matches!(
            d.structure[0],
            TcRequest::AddRootQdisc { default_class: 3 }
        ));
        assert_eq!(d.structure.len(), 1 + plan.classes.len());
        assert_eq!(d.leaves.len(), plan.classes.len() - 1);
    }

    #[test]
    fn a_matching_kernel_needs_nothing() {
        let plan = plan_for(&[(0x10, Rate::mbit(10)), (0x11, Rate::mbit(20))]);
        let (q, c) = kernel_after(&plan);
        assert!(diff(&plan, &q, &c).is_empty());
    }

    #[test]
    fn changes_strays_and_broken_leaves_are_repaired() {
        let plan = plan_for(&[(0x10, Rate::mbit(10)), (0x11, Rate::mbit(20))]);
        let (mut q, mut c) = kernel_after(&plan);
        // A new ceiling for 1:10, a stray class 1:99 with a child 1:98,
        // 1:11's leaf swapped for another kind, the default class's leaf gone.
        let new = plan_for(&[(0x10, Rate::mbit(5)), (0x11, Rate::mbit(20))]);
        for (parent, minor, level) in [(TC_H_ROOT, 0x99u16, 7u32), (handle(1, 0x99), 0x98, 0)] {
            c.push(KernelClass {
                handle: handle(1, minor),
                parent,
                leaf: 0,
                kind: "htb".into(),
                htb: Some(crate::tc::HtbClassParams {
                    level,
                    ..Default::default()
                }),
                stats: Stats::default(),
            });
        }
        let leaf_11 = q.iter_mut().find(|q| q.parent == handle(1, 0x11)).unwrap();
        leaf_11.kind = "sfq".into();
        q.retain(|q| q.parent != handle(1, 3));
        let d = diff(&new, &q, &c);
        assert_eq!(
            d.structure,
            vec![
                TcRequest::DeleteClass { id: 0x98 },
                TcRequest::DeleteClass { id: 0x99 },
                TcRequest::ChangeClass {
                    id: 0x10,
                    parent: Parent::Class(1),
                    params: new.classes[5].params,
                },
                TcRequest::DeleteQdisc {
                    handle: handle(0x11, 0),
                    parent: handle(1, 0x11),
                },
            ]
        );
        assert_eq!(d.leaves, vec![(3, LeafPlan::Fair), (0x11, LeafPlan::Fair)]);
    }

    #[test]
    fn a_foreign_root_is_replaced_and_removed_slivers_go() {
        let plan = plan_for(&[(0x10, Rate::mbit(10))]);
        let (mut q, c) = kernel_after(&plan);
        let only_cap = plan_for(&[]);
        let d = diff(&only_cap, &q, &c);
        assert_eq!(d.structure, vec![TcRequest::DeleteClass { id: 0x10 }]);
        // Someone replaced the root with their own HTB (other default class).
        q[0].options = QdiscOptions::Htb(HtbQdiscParams {
            default_class: 7,
            rate2quantum: 10,
            direct_packets: 0,
        });
        let d = diff(&plan, &q, &c);
        assert_eq!(d.structure[0], TcRequest::DeleteRootQdisc);
        assert!(matches!(d.structure[1], TcRequest::AddRootQdisc { .. }));
    }
}
