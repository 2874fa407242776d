//! What staff look at first, computed from the registry: how many nodes
//! are in each boot state and run level, and which nodes have problems
//! (failed, not seen for an hour, clock far off, failing authentication,
//! failed with the rollout's release), worst first. The status page and
//! `/status.json` show the same values.

use std::collections::{BTreeMap, HashMap};

use config::api::{BootState, RunLevel};
use config::node::NodeId;
use config::Timestamp;
use serde::Serialize;

use crate::model::Node;
use crate::rollout::NodeProgress;

/// A node that checked in before but not for this long is "not seen".
pub const NOT_SEEN_SECS: i64 = 3600;
/// A node clock further off than this (either way) is a problem.
pub const CLOCK_OFF_SECS: i64 = 60;
/// Failed authentications this recent are a problem.
pub const AUTH_RECENT_SECS: i64 = 86_400;

/// Failed authentications of one node, all reasons together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AuthFailures {
    /// How many.
    pub count: u64,
    /// The latest.
    pub last_at: Timestamp,
}

/// Nodes per boot state (what the admins want) and run level (what the
/// node last said it does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    /// `boot state → run level (or "never") → nodes`.
    pub by_state: BTreeMap<String, BTreeMap<String, u64>>,
    /// Nodes per boot state.
    pub boot_state: BTreeMap<String, u64>,
    /// Nodes per run level; `never` for nodes that never checked in.
    pub run_level: BTreeMap<String, u64>,
    /// All nodes.
    pub total: u64,
}

/// The column word for a run level, or `never`.
pub fn run_level_word(level: Option<RunLevel>) -> &'static str {
    level.map_or("never", RunLevel::as_str)
}

impl StateCounts {
    /// Counts `nodes`.
    pub fn of(nodes: &[Node]) -> StateCounts {
        let mut c = StateCounts::default();
        for n in nodes {
            let state = n.boot_state.as_str().to_string();
            let level = run_level_word(n.report.run_level).to_string();
            *c.by_state
                .entry(state.clone())
                .or_default()
                .entry(level.clone())
                .or_default() += 1;
            *c.boot_state.entry(state).or_default() += 1;
            *c.run_level.entry(level).or_default() += 1;
            c.total += 1;
        }
        c
    }

    /// Nodes in `state` at `level` (0 when none).
    pub fn get(&self, state: BootState, level: &str) -> u64 {
        self.by_state
            .get(state.as_str())
            .and_then(|m| m.get(level))
            .copied()
            .unwrap_or(0)
    }
}

/// One problem of a node. The order of the variants is the order of
/// severity: nodes are listed by their worst problem.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The node reported a failure since it last booted, or fell to
    /// `debug` without being asked to.
    Failed {
        /// The step that failed.
        step: String,
        /// What it said.
        message: String,
        /// When.
        at: Option<Timestamp>,
    },
    /// It failed with the rollout's release (staging, trial, rollback).
    UpdateFailed {
        /// The release.
        release: String,
    },
    /// It checked in before, but not for [`NOT_SEEN_SECS`].
    NotSeen {
        /// Its last check-in.
        since: Timestamp,
    },
    /// Its clock is more than [`CLOCK_OFF_SECS`] off the server's.
    ClockOff {
        /// Node clock minus server clock at the last check-in.
        secs: i64,
    },
    /// Requests claiming to be it failed authentication recently.
    AuthFailures {
        /// How many (all reasons, ever).
        count: u64,
        /// The latest.
        last_at: Timestamp,
    },
}

impl Problem {
    /// A short word for badges and CSS classes.
    pub fn word(&self) -> &'static str {
        match self {
            Problem::Failed { .. } => "failed",
            Problem::UpdateFailed { .. } => "update-failed",
            Problem::NotSeen { .. } => "not-seen",
            Problem::ClockOff { .. } => "clock-off",
            Problem::AuthFailures { .. } => "auth-failures",
        }
    }
}

/// A node and its problems, worst first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeProblems {
    /// The node.
    pub id: NodeId,
    /// Its full host name.
    pub fqdn: String,
    /// Its site.
    pub site: String,
    /// Its problems, worst first (never empty).
    pub problems: Vec<Problem>,
}

