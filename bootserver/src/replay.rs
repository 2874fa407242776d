//! The memory side of replay protection: every nonce accepted within the
//! freshness window, grouped by the request timestamp it came with.
//!
//! A replayed request must carry the same timestamp as the original (both
//! are signed), so a lookup only needs that timestamp's bucket, and
//! forgetting everything older than the window is a single split of the
//! ordered map. The database keeps the same nonces (written with the
//! request's effects) so a restart refills this cache.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use config::api::auth::Nonce;
use config::node::NodeId;

#[derive(Debug)]
pub struct ReplayCache {
    skew_secs: i64,
    seen: Mutex<BTreeMap<i64, HashSet<(NodeId, Nonce)>>>,
}

impl ReplayCache {
    pub fn new(skew_secs: u32) -> ReplayCache {
        ReplayCache {
            skew_secs: i64::from(skew_secs),
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether `ts` is within the window around `now`.
    pub fn is_fresh(&self, ts: i64, now: i64) -> bool {
        ts.abs_diff(now) <= self.skew_secs as u64
    }

    /// Records the nonce; `false` if it was already recorded (a replay).
    /// Callers check freshness first: a stale request never gets here, which
    /// is what makes forgetting old buckets safe.
    pub fn first_use(&self, node: NodeId, nonce: Nonce, ts: i64, now: i64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let horizon = now - self.skew_secs;
        if seen
            .first_key_value()
            .is_some_and(|(oldest, _)| *oldest < horizon)
        {
            let keep = seen.split_off(&horizon);
            *seen = keep;
        }
        seen.entry(ts).or_default().insert((node, nonce))
    }

    /// Loads nonces stored by an earlier run.
    pub fn preload(&self, entries: impl IntoIterator<Item = (NodeId, Nonce, i64)>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (node, nonce, ts) in entries {
            seen.entry(ts).or_default().insert((node, nonce));
        }
    }

    /// Nonces held (for logs).
    pub fn len(&self) -> usize {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.values().map(HashSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonce(b: u8) -> Nonce {
        Nonce::from_random_bytes([b; 16])
    }

    #[test]
    fn a_nonce_is_accepted_once_per_node() {
        let cache = ReplayCache::new(300);
        assert!(cache.first_use(NodeId(1), nonce(1), 1000, 1000));
        assert!(!cache.first_use(NodeId(1), nonce(1), 1000, 1001));
        assert!(cache.first_use(NodeId(2), nonce(1), 1000, 1001));
        assert!(cache.first_use(NodeId(1), nonce(2), 1000, 1001));
    }

    #[test]
    fn old_buckets_are_forgotten_only_beyond_the_window() {
        let cache = ReplayCache::new(300);
        assert!(cache.first_use(NodeId(1), nonce(1), 1000, 1000));
        // Still inside the window: remembered.
        assert!(!cache.first_use(NodeId(1), nonce(1), 1000, 1300));
        // Past it, the bucket goes (and such a request is stale anyway).
        assert!(cache.first_use(NodeId(1), nonce(9), 1301, 1301));
        assert_eq!(cache.len(), 1);
        assert!(!cache.is_fresh(1000, 1301));
        assert!(cache.is_fresh(1600, 1301));
    }

    #[test]
    fn preloaded_nonces_count_as_seen() {
        let cache = ReplayCache::new(300);
        cache.preload([(NodeId(3), nonce(7), 500)]);
        assert!(!cache.first_use(NodeId(3), nonce(7), 500, 600));
    }
}
