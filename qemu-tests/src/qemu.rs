//! One QEMU guest under TCG: started from a [`QemuConfig`], its serial
//! console followed through a log file, killed when dropped.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;

/// How many console lines a failure shows.
pub const TAIL_LINES: usize = 50;

pub const QEMU: &str = "qemu-system-x86_64";
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("{tool} is not installed (apt-get install {package})")]
    Missing { tool: String, package: &'static str },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {QEMU}: {0}")]
    Start(#[source] std::io::Error),
    #[error("qemu-img failed: {0}")]
    QemuImg(String),
    #[error("no console line matching /{pattern}/ within {timeout:?} ({elapsed:?} since start); last console lines:\n{tail}")]
    Timeout {
        pattern: String,
        timeout: Duration,
        elapsed: Duration,
        tail: String,
    },
    #[error("QEMU exited ({status}) before a console line matched /{pattern}/; QEMU said: {stderr}\nlast console lines:\n{tail}")]
    Exited {
        pattern: String,
        status: String,
        stderr: String,
        tail: String,
    },
    #[error("bad pattern: {0}")]
    Pattern(#[from] regex::Error),
}

/// Which firmware boots the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS (QEMU's default).
    Bios,
    /// OVMF from Debian's `ovmf`, with a private copy of its variable store.
    Uefi,
}

/// How a disk image is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    Virtio,
    Ide,
    /// A USB stick on an xHCI controller.
    Usb,
}

#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    /// `raw` or `qcow2`.
    pub format: &'static str,
    pub bus: DiskBus,
    /// Writes go to a temporary overlay, never to `path`.
    pub snapshot: bool,
}

/// Everything about one guest.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub firmware: Firmware,
    pub memory_mib: u32,
    /// An ISO in the CD drive (booted first when present).
    pub cdrom: Option<PathBuf>,
    pub disks: Vec<Disk>,
    /// A blank qcow2 disk of this many bytes, made in `work_dir` (virtio).
    pub blank_disk: Option<u64>,
    /// User-mode networking with a virtio NIC (the guest is 10.0.2.15 and
    /// reaches the host's 127.0.0.1 at 10.0.2.2).
    pub network: bool,
    /// `-rtc base=…` (`utc`, `localtime` or `2026-01-01T00:00:00`).
    pub rtc_base: Option<String>,
    /// TCP ports of the host's 127.0.0.1 forwarded to the guest: (host, guest).
    pub host_forwards: Vec<(u16, u16)>,
    pub extra_args: Vec<String>,
    /// Serial log, OVMF variables and blank disks go here.
    pub work_dir: PathBuf,
}

impl QemuConfig {
    pub fn new(firmware: Firmware, work_dir: impl Into<PathBuf>) -> QemuConfig {
        QemuConfig {
            firmware,
            memory_mib: 512,
            cdrom: None,
            disks: Vec::new(),
            blank_disk: None,
            network: true,
            rtc_base: None,
            host_forwards: Vec::new(),
            extra_args: Vec::new(),
            work_dir: work_dir.into(),
        }
    }

    pub fn cdrom(mut self, iso: impl Into<PathBuf>) -> Self {
        self.cdrom = Some(iso.into());
        self
    }

    pub fn disk(mut self, disk: Disk) -> Self {
        self.disks.push(disk);
        self
    }
}

