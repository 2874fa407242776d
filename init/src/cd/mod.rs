//! The boot manager: PID 1 on the CD, from power-on to hand-over.
//!
//! Each step prints `@step NAME start@` and then `ok`, `skip` or `fail`
//! with a detail. A failure anywhere — an error or a panic — ends in the
//! `debug` state with the reason on the console and at the server. In
//! `debug` (and `disabled`) the node keeps checking in; when the admins
//! change its state, it reboots into the new one. PID 1 never exits.
//!
//! The wing's parts: [`steps`] (markers and failures), [`config_discovery`]
//! (where the node config comes from), [`reinstall`] with [`disk`]
//! (partitioning), the hand-over by [`switch_root`] or [`kexec`],
//! [`debug`] (ssh for staff) and [`report`] (progress to the server).

pub mod config_discovery;
pub mod debug;
pub mod disk;
pub mod kexec;
pub mod reinstall;
pub mod report;
pub mod steps;
pub mod switch_root;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use config::api::{
    paths, BootState, CheckinRequest, CheckinResponse, HelloRequest, HelloResponse, InstallReport,
    InstalledPackage, RunLevel, UpdateEvent, UpdateReport,
};
use config::cd::CdInfo;
use config::node::{NodeConfig, ServerUrl};
use config::Timestamp;

use crate::blockdev::{FsKind, Mounted};
use crate::boot_server::{ServerClient, ServerError};
use crate::console::{self, StepStatus};
use crate::deploy::{self, BootChoice, Denied, Disk};
use crate::handover_note::Handover;
use crate::kernel_cmdline::Cmdline;
use crate::{clock, modprobe, net, pid1, proc};
use config_discovery::Found;
use reinstall::DISK_MOUNT;
use report::Reporter;
pub use steps::{step, Failure};

/// The CD's description of itself, in the signed initramfs.
pub const CD_INFO: &str = "/etc/plnode/cd.toml";
/// The boot server CA: the only TLS trust root.
pub const CD_CA: &str = "/etc/plnode/ca.pem";

/// Why the sequence stopped short of a hand-over.
enum Stop {
    Failed(Failure),
    /// The server wants `debug` or `disabled`.
    Asked(BootState),
    /// Something changed that a fresh boot handles best (a config appeared).
    Reboot(String),
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Stop {
        Stop::Failed(f)
    }
}

/// Everything the steps learn, passed along.
#[derive(Debug)]
pub struct Boot {
    pub cd: CdInfo,
    pub cmdline: Cmdline,
    pub node: Option<Found>,
    pub network: Option<net::Up>,
    pub reporter: Option<Reporter>,
    pub last_state: Option<BootState>,
    /// Staff ssh keys from the last check-in (for `debug`).
    pub staff_keys: Vec<String>,
    pub started: Instant,
}

/// Modules loaded by name on every CD boot, whatever the hardware: the file
/// systems the boot manager mounts itself.
const ALWAYS: &[&str] = &[
    "ext4",
    "isofs",
    "vfat",
    // Disk drivers for SCSI-like devices (SATA via ahci, USB sticks), so a
    // disk that shows up late still gets its block device.
    "sd_mod",
    "sr_mod",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
];

