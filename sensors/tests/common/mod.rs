//! What the sensors tests share: a server on a free loopback port (or a
//! listener the test made), raw HTTP/1.x requests, and real slivers made
//! by nodemgr in a cgroup of the test's own.

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use sensors::Settings;

/// Settings for a test: loopback on a free port, nothing cached, short
/// timeouts, and every node file in `dir` (nodemgr's too).
pub fn settings(dir: &Path) -> Settings {
    fs::create_dir_all(dir.join("run")).unwrap();
    let mut s = Settings::node();
    s.listen = "127.0.0.1:0".parse().unwrap();
    s.cache_ttl = Duration::ZERO;
    s.limits.request_timeout = Duration::from_secs(2);
    s.limits.write_timeout = Duration::from_secs(2);
    s.node_config = dir.join("node.toml");
    s.handover = dir.join("handover.json");
    s.journal = floor::journal::Journal::new(dir.join("run/events.jsonl"), 64 << 20);
    s.nodemgr.state_dir = dir.join("nodemgr");
    s.bwcap_state_dir = dir.join("bwcap");
    s.nodemgr.cgroup_root = dir.join("no-cgroup");
    s.nodemgr.slivers_fs = nodemgr::storage::SliversFs::Dir(dir.join("fs"));
    s.connections_interval = Duration::from_millis(100);
    s
}

/// A server running on its own runtime until dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `settings.listen` and serves.
    pub fn start(settings: Settings) -> Server {
        let listener = std::net::TcpListener::bind(settings.listen).expect("binding");
        Server::on(settings, listener)
    }

    /// Serves on a listener the test made (e.g. in a network namespace).
    pub fn on(settings: Settings, listener: std::net::TcpListener) -> Server {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = sensors::app(&settings).expect("app");
                ready_tx.send(()).unwrap();
                sensors::server::serve(listener, app, async {
                    let _ = stopped.await;
                })
                .await;
            });
            runtime.shutdown_background();
        });
        ready_rx.recv().expect("server started");
        Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An HTTP response as read off the wire.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// The body's CSV lines, split into fields (no quoted commas in the
    /// sensors the tests read this way).
    pub fn rows(&self) -> Vec<Vec<String>> {
        self.body
            .lines()
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect()
    }
}

/// A connection with a guard against hanging for ever.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connecting");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// Sends `raw` and reads until the server closes.
pub fn raw(addr: SocketAddr, raw: &str) -> Response {
    let mut s = connect(addr);
    s.write_all(raw.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> Response {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// `METHOD path` with `Connection: close`.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    raw(
        addr,
        &format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path)
}

/// A streaming sensor, read line by line (HTTP/1.0: the body ends when
/// the connection does, no chunks to decode).
pub struct Stream {
    pub head: String,
    reader: BufReader<TcpStream>,
}

impl Stream {
    pub fn open(addr: SocketAddr, path: &str) -> Stream {
        let mut s = connect(addr);
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .unwrap();
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("response head");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        Stream { head, reader }
    }

    /// The next line (without its break); None at the end.
    pub fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end_matches('\n').to_string()),
        }
    }
}

/// Whether we are root (tests that need it print SKIP otherwise).
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Why real slivers cannot be made here, if they cannot.
pub fn slivers_unavailable() -> Option<String> {
    if !root() {
        return Some("not root".into());
    }
    if cgroup2_root().is_none() {
        return Some("no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("no /bin/busybox (apt-get install busybox-static)".into());
    }
    if fs::read_to_string("/proc/sys/user/max_user_namespaces").is_ok_and(|s| s.trim() == "0") {
        return Some("user namespaces are disabled".into());
    }
    None
}

/// The host's cgroup2 mount: pure v2, or the `unified` one of a hybrid host.
pub fn cgroup2_root() -> Option<PathBuf> {
    floor::cgroup::cgroup2_mount()
}

/// The nodemgr binary (a sliver's PID 1 is nodemgr itself), built into
/// this test's target directory once.
pub fn nodemgr_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(given) = std::env::var_os("PLNODE_NODEMGR_HOST") {
            return PathBuf::from(given);
        }
        // <target>/debug/deps/<test> -> <target>/debug
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let target = profile_dir.parent().unwrap();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace)
            .args(["build", "--quiet", "-p", "nodemgr", "--bin", "nodemgr"])
            .env("CARGO_TARGET_DIR", target)
            .status()
            .expect("running cargo build -p nodemgr");
        assert!(status.success(), "cargo build -p nodemgr failed");
        let bin = target.join("debug/nodemgr");
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}

