//! Child processes under a PID 1.
//!
//! PID 1 inherits every orphan and must reap them, but a reaper calling
//! `waitpid(-1)` would also steal the exit status of children we wait for
//! ourselves. So every child we start is registered (under a lock held
//! across `fork`, so a child that exits at once is not missed) and the
//! reaper hands each registered child's status to its owner; orphans are
//! just reaped. Outside PID 1 (tests, CLI) no reaper runs and children are
//! waited for the ordinary way.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
    fn from_std(s: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Code(-1),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

static REAPER: AtomicBool = AtomicBool::new(false);

fn registry() -> &'static Mutex<HashMap<i32, Sender<Exit>>> {
    static R: OnceLock<Mutex<HashMap<i32, Sender<Exit>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock_registry() -> std::sync::MutexGuard<'static, HashMap<i32, Sender<Exit>>> {
    registry().lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the reaper thread (PID 1 only; once).
pub fn start_reaper() {
    if REAPER.swap(true, Ordering::SeqCst) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("reaper".into())
        .spawn(|| loop {
            match waitpid(Pid::from_raw(-1), None) {
                Ok(status) => {
                    let (pid, exit) = match status {
                        WaitStatus::Exited(pid, code) => (pid, Exit::Code(code)),
                        WaitStatus::Signaled(pid, sig, _) => (pid, Exit::Signal(sig as i32)),
                        _ => continue,
                    };
                    if let Some(owner) = lock_registry().remove(&pid.as_raw()) {
                        let _ = owner.send(exit);
                    } else {
                        tracing::debug!("reaped orphan {pid} ({exit})");
                    }
                }
                // No children at the moment.
                Err(nix::errno::Errno::ECHILD) => std::thread::sleep(Duration::from_millis(100)),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        });
    if spawned.is_err() {
        REAPER.store(false, Ordering::SeqCst);
    }
}

/// A child we started.
#[derive(Debug)]
pub struct Child {
    inner: std::process::Child,
    exit: Option<Receiver<Exit>>,
    done: Option<Exit>,
}

/// Starts `cmd`, registered with the reaper when one runs.
///
/// The child starts with no signals blocked: PID 1 blocks the signals it
/// waits for, a blocked mask survives fork and exec, and std leaves it in
/// place on musl, so without this a service could not be stopped with
/// SIGTERM.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    spawn_in_cgroup(cmd, None)
}

/// [`spawn`], with the child moved into the cgroup whose `cgroup.procs`
/// file is `cgroup_procs` before it executes anything, so everything it
/// starts is accounted and limited there from the first instruction.
pub fn spawn_in_cgroup(cmd: &mut Command, cgroup_procs: Option<&Path>) -> std::io::Result<Child> {
    let procs = match cgroup_procs {
        Some(p) => Some(
            std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| std::io::Error::other("a cgroup path with a NUL byte"))?,
        ),
        None => None,
    };
    // SAFETY: between fork and exec the closure only calls pthread_sigmask,
    // open, write and close, which are async-signal-safe, and allocates
    // nothing (the path was made before the fork).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            nix::sys::signal::SigSet::empty()
                .thread_set_mask()
                .map_err(std::io::Error::from)?;
            if let Some(path) = &procs {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" is the writing process itself.
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                let error = std::io::Error::last_os_error();
                libc::close(fd);
                if written != 1 {
                    return Err(error);
                }
            }
            Ok(())
        });
    }
    if !REAPER.load(Ordering::SeqCst) {
        return Ok(Child {
            inner: cmd.spawn()?,
            exit: None,
            done: None,
        });
    }
    let mut reg = lock_registry();
    let inner = cmd.spawn()?;
    let (tx, rx) = channel();
    reg.insert(inner.id() as i32, tx);
    Ok(Child {
        inner,
        exit: Some(rx),
        done: None,
    })
}

impl Child {
    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.inner.stdout.take()
    }

    pub fn stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.inner.stderr.take()
    }

    /// Waits for the end.
    pub fn wait(&mut self) -> std::io::Result<Exit> {
        if let Some(done) = self.done {
            return Ok(done);
        }
        let exit = match &self.exit {
            Some(rx) => rx
                .recv()
                .map_err(|_| std::io::Error::other("the reaper stopped"))?,
            None => Exit::from_std(self.inner.wait()?),
        };
        self.done = Some(exit);
        Ok(exit)
    }

    /// Waits at most `limit`; `None` if still running.
    pub fn wait_timeout(&mut self, limit: Duration) -> std::io::Result<Option<Exit>> {
        if let Some(done) = self.done {
            return Ok(Some(done));
        }
        let exit = match &self.exit {
            Some(rx) => match rx.recv_timeout(limit) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(std::io::Error::other("the reaper stopped"))
                }
            },
            None => {
                let deadline = std::time::Instant::now() + limit;
                loop {
                    if let Some(s) = self.inner.try_wait()? {
                        break Exit::from_std(s);
                    }
                    if std::time::Instant::now() >= deadline {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        self.done = Some(exit);
        Ok(Some(exit))
    }

    /// Sends a signal (ignored if it already ended).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if self.done.is_none() {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.inner.id() as i32), sig);
        }
    }
}