fn load_modules() -> anyhow::Result<((), String)> {
    let dir = crate::hardware::module_dir()?;
    let index = modprobe::ModuleIndex::load(&dir)?;
    let mut loader = modprobe::Loader::new(index);
    let (mut loaded, failures) = loader.load_for_hardware(Path::new("/sys/devices"));
    for name in ALWAYS {
        if loader.index.contains(name) {
            match loader.load(name) {
                Ok(new) => loaded.extend(new),
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
    for f in &failures {
        tracing::warn!("{f}");
    }
    tracing::info!("loaded {}", loaded.join(" "));
    Ok((
        (),
        format!("loaded={} failed={}", loaded.len(), failures.len()),
    ))
}

fn find_config(cmdline: &Cmdline) -> Result<Option<Found>, Failure> {
    console::step("config", StepStatus::Start, "");
    match config_discovery::discover(cmdline) {
        Ok(Some(found)) => {
            for w in &found.warnings {
                tracing::warn!("{w}");
            }
            tracing::info!("using the node config from {}", found.source);
            console::step(
                "config",
                StepStatus::Ok,
                &format!(
                    "source={} node={} host={}",
                    found.source.tag(),
                    found.config.node_id,
                    found.config.fqdn()
                ),
            );
            Ok(Some(found))
        }
        Ok(None) => {
            console::step(
                "config",
                StepStatus::Skip,
                "no node config found: this node is unregistered",
            );
            Ok(None)
        }
        Err(bad) => {
            console::step("config", StepStatus::Fail, &bad.to_string());
            Err(Failure {
                step: "config",
                error: anyhow::Error::new(bad),
            })
        }
    }
}

fn dhcp_anywhere() -> config::node::NetworkConfig {
    config::node::NetworkConfig {
        interface: config::node::InterfaceChoice::FirstWithLink,
        addressing: config::node::Addressing::Dhcp,
    }
}

fn bring_up_network(node: Option<&NodeConfig>) -> Result<net::Up, Failure> {
    let (netcfg, host, domain) = match node {
        Some(c) => (
            c.network.clone(),
            Some(c.hostname.to_string()),
            c.domain.as_ref().map(|d| d.to_string()),
        ),
        None => (dhcp_anywhere(), None, None),
    };
    step("network", || {
        let up = net::bring_up(&netcfg, host.as_deref(), domain.as_deref())?;
        let detail = up.summary();
        Ok((up, detail))
    })
}

fn server_urls(cd: &CdInfo, node: Option<&NodeConfig>) -> Vec<ServerUrl> {
    match node {
        Some(c) if !c.server_urls.is_empty() => c.server_urls.clone(),
        _ => cd.server_urls.clone(),
    }
}

fn uptime_secs(started: Instant) -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64)
        .unwrap_or_else(|_| started.elapsed().as_secs())
}

fn checkin_request(
    boot: &Boot,
    node: &NodeConfig,
    run_level: RunLevel,
    os_version: Option<String>,
    deployment: Option<String>,
) -> CheckinRequest {
    CheckinRequest {
        node_id: node.node_id,
        run_level,
        bootcd_version: Some(boot.cd.cd_version.clone()),
        os_version,
        deployment,
        hardware: Some(crate::hardware::summary()),
        health: None,
        uptime_secs: uptime_secs(boot.started),
        node_time: Timestamp::now(),
    }
}

/// Check-in attempts before giving up (with backoff: 5, 10, 20, 40, 60, 60 s).
const CHECKIN_ROUNDS: u32 = 6;

/// Checks in, retrying unreachable servers with bounded backoff, fixing the
/// clock when the server says it is off. The first success prints the `tls`
/// marker; every refusal says exactly why.
fn checkin(
    server: &Mutex<ServerClient>,
    request: &CheckinRequest,
    first: bool,
) -> Result<CheckinResponse, Failure> {
    if first {
        console::step("tls", StepStatus::Start, "");
    }
    let mut delay = Duration::from_secs(5);
    let mut clock_fixed = false;
    let mut round = 1;
    loop {
        let result = server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .post::<_, CheckinResponse>(paths::CHECKIN, request);
        match result {
            Ok(resp) => {
                let url = server
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .current_url()
                    .to_string();
                if first {
                    console::step(
                        "tls",
                        StepStatus::Ok,
                        &format!("server={url} (trusting only the CD's CA)"),
                    );
                }
                match clock::apply_server_time(resp.server_time) {
                    Ok(adj @ clock::Adjusted::Set { .. }) => {
                        console::step("clock", StepStatus::Ok, &format!("{adj} (server time)"))
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("{e:#}"),
                }
                return Ok(resp);
            }
            Err(ServerError::Stale { url, server_time }) if !clock_fixed => {
                // The reply came over TLS from a server with our CA's
                // certificate, so its time is trustworthy enough to retry.
                tracing::warn!("{url}: our clock is off; taking the server time {server_time}");
                if let Ok(adj) = clock::apply_server_time(server_time) {
                    console::step(
                        "clock",
                        StepStatus::Ok,
                        &format!("{adj} (server said our clock was off)"),
                    );
                }
                clock_fixed = true;
            }
            Err(ServerError::Unreachable(reasons)) if round < CHECKIN_ROUNDS => {
                for (url, why) in &reasons {
                    console::line(&format!("boot server {url} refused or unreachable: {why}"));
                }
                console::line(&format!(
                    "check-in attempt {round}/{CHECKIN_ROUNDS} failed; trying again in {} s",
                    delay.as_secs()
                ));
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(60));
                round += 1;
            }
            Err(e @ ServerError::Unreachable(_)) => {
                let step_name = if first { "tls" } else { "checkin" };
                console::step(step_name, StepStatus::Fail, &e.to_string());
                return Err(Failure {
                    step: step_name,
                    error: anyhow!(e),
                });
            }
            Err(e) => {
                if first {
                    console::step("tls", StepStatus::Ok, "connected; the server answered");
                }
                let error = match &e {
                    ServerError::Refused {
                        status: 401 | 403,
                        code,
                        ..
                    } if code == "bad_signature" || code == "unknown_node" => {
                        anyhow!("{e} — the boot server does not accept this node's identity (wrong node key or node id?); staff must fix the node config")
                    }
                    _ => anyhow!(e),
                };
                console::step("checkin", StepStatus::Fail, &format!("{error:#}"));
                return Err(Failure {
                    step: "checkin",
                    error,
                });
            }
        }
    }
}

/// Mounts the installed partition read-write, if there is one.
fn mount_installed() -> anyhow::Result<(Mounted, Disk)> {
    let part = disk::find_root_partition(Path::new("/sys/block")).ok_or_else(|| {
        anyhow!(
            "no installed system: no partition labelled {} on any disk (set the node to reinstall)",
            config_discovery::ROOT_LABEL
        )
    })?;
    let mounted = Mounted::new(&part.dev, Path::new(DISK_MOUNT), FsKind::Ext, false)?;
    let disk = Disk::new(&mounted.dir);
    Ok((mounted, disk))
}

fn report_update(
    reporter: &Reporter,
    event: UpdateEvent,
    record_os: &str,
    deployment: &str,
    reason: Option<String>,
) {
    let report = UpdateReport {
        event,
        os_version: record_os.to_string(),
        deployment: deployment.to_string(),
        reason,
        at: Timestamp::now(),
    };
    if let Err(e) = reporter
        .server()
        .post::<_, config::api::Empty>(paths::UPDATE, &report)
    {
        tracing::warn!("could not report {event:?} to the server: {e}");
    }
}

/// The `boot` state: activate a staged update, apply the trial counter,
/// check the deployment against its manifests, hand over.
fn boot_installed(
    boot: &Boot,
    reporter: &Reporter,
    installed: Option<(Mounted, Disk)>,
) -> Result<std::convert::Infallible, Failure> {
    let (mounted, disk) = match installed {
        Some(pair) => pair,
        None => mount_installed().map_err(|error| {
            console::step("boot/verify", StepStatus::Fail, &format!("{error:#}"));
            Failure {
                step: "boot/verify",
                error,
            }
        })?,
    };
    let _ = console::attach_log_file(
        &disk
            .log_dir()
            .join(format!("boot-{}.log", Timestamp::now().unix())),
    );
    if let Some(found) = &boot.node {
        // Keep the disk's copy of the config current, for boots without the CD's.
        let on_disk = std::fs::read_to_string(disk.node_config_path()).unwrap_or_default();
        let text = found.disk_text();
        if on_disk != text {
            let _ = floor::durable::write_atomic(&disk.node_config_path(), text.as_bytes());
        }
    }

    step("boot/update", || {
        let Some(staged) = disk.link("staged")? else {
            return Ok(((), "no staged update".to_string()));
        };
        if disk.denylist()?.iter().any(|d| d.deployment == staged) {
            disk.clear_link("staged")?;
            return Ok(((), format!("staged {staged} is on the denylist; ignored")));
        }
        let record = disk.record(&staged)?;
        deploy::check_deployment(&disk, &record, true).with_context(|| {
            format!("the staged deployment {staged} does not match its manifests")
        })?;
        disk.activate(&staged, true)?;
        disk.clear_link("staged")?;
        report_update(
            reporter,
            UpdateEvent::Activated,
            &record.os_version,
            staged.as_str(),
            None,
        );
        Ok((
            (),
            format!(
                "activated {staged} on trial ({} boots)",
                deploy::TRIAL_BOOTS
            ),
        ))
    })?;

    let (record, trial) = step("boot/verify", || {
        let choice = deploy::boot_decision(
            disk.link("current")?,
            disk.link("previous")?,
            disk.bootcount()?,
        );
        let (id, trial) = match choice {
            BootChoice::Nothing => {
                anyhow::bail!("nothing is installed on this disk (set the node to reinstall)")
            }
            BootChoice::RollBack { failed, to } => {
                let failed_os = disk
                    .record(&failed)
                    .map(|r| r.os_version)
                    .unwrap_or_default();
                let reason = format!(
                    "deployment {failed} did not come up healthy within {} boots",
                    deploy::TRIAL_BOOTS
                );
                console::line(&format!("rolling back: {reason}; going back to {to}"));
                disk.deny(Denied {
                    deployment: failed.clone(),
                    os_version: failed_os.clone(),
                    reason: reason.clone(),
                    at: Timestamp::now(),
                })?;
                disk.set_link("current", &to)?;
                disk.clear_link("previous")?;
                disk.clear_bootcount()?;
                report_update(
                    reporter,
                    UpdateEvent::RolledBack,
                    &failed_os,
                    failed.as_str(),
                    Some(reason),
                );
                (to, None)
            }
            BootChoice::Current { id, trial } => (id, trial),
        };
        let record = disk.record(&id)?;
        // Asked for on the kernel command line, or by staff on the node
        // (`init check-next-boot`); a request is used up even if the
        // check fails, so a damaged disk does not loop on it.
        let full = disk.take_full_check_request()? || boot.cmdline.full_check;
        deploy::check_deployment(&disk, &record, full)?;
        if let Some(left) = trial {
            disk.set_bootcount(&deploy::BootCount {
                deployment: id.clone(),
                attempts_left: left.saturating_sub(1),
            })?;
        }
        let previous = disk
            .link("previous")?
            .map(|p| format!(" previous={p}"))
            .unwrap_or_default();
        let detail = format!(
            "deployment={} os={}{previous} check={}{}",
            record.id,
            record.os_version,
            if full { "full" } else { "quick" },
            trial
                .map(|t| format!(" trial_boots_left={}", t.saturating_sub(1)))
                .unwrap_or_default()
        );
        Ok(((record, trial), detail))
    })?;

    console::step("boot/handover", StepStatus::Start, "");
    let kernel_release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let kernel_dir = disk.deployment_path(&record.id).join("kernel");
    let installed_kernels = switch_root::kernel_releases(&kernel_dir);
    // The deployment's kernel, when it is not the one running: its modules
    // cannot load into this one, so the hand-over goes through kexec.
    let other_kernel = installed_kernels
        .first()
        .filter(|_| !installed_kernels.contains(&kernel_release))
        .cloned();
    reporter.progress(
        "boot/handover",
        Some(100),
        format!("handing over to {}", record.id),
    );
    // Let the reporter deliver what is queued before the world changes.
    std::thread::sleep(Duration::from_millis(300));
    let mut note = Handover {
        deployment: record.id.to_string(),
        os_version: record.os_version.clone(),
        trial_boots_left: trial.map(|t| t.saturating_sub(1)),
        cd_version: boot.cd.cd_version.clone(),
        kernel_release: other_kernel.clone().unwrap_or(kernel_release.clone()),
        server_urls: server_urls(&boot.cd, boot.node.as_ref().map(|f| &f.config))
            .iter()
            .map(|u| u.to_string())
            .collect(),
        clock_floor: boot.cd.build_time,
    };
    // The installed system talks to the server with the CD's CA; refresh
    // its copy on every boot (the CD is the root of trust).
    if let Ok(ca) = std::fs::read(CD_CA) {
        if let Err(e) = floor::durable::write_atomic(&disk.trust_dir().join("ca.pem"), &ca) {
            tracing::warn!("could not copy the CA for the installed system: {e:#}");
        }
    }
    if let Some(release) = other_kernel {
        let image = kernel_dir.join("vmlinuz");
        let current = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let cmdline = kexec::next_cmdline(&current, record.id.as_str());
        match kexec::load(&image, &kernel_dir, &release, &note, &cmdline) {
            Ok(size) => {
                console::step(
                    "boot/handover",
                    StepStatus::Ok,
                    &format!(
                        "kexec kernel={release} initramfs={size} deployment={} os={}",
                        record.id, record.os_version
                    ),
                );
                console::detach_log_file();
                drop(mounted);
                nix::unistd::sync();
                let error = match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_KEXEC) {
                    Ok(never) => match never {},
                    Err(e) => anyhow!("starting the loaded kernel: {e}"),
                };
                console::step("boot/handover", StepStatus::Fail, &format!("{error:#}"));
                return Err(Failure {
                    step: "boot/handover",
                    error,
                });
            }
            Err(e) => {
                tracing::warn!(
                    "{e:#}; handing over with the CD's kernel ({kernel_release}) instead: the deployment's modules ({release}) will not load"
                );
                note.kernel_release = kernel_release;
            }
        }
    }
    hand_over(mounted, &disk, &record, &note)
}

