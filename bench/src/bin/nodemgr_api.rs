//! acquire + bind over the node manager's local API (D-Bus on its Unix
//! socket), which makes and starts a sliver, against the same two calls
//! made in-process (no D-Bus) and a bare create+start, in the same run;
//! and against the NSDI paper's figure for acquire+bind (0.15 s). Root
//! only; uses the host's cgroup2 hierarchy (a directory of its own,
//! removed at the end).
//!
//! `cargo run --release -p bench --bin nodemgr_api -- --help`

use std::fs;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use nodemgr::admission::Capacity;
use nodemgr::api_client::ApiClient;
use nodemgr::rcap::Principal;
use nodemgr::service::Service;
use nodemgr::settings::Settings;
use nodemgr::storage::SliversFs;
use nodemgr::{AuthorizedKeys, NodeManager, SliceName};

/// The paper's acquire+bind (PlanetLab, 2004).
const PAPER_SECS: f64 = 0.15;

#[derive(Parser)]
#[command(
    about = "acquire+bind over the node manager's D-Bus API, in-process, and bare create+start"
)]
struct Args {
    /// Measured cycles per way (each makes, starts and deletes a sliver).
    #[arg(long, default_value_t = 30)]
    trials: usize,
}

fn main() -> ExitCode {
    // The slivers' PID 1 and helpers are this program.
    if let Some(code) = nodemgr::helper_main() {
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nodemgr_api: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn report(what: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(|a, b| a.total_cmp(b));
    let p50 = bench::percentile(&ms, 0.5).unwrap_or(f64::NAN);
    println!(
        "  {what:<40} p50 {p50:>8.2} ms  p99 {:>8.2} ms   paper/ours {:>6.1}x",
        bench::percentile(&ms, 0.99).unwrap_or(f64::NAN),
        PAPER_SECS * 1000.0 / p50
    );
    p50
}

fn run(args: &Args) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root (namespaces, id maps, cgroups)");
    }
    let work = tempfile::Builder::new()
        .prefix("bench-nodemgr-api-")
        .tempdir()?;
    let cgroup = floor::cgroup::ScratchCgroup::new("plnode-bench-api")
        .context("making the bench's cgroup")?;
    let fs_dir = work.path().join("fs");
    fs::create_dir(&fs_dir)?;
    let mut settings = Settings::node();
    settings.state_dir = work.path().join("state");
    settings.run_dir = work.path().join("run");
    settings.cgroup_root = cgroup.path().to_path_buf();
    settings.reference_root = bench::busybox_sliver_ref(work.path())?;
    settings.slivers_fs = SliversFs::Dir(fs_dir);
    settings.helper_program = std::env::current_exe()?;
    settings.require_limits = false;
    settings.require_quota = false;
    let manager = NodeManager::open(settings.clone())?;
    let service = Service::new(manager.clone(), Capacity::default());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(async { nodemgr::serve::open_api_socket(&service, None) })?;
    runtime.spawn(nodemgr::api::serve(
        service.clone(),
        listener,
        std::future::pending(),
    ));
    let api = ApiClient::connect(&settings.api_socket())?
        .ok_or_else(|| anyhow!("the API does not listen"))?;
    let rspec_toml = "cpu_share = 2\npids = 64\n";
    let rspec: config::rspec::Rspec = toml::from_str(rspec_toml)?;

    println!(
        "acquire+bind (makes and starts a sliver), {} cycles each, busybox reference root, on this host:",
        args.trials
    );
    let (mut over_api, mut acquire_only) = (Vec::new(), Vec::new());
    for i in 0..args.trials {
        let slice = format!("bench_api_{i}");
        let t = Instant::now();
        let rcap = api.acquire(rspec_toml)?;
        acquire_only.push(t.elapsed().as_secs_f64() * 1000.0);
        api.bind(&slice, &rcap)?;
        over_api.push(t.elapsed().as_secs_f64() * 1000.0);
        api.delete(&slice)?;
    }
    let mut in_process = Vec::new();
    for i in 0..args.trials {
        let slice = SliceName::new(&format!("bench_lib_{i}"))?;
        let t = Instant::now();
        let rcap = service.acquire(&Principal::Node, &rspec)?;
        service.bind(&Principal::Node, &slice, &rcap)?;
        in_process.push(t.elapsed().as_secs_f64() * 1000.0);
        service.delete(&Principal::Node, &slice)?;
    }
    let mut bare = Vec::new();
    for i in 0..args.trials {
        let slice = SliceName::new(&format!("bench_bare_{i}"))?;
        let t = Instant::now();
        manager.create_and_start(&slice, &rspec, &AuthorizedKeys::default())?;
        bare.push(t.elapsed().as_secs_f64() * 1000.0);
        manager.delete(&slice)?;
    }
    report("acquire alone, over D-Bus", acquire_only);
    let api_p50 = report("acquire+bind over D-Bus", over_api);
    let lib_p50 = report("acquire+bind in-process (no D-Bus)", in_process);
    let bare_p50 = report("create+start, no rcap (part 1's path)", bare);
    println!(
        "  D-Bus costs {:.2} ms per acquire+bind ({:.2}x in-process); rcaps and admission {:.2} ms over bare create+start",
        api_p50 - lib_p50,
        api_p50 / lib_p50,
        lib_p50 - bare_p50
    );
    println!(
        "  the paper's acquire+bind: {:.0} ms; ours over the API: {api_p50:.2} ms ({:.0}x faster)",
        PAPER_SECS * 1000.0,
        PAPER_SECS * 1000.0 / api_p50
    );
    drop(api);
    Ok(())
}
