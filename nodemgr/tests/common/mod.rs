//! What the sliver tests share: a busybox reference root built with
//! mkimage, a cgroup directory of the test's own (removed on drop), and a
//! node manager over temporary directories.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use nodemgr::settings::Settings;
use nodemgr::storage::SliversFs;
use nodemgr::NodeManager;

/// The nodemgr binary (its `main` runs the sliver helpers).
pub const NODEMGR: &str = env!("CARGO_BIN_EXE_nodemgr");

/// Why the sliver tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if cgroup2_root().is_none() {
        return Some("no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("no /bin/busybox (apt-get install busybox-static)".into());
    }
    if fs::read_to_string("/proc/sys/user/max_user_namespaces").is_ok_and(|s| s.trim() == "0") {
        return Some("user namespaces are disabled".into());
    }
    None
}

/// Skips the calling test (prints why) when slivers cannot run here.
#[macro_export]
macro_rules! need_slivers {
    () => {
        if let Some(why) = common::unavailable() {
            eprintln!("SKIP: {why}");
            return;
        }
    };
}

/// The host's cgroup2 mount: pure v2, or the `unified` one of a hybrid host.
pub fn cgroup2_root() -> Option<PathBuf> {
    floor::cgroup::cgroup2_mount()
}

/// A busybox reference root (mkimage's `sliver-ref`, busybox flavour)
/// plus iproute2's `tc` with its libraries. Built once into the temporary
/// directory (renamed into place, so concurrent test processes share it)
/// and reused by later runs.
pub fn reference_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join("nodemgr-test-ref-v1");
        if dir.join("bin/sh").exists() {
            return dir;
        }
        let spec = mkimage::spec::SliverRefSpec {
            version: None,
            flavour: mkimage::spec::SliverFlavour::Busybox,
            suite: String::new(),
            mirror: String::new(),
            busybox: "/bin/busybox".into(),
        };
        let mut package = mkimage::packages::sliver_ref_package(&spec, "test")
            .expect("sliver-ref")
            .expect("busybox flavour is never skipped");
        if Path::new("/usr/sbin/tc").exists() {
            mkimage::elf::add_program(&mut package.tree, "usr/sbin/tc", Path::new("/usr/sbin/tc"))
                .expect("tc");
        }
        let tar = mkimage::archive::write_tar(
            &package.tree,
            Vec::new(),
            mkimage::Mtime(1_795_000_000),
            &indicatif::ProgressBar::hidden(),
        )
        .expect("tar");
        let tmp = tempfile::Builder::new()
            .prefix("nodemgr-test-ref-")
            .tempdir()
            .expect("tempdir");
        let mut archive = tar::Archive::new(&tar[..]);
        archive.set_preserve_permissions(true);
        archive.unpack(tmp.path()).expect("unpacking sliver-ref");
        // Another test process may have won the race: use its root.
        let kept = tmp.keep();
        if fs::rename(&kept, &dir).is_err() {
            let _ = fs::remove_dir_all(&kept);
        }
        dir
    })
}

/// A node manager over temporary directories and a test cgroup.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub cgroup: floor::cgroup::ScratchCgroup,
    pub settings: Settings,
    pub manager: NodeManager,
}

impl Node {
    pub fn new() -> Node {
        let dir = tempfile::Builder::new()
            .prefix("nodemgr-test-")
            .tempdir()
            .expect("tempdir");
        let cgroup = floor::cgroup::ScratchCgroup::new("plnode-test").expect("test cgroup");
        let fs_dir = dir.path().join("fs");
        fs::create_dir(&fs_dir).unwrap();
        let mut settings = Settings::node();
        settings.state_dir = dir.path().join("state");
        settings.run_dir = dir.path().join("run");
        settings.cgroup_root = cgroup.path().to_path_buf();
        settings.reference_root = reference_root().to_path_buf();
        settings.slivers_fs = SliversFs::Dir(fs_dir);
        settings.helper_program = NODEMGR.into();
        settings.require_limits = false;
        settings.require_quota = false;
        let manager = NodeManager::open(settings.clone()).expect("open");
        Node {
            dir,
            cgroup,
            settings,
            manager,
        }
    }

    /// The CLI's options for this node.
    pub fn cli_args(&self) -> Vec<String> {
        let s = &self.settings;
        let mut v = vec![
            "--state-dir".to_string(),
            s.state_dir.display().to_string(),
            "--run-dir".into(),
            s.run_dir.display().to_string(),
            "--cgroup-root".into(),
            s.cgroup_root.display().to_string(),
            "--reference-root".into(),
            s.reference_root.display().to_string(),
            "--slivers-dir".into(),
            s.slivers_fs.root().display().to_string(),
        ];
        if !s.require_limits {
            v.push("--allow-unlimited".into());
        }
        if !s.require_quota {
            v.push("--allow-no-quota".into());
        }
        v
    }

    /// Runs `nodemgr ARGS` for this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(NODEMGR)
            .args(self.cli_args())
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("running nodemgr")
    }

    /// Runs a shell script inside a sliver (as root inside); exit code,
    /// stdout, stderr.
    pub fn sh(&self, slice: &str, script: &str) -> (i32, String, String) {
        let out = self.cli(&["enter", slice, "--", "/bin/sh", "-c", script]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

pub fn name(s: &str) -> nodemgr::SliceName {
    nodemgr::SliceName::new(s).unwrap()
}

/// Every line of the host's mount table that mentions `needle`.
pub fn host_mounts_with(needle: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Serves the node manager's API for `service` on its socket, from a
/// runtime of its own, until the test process ends.
pub fn start_api(service: &nodemgr::service::Service) {
    let service = service.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = nodemgr::serve::open_api_socket(&service, None).expect("the API socket");
            tx.send(()).expect("the test waits");
            nodemgr::api::serve(service, listener, std::future::pending()).await;
        });
    });
    rx.recv().expect("the API thread started");
}
