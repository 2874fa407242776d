//! Benchmark: the installed node's updater (`init update`) against a real
//! boot server on loopback, in one run:
//!
//! 1. an empty update check (nothing new published): requests, response
//!    body bytes, bytes on the wire (TLS included, counted by a TCP proxy
//!    between node and server) and time per check, with the connection
//!    kept alive between checks ("warm") and with a new TLS connection per
//!    check ("cold", what a 15-minute poll interval sees). There is no peer
//!    tool to run beside it; the figure to compare with is the NSDI paper's
//!    11.2 s per node for PlanetLab's update check.
//! 2. a full update of `base` (a new `base`, `kernel` and `sliver-ref`
//!    unchanged) from metadata check to staged deployment, versus what a
//!    node would do without package reuse (download and install all three
//!    packages, as a reinstall does) and versus a bare script that fetches
//!    and unpacks only `base` (`curl`, `sha256sum`, `tar`; no signed
//!    metadata, no staging, no sync).
//!
//! Package sizes default to the compressed sizes of the real node OS
//! packages that `mkimage` builds (kernel 11.6 MB, base 6.4 MB, sliver-ref
//! 1.1 MB), filled with incompressible data in many files.
//! Run with `cargo run --release -p bench --bin updater_check`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Result};
use bootserver::admin::{self, Admin, ConfigUrls, InitOptions, NewNode, NodeConfigFormat};
use clap::Parser;
use init::deploy::Disk;
use init::node::updater::{Options, Outcome, Updater};
use pkgsign::fetch::{DirFetcher, DownloadPolicy, HttpFetcher};
use pkgsign::metadata::RoleType;
use pkgsign::repo::{Expiries, Repository, RoleSpec};
use pkgsign::{SecretKey, Verifier};

#[derive(Parser)]
struct Args {
    /// Empty checks per measurement (warm and cold each).
    #[arg(long, default_value_t = 200)]
    checks: usize,
    /// Rounds of the full update and of each alternative (median reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Compressed size of `kernel` in kB.
    #[arg(long, default_value_t = 11_600)]
    kernel_kb: usize,
    /// Compressed size of `base` in kB.
    #[arg(long, default_value_t = 6_400)]
    base_kb: usize,
    /// Compressed size of `sliver-ref` in kB.
    #[arg(long, default_value_t = 1_100)]
    sliver_kb: usize,
}

// ------------------------------------------------------------ packages

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

/// A package of about `kb` kB compressed: `files` files of noise in `dir`.
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
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    builder.append_data(&mut h, dir, std::io::empty())?;
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

// -------------------------------------------------------------- server

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A TCP proxy that counts the bytes it forwards both ways.
struct CountingProxy {
    bytes: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
}

