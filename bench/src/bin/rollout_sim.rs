//! Simulation and benchmark: 1,000 node updaters against one boot server,
//! in one run (issue: rollouts for central staff).
//!
//! Every node is the real updater from init's library
//! (`init::node::updater::Updater`), with its own partition (node.toml,
//! verifier state, deployments, download cache) and its own HTTPS client
//! and key, registered with a real boot server (this binary re-run as
//! `rollout_sim serve`, the library `bootserver serve` runs; a separate
//! process so it can be killed with SIGKILL). The nodes run as tasks on a
//! pool of worker threads: each node checks in like its supervisor (the
//! real signed check-in; a `check_updates` hint wakes its updater, as
//! SIGUSR1 does on a node) and polls like the updater's daemon loop (the
//! real `Schedule`). Where a node would reboot, the simulator does what
//! the CD and the supervisor do: activate the staged deployment on trial,
//! then mark it good (or, for a broken release, roll it back), and report
//! each step to the server.
//!
//! Scenarios, one world, in order:
//!
//! 1. empty checks: latency of one node's check on an idle server (no
//!    rollout, then pinned by one), and all nodes checking at once;
//! 2. a 10 MB update with the waves collapsed to one (`--now`): time until
//!    every node has staged it, server CPU and memory, request rate;
//!    beside it, what a user would otherwise script: every node fetching
//!    the same package from nginx with curl, checking it with sha256sum
//!    and unpacking it with tar (no signed metadata, no staging);
//! 3. the same with the server killed (SIGKILL) and restarted midway:
//!    nothing lost, every node ends on the new release, none installs
//!    anything twice;
//! 4. a broken release in waves: the halt triggers in the first wave, no
//!    node of a later wave takes it, `abort` returns the first wave to the
//!    release before.
//!
//! Disk trees live on tmpfs (`--dir`, default /dev/shm): 1,000 nodes each
//! staging 10 MB (download + extracted tree) would need ~20 GB of disk
//! writes and syncs otherwise. The running deployment is small (3 × 64 kB
//! packages); after a node has activated the 10 MB release and marked it
//! good, the simulator drops the payload files of that release from its
//! tree (a real node keeps them), so memory holds only the nodes staging at
//! a time (`--workers`) × ~20 MB. The server's working directory is on
//! disk (/var/tmp), so its commits are real fsyncs.
//!
//! `cargo run --release -p bench --bin rollout_sim [-- --nodes 1000 --update-mb 10]`

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use bootserver::admin::{Admin, ConfigUrls, InitOptions, NodeRef, RolloutSpec};
use bootserver::model::{generate_node_key, NodeNetwork, SiteName};
use bootserver::registry::{self, NewNode};
use bootserver::rollout::{bucket, WavePlan};
use clap::{Parser, Subcommand};
use config::api::{
    paths, BootState, CheckinRequest, Empty, RunLevel, UpdateEvent, UpdateReport, WireNetwork,
};
use config::node::NodeId;
use config::units::Period;
use init::deploy::{DeploymentId, Disk};
use init::node::updater::{node_phase, Options, Outcome, Schedule, Updater};
use pkgsign::fetch::{DirFetcher, DownloadPolicy};
use pkgsign::metadata::RoleType;
use pkgsign::repo::{Expiries, Repository, RoleSpec};
use pkgsign::{SecretKey, Verifier};

#[derive(Parser)]
#[command(about = "1,000 real node updaters against one boot server: rollouts, restarts, waves")]
struct Args {
    #[command(subcommand)]
    internal: Option<Internal>,
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Size of the update (the new `base` package) in MB.
    #[arg(long, default_value_t = 10)]
    update_mb: usize,
    /// Worker threads running the nodes' tasks (at most this many nodes
    /// stage at once; each needs ~2 × the update in memory while it does).
    #[arg(long, default_value_t = 32)]
    workers: usize,
    /// Seconds between a node's check-ins (the server's setting; jittered).
    #[arg(long, default_value_t = 10)]
    checkin_secs: u64,
    /// Seconds between a node's update polls (jittered ±50%).
    #[arg(long, default_value_t = 120)]
    poll_secs: u64,
    /// Where the nodes' disk trees go (a tmpfs).
    #[arg(long, default_value = "/dev/shm")]
    dir: PathBuf,
    /// Skip the curl + sha256sum + tar comparison.
    #[arg(long)]
    no_baseline: bool,
    /// The nginx binary for the comparison.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
}

#[derive(Subcommand)]
enum Internal {
    /// (internal) Serve a working directory: the boot server process.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
    },
}

// ------------------------------------------------------------- packages

fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

/// A package of about `kb` kB: `files` files of noise under `dir`.
fn package(dir: &str, kb: usize, files: usize, seed: u32) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let header = |kind, mode, size| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_795_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        h
    };
    for d in dir_chain(dir) {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        builder.append_data(&mut h, &d, std::io::empty())?;
    }
    let per_file = kb * 1000 / files.max(1);
    for i in 0..files {
        let data = noise(per_file, seed.wrapping_mul(7919).wrapping_add(i as u32));
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        builder.append_data(&mut h, format!("{dir}/f{i:04}"), &data[..])?;
    }
    let tar = builder.into_inner()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar)?;
    Ok(gz.finish()?)
}

/// `a/b/c` → `a`, `a/b`, `a/b/c`.
fn dir_chain(dir: &str) -> Vec<String> {
    let parts: Vec<&str> = dir.split('/').collect();
    (1..=parts.len()).map(|n| parts[..n].join("/")).collect()
}

