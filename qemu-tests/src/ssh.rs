//! Logging in to a guest over ssh, as staff: a key made once with
//! `ssh-keygen` and kept with the shared build artefacts, whose public half
//! a lab's boot server hands to its nodes ([`crate::world::Lab::with_staff_keys`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{anyhow, Context as _};

/// The staff key pair: `(secret key path, public key line)`.
pub fn staff_key() -> anyhow::Result<(PathBuf, String)> {
    let dir = crate::artifacts::target_dir().join("qemu-world");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = dir.join("staff-key");
    let public = key.with_extension("pub");
    if !public.exists() {
        // Two test processes may race here: each makes its own pair under
        // a private name and renames it in; the last one wins whole.
        let tmp = dir.join(format!("staff-key.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "plnode-staff", "-f"])
            .arg(&tmp)
            .status()
            .context("running ssh-keygen (apt-get install openssh-client)")?;
        anyhow::ensure!(status.success(), "ssh-keygen failed");
        std::fs::rename(format!("{}.pub", tmp.display()), &public)
            .context("keeping the staff public key")?;
        std::fs::rename(&tmp, &key).context("keeping the staff key")?;
    }
    let line = std::fs::read_to_string(&public)
        .with_context(|| format!("reading {}", public.display()))?;
    Ok((key, line.trim().to_string()))
}

/// An ssh login to a guest whose port 22 is forwarded to `port` on the host.
#[derive(Debug, Clone)]
pub struct Ssh {
    /// The secret key.
    pub key: PathBuf,
    /// The forwarded host port.
    pub port: u16,
    /// Who logs in.
    pub user: String,
}

impl Ssh {
    /// Root (staff) on the guest forwarded to `port`.
    pub fn root(key: &Path, port: u16) -> Ssh {
        Ssh {
            key: key.to_path_buf(),
            port,
            user: "root".into(),
        }
    }

    /// The ssh command line, for people (`ssh -i KEY -p PORT ... user@127.0.0.1`).
    pub fn command_line(&self) -> Vec<String> {
        [
            "ssh",
            "-i",
            &self.key.display().to_string(),
            "-p",
            &self.port.to_string(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            &format!("{}@127.0.0.1", self.user),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Runs `command` on the guest once.
    pub fn run(&self, command: &str) -> anyhow::Result<Output> {
        let line = self.command_line();
        Command::new(&line[0])
            .args(&line[1..])
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20"])
            .arg(command)
            .output()
            .context("running ssh (apt-get install openssh-client)")
    }

    /// Runs `command`, retrying the login a few times (keys arrive with the
    /// node's first check-in); its standard output when it succeeded.
    pub fn run_ok(&self, command: &str) -> anyhow::Result<String> {
        let mut last = String::new();
        for _ in 0..8 {
            let out = self.run(command)?;
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            last = format!(
                "exit {:?}: {}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            std::thread::sleep(Duration::from_secs(5));
        }
        Err(anyhow!(
            "ssh {}@127.0.0.1 -p {} {command:?} failed: {last}",
            self.user,
            self.port
        ))
    }
}
