//! Random power cuts that can be replayed: the trial count and the seed
//! come from the environment, the seed is printed, and the cut times are
//! drawn from a small generator of our own (the same seed gives the same
//! cuts on any machine).

use std::time::Duration;

/// The cut times of one run of power-cut trials.
#[derive(Debug)]
pub struct PowerCuts {
    pub trials: u32,
    pub seed: u64,
    state: u64,
}

impl PowerCuts {
    /// `trials_var` names the variable holding the trial count (default
    /// `default_trials`); the seed is `PLNODE_POWER_CUT_SEED`, or the clock.
    pub fn from_env(trials_var: &str, default_trials: u32) -> PowerCuts {
        let trials = std::env::var(trials_var)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(default_trials);
        eprintln!("power-cut trials: {trials} (from {trials_var}, default {default_trials})");
        PowerCuts::new(trials)
    }

    /// `trials` cuts; the seed is `PLNODE_POWER_CUT_SEED`, or the clock.
    pub fn new(trials: u32) -> PowerCuts {
        let seed = std::env::var("PLNODE_POWER_CUT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("power-cut seed {seed} (PLNODE_POWER_CUT_SEED={seed} replays the cuts)");
        PowerCuts {
            trials,
            seed,
            state: seed,
        }
    }

    /// The next cut, uniformly within `window` (to the millisecond).
    pub fn next_within(&mut self, window: Duration) -> Duration {
        // Knuth's MMIX linear congruential generator; the high bits are the good ones.
        self.state = self
            .state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let millis = (window.as_millis() as u64).max(1);
        Duration::from_millis((self.state >> 33) % millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_cuts_within_the_window() {
        let cuts = |seed| {
            let mut c = PowerCuts {
                trials: 3,
                seed,
                state: seed,
            };
            (0..50)
                .map(|_| c.next_within(Duration::from_secs(9)))
                .collect::<Vec<_>>()
        };
        let a = cuts(42);
        assert_eq!(a, cuts(42));
        assert_ne!(a, cuts(43));
        assert!(a.iter().all(|d| *d < Duration::from_secs(9)));
        assert!(a.iter().any(|d| *d > Duration::from_secs(4)), "{a:?}");
    }
}