/// Whether QEMU (and, for UEFI, OVMF) is installed; `Err` says what to install.
pub fn available(firmware: Firmware) -> Result<(), QemuError> {
    if which(QEMU).is_none() {
        return Err(QemuError::Missing {
            tool: QEMU.into(),
            package: "qemu-system-x86",
        });
    }
    if firmware == Firmware::Uefi
        && !(Path::new(OVMF_CODE).is_file() && Path::new(OVMF_VARS).is_file())
    {
        return Err(QemuError::Missing {
            tool: OVMF_CODE.into(),
            package: "ovmf",
        });
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> QemuError + '_ {
    move |source| QemuError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A console line that matched, and when.
#[derive(Debug, Clone)]
pub struct ConsoleMatch {
    pub line: String,
    /// Since QEMU was started.
    pub elapsed: Duration,
}

/// A running guest. Dropping it kills QEMU.
#[derive(Debug)]
pub struct Qemu {
    child: Child,
    started: Instant,
    serial_log: PathBuf,
    stderr_log: PathBuf,
    read_offset: u64,
    partial: String,
    lines: Vec<String>,
    /// Lines before this index have been searched by an earlier wait.
    cursor: usize,
}

impl Qemu {
    /// The command line for `config` (also for people reproducing a run by hand).
    pub fn command(config: &QemuConfig) -> Result<Command, QemuError> {
        let serial_log = config.work_dir.join("serial.log");
        let mut cmd = Command::new(QEMU);
        cmd.args([
            "-accel",
            "tcg",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-m", &config.memory_mib.to_string()])
        .arg("-serial")
        .arg(format!("file:{}", serial_log.display()));
        if config.firmware == Firmware::Uefi {
            let vars = config.work_dir.join("OVMF_VARS_4M.fd");
            fs::copy(OVMF_VARS, &vars).map_err(io_err(Path::new(OVMF_VARS)))?;
            cmd.arg("-drive")
                .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
                .arg("-drive")
                .arg(format!("if=pflash,format=raw,file={}", vars.display()));
        }
        // -nodefaults removes the VGA card; keep one so firmware and GRUB have a console device.
        cmd.args(["-vga", "std"]);
        if let Some(iso) = &config.cdrom {
            // The CD boots first even once the disk holds a partition table,
            // as on a PlanetLab node (the CD is the root of trust).
            cmd.arg("-drive").arg(format!(
                "if=none,id=cd0,media=cdrom,readonly=on,format=raw,file={}",
                iso.display()
            ));
            cmd.args(["-device", "ide-cd,drive=cd0,bus=ide.1,bootindex=0"]);
        }
        let mut disks = config.disks.clone();
        if let Some(size) = config.blank_disk {
            let path = config.work_dir.join("blank.qcow2");
            let out = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&path)
                .arg(size.to_string())
                .output()
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => QemuError::Missing {
                        tool: "qemu-img".into(),
                        package: "qemu-utils",
                    },
                    _ => QemuError::QemuImg(e.to_string()),
                })?;
            if !out.status.success() {
                return Err(QemuError::QemuImg(
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                ));
            }
            disks.push(Disk {
                path,
                format: "qcow2",
                bus: DiskBus::Virtio,
                snapshot: false,
            });
        }
        let mut usb = false;
        for (i, disk) in disks.iter().enumerate() {
            let snapshot = if disk.snapshot { ",snapshot=on" } else { "" };
            let drive = format!(
                "format={},file={}{snapshot}",
                disk.format,
                disk.path.display()
            );
            match disk.bus {
                DiskBus::Virtio => {
                    cmd.arg("-drive").arg(format!("if=virtio,{drive}"));
                }
                DiskBus::Ide => {
                    cmd.arg("-drive").arg(format!("if=ide,index={i},{drive}"));
                }
                DiskBus::Usb => {
                    if !usb {
                        cmd.args(["-device", "qemu-xhci,id=xhci"]);
                        usb = true;
                    }
                    cmd.arg("-drive").arg(format!("if=none,id=usb{i},{drive}"));
                    cmd.arg("-device")
                        .arg(format!("usb-storage,bus=xhci.0,drive=usb{i}"));
                }
            }
        }
        if config.network {
            let mut netdev = "user,id=n0".to_string();
            for (host, guest) in &config.host_forwards {
                netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
            }
            cmd.arg("-netdev")
                .arg(netdev)
                .args(["-device", "virtio-net-pci,netdev=n0"]);
        }
        if let Some(base) = &config.rtc_base {
            cmd.arg("-rtc").arg(format!("base={base}"));
        }
        cmd.args(&config.extra_args);
        Ok(cmd)
    }

    /// Starts the guest.
    pub fn start(config: &QemuConfig) -> Result<Qemu, QemuError> {
        available(config.firmware)?;
        fs::create_dir_all(&config.work_dir).map_err(io_err(&config.work_dir))?;
        let serial_log = config.work_dir.join("serial.log");
        fs::write(&serial_log, b"").map_err(io_err(&serial_log))?;
        let stderr_log = config.work_dir.join("qemu.stderr");
        let stderr = fs::File::create(&stderr_log).map_err(io_err(&stderr_log))?;
        let mut cmd = Qemu::command(config)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        tracing::info!(?cmd, "starting QEMU");
        let started = Instant::now();
        let child = cmd.spawn().map_err(QemuError::Start)?;
        Ok(Qemu {
            child,
            started,
            serial_log,
            stderr_log,
            read_offset: 0,
            partial: String::new(),
            lines: Vec::new(),
            cursor: 0,
        })
    }

    pub fn serial_log(&self) -> &Path {
        &self.serial_log
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every complete console line so far.
    pub fn lines(&mut self) -> &[String] {
        self.poll();
        &self.lines
    }

    /// The last `n` console lines (with a partial last line), for reports.
    pub fn tail(&mut self, n: usize) -> String {
        self.poll();
        let mut all: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        if !self.partial.is_empty() {
            all.push(&self.partial);
        }
        let start = all.len().saturating_sub(n);
        all[start..].join("\n")
    }

    /// Reads what the guest wrote since the last poll.
    fn poll(&mut self) {
        let Ok(mut file) = fs::File::open(&self.serial_log) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.read_offset)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return;
        }
        self.read_offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial[..end].trim_end_matches('\r').to_string();
            self.partial.drain(..=end);
            self.lines.push(strip_controls(&line));
        }
    }

    /// Waits up to `timeout` for a console line after the previous match
    /// that matches `pattern`. On failure the error (and stderr) carries
    /// the last [`TAIL_LINES`] console lines.
    pub fn wait_for(
        &mut self,
        pattern: &str,
        timeout: Duration,
    ) -> Result<ConsoleMatch, QemuError> {
        let regex = Regex::new(pattern)?;
        let deadline = Instant::now() + timeout;
        loop {
            self.poll();
            if let Some(offset) = self.lines[self.cursor..]
                .iter()
                .position(|l| regex.is_match(l))
            {
                let index = self.cursor + offset;
                self.cursor = index + 1;
                return Ok(ConsoleMatch {
                    line: self.lines[index].clone(),
                    elapsed: self.started.elapsed(),
                });
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.poll();
                // The guest's last words may have landed after the exit was seen.
                if let Some(offset) = self.lines[self.cursor..]
                    .iter()
                    .position(|l| regex.is_match(l))
                {
                    let index = self.cursor + offset;
                    self.cursor = index + 1;
                    return Ok(ConsoleMatch {
                        line: self.lines[index].clone(),
                        elapsed: self.started.elapsed(),
                    });
                }
                let stderr = fs::read_to_string(&self.stderr_log)
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                let error = QemuError::Exited {
                    pattern: pattern.into(),
                    status: status.to_string(),
                    stderr,
                    tail: self.tail(TAIL_LINES),
                };
                eprintln!("{error}");
                return Err(error);
            }
            if Instant::now() >= deadline {
                let error = QemuError::Timeout {
                    pattern: pattern.into(),
                    timeout,
                    elapsed: self.started.elapsed(),
                    tail: self.tail(TAIL_LINES),
                };
                eprintln!("{error}");
                return Err(error);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for a line containing `marker` literally (e.g. `@banner `).
    pub fn wait_for_marker(
        &mut self,
        marker: &str,
        timeout: Duration,
    ) -> Result<ConsoleMatch, QemuError> {
        self.wait_for(&regex::escape(marker), timeout)
    }

    /// Waits up to `timeout` for QEMU to exit by itself (the guest
    /// rebooted or powered off: QEMU runs with `-no-reboot`); whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.poll();
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills QEMU and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes terminal escape sequences and other control characters that
/// firmware and boot loaders print, so patterns see the text.
fn strip_controls(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_stripped() {
        assert_eq!(
            strip_controls("\u{1b}[2J\u{1b}[01;01H@banner x@\u{7}"),
            "@banner x@"
        );
    }

    #[test]
    fn command_line_has_the_agreed_parts() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = QemuConfig::new(Firmware::Bios, dir.path()).cdrom("/x.iso");
        config.rtc_base = Some("2026-01-01T00:00:00".into());
        config.extra_args = vec!["-smp".into(), "1".into()];
        let cmd = Qemu::command(&config).unwrap();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = args.join(" ");
        for part in [
            "-accel tcg",
            "-nodefaults",
            "-display none",
            "-no-reboot",
            "-m 512",
            "virtio-net-pci,netdev=n0",
            "base=2026-01-01T00:00:00",
            "/x.iso",
            "-smp 1",
        ] {
            assert!(line.contains(part), "{part} missing from {line}");
        }
        assert!(!line.contains("pflash"));
    }
}
