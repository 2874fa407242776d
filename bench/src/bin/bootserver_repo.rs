//! Benchmark: serving repository files over HTTPS with keep-alive, the boot
//! server versus nginx (Debian's package, what a site would otherwise put
//! in front of a repository directory), in one run, same certificate, same
//! files, same client.
//!
//! A signed repository with a 10 MB and a 100 KB package is published with
//! `bootserver repo publish`'s library path; nginx serves the published
//! snapshot directory with `sendfile`, 2 workers (one per core) and the
//! server's certificate. Both get 2 cores' worth of threads. The client
//! (rustls + hyper, keep-alive) downloads each file repeatedly over a few
//! connections and reads every byte. Target: ≥ 0.8× nginx.
//!
//! `cargo run --release -p bench --bin bootserver_repo [-- --seconds 8 --connections 4]`

#[path = "bootserver_common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use pkgsign::keys::SecretKey;
use pkgsign::metadata::RoleType;
use pkgsign::repo::{Expiries, Repository, RoleSpec};

#[derive(Parser)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Rounds (each server measured once per round, alternating); best kept.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// The nginx binary.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.nginx.is_file() {
        bail!(
            "{} not found: apt-get install -y --no-install-recommends nginx",
            args.nginx.display()
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("bench-repo")
        .tempdir_in("/var/tmp")?;
    let wd = common::init_workdir(&tmp.path().join("server"))?;

    let (files, root) = make_repository(&tmp.path().join("staff-repo"))?;
    let published = bootserver::publish::publish(&wd, &tmp.path().join("staff-repo"), Some(&root))?;
    let snapshot = wd.repo_store().join(&published.snapshot_dir);
    println!(
        "published {} packages, {} bytes, snapshot {}",
        published.packages,
        published.bytes,
        snapshot.display()
    );

    let ours = common::RunningServer::start(&wd, 2)?;
    let nginx = Nginx::start(
        &args.nginx,
        &tmp.path().join("nginx"),
        &snapshot,
        &wd.cert_path(),
        &wd.key_path(),
    )?;

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let tls = common::tls_connector(&wd.ca_path())?;
    println!(
        "client: {} keep-alive connections, {} s per measurement, best of {} rounds\n",
        args.connections, args.seconds, args.rounds
    );
    println!(
        "{:<16} {:<10} {:>12} {:>12} {:>10} cipher suite",
        "file", "server", "MB/s", "requests/s", "ratio"
    );
    let mut ratios = Vec::new();
    for (label, path, size) in &files {
        let mut best = [0f64; 2];
        let mut rps = [0f64; 2];
        let mut suites = [String::new(), String::new()];
        for _ in 0..args.rounds {
            for (i, addr) in [ours.addr, nginx.addr].into_iter().enumerate() {
                let m = client_rt.block_on(measure(
                    addr,
                    &tls,
                    path,
                    *size,
                    args.connections,
                    Duration::from_secs(args.seconds),
                ))?;
                if m.bytes_per_sec > best[i] {
                    best[i] = m.bytes_per_sec;
                    rps[i] = m.requests_per_sec;
                }
                suites[i] = m.suite;
            }
        }
        let ratio = best[0] / best[1];
        ratios.push((label.clone(), ratio));
        println!(
            "{:<16} {:<10} {:>12.1} {:>12.1} {:>10} {}",
            label,
            "bootserver",
            best[0] / 1e6,
            rps[0],
            format!("{ratio:.2}x"),
            suites[0]
        );
        println!(
            "{:<16} {:<10} {:>12.1} {:>12.1} {:>10} {}",
            label,
            "nginx",
            best[1] / 1e6,
            rps[1],
            "1.00x",
            suites[1]
        );
    }
    println!();
    for (label, ratio) in ratios {
        println!(
            "target >= 0.8x nginx for {label}: {} ({ratio:.2}x)",
            if ratio >= 0.8 { "met" } else { "NOT met" }
        );
    }
    drop(nginx);
    drop(ours);
    Ok(())
}

/// A signed repository with a ~10 MB and a ~100 KB package of incompressible bytes.
/// A file to fetch: label, URL path, length.
type BenchFile = (String, String, u64);

