//! What runs inside a sliver's namespaces: its PID 1 (`plnode-sliver-init`)
//! and the helper that `enter` starts (`plnode-sliver-enter`).
//!
//! Both are the nodemgr program itself, exec'd under another `argv[0]`
//! ([`helper_main`] dispatches): a fresh, single-threaded process, so it
//! may allocate, join namespaces and fork, none of which is safe in the
//! child of a multi-threaded caller before exec. They talk to the host side
//! over a socket on fd 3 (JSON messages, descriptors as `SCM_RIGHTS`).
//!
//! The sliver's PID 1 builds the sliver's root itself, as root of the
//! sliver's user namespace:
//!
//! 1. attaches the id-mapped reference root (made by the host side with
//!    `open_tree` + `mount_setattr(MOUNT_ATTR_IDMAP)`) in its own mount
//!    namespace,
//! 2. mounts the overlay (lower: that mount, upper/work: the sliver's
//!    directories on the slivers' file system, `userxattr`),
//! 3. mounts `/proc`, a read-only `/sys`, a minimal `/dev` with a new devpts
//!    instance, a size-limited `/tmp`, pivots into the root and detaches
//!    the host's,
//! 4. writes the slice's user, keys, `PlanetLab-control/resources` and
//!    `/etc/plnode/lease`,
//! 5. reports success and reaps orphans for as long as the sliver lives.
//!
//! Why the sliver's own root mounts the overlay: overlayfs does every
//! write to the upper layer with the credentials of whoever *created* the
//! overlay mount. Created by host root, those credentials carry
//! `CAP_SYS_RESOURCE` in the initial user namespace, which lets ext4
//! ignore quota limits, so the sliver could fill the disk past its quota.
//! Created here, the credentials are those of the sliver's root: no
//! capability outside its user namespace, and the project quota holds.

use std::ffi::CString;
use std::fs;
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

use crate::sys;

/// `argv[0]` of a sliver's PID 1.
pub const INIT_NAME: &str = "plnode-sliver-init";
/// `argv[0]` of the `enter` helper.
pub const ENTER_NAME: &str = "plnode-sliver-enter";
/// The descriptor of the socket to the host side in a helper.
pub const SOCKET_FD: RawFd = 3;
/// Largest message on that socket.
pub const MAX_MESSAGE: usize = 256 * 1024;
/// The slice's user id (and group id) inside its sliver.
pub const SLICE_UID: u32 = 1000;

/// What the sliver's PID 1 sets up (sent by the host side).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitPlan {
    /// The slice (its user's name inside).
    pub slice: String,
    /// Where the id-mapped reference root is attached (an empty directory
    /// under the run directory; the attachment exists only in the
    /// sliver's mount namespace).
    pub lower: PathBuf,
    /// Where the overlay is mounted before the sliver pivots into it.
    pub root: PathBuf,
    /// The overlay's upper directory.
    pub upper: PathBuf,
    /// The overlay's work directory.
    pub work: PathBuf,
    /// Bytes of the sliver's `/tmp` and `/dev/shm` (each).
    pub tmp_size: u64,
    /// A host directory bound read-only at `/run/plnode/api` inside (the
    /// node manager's API socket lives there; `/run/plnode/nodemgr.sock`
    /// inside links to it). A directory, not the socket itself, so that a
    /// restarted node manager's new socket shows up in running slivers.
    #[serde(default)]
    pub api_dir: Option<PathBuf>,
    /// The files the node keeps current inside.
    pub files: SliceFiles,
}

/// The files the node writes into a sliver (as root inside) at every start
/// and whenever they change: the slice users' keys, the Phase 0 spec's
/// `PlanetLab-control/resources`, the lease, the server's initscript.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceFiles {
    /// `authorized_keys` of the slice's user.
    pub authorized_keys: String,
    /// Content of `~/PlanetLab-control/resources`.
    pub resources: String,
    /// Content of `/etc/plnode/lease`.
    pub lease: String,
    /// The server's initscript (`/etc/plnode/initscript`, mode 0700),
    /// when the slice has one.
    #[serde(default)]
    pub initscript: Option<String>,
}

