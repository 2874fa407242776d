//! Slivers: create+start and stop+delete latency (p50, p99) with 0, 100
//! and 1,000 slivers already running, disk and memory per idle sliver, and
//! `crun` starting the same root file system as an OCI bundle (user, PID,
//! mount, IPC, UTS and cgroup namespaces, the host's network) in the same
//! run. Root only; uses the host's cgroup2 hierarchy (a directory of its
//! own, removed at the end).
//!
//! `cargo run -p bench --bin sliver -- --help`

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use nodemgr::settings::Settings;
use nodemgr::storage::SliversFs;
use nodemgr::{AuthorizedKeys, NodeManager, SliceName};

#[derive(Parser)]
#[command(about = "Sliver create/start/stop/delete latency and idle cost, against crun")]
struct Args {
    /// Measured create+start / stop+delete cycles per population.
    #[arg(long, default_value_t = 50)]
    trials: usize,
    /// Slivers already running while measuring (comma-separated).
    #[arg(long, default_value = "0,100,1000", value_delimiter = ',')]
    present: Vec<usize>,
    /// The nodemgr binary for the command-line figures and the slivers'
    /// PID 1 (default: the static node build,
    /// target/x86_64-unknown-linux-musl/node/nodemgr).
    #[arg(long)]
    nodemgr: Option<PathBuf>,
}

fn main() -> ExitCode {
    // The slivers' PID 1 and helpers are this program (see nodemgr::helper_main).
    if let Some(code) = nodemgr::helper_main() {
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sliver: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A file system of the bench's own (an ext4 image, loop-mounted) for
/// the state and the slivers' writable layers, as a node has its own
/// partition: overlayfs syncs its upper file system when a sliver's mount
/// namespace goes, and the build host's shared disk would make that sync
/// (and every fsync) wait for other work. Unmounted on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(dir: &Path) -> anyhow::Result<Scratch> {
        let image = dir.join("slivers.img");
        fs::File::create(&image)?.set_len(4 << 30)?;
        let ok = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4"])
            .arg(&image)
            .status()?
            .success();
        if !ok {
            bail!("mke2fs failed");
        }
        let mount_point = dir.join("disk");
        fs::create_dir(&mount_point)?;
        let ok = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount_point)
            .status()?
            .success();
        if !ok {
            bail!("mounting the bench's ext4 image failed");
        }
        Ok(Scratch(mount_point))
    }
}

impl Scratch {
    /// A tmpfs instead: no disk syncs at all (the cost of durable state
    /// and of overlayfs's sync at unmount, by difference).
    fn tmpfs(dir: &Path) -> anyhow::Result<Scratch> {
        let mount_point = dir.join("ram");
        fs::create_dir(&mount_point)?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2g", "bench-slivers"])
            .arg(&mount_point)
            .status()?
            .success();
        if !ok {
            bail!("mounting a tmpfs failed");
        }
        Ok(Scratch(mount_point))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// On a hybrid host (v1 controllers, v2 at `unified`) crun refuses to run
/// at all. Each crun command therefore starts in a mount namespace of its
/// own where the v2 hierarchy is mounted at `/sys/fs/cgroup`, as on a
/// node (two system calls before exec; the host's mounts are untouched).
fn crun_command(hybrid: bool) -> Command {
    let mut cmd = Command::new("crun");
    if hybrid {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure makes raw system calls only (async-signal-safe).
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    || libc::mount(
                        c"cgroup2".as_ptr(),
                        c"/sys/fs/cgroup".as_ptr(),
                        c"cgroup2".as_ptr(),
                        0,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd
}

struct Figures {
    start: Vec<f64>,
    stop: Vec<f64>,
}

impl Figures {
    fn summary(mut self) -> (f64, f64, f64, f64) {
        self.start.sort_by(f64::total_cmp);
        self.stop.sort_by(f64::total_cmp);
        (
            bench::percentile(&self.start, 0.5).unwrap_or(f64::NAN),
            bench::percentile(&self.start, 0.99).unwrap_or(f64::NAN),
            bench::percentile(&self.stop, 0.5).unwrap_or(f64::NAN),
            bench::percentile(&self.stop, 0.99).unwrap_or(f64::NAN),
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn library_cycles(m: &NodeManager, trials: usize) -> anyhow::Result<Figures> {
    let slice = SliceName::new("pl_probe")?;
    let rspec = config::rspec::Rspec::default();
    let keys = AuthorizedKeys::default();
    let mut f = Figures {
        start: Vec::new(),
        stop: Vec::new(),
    };
    for _ in 0..trials {
        let t = Instant::now();
        m.create_and_start(&slice, &rspec, &keys)?;
        f.start.push(ms(t.elapsed()));
        let t = Instant::now();
        m.delete(&slice)?;
        f.stop.push(ms(t.elapsed()));
    }
    Ok(f)
}

fn cli_cycles(
    nodemgr: &Path,
    cli: &[String],
    rspec: &Path,
    trials: usize,
) -> anyhow::Result<Figures> {
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new(nodemgr)
            .args(cli)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "nodemgr {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    let rspec = rspec.display().to_string();
    let mut f = Figures {
        start: Vec::new(),
        stop: Vec::new(),
    };
    for _ in 0..trials {
        let t = Instant::now();
        run(&["create", "pl_cli", "--rspec", &rspec, "--start"])?;
        f.start.push(ms(t.elapsed()));
        let t = Instant::now();
        run(&["delete", "pl_cli"])?;
        f.stop.push(ms(t.elapsed()));
    }
    Ok(f)
}

/// An OCI bundle for crun: the same root, the same namespaces (user with a
/// 65,536-id mapping, PID, mount, IPC, UTS, cgroup; the host's network),
/// `/proc`, a read-only `/sys`, `/dev` with a devpts, a `/tmp`.
fn crun_bundle(dir: &Path, rootfs: &Path) -> anyhow::Result<PathBuf> {
    let bundle = dir.join("bundle");
    fs::create_dir_all(&bundle)?;
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sleep", "100000"],
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": {"path": rootfs.display().to_string(), "readonly": true},
        "hostname": "sliver",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]}
        ],
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": 3_000_000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 3_000_000, "size": 65536}],
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "cgroup"}, {"type": "user"}
            ]
        }
    });
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config)?,
    )?;
    Ok(bundle)
}

