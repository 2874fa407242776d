//! Shared pieces of bwcap's kernel tests: a bench per test (network
//! namespaces, veth, cgroups; removed on drop), a state directory, passes
//! run inside the node's namespace, and a snapshot of the kernel's layout.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bwcap::bpf::Cgroup;
use bwcap::tc::decode::QdiscOptions;
use bwcap::tc::{HtbClassParams, RouteSocket};
use bwcap::testbed::{Loadgen, Testbed, TestbedError};
use bwcap::{ApplyReport, Bwcap, DesiredState, SliverSpec, Usage};
use config::rspec::Rspec;
use config::units::Rate;
use config::Timestamp;

/// The fake clock's start.
pub const T0: Timestamp = Timestamp::from_unix(1_800_000_000);

/// `T0 + secs`.
pub fn at(secs: i64) -> Timestamp {
    T0.saturating_add_secs(secs)
}

/// The load generator built with these tests.
pub fn loadgen() -> Loadgen {
    Loadgen::new(env!("CARGO_BIN_EXE_bwcap-loadgen"))
}

/// A node on a bench, with its own state directory.
pub struct Node {
    pub bed: Testbed,
    pub bwcap: Bwcap,
    _state: tempfile::TempDir,
}

/// A bench, or `None` after printing why this machine cannot run it.
pub fn node(tag: &str) -> Option<Node> {
    match Testbed::new(tag) {
        Ok(bed) => {
            let state = tempfile::tempdir().expect("a temporary directory");
            Some(Node {
                bed,
                bwcap: Bwcap::new(state.path().join("bwcap")),
                _state: state,
            })
        }
        Err(TestbedError::Unavailable(reason)) => {
            eprintln!("SKIP: {reason}");
            None
        }
        Err(e) => panic!("building the bench: {}", floor::report::error_line(&e)),
    }
}

impl Node {
    /// A sliver with its cgroup made.
    pub fn sliver(&self, slice: &str, min: Rate, max: Rate) -> SliverSpec {
        let cgroup = self.bed.sliver_cgroup(slice).expect("sliver cgroup");
        SliverSpec::new(
            slice.parse().expect("slice name"),
            cgroup,
            Rspec {
                net_min_rate: min,
                net_max_rate: max,
                ..Rspec::default()
            },
        )
    }

    /// The desired state for this bench.
    pub fn desired(&self, cap: Option<Rate>, slivers: Vec<SliverSpec>) -> DesiredState {
        DesiredState {
            interface: self.bed.node_if.clone(),
            node_cap: cap,
            node_cgroup: Some(self.bed.cgroup_root.clone()),
            slivers,
        }
    }

    /// One pass in the node's namespace.
    pub fn apply(
        &self,
        desired: &DesiredState,
        now: Timestamp,
    ) -> Result<ApplyReport, bwcap::Error> {
        self.bed
            .in_node(|| self.bwcap.apply(desired, now))
            .expect("entering the node namespace")
    }

    /// One pass that must succeed.
    pub fn apply_ok(&self, desired: &DesiredState, now: Timestamp) -> ApplyReport {
        match self.apply(desired, now) {
            Ok(r) => r,
            Err(e) => panic!("apply: {}", floor::report::error_line(&e)),
        }
    }

    /// Counters and layout.
    pub fn usage(&self, now: Timestamp) -> Usage {
        self.bed
            .in_node(|| self.bwcap.usage(now))
            .expect("entering the node namespace")
            .unwrap_or_else(|e| panic!("usage: {}", floor::report::error_line(&e)))
    }

    /// What the kernel has: classes, qdiscs, attached programs.
    pub fn snapshot(&self, cgroups: &[&Path]) -> Snapshot {
        let ifindex = self
            .bed
            .in_node(|| bwcap::link::index(&self.bed.node_if))
            .unwrap()
            .expect("interface index");
        let (classes, qdiscs) = self
            .bed
            .in_node(|| {
                let mut s = RouteSocket::open().expect("netlink");
                (
                    s.classes(ifindex).expect("classes"),
                    s.qdiscs(ifindex).expect("qdiscs"),
                )
            })
            .unwrap();
        Snapshot {
            classes: classes
                .into_iter()
                .filter(|c| c.kind == "htb")
                .map(|c| (c.handle, (c.parent, c.htb.expect("htb params"))))
                .collect(),
            qdiscs: qdiscs
                .into_iter()
                .map(|q| {
                    let limit = match q.options {
                        QdiscOptions::Leaf(l) => l.limit,
                        _ => None,
                    };
                    (q.handle, (q.parent, q.kind, limit))
                })
                .collect(),
            programs: cgroups
                .iter()
                .map(|p| {
                    let attached = Cgroup::open(p)
                        .and_then(|c| c.attached())
                        .map(|a| a.into_iter().map(|a| (a.id, a.name)).collect())
                        .unwrap_or_default();
                    (p.to_path_buf(), attached)
                })
                .collect(),
        }
    }

    /// A greedy TCP sender in `cgroup`, id `id`, for `seconds`; it stops
    /// at once at the end.
    pub fn send(&self, cgroup: &Path, id: u32, seconds: f64, bytes: u64, port: u16) -> u32 {
        self.sender(cgroup, id, seconds, bytes, port, false)
    }

    /// A sender of `bytes` that exits once the receiver has them all.
    pub fn send_all(&self, cgroup: &Path, id: u32, bytes: u64, port: u16) -> u32 {
        self.sender(cgroup, id, 60.0, bytes, port, true)
    }

    fn sender(
        &self,
        cgroup: &Path,
        id: u32,
        seconds: f64,
        bytes: u64,
        port: u16,
        drain: bool,
    ) -> u32 {
        let mut args = vec!["send".to_string()];
        args.extend(self.bed.sliver_args(cgroup));
        args.extend([
            "--to".into(),
            format!("{}:{port}", self.bed.peer_addr),
            "--id".into(),
            id.to_string(),
            "--seconds".into(),
            seconds.to_string(),
            "--bytes".into(),
            bytes.to_string(),
        ]);
        if drain {
            args.push("--drain".into());
        }
        self.bed
            .spawn(&loadgen(), &args)
            .expect("starting a sender")
    }

    /// Runs a load generator subcommand in `cgroup` to its end; its JSON line.
    pub fn run(&self, subcommand: &str, cgroup: &Path, extra: &[String]) -> serde_json::Value {
        let mut args = vec![subcommand.to_string()];
        args.extend(self.bed.sliver_args(cgroup));
        args.extend(extra.iter().cloned());
        let out = self
            .bed
            .run(&loadgen(), &args)
            .expect("running the load generator");
        assert!(
            out.status.success(),
            "loadgen {subcommand}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("the load generator's JSON")
    }

    /// Stops a sender now.
    pub fn stop(&self, pid: u32) {
        self.bed.stop(pid).expect("stopping a sender");
    }

    /// Waits for a sender to finish.
    pub fn wait(&self, pid: u32) {
        let out = self.bed.wait(pid).expect("waiting for a sender");
        assert!(
            out.status.success(),
            "sender: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The kernel's layout (parameters, not counters) and the programs attached.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub classes: BTreeMap<u32, (u32, HtbClassParams)>,
    pub qdiscs: BTreeMap<u32, (u32, String, Option<u32>)>,
    pub programs: BTreeMap<PathBuf, Vec<(u32, String)>>,
}

/// Waits a moment for senders to connect.
pub const CONNECT: Duration = Duration::from_secs(5);

/// `|measured / expected - 1|`.
pub fn deviation(measured: f64, expected: f64) -> f64 {
    (measured / expected - 1.0).abs()
}
