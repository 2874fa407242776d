//! Benchmark: the sensor server against Prometheus' node_exporter, in one
//! run on this machine.
//!
//! The sensors run in a child process (this program re-run with `--serve`,
//! release build, 2 worker threads); Debian's `prometheus-node-exporter`
//! runs beside it on another free loopback port with its default
//! collectors (and no limit on parallel scrapes: its default of 40 would
//! turn the surplus of 64 clients away). 64 keep-alive clients (hyper, 2 threads) send requests back
//! to back for a fixed time per phase: sensors `/load`, sensors
//! `/metrics`, sensors `/metrics` with no reuse of readings
//! (`--cache-ms 0`: every scrape reads /proc and statvfs), node_exporter
//! `/metrics`. Reported per phase: requests per second, latency p50 and
//! p99, connections the server dropped (the client reconnects), and the
//! server's CPU time per request (its utime + stime from
//! /proc, over the phase). Targets: sensors `/metrics` at least 2× the
//! rate of node_exporter's, p99 of `/load` under 5 ms.
//!
//! `cargo run --release -p bench --bin sensors [-- --seconds 5 --clients 64]`

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};

#[derive(Parser)]
struct Args {
    /// Seconds per phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Keep-alive clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Worker threads of the sensors server (the node service runs 2).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Threads of the load generator.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Run as the sensors server on this address (used by the benchmark
    /// itself for its child process).
    #[arg(long, hide = true)]
    serve: Option<SocketAddr>,
    /// The server's reuse of readings, with --serve.
    #[arg(long, hide = true, default_value_t = 1000)]
    cache_ms: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(addr) = args.serve {
        return serve(addr, args.cache_ms, args.server_threads);
    }
    let exporter = "/usr/bin/prometheus-node-exporter";
    if !std::path::Path::new(exporter).exists() {
        bail!("{exporter} is missing (apt-get install prometheus-node-exporter)");
    }
    let cached = Server::sensors(1000, args.server_threads)?;
    let uncached = Server::sensors(0, args.server_threads)?;
    let node_exporter = Server::node_exporter(exporter)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .enable_all()
        .build()?;
    let seconds = Duration::from_secs(args.seconds);
    let phases = [
        ("sensors /load", &cached, "/load"),
        ("sensors /metrics", &cached, "/metrics"),
        ("sensors /metrics, no reuse", &uncached, "/metrics"),
        ("node_exporter /metrics", &node_exporter, "/metrics"),
    ];
    println!(
        "{} keep-alive clients ({} threads), {} s per phase; sensors with {} worker threads; servers on loopback",
        args.clients, args.client_threads, args.seconds, args.server_threads
    );
    println!(
        "{:<30} {:>10} {:>9} {:>9} {:>14} {:>10} {:>9}",
        "phase", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "body B", "dropped"
    );
    let mut results = Vec::new();
    for (name, server, path) in phases {
        let r = runtime.block_on(load(server, path, args.clients, seconds))?;
        println!(
            "{:<30} {:>10.0} {:>9.2} {:>9.2} {:>14.0} {:>10} {:>9}",
            name,
            r.rate,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.cpu_per_request.as_secs_f64() * 1e6,
            r.body_bytes,
            r.failures
        );
        results.push(r);
    }
    let ratio = results[1].rate / results[3].rate;
    let uncached_ratio = results[2].rate / results[3].rate;
    let cpu_ratio =
        results[3].cpu_per_request.as_secs_f64() / results[1].cpu_per_request.as_secs_f64();
    println!("sensors /metrics / node_exporter /metrics: {ratio:.1}× the rate (target ≥ 2×), {cpu_ratio:.1}× less CPU per scrape");
    println!("without reuse of readings: {uncached_ratio:.1}× the rate");
    println!(
        "sensors /load p99: {:.2} ms (target < 5 ms)",
        results[0].p99.as_secs_f64() * 1e3
    );
    Ok(())
}

