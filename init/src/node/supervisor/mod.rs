//! PID 1 of the installed node: the supervisor.
//!
//! It mounts what the node needs, sets the host name, keeps the network up
//! (renewing a DHCP lease), runs the services listed in
//! `/etc/plnode/supervisor.toml`, checks in with the boot server with a
//! health summary, proves a new deployment healthy (or sends it back to the
//! CD for rollback), and shuts down in order on request.

pub mod hints;
pub mod logs;
pub mod services;
pub mod spec;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use config::api::{
    paths, BootState, CheckinRequest, HealthSummary, RunLevel, UpdateEvent, UpdateReport,
};
use config::node::{Addressing, NodeConfig};
use config::Timestamp;
use nix::sys::signal::{SigSet, Signal};

use crate::boot_server::ServerClient;
use crate::console::{self, StepStatus};
use crate::handover_note::{Handover, HANDOVER_FILE};
use crate::net::dhcp;
use crate::{clock, net, pid1, proc};
use services::Services;
use spec::SupervisorSpec;

/// Where things are; all under `root` so tests can run the supervisor in a
/// directory.
#[derive(Debug, Clone)]
pub struct Options {
    pub root: PathBuf,
    /// Running as PID 1 of a machine: mount, set the host name, configure
    /// the network, reboot at the end. Off for tests in a PID namespace.
    pub machine: bool,
    /// Check in with the boot server.
    pub checkin: bool,
}

impl Options {
    pub fn spec_path(&self) -> PathBuf {
        self.root.join("etc/plnode/supervisor.toml")
    }
    /// The node's partition (DESIGN.md §4), bind-mounted by the CD.
    pub fn partition(&self) -> PathBuf {
        self.root.join("plnode")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.partition().join("log/services")
    }
    pub fn handover_path(&self) -> PathBuf {
        self.root.join(HANDOVER_FILE.trim_start_matches('/'))
    }
}

/// What ended the supervisor's main loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Reboot,
    PowerOff,
}

/// Where the node's cgroup2 hierarchy is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The node's own services, one child group each; slivers live beside it
/// (`slivers/`, the node manager's), so CPU weights between the node and
/// its slivers mean what they say.
pub const SYSTEM_CGROUP: &str = "system";

fn mount_node_filesystems() -> anyhow::Result<()> {
    pid1::mount_early()?;
    let cg = Path::new(CGROUP_ROOT);
    std::fs::create_dir_all(cg).ok();
    if !pid1::is_mount_point(cg) {
        nix::mount::mount(
            Some("cgroup2"),
            cg,
            Some("cgroup2"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some("nsdelegate"),
        )
        .context("mounting cgroup2 on /sys/fs/cgroup")?;
    }
    system_cgroup(cg)?;
    Ok(())
}

/// Hands every controller down from `root` to `system/`, which hands them
/// on to one group per service. Returns `system/`.
pub fn system_cgroup(root: &Path) -> anyhow::Result<PathBuf> {
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers"))
        .with_context(|| format!("reading {}/cgroup.controllers", root.display()))?;
    let enable: String = controllers
        .split_whitespace()
        .map(|c| format!("+{c} "))
        .collect();
    let system = root.join(SYSTEM_CGROUP);
    std::fs::create_dir_all(&system).with_context(|| format!("creating {}", system.display()))?;
    for dir in [root, system.as_path()] {
        if !enable.trim().is_empty() {
            std::fs::write(dir.join("cgroup.subtree_control"), enable.trim())
                .with_context(|| format!("enabling {} in {}", enable.trim(), dir.display()))?;
        }
    }
    Ok(system)
}

/// The signals PID 1 acts on: reboot (TERM, INT from ctrl-alt-del), power
/// off (USR2), and HUP (ignored: re-reading config is a restart).
fn handled_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR2,
        Signal::SIGPWR,
        Signal::SIGHUP,
    ] {
        s.add(sig);
    }
    s
}

