//! When to check next.
//!
//! Thousands of nodes poll one boot server, so every wait is jittered:
//! after an answer the next check comes after the poll interval give or
//! take half of it (uniformly, so the mean stays the interval); while the
//! server cannot be reached the wait doubles from `retry_min` up to
//! `retry_max` and is drawn from its upper half ("equal jitter"), so a
//! server that comes back after days is not hit by every node at once,
//! and a node catches up at most `retry_max` after it returns.
//!
//! Each draw is the kernel's random fraction shifted by the node's own
//! phase, a hash of its id ([`node_phase`]): uniform as before, and spread
//! across the nodes even if the random source gave every node the same
//! number (or none at all).

use std::time::Duration;

use config::node::NodeId;
use sha2::{Digest, Sha256};

/// The poll and retry intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub interval: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            interval: Duration::from_secs(15 * 60),
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(60 * 60),
        }
    }
}

/// The wait before the next check: its unjittered base and the drawn value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub base: Duration,
    pub wait: Duration,
}

/// A uniform random fraction in [0, 1) from the kernel.
fn unit_random() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

impl Schedule {
    /// The unjittered wait after `failures` checks in a row could not reach
    /// the server (0: the last check got an answer).
    pub fn base(&self, failures: u32) -> Duration {
        if failures == 0 {
            return self.interval;
        }
        let doubled = self
            .retry_min
            .saturating_mul(1u32 << (failures - 1).min(30));
        doubled.min(self.retry_max).max(self.retry_min)
    }

    /// The wait to use, drawn with `r` in [0, 1).
    pub fn wait_with(&self, failures: u32, r: f64) -> Wait {
        let base = self.base(failures);
        let r = r.clamp(0.0, 1.0);
        let wait = if failures == 0 {
            base.mul_f64(0.5 + r)
        } else {
            base.mul_f64(0.5 + r / 2.0)
        };
        Wait { base, wait }
    }

    /// The wait to use, jittered from the kernel's random source shifted
    /// by the node's `phase`.
    pub fn wait(&self, failures: u32, phase: f64) -> Wait {
        self.wait_with(failures, (phase + unit_random()).fract())
    }
}

/// A node's own place in `[0, 1)`: a hash of its id.
pub fn node_phase(node: NodeId) -> f64 {
    let digest = Sha256::digest(format!("plnode updater phase {}", node.0));
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn retries_double_up_to_the_cap() {
        let sched = Schedule {
            interval: s(900),
            retry_min: s(60),
            retry_max: s(3600),
        };
        let bases: Vec<u64> = (0..10).map(|f| sched.base(f).as_secs()).collect();
        assert_eq!(bases, [900, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(sched.base(u32::MAX), s(3600));
    }

    #[test]
    fn waits_stay_within_their_jitter_bands() {
        let sched = Schedule::default();
        assert_eq!(sched.wait_with(0, 0.0).wait, s(450));
        assert_eq!(sched.wait_with(0, 1.0).wait, s(1350));
        assert_eq!(sched.wait_with(3, 0.0).wait, s(120));
        assert_eq!(sched.wait_with(3, 1.0).wait, s(240));
        for failures in 0..12 {
            let w = sched.wait(failures, 0.3);
            assert!(w.wait >= w.base / 2 && w.wait <= w.base * 3 / 2, "{w:?}");
        }
    }

    #[test]
    fn jitter_spreads_nodes_apart() {
        let sched = Schedule::default();
        let draws: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| sched.wait(0, 0.0).wait).collect();
        assert!(draws.len() > 40, "{} distinct waits of 50", draws.len());
    }

    #[test]
    fn a_thousand_nodes_coming_back_spread_out_even_without_randomness() {
        // The server was down for days: every node waits `retry_max` with
        // equal jitter. With the same random draw everywhere (a broken
        // random source), the node phases alone spread them.
        let sched = Schedule::default();
        let mut per_second = std::collections::BTreeMap::<u64, u32>::new();
        for id in 1..=1000u64 {
            let phase = node_phase(NodeId(id));
            let w = sched.wait_with(20, (phase + 0.5).fract());
            *per_second.entry(w.wait.as_secs()).or_default() += 1;
        }
        let busiest = per_second.values().copied().max().unwrap_or(0);
        assert!(
            busiest <= 6,
            "{busiest} nodes in the busiest second (1000 nodes over 1800 s)"
        );
        assert!(
            per_second.len() > 500,
            "{} distinct seconds",
            per_second.len()
        );
    }
}
