//! A bench for real shaping without a real node, used by the tests and the
//! benchmark: two network namespaces joined by a veth pair (the "node" and
//! its "peer"), a cgroup v2 directory of the bench's own with `slivers/`
//! under it, a receiver in the peer namespace counting bytes per sender,
//! and senders (the `loadgen` programs) started inside sliver cgroups in the
//! node namespace. Everything is removed when the [`Testbed`] is dropped.
//!
//! Traffic goes only to the peer namespace, bounded in bytes and time.

pub mod loadgen;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use floor::cgroup::ScratchCgroup;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::names::InterfaceName;

/// Why a bench cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// This machine cannot run it (not root, no cgroup v2, no `ip`): skip.
    #[error("{0}")]
    Unavailable(String),
    /// Setting it up failed.
    #[error("{what}")]
    Failed {
        /// What was being done.
        what: String,
        /// The reason.
        #[source]
        source: io::Error,
    },
}

fn failed(what: impl Into<String>) -> impl FnOnce(io::Error) -> TestbedError {
    let what = what.into();
    move |source| TestbedError::Failed { what, source }
}

pub use floor::cgroup::cgroup2_mount;

/// Runs `f` in a thread that joined the network namespace at `netns`
/// (a `/run/netns/NAME` file); other threads are not affected.
pub fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| -> io::Result<T> {
            enter_netns(netns)?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Moves the calling thread into the network namespace at `netns`.
pub fn enter_netns(netns: &Path) -> io::Result<()> {
    let file = fs::File::open(netns)?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Moves the calling process into the cgroup at `cgroup`.
pub fn enter_cgroup(cgroup: &Path) -> io::Result<()> {
    fs::write(cgroup.join("cgroup.procs"), b"0")
}

static BENCHES: AtomicU32 = AtomicU32::new(0);

/// The MTU of the bench's veth pair.
pub const MTU: u64 = 1500;

/// Two namespaces, a veth pair, a cgroup directory; removed on drop.
#[derive(Debug)]
pub struct Testbed {
    /// The node's namespace (`/run/netns/<name>`).
    pub node_ns: String,
    /// The peer's namespace.
    pub peer_ns: String,
    /// The node's end of the veth pair (the egress interface).
    pub node_if: InterfaceName,
    /// The node's address.
    pub node_addr: Ipv4Addr,
    /// The peer's address.
    pub peer_addr: Ipv4Addr,
    /// The bench's cgroup v2 directory (the "node cgroup"; `slivers/` below it).
    pub cgroup_root: PathBuf,
    children: Mutex<Vec<Child>>,
    /// Removes `cgroup_root` with everything below it, after the rest.
    _cgroup: ScratchCgroup,
}

fn ip(args: &[&str]) -> Result<(), TestbedError> {
    let what = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(failed(what.clone()))?;
    if !out.status.success() {
        return Err(TestbedError::Failed {
            what,
            source: io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        });
    }
    Ok(())
}

impl Testbed {
    /// Builds a bench; `tag` goes into the names (the test's name, short).
    pub fn new(tag: &str) -> Result<Testbed, TestbedError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(TestbedError::Unavailable("not running as root".into()));
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Err(TestbedError::Unavailable(
                "iproute2's `ip` is not installed".into(),
            ));
        }
        if cgroup2_mount().is_none() {
            return Err(TestbedError::Unavailable(
                "no cgroup v2 hierarchy is mounted".into(),
            ));
        }
        if let Err(e) = crate::bpf::cgroup::can_load() {
            return Err(TestbedError::Unavailable(format!(
                "cannot load cgroup eBPF programs: {}",
                floor::report::error_line(&e)
            )));
        }
        let n = BENCHES.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let base = format!("bwcap-{tag}-{pid}-{n}");
        let cgroup =
            ScratchCgroup::new("bwcap-test").map_err(failed("making the bench's cgroup"))?;
        let bed = Testbed {
            node_ns: format!("{base}-node"),
            peer_ns: format!("{base}-peer"),
            node_if: "bwn0"
                .parse()
                .map_err(|e| failed("interface name")(io::Error::other(e)))?,
            node_addr: Ipv4Addr::new(10, 77, 0, 1),
            peer_addr: Ipv4Addr::new(10, 77, 0, 2),
            cgroup_root: cgroup.path().to_path_buf(),
            children: Mutex::new(Vec::new()),
            _cgroup: cgroup,
        };
        // From here on, Drop cleans up whatever was made.
        fs::create_dir(bed.cgroup_root.join("slivers")).map_err(failed("mkdir slivers"))?;
        ip(&["netns", "add", &bed.node_ns])?;
        ip(&["netns", "add", &bed.peer_ns])?;
        ip(&[
            "-n",
            &bed.node_ns,
            "link",
            "add",
            "bwn0",
            "type",
            "veth",
            "peer",
            "name",
            "bwp0",
            "netns",
            &bed.peer_ns,
        ])?;
        ip(&[
            "-n",
            &bed.node_ns,
            "addr",
            "add",
            "10.77.0.1/24",
            "dev",
            "bwn0",
        ])?;
        ip(&[
            "-n",
            &bed.peer_ns,
            "addr",
            "add",
            "10.77.0.2/24",
            "dev",
            "bwp0",
        ])?;
        for (ns, dev) in [(&bed.node_ns, "bwn0"), (&bed.peer_ns, "bwp0")] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(bed)
    }

    /// The node namespace's file.
    pub fn node_netns(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.node_ns)
    }

    /// The peer namespace's file.
    pub fn peer_netns(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.peer_ns)
    }

    /// Makes (if needed) and returns `<root>/slivers/<slice>`.
    pub fn sliver_cgroup(&self, slice: &str) -> io::Result<PathBuf> {
        let path = self.cgroup_root.join("slivers").join(slice);
        match fs::create_dir(&path) {
            Ok(()) => Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(path),
            Err(e) => Err(e),
        }
    }

    /// Removes a sliver's cgroup (its processes must be gone).
    pub fn remove_sliver_cgroup(&self, slice: &str) -> io::Result<()> {
        fs::remove_dir(self.cgroup_root.join("slivers").join(slice))
    }

    /// Runs `f` in the node's namespace.
    pub fn in_node<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        in_netns(&self.node_netns(), f)
    }

    /// Runs `tc ARGS` in the node's namespace (to damage the layout by hand).
    pub fn tc(&self, args: &[&str]) -> io::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.node_ns, "tc"])
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    /// Starts a receiver on the peer, port `port`.
    pub fn receiver(&self, port: u16) -> io::Result<Receiver> {
        Receiver::start(&self.peer_netns(), SocketAddrV4::new(self.peer_addr, port))
    }

    /// Starts a load generator; the bench kills it if it still runs at drop.
    pub fn spawn(&self, loadgen: &Loadgen, args: &[String]) -> io::Result<u32> {
        let child = loadgen
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        Ok(pid)
    }

    /// Waits for a load generator started by [`Testbed::spawn`] and returns
    /// its output (stdout, stderr, status).
    pub fn wait(&self, pid: u32) -> io::Result<Output> {
        let child = {
            let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
            let at = children
                .iter()
                .position(|c| c.id() == pid)
                .ok_or_else(|| io::Error::other(format!("no child {pid}")))?;
            children.remove(at)
        };
        child.wait_with_output()
    }

    /// Stops a load generator started by [`Testbed::spawn`] and reaps it.
    pub fn stop(&self, pid: u32) -> io::Result<()> {
        let mut child = {
            let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
            let at = children
                .iter()
                .position(|c| c.id() == pid)
                .ok_or_else(|| io::Error::other(format!("no child {pid}")))?;
            children.remove(at)
        };
        child.kill()?;
        child.wait().map(drop)
    }

    /// Runs a load generator to its end.
    pub fn run(&self, loadgen: &Loadgen, args: &[String]) -> io::Result<Output> {
        let pid = self.spawn(loadgen, args)?;
        self.wait(pid)
    }

    /// Arguments common to every load generator started in a sliver.
    pub fn sliver_args(&self, cgroup: &Path) -> Vec<String> {
        vec![
            "--netns".into(),
            self.node_netns().display().to_string(),
            "--cgroup".into(),
            cgroup.display().to_string(),
        ]
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = ip(&["netns", "del", &self.node_ns]);
        let _ = ip(&["netns", "del", &self.peer_ns]);
        // The cgroup tree goes with `_cgroup`, after this.
    }
}