fn health(opts: &Options, services: &Services) -> HealthSummary {
    let statuses = services.statuses();
    let (free, total) = nix::sys::statvfs::statvfs(&opts.partition())
        .map(|s| {
            (
                s.blocks_available() * s.fragment_size(),
                s.blocks() * s.fragment_size(),
            )
        })
        .unwrap_or((0, 0));
    let load1 = std::fs::read_to_string(opts.root.join("proc/loadavg"))
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    HealthSummary {
        services_up: statuses
            .iter()
            .filter(|s| s.state == services::State::Up)
            .count() as u32,
        services_total: statuses.len() as u32,
        failed_services: statuses
            .iter()
            .filter(|s| matches!(s.state, services::State::Failed(_)))
            .map(|s| s.name.clone())
            .collect(),
        disk_free_bytes: free,
        disk_total_bytes: total,
        load1,
    }
}

/// Random seconds in `0..=max` (jitter so nodes do not check in together).
fn jitter(max: u64) -> u64 {
    let mut b = [0u8; 8];
    if max == 0 || getrandom::fill(&mut b).is_err() {
        return 0;
    }
    u64::from_le_bytes(b) % (max + 1)
}

struct Node {
    config: NodeConfig,
    server: ServerClient,
}

fn connect(opts: &Options, handover: Option<&Handover>) -> anyhow::Result<Node> {
    let cfg_path = opts.partition().join("node.toml");
    let config =
        NodeConfig::load(&cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?;
    let ca_path = opts.partition().join("trust/ca.pem");
    let ca = std::fs::read(&ca_path)
        .with_context(|| format!("reading the boot server CA {}", ca_path.display()))?;
    let urls = Handover::server_urls(&config, handover);
    let floor = Handover::clock_floor(handover);
    let server = ServerClient::new(
        &ca,
        urls,
        config.proxy.clone(),
        floor,
        Some((config.node_id, config.key.clone())),
    )?;
    Ok(Node { config, server })
}

fn report_update(node: &mut Node, event: UpdateEvent, handover: &Handover, reason: Option<String>) {
    let r = UpdateReport {
        event,
        os_version: handover.os_version.clone(),
        deployment: handover.deployment.clone(),
        reason,
        at: Timestamp::now(),
    };
    crate::node::events::update(&r);
    if let Err(e) = node.server.post::<_, config::api::Empty>(paths::UPDATE, &r) {
        tracing::warn!("could not report {event:?}: {e}");
    }
}

/// The lease's name servers into `/run/plnode/resolv.conf`.
fn write_lease_dns(lease: &dhcp::Lease) {
    let dns: Vec<std::net::IpAddr> = lease.dns.iter().copied().map(Into::into).collect();
    if let Err(e) =
        net::write_resolv_conf(Path::new(net::RESOLV_CONF), &dns, lease.domain.as_deref())
    {
        console::line(&format!("dhcp: {e:#}"));
    }
}

/// Keeps a DHCP lease renewed (a thread; the CD configured the address)
/// and the name servers in `/run/plnode/resolv.conf` current. After a
/// kexec hand-over nothing was written yet, so a static config writes its
/// servers here too.
fn keep_lease(config: &NodeConfig) {
    let resolv = Path::new(net::RESOLV_CONF);
    if let Addressing::Static(s) = &config.network.addressing {
        if !resolv.exists() {
            let domain = config.domain.as_ref().map(|d| d.to_string());
            if let Err(e) = net::write_resolv_conf(resolv, &s.dns, domain.as_deref()) {
                console::line(&format!("supervisor: {e:#}"));
            }
        }
        return;
    }
    let netcfg = config.network.clone();
    let host = config.hostname.to_string();
    let _ = std::thread::Builder::new()
        .name("dhcp".into())
        .spawn(move || {
            let nic = match net::choose_interface(&netcfg.interface, Duration::from_secs(15)) {
                Ok(n) => n,
                Err(e) => return console::line(&format!("dhcp: {e:#}")),
            };
            let mut lease =
                match dhcp::acquire(&nic.name, nic.mac, Some(&host), Duration::from_secs(60)) {
                    Ok(l) => l,
                    Err(e) => return console::line(&format!("dhcp: {e}")),
                };
            if let Err(e) = net::configure(nic.index, lease.address, lease.prefix, lease.router) {
                console::line(&format!("dhcp: {e:#}"));
            }
            write_lease_dns(&lease);
            loop {
                std::thread::sleep(
                    lease
                        .renew_at()
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_secs(5)),
                );
                let renewed = dhcp::renew(
                    &nic.name,
                    nic.mac,
                    &lease,
                    Some(&host),
                    Duration::from_secs(30),
                )
                .or_else(|e| {
                    tracing::warn!(
                        "renewing the lease on {}: {e}; asking again from scratch",
                        nic.name
                    );
                    dhcp::acquire(&nic.name, nic.mac, Some(&host), Duration::from_secs(60))
                });
                match renewed {
                    Ok(l) => {
                        if l.address != lease.address {
                            let _ = net::configure(nic.index, l.address, l.prefix, l.router);
                        }
                        if l.dns != lease.dns || l.domain != lease.domain {
                            write_lease_dns(&l);
                        }
                        tracing::info!(
                            "lease on {} renewed: {} for {} s",
                            nic.name,
                            l.address,
                            l.lease_secs
                        );
                        lease = l;
                    }
                    Err(e) => {
                        console::line(&format!(
                            "dhcp: {e}; keeping {} and trying again",
                            lease.address
                        ));
                        lease.acquired = Instant::now();
                        lease.lease_secs = 60;
                    }
                }
            }
        });
}