/// Where the initscript is written inside a sliver.
pub const INITSCRIPT_PATH: &str = "/etc/plnode/initscript";

/// How the node runs a script inside a sliver (the server's initscript,
/// the `PlanetLab-control` scripts): no terminal, stdin from `/dev/null`,
/// stderr discarded, stdout discarded or captured, the script and what it
/// left in its process group killed after the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptRun {
    /// Seconds before the script is killed.
    pub timeout_secs: u64,
    /// Capture up to this many bytes of stdout (else it is discarded).
    pub capture: Option<usize>,
    /// A missing program is not an error: the run is reported skipped.
    pub skip_if_missing: bool,
}

/// How a script run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// It exited with this code (128 + N for signal N).
    Exited(i32),
    /// It ran past its timeout and was killed.
    TimedOut,
    /// The program does not exist.
    Skipped,
}

/// What a script run gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// How it ended.
    pub status: RunStatus,
    /// Its stdout (when captured; cut at the limit, lossily UTF-8).
    pub output: String,
}

/// What the `enter` helper runs (sent by the host side).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnterPlan {
    /// The slice.
    pub slice: String,
    /// Program and arguments; empty: a login shell.
    pub command: Vec<String>,
    /// Run as the slice's user (else as root inside).
    pub as_slice_user: bool,
    /// Give the command a new terminal (its master goes to the host side).
    pub pty: bool,
    /// `TERM` for the command, when there is a terminal.
    pub term: Option<String>,
    /// Files to write (as root inside) before anything runs.
    #[serde(default)]
    pub files: Option<SliceFiles>,
    /// Run the command (false: only write `files`).
    #[serde(default = "yes")]
    pub run: bool,
    /// Run the command as a node's script (see [`ScriptRun`]); the answer
    /// is then [`Reply::Ran`].
    #[serde(default)]
    pub script: Option<ScriptRun>,
}

fn yes() -> bool {
    true
}

/// A helper's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// Set up; for `enter` with a terminal, the master comes with it.
    Ready,
    /// The command ended with this wait status code.
    Exited(i32),
    /// A script run (or a files-only request) ended.
    Ran(RunOutcome),
    /// Failed: the error and its causes, one line.
    Failed(String),
}

/// Runs a helper when this process was started as one (by `argv[0]`);
/// returns its exit status. `None`: an ordinary start, go on with `main`.
pub fn helper_main() -> Option<i32> {
    let arg0 = std::env::args_os().next()?;
    let name = Path::new(&arg0).file_name()?.to_str()?.to_string();
    match name.as_str() {
        INIT_NAME => Some(init_main()),
        ENTER_NAME => Some(enter_main()),
        // A login shell is started as `-vsh`.
        "vsh" | "-vsh" => Some(crate::vsh::main(std::env::args_os().collect())),
        _ => None,
    }
}

/// What failed inside, with the step.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct InsideError {
    step: String,
    #[source]
    source: io::Error,
}

fn step<E: Into<io::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> InsideError {
    let step = what.into();
    move |e| InsideError {
        step,
        source: e.into(),
    }
}

fn nix_step(what: impl Into<String>) -> impl FnOnce(nix::Error) -> InsideError {
    let step = what.into();
    move |e| InsideError {
        step,
        source: io::Error::from(e),
    }
}

/// Takes fd 3, checking that it is the socket the host side gave us
/// (someone running the program by hand under this name gets an error).
fn host_socket() -> Result<OwnedFd, String> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat only writes into `st`.
    let r = unsafe { libc::fstat(SOCKET_FD, st.as_mut_ptr()) };
    // SAFETY: fstat succeeded, so it filled `st`.
    if r != 0 || unsafe { st.assume_init() }.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(format!(
            "this program is started by nodemgr only (fd {SOCKET_FD} is not its socket)"
        ));
    }
    // SAFETY: fd 3 is open (fstat succeeded) and nothing else in this
    // fresh process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(SOCKET_FD) })
}

/// Receives one message and the descriptors sent with it.
pub fn receive(sock: BorrowedFd<'_>) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let (len, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel installed these descriptors for us.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        (msg.bytes, fds)
    };
    buf.truncate(len);
    Ok((buf, fds))
}