/// `switch_root` into `record`, leaving the partition mounted for the
/// installed system; returns only on failure.
fn hand_over(
    mounted: Mounted,
    disk: &Disk,
    record: &deploy::DeploymentRecord,
    note: &Handover,
) -> Result<std::convert::Infallible, Failure> {
    std::mem::forget(mounted);
    let error = switch_root::switch_root(disk, record, note);
    console::step("boot/handover", StepStatus::Fail, &format!("{error:#}"));
    Err(Failure {
        step: "boot/handover",
        error,
    })
}

/// In the deployment's own kernel, started by the CD with kexec: the
/// deployment was chosen and checked before, so mount the disk and hand
/// over to it. No network, no check-in: the installed system does those.
fn continue_after_kexec(id: &str) -> Result<std::convert::Infallible, Failure> {
    let fail = |error: anyhow::Error| {
        console::step("boot/kexec", StepStatus::Fail, &format!("{error:#}"));
        Failure {
            step: "boot/kexec",
            error,
        }
    };
    console::step("boot/kexec", StepStatus::Start, id);
    let note: Handover = std::fs::read(kexec::KEXEC_NOTE)
        .with_context(|| format!("reading {}", kexec::KEXEC_NOTE))
        .and_then(|b| {
            serde_json::from_slice(&b).with_context(|| format!("parsing {}", kexec::KEXEC_NOTE))
        })
        .map_err(fail)?;
    let (mounted, disk) = mount_installed().map_err(fail)?;
    let current = disk.link("current").map_err(fail)?;
    if note.deployment != id || current.as_ref().map(|c| c.as_str()) != Some(id) {
        return Err(fail(anyhow!(
            "asked to hand over to {id}, but the note names {} and the disk's current deployment is {}",
            note.deployment,
            current.map(|c| c.to_string()).unwrap_or_else(|| "none".into())
        )));
    }
    let record = disk
        .record(&deploy::DeploymentId::new(id).map_err(|e| fail(e.into()))?)
        .map_err(fail)?;
    console::step(
        "boot/kexec",
        StepStatus::Ok,
        &format!("kernel={} deployment={id}", note.kernel_release),
    );
    hand_over(mounted, &disk, &record, &note)
}

