//! The paper's example sensor: the last N outgoing connections of each
//! slice. A thread dumps the kernel's socket table ([`crate::sockdiag`])
//! every interval, finds the sockets it has not seen (by cookie) that are
//! outgoing (TCP connecting or connected from a port that no listener
//! holds; UDP with a peer), and gives each to a slice: by the cgroup that
//! made the socket (a sliver's cgroup is `slivers/<slice>` or below), else
//! by the owner's uid (in the sliver's range of host ids). Each slice keeps
//! its last N; subscribers get those, then every new one.
//!
//! A connection that opens and closes between two dumps is not seen: the
//! socket table is a snapshot, and this is its price (no hooks in the
//! kernel, no programs run).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use config::Timestamp;
use netlink_packet_sock_diag::inet::StateFlags;
use tokio::sync::broadcast;

use crate::sockdiag::{DiagError, DiagSocket, Protocol, SocketEntry, SocketState};

/// One outgoing connection of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The slice.
    pub slice: String,
    /// When it was first seen.
    pub time: Timestamp,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Local address and port.
    pub source: SocketAddr,
    /// Remote address and port.
    pub destination: SocketAddr,
    /// The socket's owner (host uid).
    pub uid: u32,
}

impl Connection {
    /// Its row in the `connections` sensor.
    pub fn row(&self) -> Vec<String> {
        vec![
            self.slice.clone(),
            self.time.to_string(),
            self.protocol.as_str().into(),
            self.source.to_string(),
            self.destination.to_string(),
            self.uid.to_string(),
        ]
    }
}

/// Which slice a socket belongs to: by cgroup id, else by uid range.
#[derive(Debug, Clone, Default)]
pub struct Owners {
    by_cgroup: HashMap<u64, String>,
    /// (first uid, slice), sorted by first uid; each range is 65,536 ids.
    by_uid: Vec<(u32, String)>,
}

impl Owners {
    /// Re-reads the slivers' cgroup directories under
    /// `<cgroup_root>/slivers` (a cgroup's id is its directory's inode
    /// number).
    pub fn read_cgroups(&mut self, cgroup_root: &Path) {
        self.by_cgroup.clear();
        if let Ok(entries) = std::fs::read_dir(cgroup_root.join("slivers")) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let slice = entry.file_name().to_string_lossy().into_owned();
                    collect_cgroups(&entry.path(), &slice, &mut self.by_cgroup, 0);
                }
            }
        }
    }

    /// Sets the slivers' id ranges: (slice, first host uid) each.
    pub fn set_ranges(&mut self, slivers: Vec<(String, u32)>) {
        self.by_uid = slivers.into_iter().map(|(s, u)| (u, s)).collect();
        self.by_uid.sort();
    }

    /// The slice a socket belongs to, if any.
    pub fn owner(&self, socket: &SocketEntry) -> Option<&str> {
        if let Some(slice) = socket.cgroup_id.and_then(|id| self.by_cgroup.get(&id)) {
            return Some(slice.as_str());
        }
        let i = self
            .by_uid
            .partition_point(|(first, _)| *first <= socket.uid);
        let (first, slice) = self.by_uid.get(i.checked_sub(1)?)?;
        (socket.uid - first < nodemgr::ids::RANGE_SIZE).then_some(slice.as_str())
    }

    /// The slices known.
    pub fn slices(&self) -> HashSet<&str> {
        self.by_uid
            .iter()
            .map(|(_, s)| s.as_str())
            .chain(self.by_cgroup.values().map(String::as_str))
            .collect()
    }
}

fn collect_cgroups(dir: &Path, slice: &str, out: &mut HashMap<u64, String>, depth: usize) {
    if let Ok(meta) = std::fs::metadata(dir) {
        out.insert(meta.ino(), slice.to_string());
    }
    // A sliver may make groups of its own below its group; a few levels
    // are plenty and bound the walk.
    if depth >= 4 {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_cgroups(&entry.path(), slice, out, depth + 1);
            }
        }
    }
}

/// The outgoing sockets of a dump: TCP connecting, or connected from a
/// local port no listener holds; UDP with a peer.
pub fn outgoing(sockets: &[SocketEntry]) -> Vec<&SocketEntry> {
    let listeners: HashSet<(std::net::IpAddr, u16)> = sockets
        .iter()
        .filter(|s| s.protocol == Protocol::Tcp && s.state == SocketState::Listen)
        .map(|s| (s.source.ip(), s.source.port()))
        .collect();
    let accepted = |s: &SocketEntry| {
        let port = s.source.port();
        listeners.contains(&(s.source.ip(), port))
            || listeners
                .iter()
                .any(|(ip, p)| *p == port && ip.is_unspecified())
    };
    sockets
        .iter()
        .filter(|s| match (s.protocol, s.state) {
            (Protocol::Tcp, SocketState::SynSent) => true,
            (Protocol::Tcp, SocketState::Established) => !accepted(s),
            (Protocol::Udp, SocketState::Established) => !s.destination.ip().is_unspecified(),
            _ => false,
        })
        .collect()
}