/// Sends one message with descriptors.
pub fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let cmsgs = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)
        .map_err(io::Error::from)?;
    Ok(())
}

fn send_reply(sock: BorrowedFd<'_>, reply: &Reply, fds: &[RawFd]) {
    if let Ok(bytes) = serde_json::to_vec(reply) {
        let _ = send(sock, &bytes, fds);
    }
}

fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    floor::report::one_line(std::iter::successors(Some(e), |e| e.source()))
}

// --- the sliver's PID 1 ---------------------------------------------------

fn init_main() -> i32 {
    let sock = match host_socket() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{INIT_NAME}: {e}");
            return 2;
        }
    };
    if std::process::id() != 1 {
        eprintln!("{INIT_NAME}: not PID 1 of a new PID namespace");
        return 2;
    }
    let result = (|| {
        let (bytes, mut fds) = receive(sock.as_fd()).map_err(step("receiving the plan"))?;
        let plan: InitPlan = serde_json::from_slice(&bytes)
            .map_err(|e| step("reading the plan")(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        let lower = fds.pop().ok_or_else(|| {
            step("receiving the plan")(io::Error::other("no id-mapped reference root came with it"))
        })?;
        build_root(&plan, lower)?;
        write_slice_files(&plan)
    })();
    match result {
        Ok(()) => send_reply(sock.as_fd(), &Reply::Ready, &[]),
        Err(e) => {
            send_reply(sock.as_fd(), &Reply::Failed(one_line(&e)), &[]);
            return 1;
        }
    }
    drop(sock);
    reap_forever()
}

fn mkdir_p(path: &Path) -> Result<(), InsideError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(step(format!("making {}", path.display())))
}