fn installed_packages(record: &deploy::DeploymentRecord) -> Vec<InstalledPackage> {
    record
        .packages
        .iter()
        .map(|p| InstalledPackage {
            name: p.name.clone(),
            version: p.version.clone(),
            sha256: p.sha256.clone(),
        })
        .collect()
}

/// Sends a hello as an unregistered node and waits, bounded, for a config
/// to appear (a USB stick inserted, a CD swapped).
fn unregistered(boot: &Boot) -> Stop {
    let ca = std::fs::read(CD_CA).unwrap_or_default();
    let floor = boot.cd.build_time.to_system_time();
    const ROUNDS: u32 = 20;
    for round in 1..=ROUNDS {
        if let Ok(mut client) =
            ServerClient::new(&ca, boot.cd.server_urls.clone(), None, floor, None)
        {
            let hello = HelloRequest {
                bootcd_version: Some(boot.cd.cd_version.clone()),
                hardware: crate::hardware::summary(),
            };
            match client.post::<_, HelloResponse>(paths::HELLO, &hello) {
                Ok(r) => console::line(&format!("boot server says: {}", r.message)),
                Err(e) => console::line(&format!(
                    "could not announce this node to the boot server: {e}"
                )),
            }
        }
        console::line(&format!("no node config (attempt {round}/{ROUNDS}): register this node and put its config on the CD or a USB stick labelled {}; looking again in 30 s", config_discovery::CONFIG_LABEL));
        std::thread::sleep(Duration::from_secs(30));
        if let Ok(Some(found)) = config_discovery::discover(&boot.cmdline) {
            return Stop::Reboot(format!(
                "a node config appeared on {}: rebooting to use it",
                found.source
            ));
        }
    }
    Stop::Failed(Failure {
        step: "config",
        error: anyhow!("no node config found after {ROUNDS} attempts: this node is not registered"),
    })
}