struct Rings {
    per_slice: BTreeMap<String, VecDeque<Arc<Connection>>>,
}

/// The last connections per slice, and the stream of new ones.
pub struct ConnectionsHub {
    keep: usize,
    rings: Mutex<Rings>,
    sender: broadcast::Sender<Arc<Connection>>,
    error: Mutex<Option<String>>,
}

impl std::fmt::Debug for ConnectionsHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionsHub")
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

/// What a subscriber starts with.
#[derive(Debug)]
pub struct Subscription {
    /// The last connections of each slice, oldest first per slice.
    pub recent: Vec<Arc<Connection>>,
    /// New connections from now on.
    pub new: broadcast::Receiver<Arc<Connection>>,
}

impl ConnectionsHub {
    /// A hub keeping the last `keep` connections per slice.
    pub fn new(keep: usize) -> ConnectionsHub {
        ConnectionsHub {
            keep: keep.max(1),
            rings: Mutex::new(Rings {
                per_slice: BTreeMap::new(),
            }),
            sender: broadcast::channel(1024).0,
            error: Mutex::new(None),
        }
    }

    fn rings(&self) -> std::sync::MutexGuard<'_, Rings> {
        self.rings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The recent connections and a receiver of new ones, with nothing
    /// lost or repeated between the two.
    pub fn subscribe(&self) -> Subscription {
        let rings = self.rings();
        Subscription {
            recent: rings.per_slice.values().flatten().cloned().collect(),
            new: self.sender.subscribe(),
        }
    }

    /// Clients following the stream now.
    pub fn followers(&self) -> usize {
        self.sender.receiver_count()
    }

    /// Why the last dump failed, if it did.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, connection: Connection) {
        let connection = Arc::new(connection);
        let mut rings = self.rings();
        let ring = rings.per_slice.entry(connection.slice.clone()).or_default();
        if ring.len() == self.keep {
            ring.pop_front();
        }
        ring.push_back(connection.clone());
        // Nobody listening is not an error.
        let _ = self.sender.send(connection);
    }

    /// Forgets slices that no longer have a sliver.
    fn retain(&self, slices: &HashSet<&str>) {
        self.rings()
            .per_slice
            .retain(|s, _| slices.contains(s.as_str()));
    }
}

/// What the watcher needs to know about the node.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// The cgroup2 root (slivers are under `slivers/`).
    pub cgroup_root: PathBuf,
    /// nodemgr's settings, for the slivers' uid ranges.
    pub nodemgr: nodemgr::Settings,
    /// Time between dumps.
    pub interval: Duration,
}

fn sliver_ranges(settings: &nodemgr::Settings) -> Vec<(String, u32)> {
    let dir = settings.sliver_states();
    let Ok(slices) = nodemgr::state::SliverState::list(&dir) else {
        return Vec::new();
    };
    slices
        .iter()
        .filter_map(|s| {
            nodemgr::state::SliverState::load(&dir, s)
                .ok()
                .flatten()
                .map(|st| (s.to_string(), st.ids.first))
        })
        .collect()
}

/// Starts the watcher thread; it runs for the life of the process.
pub fn start(hub: Arc<ConnectionsHub>, settings: WatchSettings) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("connections".into())
        .spawn(move || watch(&hub, &settings))
        .map(|_| ())
}

fn watch(hub: &ConnectionsHub, settings: &WatchSettings) {
    let mut socket: Option<DiagSocket> = None;
    let mut seen: HashSet<u64> = HashSet::new();
    let mut owners = Owners::default();
    let mut pass: u64 = 0;
    loop {
        // A sliver's group exists before its first process does: groups
        // are re-read every pass (a directory listing), the id ranges
        // (state files) every few.
        owners.read_cgroups(&settings.cgroup_root);
        if pass.is_multiple_of(4) {
            owners.set_ranges(sliver_ranges(&settings.nodemgr));
            hub.retain(&owners.slices());
        }
        pass += 1;
        match dump(&mut socket) {
            Ok(sockets) => {
                *hub.error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                let now = Timestamp::now();
                let mut present = HashSet::with_capacity(sockets.len());
                for s in outgoing(&sockets) {
                    // A socket nobody owns yet is looked at again next
                    // pass (its sliver may be newer than the id ranges).
                    let Some(slice) = owners.owner(s) else {
                        continue;
                    };
                    present.insert(s.cookie);
                    if !seen.contains(&s.cookie) {
                        hub.record(Connection {
                            slice: slice.to_string(),
                            time: now,
                            protocol: s.protocol,
                            source: s.source,
                            destination: s.destination,
                            uid: s.uid,
                        });
                    }
                }
                seen = present;
            }
            Err(e) => {
                let text = floor::report::error_line(&e);
                let mut last = hub.error.lock().unwrap_or_else(|p| p.into_inner());
                if last.as_deref() != Some(text.as_str()) {
                    tracing::warn!("connections: {text}");
                }
                *last = Some(text);
                socket = None;
            }
        }
        std::thread::sleep(settings.interval);
    }
}

