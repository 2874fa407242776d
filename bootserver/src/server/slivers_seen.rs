//! What each node last fetched from `GET /api/v1/node/slivers`, so that a
//! check-in can tell the node its slices changed since (the check-in hint
//! `slices_changed`: assignments, keys, rspecs, leases). Kept in memory: a
//! server that restarted, or a node that fetched from another server, gets
//! the hint once more than needed, which costs the node one poll.

use std::collections::HashMap;
use std::sync::Mutex;

use config::api::Sliver;
use config::node::NodeId;
use sha2::{Digest, Sha256};

/// The digest of a node's slivers as served (their JSON).
pub fn digest(slivers: &[Sliver]) -> [u8; 32] {
    Sha256::digest(serde_json::to_vec(slivers).unwrap_or_default()).into()
}

/// Per node, the digest of the slivers it was last served.
#[derive(Debug, Default)]
pub struct SliversSeen(Mutex<HashMap<NodeId, [u8; 32]>>);

impl SliversSeen {
    /// Records what `node` was just served.
    pub fn record(&self, node: NodeId, slivers: &[Sliver]) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, digest(slivers));
    }

    /// Whether `node`'s slivers are now other than what it was last
    /// served; for a node never served, whether it has any.
    pub fn changed(&self, node: NodeId, slivers: &[Sliver]) -> bool {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&node) {
            Some(seen) => *seen != digest(slivers),
            None => !slivers.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use config::rspec::Rspec;

    fn sliver(name: &str, pids: u32) -> Sliver {
        Sliver {
            name: name.into(),
            ssh_keys: vec![],
            rspec: Rspec {
                pids: Some(pids),
                ..Rspec::default()
            },
            initscript: None,
        }
    }

    #[test]
    fn a_change_after_the_last_fetch_is_seen_once_fetched_again() {
        let seen = SliversSeen::default();
        let node = NodeId(3);
        assert!(!seen.changed(node, &[]));
        let now = [sliver("pl_a", 10)];
        assert!(seen.changed(node, &now));
        seen.record(node, &now);
        assert!(!seen.changed(node, &now));
        assert!(seen.changed(node, &[sliver("pl_a", 11)]));
        assert!(seen.changed(node, &[]));
        assert!(!seen.changed(NodeId(4), &[]));
    }
}