fn sequence(boot: &mut Boot) -> Result<std::convert::Infallible, Stop> {
    step("modules", load_modules)?;
    if let Some(id) = boot.cmdline.handover.clone() {
        let Err(failure) = continue_after_kexec(&id);
        return Err(failure.into());
    }
    let found = match find_config(&boot.cmdline) {
        Ok(f) => f,
        Err(failure) => {
            // Still bring the network up so debug has ssh and the failure can be announced.
            boot.network = bring_up_network(None).ok();
            return Err(failure.into());
        }
    };
    boot.node = found;
    let node = boot.node.as_ref().map(|f| f.config.clone());
    boot.network = Some(bring_up_network(node.as_ref())?);

    let floor = boot.cd.build_time.to_system_time();
    step("clock", || {
        let adj = clock::apply_floor(floor)?;
        Ok((
            (),
            format!("{adj} floor={} (CD build time)", boot.cd.build_time),
        ))
    })?;

    let Some(node) = node else {
        return Err(unregistered(boot));
    };
    let ca = step("trust", || {
        let ca = std::fs::read(CD_CA).with_context(|| format!("reading the CD's CA {CD_CA}"))?;
        Ok((ca, "CA and root metadata from the signed CD".to_string()))
    })?;
    let urls = server_urls(&boot.cd, Some(&node));
    let client = ServerClient::new(
        &ca,
        urls,
        node.proxy.clone(),
        floor,
        Some((node.node_id, node.key.clone())),
    )
    .map_err(|error| Failure {
        step: "tls",
        error: error.into(),
    })?;
    let http = client.http().clone();
    let server = Arc::new(Mutex::new(client));
    let reporter = Reporter::start(server.clone());
    boot.reporter = Some(reporter.clone());

    let request = checkin_request(boot, &node, RunLevel::Bootcd, None, None);
    let response = checkin(&server, &request, true)?;
    boot.last_state = Some(response.boot_state);
    boot.staff_keys = response.debug_ssh_keys.clone();
    console::step(
        "checkin",
        StepStatus::Ok,
        &format!("state={} host={}", response.boot_state, response.hostname),
    );
    reporter.progress("checkin", None, format!("state {}", response.boot_state));

    match response.boot_state {
        BootState::Reinstall => {
            let started = Instant::now();
            let repo_base = crate::boot_server::repo_base(
                server
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .current_url(),
            );
            let text = boot
                .node
                .as_ref()
                .map(|f| f.disk_text())
                .unwrap_or_default();
            let inputs = reinstall::Inputs {
                repo_base,
                client: http,
                node_config_text: &text,
                preferred_disk: boot.cmdline.disk.as_deref(),
                reporter: &reporter,
            };
            let installed = reinstall::run(&inputs)?;
            let report = InstallReport {
                os_version: installed.record.os_version.clone(),
                deployment: installed.record.id.to_string(),
                packages: installed_packages(&installed.record),
                install_secs: started.elapsed().as_secs(),
            };
            match server
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .post::<_, CheckinResponse>(paths::INSTALLED, &report)
            {
                Ok(r) => console::line(&format!(
                    "the boot server recorded the install; state is now {}",
                    r.boot_state
                )),
                Err(e) => console::line(&format!(
                    "could not tell the boot server the install is done: {e}"
                )),
            }
            Err(
                boot_installed(boot, &reporter, Some((installed.mounted, installed.disk)))
                    .unwrap_err()
                    .into(),
            )
        }
        BootState::Boot => Err(boot_installed(boot, &reporter, None).unwrap_err().into()),
        other => Err(Stop::Asked(other)),
    }
}