/// Where a release's payload lives in the deployment (dropped after it
/// proved good, to keep 1,000 trees in memory).
const PAYLOAD: &str = "usr/share/payload";

fn expiries() -> Expiries {
    let t = floor::Timestamp::from_unix(floor::Timestamp::now().unix() + 30 * 86_400);
    Expiries {
        targets: t,
        snapshot: t,
        timestamp: t,
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

// ----------------------------------------------------------- the server

/// The boot server process (this binary, `serve`).
struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    fn start(workdir: &Path, addr: SocketAddr, log: &Path) -> Result<ServerProcess> {
        let stderr = fs::File::create(log)?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--dir"])
            .arg(workdir)
            .arg("--listen")
            .arg(addr.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("starting the boot server process")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.starts_with("listening on") {
            let _ = child.kill();
            bail!(
                "the boot server did not start: {line:?}; see {}",
                log.display()
            );
        }
        Ok(ServerProcess { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds used so far (user + system).
    fn cpu_secs(&self) -> f64 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the name.
        (ticks(11) + ticks(12)) / 100.0
    }

    /// (resident now, peak resident) in MB.
    fn memory_mb(&self) -> (f64, f64) {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let kb = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (kb("VmRSS:") / 1000.0, kb("VmHWM:") / 1000.0)
    }

    /// SIGKILL: no chance to flush anything.
    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path, listen: SocketAddr) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let admin = Admin::open(dir)?;
    admin.serve(
        Some(listen),
        |addr| {
            println!("listening on https://{addr}");
            let _ = std::io::stdout().flush();
        },
        bootserver::admin::shutdown_signal(),
    )?;
    Ok(())
}

// ------------------------------------------------------------ the world

struct World {
    /// The nodes' trees (tmpfs).
    nodes_dir: tempfile::TempDir,
    /// The server's working directory and the staff's repository (disk).
    server_dir: tempfile::TempDir,
    key: SecretKey,
    repo: Repository,
    workdir: PathBuf,
    addr: SocketAddr,
    server: Option<ServerProcess>,
    restarts: u32,
    /// CPU seconds of server processes killed before the current one.
    cpu_of_killed: f64,
}

impl World {
    fn new(args: &Args) -> Result<World> {
        let nodes_dir = tempfile::Builder::new()
            .prefix("rollout-sim-nodes")
            .tempdir_in(&args.dir)?;
        let server_dir = tempfile::Builder::new()
            .prefix("rollout-sim-server")
            .tempdir_in("/var/tmp")?;
        let key = SecretKey::generate()?;
        let spec = RoleSpec {
            keys: vec![key.public().clone()],
            threshold: 1,
        };
        let roles = RoleType::ALL
            .into_iter()
            .map(|r| (r, spec.clone()))
            .collect();
        let repo_dir = server_dir.path().join("staff-repo");
        let repo = Repository::init(
            &repo_dir,
            &roles,
            floor::Timestamp::from_unix(floor::Timestamp::now().unix() + 365 * 86_400),
            std::slice::from_ref(&key),
        )?;
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let workdir = server_dir.path().join("server");
        let world = World {
            nodes_dir,
            server_dir,
            key,
            repo,
            workdir,
            addr,
            server: None,
            restarts: 0,
            cpu_of_killed: 0.0,
        };
        world.add("kernel", "6.1", package("lib/modules", 64, 4, 1)?, false)?;
        world.add("base", "1", package(PAYLOAD, 64, 4, 2)?, true)?;
        world.add("sliver-ref", "1", package("bin", 64, 4, 3)?, true)?;
        world
            .repo
            .publish(std::slice::from_ref(&world.key), &expiries())?;

        let admin = Admin::init(
            &world.workdir,
            &InitOptions {
                hosts: vec!["localhost".parse().map_err(anyhow::Error::msg)?],
                ips: vec![Ipv4Addr::LOCALHOST.into()],
                listen: addr,
                urls: vec![format!("https://{addr}")
                    .parse()
                    .map_err(anyhow::Error::msg)?],
                site_certificate: None,
            },
        )?;
        let cfg = world.workdir.join(config::server::FILE_NAME);
        let text = fs::read_to_string(&cfg)?;
        let text: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with("checkin_interval_secs") {
                    format!("checkin_interval_secs = {}", args.checkin_secs)
                } else {
                    l.to_string()
                }
            })
            .collect();
        fs::write(&cfg, text.join("\n") + "\n")?;
        drop(admin);
        let admin = Admin::open(&world.workdir)?;
        admin.publish(&repo_dir, Some(&repo_dir.join("metadata/1.root.json")))?;
        admin.add_site(&"sim".parse()?, "simulated nodes")?;
        Ok(world)
    }

    fn admin(&self) -> Result<Admin> {
        Ok(Admin::open(&self.workdir)?)
    }

    fn add(&self, name: &str, version: &str, bytes: Vec<u8>, base_image: bool) -> Result<()> {
        let file = self
            .server_dir
            .path()
            .join(format!("{name}-{version}.tar.gz"));
        fs::write(&file, bytes)?;
        self.repo
            .add_package(&file, name, version, base_image, Default::default())?;
        fs::remove_file(file)?;
        Ok(())
    }

    /// A new `base` signed and published to the server.
    fn release(&self, version: &str, kb: usize, seed: u32) -> Result<()> {
        self.add("base", version, package(PAYLOAD, kb, 16, seed)?, true)?;
        self.repo
            .publish(std::slice::from_ref(&self.key), &expiries())?;
        self.admin()?.publish(self.repo.dir(), None)?;
        Ok(())
    }

    /// CPU seconds of every server process so far.
    fn server_cpu(&self) -> f64 {
        self.cpu_of_killed + self.server.as_ref().map_or(0.0, ServerProcess::cpu_secs)
    }

    /// Kills the server with SIGKILL.
    fn kill_server(&mut self) {
        if let Some(server) = self.server.take() {
            self.cpu_of_killed += server.cpu_secs();
            server.kill9();
        }
    }

    fn start_server(&mut self) -> Result<()> {
        let log = self
            .server_dir
            .path()
            .join(format!("serve-{}.log", self.restarts));
        self.server = Some(ServerProcess::start(&self.workdir, self.addr, &log)?);
        self.restarts += 1;
        Ok(())
    }

    /// Registers `n` nodes (state `boot`) in one transaction and gives each
    /// its partition: a copy of one installed disk, with its own node.toml.
    fn make_nodes(&self, n: usize) -> Result<Vec<PathBuf>> {
        let wd = bootserver::workdir::WorkDir::open(&self.workdir)?;
        let mut conn = wd.open_db()?;
        let tx = conn.transaction()?;
        let site: SiteName = "sim".parse()?;
        let now = config::Timestamp::now();
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let new = NewNode {
                site: site.clone(),
                hostname: format!("node{i:04}").parse().map_err(anyhow::Error::msg)?,
                domain: Some("sim.example.org".parse().map_err(anyhow::Error::msg)?),
                network: NodeNetwork {
                    interface: None,
                    mac: None,
                    addressing: WireNetwork::Dhcp,
                },
                boot_state: BootState::Boot,
                id: None,
            };
            ids.push(registry::add_node(&tx, &new, &generate_node_key()?, now)?.id);
        }
        tx.commit()?;

        let template = self.nodes_dir.path().join("template");
        let disk = Disk::new(&template);
        disk.create_layout()?;
        fs::copy(wd.ca_path(), disk.trust_dir().join("ca.pem"))?;
        let root = self.repo.dir().join("metadata/1.root.json");
        let mut verifier = Verifier::open(&disk.trust_dir(), &fs::read(&root)?)?;
        let source = DirFetcher::new(self.repo.dir());
        let verified = verifier.update(&source, SystemTime::now())?;
        let packages = init::deploy::node_packages(&verified)?;
        let record = init::deploy::Build {
            disk: &disk,
            repo: &verified,
            packages: &packages,
            plan: &init::deploy::Plan::fresh(&packages),
            source: &source,
            running: None,
            progress: None,
        }
        .run_fresh()?
        .record;
        disk.activate(&record.id, false)?;

        let admin = self.admin()?;
        let mut partitions = Vec::with_capacity(n);
        for id in ids {
            let part = self.nodes_dir.path().join(format!("node-{}", id.0));
            let status = Command::new("cp")
                .arg("-a")
                .arg(&template)
                .arg(&part)
                .status()?;
            if !status.success() {
                bail!("cp -a {} {}", template.display(), part.display());
            }
            let (_, config) = admin.node_config(&NodeRef::Id(id), &ConfigUrls::FromServer)?;
            fs::write(part.join("node.toml"), config.to_toml())?;
            partitions.push(part);
        }
        pkgsign::install::remove_tree(&template)?;
        Ok(partitions)
    }

    fn rollout(&self, version: &str, waves: WavePlan, interval: u64, limit: &str) -> Result<()> {
        self.admin()?.start_rollout(&RolloutSpec {
            release: version.to_string(),
            waves,
            interval: Period::from_secs(interval),
            max_failures: limit.parse()?,
        })?;
        Ok(())
    }
}