fn build_root(plan: &InitPlan, lower: OwnedFd) -> Result<(), InsideError> {
    // Nothing done here may reach the host's mount namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(nix_step("making the mounts private"))?;
    let lower_path = cpath(&plan.lower)?;
    sys::move_mount_to(lower.as_fd(), &lower_path)
        .map_err(step("attaching the id-mapped reference root"))?;
    drop(lower);

    let options = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        plan.lower.display(),
        plan.upper.display(),
        plan.work.display()
    );
    mount_overlay(&plan.root, &options)?;
    let root = &plan.root;
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;

    for dir in ["proc", "sys", "dev", "tmp", "etc"] {
        let path = root.join(dir);
        if !path.is_dir() {
            mkdir_p(&path)?;
        }
    }
    // A new procfs: it shows the sliver's PID namespace only. Mounted
    // while the host's /proc is still visible (the kernel wants a fully
    // visible procfs in the namespace before it allows a new one).
    let proc_dir = root.join("proc");
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        nosuid_nodev_noexec,
        None::<&str>,
    )
    .map_err(nix_step("mounting /proc"))?;
    // /proc/sys is left as it is: node-wide sysctls belong to the initial
    // user namespace (or, like net.*, to the node's network namespace) and
    // refuse the sliver's root; the rest are per-namespace (IPC, user). A
    // read-only bind over it would also stop the sliver's users from making
    // PID namespaces of their own: the kernel mounts a new procfs only
    // where no part of the old one is covered.

    // sysfs belongs to the network namespace, which is the node's: a new
    // one cannot be mounted, so the host's is bound, read-only throughout.
    let sys_tree = sys::open_tree_clone(c"/sys", true).map_err(step("cloning /sys"))?;
    sys::mount_setattr(
        sys_tree.as_fd(),
        sys::MOUNT_ATTR_RDONLY
            | sys::MOUNT_ATTR_NOSUID
            | sys::MOUNT_ATTR_NODEV
            | sys::MOUNT_ATTR_NOEXEC,
        None,
        true,
    )
    .map_err(step("making /sys read-only"))?;
    sys::move_mount_to(sys_tree.as_fd(), &cpath(&root.join("sys"))?)
        .map_err(step("mounting /sys"))?;
    let cgroup_dir = root.join("sys/fs/cgroup");
    if cgroup_dir.is_dir() {
        // The sliver's own cgroup namespace: it sees its group as the root.
        let cgroup2 = || {
            mount(
                Some("cgroup2"),
                &cgroup_dir,
                Some("cgroup2"),
                MsFlags::MS_RDONLY | nosuid_nodev_noexec,
                None::<&str>,
            )
        };
        match cgroup2() {
            // The node's own cgroup2 is mounted there (a pure v2 node):
            // the kernel refuses the same file system on top of itself,
            // so a small tmpfs goes between them.
            Err(nix::Error::EBUSY) => {
                mount(
                    Some("tmpfs"),
                    &cgroup_dir,
                    Some("tmpfs"),
                    nosuid_nodev_noexec,
                    Some("size=4k,mode=755"),
                )
                .map_err(nix_step("mounting a tmpfs on /sys/fs/cgroup"))?;
                cgroup2().map_err(nix_step("mounting /sys/fs/cgroup"))?;
            }
            other => other.map_err(nix_step("mounting /sys/fs/cgroup"))?,
        }
    }

    if let Some(api) = &plan.api_dir {
        // The node manager's API, read-only (connecting to a socket needs
        // no write access to the mount).
        let target = root.join("run/plnode/api");
        mkdir_p(&target)?;
        let tree = sys::open_tree_clone(&cpath(api)?, false)
            .map_err(step(format!("cloning the API directory {}", api.display())))?;
        sys::mount_setattr(
            tree.as_fd(),
            sys::MOUNT_ATTR_RDONLY
                | sys::MOUNT_ATTR_NOSUID
                | sys::MOUNT_ATTR_NODEV
                | sys::MOUNT_ATTR_NOEXEC,
            None,
            false,
        )
        .map_err(step("making the API directory read-only"))?;
        sys::move_mount_to(tree.as_fd(), &cpath(&target)?)
            .map_err(step("mounting the API directory"))?;
    }

    build_dev(&root.join("dev"), plan.tmp_size)?;
    mount(
        Some("tmpfs"),
        &root.join("tmp"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode=1777,size={}", plan.tmp_size).as_str()),
    )
    .map_err(nix_step("mounting /tmp"))?;

    std::env::set_current_dir(root).map_err(step("entering the new root"))?;
    match sys::pivot_root_here() {
        Ok(()) => {
            // The old root is stacked on "."; detaching it leaves the
            // host's file systems out of reach.
            umount2(".", MntFlags::MNT_DETACH).map_err(nix_step("detaching the host's root"))?;
        }
        // The node runs from its initramfs (rootfs cannot be pivoted
        // away: a test guest, a node in debug state): the new root is
        // moved over "/" instead, which hides the host's tree below it.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
                .map_err(nix_step("moving the new root over /"))?;
            nix::unistd::chroot(".").map_err(nix_step("chroot"))?;
        }
        Err(e) => return Err(step("pivot_root")(e)),
    }
    std::env::set_current_dir("/").map_err(step("chdir /"))?;
    Ok(())
}

fn mount_overlay(target: &Path, options: &str) -> Result<(), InsideError> {
    // The previous run's overlay may still be going away (its namespace
    // is freed after its last process): overlayfs then calls the upper
    // directory busy for a moment.
    let start = Instant::now();
    loop {
        match mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options),
        ) {
            Err(nix::Error::EBUSY) if start.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other.map_err(nix_step("mounting the overlay")),
        }
    }
}

fn build_dev(dev: &Path, shm_size: u64) -> Result<(), InsideError> {
    mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=64k"),
    )
    .map_err(nix_step("mounting /dev"))?;
    // Device nodes made in a user namespace do not work: bind the host's.
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let node = dev.join(name);
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o666)
            .open(&node)
            .map_err(step(format!("making /dev/{name}")))?;
        let host = Path::new("/dev").join(name);
        mount(
            Some(&host),
            &node,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(nix_step(format!("binding /dev/{name}")))?;
    }
    let pts = dev.join("pts");
    mkdir_p(&pts)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(nix_step("mounting /dev/pts"))?;
    let shm = dev.join("shm");
    mkdir_p(&shm)?;
    mount(
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode=1777,size={shm_size}").as_str()),
    )
    .map_err(nix_step("mounting /dev/shm"))?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))
            .map_err(step(format!("linking /dev/{link}")))?;
    }
    fs::set_permissions(dev, fs::Permissions::from_mode(0o755)).map_err(step("chmod /dev"))?;
    Ok(())
}