/// How long to wait between check-ins while in debug or disabled.
const IDLE_CHECKIN: Duration = Duration::from_secs(60);

/// Stays in `debug` or `disabled`, checking in; reboots when the admins
/// change the node's state (the server's state wins).
fn idle_until_state_changes(
    boot: &Boot,
    run_level: RunLevel,
    state_at_entry: Option<BootState>,
) -> ! {
    let node = boot.node.as_ref().map(|f| f.config.clone());
    let ca = std::fs::read(CD_CA).unwrap_or_default();
    let floor = boot.cd.build_time.to_system_time();
    let started = Instant::now();
    loop {
        std::thread::sleep(IDLE_CHECKIN);
        let Some(node) = &node else { continue };
        let Ok(client) = ServerClient::new(
            &ca,
            server_urls(&boot.cd, Some(node)),
            node.proxy.clone(),
            floor,
            Some((node.node_id, node.key.clone())),
        ) else {
            continue;
        };
        let server = Mutex::new(client);
        let request = checkin_request(boot, node, run_level, None, None);
        let Ok(resp) = checkin(&server, &request, false) else {
            continue;
        };
        if run_level == RunLevel::Debug {
            let _ = crate::staff_keys::install(Path::new("/"), &resp.debug_ssh_keys);
        }
        let wanted = resp.boot_state;
        let changed = Some(wanted) != state_at_entry;
        let acts = matches!(wanted, BootState::Boot | BootState::Reinstall);
        // After a failure, retry the same state only after an hour, so a
        // broken repository does not make the node reboot in a loop.
        if acts && (changed || started.elapsed() > Duration::from_secs(3600)) {
            console::line(&format!("the boot server now wants `{wanted}`: rebooting"));
            console::detach_log_file();
            let e = pid1::shutdown(pid1::Shutdown::Reboot);
            console::line(&format!("{e:#}"));
        }
    }
}

