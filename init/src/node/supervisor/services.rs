//! Running the node's services: start, watch, restart with backoff, mark a
//! crash-looping service failed, stop them all in order.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::logs::RotatingLog;
use super::spec::{Restart, ServiceSpec, Settings};
use crate::console::{self, StepStatus};
use crate::proc::{self, Exit};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Starting,
    Up,
    /// Waiting to restart.
    Backoff,
    /// Crash-looping: restarts paused.
    Failed(String),
    /// Ended and not to be restarted (one-shot, or stopping).
    Done(String),
}

#[derive(Debug, Clone)]
pub struct Status {
    pub name: String,
    pub state: State,
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    pub required: bool,
    pub pid: Option<u32>,
}

#[derive(Debug)]
struct Shared {
    statuses: Mutex<BTreeMap<String, Status>>,
    stopping: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running set of services.
#[derive(Debug)]
pub struct Services {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// First restart delay; doubles per quick failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run this long resets the backoff.
const STABLE: Duration = Duration::from_secs(60);
/// How long a failed (crash-looping) service rests before another try.
const FAILED_REST: Duration = Duration::from_secs(300);

/// The delay before restart number `quick_failures` (0-based).
pub fn backoff(quick_failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << quick_failures.min(16))
        .min(MAX_BACKOFF)
}

impl Services {
    /// Starts every service, each watched by its own thread.
    /// With `cgroups`, each service runs in the group `<cgroups>/<name>`.
    pub fn start(
        specs: &[ServiceSpec],
        settings: &Settings,
        log_dir: &Path,
        cgroups: Option<&Path>,
    ) -> Services {
        let shared = Arc::new(Shared {
            statuses: Mutex::new(BTreeMap::new()),
            stopping: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        for spec in specs {
            lock(&shared.statuses).insert(
                spec.name.clone(),
                Status {
                    name: spec.name.clone(),
                    state: State::Starting,
                    restarts: 0,
                    last_exit: None,
                    required: spec.required,
                    pid: None,
                },
            );
            let (spec, settings, shared, log_dir) = (
                spec.clone(),
                settings.clone(),
                shared.clone(),
                log_dir.to_path_buf(),
            );
            let name = spec.name.clone();
            let cgroup = cgroups.and_then(|base| service_cgroup(base, &name));
            match std::thread::Builder::new()
                .name(format!("svc-{name}"))
                .spawn(move || watch(spec, settings, shared, log_dir, cgroup))
            {
                Ok(t) => threads.push(t),
                Err(e) => console::line(&format!("cannot watch service {name}: {e}")),
            }
        }
        Services { shared, threads }
    }

    pub fn statuses(&self) -> Vec<Status> {
        lock(&self.shared.statuses).values().cloned().collect()
    }

    /// Sends `sig` to the running process of service `name` (not its
    /// children); `false` when it has none right now.
    pub fn signal(&self, name: &str, sig: Signal) -> nix::Result<bool> {
        let pid = lock(&self.shared.statuses).get(name).and_then(|s| s.pid);
        match pid {
            Some(pid) => {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Every required service is up.
    pub fn healthy(&self) -> bool {
        self.statuses()
            .iter()
            .filter(|s| s.required)
            .all(|s| s.state == State::Up)
    }

    /// Stops every service: SIGTERM, then SIGKILL after `grace`.
    pub fn stop_all(self, grace: Duration) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let pids: Vec<(String, u32)> = self
            .statuses()
            .into_iter()
            .filter_map(|s| s.pid.map(|p| (s.name, p)))
            .collect();
        for (name, pid) in &pids {
            console::line(&format!("stopping {name} (pid {pid})"));
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(*pid as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.statuses().iter().any(|s| s.pid.is_some()) {
            std::thread::sleep(Duration::from_millis(100));
        }
        for s in self.statuses() {
            if let Some(pid) = s.pid {
                console::line(&format!(
                    "{} did not stop within {} s: killing it",
                    s.name,
                    grace.as_secs()
                ));
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    Signal::SIGKILL,
                );
            }
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn set(shared: &Shared, name: &str, f: impl FnOnce(&mut Status)) {
    if let Some(s) = lock(&shared.statuses).get_mut(name) {
        f(s);
    }
}

/// Sleeps up to `d`, waking early when stopping. Returns false if stopping.
fn rest(shared: &Shared, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if shared.stopping.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(
            Duration::from_millis(100).min(end.saturating_duration_since(Instant::now())),
        );
    }
    !shared.stopping.load(Ordering::SeqCst)
}

fn pipe_lines(
    name: String,
    stream: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<RotatingLog>>,
) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("log-{name}"))
        .spawn(move || {
            for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches('\r');
                lock(&log).line(text);
                console::line(&format!("[{name}] {text}"));
            }
        })
        .ok()
}

/// `<base>/<name>`, created when missing; `None` (the service runs where
/// the supervisor does) when it cannot be made.
fn service_cgroup(base: &Path, name: &str) -> Option<PathBuf> {
    let dir = base.join(name);
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Some(dir.join("cgroup.procs")),
        Err(e) => {
            console::line(&format!("service {name}: no cgroup {}: {e}", dir.display()));
            None
        }
    }
}

fn watch(
    spec: ServiceSpec,
    settings: Settings,
    shared: Arc<Shared>,
    log_dir: PathBuf,
    cgroup_procs: Option<PathBuf>,
) {
    let name = spec.name.clone();
    let log = Arc::new(Mutex::new(RotatingLog::open(
        &log_dir,
        &name,
        settings.log_max_bytes,
        settings.log_keep,
    )));
    let mut recent: VecDeque<Instant> = VecDeque::new();
    let mut quick_failures = 0u32;
    let window = Duration::from_secs(settings.crash_window_secs);
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            set(&shared, &name, |s| s.state = State::Done("stopped".into()));
            return;
        }
        let mut cmd = Command::new(&spec.command[0]);
        cmd.args(&spec.command[1..])
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group, so a stop reaches everything it started.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        if let Some(dir) = &spec.dir {
            cmd.current_dir(dir);
        }
        set(&shared, &name, |s| s.state = State::Starting);
        let started = Instant::now();
        let (exit, ran) = match proc::spawn_in_cgroup(&mut cmd, cgroup_procs.as_deref()) {
            Err(e) => {
                console::step(
                    &format!("service/{name}"),
                    StepStatus::Fail,
                    &format!("cannot start {}: {e}", spec.command[0]),
                );
                (Exit::Code(127), Duration::ZERO)
            }
            Ok(mut child) => {
                let pid = child.id();
                set(&shared, &name, |s| s.pid = Some(pid));
                let readers: Vec<_> = [
                    child
                        .stdout()
                        .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
                    child
                        .stderr()
                        .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
                ]
                .into_iter()
                .flatten()
                .filter_map(|stream| pipe_lines(name.clone(), stream, log.clone()))
                .collect();
                let ready = Duration::from_secs(spec.ready_after_secs);
                let mut announced = false;
                let exit = loop {
                    match child.wait_timeout(Duration::from_millis(200)) {
                        Ok(Some(exit)) => break exit,
                        Ok(None) => {}
                        Err(e) => {
                            console::line(&format!("waiting for {name}: {e}"));
                            break Exit::Code(-1);
                        }
                    }
                    if !announced && started.elapsed() >= ready {
                        announced = true;
                        set(&shared, &name, |s| s.state = State::Up);
                        console::step(
                            &format!("service/{name}"),
                            StepStatus::Ok,
                            &format!("up pid={pid}"),
                        );
                    }
                };
                // Whatever the service left behind in its group goes with it
                // (and releases the output pipes).
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    Signal::SIGTERM,
                );
                let waited = Instant::now();
                while readers.iter().any(|r| !r.is_finished())
                    && waited.elapsed() < Duration::from_secs(2)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if readers.iter().any(|r| !r.is_finished()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        Signal::SIGKILL,
                    );
                }
                for r in readers {
                    let _ = r.join();
                }
                set(&shared, &name, |s| {
                    s.pid = None;
                    s.last_exit = Some(exit);
                });
                (exit, started.elapsed())
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            set(&shared, &name, |s| {
                s.state = State::Done(format!("stopped ({exit})"))
            });
            return;
        }
        let restart = match spec.restart {
            Restart::Always => true,
            Restart::OnFailure => !exit.success(),
            Restart::Never => false,
        };
        if !restart {
            console::line(&format!("service {name} ended ({exit}); not restarted"));
            set(&shared, &name, |s| s.state = State::Done(exit.to_string()));
            return;
        }
        let now = Instant::now();
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            recent.pop_front();
        }
        if ran >= STABLE {
            quick_failures = 0;
        }
        if recent.len() as u32 > settings.crash_restarts {
            let reason = format!(
                "{} exits within {} s (last: {exit})",
                recent.len(),
                window.as_secs()
            );
            console::step(
                &format!("service/{name}"),
                StepStatus::Fail,
                &format!(
                    "crash loop: {reason}; paused for {} s",
                    FAILED_REST.as_secs()
                ),
            );
            set(&shared, &name, |s| s.state = State::Failed(reason));
            recent.clear();
            if !rest(&shared, FAILED_REST) {
                continue;
            }
        } else {
            let delay = backoff(quick_failures);
            quick_failures += 1;
            console::line(&format!(
                "service {name} exited ({exit}) after {} s; restarting in {} s",
                ran.as_secs(),
                delay.as_secs()
            ));
            set(&shared, &name, |s| {
                s.state = State::Backoff;
                s.restarts += 1;
            });
            if !rest(&shared, delay) {
                continue;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        let d: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
