//! What each command does: settings from the arguments, then the library.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use sensors::catalog::{Kind, Sensor};
use sensors::metrics::{Families, Format};
use sensors::sources::{Rows, Source, Sources};
use sensors::table::Selection;
use sensors::Settings;

use crate::cli::{Cli, Command, ReadArgs, ServeArgs, SourceArgs};

/// Logs to standard error; `-v` raises the level, RUST_LOG overrides.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Read(args) => read(args),
    }
}

fn apply_sources(settings: &mut Settings, args: &SourceArgs) {
    settings.proc_dir = args.proc.clone();
    settings.node_config = args.node_config.clone();
    settings.handover = args.handover.clone();
    settings.journal =
        floor::journal::Journal::new(args.journal.clone(), config::events::JOURNAL_MAX_BYTES);
    settings.nodemgr.state_dir = args.nodemgr_state_dir.clone();
    settings.nodemgr.cgroup_root = args.cgroup_root.clone();
    settings.bwcap_state_dir = args.bwcap_state_dir.clone();
    if let Some(dir) = &args.slivers_dir {
        settings.nodemgr.slivers_fs = nodemgr::storage::SliversFs::Dir(dir.clone());
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut settings = Settings::node();
    settings.listen = args.listen;
    settings.limits.allow = args.allow_from;
    settings.limits.max_connections = args.max_connections;
    settings.limits.request_timeout = Duration::from_secs(args.request_timeout.max(1));
    settings.limits.write_timeout = Duration::from_secs(args.write_timeout.max(1));
    settings.cache_ttl = Duration::from_millis(args.cache_ms);
    settings.sensor_timeout = Duration::from_millis(args.sensor_timeout_ms.max(1));
    settings.connections_kept = args.connections_kept;
    settings.connections_interval = Duration::from_millis(args.connections_interval_ms.max(50));
    apply_sources(&mut settings, &args.sources);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("listening on {}", settings.listen))?;
        tracing::info!("serving the sensors on http://{}/", settings.listen);
        let stop = async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        sensors::serve(&settings, listener, stop)
            .await
            .context("starting the sensors")
    })
}

fn read(args: ReadArgs) -> anyhow::Result<()> {
    let mut settings = Settings::node();
    apply_sources(&mut settings, &args.sources);
    let sources = Sources {
        proc_dir: settings.proc_dir,
        node_config: settings.node_config,
        handover: settings.handover,
        nodemgr: settings.nodemgr,
        bwcap_state_dir: settings.bwcap_state_dir,
        last_checkin: Arc::new(Mutex::new(None)),
    };
    let parts = sensors::server::segments(&args.path).map_err(anyhow::Error::msg)?;
    let Some((name, rest)) = parts.split_first() else {
        print!("{}", sensors::catalog::index().to_csv(&Selection::all()));
        return Ok(());
    };
    if name == "metrics" && rest.is_empty() {
        let readings: Vec<_> = Source::ALL
            .into_iter()
            .map(|s| (s, Arc::new(sources.read(s, Rows::All))))
            .collect();
        print!(
            "{}",
            Families::from_readings(&readings).encode(Format::Prometheus)
        );
        return Ok(());
    }
    let Some(sensor) = Sensor::find(name) else {
        bail!("no sensor `{name}` (sensors read / lists them)");
    };
    let (Kind::Snapshot, Some(source)) = (sensor.kind(), sensor.source()) else {
        bail!(
            "{name} is a streaming sensor: follow it from the server (wget -qO- http://127.0.0.1:{}/{name})",
            sensors::settings::PORT
        );
    };
    let selection = Selection::parse(sensor.columns(), rest);
    let rows = if selection.keys.is_empty() {
        Rows::All
    } else {
        Rows::Keys(&selection.keys)
    };
    let reading = sources
        .read(source, rows)
        .with_context(|| format!("sensor {name}"))?;
    let table = sensor.table(&reading);
    if let Some(key) = selection.missing_key(&table) {
        bail!("sensor {name} has no column `{key}` and no row with that key");
    }
    print!("{}", table.to_csv(&selection));
    Ok(())
}
