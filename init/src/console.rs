//! The console: where a PID 1 without a terminal says what it is doing.
//!
//! Every line goes to each console device there is (the serial port, which
//! tests and remote staff read, and the screen), into a ring buffer whose
//! tail is sent to the boot server with a failure report, and into a log
//! file once a disk is mounted. Lines carry the uptime and the current step.
//! Steps also print stable markers (`@step NAME STATUS detail@`) that tests
//! and the QEMU harness grep for; their format is fixed in DESIGN.md §5.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// How many recent lines are kept for failure reports.
const TAIL_LINES: usize = 400;

struct Console {
    sinks: Mutex<Vec<Box<dyn Write + Send>>>,
    tail: Mutex<VecDeque<String>>,
    log_file: Mutex<Option<File>>,
    step: Mutex<String>,
}

static CONSOLE: OnceLock<Console> = OnceLock::new();

fn console() -> &'static Console {
    CONSOLE.get_or_init(|| Console {
        sinks: Mutex::new(vec![Box::new(std::io::stderr())]),
        tail: Mutex::new(VecDeque::with_capacity(TAIL_LINES)),
        log_file: Mutex::new(None),
        step: Mutex::new(String::from("init")),
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a console lock must not silence the console.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where output goes.
#[derive(Debug)]
pub enum Output {
    /// The machine's consoles: serial port(s) and the screen (PID 1).
    Devices,
    /// Standard error (a CLI run, a test, a supervisor under another init).
    Stderr,
    /// Standard output (a service whose output the supervisor logs).
    Stdout,
    /// Nowhere but the kept tail (many nodes simulated in one process).
    Discard,
}

/// Sets up the console and the `tracing` subscriber. Call once, early.
pub fn init(output: Output) {
    let sinks: Vec<Box<dyn Write + Send>> = match output {
        Output::Stderr => vec![Box::new(std::io::stderr())],
        Output::Stdout => vec![Box::new(std::io::stdout())],
        Output::Discard => Vec::new(),
        Output::Devices => {
            let mut sinks: Vec<Box<dyn Write + Send>> = Vec::new();
            for dev in ["/dev/ttyS0", "/dev/tty0"] {
                // A serial device node exists even without the hardware;
                // a write to it would then fail, which the writer ignores.
                if let Ok(f) = OpenOptions::new().write(true).open(dev) {
                    sinks.push(Box::new(f));
                }
            }
            if sinks.is_empty() {
                if let Ok(f) = OpenOptions::new().write(true).open("/dev/console") {
                    sinks.push(Box::new(f));
                }
            }
            sinks
        }
    };
    *lock(&console().sinks) = sinks;
    let filter = tracing_subscriber::filter::LevelFilter::INFO;
    let _ = tracing_subscriber::registry()
        .with(ConsoleLayer.with_filter(filter))
        .try_init();
}

/// Also writes every line to `path` (appending) from now on.
pub fn attach_log_file(path: &Path) -> std::io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    // Put what was said before the disk was there at the top.
    for line in lock(&console().tail).iter() {
        let _ = writeln!(file, "{line}");
    }
    *lock(&console().log_file) = Some(file);
    Ok(())
}

/// Stops writing to the log file (before the disk is unmounted).
pub fn detach_log_file() {
    if let Some(f) = lock(&console().log_file).take() {
        let _ = f.sync_all();
    }
}

/// Writes one line to every sink.
pub fn line(text: &str) {
    let c = console();
    {
        let mut sinks = lock(&c.sinks);
        for sink in sinks.iter_mut() {
            // Serial consoles want CR LF.
            let _ = sink.write_all(text.as_bytes());
            let _ = sink.write_all(b"\r\n");
            let _ = sink.flush();
        }
    }
    {
        let mut tail = lock(&c.tail);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text.to_string());
    }
    if let Some(f) = lock(&c.log_file).as_mut() {
        let _ = writeln!(f, "{text}");
    }
}

/// The last `n` lines, oldest first.
pub fn tail(n: usize) -> Vec<String> {
    let tail = lock(&console().tail);
    tail.iter()
        .skip(tail.len().saturating_sub(n))
        .cloned()
        .collect()
}

/// Outcome of a step, as printed in its marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Start,
    Ok,
    Fail,
    Skip,
}

impl StepStatus {
    fn as_str(self) -> &'static str {
        match self {
            StepStatus::Start => "start",
            StepStatus::Ok => "ok",
            StepStatus::Fail => "fail",
            StepStatus::Skip => "skip",
        }
    }
}

/// Prints `@step NAME STATUS[ detail]@` and makes NAME the current step
/// shown in front of log lines.
pub fn step(name: &str, status: StepStatus, detail: &str) {
    *lock(&console().step) = name.to_string();
    line(&step_marker(name, status, detail));
}

/// The marker text (DESIGN.md §5); newlines and `@` in details are replaced
/// so one marker is always one greppable line.
pub fn step_marker(name: &str, status: StepStatus, detail: &str) -> String {
    let detail: String = detail
        .chars()
        .map(|c| {
            if c == '\n' || c == '\r' || c == '@' {
                ' '
            } else {
                c
            }
        })
        .collect();
    if detail.is_empty() {
        format!("@step {name} {}@", status.as_str())
    } else {
        format!("@step {name} {} {}@", status.as_str(), detail.trim())
    }
}

/// Prints the banner marker.
pub fn banner(init_version: &str, cd_version: &str) {
    line(&format!(
        "@banner plnode-init {init_version} cd={cd_version}@"
    ));
}

fn uptime() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

/// Formats `tracing` events as `[uptime] step: LEVEL message key=value`.
struct ConsoleLayer;

struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={:?}", field.name(), value);
        }
    }
}

impl<S: Subscriber> Layer<S> for ConsoleLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields {
            message: String::new(),
            rest: String::new(),
        };
        event.record(&mut fields);
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR ",
            Level::WARN => "WARN ",
            _ => "",
        };
        let step = lock(&console().step).clone();
        line(&format!(
            "[{:9.3}] {step}: {level}{}{}",
            uptime(),
            fields.message,
            fields.rest
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_one_line_in_the_documented_form() {
        assert_eq!(
            step_marker("network", StepStatus::Ok, "ip=10.0.2.15/24"),
            "@step network ok ip=10.0.2.15/24@"
        );
        assert_eq!(
            step_marker("reinstall/partition", StepStatus::Start, ""),
            "@step reinstall/partition start@"
        );
        assert_eq!(
            step_marker("tls", StepStatus::Fail, "bad\ncert@host"),
            "@step tls fail bad cert host@"
        );
    }

    #[test]
    fn the_tail_keeps_the_newest_lines() {
        for i in 0..(TAIL_LINES + 5) {
            line(&format!("tail-test {i}"));
        }
        let t = tail(3);
        assert_eq!(t.len(), 3);
        assert_eq!(t[2], format!("tail-test {}", TAIL_LINES + 4));
    }
}
