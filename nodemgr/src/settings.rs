//! Where things are and what is enforced: the node's defaults, and the
//! options that let nodemgr run on a build host as well.

use std::path::{Path, PathBuf};

use config::units::ByteSize;

use crate::ids;
use crate::limits::Defaults;
use crate::storage::SliversFs;

/// Default state directory (on the node partition; survives reboots).
pub const STATE_DIR: &str = "/plnode/nodemgr";
/// Default run directory (tmpfs; gone at reboot).
pub const RUN_DIR: &str = "/run/plnode/nodemgr";
/// Default cgroup2 root.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The running deployment's reference root.
pub const REFERENCE_ROOT: &str = "/plnode/current/sliver-ref";
/// The API socket's file name in [`Settings::api_dir`].
pub const API_SOCKET_NAME: &str = "nodemgr.sock";
/// The API socket's well-known name (a link into the run directory).
pub const API_SOCKET_LINK: &str = "/run/plnode/nodemgr.sock";
/// The slivers' file system image on the node partition.
pub const SLIVERS_IMAGE: &str = "/plnode/slivers.img";

/// Everything a [`crate::NodeManager`] needs to know about the node.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Id table and one state file per sliver (written durably).
    pub state_dir: PathBuf,
    /// Lock, mount points, the slivers' image mount (tmpfs on a node).
    pub run_dir: PathBuf,
    /// The cgroup2 hierarchy; slivers go into `slivers/<slice>`.
    pub cgroup_root: PathBuf,
    /// The root file system every sliver starts from (read-only lower layer).
    pub reference_root: PathBuf,
    /// Where the writable layers live.
    pub slivers_fs: SliversFs,
    /// The program exec'd as a sliver's PID 1 and as the `enter` helper: a
    /// program whose `main` calls [`crate::helper_main`] first (nodemgr).
    pub helper_program: PathBuf,
    /// Refuse to start a sliver whose cgroup limits cannot be applied.
    pub require_limits: bool,
    /// Refuse to create a sliver whose disk quota cannot be set.
    pub require_quota: bool,
    /// Values for what an rspec leaves out.
    pub defaults: Defaults,
    /// First host id of the first sliver's range.
    pub first_id: u32,
    /// Most slivers (id ranges) on the node.
    pub max_slivers: u32,
    /// How long a script run inside a sliver (the initscript, the
    /// `PlanetLab-control` scripts) may take before it is killed.
    pub script_timeout: std::time::Duration,
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {}: {reason}", path.display())]
pub struct SettingsError {
    /// Which setting.
    pub what: &'static str,
    /// Its value.
    pub path: PathBuf,
    /// Why it is refused.
    pub reason: String,
}

impl Settings {
    /// A node's settings: everything at its default place, limits and
    /// quotas required.
    pub fn node() -> Settings {
        Settings {
            state_dir: STATE_DIR.into(),
            run_dir: RUN_DIR.into(),
            cgroup_root: CGROUP_ROOT.into(),
            reference_root: REFERENCE_ROOT.into(),
            slivers_fs: SliversFs::Image {
                image: SLIVERS_IMAGE.into(),
                size: ByteSize::gib(16),
                mount_point: Path::new(RUN_DIR).join("fs"),
            },
            helper_program: "/proc/self/exe".into(),
            require_limits: true,
            require_quota: true,
            defaults: Defaults::default(),
            first_id: ids::DEFAULT_FIRST_ID,
            max_slivers: 4096,
            script_timeout: std::time::Duration::from_secs(60),
        }
    }

    /// Checks what can be checked without touching anything.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let paths: [(&'static str, &Path); 5] = [
            ("state directory", &self.state_dir),
            ("run directory", &self.run_dir),
            ("cgroup root", &self.cgroup_root),
            ("reference root", &self.reference_root),
            ("slivers' file system", self.slivers_fs.root()),
        ];
        for (what, path) in paths {
            let bad = |reason: &str| SettingsError {
                what,
                path: path.to_path_buf(),
                reason: reason.into(),
            };
            if !path.is_absolute() {
                return Err(bad("must be an absolute path"));
            }
            // These paths end up in overlayfs mount options.
            let text = path.to_str().ok_or_else(|| bad("is not UTF-8"))?;
            if text.contains([',', ':', '\\', '\n']) {
                return Err(bad(
                    "must not contain ',', ':', '\\' or a line break (overlayfs options)",
                ));
            }
        }
        let last =
            u64::from(self.first_id) + u64::from(self.max_slivers) * u64::from(ids::RANGE_SIZE);
        if self.first_id == 0 || last > u64::from(u32::MAX) {
            return Err(SettingsError {
                what: "id ranges",
                path: self.state_dir.clone(),
                reason: format!(
                    "first id {} with {} slivers does not fit between 1 and 2^32",
                    self.first_id, self.max_slivers
                ),
            });
        }
        Ok(())
    }

    /// The id table file.
    pub fn id_table(&self) -> PathBuf {
        self.state_dir.join("ids.json")
    }

    /// The directory of the slivers' state files.
    pub fn sliver_states(&self) -> PathBuf {
        self.state_dir.join("slivers")
    }

    /// The directory of the API socket, bound read-only into every sliver
    /// at `/run/plnode/api`.
    pub fn api_dir(&self) -> PathBuf {
        self.run_dir.join("api")
    }

    /// The API socket.
    pub fn api_socket(&self) -> PathBuf {
        self.api_dir().join(API_SOCKET_NAME)
    }

    /// The run-time directory of one sliver (its mount points).
    pub fn sliver_run_dir(&self, slice: &crate::SliceName) -> PathBuf {
        self.run_dir.join("slivers").join(slice.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_settings_are_valid_and_odd_paths_are_not() {
        Settings::node().validate().unwrap();
        let mut s = Settings::node();
        s.run_dir = "/run/a,b".into();
        assert!(s.validate().unwrap_err().to_string().contains("overlayfs"));
        let mut s = Settings::node();
        s.state_dir = "relative".into();
        assert!(s.validate().is_err());
        let mut s = Settings::node();
        s.max_slivers = 70_000;
        assert!(s.validate().is_err());
    }
}
