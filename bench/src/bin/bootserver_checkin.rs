//! Benchmark: 1,000 simulated nodes doing authenticated check-ins against
//! the boot server over keep-alive TLS connections.
//!
//! Every request is signed with `config::api::auth` exactly as a node signs
//! it (fresh nonce, current time), every reply's signature is checked, and
//! every check-in is committed to SQLite before its reply (group commit).
//! Two phases: an open loop at a fixed offered rate (latency measured from
//! each request's scheduled send time, so a stalled server cannot hide its
//! queue), then a closed loop with every node sending back to back
//! (saturation throughput). Targets: ≥ 2,000 check-ins/s with
//! p99 < 50 ms on a 2-core machine. There is no other tool a PlanetLab site
//! would use for this, so the figures stand alone.
//!
//! `cargo run --release -p bench --bin bootserver_checkin [-- --nodes 1000 --rate 2000 --seconds 10]`

#[path = "bootserver_common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bootserver::model::generate_node_key;
use bootserver::registry::{self, NewNode};
use bytes::Bytes;
use clap::Parser;
use config::api::auth::{sign_request, verify_response, Nonce, RESPONSE_SIG_HEADER};
use config::api::{
    paths, BootState, CheckinRequest, HardwareSummary, NicInfo, RunLevel, WireNetwork,
};
use config::node::{NodeId, NodeKey};
use config::Timestamp;
use http_body_util::{BodyExt, Full};

#[derive(Parser)]
struct Args {
    /// Simulated nodes, one keep-alive connection each.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Offered rate of the open-loop phase, check-ins per second (all nodes together).
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Length of each phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Server worker threads (the machine has 2 cores).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Load generator threads.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
}

struct SimNode {
    id: NodeId,
    key: NodeKey,
    body: Bytes,
}

#[derive(Default)]
struct PhaseResult {
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let tmp = tempfile::Builder::new()
        .prefix("bench-checkin")
        .tempdir_in("/var/tmp")?;
    let wd = common::init_workdir(&tmp.path().join("server"))?;

    let started = Instant::now();
    let nodes = register(&wd, args.nodes)?;
    println!(
        "registered {} nodes in {:.1} s",
        nodes.len(),
        started.elapsed().as_secs_f64()
    );

    let server = common::RunningServer::start(&wd, args.server_threads)?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .enable_all()
        .build()?;
    let tls = common::tls_connector(&wd.ca_path())?;
    let nodes = Arc::new(nodes);

    client_rt.block_on(async {
        let started = Instant::now();
        let mut conns = Vec::with_capacity(nodes.len());
        for chunk in (0..nodes.len()).collect::<Vec<_>>().chunks(100) {
            let handshakes = chunk.iter().map(|_| common::connect(server.addr, &tls));
            for c in futures_util::future::join_all(handshakes).await {
                conns.push(c?);
            }
        }
        println!(
            "{} TLS connections up in {:.2} s ({})",
            conns.len(),
            started.elapsed().as_secs_f64(),
            conns.first().map(|c| c.suite.as_str()).unwrap_or("")
        );
        let senders: Vec<_> = conns.into_iter().map(|c| c.sender).collect();

        // Warm-up: one check-in per node (first contact writes more).
        let (senders, warm) = run_phase(&nodes, senders, Load::Closed, Duration::ZERO, 1).await;
        if warm.errors > 0 {
            bail!("{} warm-up check-ins failed", warm.errors);
        }

        let phase = Duration::from_secs(args.seconds);
        let (senders, open) = run_phase(
            &nodes,
            senders,
            Load::Open { rate: args.rate },
            phase,
            u64::MAX,
        )
        .await;
        let (_senders, closed) = run_phase(&nodes, senders, Load::Closed, phase, u64::MAX).await;

        println!();
        println!(
            "{:<34} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7}",
            "phase", "done/s", "p50", "p90", "p99", "max", "errors"
        );
        report(&format!("open loop, offered {}/s", args.rate), &open);
        report(
            &format!("closed loop, {} nodes back to back", nodes.len()),
            &closed,
        );
        let open_rate = open.latencies.len() as f64 / open.elapsed.as_secs_f64();
        let mut sorted = open.latencies.clone();
        sorted.sort();
        let p99 = common::quantile(&sorted, 0.99);
        println!();
        println!(
            "target >= 2000 check-ins/s with p99 < 50 ms: {} ({:.0}/s at p99 {})",
            if open_rate >= 0.98 * 2000.0
                && args.rate >= 2000
                && p99 < Duration::from_millis(50)
                && open.errors == 0
            {
                "met"
            } else {
                "NOT met"
            },
            open_rate,
            common::ms(p99)
        );
        Ok::<_, anyhow::Error>(())
    })?;

    let conn = wd.open_db()?;
    let stored: i64 = conn.query_row("SELECT count(*) FROM nonces", [], |r| r.get(0))?;
    println!("nonces stored (one per accepted request): {stored}");
    drop(server);
    Ok(())
}