fn crun_cycles(state: &Path, bundle: &Path, trials: usize) -> anyhow::Result<Figures> {
    let hybrid = !Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let crun = |args: &[&str]| -> anyhow::Result<()> {
        // crun's cgroup manager is off: it would otherwise write into this
        // host's cgroup v1 hierarchies (nodemgr makes a cgroup2 group).
        // Not pipes: the container's process would hold them open.
        let errors = state.with_extension("stderr");
        let status = crun_command(hybrid)
            .arg("--root")
            .arg(state)
            .arg("--cgroup-manager=disabled")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&errors)?)
            .status()?;
        if !status.success() {
            bail!(
                "crun {args:?}: {}",
                fs::read_to_string(&errors).unwrap_or_default().trim()
            );
        }
        Ok(())
    };
    let bundle = bundle.display().to_string();
    let mut f = Figures {
        start: Vec::new(),
        stop: Vec::new(),
    };
    for i in 0..trials {
        let id = format!("probe{i}");
        let t = Instant::now();
        crun(&["run", "--detach", "--bundle", &bundle, &id])?;
        f.start.push(ms(t.elapsed()));
        let t = Instant::now();
        crun(&["kill", &id, "KILL"])?;
        // `delete` refuses a container whose process has not ended yet.
        let deadline = Instant::now() + Duration::from_secs(10);
        while crun(&["delete", &id]).is_err() {
            if Instant::now() > deadline {
                bail!("crun could not delete {id}");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        f.stop.push(ms(t.elapsed()));
    }
    Ok(f)
}

/// Kernel memory that slivers add (slab objects: namespaces, mounts,
/// inodes, dentries; kernel stacks; page tables), from /proc/meminfo.
/// Other work on the machine moves it too: a rough figure.
fn kernel_kib() -> u64 {
    let Ok(m) = fs::read_to_string("/proc/meminfo") else {
        return 0;
    };
    m.lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(':')?;
            ["Slab", "KernelStack", "PageTables"]
                .contains(&key)
                .then(|| {
                    value
                        .trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .flatten()
        })
        .sum()
}

fn pss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Pss:")
                    .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn row(what: &str, f: (f64, f64, f64, f64)) {
    println!(
        "  {what:<34} create+start p50 {:>7.2} ms  p99 {:>7.2} ms   stop+delete p50 {:>7.2} ms  p99 {:>7.2} ms",
        f.0, f.1, f.2, f.3
    );
}

fn run(args: &Args) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root (namespaces, id maps, cgroups)");
    }
    let work = tempfile::Builder::new().prefix("bench-sliver-").tempdir()?;
    let cgroup =
        floor::cgroup::ScratchCgroup::new("plnode-bench").context("making the bench's cgroup")?;
    let reference = bench::busybox_sliver_ref(work.path())?;
    let scratch = Scratch::new(work.path())?;
    let fs_dir = scratch.0.join("fs");
    fs::create_dir(&fs_dir)?;
    let mut settings = Settings::node();
    settings.state_dir = scratch.0.join("state");
    settings.run_dir = work.path().join("run");
    settings.cgroup_root = cgroup.path().to_path_buf();
    settings.reference_root = reference.clone();
    settings.slivers_fs = SliversFs::Dir(fs_dir.clone());
    // The node's nodemgr (static, stripped) runs as the slivers' PID 1
    // when it is there; else this program does.
    let node_binary = args.nodemgr.clone().or_else(|| {
        let p = qemu_tests::artifacts::target_dir().join("x86_64-unknown-linux-musl/node/nodemgr");
        p.is_file().then_some(p)
    });
    settings.helper_program = match &node_binary {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    settings.require_limits = false;
    settings.require_quota = false;
    let manager = NodeManager::open(settings.clone())?;
    let ram = Scratch::tmpfs(work.path())?;
    let mut ram_settings = settings.clone();
    ram_settings.state_dir = ram.0.join("state");
    ram_settings.run_dir = ram.0.join("run");
    ram_settings.slivers_fs = SliversFs::Dir(ram.0.clone());
    let ram_manager = NodeManager::open(ram_settings)?;
    let rspec_file = work.path().join("rspec.toml");
    fs::write(&rspec_file, "cpu_share = 1\n")?;

    let nodemgr_bin = node_binary.clone();
    let cli_args: Vec<String> = vec![
        "--state-dir".into(),
        settings.state_dir.display().to_string(),
        "--run-dir".into(),
        settings.run_dir.display().to_string(),
        "--cgroup-root".into(),
        settings.cgroup_root.display().to_string(),
        "--reference-root".into(),
        reference.display().to_string(),
        "--slivers-dir".into(),
        fs_dir.display().to_string(),
        "--allow-unlimited".into(),
        "--allow-no-quota".into(),
    ];
    let crun_ok = Command::new("crun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let crun_state = work.path().join("crun-state");
    let bundle = crun_bundle(work.path(), &reference)?;

    println!(
        "slivers on {} (cgroup2 at {}), {} trials per row",
        std::env::consts::ARCH,
        cgroup.path().display(),
        args.trials
    );
    // What one durable file write costs on the state's disk right now:
    // create+start makes two (id table, state file), stop+delete two and a
    // removal.
    let probe = scratch.0.join("fsync-probe");
    let mut writes: Vec<f64> = (0..20)
        .map(|i| {
            let t = Instant::now();
            floor::durable::write_atomic(&probe, format!("{i}").as_bytes())
                .map(|()| ms(t.elapsed()))
        })
        .collect::<Result<_, _>>()?;
    writes.sort_by(f64::total_cmp);
    println!(
        "one durable write (floor::durable::write_atomic: fsync file and directory) on the state's disk: p50 {:.2} ms",
        bench::percentile(&writes, 0.5).unwrap_or(f64::NAN)
    );
    let mut present = 0usize;
    let mut background_pids = Vec::new();
    let rspec = config::rspec::Rspec::default();
    let keys = AuthorizedKeys::default();
    let mut first_batch = None;
    for &target in &args.present {
        let kernel_before = kernel_kib();
        let before = present;
        let made = Instant::now();
        while present < target {
            let s = SliceName::new(&format!("pl_idle_{present}"))?;
            background_pids.push(manager.create_and_start(&s, &rspec, &keys)?.1.pid);
            present += 1;
        }
        if first_batch.is_none() && present > before {
            let took = made.elapsed();
            // Let the new slivers' pages settle before reading meminfo.
            std::thread::sleep(Duration::from_millis(500));
            let drop = kernel_kib().saturating_sub(kernel_before);
            first_batch = Some((drop, present - before, took));
        }
        println!("{target} slivers present:");
        let lib = library_cycles(&manager, args.trials)?.summary();
        row("nodemgr (library call)", lib);
        let ram = library_cycles(&ram_manager, args.trials)?.summary();
        row("nodemgr (library, state on tmpfs)", ram);
        let cli = match &nodemgr_bin {
            Some(bin) => {
                let f = cli_cycles(bin, &cli_args, &rspec_file, args.trials)?.summary();
                row("nodemgr (command line)", f);
                Some(f)
            }
            None => {
                println!("  nodemgr (command line): no static nodemgr (cargo build -p nodemgr --profile node --target x86_64-unknown-linux-musl, or --nodemgr PATH)");
                None
            }
        };
        if crun_ok {
            let c = crun_cycles(&crun_state, &bundle, args.trials)?.summary();
            row("crun run --detach / kill+delete", c);
            let mut ratios = vec![("library", lib), ("library, state on tmpfs", ram)];
            if let Some(cli) = cli {
                ratios.push(("command line", cli));
            }
            for (what, ours) in ratios {
                println!(
                    "  crun / nodemgr ({what}): create+start {:.1}x, stop+delete {:.1}x (p50)",
                    c.0 / ours.0,
                    c.2 / ours.2
                );
            }
        } else {
            println!("  crun: not installed (apt-get install crun)");
        }
    }

    if present > 0 {
        let disk = nodemgr::storage::disk_usage(&fs_dir);
        let pss: u64 = background_pids.iter().map(|&p| pss_kib(p)).sum();
        println!("idle cost over {present} running slivers:");
        println!(
            "  disk (writable layers)             {:>8.1} KiB per sliver",
            disk as f64 / 1024.0 / present as f64
        );
        println!(
            "  memory, PID 1 proportional set      {:>8.1} KiB per sliver",
            pss as f64 / present as f64
        );
        if let Some((drop, count, took)) = first_batch {
            println!(
                "  memory, kernel (slab, stacks, page tables) {:>8.1} KiB per sliver ({count} slivers made in {:.2} s)",
                drop as f64 / count as f64,
                took.as_secs_f64()
            );
        }
    }
    for i in 0..present {
        let s = SliceName::new(&format!("pl_idle_{i}"))?;
        manager.delete(&s)?;
    }
    drop(scratch);
    drop(ram);
    Ok(())
}
