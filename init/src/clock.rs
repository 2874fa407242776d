//! Keeping the node's clock right enough for TLS and metadata expiry.
//!
//! A machine whose RTC battery died wakes up in 2000; certificates and
//! signed metadata would look not-yet-valid. Before it can talk to anyone
//! the node moves its clock up to the newest time it can prove (the CD's
//! build time, or the last server time recorded on its disk). Once a
//! check-in succeeds, the server's time — in a reply bound to our request
//! by its signature — sets the clock exactly.

use std::time::{Duration, SystemTime};

use config::Timestamp;

/// How far the clock may drift from the server's before it is set.
pub const MAX_SKEW: Duration = Duration::from_secs(30);

fn set_clock(t: SystemTime) -> anyhow::Result<()> {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let spec = nix::sys::time::TimeSpec::new(since.as_secs() as i64, since.subsec_nanos() as i64);
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, spec)
        .map_err(|e| anyhow::anyhow!("setting the clock: {e}"))
}

/// What a clock adjustment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adjusted {
    Unchanged { now: Timestamp },
    Set { from: Timestamp, to: Timestamp },
}

impl std::fmt::Display for Adjusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Adjusted::Unchanged { now } => write!(f, "clock={now}"),
            Adjusted::Set { from, to } => write!(f, "clock set from {from} to {to}"),
        }
    }
}

/// The decision alone (testable): move to `floor` if the clock is behind it.
pub fn floor_decision(now: SystemTime, floor: SystemTime) -> Option<SystemTime> {
    (now < floor).then_some(floor)
}

/// The decision alone: take the server's time when we are more than `MAX_SKEW` off.
pub fn server_decision(now: SystemTime, server: SystemTime) -> Option<SystemTime> {
    let off = match now.duration_since(server) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    (off > MAX_SKEW).then_some(server)
}

/// Moves the clock up to `floor` if it is behind it.
pub fn apply_floor(floor: SystemTime) -> anyhow::Result<Adjusted> {
    let now = SystemTime::now();
    match floor_decision(now, floor) {
        Some(to) => {
            set_clock(to)?;
            Ok(Adjusted::Set {
                from: now.into(),
                to: to.into(),
            })
        }
        None => Ok(Adjusted::Unchanged { now: now.into() }),
    }
}

/// Sets the clock from an authenticated server time when it is off.
pub fn apply_server_time(server: Timestamp) -> anyhow::Result<Adjusted> {
    let now = SystemTime::now();
    match server_decision(now, server.to_system_time()) {
        Some(to) => {
            set_clock(to)?;
            Ok(Adjusted::Set {
                from: now.into(),
                to: to.into(),
            })
        }
        None => Ok(Adjusted::Unchanged { now: now.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_behind_the_floor_moves_up_and_never_down() {
        let floor = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let year_2000 = SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800);
        assert_eq!(floor_decision(year_2000, floor), Some(floor));
        assert_eq!(floor_decision(floor + Duration::from_secs(5), floor), None);
    }

    #[test]
    fn the_server_time_wins_beyond_the_skew_only() {
        let server = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            server_decision(server + Duration::from_secs(10), server),
            None
        );
        assert_eq!(
            server_decision(server - Duration::from_secs(3600), server),
            Some(server)
        );
        assert_eq!(
            server_decision(server + Duration::from_secs(3600 * 24 * 365 * 5), server),
            Some(server)
        );
    }
}