impl CountingProxy {
    fn start(port: u16, upstream: u16) -> Result<CountingProxy> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let bytes = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (b, c) = (bytes.clone(), connections.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                c.fetch_add(1, Ordering::Relaxed);
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(mut from), Ok(mut to)) = (from, to) else {
                        continue;
                    };
                    let b = b.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            b.fetch_add(n as u64, Ordering::Relaxed);
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Ok(CountingProxy { bytes, connections })
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

// --------------------------------------------------------------- world

struct World {
    dir: tempfile::TempDir,
    key: SecretKey,
    repo: Repository,
    workdir: PathBuf,
    partition: PathBuf,
    proxy: CountingProxy,
    node_url: String,
    ca: PathBuf,
}

fn expiries() -> Expiries {
    let t = floor::Timestamp::from_unix(floor::Timestamp::now().unix() + 30 * 86_400);
    Expiries {
        targets: t,
        snapshot: t,
        timestamp: t,
    }
}

impl World {
    fn new(args: &Args) -> Result<World> {
        let dir = tempfile::Builder::new()
            .prefix("updater-bench")
            .tempdir_in("/var/tmp")?;
        let key = SecretKey::generate()?;
        let spec = RoleSpec {
            keys: vec![key.public().clone()],
            threshold: 1,
        };
        let roles: BTreeMap<RoleType, RoleSpec> = RoleType::ALL
            .into_iter()
            .map(|r| (r, spec.clone()))
            .collect();
        let repo_dir = dir.path().join("repo");
        let repo = Repository::init(
            &repo_dir,
            &roles,
            floor::Timestamp::from_unix(floor::Timestamp::now().unix() + 365 * 86_400),
            std::slice::from_ref(&key),
        )?;
        let add = |name: &str, version: &str, bytes: Vec<u8>, base_image: bool| -> Result<()> {
            let file = dir.path().join(format!("{name}-{version}.tar.gz"));
            fs::write(&file, bytes)?;
            repo.add_package(&file, name, version, base_image, Default::default())?;
            Ok(())
        };
        add(
            "kernel",
            "6.1",
            package("lib", args.kernel_kb, 120, 1)?,
            false,
        )?;
        add("base", "1", package("usr", args.base_kb, 400, 2)?, true)?;
        add(
            "sliver-ref",
            "1",
            package("bin", args.sliver_kb, 100, 3)?,
            true,
        )?;
        repo.publish(std::slice::from_ref(&key), &expiries())?;

        let (port, proxy_port) = (free_port()?, free_port()?);
        let workdir = dir.path().join("server");
        let node_url = format!("https://127.0.0.1:{proxy_port}");
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let server = Admin::init(
            &workdir,
            &InitOptions {
                hosts: vec![],
                ips: vec![Ipv4Addr::LOCALHOST.into()],
                listen,
                urls: vec![node_url.parse().map_err(anyhow::Error::msg)?],
                site_certificate: None,
            },
        )?;
        let root = repo_dir.join("metadata/1.root.json");
        server.publish(&repo_dir, Some(&root))?;
        server.add_site(&"bench".parse()?, "")?;
        let node_toml = dir.path().join("node.toml");
        let spec = NewNode::new("bench".parse()?, "node1.example.org", None)?;
        let (_, node_config) = server.add_node(&spec, &ConfigUrls::FromServer)?;
        admin::files::write_node_config(&node_toml, &node_config, NodeConfigFormat::NodeToml)?;
        std::thread::spawn(move || {
            if let Err(e) = server.serve(Some(listen), |_| {}, std::future::pending()) {
                eprintln!("bootserver serve: {:#}", anyhow::Error::from(e));
            }
        });
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let proxy = CountingProxy::start(proxy_port, port)?;

        let partition = dir.path().join("partition");
        let disk = Disk::new(&partition);
        disk.create_layout()?;
        fs::copy(&node_toml, disk.node_config_path())?;
        let ca = workdir.join("ca/ca.pem");
        fs::copy(&ca, disk.trust_dir().join("ca.pem"))?;
        let mut verifier = Verifier::open(&disk.trust_dir(), &fs::read(&root)?)?;
        let source = DirFetcher::new(repo_dir);
        let verified = verifier.update(&source, SystemTime::now())?;
        let packages = init::deploy::node_packages(&verified)?;
        let record = init::deploy::Build::fresh(
            &disk,
            &verified,
            &packages,
            &init::deploy::Plan::fresh(&packages),
            &source,
        )
        .run_fresh()?
        .record;
        disk.activate(&record.id, false)?;
        Ok(World {
            dir,
            key,
            repo,
            workdir,
            partition,
            proxy,
            node_url,
            ca,
        })
    }

    fn updater(&self) -> Result<Updater> {
        Updater::open(Options {
            partition: self.partition.clone(),
            handover: self.dir.path().join("no-handover.json"),
            reboot: false,
            download: DownloadPolicy::default(),
        })
    }

