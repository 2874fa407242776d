//! The host side of starting a process in a sliver: `clone3` straight into
//! the sliver's cgroup (`CLONE_INTO_CGROUP`), with new namespaces for a
//! sliver's PID 1; the child execs the helper program (see
//! [`crate::inside`]) and the two talk over a socket.
//!
//! Between `clone3` and `execveat` the child runs in a copy of a possibly
//! multi-threaded process, so it only makes raw system calls on data
//! prepared before the clone: move its socket to fd 3, wait for one byte
//! (sent once its id maps are written: a process without a uid mapping
//! would lose its capabilities at exec), exec.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::ids::IdRange;
use crate::inside::{self, Reply, SOCKET_FD};
use crate::sys::{self, CloneArgs, Forked};

/// Starting a process in a sliver failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A host-side step failed.
    #[error("{step}: {source}")]
    Host {
        /// What was being done.
        step: String,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
    /// The helper could not be executed.
    #[error("executing the helper program {}: {source}", program.display())]
    Exec {
        /// The program.
        program: PathBuf,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
    /// The helper reported a failure inside the sliver.
    #[error("inside the sliver: {0}")]
    Inside(String),
    /// The helper went away or said something else.
    #[error("the helper {0}")]
    Protocol(String),
}

fn host<E: Into<io::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> SpawnError {
    let step = what.into();
    move |e| SpawnError::Host {
        step,
        source: e.into(),
    }
}

/// A process started in a sliver.
#[derive(Debug)]
pub struct Started {
    /// Its pid on the host.
    pub pid: libc::pid_t,
    /// A pidfd for it.
    pub pidfd: OwnedFd,
    /// The socket to it.
    pub socket: OwnedFd,
}

/// Dups `fd` to a number above 10 (close-on-exec), so that the child's
/// `dup2` onto fd 3 never overwrites a descriptor it still needs.
fn high_fd(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we then own.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from fcntl.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Clones a child into `cgroup` with `namespaces` that execs `program`
/// under `argv0` once [`release`] is called.
fn clone_helper(
    program: &Path,
    argv0: &str,
    cgroup: BorrowedFd<'_>,
    namespaces: u64,
    stdio: Option<[BorrowedFd<'_>; 3]>,
) -> Result<Started, SpawnError> {
    let program_fd = fs::File::open(program).map_err(|source| SpawnError::Exec {
        program: program.to_path_buf(),
        source,
    })?;
    let program_fd = high_fd(program_fd.as_fd()).map_err(host("duplicating a descriptor"))?;
    let (parent_sock, child_sock) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(host("making a socket pair"))?;
    let child_sock = high_fd(child_sock.as_fd()).map_err(host("duplicating a descriptor"))?;
    let cgroup = high_fd(cgroup).map_err(host("duplicating a descriptor"))?;
    let stdio = match stdio {
        Some(fds) => {
            let mut high = Vec::with_capacity(3);
            for fd in fds {
                high.push(high_fd(fd).map_err(host("duplicating a descriptor"))?);
            }
            Some(high)
        }
        None => None,
    };
    let stdio_raw: Option<[RawFd; 3]> = stdio
        .as_ref()
        .map(|h| [h[0].as_raw_fd(), h[1].as_raw_fd(), h[2].as_raw_fd()]);

    // Everything the child touches is prepared here.
    let arg0 = CString::new(argv0)
        .map_err(|e| host("argv")(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let argv: [*const libc::c_char; 2] = [arg0.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let child_sock_raw = child_sock.as_raw_fd();
    let new_userns = namespaces & libc::CLONE_NEWUSER as u64 != 0;
    let program_raw = program_fd.as_raw_fd();

    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: namespaces | libc::CLONE_PIDFD as u64 | sys::CLONE_INTO_CGROUP,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: the child branch below makes only async-signal-safe system
    // calls on memory prepared before the clone, then execs or exits.
    match unsafe { sys::clone3(&mut args) }.map_err(host("clone3 into the sliver's cgroup"))? {
        Forked::Child => {
            // SAFETY: raw system calls only; see the module comment.
            unsafe {
                if libc::dup2(child_sock_raw, SOCKET_FD) < 0 {
                    libc::_exit(126);
                }
                if let Some(fds) = stdio_raw {
                    for (target, fd) in fds.iter().enumerate() {
                        if libc::dup2(*fd, target as libc::c_int) < 0 {
                            libc::_exit(126);
                        }
                    }
                }
                let mut go = 0u8;
                if libc::read(SOCKET_FD, &mut go as *mut u8 as *mut libc::c_void, 1) != 1 {
                    libc::_exit(126);
                }
                // In a new user namespace the child still has the caller's
                // ids, which have no mapping there: exec would drop its
                // capabilities. Becoming root of the namespace (mapped by
                // now) keeps them. Raw calls: the C library's wrappers
                // signal every thread it believes exists.
                if new_userns
                    && (libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                        || libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0
                        || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0)
                {
                    let errno: i32 = *libc::__errno_location();
                    libc::write(
                        SOCKET_FD,
                        &errno as *const i32 as *const libc::c_void,
                        std::mem::size_of::<i32>(),
                    );
                    libc::_exit(126);
                }
                let err = sys::execveat_fd(program_raw, argv.as_ptr(), envp.as_ptr());
                let errno: i32 = err.raw_os_error().unwrap_or(0);
                libc::write(
                    SOCKET_FD,
                    &errno as *const i32 as *const libc::c_void,
                    std::mem::size_of::<i32>(),
                );
                libc::_exit(127);
            }
        }
        Forked::Parent(pid) => {
            drop(child_sock);
            // SAFETY: CLONE_PIDFD stored a new descriptor we now own.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok(Started {
                pid,
                pidfd,
                socket: parent_sock,
            })
        }
    }
}

/// Lets the child exec.
fn release(started: &Started) -> Result<(), SpawnError> {
    inside::send(started.socket.as_fd(), &[1], &[]).map_err(host("releasing the child"))
}

/// Waits up to `timeout` for the helper's reply and the descriptors with it.
fn await_reply(
    started: &Started,
    program: &Path,
    timeout: Option<Duration>,
) -> Result<(Reply, Vec<OwnedFd>), SpawnError> {
    let mut fds = [PollFd::new(started.socket.as_fd(), PollFlags::POLLIN)];
    let ms = match timeout {
        Some(t) => PollTimeout::try_from(t.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX),
        None => PollTimeout::NONE,
    };
    let n = loop {
        match poll(&mut fds, ms) {
            Err(nix::Error::EINTR) => continue,
            other => break other.map_err(host("waiting for the helper"))?,
        }
    };
    if n == 0 {
        return Err(SpawnError::Protocol(format!(
            "did not answer within {} s",
            timeout.unwrap_or_default().as_secs()
        )));
    }
    let (bytes, fds) =
        inside::receive(started.socket.as_fd()).map_err(host("reading the helper's answer"))?;
    if bytes.len() == 4 {
        let errno = i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        return Err(SpawnError::Exec {
            program: program.to_path_buf(),
            source: io::Error::from_raw_os_error(errno),
        });
    }
    if bytes.is_empty() {
        return Err(SpawnError::Protocol("ended without an answer".into()));
    }
    let reply: Reply = serde_json::from_slice(&bytes)
        .map_err(|e| SpawnError::Protocol(format!("sent something unreadable: {e}")))?;
    Ok((reply, fds))
}

fn kill_and_reap(started: &Started) {
    // SAFETY: pidfd_send_signal on our own pidfd; waitpid on our child.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            started.pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
        libc::waitpid(started.pid, std::ptr::null_mut(), 0);
    }
}

/// Starts a sliver's PID 1: new user, mount, PID, UTS, IPC and cgroup
/// namespaces (the network is the node's), in `cgroup`, with `ids` mapped;
/// then hands it the id-mapped reference root and `plan` and waits until
/// it has built the sliver's root.
pub fn start_init(
    program: &Path,
    cgroup: BorrowedFd<'_>,
    ids: &IdRange,
    reference_root: &Path,
    plan: &inside::InitPlan,
    timeout: Duration,
) -> Result<Started, SpawnError> {
    let namespaces = (libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWCGROUP) as u64;
    let started = clone_helper(program, inside::INIT_NAME, cgroup, namespaces, None)?;
    match finish_init(&started, program, ids, reference_root, plan, timeout) {
        Ok(()) => Ok(started),
        Err(e) => {
            kill_and_reap(&started);
            Err(e)
        }
    }
}

fn finish_init(
    started: &Started,
    program: &Path,
    ids: &IdRange,
    reference_root: &Path,
    plan: &inside::InitPlan,
    timeout: Duration,
) -> Result<(), SpawnError> {
    let proc_dir = PathBuf::from(format!("/proc/{}", started.pid));
    // Written by host root (CAP_SETUID/CAP_SETGID in the parent namespace),
    // so setgroups(2) stays allowed inside, as `su` and `sshd` need.
    for file in ["uid_map", "gid_map"] {
        fs::write(proc_dir.join(file), ids.map_line())
            .map_err(host(format!("writing the sliver's {file}")))?;
    }
    // PID 1 survives an OOM kill of the sliver's workload
    // (memory.oom.group kills everything in the group but OOM-exempt
    // processes). Needs CAP_SYS_RESOURCE; without it (some build hosts)
    // an OOM kill takes PID 1 too and the sliver shows as stopped.
    if let Err(e) = fs::write(proc_dir.join("oom_score_adj"), "-1000") {
        tracing::debug!("sliver PID 1 stays OOM-killable: oom_score_adj: {e}");
    }
    let userns = fs::File::open(proc_dir.join("ns/user"))
        .map_err(host("opening the sliver's user namespace"))?;

    let lower_path = CString::new(reference_root.as_os_str().as_encoded_bytes())
        .map_err(|e| host("reference root path")(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let lower = sys::open_tree_clone(&lower_path, true).map_err(host(format!(
        "cloning the reference root {}",
        reference_root.display()
    )))?;
    sys::mount_setattr(
        lower.as_fd(),
        sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NODEV,
        Some(userns.as_fd()),
        true,
    )
    .map_err(host(
        "id-mapping the reference root (mount_setattr MOUNT_ATTR_IDMAP)",
    ))?;

    release(started)?;
    let plan_json =
        serde_json::to_vec(plan).map_err(|e| host("encoding the plan")(io::Error::other(e)))?;
    inside::send(started.socket.as_fd(), &plan_json, &[lower.as_raw_fd()])
        .map_err(host("sending the plan"))?;
    drop(lower);
    match await_reply(started, program, Some(timeout))?.0 {
        Reply::Ready => Ok(()),
        Reply::Failed(e) => Err(SpawnError::Inside(e)),
        Reply::Exited(code) => Err(SpawnError::Protocol(format!("exited ({code})"))),
        Reply::Ran(_) => Err(SpawnError::Protocol("answered with a script run".into())),
    }
}

/// A helper running a command inside a sliver (see [`start_enter`]).
#[derive(Debug)]
pub struct Entered {
    /// The helper.
    pub started: Started,
    /// The terminal's master side, when one was asked for.
    pub pty_master: Option<OwnedFd>,
}

impl Entered {
    /// Waits for the command's exit code.
    pub fn wait(self) -> Result<i32, SpawnError> {
        let result = loop {
            match await_reply(&self.started, Path::new("helper"), None) {
                Ok((Reply::Exited(code), _)) => break Ok(code),
                Ok((Reply::Failed(e), _)) => break Err(SpawnError::Inside(e)),
                Ok((Reply::Ready, _)) => continue,
                Ok((Reply::Ran(_), _)) => {
                    break Err(SpawnError::Protocol("answered with a script run".into()))
                }
                Err(e) => break Err(e),
            }
        };
        // SAFETY: waitpid on our own child.
        unsafe { libc::waitpid(self.started.pid, std::ptr::null_mut(), 0) };
        result
    }
}

/// Starts `plan.command` inside the sliver whose PID 1 is `init` (a
/// pidfd), in its cgroup: the helper joins the sliver's namespaces, takes
/// the sliver root's (or the slice user's) ids and runs the command.
/// Without a terminal the command uses `stdio` (stdin, stdout, stderr),
/// or the caller's.
pub fn start_enter(
    program: &Path,
    cgroup: BorrowedFd<'_>,
    init: BorrowedFd<'_>,
    plan: &inside::EnterPlan,
    stdio: Option<[BorrowedFd<'_>; 3]>,
) -> Result<Entered, SpawnError> {
    let started = clone_helper(program, inside::ENTER_NAME, cgroup, 0, stdio)?;
    let result = (|| {
        release(&started)?;
        let json = serde_json::to_vec(plan)
            .map_err(|e| host("encoding the request")(io::Error::other(e)))?;
        inside::send(started.socket.as_fd(), &json, &[init.as_raw_fd()])
            .map_err(host("sending the request"))?;
        match await_reply(&started, program, Some(Duration::from_secs(30)))? {
            (Reply::Ready, mut fds) => Ok(fds.pop()),
            (Reply::Failed(e), _) => Err(SpawnError::Inside(e)),
            (Reply::Exited(code), _) => Err(SpawnError::Protocol(format!(
                "exited ({code}) before starting"
            ))),
            (Reply::Ran(_), _) => Err(SpawnError::Protocol(
                "answered a script run to an interactive request".into(),
            )),
        }
    })();
    match result {
        Ok(pty_master) => Ok(Entered {
            started,
            pty_master: if plan.pty { pty_master } else { None },
        }),
        Err(e) => {
            kill_and_reap(&started);
            Err(e)
        }
    }
}

/// Runs a node's script (or only writes files, `plan.run == false`)
/// inside the sliver whose PID 1 is `init`, and waits for its outcome; the
/// helper enforces the script's own timeout, `timeout` only stops waiting
/// for a helper that hangs (then it is killed).
pub fn run_inside(
    program: &Path,
    cgroup: BorrowedFd<'_>,
    init: BorrowedFd<'_>,
    plan: &inside::EnterPlan,
    timeout: Duration,
) -> Result<inside::RunOutcome, SpawnError> {
    let started = clone_helper(program, inside::ENTER_NAME, cgroup, 0, None)?;
    let result = (|| {
        release(&started)?;
        let json = serde_json::to_vec(plan)
            .map_err(|e| host("encoding the request")(io::Error::other(e)))?;
        inside::send(started.socket.as_fd(), &json, &[init.as_raw_fd()])
            .map_err(host("sending the request"))?;
        match await_reply(&started, program, Some(timeout))?.0 {
            Reply::Ran(outcome) => Ok(outcome),
            Reply::Failed(e) => Err(SpawnError::Inside(e)),
            Reply::Exited(code) => Err(SpawnError::Protocol(format!("exited ({code})"))),
            Reply::Ready => Err(SpawnError::Protocol(
                "answered Ready to a script run".into(),
            )),
        }
    })();
    match result {
        Ok(outcome) => {
            // SAFETY: waitpid on our own child, which has answered and exits.
            unsafe { libc::waitpid(started.pid, std::ptr::null_mut(), 0) };
            Ok(outcome)
        }
        Err(e) => {
            kill_and_reap(&started);
            Err(e)
        }
    }
}
