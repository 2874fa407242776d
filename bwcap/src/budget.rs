//! Daily byte budgets, as PlanetLab's bwmon kept them: each sliver may send
//! a budget of bytes per 24-hour period; past 80 % of it, its ceiling drops
//! to what spreads the bytes left evenly over the seconds left,
//! `(bytes left × 8) / (seconds left)`, but never below its guaranteed rate.
//! The time is always a parameter, so tests run on a fake clock.

use config::units::Rate;
use config::Timestamp;
use serde::{Deserialize, Serialize};

/// Length of a budget period.
pub const PERIOD_SECS: i64 = 86_400;

/// Share of the budget after which the ceiling is lowered, in percent.
pub const THRESHOLD_PERCENT: u64 = 80;

/// One sliver's current budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetPeriod {
    /// When the period began.
    pub start: Timestamp,
    /// Bytes sent in it so far.
    pub bytes: u64,
}

impl BudgetPeriod {
    /// A period starting now.
    pub fn starting(now: Timestamp) -> BudgetPeriod {
        BudgetPeriod {
            start: now,
            bytes: 0,
        }
    }

    /// When the period ends (and the next begins).
    pub fn end(&self) -> Timestamp {
        self.start.saturating_add_secs(PERIOD_SECS)
    }

    /// Moves to the period holding `now` (whole periods after the start,
    /// so periods keep their time of day), forgetting the bytes of the old one.
    pub fn roll(&mut self, now: Timestamp) {
        let elapsed = now.unix().saturating_sub(self.start.unix());
        if elapsed >= PERIOD_SECS {
            let periods = elapsed / PERIOD_SECS;
            self.start = self
                .start
                .saturating_add_secs(periods.saturating_mul(PERIOD_SECS));
            self.bytes = 0;
        } else if elapsed < 0 {
            // The clock went back before the period began: start again at now.
            *self = BudgetPeriod::starting(now);
        }
    }
}

/// Where a sliver stands against its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetState {
    /// Below the threshold: the normal ceiling.
    Normal,
    /// Past the threshold: the ceiling is lowered.
    Throttled,
    /// Nothing left: the guaranteed rate only.
    Exhausted,
}

impl BudgetState {
    /// Its name, as serialised (`normal`, `throttled`, `exhausted`).
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetState::Normal => "normal",
            BudgetState::Throttled => "throttled",
            BudgetState::Exhausted => "exhausted",
        }
    }
}

/// The ceiling a sliver gets now: its `normal` ceiling below the threshold,
/// else `(bytes left × 8) / (seconds left)` kept between `guaranteed` and `normal`.
pub fn ceiling(
    normal: Rate,
    guaranteed: Rate,
    daily_budget: u64,
    period: &BudgetPeriod,
    now: Timestamp,
) -> (Rate, BudgetState) {
    let used = u128::from(period.bytes);
    let budget = u128::from(daily_budget);
    if used * 100 < budget * u128::from(THRESHOLD_PERCENT) {
        return (normal, BudgetState::Normal);
    }
    let left = budget.saturating_sub(used);
    let seconds_left = (period.end().unix() - now.unix()).max(1) as u128;
    let bits_per_sec = u64::try_from(left * 8 / seconds_left).unwrap_or(u64::MAX);
    let floor = guaranteed.min(normal);
    let rate = Rate::from_bits_per_sec(bits_per_sec).clamp(floor, normal);
    let state = if left == 0 {
        BudgetState::Exhausted
    } else {
        BudgetState::Throttled
    };
    (rate, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_unix(1_800_000_000);
    const GIB: u64 = 1 << 30;

    #[test]
    fn below_the_threshold_the_ceiling_is_normal() {
        let p = BudgetPeriod {
            start: T0,
            bytes: 79 * GIB / 100,
        };
        let (rate, state) = ceiling(
            Rate::mbit(10),
            Rate::kbit(5),
            GIB,
            &p,
            T0.saturating_add_secs(3600),
        );
        assert_eq!((rate, state), (Rate::mbit(10), BudgetState::Normal));
    }

    #[test]
    fn past_the_threshold_bytes_left_are_spread_over_seconds_left() {
        // 1,000,000 bytes left, 1000 s left: 8000 bit/s.
        let p = BudgetPeriod {
            start: T0,
            bytes: 9_000_000,
        };
        let now = T0.saturating_add_secs(PERIOD_SECS - 1000);
        let (rate, state) = ceiling(Rate::mbit(10), Rate::kbit(5), 10_000_000, &p, now);
        assert_eq!((rate, state), (Rate::kbit(8), BudgetState::Throttled));
        // Never below the guaranteed rate.
        let (rate, _) = ceiling(Rate::mbit(10), Rate::kbit(50), 10_000_000, &p, now);
        assert_eq!(rate, Rate::kbit(50));
        // Never above the normal ceiling.
        let early = T0.saturating_add_secs(1);
        let (rate, _) = ceiling(Rate::kbit(1), Rate::kbit(1), 10_000_000, &p, early);
        assert_eq!(rate, Rate::kbit(1));
    }

    #[test]
    fn an_exhausted_budget_leaves_the_guarantee() {
        let p = BudgetPeriod {
            start: T0,
            bytes: 11_000_000,
        };
        let (rate, state) = ceiling(Rate::mbit(10), Rate::kbit(5), 10_000_000, &p, T0);
        assert_eq!((rate, state), (Rate::kbit(5), BudgetState::Exhausted));
    }

    #[test]
    fn periods_roll_by_whole_days() {
        let mut p = BudgetPeriod {
            start: T0,
            bytes: 5,
        };
        p.roll(T0.saturating_add_secs(PERIOD_SECS - 1));
        assert_eq!(p.bytes, 5);
        p.roll(T0.saturating_add_secs(3 * PERIOD_SECS + 7));
        assert_eq!(
            (p.start, p.bytes),
            (T0.saturating_add_secs(3 * PERIOD_SECS), 0)
        );
        p.bytes = 9;
        p.roll(T0);
        assert_eq!((p.start, p.bytes), (T0, 0));
    }
}
