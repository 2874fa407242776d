//! When to check next.
//!
//! Thousands of nodes poll one boot server, so every wait is jittered:
//! after an answer the next check comes after the poll interval give or
//! take half of it (uniformly, so the mean stays the interval); while the
//! server cannot be reached the wait doubles from `retry_min` up to
//! `retry_max` and is drawn from its upper half ("equal jitter"), so a
//! server that comes back after days is not hit by every node at once,
//! and a node catches up at most `retry_max` after it returns.

use std::time::Duration;

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

    /// The wait to use, jittered from the kernel's random source.
    pub fn wait(&self, failures: u32) -> Wait {
        self.wait_with(failures, unit_random())
    }
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
            let w = sched.wait(failures);
            assert!(w.wait >= w.base / 2 && w.wait <= w.base * 3 / 2, "{w:?}");
        }
    }

    #[test]
    fn jitter_spreads_nodes_apart() {
        let sched = Schedule::default();
        let draws: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| sched.wait(0).wait).collect();
        assert!(draws.len() > 40, "{} distinct waits of 50", draws.len());
    }
}