/// The child process's side: the sensors on `addr`.
fn serve(addr: SocketAddr, cache_ms: u64, threads: usize) -> Result<()> {
    let mut settings = sensors::Settings::node();
    settings.listen = addr;
    settings.cache_ttl = Duration::from_millis(cache_ms);
    settings.limits.max_connections = 1024;
    // A build host: the hybrid cgroup2 mount, no slivers.
    settings.nodemgr.cgroup_root = "/sys/fs/cgroup/unified".into();
    let dir = tempfile::tempdir()?;
    settings.nodemgr.state_dir = dir.path().join("nodemgr");
    settings.journal = floor::journal::Journal::new(dir.path().join("events.jsonl"), 1 << 20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        sensors::serve(&settings, listener, std::future::pending()).await?;
        Ok(())
    })
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

fn free_port() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn wait_up(addr: SocketAddr, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("the server on {addr} exited: {status}");
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Server {
    fn sensors(cache_ms: u64, threads: usize) -> Result<Server> {
        let addr = free_port()?;
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "--serve",
                &addr.to_string(),
                "--cache-ms",
                &cache_ms.to_string(),
            ])
            .args(["--server-threads", &threads.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .context("starting the sensors")?;
        wait_up(addr, &mut child)?;
        Ok(Server { child, addr })
    }

    fn node_exporter(program: &str) -> Result<Server> {
        let addr = free_port()?;
        // Its default of 40 scrapes at once would answer the 64 clients'
        // surplus with 503: let it serve them all, as the sensors do.
        let mut child = Command::new(program)
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.max-requests=0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting node_exporter")?;
        wait_up(addr, &mut child)?;
        Ok(Server { child, addr })
    }

    /// utime + stime of the server process so far.
    fn cpu(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which may hold spaces) in parentheses.
        let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok(Duration::from_micros(ticks * 1_000_000 / hz))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Outcome {
    rate: f64,
    p50: Duration,
    p99: Duration,
    cpu_per_request: Duration,
    body_bytes: usize,
    failures: u32,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn load(server: &Server, path: &str, clients: usize, length: Duration) -> Result<Outcome> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    // Connect everyone first, then start the clock.
    let mut senders = Vec::new();
    for _ in 0..clients {
        senders.push(connect(server.addr).await?);
    }
    let cpu_before = server.cpu()?;
    let started = Instant::now();
    let addr = server.addr;
    for mut sender in senders {
        let stop = stop.clone();
        let uri = path.to_string();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut body_bytes = 0;
            let mut failures = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let request = hyper::Request::get(uri.as_str())
                    .header("host", "127.0.0.1")
                    .body(Empty::<Bytes>::new())?;
                let at = Instant::now();
                let response = match sender.send_request(request).await {
                    Ok(r) => r,
                    Err(e) => {
                        // A connection the server closed: counted, and a
                        // new one (a few times at most).
                        failures += 1;
                        if failures > 10 {
                            bail!("{uri}: {e}");
                        }
                        sender = connect(addr).await?;
                        continue;
                    }
                };
                if !response.status().is_success() {
                    bail!("{uri}: {}", response.status());
                }
                let body = response.into_body().collect().await?.to_bytes();
                latencies.push(at.elapsed());
                body_bytes = body.len();
            }
            Ok::<_, anyhow::Error>((latencies, body_bytes, failures))
        }));
    }
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut body_bytes = 0;
    let mut failures = 0;
    for t in tasks {
        let (l, b, f) = t.await??;
        all.extend(l);
        body_bytes = b;
        failures += f;
    }
    let elapsed = started.elapsed();
    let cpu = server.cpu()? - cpu_before;
    if all.is_empty() {
        bail!("no request finished");
    }
    all.sort();
    let pick = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    Ok(Outcome {
        rate: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
        cpu_per_request: cpu / all.len() as u32,
        body_bytes,
        failures,
    })
}