fn cpath(path: &Path) -> Result<CString, InsideError> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| {
        step(format!("path {}", path.display()))(io::Error::new(io::ErrorKind::InvalidInput, e))
    })
}

/// Writes a file as root inside, refusing to write through a symlink the
/// sliver's users may have put there.
fn write_file(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<u32>,
) -> Result<(), InsideError> {
    let what = format!("writing {}", path.display());
    let tmp = path.with_extension("plnode-new");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(step(what.clone()))?;
    f.write_all(content).map_err(step(what.clone()))?;
    if let Some(id) = owner {
        std::os::unix::fs::fchown(&f, Some(id), Some(id)).map_err(step(what.clone()))?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(step(what.clone()))?;
    drop(f);
    // Files made here are rewritten at every start: no fsync needed.
    fs::rename(&tmp, path).map_err(step(what))
}

/// A directory owned by `owner`; made when missing, refused when it is a
/// symlink.
fn own_dir(path: &Path, mode: u32, owner: u32) -> Result<(), InsideError> {
    let what = format!("making {}", path.display());
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(step(what)(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a directory",
            )))
        }
        Err(_) => {}
    }
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(step(what.clone()))?;
    std::os::unix::fs::chown(path, Some(owner), Some(owner)).map_err(step(what))
}

/// Adds `line` to `file` unless an entry for `name` is there already.
fn ensure_entry(file: &Path, name: &str, line: &str, mode: u32) -> Result<(), InsideError> {
    let current = match fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(step(format!("reading {}", file.display()))(e)),
    };
    let prefix = format!("{name}:");
    if current.lines().any(|l| l.starts_with(&prefix)) {
        return Ok(());
    }
    let mut content = current;
    if !content.is_empty() && !content.ends_with('\n') {
        content.push('\n');
    }
    content.push_str(line);
    content.push('\n');
    write_file(file, content.as_bytes(), mode, None)
}

fn write_slice_files(plan: &InitPlan) -> Result<(), InsideError> {
    let slice = &plan.slice;
    let home = PathBuf::from("/home").join(slice);
    ensure_entry(
        Path::new("/etc/passwd"),
        slice,
        &format!(
            "{slice}:x:{SLICE_UID}:{SLICE_UID}:slice {slice}:{}:/bin/sh",
            home.display()
        ),
        0o644,
    )?;
    ensure_entry(
        Path::new("/etc/group"),
        slice,
        &format!("{slice}:x:{SLICE_UID}:"),
        0o644,
    )?;
    if Path::new("/etc/shadow").exists() {
        // Locked password: the slice's users log in with keys only.
        ensure_entry(
            Path::new("/etc/shadow"),
            slice,
            &format!("{slice}:*:19000:0:99999:7:::"),
            0o600,
        )?;
    }
    mkdir_p(Path::new("/home"))?;
    own_dir(&home, 0o755, SLICE_UID)?;
    own_dir(&home.join(".ssh"), 0o700, SLICE_UID)?;
    own_dir(&home.join("PlanetLab-control"), 0o755, SLICE_UID)?;
    if plan.api_dir.is_some() {
        // The API socket's well-known name, inside as on the node.
        let link = Path::new("/run/plnode/nodemgr.sock");
        let _ = fs::remove_file(link);
        std::os::unix::fs::symlink("api/nodemgr.sock", link)
            .map_err(step("linking /run/plnode/nodemgr.sock"))?;
    }
    write_files(slice, &plan.files)
}

