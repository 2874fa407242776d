//! `nodemgr serve`: the node manager service the supervisor runs.
//!
//! At start it brings back the slivers that should run (and runs their
//! `start` scripts), opens the API socket, then reconciles with the boot
//! server: at once, every poll interval (10 minutes, jittered), at once on
//! SIGUSR1 (the supervisor's `slices_changed` hint), and at each lease end.
//! A poll that fails falls back on the saved answer, so slivers keep
//! running, until their leases end, on a node cut off from its server.
//! SIGTERM or SIGINT stop the service; the slivers keep running.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use config::api::{paths, ProgressEvent, ProgressReport, SliversResponse};
use config::Timestamp;

use crate::logins::Logins;
use crate::reconcile::{self, Report, SavedAnswer};
use crate::service::{line, Service};

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The node's partition (`node.toml`, `trust/ca.pem`); `None`: no boot
    /// server, slivers are managed on the node only.
    pub partition: Option<PathBuf>,
    /// The CD's hand-over note (server URLs, clock floor).
    pub handover: PathBuf,
    /// Time between polls of the server.
    pub poll_interval: Duration,
    /// Up to this much is added to each interval at random.
    pub poll_jitter: Duration,
    /// Where ssh logins' accounts and homes go; `None`: no logins.
    pub logins: Option<Logins>,
    /// A link to the API socket at a well-known place
    /// (`/run/plnode/nodemgr.sock`), made at start.
    pub api_link: Option<PathBuf>,
    /// bwcap's state directory: after every pass the node cap and the
    /// running slivers' rates are applied (DESIGN.md §7); `None`: not.
    pub bandwidth: Option<PathBuf>,
}