/// How to start the load generator: the `bwcap-loadgen` program, or a
/// program that runs [`loadgen::main`] after a prefix of arguments.
#[derive(Debug, Clone)]
pub struct Loadgen {
    program: PathBuf,
    prefix: Vec<String>,
}

impl Loadgen {
    /// `program ARGS`.
    pub fn new(program: impl Into<PathBuf>) -> Loadgen {
        Loadgen {
            program: program.into(),
            prefix: Vec::new(),
        }
    }

    /// `program PREFIX... ARGS`.
    pub fn with_prefix(program: impl Into<PathBuf>, prefix: &[&str]) -> Loadgen {
        Loadgen {
            program: program.into(),
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn command(&self, args: &[String]) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.prefix).args(args);
        c
    }
}

#[derive(Debug)]
struct Flow {
    /// A handle on the connection, to ask the kernel what arrived.
    stream: std::net::TcpStream,
    /// Bytes the reader read (the fallback when TCP_INFO fails).
    bytes: AtomicU64,
    mss: AtomicU32,
}

impl Flow {
    /// Payload bytes received in order, as the kernel counts them
    /// (`tcpi_bytes_received`): no lag behind a busy reader thread.
    fn received(&self) -> u64 {
        tcp_bytes_received(&self.stream).unwrap_or_else(|| self.bytes.load(Ordering::Relaxed))
    }
}

/// `offsetof(struct tcp_info, tcpi_bytes_received)`.
const TCPI_BYTES_RECEIVED: usize = 128;

fn tcp_bytes_received(stream: &std::net::TcpStream) -> Option<u64> {
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 || (len as usize) < TCPI_BYTES_RECEIVED + 8 {
        return None;
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&info[TCPI_BYTES_RECEIVED..TCPI_BYTES_RECEIVED + 8]);
    // The 4-byte id the sender starts with is payload too.
    Some(u64::from_ne_bytes(v).saturating_sub(4))
}