/// Writes the files the node keeps current inside the sliver.
fn write_files(slice: &str, files: &SliceFiles) -> Result<(), InsideError> {
    let home = PathBuf::from("/home").join(slice);
    write_file(
        &home.join(".ssh/authorized_keys"),
        files.authorized_keys.as_bytes(),
        0o600,
        Some(SLICE_UID),
    )?;
    write_file(
        &home.join("PlanetLab-control/resources"),
        files.resources.as_bytes(),
        0o644,
        None,
    )?;
    mkdir_p(Path::new("/etc/plnode"))?;
    write_file(
        Path::new("/etc/plnode/lease"),
        files.lease.as_bytes(),
        0o644,
        None,
    )?;
    match &files.initscript {
        Some(script) => write_file(Path::new(INITSCRIPT_PATH), script.as_bytes(), 0o700, None)?,
        None => match fs::remove_file(INITSCRIPT_PATH) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(step(format!("removing {INITSCRIPT_PATH}"))(e)),
        },
    }
    Ok(())
}

/// PID 1's life: stdio on /dev/null, no other descriptors, every signal
/// blocked, and every child that ends reaped, so that orphans of the
/// sliver's processes never pile up as zombies.
fn reap_forever() -> ! {
    if let Ok(null) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors; `null` stays open.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    // SAFETY: closes every descriptor from 3 up; this process owns them all.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let all = nix::sys::signal::SigSet::all();
    let _ = all.thread_block();
    let mut chld = nix::sys::signal::SigSet::empty();
    chld.add(nix::sys::signal::Signal::SIGCHLD);
    loop {
        loop {
            // SAFETY: waitpid with a null status pointer.
            let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
            if r <= 0 {
                break;
            }
        }
        let _ = chld.wait();
    }
}

// --- the enter helper -----------------------------------------------------

fn enter_main() -> i32 {
    let sock = match host_socket() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{ENTER_NAME}: {e}");
            return 2;
        }
    };
    match enter(&sock) {
        Ok(Done::Exited(code)) => {
            send_reply(sock.as_fd(), &Reply::Exited(code), &[]);
            code
        }
        Ok(Done::Ran(outcome)) => {
            send_reply(sock.as_fd(), &Reply::Ran(outcome), &[]);
            0
        }
        Err(e) => {
            send_reply(sock.as_fd(), &Reply::Failed(one_line(&e)), &[]);
            125
        }
    }
}

fn enter(sock: &OwnedFd) -> Result<Done, InsideError> {
    let (bytes, mut fds) = receive(sock.as_fd()).map_err(step("receiving the request"))?;
    let plan: EnterPlan = serde_json::from_slice(&bytes)
        .map_err(|e| step("reading the request")(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    let pidfd = fds
        .pop()
        .ok_or_else(|| step("receiving the request")(io::Error::other("no pidfd came with it")))?;
    // The staff's terminal must not be reachable by ptrace from the sliver.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let namespaces = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWCGROUP;
    sys::setns_pidfd(pidfd.as_fd(), namespaces).map_err(step("joining the sliver's namespaces"))?;
    drop(pidfd);
    // Host root has no id inside; become the sliver's root first (files
    // are written as root inside), then the slice's user if asked.
    nix::unistd::setgroups(&[]).map_err(nix_step("setgroups"))?;
    become_id(0)?;
    if let Some(files) = &plan.files {
        write_files(&plan.slice, files)?;
    }
    if !plan.run {
        return Ok(Done::Ran(RunOutcome {
            status: RunStatus::Exited(0),
            output: String::new(),
        }));
    }
    if plan.as_slice_user {
        become_id(SLICE_UID)?;
    }
    let home = if plan.as_slice_user {
        PathBuf::from("/home").join(&plan.slice)
    } else {
        PathBuf::from("/root")
    };
    let cwd = if home.is_dir() {
        home.clone()
    } else {
        PathBuf::from("/")
    };
    std::env::set_current_dir(&cwd).map_err(step("chdir"))?;

    let user = if plan.as_slice_user {
        plan.slice.as_str()
    } else {
        "root"
    };
    let (program, args): (String, Vec<String>) = match plan.command.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => ("/bin/sh".to_string(), vec!["-l".to_string()]),
    };
    if let Some(script) = plan.script {
        return run_script(&program, &args, &home, user, script).map(Done::Ran);
    }
    let mut cmd = std::process::Command::new(&program);
    cmd.args(&args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", &home)
        .env("USER", user)
        .env("LOGNAME", user)
        .env("SHELL", "/bin/sh");
    let mut master = None;
    if plan.pty {
        cmd.env("TERM", plan.term.as_deref().unwrap_or("xterm"));
        let pty = nix::pty::openpty(None, None).map_err(nix_step("opening a terminal inside"))?;
        let slave = pty.slave;
        let slave_raw = slave.as_raw_fd();
        cmd.stdin(slave.try_clone().map_err(step("terminal"))?)
            .stdout(slave.try_clone().map_err(step("terminal"))?)
            .stderr(slave);
        // SAFETY: the closure runs in the child between fork and exec and
        // only makes async-signal-safe calls (setsid, ioctl).
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                let _ = slave_raw;
                Ok(())
            });
        }
        master = Some(pty.master);
    }
    let mut child = cmd.spawn().map_err(step(format!("starting {program}")))?;
    drop(cmd);
    match &master {
        Some(m) => send_reply(sock.as_fd(), &Reply::Ready, &[m.as_raw_fd()]),
        None => send_reply(sock.as_fd(), &Reply::Ready, &[]),
    }
    drop(master);
    let status = child
        .wait()
        .map_err(step(format!("waiting for {program}")))?;
    Ok(Done::Exited(exit_code(status)))
}