/// PID 1's entry point on the CD. Never returns.
pub fn run_as_pid1() -> ! {
    pid1::install_panic_hook();
    let mounted = pid1::mount_early();
    console::init(console::Output::Devices);
    proc::start_reaper();
    match &mounted {
        Ok(()) => console::step("mounts", StepStatus::Ok, ""),
        Err(e) => console::step("mounts", StepStatus::Fail, &format!("{e:#}")),
    }
    let cd = match CdInfo::load(Path::new(CD_INFO)) {
        Ok(cd) => cd,
        Err(e) => {
            console::banner(crate::VERSION, "unknown");
            debug::console_shell_forever(&format!("this CD is damaged: {e}"));
        }
    };
    console::banner(crate::VERSION, &cd.cd_version);
    let cmdline = Cmdline::read();
    for w in &cmdline.warnings {
        tracing::warn!("{w}");
    }
    let mut boot = Boot {
        cd,
        cmdline,
        node: None,
        network: None,
        reporter: None,
        last_state: None,
        staff_keys: Vec::new(),
        started: Instant::now(),
    };
    if boot.cmdline.debug {
        console::step(
            "debug",
            StepStatus::Start,
            "plnode.debug on the kernel command line",
        );
        debug::console_shell_forever("asked for on the kernel command line");
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sequence(&mut boot)));
    let (run_level, reason) = match outcome {
        Ok(Ok(never)) => match never {},
        Ok(Err(Stop::Asked(BootState::Disabled))) => (
            RunLevel::Disabled,
            "the boot server has disabled this node".to_string(),
        ),
        Ok(Err(Stop::Asked(_))) => (
            RunLevel::Debug,
            "the boot server asked for debug".to_string(),
        ),
        Ok(Err(Stop::Reboot(why))) => {
            console::line(&why);
            let e = pid1::shutdown(pid1::Shutdown::Reboot);
            (RunLevel::Debug, format!("{why}, but {e:#}"))
        }
        Ok(Err(Stop::Failed(f))) => {
            let reason = format!("step {} failed: {:#}", f.step, f.error);
            if let Some(r) = &boot.reporter {
                r.failure(f.step, &format!("{:#}", f.error), RunLevel::Debug);
            }
            (RunLevel::Debug, reason)
        }
        Err(_) => {
            let reason = "the boot manager panicked (see the @panic line above)".to_string();
            if let Some(r) = &boot.reporter {
                r.failure("panic", &reason, RunLevel::Debug);
            }
            (RunLevel::Debug, reason)
        }
    };
    let state_now = boot.last_state;
    if run_level == RunLevel::Disabled {
        console::step("disabled", StepStatus::Start, &reason);
        console::line("disabled: this node stays idle and checks in every minute; it reboots when the admins change its state");
    } else {
        console::step("debug", StepStatus::Start, &reason);
        if boot.network.is_some() {
            debug::start_ssh(&boot.staff_keys);
        }
    }
    // The shell runs beside the check-in loop.
    let _ = std::thread::Builder::new()
        .name("idle-checkin".into())
        .spawn({
            let cd = boot.cd.clone();
            let cmdline = boot.cmdline.clone();
            let node = boot.node.take();
            move || {
                let b = Boot {
                    cd,
                    cmdline,
                    node,
                    network: None,
                    reporter: None,
                    last_state: state_now,
                    staff_keys: Vec::new(),
                    started: Instant::now(),
                };
                idle_until_state_changes(&b, run_level, state_now)
            }
        });
    debug::console_shell_forever(&reason)
}