// --------------------------------------------------------- the nodes

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Job {
    Checkin,
    Check(u64),
    Reboot,
}

/// What the simulator knows of one node.
struct NodeSim {
    updater: Updater,
    failures: u32,
    check_gen: u64,
    /// Releases staged by this node, with when.
    staged: Vec<(DeploymentId, Instant)>,
    /// Bytes received by all its checks so far.
    received: u64,
    /// `received` when the current rollout started.
    received_before: u64,
    /// Reverts staged (after an abort).
    reverts: u32,
    hints: u32,
}

#[derive(Default)]
struct Stats {
    checks: AtomicU64,
    check_requests: AtomicU64,
    checkins: AtomicU64,
    reports: AtomicU64,
    unreachable: AtomicU64,
    /// Requests per wall second since the start of the simulation.
    per_second: Mutex<Vec<u64>>,
}

/// What the figures need of a node, kept apart from its lock (which a
/// node holds for the whole of a staging check).
#[derive(Debug, Clone, Default)]
struct View {
    running: Option<String>,
    staged: Vec<String>,
}

struct Sim {
    nodes: Vec<Mutex<NodeSim>>,
    view: Mutex<Vec<View>>,
    ids: Vec<NodeId>,
    queue: Mutex<BinaryHeap<Reverse<(Instant, usize, Job)>>>,
    wake: Condvar,
    stop: AtomicBool,
    stats: Stats,
    started: Instant,
    schedule: Schedule,
    checkin_every: Duration,
    reboot_after: Duration,
    /// A release whose trial fails on a quarter of the nodes.
    broken: Mutex<Option<String>>,
    /// A release whose payload is dropped once it proved good.
    reclaim: Mutex<Option<String>>,
}

