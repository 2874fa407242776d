//! Test fixtures: a working directory made by the real `bootserver init`,
//! the real server process on 127.0.0.1, and a small blocking node client
//! that signs requests with `config::api::auth` exactly as a node does.
#![allow(dead_code)]

pub mod client;
pub mod repo;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub use client::NodeClient;

pub fn bootserver_bin() -> &'static str {
    env!("CARGO_BIN_EXE_bootserver")
}

/// Runs `bootserver ARGS` and returns its output (success not checked).
pub fn run(args: &[&str]) -> Output {
    Command::new(bootserver_bin())
        .args(args)
        .env_remove("BOOTSERVER_DIR")
        .env("RUST_LOG", "warn")
        .output()
        .expect("running bootserver")
}

/// Runs `bootserver ARGS` and returns stdout; fails the test on failure.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "bootserver {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `bootserver ARGS`, expects failure, returns stderr.
pub fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        !out.status.success(),
        "bootserver {args:?} should have failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A working directory with one site and any number of nodes.
pub struct Workdir {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl Workdir {
    /// `bootserver init` with the names the QEMU guest and the host use.
    pub fn new() -> Workdir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("server");
        ok(&[
            "init",
            dir.to_str().unwrap(),
            "--host",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--ip",
            "10.0.2.2",
        ]);
        ok(&["-d", dir.to_str().unwrap(), "site", "add", "demo"]);
        Workdir { tmp, dir }
    }

    pub fn d(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// `bootserver -d DIR ARGS…`, must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let mut all = vec!["-d", self.d()];
        all.extend_from_slice(args);
        ok(&all)
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let mut all = vec!["-d", self.d()];
        all.extend_from_slice(args);
        fails(&all)
    }

    /// JSON output of an admin command.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca/ca.pem")
    }

    /// Replaces `key = old` by `key = new` in bootserver.toml.
    pub fn set_config(&self, line_from: &str, line_to: &str) {
        let path = self.dir.join("bootserver.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(line_from), "{line_from} not in:\n{text}");
        std::fs::write(&path, text.replace(line_from, line_to)).unwrap();
    }

    /// Registers a node and returns its id and parsed config.
    pub fn add_node(&self, hostname: &str) -> (u64, config::NodeConfig) {
        let out = self.tmp.path().join(format!("{hostname}.toml"));
        self.ok(&[
            "node",
            "add",
            hostname,
            "--site",
            "demo",
            "-o",
            out.to_str().unwrap(),
        ]);
        let config = config::NodeConfig::load(&out).expect("node add writes a valid node.toml");
        (config.node_id.0, config)
    }

    pub fn node_json(&self, node: &str) -> serde_json::Value {
        self.json(&["node", "show", node])
    }

    pub fn start(&self) -> ServerProcess {
        ServerProcess::start(&self.dir)
    }

    pub fn client(&self, server: &ServerProcess, config: &config::NodeConfig) -> NodeClient {
        NodeClient::new(server.addr, &self.ca(), "localhost", config)
    }
}

/// `bootserver serve DIR --listen 127.0.0.1:0`, killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    pub stderr_log: PathBuf,
}

impl ServerProcess {
    pub fn start(dir: &Path) -> ServerProcess {
        let stderr_log = dir.join("serve.stderr.log");
        let stderr = std::fs::File::create(&stderr_log).unwrap();
        let mut child = Command::new(bootserver_bin())
            .args(["serve", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting bootserver serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        // The server prints this line once it accepts connections; it
        // exits (EOF) if it cannot start.
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on https://")
            .unwrap_or_else(|| {
                panic!(
                    "serve did not start: {line:?}\n{}",
                    std::fs::read_to_string(&stderr_log).unwrap_or_default()
                )
            })
            .parse()
            .unwrap();
        ServerProcess {
            child,
            addr,
            stderr_log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