/// What the enter helper did.
enum Done {
    /// An interactive command ended.
    Exited(i32),
    /// A script ran (or only files were written).
    Ran(RunOutcome),
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn become_id(id: u32) -> Result<(), InsideError> {
    let gid = nix::unistd::Gid::from_raw(id);
    let uid = nix::unistd::Uid::from_raw(id);
    nix::unistd::setresgid(gid, gid, gid).map_err(nix_step("setgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(nix_step("setuid"))?;
    Ok(())
}

/// Runs a node's script: its own process group, no terminal, stdin from
/// /dev/null, stderr discarded, stdout discarded or captured; killed with
/// its process group when it outlives its timeout. Daemons it starts in
/// sessions of their own keep running (a `start` script's job).
fn run_script(
    program: &str,
    args: &[String],
    home: &Path,
    user: &str,
    script: ScriptRun,
) -> Result<RunOutcome, InsideError> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    if script.skip_if_missing && !Path::new(program).exists() {
        return Ok(RunOutcome {
            status: RunStatus::Skipped,
            output: String::new(),
        });
    }
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", home)
        .env("USER", user)
        .env("LOGNAME", user)
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .stdout(if script.capture.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .process_group(0);
    let mut child = cmd.spawn().map_err(step(format!("starting {program}")))?;
    // No threads here: this process joined the sliver's PID namespace,
    // after which the kernel refuses CLONE_THREAD. The pipe is drained
    // without blocking while the script runs.
    let mut out = child.stdout.take();
    if let Some(o) = &out {
        let _ = nix::fcntl::fcntl(
            o.as_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    let limit = script.capture.unwrap_or(0);
    let mut bytes = Vec::new();
    let drain = |out: &mut Option<std::process::ChildStdout>, bytes: &mut Vec<u8>| {
        let Some(o) = out.as_mut() else { return };
        let mut buf = [0u8; 4096];
        loop {
            match o.read(&mut buf) {
                Ok(0) => {
                    *out = None;
                    return;
                }
                Ok(n) => {
                    let room = limit.saturating_sub(bytes.len());
                    bytes.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(script.timeout_secs);
    let pgid = nix::unistd::Pid::from_raw(-(child.id() as i32));
    let status = loop {
        drain(&mut out, &mut bytes);
        match child
            .try_wait()
            .map_err(step(format!("waiting for {program}")))?
        {
            Some(status) => break RunStatus::Exited(exit_code(status)),
            None if Instant::now() >= deadline => {
                let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                break RunStatus::TimedOut;
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    // A process the script left behind may hold its stdout open: what
    // arrives within a moment is the output.
    let grace = Instant::now() + Duration::from_millis(300);
    while out.is_some() && Instant::now() < grace {
        drain(&mut out, &mut bytes);
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(RunOutcome {
        status,
        output: String::from_utf8_lossy(&bytes).into_owned(),
    })
}