/// Every node with a problem, worst first (then by id).
pub fn problems(
    nodes: &[Node],
    auth: &HashMap<u64, AuthFailures>,
    rollout: Option<(&str, &HashMap<NodeId, NodeProgress>)>,
    now: Timestamp,
) -> Vec<NodeProblems> {
    let mut out: Vec<NodeProblems> = nodes
        .iter()
        .filter_map(|n| {
            let r = &n.report;
            let mut found = Vec::new();
            let since_boot = r.last_boot.map_or(i64::MIN, |b| b.unix());
            match &r.last_error {
                Some(e) if e.at.unix() >= since_boot => found.push(Problem::Failed {
                    step: e.step.clone(),
                    message: e.message.clone(),
                    at: Some(e.at),
                }),
                _ if r.run_level == Some(RunLevel::Debug) && n.boot_state != BootState::Debug => {
                    found.push(Problem::Failed {
                        step: "debug".into(),
                        message: "in debug without being asked to".into(),
                        at: None,
                    })
                }
                _ => {}
            }
            if let Some((release, progress)) = rollout {
                if progress.get(&n.id) == Some(&NodeProgress::Failed) {
                    found.push(Problem::UpdateFailed {
                        release: release.to_string(),
                    });
                }
            }
            if let Some(seen) = r.last_contact {
                if now.unix() - seen.unix() > NOT_SEEN_SECS {
                    found.push(Problem::NotSeen { since: seen });
                }
            }
            if let Some(off) = r.clock_offset_secs {
                if off.abs() > CLOCK_OFF_SECS {
                    found.push(Problem::ClockOff { secs: off });
                }
            }
            if let Some(a) = auth.get(&n.id.0) {
                if now.unix() - a.last_at.unix() <= AUTH_RECENT_SECS {
                    found.push(Problem::AuthFailures {
                        count: a.count,
                        last_at: a.last_at,
                    });
                }
            }
            if found.is_empty() {
                return None;
            }
            found.sort();
            Some(NodeProblems {
                id: n.id,
                fqdn: n.fqdn.clone(),
                site: n.site.to_string(),
                problems: found,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        let rank = |p: &NodeProblems| match p.problems[0] {
            Problem::Failed { .. } => 0,
            Problem::UpdateFailed { .. } => 1,
            Problem::NotSeen { .. } => 2,
            Problem::ClockOff { .. } => 3,
            Problem::AuthFailures { .. } => 4,
        };
        rank(a).cmp(&rank(b)).then(a.id.cmp(&b.id))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LastError, NodeNetwork, NodeReport};
    use config::api::WireNetwork;

    fn node(id: u64, report: NodeReport) -> Node {
        Node {
            id: NodeId(id),
            site: "s".parse().unwrap(),
            hostname: format!("n{id}").parse().unwrap(),
            domain: None,
            fqdn: format!("n{id}"),
            key: config::node::NodeKey::new("k".repeat(32)).unwrap(),
            key_changed_at: Timestamp::from_unix(0),
            network: NodeNetwork {
                interface: None,
                mac: None,
                addressing: WireNetwork::Dhcp,
            },
            created_at: Timestamp::from_unix(0),
            boot_state: BootState::Boot,
            boot_state_at: Timestamp::from_unix(0),
            bwcap: None,
            reboot_requested_at: None,
            report,
        }
    }

    fn seen(at: i64) -> NodeReport {
        NodeReport {
            run_level: Some(RunLevel::Boot),
            last_contact: Some(Timestamp::from_unix(at)),
            last_boot: Some(Timestamp::from_unix(at - 100)),
            clock_offset_secs: Some(0),
            ..NodeReport::default()
        }
    }

    #[test]
    fn problems_come_worst_first_and_healthy_nodes_not_at_all() {
        let now = Timestamp::from_unix(100_000);
        let healthy = node(1, seen(99_990));
        let stale = node(2, seen(100_000 - 7200));
        let mut skewed = seen(99_990);
        skewed.clock_offset_secs = Some(-400);
        let skewed = node(3, skewed);
        let mut failed = seen(99_990);
        failed.last_error = Some(LastError {
            step: "update".into(),
            message: "disk full".into(),
            at: Timestamp::from_unix(99_950),
        });
        let failed = node(4, failed);
        let mut old_error = seen(99_990);
        old_error.last_error = Some(LastError {
            step: "reinstall/install".into(),
            message: "fixed since".into(),
            at: Timestamp::from_unix(1_000),
        });
        let old_error = node(5, old_error);
        let never = node(6, NodeReport::default());
        let nodes = [healthy, stale, skewed, failed, old_error, never];
        let mut auth = HashMap::new();
        auth.insert(
            1,
            AuthFailures {
                count: 3,
                last_at: Timestamp::from_unix(99_000),
            },
        );
        let mut progress = HashMap::new();
        progress.insert(NodeId(3), NodeProgress::Failed);
        let list = problems(&nodes, &auth, Some(("2-abcdef12", &progress)), now);
        let ids: Vec<u64> = list.iter().map(|p| p.id.0).collect();
        assert_eq!(ids, [4, 3, 2, 1]);
        assert_eq!(list[1].problems[0].word(), "update-failed");
        assert_eq!(list[1].problems[1].word(), "clock-off");

        let counts = StateCounts::of(&nodes);
        assert_eq!(counts.total, 6);
        assert_eq!(counts.get(BootState::Boot, "boot"), 5);
        assert_eq!(counts.get(BootState::Boot, "never"), 1);
        assert_eq!(counts.run_level["never"], 1);
    }
}