impl Sim {
    fn push(&self, at: Instant, node: usize, job: Job) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Reverse((at, node, job)));
        self.wake.notify_one();
    }

    fn count(&self, n: u64) {
        let second = self.started.elapsed().as_secs() as usize;
        let mut v = self
            .stats
            .per_second
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if v.len() <= second {
            v.resize(second + 1, 0);
        }
        v[second] += n;
    }

    fn jitter(&self, node: usize, every: Duration) -> Duration {
        let phase = node_phase(self.ids[node]);
        every.mul_f64(0.5 + phase)
    }

    /// The worker loop: take the next due job, run it, schedule the next.
    fn work(&self) {
        loop {
            let job = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if self.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let now = Instant::now();
                    match q.peek() {
                        Some(Reverse((at, _, _))) if *at <= now => break q.pop(),
                        Some(Reverse((at, _, _))) => {
                            let wait = *at - now;
                            q = self
                                .wake
                                .wait_timeout(q, wait.min(Duration::from_millis(200)))
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                        None => {
                            q = self
                                .wake
                                .wait_timeout(q, Duration::from_millis(200))
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                    }
                }
            };
            let Some(Reverse((_, node, job))) = job else {
                continue;
            };
            let Ok(mut n) = self.nodes[node].try_lock() else {
                // Busy with another job: try again shortly.
                self.push(Instant::now() + Duration::from_millis(50), node, job);
                continue;
            };
            match job {
                Job::Checkin => self.checkin(node, &mut n),
                Job::Check(gen) if gen == n.check_gen => self.check(node, &mut n),
                Job::Check(_) => {}
                Job::Reboot => self.reboot(node, &mut n),
            }
        }
    }

    fn view_of(&self, node: usize, f: impl FnOnce(&mut View)) {
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut view[node]);
    }

    fn schedule_check(&self, node: usize, n: &mut NodeSim, after: Duration) {
        n.check_gen += 1;
        self.push(Instant::now() + after, node, Job::Check(n.check_gen));
    }

    /// The supervisor's check-in (the real signed request); a
    /// `check_updates` hint wakes the updater.
    fn checkin(&self, node: usize, n: &mut NodeSim) {
        let running = n
            .updater
            .disk()
            .link("current")
            .ok()
            .flatten()
            .map(|d| d.to_string());
        let request = CheckinRequest {
            node_id: self.ids[node],
            run_level: RunLevel::Boot,
            bootcd_version: Some("sim".into()),
            os_version: running
                .as_deref()
                .and_then(|d| d.rsplit_once('-').map(|(v, _)| v.to_string())),
            deployment: running,
            hardware: None,
            health: None,
            uptime_secs: self.started.elapsed().as_secs(),
            node_time: config::Timestamp::now(),
        };
        self.stats.checkins.fetch_add(1, Ordering::Relaxed);
        self.count(1);
        if let Ok(reply) = init::node::supervisor::hints::checkin(n.updater.server(), &request) {
            if reply.hints.check_updates {
                n.hints += 1;
                self.schedule_check(node, n, Duration::ZERO);
            }
        }
        self.push(
            Instant::now() + self.jitter(node, self.checkin_every),
            node,
            Job::Checkin,
        );
    }

    /// One check of the real updater, then its daemon loop's wait.
    fn check(&self, node: usize, n: &mut NodeSim) {
        let report = n.updater.check();
        self.stats.checks.fetch_add(1, Ordering::Relaxed);
        self.stats
            .check_requests
            .fetch_add(report.requests, Ordering::Relaxed);
        self.count(report.requests);
        n.received += report.bytes;
        n.failures = match &report.result {
            Err(e) if e.is_unreachable() => {
                self.stats.unreachable.fetch_add(1, Ordering::Relaxed);
                n.failures + 1
            }
            _ => 0,
        };
        match &report.result {
            Ok(Outcome::Staged { deployment, .. }) => {
                n.staged.push((deployment.clone(), Instant::now()));
                self.view_of(node, |v| v.staged.push(deployment.to_string()));
                self.push(Instant::now() + self.reboot_after, node, Job::Reboot);
            }
            Ok(Outcome::AlreadyStaged { .. }) => {
                self.push(Instant::now() + self.reboot_after, node, Job::Reboot);
            }
            Ok(Outcome::Reverted { to: Some(_), .. }) => {
                n.reverts += 1;
                self.push(Instant::now() + self.reboot_after, node, Job::Reboot);
            }
            _ => {}
        }
        let wait = self.schedule.wait(n.failures, node_phase(self.ids[node]));
        self.schedule_check(node, n, wait.wait);
    }

    /// Sends a report as the CD or the supervisor would, trying again
    /// while the server is away.
    fn report(&self, n: &mut NodeSim, event: UpdateEvent, id: &DeploymentId, reason: &str) {
        let r = UpdateReport {
            event,
            os_version: id.os_version().to_string(),
            deployment: id.to_string(),
            reason: Some(reason.to_string()),
            at: config::Timestamp::now(),
        };
        for _ in 0..60 {
            self.stats.reports.fetch_add(1, Ordering::Relaxed);
            self.count(1);
            if n.updater
                .server()
                .post::<_, Empty>(paths::UPDATE, &r)
                .is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// What the CD and the supervisor do at the reboot after staging.
    fn reboot(&self, node: usize, n: &mut NodeSim) {
        let disk = n.updater.disk().clone();
        let Ok(Some(staged)) = disk.link("staged") else {
            return;
        };
        if disk.activate(&staged, true).is_err() || disk.clear_link("staged").is_err() {
            return;
        }
        self.report(n, UpdateEvent::Activated, &staged, "activated on trial");
        let broken = self
            .broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let fails =
            broken.as_deref() == Some(staged.as_str()) && bucket(self.ids[node]).is_multiple_of(4);
        if fails {
            // Three failed trial boots later: the CD goes back and denies it.
            let Ok(Some(previous)) = disk.link("previous") else {
                return;
            };
            let _ = disk.deny(init::deploy::Denied {
                deployment: staged.clone(),
                os_version: staged.os_version().to_string(),
                reason: "services not up within 3 trial boots (simulated)".into(),
                at: config::Timestamp::now(),
            });
            let _ = disk.set_link("current", &previous);
            let _ = disk.clear_link("previous");
            let _ = disk.clear_bootcount();
            self.view_of(node, |v| v.running = Some(previous.to_string()));
            self.report(
                n,
                UpdateEvent::RolledBack,
                &staged,
                "did not come up healthy within 3 boots (simulated)",
            );
        } else {
            let _ = disk.clear_bootcount();
            self.view_of(node, |v| v.running = Some(staged.to_string()));
            self.report(
                n,
                UpdateEvent::MarkedGood,
                &staged,
                "services up (simulated)",
            );
            let reclaim = self
                .reclaim
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if reclaim.as_deref() == Some(staged.as_str()) {
                let payload = disk.deployment_path(&staged).join("root").join(PAYLOAD);
                let _ = fs::remove_dir_all(payload);
            }
        }
        // After a reboot the supervisor checks in soon.
        self.push(
            Instant::now() + Duration::from_millis(500),
            node,
            Job::Checkin,
        );
    }
}

// ------------------------------------------------------------- figures

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    bench::percentile(v, p).unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The latency of one node's empty check at a time, on an idle server.
fn idle_checks(sim: &Sim, samples: usize) -> (Duration, Duration, f64) {
    let mut times = Vec::new();
    let mut requests = 0u64;
    for k in 0..samples {
        let i = (k * 7919) % sim.nodes.len();
        let mut n = sim.nodes[i].lock().unwrap_or_else(|e| e.into_inner());
        let report = n.updater.check();
        requests += report.requests;
        times.push(report.elapsed);
    }
    let p50 = percentile(&mut times, 0.5);
    let p99 = percentile(&mut times, 0.99);
    (p50, p99, requests as f64 / samples as f64)
}

/// Every node checks once, `workers` at a time: throughput and latency.
fn burst_checks(sim: &Arc<Sim>, workers: usize) -> (Duration, Duration, Duration) {
    let next = Arc::new(AtomicU64::new(0));
    let times = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (sim, next, times) = (sim.clone(), next.clone(), times.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= sim.nodes.len() {
                    return;
                }
                let mut n = sim.nodes[i].lock().unwrap_or_else(|e| e.into_inner());
                let report = n.updater.check();
                sim.stats.checks.fetch_add(1, Ordering::Relaxed);
                sim.stats
                    .check_requests
                    .fetch_add(report.requests, Ordering::Relaxed);
                sim.count(report.requests);
                times
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(report.elapsed);
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let total = started.elapsed();
    let mut t = times.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (total, percentile(&mut t, 0.5), percentile(&mut t, 0.99))
}

struct Phase {
    started: Instant,
    cpu: f64,
    nodes_cpu: f64,
    checks: u64,
    requests: u64,
}

fn phase_start(sim: &Sim, world: &World) -> Phase {
    for node in &sim.nodes {
        let mut node = node.lock().unwrap_or_else(|e| e.into_inner());
        node.received_before = node.received;
    }
    Phase {
        started: Instant::now(),
        cpu: world.server_cpu(),
        nodes_cpu: own_cpu_secs(),
        checks: sim.stats.checks.load(Ordering::Relaxed),
        requests: total_requests(sim),
    }
}

fn total_requests(sim: &Sim) -> u64 {
    sim.stats.check_requests.load(Ordering::Relaxed)
        + sim.stats.checkins.load(Ordering::Relaxed)
        + sim.stats.reports.load(Ordering::Relaxed)
}

fn peak_rate(sim: &Sim, from: Instant) -> u64 {
    let first = from.duration_since(sim.started).as_secs() as usize;
    let v = sim
        .stats
        .per_second
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    v.iter().skip(first).copied().max().unwrap_or(0)
}

/// Counts nodes for which `f` holds.
fn count_nodes(sim: &Sim, f: impl Fn(usize, &NodeSim) -> bool) -> usize {
    (0..sim.nodes.len())
        .filter(|i| {
            let n = sim.nodes[*i].lock().unwrap_or_else(|e| e.into_inner());
            f(*i, &n)
        })
        .count()
}

fn staged_count(sim: &Sim, release: &str) -> usize {
    let view = sim.view.lock().unwrap_or_else(|e| e.into_inner());
    view.iter()
        .filter(|v| v.staged.iter().any(|d| d == release))
        .count()
}

fn running(n: &NodeSim) -> Option<String> {
    n.updater
        .disk()
        .link("current")
        .ok()
        .flatten()
        .map(|d| d.to_string())
}

fn running_count(sim: &Sim, release: &str) -> usize {
    let view = sim.view.lock().unwrap_or_else(|e| e.into_inner());
    view.iter()
        .filter(|v| v.running.as_deref() == Some(release))
        .count()
}

/// CPU seconds this process (the nodes) has used.
fn own_cpu_secs() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Waits until `done` holds (checked every 250 ms), printing progress.
fn wait_until(
    what: &str,
    limit: Duration,
    mut progress: impl FnMut() -> (usize, usize),
) -> Result<Duration> {
    let started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let (have, want) = progress();
        if have >= want {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("{what}: only {have} of {want} after {} s", limit.as_secs());
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "  [{:5.1} s] {what}: {have} of {want}",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn published_release(world: &World) -> Result<String> {
    let wd = bootserver::workdir::WorkDir::open(&world.workdir)?;
    Ok(bootserver::publish::published_release(&wd)?
        .deployment
        .to_string())
}

fn print_phase(label: &str, sim: &Sim, world: &World, p: &Phase, elapsed: Duration) {
    let cpu = world.server_cpu() - p.cpu;
    let (rss, peak) = world
        .server
        .as_ref()
        .map_or((0.0, 0.0), ServerProcess::memory_mb);
    let requests = total_requests(sim) - p.requests;
    println!(
        "  {label}: server CPU {cpu:.1} s ({:.0}% of one core), memory {rss:.0} MB (peak {peak:.0} MB); \
         {requests} requests from the nodes ({:.0}/s, peak {}/s), {} checks",
        100.0 * cpu / elapsed.as_secs_f64().max(0.001),
        requests as f64 / elapsed.as_secs_f64().max(0.001),
        peak_rate(sim, p.started),
        sim.stats.checks.load(Ordering::Relaxed) - p.checks
    );
    let nodes_cpu = own_cpu_secs() - p.nodes_cpu;
    println!(
        "  {label}: the {} simulated nodes used {nodes_cpu:.1} CPU s ({:.1} ms per node); machine load average {}",
        sim.nodes.len(),
        nodes_cpu * 1000.0 / sim.nodes.len() as f64,
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

// ------------------------------------------------------------ baseline

/// Every node fetching the same package from nginx with curl, checking it
/// with sha256sum and unpacking it with tar, `workers` at a time.
fn baseline(args: &Args, world: &World, release_file: &str, sha: &str) -> Result<Option<Duration>> {
    if !args.nginx.is_file() {
        println!(
            "  (no nginx at {}: comparison skipped)",
            args.nginx.display()
        );
        return Ok(None);
    }
    let wd = bootserver::workdir::WorkDir::open(&world.workdir)?;
    let prefix = world.server_dir.path().join("nginx");
    fs::create_dir_all(prefix.join("logs"))?;
    let port = free_port()?;
    let p = prefix.display();
    let conf = format!(
        "user root;
worker_processes 2;
daemon off;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    keepalive_timeout 60s;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
    }}
}}
",
        cert = wd.cert_path().display(),
        key = wd.key_path().display(),
        root = world.repo.dir().display()
    );
    fs::write(prefix.join("nginx.conf"), conf)?;
    let mut nginx = Command::new(&args.nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .stdout(Stdio::null())
        .spawn()?;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let scratch = world.nodes_dir.path().join("baseline");
    fs::create_dir_all(&scratch)?;
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..args.workers)
        .map(|_| {
            let (next, failed) = (next.clone(), failed.clone());
            let script = format!(
                "set -e; d={s}/$0; mkdir -p $d; curl -sSf --cacert {ca} -o $d/p.tar.gz https://localhost:{port}/{file}; \
                 echo '{sha}  '$d/p.tar.gz | sha256sum -c --quiet; tar -xzf $d/p.tar.gz -C $d; rm -rf $d",
                s = scratch.display(),
                ca = wd.ca_path().display(),
                file = release_file,
            );
            let nodes = args.nodes as u64;
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= nodes {
                    return;
                }
                let ok = Command::new("sh")
                    .args(["-c", &script, &format!("n{i}")])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let took = started.elapsed();
    // SAFETY-free: SIGTERM to our own nginx master, its fast shutdown.
    let _ = nix_kill_term(nginx.id());
    let _ = nginx.wait();
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} curl + sha256sum + tar runs failed");
    }
    Ok(Some(took))
}

fn nix_kill_term(pid: u32) -> std::io::Result<()> {
    // SAFETY: kill(2) on our own child's pid with a plain signal number.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

// ----------------------------------------------------------------- main

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(Internal::Serve { dir, listen }) = &args.internal {
        return serve(dir, *listen);
    }
    // A thousand updaters' console lines would drown the figures.
    init::console::init(init::console::Output::Discard);
    let n = args.nodes;
    eprintln!("setting up: repository, boot server, {n} nodes …");
    let setup = Instant::now();
    let mut world = World::new(&args)?;
    let partitions = world.make_nodes(n)?;
    world.start_server()?;
    let policy = DownloadPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(2),
        ..DownloadPolicy::default()
    };
    let mut nodes = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for part in &partitions {
        let updater = Updater::open(Options {
            partition: part.clone(),
            handover: part.join("no-handover.json"),
            reboot: false,
            download: policy.clone(),
        })?;
        ids.push(updater.node_id());
        nodes.push(Mutex::new(NodeSim {
            updater,
            failures: 0,
            check_gen: 0,
            staged: Vec::new(),
            received: 0,
            received_before: 0,
            reverts: 0,
            hints: 0,
        }));
    }
    let view = partitions
        .iter()
        .map(|p| View {
            running: Disk::new(p)
                .link("current")
                .ok()
                .flatten()
                .map(|d| d.to_string()),
            staged: Vec::new(),
        })
        .collect();
    let sim = Arc::new(Sim {
        nodes,
        view: Mutex::new(view),
        ids,
        queue: Mutex::new(BinaryHeap::new()),
        wake: Condvar::new(),
        stop: AtomicBool::new(false),
        stats: Stats::default(),
        started: Instant::now(),
        schedule: Schedule {
            interval: Duration::from_secs(args.poll_secs),
            retry_min: Duration::from_secs(2),
            retry_max: Duration::from_secs(8),
        },
        checkin_every: Duration::from_secs(args.checkin_secs),
        reboot_after: Duration::from_secs(1),
        broken: Mutex::new(None),
        reclaim: Mutex::new(None),
    });
    eprintln!("set up in {:.0} s", setup.elapsed().as_secs_f64());
    println!("rollout_sim: {n} real updaters (init's library), each with its own disk tree, against one boot server process on loopback");
    println!(
        "nodes check in every {} s and poll every {} s (both jittered); {} worker threads; trees on {}",
        args.checkin_secs,
        args.poll_secs,
        args.workers,
        args.dir.display()
    );

    // 1. Empty checks.
    println!("\n1. an empty update check");
    let first = burst_checks(&sim, args.workers);
    let _ = first;
    let (p50, p99, req) = idle_checks(&sim, 200);
    println!(
        "  no rollout, one node at a time:    {:7.2} ms median, {:7.2} ms p99, {req:.1} requests (release directive, 2.root.json, timestamp.json: conditional)",
        ms(p50),
        ms(p99)
    );
    let v1 = published_release(&world)?;
    world.rollout(&v1, WavePlan::one_wave(), 0, "5%")?;
    let _ = burst_checks(&sim, args.workers);
    let (p50p, p99p, reqp) = idle_checks(&sim, 200);
    println!(
        "  pinned by a rollout, one at a time: {:7.2} ms median, {:7.2} ms p99, {reqp:.1} request (the release directive, 304)",
        ms(p50p),
        ms(p99p)
    );
    let phase = phase_start(&sim, &world);
    let (total, b50, b99) = burst_checks(&sim, args.workers);
    println!(
        "  all {n} nodes at once ({} in flight): {:.2} s, {:.0} checks/s, {:.2} ms median, {:.2} ms p99",
        args.workers,
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        ms(b50),
        ms(b99)
    );
    print_phase("that burst", &sim, &world, &phase, total);
    println!(
        "  the NSDI paper: 11.2 s per node; here {:.0}x less (no rollout), {:.0}x less (pinned)",
        11.2 / p50.as_secs_f64(),
        11.2 / p50p.as_secs_f64()
    );

    // Start the nodes' own loops.
    for i in 0..n {
        let at = Instant::now() + sim.jitter(i, Duration::from_secs(args.checkin_secs));
        sim.push(at, i, Job::Checkin);
        let mut node = sim.nodes[i].lock().unwrap_or_else(|e| e.into_inner());
        let wait = sim.schedule.wait(0, node_phase(sim.ids[i]));
        sim.schedule_check(i, &mut node, wait.wait);
    }
    let workers: Vec<_> = (0..args.workers)
        .map(|_| {
            let sim = sim.clone();
            std::thread::spawn(move || sim.work())
        })
        .collect();

    // 2. A 10 MB update, one wave.
    println!(
        "\n2. a {} MB update of base, waves collapsed to one (`rollout start VERSION --now`)",
        args.update_mb
    );
    world.release("2", args.update_mb * 1000, 22)?;
    let v2 = published_release(&world)?;
    *sim.reclaim.lock().unwrap_or_else(|e| e.into_inner()) = Some(v2.clone());
    let phase = phase_start(&sim, &world);
    world.rollout("2", WavePlan::one_wave(), 0, "5%")?;
    let staged_all = wait_until("staged", Duration::from_secs(1800), || {
        (staged_count(&sim, &v2), n)
    })?;
    print_phase("until every node staged", &sim, &world, &phase, staged_all);
    let good_all = wait_until("running it, marked good", Duration::from_secs(600), || {
        (running_count(&sim, &v2), n)
    })? + staged_all;
    println!(
        "  every node staged it {:.1} s after the rollout started, and ran it marked good after {:.1} s (reboots simulated); target ≤ 60 s",
        staged_all.as_secs_f64(),
        good_all.as_secs_f64()
    );
    let hinted = count_nodes(&sim, |_, n| n.hints > 0);
    println!("  {hinted} of {n} nodes were woken by the check-in hint");
    println!("  the NSDI paper: 180 nodes updated in 228 s");
    let info = world
        .repo
        .status()?
        .targets
        .ok_or_else(|| anyhow!("no targets"))?
        .targets["base"]
        .clone();
    if !args.no_baseline {
        if let Some(script) = baseline(&args, &world, &info.path, &info.sha256().to_string())? {
            println!(
                "  the same {n} downloads by curl + sha256sum + tar from nginx ({} at a time, no signed metadata, no staging): {:.1} s; the updater took {:.2}x that",
                args.workers,
                script.as_secs_f64(),
                staged_all.as_secs_f64() / script.as_secs_f64()
            );
        }
    }
    check_once(&sim, &world, &v2, n, info.length)?;

    // 3. The same, with the server killed and restarted midway.
    println!(
        "\n3. another {} MB update; the server is killed (SIGKILL) when a third of the nodes have staged it, and restarted 5 s later",
        args.update_mb
    );
    world.release("3", args.update_mb * 1000, 33)?;
    let v3 = published_release(&world)?;
    *sim.reclaim.lock().unwrap_or_else(|e| e.into_inner()) = Some(v3.clone());
    let phase = phase_start(&sim, &world);
    world.rollout("3", WavePlan::one_wave(), 0, "5%")?;
    let rollout_started = Instant::now();
    wait_until("staged before the kill", Duration::from_secs(1800), || {
        (staged_count(&sim, &v3), n / 3)
    })?;
    let killed_at = staged_count(&sim, &v3);
    world.kill_server();
    std::thread::sleep(Duration::from_secs(5));
    world.start_server()?;
    println!("  killed with {killed_at} of {n} staged; restarted");
    wait_until("staged", Duration::from_secs(1800), || {
        (staged_count(&sim, &v3), n)
    })?;
    let staged_all = rollout_started.elapsed();
    wait_until("running it, marked good", Duration::from_secs(600), || {
        (running_count(&sim, &v3), n)
    })?;
    let good_all = rollout_started.elapsed();
    print_phase("until every node ran it", &sim, &world, &phase, good_all);
    println!(
        "  every node staged it after {:.1} s and ran it after {:.1} s; {} checks found the server unreachable",
        staged_all.as_secs_f64(),
        good_all.as_secs_f64(),
        sim.stats.unreachable.load(Ordering::Relaxed)
    );
    let length = world
        .repo
        .status()?
        .targets
        .ok_or_else(|| anyhow!("no targets"))?
        .targets["base"]
        .length;
    check_once(&sim, &world, &v3, n, length)?;

    // 4. A broken release in waves. First a small good release for
    // everyone, kept whole on every node (the abort goes back to it).
    println!("\n4. a broken release (its trial fails on a quarter of the nodes) in waves 2%,10%,50%,100%, 20 s apart, halting past 5% failures in a wave");
    *sim.reclaim.lock().unwrap_or_else(|e| e.into_inner()) = None;
    world.release("3.1", 64, 31)?;
    let v31 = published_release(&world)?;
    world.rollout("3.1", WavePlan::one_wave(), 0, "5%")?;
    wait_until(
        "on the small release before it",
        Duration::from_secs(1800),
        || (running_count(&sim, &v31), n),
    )?;
    let v3 = v31;
    world.release("4", 64, 44)?;
    let v4 = published_release(&world)?;
    *sim.broken.lock().unwrap_or_else(|e| e.into_inner()) = Some(v4.clone());
    let plan: WavePlan = "2%,10%,50%,100%".parse()?;
    let first_wave: Vec<usize> = (0..n).filter(|i| plan.wave_of(sim.ids[*i]) == 0).collect();
    let phase = phase_start(&sim, &world);
    world.rollout("4", plan.clone(), 20, "5%")?;
    let halted = wait_until("halted", Duration::from_secs(600), || {
        let s = world.admin().and_then(|a| Ok(a.rollout_status()?));
        let halted = s.is_ok_and(|s| s.rollout.state == config::api::RolloutState::Halted);
        (usize::from(halted), 1)
    })?;
    let status = world.admin()?.rollout_status()?;
    println!(
        "  halted {:.1} s after the start: {}",
        halted.as_secs_f64(),
        status.rollout.note.clone().unwrap_or_default()
    );
    // Let the wave clock run past where wave 2 would have opened.
    std::thread::sleep(Duration::from_secs(30));
    let later_took = count_nodes(&sim, |i, node| {
        plan.wave_of(sim.ids[i]) > 0 && node.staged.iter().any(|(d, _)| d.as_str() == v4)
    });
    let first_took = count_nodes(&sim, |i, node| {
        plan.wave_of(sim.ids[i]) == 0 && node.staged.iter().any(|(d, _)| d.as_str() == v4)
    });
    println!(
        "  wave 1 ({} nodes): {first_took} took it; later waves ({} nodes): {later_took} took it",
        first_wave.len(),
        n - first_wave.len()
    );
    if later_took > 0 {
        bail!("{later_took} node(s) of a later wave took the halted release");
    }
    let on_v4 = count_nodes(&sim, |_, node| {
        running(node).as_deref() == Some(v4.as_str())
    });
    let abort_at = Instant::now();
    world.admin()?.abort_rollout()?;
    let back = wait_until(
        "back on the release before",
        Duration::from_secs(600),
        || {
            let view = sim.view.lock().unwrap_or_else(|e| e.into_inner());
            let back = first_wave
                .iter()
                .filter(|i| view[**i].running.as_deref() == Some(v3.as_str()))
                .count();
            (back, first_wave.len())
        },
    )?;
    let _ = abort_at;
    print_phase(
        "the wave rollout",
        &sim,
        &world,
        &phase,
        phase.started.elapsed(),
    );
    let status = world.admin()?.rollout_status()?;
    println!(
        "  abort: the {on_v4} node(s) running it went back to {v3} in {:.1} s; every wave-1 node runs {v3}; the server counts {} reverted, {} failed",
        back.as_secs_f64(),
        status.total.reverted,
        status.total.failed
    );

    sim.stop.store(true, Ordering::Relaxed);
    sim.wake.notify_all();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

/// After an update: every node runs it, staged it exactly once, downloaded
/// it about once, and the server recorded every node as healthy on it.
fn check_once(sim: &Sim, world: &World, release: &str, n: usize, length: u64) -> Result<()> {
    let mut twice = 0;
    let mut max_bytes = 0u64;
    for node in &sim.nodes {
        let node = node.lock().unwrap_or_else(|e| e.into_inner());
        let times = node
            .staged
            .iter()
            .filter(|(d, _)| d.as_str() == release)
            .count();
        if times != 1 {
            twice += 1;
        }
        max_bytes = max_bytes.max(node.received - node.received_before);
    }
    let status = world.admin()?.rollout_status()?;
    println!(
        "  checked: {} of {n} nodes run it; {} staged it other than exactly once; the most any node received since the rollout started: {:.2} MB for a {:.2} MB package; the server counts {} took it, {} healthy, {} not reported",
        running_count(sim, release),
        twice,
        max_bytes as f64 / 1e6,
        length as f64 / 1e6,
        status.total.took,
        status.total.healthy,
        status.total.not_reported
    );
    if twice > 0 || status.total.healthy as usize != n {
        bail!("nodes staged twice or reports were lost");
    }
    Ok(())
}