/// Registers `n` nodes in one transaction, the way `node add` does each.
fn register(wd: &bootserver::workdir::WorkDir, n: usize) -> Result<Vec<SimNode>> {
    let mut conn = wd.open_db()?;
    let tx = conn.transaction()?;
    let now = Timestamp::now();
    let site = "bench".parse().map_err(anyhow::Error::msg)?;
    registry::add_site(&tx, &site, "benchmark nodes", now)?;
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let key = generate_node_key()?;
        let new = NewNode {
            site: site.clone(),
            hostname: format!("node{i}").parse().map_err(anyhow::Error::msg)?,
            domain: Some("bench.example.org".parse().map_err(anyhow::Error::msg)?),
            network: bootserver::model::NodeNetwork {
                interface: None,
                mac: None,
                addressing: WireNetwork::Dhcp,
            },
            boot_state: BootState::Boot,
            id: None,
        };
        let node = registry::add_node(&tx, &new, &key, now)?;
        let request = CheckinRequest {
            node_id: node.id,
            run_level: RunLevel::Boot,
            bootcd_version: Some("2026.11.1".into()),
            os_version: Some("plnode-1.0".into()),
            deployment: Some("1.0-0123abcd".into()),
            hardware: Some(HardwareSummary {
                cpu_model: "Intel Xeon".into(),
                cpus: 8,
                ram_bytes: 16 << 30,
                disks: vec![],
                nics: vec![NicInfo {
                    name: "eth0".into(),
                    mac: config::node::MacAddr([
                        0x52,
                        0x54,
                        0,
                        (i >> 16) as u8,
                        (i >> 8) as u8,
                        i as u8,
                    ]),
                    link: true,
                    driver: Some("e1000e".into()),
                }],
            }),
            health: None,
            uptime_secs: 86_400,
            node_time: now,
        };
        nodes.push(SimNode {
            id: node.id,
            key,
            body: Bytes::from(serde_json::to_vec(&request)?),
        });
    }
    tx.commit()?;
    Ok(nodes)
}

#[derive(Clone, Copy)]
enum Load {
    /// Each node sends at its slot of a schedule totalling `rate`/s.
    Open { rate: u32 },
    /// Each node sends its next request as soon as the last one is answered.
    Closed,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn run_phase(
    nodes: &Arc<Vec<SimNode>>,
    senders: Vec<Sender>,
    load: Load,
    length: Duration,
    max_per_node: u64,
) -> (Vec<Sender>, PhaseResult) {
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + length;
    let n = nodes.len();
    let mut tasks = Vec::with_capacity(n);
    for (i, mut sender) in senders.into_iter().enumerate() {
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            let node = &nodes[i];
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut k = 0u64;
            loop {
                let scheduled = match load {
                    Load::Open { rate } => {
                        let period = Duration::from_secs_f64(n as f64 / f64::from(rate));
                        start + period.mul_f64(i as f64 / n as f64) + period.mul_f64(k as f64)
                    }
                    Load::Closed => Instant::now().max(start),
                };
                if k >= max_per_node || (length > Duration::ZERO && scheduled >= deadline) {
                    break;
                }
                tokio::time::sleep_until(scheduled.into()).await;
                match checkin(&mut sender, node).await {
                    Ok(()) => latencies.push(scheduled.elapsed()),
                    Err(e) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("node {}: {e:#}", node.id);
                        }
                    }
                }
                k += 1;
            }
            (sender, latencies, errors)
        }));
    }
    let mut result = PhaseResult::default();
    let mut senders = Vec::with_capacity(n);
    for t in tasks {
        let (sender, latencies, errors) = t.await.expect("load task");
        senders.push(sender);
        result.latencies.extend(latencies);
        result.errors += errors;
    }
    result.elapsed = start.elapsed().max(Duration::from_millis(1));
    (senders, result)
}

async fn checkin(sender: &mut Sender, node: &SimNode) -> Result<()> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce)?;
    let nonce = Nonce::from_random_bytes(nonce);
    let auth = sign_request(
        &node.key,
        node.id,
        "POST",
        paths::CHECKIN,
        &node.body,
        Timestamp::now().unix(),
        nonce,
    );
    let request = hyper::Request::post(paths::CHECKIN)
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::AUTHORIZATION, auth.to_header_value())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(node.body.clone()))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let sig = response
        .headers()
        .get(RESPONSE_SIG_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.into_body().collect().await?.to_bytes();
    if status != 200 {
        bail!("status {status}: {}", String::from_utf8_lossy(&body));
    }
    let sig = sig.context("reply without a signature")?;
    verify_response(&node.key, nonce, &body, &sig).context("reply signature")?;
    Ok(())
}

fn report(name: &str, r: &PhaseResult) {
    let mut sorted = r.latencies.clone();
    sorted.sort();
    let rate = sorted.len() as f64 / r.elapsed.as_secs_f64();
    println!(
        "{:<34} {:>10.0} {:>10} {:>10} {:>10} {:>10} {:>7}",
        name,
        rate,
        common::ms(common::quantile(&sorted, 0.5)),
        common::ms(common::quantile(&sorted, 0.9)),
        common::ms(common::quantile(&sorted, 0.99)),
        common::ms(sorted.last().copied().unwrap_or_default()),
        r.errors
    );
}