/// The result of [`run`].
#[derive(Debug)]
pub struct Output {
    pub exit: Exit,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to its end, capturing its output; an error names the
/// program and carries its stderr when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(cmd).map_err(|e| anyhow::anyhow!("cannot start {program}: {e}"))?;
    let mut err_pipe = child.stderr();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let mut stdout = String::new();
    if let Some(mut p) = child.stdout() {
        let _ = p.read_to_string(&mut stdout);
    }
    let stderr = err_reader.join().unwrap_or_default();
    let exit = child.wait()?;
    if !exit.success() {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        anyhow::bail!(
            "{program} failed ({exit}){}",
            if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            }
        );
    }
    Ok(Output {
        exit,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup2 directory of this test's own (removed on drop), on the
    /// build host's controller-less hierarchy or a node's.
    struct TestCgroup(std::path::PathBuf);

    impl TestCgroup {
        fn new(name: &str) -> Option<TestCgroup> {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("SKIP: moving processes between cgroups needs root");
                return None;
            }
            let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
                .iter()
                .map(std::path::Path::new)
                .find(|p| {
                    p.join("cgroup.procs").is_file() && p.join("cgroup.controllers").is_file()
                });
            let Some(root) = root else {
                eprintln!("SKIP: no cgroup2 hierarchy on this machine");
                return None;
            };
            let dir = root.join(format!("plnode-test-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).ok()?;
            Some(TestCgroup(dir))
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    #[test]
    fn a_child_starts_inside_its_cgroup() {
        let Some(cg) = TestCgroup::new("spawn") else {
            return;
        };
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut child = spawn_in_cgroup(&mut cmd, Some(&cg.0.join("cgroup.procs"))).unwrap();
        let members = std::fs::read_to_string(cg.0.join("cgroup.procs")).unwrap();
        let _ = nix::sys::signal::kill(
            Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        assert!(
            members.lines().any(|l| l.trim() == child.id().to_string()),
            "pid {} not in {members:?}",
            child.id()
        );
        // A cgroup that does not exist fails the spawn, it does not run elsewhere.
        let mut cmd = Command::new("true");
        assert!(spawn_in_cgroup(&mut cmd, Some(&cg.0.join("nowhere/cgroup.procs"))).is_err());
    }

    #[test]
    fn children_start_with_no_signals_blocked_even_when_the_parent_blocks_them() {
        // In a thread of its own, so the test harness's mask is untouched.
        let mask = std::thread::spawn(|| {
            let mut blocked = nix::sys::signal::SigSet::empty();
            blocked.add(nix::sys::signal::Signal::SIGTERM);
            blocked.add(nix::sys::signal::Signal::SIGHUP);
            blocked.thread_block().unwrap();
            let mut cmd = Command::new("grep");
            cmd.args(["SigBlk", "/proc/self/status"])
                .stdout(std::process::Stdio::piped());
            let mut child = spawn(&mut cmd).unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut child.stdout().unwrap(), &mut text).unwrap();
            child.wait().unwrap();
            text
        })
        .join()
        .unwrap();
        assert_eq!(
            mask.split_whitespace().nth(1),
            Some("0000000000000000"),
            "{mask}"
        );
    }

    #[test]
    fn run_captures_output_and_reports_failures_with_stderr() {
        let out = run(Command::new("sh").args(["-c", "echo hello; echo warn >&2"])).unwrap();
        assert_eq!(out.stdout.trim(), "hello");
        assert_eq!(out.stderr.trim(), "warn");
        let e = run(Command::new("sh").args(["-c", "echo 'disk is on fire' >&2; exit 3"]))
            .err()
            .unwrap()
            .to_string();
        assert_eq!(e, "sh failed (exit code 3): disk is on fire");
        let e = run(&mut Command::new("/nonexistent/tool"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("cannot start /nonexistent/tool"), "{e}");
    }

    #[test]
    fn wait_timeout_sees_a_running_child_then_its_end() {
        let mut child = spawn(Command::new("sleep").arg("0.3")).unwrap();
        assert_eq!(child.wait_timeout(Duration::from_millis(10)).unwrap(), None);
        assert_eq!(
            child.wait_timeout(Duration::from_secs(10)).unwrap(),
            Some(Exit::Code(0))
        );
        assert_eq!(child.wait().unwrap(), Exit::Code(0));
    }
}