fn dump(socket: &mut Option<DiagSocket>) -> Result<Vec<SocketEntry>, DiagError> {
    let s = match socket {
        Some(s) => s,
        None => socket.insert(DiagSocket::open()?),
    };
    let mut all = s.dump(
        Protocol::Tcp,
        StateFlags::LISTEN | StateFlags::SYN_SENT | StateFlags::ESTABLISHED,
    )?;
    all.extend(s.dump(Protocol::Udp, StateFlags::ESTABLISHED)?);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(protocol: Protocol, state: SocketState, src: &str, dst: &str) -> SocketEntry {
        SocketEntry {
            protocol,
            state,
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
            uid: 0,
            cookie: 0,
            cgroup_id: None,
        }
    }

    #[test]
    fn only_outgoing_sockets_count() {
        use Protocol::*;
        use SocketState::*;
        let sockets = vec![
            socket(Tcp, Listen, "0.0.0.0:22", "0.0.0.0:0"),
            socket(Tcp, Listen, "127.0.0.1:33080", "0.0.0.0:0"),
            socket(Tcp, Established, "10.0.0.1:22", "10.0.0.9:50000"),
            socket(Tcp, Established, "127.0.0.1:33080", "127.0.0.1:40000"),
            socket(Tcp, Established, "127.0.0.1:40000", "127.0.0.1:33080"),
            socket(Tcp, SynSent, "10.0.0.1:40001", "192.0.2.1:80"),
            socket(Udp, Established, "10.0.0.1:5353", "192.0.2.53:53"),
            socket(Udp, Established, "0.0.0.0:68", "0.0.0.0:0"),
        ];
        let out: Vec<String> = outgoing(&sockets)
            .iter()
            .map(|s| s.destination.to_string())
            .collect();
        assert_eq!(out, ["127.0.0.1:33080", "192.0.2.1:80", "192.0.2.53:53"]);
    }

    #[test]
    fn owners_by_cgroup_first_then_uid_range() {
        let owners = Owners {
            by_cgroup: HashMap::from([(77, "pl_a".to_string())]),
            by_uid: vec![
                (1 << 20, "pl_b".into()),
                ((1 << 20) + 65_536, "pl_c".into()),
            ],
        };
        let mut s = socket(
            Protocol::Tcp,
            SocketState::SynSent,
            "1.1.1.1:1",
            "2.2.2.2:2",
        );
        s.uid = (1 << 20) + 1000;
        s.cgroup_id = Some(77);
        assert_eq!(owners.owner(&s), Some("pl_a"));
        s.cgroup_id = Some(78);
        assert_eq!(owners.owner(&s), Some("pl_b"));
        s.uid = (1 << 20) + 65_536;
        assert_eq!(owners.owner(&s), Some("pl_c"));
        s.uid = (1 << 20) + 2 * 65_536;
        assert_eq!(owners.owner(&s), None);
        s.uid = 0;
        assert_eq!(owners.owner(&s), None);
    }

    #[test]
    fn each_slice_keeps_its_last_n() {
        let hub = ConnectionsHub::new(2);
        let c = |slice: &str, port: u16| Connection {
            slice: slice.into(),
            time: Timestamp::from_unix(0),
            protocol: Protocol::Tcp,
            source: "127.0.0.1:1".parse().unwrap(),
            destination: SocketAddr::from(([127, 0, 0, 1], port)),
            uid: 0,
        };
        for port in 1..=3 {
            hub.record(c("pl_a", port));
        }
        hub.record(c("pl_b", 9));
        let mut sub = hub.subscribe();
        let ports: Vec<u16> = sub.recent.iter().map(|c| c.destination.port()).collect();
        assert_eq!(ports, [2, 3, 9]);
        hub.record(c("pl_b", 10));
        assert_eq!(sub.new.try_recv().unwrap().destination.port(), 10);
        hub.retain(&HashSet::from(["pl_b"]));
        assert_eq!(hub.subscribe().recent.len(), 2);
    }
}