/// Counts the bytes each sender sends to the peer (senders say who they
/// are in their first 4 bytes).
#[derive(Debug)]
pub struct Receiver {
    flows: Arc<Mutex<BTreeMap<u32, Arc<Flow>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Where it listens.
    pub addr: SocketAddrV4,
}

/// A sender's rate over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Payload bytes received in the window.
    pub payload_bytes: u64,
    /// The window, seconds.
    pub seconds: f64,
    /// The TCP segment size of the flow.
    pub mss: u32,
}

impl Measured {
    /// Payload bits per second.
    pub fn goodput_bps(&self) -> f64 {
        self.payload_bytes as f64 * 8.0 / self.seconds
    }

    /// Bits per second as HTB charges them: every full segment costs its
    /// payload plus its Ethernet, IP and TCP headers, i.e. a whole
    /// `MTU + 14`-byte frame per `mss` payload bytes.
    pub fn wire_bps(&self) -> f64 {
        let mss = f64::from(self.mss.max(1));
        self.goodput_bps() * (MTU as f64 + 14.0) / mss
    }
}

impl Receiver {
    fn start(netns: &Path, addr: SocketAddrV4) -> io::Result<Receiver> {
        let flows: Arc<Mutex<BTreeMap<u32, Arc<Flow>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let flows = flows.clone();
            let stop = stop.clone();
            let netns = netns.to_path_buf();
            std::thread::spawn(move || {
                let listener = enter_netns(&netns).and_then(|()| {
                    let l = TcpListener::bind(addr)?;
                    l.set_nonblocking(true)?;
                    Ok(l)
                });
                let listener = match listener {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut readers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let flows = flows.clone();
                            let stop = stop.clone();
                            readers
                                .push(std::thread::spawn(move || read_flow(stream, &flows, &stop)));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(_) => break,
                    }
                }
                for r in readers {
                    let _ = r.join();
                }
            })
        };
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("receiver thread died"))??;
        Ok(Receiver {
            flows,
            stop,
            thread: Some(thread),
            addr,
        })
    }

    /// Bytes received so far, per sender id.
    pub fn bytes(&self) -> BTreeMap<u32, u64> {
        self.flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, f)| (*id, f.received()))
            .collect()
    }

    fn mss(&self, id: u32) -> u32 {
        self.flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map_or(0, |f| f.mss.load(Ordering::Relaxed))
    }

    /// Waits until every sender in `ids` is connected (at most `timeout`).
    pub fn wait_for(&self, ids: &[u32], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let flows = self.bytes();
            if ids.iter().all(|id| flows.get(id).is_some_and(|b| *b > 0)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Lets the senders run for `warmup`, then measures each over `window`.
    pub fn measure(
        &self,
        ids: &[u32],
        warmup: Duration,
        window: Duration,
    ) -> BTreeMap<u32, Measured> {
        std::thread::sleep(warmup);
        let before = self.bytes();
        let started = Instant::now();
        std::thread::sleep(window);
        let after = self.bytes();
        let seconds = started.elapsed().as_secs_f64();
        ids.iter()
            .map(|id| {
                let bytes =
                    after.get(id).copied().unwrap_or(0) - before.get(id).copied().unwrap_or(0);
                (
                    *id,
                    Measured {
                        payload_bytes: bytes,
                        seconds,
                        mss: self.mss(*id),
                    },
                )
            })
            .collect()
    }
}

fn read_flow(
    mut stream: std::net::TcpStream,
    flows: &Mutex<BTreeMap<u32, Arc<Flow>>>,
    stop: &AtomicBool,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut id = [0u8; 4];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut have = 0;
    while have < 4 {
        match stream.read(&mut id[have..]) {
            Ok(0) => return,
            Ok(n) => have += n,
            Err(_) if Instant::now() < deadline && !stop.load(Ordering::Relaxed) => {}
            Err(_) => return,
        }
    }
    let Ok(handle) = stream.try_clone() else {
        return;
    };
    let flow = Arc::new(Flow {
        stream: handle,
        bytes: AtomicU64::new(0),
        mss: AtomicU32::new(tcp_mss(&stream)),
    });
    flows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(u32::from_be_bytes(id), flow.clone());
    let mut buf = vec![0u8; 256 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                flow.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    // The flow keeps a handle for TCP_INFO: close the connection itself, so
    // that a draining sender sees the end.
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn tcp_mss(stream: &std::net::TcpStream) -> u32 {
    let mut mss: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one int into `mss`, whose size is in `len`.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&mut mss as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 {
        mss.max(0) as u32
    } else {
        0
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Jain's fairness index of `xs`: 1 when all are equal, 1/n when one has all.
pub fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if squares == 0.0 {
        return 0.0;
    }
    sum * sum / (xs.len() as f64 * squares)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_index() {
        assert!((jain(&[5.0, 5.0, 5.0]) - 1.0).abs() < 1e-12);
        assert!((jain(&[1.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
    }
}