/// A reference root for slivers: static busybox with the applets the
/// tests use, and an /etc skeleton.
pub fn reference_root(dir: &Path) -> PathBuf {
    let root = dir.join("ref");
    for d in [
        "bin", "etc", "tmp", "proc", "sys", "dev", "home", "root", "usr/bin",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "nc", "sleep", "cat", "ps", "id", "wget", "echo", "true",
    ] {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    root
}

/// nodemgr over the test's directories and cgroup, as the sensors read it.
pub struct Slivers {
    pub cgroup: floor::cgroup::ScratchCgroup,
    pub manager: nodemgr::NodeManager,
    pub settings: nodemgr::Settings,
}

impl Slivers {
    pub fn new(dir: &Path) -> Slivers {
        let cgroup = floor::cgroup::ScratchCgroup::new("sensors-test").expect("test cgroup");
        let fs_dir = dir.join("fs");
        fs::create_dir_all(&fs_dir).unwrap();
        let mut settings = nodemgr::Settings::node();
        settings.state_dir = dir.join("nodemgr");
        settings.run_dir = dir.join("nodemgr-run");
        settings.cgroup_root = cgroup.path().to_path_buf();
        settings.reference_root = reference_root(dir);
        settings.slivers_fs = nodemgr::storage::SliversFs::Dir(fs_dir);
        settings.helper_program = nodemgr_binary().to_path_buf();
        settings.require_limits = false;
        settings.require_quota = false;
        let manager = nodemgr::NodeManager::open(settings.clone()).expect("nodemgr");
        Slivers {
            cgroup,
            manager,
            settings,
        }
    }

    /// Runs a shell command inside a sliver in the background (nodemgr
    /// enter); the child is returned so the test can wait for or kill it.
    pub fn spawn_in(&self, slice: &str, script: &str) -> std::process::Child {
        let s = &self.settings;
        Command::new(nodemgr_binary())
            .args(["--state-dir", &s.state_dir.display().to_string()])
            .args(["--run-dir", &s.run_dir.display().to_string()])
            .args(["--cgroup-root", &s.cgroup_root.display().to_string()])
            .args(["--reference-root", &s.reference_root.display().to_string()])
            .args(["--slivers-dir", &s.slivers_fs.root().display().to_string()])
            .args(["--allow-unlimited", "--allow-no-quota"])
            .args(["enter", slice, "--", "/bin/sh", "-c", script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nodemgr enter")
    }
}

/// A network namespace of the test's own (`ip netns`), deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// A namespace with loopback up, holding `addr/24` besides 127.0.0.1.
    pub fn with_address(addr: &str) -> Result<NetNs, String> {
        let name = format!("sensors-test-{}", std::process::id());
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("running ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        // On the namespace's loopback interface, yet outside 127.0.0.0/8:
        // to the server, a peer like any other on the network.
        ip(&["-n", n, "addr", "add", &format!("{addr}/24"), "dev", "lo"])?;
        Ok(ns)
    }

    /// Runs `f` on a thread inside the namespace (sockets it makes stay
    /// in the namespace).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = fs::File::open(&path).expect("opening the namespace");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("entering the namespace");
            f()
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// `promtool check metrics` on `text`: its report (starting `FAILED` when
/// it refuses the text), or `None` where promtool is not installed.
pub fn promtool_check(text: &str) -> Option<String> {
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return None,
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Some(format!(
        "{}{}{}",
        if out.status.success() { "" } else { "FAILED " },
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}