    fn disk(&self) -> Disk {
        Disk::new(&self.partition)
    }
}

// ------------------------------------------------------------- figures

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    bench::percentile(&v, p).unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct EmptyChecks {
    times: Vec<Duration>,
    requests: u64,
    body: u64,
    wire: u64,
    connections: u64,
}

fn empty_checks(world: &World, n: usize, cold: bool) -> Result<EmptyChecks> {
    let mut updater = world.updater()?;
    // Warm up: the first check after a publish fetches the new metadata.
    updater.check().result?;
    let (wire0, conn0) = (world.proxy.bytes(), world.proxy.connections());
    let mut out = EmptyChecks {
        times: Vec::new(),
        requests: 0,
        body: 0,
        wire: 0,
        connections: 0,
    };
    for _ in 0..n {
        if cold {
            updater = world.updater()?;
        }
        let started = Instant::now();
        let report = updater.check();
        out.times.push(started.elapsed());
        match report.result {
            Ok(Outcome::UpToDate { .. }) => {}
            other => bail!("an empty check found {other:?}"),
        }
        out.requests += report.requests;
        out.body += report.bytes;
    }
    // Let the proxy's copier threads finish counting.
    std::thread::sleep(Duration::from_millis(200));
    out.wire = world.proxy.bytes() - wire0;
    out.connections = world.proxy.connections() - conn0;
    Ok(out)
}

fn print_empty(label: &str, e: &EmptyChecks, n: usize) {
    let n64 = n as u64;
    println!(
        "  {label:<32} {:>8.2} ms median  {:>8.2} ms p99  {:>4.1} requests  {:>6} B body  {:>7} B on the wire  {:.2} TCP/TLS connections per check",
        ms(median(e.times.clone())),
        ms(percentile(e.times.clone(), 0.99)),
        e.requests as f64 / n as f64,
        e.body / n64,
        e.wire / n64,
        e.connections as f64 / n as f64
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    init::console::init(init::console::Output::Stderr);
    eprintln!("setting up: repository, boot server on 127.0.0.1, installed node …");
    let world = World::new(&args)?;
    let sizes: Vec<String> = ["kernel", "base", "sliver-ref"]
        .iter()
        .map(|n| {
            let t = world.repo.status().ok().and_then(|s| s.targets);
            let len = t.map(|t| t.targets[*n].length).unwrap_or(0);
            format!("{n} {:.1} MB", len as f64 / 1e6)
        })
        .collect();
    eprintln!("packages: {}", sizes.join(", "));

    eprintln!("empty checks …");
    let warm = empty_checks(&world, args.checks, false)?;
    let cold = empty_checks(&world, args.checks.min(100), true)?;

    // A new `base`: the full update, repeated from the same starting point.
    let file = world.dir.path().join("base-2.tar.gz");
    fs::write(&file, package("usr", args.base_kb, 400, 22)?)?;
    world
        .repo
        .add_package(&file, "base", "2", true, Default::default())?;
    world
        .repo
        .publish(std::slice::from_ref(&world.key), &expiries())?;
    Admin::open(&world.workdir)?.publish(world.repo.dir(), None)?;
    let trust_saved = world.dir.path().join("trust-v1");
    fs::create_dir_all(&trust_saved)?;
    for e in fs::read_dir(world.disk().trust_dir())? {
        let e = e?;
        fs::copy(e.path(), trust_saved.join(e.file_name()))?;
    }
    let base_len = world
        .repo
        .status()?
        .targets
        .map(|t| t.targets["base"].length)
        .unwrap_or(0);

    eprintln!("full updates of base …");
    let mut update_times = Vec::new();
    let (mut update_body, mut update_wire) = (0u64, 0u64);
    for _ in 0..args.rounds {
        let disk = world.disk();
        if disk.link("staged")?.is_some() {
            disk.clear_link("staged")?;
        }
        disk.prune()?;
        for e in fs::read_dir(&trust_saved)? {
            let e = e?;
            fs::copy(e.path(), disk.trust_dir().join(e.file_name()))?;
        }
        init::deploy::build::sync_filesystem(&world.partition)?;
        let mut updater = world.updater()?;
        let wire0 = world.proxy.bytes();
        let started = Instant::now();
        let report = updater.check();
        update_times.push(started.elapsed());
        match &report.result {
            Ok(Outcome::Staged { .. }) => {}
            other => bail!("the update did not stage: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
        update_body = report.bytes;
        update_wire = world.proxy.bytes() - wire0;
    }

    eprintln!("without reuse: all three packages downloaded and installed …");
    let mut full_times = Vec::new();
    let mut full_wire = 0u64;
    for round in 0..args.rounds {
        let scratch = Disk::new(&world.dir.path().join(format!("scratch-{round}")));
        scratch.create_layout()?;
        let started = Instant::now();
        let wire0 = world.proxy.bytes();
        let mut options = pkgsign::net::ClientOptions::new(fs::read(&world.ca)?);
        options.read_timeout = Duration::from_secs(30);
        let client = pkgsign::net::build_client(&options)?;
        let http = HttpFetcher::new(
            &format!("{}/repo", world.node_url),
            client,
            DownloadPolicy::default(),
        )?;
        let mut verifier = Verifier::open(
            &scratch.trust_dir(),
            &fs::read(world.repo.dir().join("metadata/1.root.json"))?,
        )?;
        let verified = verifier.update(&http, SystemTime::now())?;
        let packages = init::deploy::node_packages(&verified)?;
        init::deploy::Build::fresh(
            &scratch,
            &verified,
            &packages,
            &init::deploy::Plan::fresh(&packages),
            &http,
        )
        .run_fresh()?;
        full_times.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(200));
        full_wire = world.proxy.bytes() - wire0;
        pkgsign::install::remove_tree(&scratch.root)?;
    }

    eprintln!("bare script: curl + sha256sum + tar of base only …");
    let info = world
        .repo
        .status()?
        .targets
        .map(|t| t.targets["base"].clone())
        .ok_or_else(|| anyhow!("no targets"))?;
    let mut script_times = Vec::new();
    for round in 0..args.rounds {
        let out = world.dir.path().join(format!("script-{round}"));
        fs::create_dir_all(&out)?;
        let script = format!(
            "set -e; curl -sSf --cacert {ca} -o {out}/base.tar.gz {url}/repo/{path}; \
             echo '{sha}  {out}/base.tar.gz' | sha256sum -c --quiet; tar -xzf {out}/base.tar.gz -C {out}",
            ca = world.ca.display(),
            out = out.display(),
            url = world.node_url,
            path = info.path,
            sha = info.sha256(),
        );
        let started = Instant::now();
        let status = Command::new("sh").args(["-c", &script]).status()?;
        script_times.push(started.elapsed());
        if !status.success() {
            bail!("the script failed: {script}");
        }
        pkgsign::install::remove_tree(&out)?;
    }

    let n = args.checks;
    println!();
    println!(
        "updater_check: an empty update check and a full update of `base`, boot server on loopback"
    );
    println!("packages: {}", sizes.join(", "));
    println!();
    println!(
        "empty check (nothing new published), {n} checks warm, {} cold:",
        args.checks.min(100)
    );
    print_empty("warm (connection kept alive)", &warm, n);
    print_empty(
        "cold (new TCP + TLS per check)",
        &cold,
        args.checks.min(100),
    );
    let paper = Duration::from_secs_f64(11.2);
    println!(
        "  no peer tool: the NSDI paper measured 11.2 s per node; cold here is {:.0}x less time",
        paper.as_secs_f64() / median(cold.times.clone()).as_secs_f64()
    );
    println!();
    println!(
        "full update of base ({:.1} MB; kernel and sliver-ref unchanged), median of {} rounds:",
        base_len as f64 / 1e6,
        args.rounds
    );
    let upd = median(update_times);
    let full = median(full_times);
    let script = median(script_times);
    println!(
        "  {:<48} {:>8.0} ms  {:>6.1} MB body  {:>6.1} MB on the wire",
        "updater (base downloaded, others copied, staged)",
        ms(upd),
        update_body as f64 / 1e6,
        update_wire as f64 / 1e6
    );
    println!(
        "  {:<48} {:>8.0} ms  {:>6.1} MB on the wire   updater is {:.2}x the time, {:.2}x the bytes",
        "all three packages downloaded and installed",
        ms(full),
        full_wire as f64 / 1e6,
        upd.as_secs_f64() / full.as_secs_f64(),
        update_wire as f64 / full_wire.max(1) as f64
    );
    println!(
        "  {:<48} {:>8.0} ms                          updater is {:.2}x the time",
        "curl + sha256sum + tar of base (no metadata)",
        ms(script),
        upd.as_secs_f64() / script.as_secs_f64()
    );
    Ok(())
}
