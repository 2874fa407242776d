//! Per-sliver byte and packet counters that outlive the kernel's: a class's
//! statistics restart at zero whenever the class is created again (a
//! reboot, a repair), so bwcap keeps running totals and adds what the
//! kernel counted since the last reading. Samples of the totals, thinned as
//! they age, give the last minute, hour and day.

use config::Timestamp;
use serde::{Deserialize, Serialize};

/// The totals at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// When.
    pub at: Timestamp,
    /// Bytes sent since the record began.
    pub bytes: u64,
    /// Packets sent since the record began.
    pub packets: u64,
}

/// A sliver's counters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    /// The kernel's byte count for the class at the last reading.
    pub kernel_bytes: u64,
    /// The kernel's packet count at the last reading.
    pub kernel_packets: u64,
    /// Bytes since the record began.
    pub total_bytes: u64,
    /// Packets since the record began.
    pub total_packets: u64,
    /// Samples of the totals, oldest first.
    pub samples: Vec<Sample>,
}

/// Traffic over a window that ends now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Window {
    /// Bytes sent.
    pub bytes: u64,
    /// Packets sent.
    pub packets: u64,
    /// The window's real length: shorter than asked when the record is younger.
    pub seconds: i64,
}

impl Window {
    /// Average rate over the window, bits per second.
    pub fn bits_per_sec(&self) -> u64 {
        if self.seconds <= 0 {
            0
        } else {
            self.bytes.saturating_mul(8) / self.seconds as u64
        }
    }
}

/// How densely samples are kept, by age: (up to this age, one per this many seconds).
const RETENTION: [(i64, i64); 3] = [(120, 5), (3_660, 60), (90_000, 3_600)];

impl Counters {
    /// Counters that begin at `now` with the kernel's class at zero.
    pub fn starting(now: Timestamp) -> Counters {
        Counters {
            samples: vec![Sample {
                at: now,
                bytes: 0,
                packets: 0,
            }],
            ..Counters::default()
        }
    }

    /// Takes the kernel's current reading of the class; returns the bytes
    /// and packets sent since the last one. A reading below the last means
    /// the class was created again: all of it is new.
    pub fn observe(&mut self, kernel_bytes: u64, kernel_packets: u64) -> (u64, u64) {
        let bytes = if kernel_bytes >= self.kernel_bytes {
            kernel_bytes - self.kernel_bytes
        } else {
            kernel_bytes
        };
        let packets = if kernel_packets >= self.kernel_packets {
            kernel_packets - self.kernel_packets
        } else {
            kernel_packets
        };
        self.kernel_bytes = kernel_bytes;
        self.kernel_packets = kernel_packets;
        self.total_bytes = self.total_bytes.saturating_add(bytes);
        self.total_packets = self.total_packets.saturating_add(packets);
        (bytes, packets)
    }

    /// The class is gone or was made again: the kernel counts from zero.
    pub fn class_restarted(&mut self) {
        self.kernel_bytes = 0;
        self.kernel_packets = 0;
    }

    /// Records the totals at `now` and thins old samples.
    pub fn sample(&mut self, now: Timestamp) {
        self.samples.push(Sample {
            at: now,
            bytes: self.total_bytes,
            packets: self.total_packets,
        });
        self.samples.sort_by_key(|s| s.at);
        // Keep the oldest sample of each (tier, slot), so that a window
        // starting on a slot boundary finds a sample exactly there; drop
        // what is older than a day and an hour.
        let mut kept: Vec<Sample> = Vec::with_capacity(self.samples.len());
        let mut last_slot = None;
        for s in &self.samples {
            let age = now.unix() - s.at.unix();
            let Some((tier, (_, every))) = RETENTION
                .iter()
                .enumerate()
                .find(|(_, (max_age, _))| age <= *max_age)
            else {
                continue;
            };
            let slot = (tier, s.at.unix().div_euclid(*every));
            if last_slot != Some(slot) {
                kept.push(*s);
                last_slot = Some(slot);
            }
        }
        self.samples = kept;
    }

    /// Traffic in the `seconds` before `now`, counting up to `live` (the
    /// totals now, with the kernel's latest reading added) or else the
    /// stored totals.
    pub fn window(&self, now: Timestamp, seconds: i64, live: Option<(u64, u64)>) -> Window {
        let (bytes, packets) = live.unwrap_or((self.total_bytes, self.total_packets));
        let since = now.unix() - seconds;
        let base = self
            .samples
            .iter()
            .rev()
            .find(|s| s.at.unix() <= since)
            .or_else(|| self.samples.first());
        match base {
            Some(b) => Window {
                bytes: bytes.saturating_sub(b.bytes),
                packets: packets.saturating_sub(b.packets),
                seconds: (now.unix() - b.at.unix()).max(0),
            },
            None => Window::default(),
        }
    }

    /// The totals with a fresh kernel reading, without recording it.
    pub fn live_totals(&self, kernel_bytes: u64, kernel_packets: u64) -> (u64, u64) {
        let mut copy = Counters {
            samples: Vec::new(),
            ..self.clone()
        };
        copy.observe(kernel_bytes, kernel_packets);
        (copy.total_bytes, copy.total_packets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_unix(1_800_000_000);

    fn at(secs: i64) -> Timestamp {
        T0.saturating_add_secs(secs)
    }

    #[test]
    fn a_kernel_counter_that_restarts_is_not_lost() {
        let mut c = Counters::starting(T0);
        assert_eq!(c.observe(1000, 10), (1000, 10));
        assert_eq!(c.observe(1500, 12), (500, 2));
        // The class was made again and has sent 300 bytes since.
        assert_eq!(c.observe(300, 3), (300, 3));
        assert_eq!((c.total_bytes, c.total_packets), (1800, 15));
        c.class_restarted();
        assert_eq!(c.observe(50, 1), (50, 1));
    }

    #[test]
    fn windows_cover_the_last_minute_hour_and_day() {
        let mut c = Counters::starting(T0);
        // 1000 bytes every 10 s for two days.
        for step in 1..=(2 * 8640) {
            c.observe(step * 1000, step);
            c.sample(at(step as i64 * 10));
        }
        let now = at(2 * 86_400);
        let minute = c.window(now, 60, None);
        assert_eq!((minute.bytes, minute.seconds), (6000, 60));
        let hour = c.window(now, 3600, None);
        assert_eq!((hour.bytes, hour.seconds), (360_000, 3600));
        let day = c.window(now, 86_400, None);
        assert_eq!((day.bytes, day.seconds), (8_640_000, 86_400));
        assert!(
            c.samples.len() < 24 + 61 + 26,
            "{} samples kept",
            c.samples.len()
        );
        // A live reading counts too.
        let live = c.live_totals(2 * 8640 * 1000 + 500, 2 * 8640 + 1);
        assert_eq!(c.window(now, 60, Some(live)).bytes, 6500);
    }

    #[test]
    fn a_young_record_reports_its_shorter_window() {
        let mut c = Counters::starting(T0);
        c.observe(100, 1);
        c.sample(at(30));
        let w = c.window(at(30), 3600, None);
        assert_eq!((w.bytes, w.seconds), (100, 30));
        assert_eq!(w.bits_per_sec(), 26);
    }
}
