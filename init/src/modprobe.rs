//! A small modprobe: loads the kernel modules the hardware asks for.
//!
//! Devices publish a `modalias` in sysfs; `modules.alias` maps glob patterns
//! of those to module names; `modules.dep` lists what each module needs
//! (deepest last); `modules.softdep` names modules to load before or after
//! another. Loading a driver can reveal new devices (a PCI virtio device
//! becomes a virtio-net device), so scanning repeats until nothing new loads.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Module names use `-` and `_` interchangeably; we keep `_`.
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

#[derive(Debug, thiserror::Error)]
pub enum ModError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("module {0} is not in modules.dep")]
    Unknown(String),
    #[error("loading {name} ({path}): {errno}")]
    Load {
        name: String,
        path: PathBuf,
        errno: nix::errno::Errno,
    },
}

/// The parsed module index of one kernel (`/lib/modules/$(uname -r)`).
#[derive(Debug, Default)]
pub struct ModuleIndex {
    dir: PathBuf,
    /// module name → (path relative to dir, dependencies as module names, deepest last)
    deps: HashMap<String, (String, Vec<String>)>,
    /// (pattern, module name), in file order.
    aliases: Vec<(String, String)>,
    /// module name → (pre, post)
    softdeps: HashMap<String, (Vec<String>, Vec<String>)>,
}

fn module_name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalise(stem)
}

impl ModuleIndex {
    /// Reads `modules.dep`, `modules.alias` and `modules.softdep` from `dir`.
    pub fn load(dir: &Path) -> Result<ModuleIndex, ModError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| ModError::Read { path, source })
        };
        let dep = read("modules.dep")?;
        let alias = read("modules.alias").unwrap_or_default();
        let softdep = read("modules.softdep").unwrap_or_default();
        Ok(ModuleIndex::parse(dir, &dep, &alias, &softdep))
    }

    /// Parses the three files' text. Malformed lines are skipped: a broken
    /// line must not keep the rest of the hardware from working.
    pub fn parse(dir: &Path, dep: &str, alias: &str, softdep: &str) -> ModuleIndex {
        let mut index = ModuleIndex {
            dir: dir.to_path_buf(),
            ..Default::default()
        };
        for line in dep.lines() {
            let Some((path, rest)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let needs = rest.split_whitespace().map(module_name_of).collect();
            index
                .deps
                .insert(module_name_of(path), (path.to_string(), needs));
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(module)) =
                (words.next(), words.next(), words.next())
            {
                index.aliases.push((pattern.to_string(), normalise(module)));
            }
        }
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let (mut pre, mut post) = (Vec::new(), Vec::new());
            let mut target = &mut pre;
            for w in words {
                match w {
                    "pre:" => target = &mut pre,
                    "post:" => target = &mut post,
                    name => target.push(normalise(name)),
                }
            }
            let entry = index.softdeps.entry(normalise(module)).or_default();
            entry.0.extend(pre);
            entry.1.extend(post);
        }
        index
    }

    pub fn contains(&self, module: &str) -> bool {
        self.deps.contains_key(&normalise(module))
    }

    /// Modules whose alias pattern matches `modalias` (a real module or an alias name).
    pub fn modules_for_alias(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (pattern, module) in &self.aliases {
            if glob_match(pattern.as_bytes(), modalias.as_bytes()) && !out.contains(module) {
                out.push(module.clone());
            }
        }
        out
    }

    /// Resolves a name that may be an alias (e.g. `crc32c`) to real modules.
    fn resolve(&self, name: &str) -> Vec<String> {
        let name = normalise(name);
        if self.deps.contains_key(&name) {
            return vec![name];
        }
        self.modules_for_alias(&name)
            .into_iter()
            .filter(|m| self.deps.contains_key(m))
            .collect()
    }

    /// The order to load `module` in: softdep pre-modules, dependencies
    /// (deepest first), the module, softdep post-modules.
    pub fn load_order(&self, module: &str) -> Result<Vec<String>, ModError> {
        Ok(self
            .load_plan(module)?
            .into_iter()
            .map(|(m, _)| m)
            .collect())
    }

    /// [`load_order`](Self::load_order) with, for each module, whether it
    /// is only there as a soft dependency (its failure to load is not fatal:
    /// e.g. `crct10dif_pclmul` on a CPU without PCLMUL).
    pub fn load_plan(&self, module: &str) -> Result<Vec<(String, bool)>, ModError> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        self.visit(&normalise(module), false, &mut order, &mut seen, 0)?;
        Ok(order)
    }

    fn visit(
        &self,
        module: &str,
        soft: bool,
        order: &mut Vec<(String, bool)>,
        seen: &mut HashSet<String>,
        depth: usize,
    ) -> Result<(), ModError> {
        if !seen.insert(module.to_string()) || depth > 32 {
            return Ok(());
        }
        let (_, needs) = self
            .deps
            .get(module)
            .ok_or_else(|| ModError::Unknown(module.to_string()))?;
        let (pre, post) = self.softdeps.get(module).cloned().unwrap_or_default();
        for s in &pre {
            for real in self.resolve(s) {
                // A missing soft dependency is not fatal: it is "soft".
                let _ = self.visit(&real, true, order, seen, depth + 1);
            }
        }
        for dep in needs.iter().rev() {
            self.visit(dep, soft, order, seen, depth + 1)?;
        }
        order.push((module.to_string(), soft));
        for s in &post {
            for real in self.resolve(s) {
                let _ = self.visit(&real, true, order, seen, depth + 1);
            }
        }
        Ok(())
    }

    fn path_of(&self, module: &str) -> Option<PathBuf> {
        self.deps.get(module).map(|(p, _)| self.dir.join(p))
    }
}