/// Runs the supervisor until a reboot or power-off is asked for; returns how
/// to end (the caller reboots the machine or exits).
pub fn run(opts: &Options) -> anyhow::Result<Ending> {
    let signals = handled_signals();
    // Block before any thread starts so only the waiter below receives them;
    // children get a clean mask from std's spawn.
    signals.thread_block().context("blocking signals")?;
    if opts.machine {
        if let Err(e) = mount_node_filesystems() {
            console::step("supervisor/mounts", StepStatus::Fail, &format!("{e:#}"));
        }
        let _ = nix::sys::reboot::set_cad_enabled(false);
        proc::start_reaper();
    } else if std::process::id() == 1 {
        proc::start_reaper();
    }

    let handover: Option<Handover> = std::fs::read(opts.handover_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let spec = SupervisorSpec::load(&opts.spec_path())?;
    let what = handover
        .as_ref()
        .map(|h| format!("deployment={} os={}", h.deployment, h.os_version))
        .unwrap_or_else(|| "deployment=unknown".into());
    console::step(
        "supervisor/start",
        StepStatus::Ok,
        &format!("{what} services={}", spec.services.len()),
    );

    let mut node = if opts.checkin || opts.machine {
        match connect(opts, handover.as_ref()) {
            Ok(n) => Some(n),
            Err(e) => {
                console::line(&format!("supervisor: no check-ins: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    if opts.machine {
        if let Some(n) = &node {
            let _ = nix::unistd::sethostname(n.config.fqdn());
            keep_lease(&n.config);
        }
    }

    // On a machine every service runs in its own group under system/.
    let cgroups = opts
        .machine
        .then(|| Path::new(CGROUP_ROOT).join(SYSTEM_CGROUP))
        .filter(|p| p.is_dir());
    let services = Services::start(
        &spec.services,
        &spec.supervisor,
        &opts.log_dir(),
        cgroups.as_deref(),
    );

    let (tx, rx) = channel::<Signal>();
    let waiter = signals;
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            if let Ok(sig) = waiter.wait() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        });

    let started = Instant::now();
    let mut trial_pending = handover.as_ref().and_then(|h| h.trial_boots_left).is_some();
    let deadline = Duration::from_secs(spec.supervisor.health_deadline_secs);
    // The server says how often to check in; the spec's value holds until it has.
    let mut interval = Duration::from_secs(spec.supervisor.checkin_interval_secs);
    let mut next_checkin = Instant::now() + Duration::from_secs(2);
    let mut announced_healthy = false;
    let ending = loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(Signal::SIGUSR2) => break Ending::PowerOff,
            Ok(Signal::SIGHUP) => {}
            Ok(sig) => {
                console::line(&format!("supervisor: {sig:?}: rebooting"));
                break Ending::Reboot;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break Ending::Reboot,
        }
        let healthy = services.healthy();
        if healthy && !announced_healthy {
            announced_healthy = true;
            console::step(
                "supervisor/healthy",
                StepStatus::Ok,
                &format!(
                    "all required services up after {} s",
                    started.elapsed().as_secs()
                ),
            );
        }
        if trial_pending {
            if let Some(h) = &handover {
                if healthy {
                    // The deployment proved itself: it is the good one now.
                    let _ = std::fs::remove_file(opts.partition().join("bootcount.json"));
                    trial_pending = false;
                    console::step(
                        "supervisor/trial",
                        StepStatus::Ok,
                        &format!("deployment {} marked good", h.deployment),
                    );
                    if let Some(n) = node.as_mut() {
                        report_update(n, UpdateEvent::MarkedGood, h, None);
                    }
                } else if let Some(reason) = trial_failure(&services, started.elapsed(), deadline) {
                    console::step(
                        "supervisor/trial",
                        StepStatus::Fail,
                        &format!("{reason}; rebooting so the CD can count the failed boot"),
                    );
                    if let Some(n) = node.as_mut() {
                        report_update(n, UpdateEvent::Failed, h, Some(reason));
                    }
                    break Ending::Reboot;
                }
            }
        }
        if Instant::now() >= next_checkin {
            next_checkin = Instant::now()
                + interval
                + Duration::from_secs(jitter(spec.supervisor.checkin_jitter_secs));
            if let Some(n) = node.as_mut() {
                let request = CheckinRequest {
                    node_id: n.config.node_id,
                    run_level: RunLevel::Boot,
                    bootcd_version: handover.as_ref().map(|h| h.cd_version.clone()),
                    os_version: handover.as_ref().map(|h| h.os_version.clone()),
                    deployment: handover.as_ref().map(|h| h.deployment.clone()),
                    hardware: None,
                    health: Some(health(opts, &services)),
                    uptime_secs: started.elapsed().as_secs(),
                    node_time: Timestamp::now(),
                };
                match hints::checkin(&mut n.server, &request) {
                    Ok(resp) => {
                        for (service, hint) in hints::to_wake(&spec.services, &resp.hints) {
                            match services.signal(service, Signal::SIGUSR1) {
                                Ok(true) => console::line(&format!(
                                    "supervisor: the boot server hints {hint}: waking {service}"
                                )),
                                Ok(false) => console::line(&format!(
                                    "supervisor: the boot server hints {hint}, but {service} is not running"
                                )),
                                Err(e) => console::line(&format!(
                                    "supervisor: waking {service} for {hint}: {e}"
                                )),
                            }
                        }
                        let told = Duration::from_secs(resp.checkin_interval_secs.max(5));
                        if told != interval {
                            interval = told;
                            next_checkin = Instant::now()
                                + interval
                                + Duration::from_secs(jitter(
                                    spec.supervisor
                                        .checkin_jitter_secs
                                        .min(resp.checkin_interval_secs / 4),
                                ));
                        }
                        if opts.machine {
                            let _ = clock::apply_server_time(resp.server_time);
                        }
                        match crate::staff_keys::install(&opts.root, &resp.debug_ssh_keys) {
                            Ok(true) => console::line(&format!(
                                "staff ssh keys updated ({} key(s))",
                                resp.debug_ssh_keys.len()
                            )),
                            Ok(false) => {}
                            Err(e) => console::line(&format!("staff ssh keys: {e:#}")),
                        }
                        crate::node::events::checkin(&resp.boot_state);
                        console::step(
                            "supervisor/checkin",
                            StepStatus::Ok,
                            &format!("state={} run_level=boot", resp.boot_state),
                        );
                        if resp.reboot_requested || resp.boot_state != BootState::Boot {
                            console::line(&format!(
                                "the boot server wants state `{}`{}: rebooting through the CD",
                                resp.boot_state,
                                if resp.reboot_requested {
                                    " and a reboot"
                                } else {
                                    ""
                                }
                            ));
                            break Ending::Reboot;
                        }
                    }
                    Err(e) => {
                        crate::node::events::checkin_failed(&e);
                        console::line(&format!("supervisor: check-in failed: {e}"))
                    }
                }
            }
        }
    };
    console::step(
        "supervisor/shutdown",
        StepStatus::Start,
        &format!("{ending:?}"),
    );
    services.stop_all(Duration::from_secs(10));
    nix::unistd::sync();
    console::detach_log_file();
    let mut unmounted = Vec::new();
    for m in ["root", "var", "lib/modules", "plnode"] {
        let target = opts.root.join(m);
        if pid1::is_mount_point(&target) {
            match nix::mount::umount2(&target, nix::mount::MntFlags::empty()) {
                Ok(()) => unmounted.push(target.display().to_string()),
                // Still busy (a straggler holding a file): detach it, the
                // kernel finishes once it is free; the data is synced.
                Err(e) => {
                    console::line(&format!(
                        "unmounting {}: {e}; detaching it",
                        target.display()
                    ));
                    let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
    }
    if opts.machine {
        // The node's partition is also mounted where the CD left it (under
        // /run) and holds / itself: leave its file system clean, so the
        // next mount has no journal to replay.
        let _ = nix::mount::umount2(
            Path::new("/run/plnode/disk"),
            nix::mount::MntFlags::MNT_DETACH,
        );
        match nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY,
            None::<&str>,
        ) {
            Ok(()) => unmounted.push("/ (read-only)".to_string()),
            Err(e) => console::line(&format!("remounting / read-only: {e}")),
        }
    }
    nix::unistd::sync();
    console::step(
        "supervisor/shutdown",
        StepStatus::Ok,
        &format!("{ending:?} unmounted=[{}]", unmounted.join(" ")),
    );
    Ok(ending)
}

/// PID 1 on the installed system. Never returns.
pub fn run_as_pid1() -> ! {
    pid1::install_panic_hook();
    console::init(console::Output::Devices);
    let opts = Options {
        root: PathBuf::from("/"),
        machine: true,
        checkin: true,
    };
    let ending = match std::panic::catch_unwind(|| run(&opts)) {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            console::step("supervisor/start", StepStatus::Fail, &format!("{e:#}"));
            Ending::Reboot
        }
        Err(_) => Ending::Reboot,
    };
    let how = match ending {
        Ending::Reboot => pid1::Shutdown::Reboot,
        Ending::PowerOff => pid1::Shutdown::PowerOff,
    };
    let e = pid1::shutdown(how);
    console::line(&format!("{e:#}"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Why a deployment on trial has failed it, if it has: a required service
/// given up on (crash-looping: it will not come up by itself, so waiting
/// out the deadline would only delay the rollback), or the deadline passed
/// with required services not up.
fn trial_failure(
    services: &services::Services,
    elapsed: Duration,
    deadline: Duration,
) -> Option<String> {
    let statuses = services.statuses();
    let given_up: Vec<String> = statuses
        .iter()
        .filter(|s| s.required && matches!(s.state, services::State::Failed(_)))
        .map(|s| s.name.clone())
        .collect();
    if !given_up.is_empty() {
        return Some(format!(
            "required services crash-looping after {} s: {}",
            elapsed.as_secs(),
            given_up.join(", ")
        ));
    }
    if elapsed <= deadline {
        return None;
    }
    let not_up: Vec<String> = statuses
        .into_iter()
        .filter(|s| s.required && s.state != services::State::Up)
        .map(|s| s.name)
        .collect();
    Some(format!(
        "services not up within {} s: {}",
        deadline.as_secs(),
        not_up.join(", ")
    ))
}