/// The service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The async runtime.
    #[error("starting the event loop: {0}")]
    Runtime(#[source] std::io::Error),
    /// The API socket.
    #[error("the API socket {}: {source}", path.display())]
    Socket {
        /// The socket or link.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The node's identity (config, CA).
    #[error("the node's identity: {0}")]
    Identity(#[from] nodeclient::IdentityError),
    /// The boot server client.
    #[error("the boot server client: {0}")]
    Client(#[from] nodeclient::ClientError),
}

/// Why the reconciliation loop wakes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The server said the node's slices changed (SIGUSR1).
    Hint,
    /// A sliver started or changed: its bandwidth class and classifier
    /// are due (a started sliver has a new cgroup).
    Bandwidth,
    /// Stop.
    Stop,
}

/// Runs the service until SIGTERM or SIGINT.
pub fn serve(service: Service, options: ServeOptions) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("nodemgr")
        .build()
        .map_err(ServeError::Runtime)?;
    // SIGUSR1's default action ends a process: watch it before anything
    // slow (the supervisor may send the hint at any time).
    let watched = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        Ok::<_, std::io::Error>((
            signal(SignalKind::user_defined1())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    });
    let watched = watched.map_err(ServeError::Runtime)?;
    let client = match &options.partition {
        Some(partition) => Some(
            nodeclient::NodeIdentity::load(partition, &options.handover)
                .map_err(ServeError::Identity)?,
        ),
        None => None,
    };

    restore(&service);
    let listener =
        runtime.block_on(async { open_api_socket(&service, options.api_link.as_deref()) })?;
    let (wake_tx, wake_rx) = mpsc::channel();
    let loop_thread = {
        let service = service.clone();
        let options = options.clone();
        std::thread::Builder::new()
            .name("reconcile".into())
            .spawn(move || reconcile_loop(&service, &options, client, &wake_rx))
            .map_err(ServeError::Runtime)?
    };
    if options.bandwidth.is_some() {
        let mut events = service.subscribe();
        let wake = wake_tx.clone();
        runtime.spawn(async move {
            use crate::service::EventKind;
            loop {
                match events.recv().await {
                    Ok(e)
                        if matches!(
                            e.kind,
                            EventKind::Created | EventKind::Started | EventKind::Changed
                        ) =>
                    {
                        if wake.send(Wake::Bandwidth).is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    runtime.block_on(async move {
        let api = tokio::spawn(crate::api::serve(
            service.clone(),
            listener,
            std::future::pending::<()>(),
        ));
        signals(watched, wake_tx).await;
        api.abort();
    });
    let _ = loop_thread.join();
    Ok(())
}

/// Starts the slivers that should run, then their `start` scripts.
fn restore(service: &Service) {
    match service.manager().restore() {
        Ok(r) => {
            for slice in &r.started {
                tracing::info!(%slice, "restored");
                service.after_start_in_background(slice.clone());
            }
            for (slice, why) in &r.failed {
                tracing::error!(%slice, "did not start: {why}");
            }
        }
        Err(e) => tracing::error!("restore: {}", line(&e)),
    }
}

/// Opens the API socket (0666 in a 0755 directory: who may do what is
/// decided per caller) and the link to it; needs a Tokio runtime.
pub fn open_api_socket(
    service: &Service,
    link: Option<&std::path::Path>,
) -> Result<tokio::net::UnixListener, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let settings = service.manager().settings();
    let dir = settings.api_dir();
    let socket = settings.api_socket();
    let err = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| ServeError::Socket { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(err(&dir))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(err(&dir))?;
    // A socket left by an earlier run: nobody accepts on it any more.
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(&socket)(e)),
    }
    let listener = tokio::net::UnixListener::bind(&socket).map_err(err(&socket))?;
    // Every sliver's uids may connect; who they are decides what they may do.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
        .map_err(err(&socket))?;
    if let Some(link) = link {
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(err(parent))?;
        }
        let tmp = link.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&socket, &tmp).map_err(err(&tmp))?;
        std::fs::rename(&tmp, link).map_err(err(link))?;
    }
    Ok(listener)
}

async fn signals(
    (mut usr1, mut term, mut int): (
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    ),
    wake: mpsc::Sender<Wake>,
) {
    loop {
        tokio::select! {
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: the node's slices changed on the server");
                let _ = wake.send(Wake::Hint);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = wake.send(Wake::Stop);
}

fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 8];
    if max.is_zero() || getrandom::fill(&mut b).is_err() {
        return Duration::ZERO;
    }
    Duration::from_millis(u64::from_le_bytes(b) % (max.as_millis().max(1) as u64))
}

/// One poll: the server's answer (saved when it verified), else the saved
/// one; then reconciliation and the login files.
pub fn poll_once(
    service: &Service,
    server: Option<&mut nodeclient::ServerClient>,
    node: Option<config::node::NodeId>,
    saved: &SavedAnswer,
    logins: Option<&Logins>,
) -> (Option<Report>, Option<String>) {
    let mut error = None;
    let answer: Option<SliversResponse> = match server {
        Some(server) => match server.get::<SliversResponse>(paths::SLIVERS) {
            Ok(answer) if node.is_some_and(|n| n != answer.node_id) => {
                error = Some(format!(
                    "the server answered for node {}, not this node",
                    answer.node_id
                ));
                saved.load().ok().flatten()
            }
            Ok(answer) => {
                if let Err(e) = saved.save(&answer) {
                    tracing::warn!("keeping the answer: {}", line(&e));
                }
                Some(answer)
            }
            Err(e) => {
                error = Some(line(&e));
                match saved.load() {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("{}", line(&e));
                        None
                    }
                }
            }
        },
        None => None,
    };
    let report = match &answer {
        Some(answer) => Some(reconcile::reconcile(service, answer, Timestamp::now())),
        None => {
            // No answer at all (never reached a server): leases still end.
            let (ended, failed) = service.end_leases(Timestamp::now());
            Some(Report {
                removed: ended,
                failed: failed
                    .into_iter()
                    .map(|(s, why)| (s.to_string(), why))
                    .collect(),
                ..Report::default()
            })
        }
    };
    if let Some(logins) = logins {
        match service.sliver_states() {
            Ok(states) => {
                if let Err(e) = logins.write(&states) {
                    tracing::error!("ssh logins: {}", line(&e));
                }
            }
            Err(e) => tracing::error!("ssh logins: {}", line(&e)),
        }
    }
    (report, error)
}

/// The report's lines for the server's node log.
pub fn events(report: &Report) -> Vec<ProgressEvent> {
    let at = Timestamp::now();
    let event = |message: String| ProgressEvent {
        step: "nodemgr/slivers".into(),
        percent: None,
        message,
        at,
    };
    let mut out = Vec::new();
    for (what, list) in [
        ("created", &report.created),
        ("changed", &report.changed),
        ("restarted", &report.restarted),
        ("removed", &report.removed),
    ] {
        if !list.is_empty() {
            let names: Vec<&str> = list.iter().map(|s| s.as_str()).collect();
            out.push(event(format!("slivers {what}: {}", names.join(" "))));
        }
    }
    for (slice, why) in &report.failed {
        out.push(event(format!("sliver {slice} failed: {why}")));
    }
    out
}

fn reconcile_loop(
    service: &Service,
    options: &ServeOptions,
    identity: Option<nodeclient::NodeIdentity>,
    wake: &mpsc::Receiver<Wake>,
) {
    let saved = SavedAnswer::new(&service.manager().settings().state_dir);
    let node = identity.as_ref().map(|i| i.config.node_id);
    let mut server = identity.and_then(|i| match i.client() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!("boot server client: {}", line(&e));
            None
        }
    });
    let mut reported: Vec<(String, String)> = Vec::new();
    loop {
        let (report, error) = poll_once(
            service,
            server.as_mut(),
            node,
            &saved,
            options.logins.as_ref(),
        );
        if let Some(e) = &error {
            tracing::warn!("polling the boot server: {e} (going on with the saved answer)");
        }
        if let (Some(report), Some(server)) = (&report, server.as_mut()) {
            // Each failure is told once (until it changes or goes).
            let mut quiet = report.clone();
            quiet.failed.retain(|f| !reported.contains(f));
            reported.clone_from(&report.failed);
            let events = events(&quiet);
            if !events.is_empty() {
                if let Err(e) = server
                    .post::<_, config::api::Empty>(paths::PROGRESS, &ProgressReport { events })
                {
                    tracing::warn!("reporting to the boot server: {}", line(&e));
                }
            }
        }
        if let Some(state_dir) = &options.bandwidth {
            let cap = saved.load().ok().flatten().and_then(|a| a.bwcap);
            crate::bandwidth::apply_logged(service, state_dir, cap);
        }
        if let Some(report) = &report {
            if !report.is_quiet() {
                tracing::info!(
                    created = report.created.len(),
                    changed = report.changed.len(),
                    removed = report.removed.len(),
                    failed = report.failed.len(),
                    "reconciled"
                );
            }
        }
        let next_poll = Instant::now() + options.poll_interval + jitter(options.poll_jitter);
        let deadline = match service.next_lease_end() {
            Some(end) => {
                let secs = (end.unix() - Timestamp::now().unix()).max(0) as u64;
                next_poll
                    .min(Instant::now() + Duration::from_secs(secs) + Duration::from_millis(100))
            }
            None => next_poll,
        };
        loop {
            match wake.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Wake::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Ok(Wake::Hint) | Err(mpsc::RecvTimeoutError::Timeout) => break,
                Ok(Wake::Bandwidth) => {
                    if let Some(state_dir) = &options.bandwidth {
                        let cap = saved.load().ok().flatten().and_then(|a| a.bwcap);
                        crate::bandwidth::apply_logged(service, state_dir, cap);
                    }
                }
            }
        }
    }
}
