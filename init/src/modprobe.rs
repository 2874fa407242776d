//! A small modprobe: loads the kernel modules the hardware asks for.
//!
//! Devices publish a `modalias` in sysfs; `modules.alias` maps glob patterns
//! of those to module names; `modules.dep` lists what each module needs
//! (deepest last); `modules.softdep` names modules to load before or after
//! another. Loading a driver can reveal new devices (a PCI virtio device
//! becomes a virtio-net device), so scanning repeats until nothing new loads.
//! The index is read by [`floor::kmod`], the parser `mkimage` packs with.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use floor::kmod::{normalise, KmodError, ModuleIndex};

#[derive(Debug, thiserror::Error)]
pub enum ModError {
    #[error(transparent)]
    Index(#[from] KmodError),
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading {name} ({})", path.display())]
    Load {
        name: String,
        path: PathBuf,
        #[source]
        errno: nix::errno::Errno,
    },
}

/// Every `modalias` under `/sys/devices` (deduplicated).
pub fn device_modaliases(sys_devices: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![sys_devices.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            // sysfs is full of symlinks back up the tree; follow none.
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() && entry.file_name() == "modalias" {
                if let Ok(text) = std::fs::read_to_string(entry.path()) {
                    let text = text.trim();
                    if !text.is_empty() {
                        out.insert(text.to_string());
                    }
                }
            }
        }
    }
    out
}

/// Loads modules and remembers what is loaded.
#[derive(Debug)]
pub struct Loader {
    pub index: ModuleIndex,
    loaded: HashSet<String>,
}

impl Loader {
    pub fn new(index: ModuleIndex) -> Loader {
        let loaded = std::fs::read_to_string("/proc/modules")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(normalise)
            .collect();
        Loader { index, loaded }
    }

    /// Loads `module` and what it needs; returns the modules newly loaded.
    pub fn load(&mut self, module: &str) -> Result<Vec<String>, ModError> {
        let mut newly = Vec::new();
        for (m, soft) in self.index.load_plan(module)? {
            if self.loaded.contains(&m) {
                continue;
            }
            let path = self.index.path_of(&m).ok_or_else(|| KmodError::Missing {
                name: m.clone(),
                dir: self.index.dir().to_path_buf(),
            })?;
            let result = File::open(&path)
                .map_err(|source| ModError::Read {
                    path: path.clone(),
                    source,
                })
                .and_then(|file| {
                    match nix::kmod::finit_module(&file, c"", nix::kmod::ModuleInitFlags::empty()) {
                        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
                        Err(errno) => Err(ModError::Load {
                            name: m.clone(),
                            path: path.clone(),
                            errno,
                        }),
                    }
                });
            match result {
                Ok(()) => newly.push(m.clone()),
                Err(e) if soft => {
                    tracing::debug!("soft dependency not loaded: {e}");
                }
                Err(e) => return Err(e),
            }
            // Tried once, loaded or not: a soft failure is not retried.
            self.loaded.insert(m);
        }
        Ok(newly)
    }

    /// Loads drivers for every device the kernel shows, repeating while new
    /// devices appear. Returns (loaded modules, failures as text).
    pub fn load_for_hardware(&mut self, sys_devices: &Path) -> (Vec<String>, Vec<String>) {
        self.load_until_settled(sys_devices, SETTLE, MAX_SCAN)
    }

    /// Scans and loads until no new device has appeared for `settle`
    /// (buses such as USB publish their devices seconds after their
    /// controller's driver loads), or `max` has passed.
    pub fn load_until_settled(
        &mut self,
        sys_devices: &Path,
        settle: Duration,
        max: Duration,
    ) -> (Vec<String>, Vec<String>) {
        let mut loaded = Vec::new();
        let mut failures = Vec::new();
        let mut tried: HashSet<String> = HashSet::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let started = Instant::now();
        let mut last_change = Instant::now();
        loop {
            let now_seen = device_modaliases(sys_devices);
            if now_seen != seen {
                last_change = Instant::now();
            }
            for alias in now_seen.difference(&seen) {
                for module in self.index.modules_for_alias(alias) {
                    if !tried.insert(module.clone()) || !self.index.contains(&module) {
                        continue;
                    }
                    match self.load(&module) {
                        Ok(new) => {
                            if !new.is_empty() {
                                last_change = Instant::now();
                            }
                            loaded.extend(new);
                        }
                        Err(e) => failures.push(e.to_string()),
                    }
                }
            }
            seen = now_seen;
            if last_change.elapsed() >= settle || started.elapsed() >= max {
                break;
            }
            // Let the new drivers probe and publish their devices.
            std::thread::sleep(Duration::from_millis(200));
        }
        (loaded, failures)
    }
}

/// Quiet time after the last new device before the hardware counts as found.
pub const SETTLE: Duration = Duration::from_millis(2500);
/// The longest the scan goes on.
pub const MAX_SCAN: Duration = Duration::from_secs(20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modaliases_are_collected_from_a_sysfs_tree() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("pci0000:00/0000:00:03.0");
        std::fs::create_dir_all(dev.join("virtio0")).unwrap();
        std::fs::write(dev.join("modalias"), "pci:v00001AF4d00001000\n").unwrap();
        std::fs::write(dev.join("virtio0/modalias"), "virtio:d00000001v00001AF4\n").unwrap();
        let all = device_modaliases(dir.path());
        assert_eq!(all.len(), 2);
        assert!(all.contains("virtio:d00000001v00001AF4"));
    }
}