/// `fnmatch(3)` without flags: `*`, `?` and `[...]` classes (with `!`/`^` and ranges).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let (mut star_p, mut star_t) = (usize::MAX, 0usize);
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star_p = p;
                    star_t = t;
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = match_class(&pattern[p..], text[t]) {
                        if matched {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        if star_p == usize::MAX {
            return false;
        }
        p = star_p + 1;
        star_t += 1;
        t = star_t;
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches a `[...]` class at the start of `pattern`: (matched, length of the class).
fn match_class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        let ch = pattern[i];
        if ch == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            if ch <= c && c <= pattern[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if ch == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
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
            let path = self
                .index
                .path_of(&m)
                .ok_or_else(|| ModError::Unknown(m.clone()))?;
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

    const DEP: &str = "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
kernel/net/core/failover.ko:\n\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko\n\
kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n\
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:\n\
kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko kernel/lib/crc16.ko\n\
kernel/fs/mbcache.ko:\nkernel/fs/jbd2/jbd2.ko:\nkernel/lib/crc16.ko:\n\
kernel/crypto/crc32c_generic.ko:\n";
    const ALIAS: &str = "# Aliases extracted from modules themselves.\n\
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
alias virtio:d00000001v* virtio_net\n\
alias crypto-crc32c crc32c_generic\n\
alias crc32c crc32c_generic\n";
    const SOFTDEP: &str = "softdep ext4 pre: crc32c\n";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(Path::new("/lib/modules/test"), DEP, ALIAS, SOFTDEP)
    }

    #[test]
    fn dependencies_load_deepest_first() {
        assert_eq!(
            index().load_order("virtio-net").unwrap(),
            vec!["failover", "net_failover", "virtio_net"]
        );
    }

    #[test]
    fn soft_dependencies_are_marked_soft() {
        let plan = index().load_plan("ext4").unwrap();
        assert_eq!(plan[0], ("crc32c_generic".to_string(), true));
        assert!(plan[1..].iter().all(|(_, soft)| !soft), "{plan:?}");
    }

    #[test]
    fn soft_dependencies_resolve_through_aliases() {
        // Without crc32c_generic, ext4 with metadata_csum fails to mount.
        assert_eq!(
            index().load_order("ext4").unwrap(),
            vec!["crc32c_generic", "crc16", "jbd2", "mbcache", "ext4"]
        );
    }

    #[test]
    fn device_aliases_find_their_drivers() {
        let i = index();
        assert_eq!(
            i.modules_for_alias("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"),
            vec!["virtio_pci"]
        );
        assert_eq!(
            i.modules_for_alias("virtio:d00000001v00001AF4"),
            vec!["virtio_net"]
        );
        assert!(i.modules_for_alias("pci:v00008086d0000100Esv*").is_empty());
        assert!(matches!(i.load_order("e1000"), Err(ModError::Unknown(_))));
    }

    #[test]
    fn globs_behave_like_fnmatch() {
        assert!(glob_match(
            b"usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*",
            b"usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00"
        ));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(glob_match(b"[a-c]x", b"bx"));
        assert!(!glob_match(b"[!a-c]x", b"bx"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"a*b", b"acc"));
        assert!(glob_match(b"[x", b"[x"));
    }

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

    #[test]
    fn the_real_index_of_this_machine_parses() {
        let Some(dir) = std::fs::read_dir("/lib/modules")
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
        else {
            eprintln!("SKIP: no /lib/modules on this machine");
            return;
        };
        let i = match ModuleIndex::load(&dir.path()) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("SKIP: {e}");
                return;
            }
        };
        if i.contains("virtio_net") {
            let order = i.load_order("virtio_net").unwrap();
            assert_eq!(order.last().map(String::as_str), Some("virtio_net"));
            assert!(order.contains(&"failover".to_string()), "{order:?}");
        }
    }
}