fn make_repository(dir: &Path) -> Result<(Vec<BenchFile>, PathBuf)> {
    let gen = || SecretKey::generate().map_err(|e| anyhow::anyhow!("{e}"));
    let keys = [gen()?, gen()?, gen()?, gen()?];
    let mut roles = std::collections::BTreeMap::new();
    for (role, key) in [
        RoleType::Root,
        RoleType::Targets,
        RoleType::Snapshot,
        RoleType::Timestamp,
    ]
    .into_iter()
    .zip(&keys)
    {
        roles.insert(
            role,
            RoleSpec {
                keys: vec![key.public().clone()],
                threshold: 1,
            },
        );
    }
    let copy = |k: &SecretKey| SecretKey::from_pem(&k.to_pem().expect("pem")).expect("pem");
    let expires = floor::Timestamp::now().plus(Duration::from_secs(30 * 86_400));
    let repo = Repository::init(dir, &roles, expires, &[copy(&keys[0])])?;
    let mut files = Vec::new();
    for (name, size) in [("base", 10_000_000usize), ("tools", 100_000usize)] {
        let upload = dir.with_extension(format!("{name}.tar.gz"));
        std::fs::write(
            &upload,
            targz(&format!("opt/{name}"), &noise(size, size as u64)),
        )?;
        let info = repo.add_package(&upload, name, "1.0", false, Default::default())?;
        std::fs::remove_file(&upload)?;
        let label = if size >= 1_000_000 {
            "10 MB package"
        } else {
            "100 KB package"
        };
        files.push((
            label.to_string(),
            format!("/repo/{}", info.path),
            info.length,
        ));
    }
    repo.publish(
        &[copy(&keys[1]), copy(&keys[2]), copy(&keys[3])],
        &Expiries {
            targets: expires,
            snapshot: expires,
            timestamp: expires,
        },
    )?;
    Ok((files, dir.join("metadata/1.root.json")))
}

fn targz(path: &str, content: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, path, content)
        .expect("tar in memory");
    let tar = builder.into_inner().expect("tar in memory");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    std::io::Write::write_all(&mut gz, &tar).expect("gzip in memory");
    gz.finish().expect("gzip in memory")
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct Measurement {
    bytes_per_sec: f64,
    requests_per_sec: f64,
    suite: String,
}

async fn measure(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    path: &str,
    size: u64,
    connections: usize,
    length: Duration,
) -> Result<Measurement> {
    let mut conns = Vec::new();
    for _ in 0..connections {
        conns.push(common::connect(addr, tls).await?);
    }
    let suite = conns[0].suite.clone();
    let start = Instant::now();
    let deadline = start + length;
    let mut tasks = Vec::new();
    for conn in conns {
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let mut sender = conn.sender;
            let (mut bytes, mut requests) = (0u64, 0u64);
            while Instant::now() < deadline {
                let request = hyper::Request::get(&path)
                    .header(hyper::header::HOST, "localhost")
                    .body(Full::new(Bytes::new()))?;
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                if response.status() != 200 {
                    bail!("GET {path}: status {}", response.status());
                }
                let n = common::drain(response.into_body()).await?;
                if n != size {
                    bail!("GET {path}: {n} bytes, expected {size}");
                }
                bytes += n;
                requests += 1;
            }
            Ok::<_, anyhow::Error>((bytes, requests))
        }));
    }
    let (mut bytes, mut requests) = (0u64, 0u64);
    for t in tasks {
        let (b, r) = t.await.context("download task")??;
        bytes += b;
        requests += r;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Measurement {
        bytes_per_sec: bytes as f64 / secs,
        requests_per_sec: requests as f64 / secs,
        suite,
    })
}

/// nginx in the foreground with a generated config, stopped when dropped.
struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Nginx {
    fn start(bin: &Path, prefix: &Path, root: &Path, cert: &Path, key: &Path) -> Result<Nginx> {
        std::fs::create_dir_all(prefix.join("logs"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let p = prefix.display();
        // Workers run as root so they can read the 0700 working directory.
        let conf = format!(
            "user root;
worker_processes 2;
daemon off;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    types {{ application/json json; application/gzip gz; }}
    default_type application/octet-stream;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:1m;
    server {{
        listen {addr} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location /repo/ {{ alias {root}/; }}
    }}
}}
",
            cert = cert.display(),
            key = key.display(),
            root = root.display()
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting nginx")?;
        let mut nginx = Nginx { child, addr };
        // Wait until it accepts connections (bounded: this is a benchmark).
        for _ in 0..200 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(nginx);
            }
            if let Some(status) = nginx.child.try_wait()? {
                bail!("nginx exited ({status}); see {}/logs/error.log", p);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = nginx.child.kill();
        bail!("nginx did not start listening on {addr}")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master stops its workers
        // (a SIGKILL would leave them running).
        // SAFETY: signalling our own child process by its id.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
