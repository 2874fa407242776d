//! The supervisor's configuration: `/etc/plnode/supervisor.toml` in the
//! node OS, describing the services to run (not hard-coded) and how often to
//! check in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::api::Hint;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Restart whenever it exits.
    #[default]
    Always,
    /// Restart only after a failure (non-zero exit or a signal).
    OnFailure,
    /// Run once.
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Short name: log file and console prefix.
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
    #[serde(default)]
    pub restart: Restart,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The service counts as up once it has run this long.
    #[serde(default = "default_ready")]
    pub ready_after_secs: u64,
    /// Counts towards the node's health (a one-shot job may not).
    #[serde(default = "yes")]
    pub required: bool,
    /// Hints of the boot server's check-in reply that this service acts
    /// on (`["check_updates"]`): when one is set, the supervisor sends the
    /// service SIGUSR1. Only for programs that handle SIGUSR1 (its default
    /// action ends a process).
    #[serde(default)]
    pub wake_on: Vec<Hint>,
}

fn default_ready() -> u64 {
    2
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Seconds between check-ins with the boot server.
    #[serde(default = "default_interval")]
    pub checkin_interval_secs: u64,
    /// Up to this many seconds are added at random, so nodes spread out.
    #[serde(default = "default_jitter")]
    pub checkin_jitter_secs: u64,
    /// A deployment on trial must have every required service up this soon.
    #[serde(default = "default_deadline")]
    pub health_deadline_secs: u64,
    /// A service log is rotated at this size.
    #[serde(default = "default_log_max")]
    pub log_max_bytes: u64,
    /// Rotated logs kept per service.
    #[serde(default = "default_log_keep")]
    pub log_keep: u32,
    /// Restarts within `crash_window_secs` that mark a service failed.
    #[serde(default = "default_crash_restarts")]
    pub crash_restarts: u32,
    #[serde(default = "default_crash_window")]
    pub crash_window_secs: u64,
}

fn default_interval() -> u64 {
    300
}
fn default_jitter() -> u64 {
    30
}
fn default_deadline() -> u64 {
    120
}
fn default_log_max() -> u64 {
    1 << 20
}
fn default_log_keep() -> u32 {
    3
}
fn default_crash_restarts() -> u32 {
    5
}
fn default_crash_window() -> u64 {
    60
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            checkin_interval_secs: default_interval(),
            checkin_jitter_secs: default_jitter(),
            health_deadline_secs: default_deadline(),
            log_max_bytes: default_log_max(),
            log_keep: default_log_keep(),
            crash_restarts: default_crash_restarts(),
            crash_window_secs: default_crash_window(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSpec {
    #[serde(default)]
    pub supervisor: Settings,
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceSpec>,
}

impl SupervisorSpec {
    pub fn load(path: &Path) -> anyhow::Result<SupervisorSpec> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        SupervisorSpec::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> anyhow::Result<SupervisorSpec> {
        let spec: SupervisorSpec = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            anyhow::anyhow!(
                "{}:{}: {}",
                path.display(),
                line.map(|l| l.to_string()).unwrap_or_else(|| "?".into()),
                e.message()
            )
        })?;
        let mut seen = std::collections::HashSet::new();
        for s in &spec.services {
            anyhow::ensure!(
                !s.name.is_empty()
                    && s.name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)),
                "{}: service name `{}` must be letters, digits, - and _",
                path.display(),
                s.name
            );
            anyhow::ensure!(
                seen.insert(s.name.clone()),
                "{}: service `{}` is defined twice",
                path.display(),
                s.name
            );
            anyhow::ensure!(
                !s.command.is_empty(),
                "{}: service `{}` has an empty command",
                path.display(),
                s.name
            );
        }
        anyhow::ensure!(
            spec.supervisor.checkin_interval_secs >= 5,
            "{}: checkin_interval_secs must be at least 5",
            path.display()
        );
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_services_file_parses_with_defaults() {
        let spec = SupervisorSpec::parse(
            "[supervisor]\ncheckin_interval_secs = 60\n\n[[service]]\nname = \"sshd\"\ncommand = [\"/usr/sbin/dropbear\", \"-F\"]\n\n[[service]]\nname = \"once\"\ncommand = [\"true\"]\nrestart = \"never\"\nrequired = false\n",
            Path::new("supervisor.toml"),
        )
        .unwrap();
        assert_eq!(spec.supervisor.checkin_interval_secs, 60);
        assert_eq!(spec.supervisor.log_keep, 3);
        assert_eq!(spec.services.len(), 2);
        assert_eq!(spec.services[0].restart, Restart::Always);
        assert_eq!(spec.services[1].restart, Restart::Never);
    }

    #[test]
    fn wake_on_names_hints_and_refuses_unknown_ones() {
        let spec = SupervisorSpec::parse(
            "[[service]]\nname = \"updater\"\ncommand = [\"x\"]\nwake_on = [\"check_updates\"]\n",
            Path::new("s.toml"),
        )
        .unwrap();
        assert_eq!(spec.services[0].wake_on, [Hint::CheckUpdates]);
        let e = SupervisorSpec::parse(
            "[[service]]\nname = \"updater\"\ncommand = [\"x\"]\nwake_on = [\"reboot_now\"]\n",
            Path::new("s.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("s.toml:") && e.contains("reboot_now"), "{e}");
    }

    #[test]
    fn mistakes_are_named() {
        let e = SupervisorSpec::parse(
            "[[service]]\nname = \"a\"\ncommand = []\n",
            Path::new("s.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("empty command"), "{e}");
        let e = SupervisorSpec::parse("[[service]]\nname = \"a\"\ncommand = [\"x\"]\n[[service]]\nname = \"a\"\ncommand = [\"y\"]\n", Path::new("s.toml")).unwrap_err().to_string();
        assert!(e.contains("defined twice"), "{e}");
        let e = SupervisorSpec::parse(
            "[[service]]\nname = \"a\"\ncmd = [\"x\"]\n",
            Path::new("s.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("s.toml:") && e.contains("unknown field `cmd`"),
            "{e}"
        );
    }
}
