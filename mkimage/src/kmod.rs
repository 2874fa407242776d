//! Kernel module selection: which `.ko` files a node needs, with everything
//! they depend on, and index files regenerated for exactly that subset.
//!
//! Input is a kernel's module directory (`/lib/modules/<release>`):
//! `modules.dep` (hard dependencies), `modules.softdep` (modules to load
//! before/after another, e.g. ext4 wants `crypto-crc32c`), `modules.alias`
//! (what a softdep or a device names), `modules.builtin` (names compiled
//! into the kernel, which need no file). The output index files use the
//! same text formats, so `modprobe` (busybox's or init's) reads them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::tree::{FileData, ImageTree, TreeError};

/// The modules a node needs to reach a network and a disk on common
/// hardware and in QEMU, to read its config from a CD or USB stick, and
/// to run slivers with disk quotas and bandwidth caps. Dependencies come on their own.
pub const NODE_MODULES: &[&str] = &[
    // virtio (QEMU, clouds)
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "virtio_rng",
    // network cards
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "r8169",
    "tg3",
    // disks and CD drives
    "ahci",
    "ata_piix",
    "nvme",
    "sd_mod",
    "sr_mod",
    // USB sticks (a node config may come on one)
    "xhci_pci",
    "ehci_pci",
    "usb_storage",
    "uas",
    // file systems
    "ext4",
    "crc32c_generic",
    "isofs",
    "vfat",
    "nls_cp437",
    "nls_utf8",
    "overlay",
    // the slivers' file system: an ext4 image with project quotas
    // (quota_v2 reads ext4's quota files), loop-mounted by nodemgr
    "loop",
    "quota_v2",
    "quota_tree",
    // traffic control and sliver networking
    "sch_htb",
    "sch_sfq",
    "cls_fw",
    "cls_u32",
    "cls_basic",
    "act_police",
    "veth",
    "nf_tables",
];

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("kernel module {name:?} is not in {} (neither a module name, an alias, nor built in)", dir.display())]
    Missing { name: String, dir: PathBuf },
    #[error("{}: line {line}: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// Module names use `-` and `_` interchangeably; the canonical form has `_`.
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

fn name_of_path(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalise(stem)
}

#[derive(Debug, Clone)]
struct Module {
    /// Path relative to the module directory, as in `modules.dep`.
    path: String,
    deps: Vec<String>,
    /// Position in `modules.dep`, to keep its order when regenerating.
    order: usize,
}

#[derive(Debug, Clone, Default)]
struct Softdep {
    pre: Vec<String>,
    post: Vec<String>,
}

/// The parsed index of one kernel's modules.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    dir: PathBuf,
    release: String,
    modules: BTreeMap<String, Module>,
    /// (pattern, module), in file order.
    aliases: Vec<(String, String)>,
    softdeps: BTreeMap<String, Softdep>,
    builtin: BTreeSet<String>,
    builtin_text: String,
    order_text: String,
}

fn read_text(path: &Path) -> Result<String, ModuleError> {
    fs::read_to_string(path).map_err(|source| ModuleError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_optional(path: &Path) -> Result<String, ModuleError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(ModuleError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

impl ModuleIndex {
    /// Reads the index of the module directory `dir` (`/lib/modules/<release>`).
    pub fn load(dir: &Path) -> Result<ModuleIndex, ModuleError> {
        let release = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let dep_path = dir.join("modules.dep");
        let dep = read_text(&dep_path)?;
        let alias = read_optional(&dir.join("modules.alias"))?;
        let softdep = read_optional(&dir.join("modules.softdep"))?;
        let builtin = read_optional(&dir.join("modules.builtin"))?;
        let order = read_optional(&dir.join("modules.order"))?;
        let mut index = ModuleIndex::parse(&dep, &alias, &softdep, &builtin, &dep_path)?;
        index.dir = dir.to_path_buf();
        index.release = release;
        index.order_text = order;
        Ok(index)
    }

    /// Parses the index files' text (`dep_path` names `modules.dep` in errors).
    pub fn parse(
        dep: &str,
        alias: &str,
        softdep: &str,
        builtin: &str,
        dep_path: &Path,
    ) -> Result<ModuleIndex, ModuleError> {
        let mut modules = BTreeMap::new();
        for (number, line) in dep.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((path, rest)) = line.split_once(':') else {
                return Err(ModuleError::Malformed {
                    path: dep_path.to_path_buf(),
                    line: number + 1,
                    reason: "expected `path: dependencies`".into(),
                });
            };
            let path = path.trim().to_string();
            let deps = rest.split_whitespace().map(name_of_path).collect();
            modules.insert(
                name_of_path(&path),
                Module {
                    path,
                    deps,
                    order: number,
                },
            );
        }
        let aliases = alias
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some("alias"), Some(pattern), Some(module)) => {
                        Some((pattern.to_string(), normalise(module)))
                    }
                    _ => None,
                }
            })
            .collect();
        let mut softdeps: BTreeMap<String, Softdep> = BTreeMap::new();
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let entry = softdeps.entry(normalise(module)).or_default();
            // As kmod does: words before the first `pre:`/`post:` are ignored.
            let mut list: Option<&mut Vec<String>> = None;
            for word in words {
                match word {
                    "pre:" => list = Some(&mut entry.pre),
                    "post:" => list = Some(&mut entry.post),
                    other => {
                        if let Some(list) = list.as_deref_mut() {
                            list.push(other.to_string());
                        }
                    }
                }
            }
        }
        let builtin_set = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(name_of_path)
            .collect();
        Ok(ModuleIndex {
            dir: PathBuf::new(),
            release: String::new(),
            modules,
            aliases,
            softdeps,
            builtin: builtin_set,
            builtin_text: builtin.to_string(),
            order_text: String::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn release(&self) -> &str {
        &self.release
    }

    /// Modules a name stands for: itself if it is a module, else every
    /// module an alias of exactly that name points to. Built-in names
    /// resolve to nothing (there is nothing to load).
    fn lookup(&self, name: &str) -> Option<Vec<String>> {
        let normal = normalise(name);
        if self.modules.contains_key(&normal) {
            return Some(vec![normal]);
        }
        if self.builtin.contains(&normal) {
            return Some(Vec::new());
        }
        let targets: Vec<String> = self
            .aliases
            .iter()
            .filter(|(pattern, module)| pattern == name && self.modules.contains_key(module))
            .map(|(_, module)| module.clone())
            .collect();
        (!targets.is_empty()).then_some(targets)
    }

    /// The modules in `wanted` plus, transitively, their dependencies and
    /// soft dependencies. A wanted name that is unknown is an error; a soft
    /// dependency that is unknown is skipped (it is optional by nature).
    pub fn resolve<S: AsRef<str>>(&self, wanted: &[S]) -> Result<ModuleSet, ModuleError> {
        let mut queue = VecDeque::new();
        for name in wanted {
            let name = name.as_ref();
            let found = self.lookup(name).ok_or_else(|| ModuleError::Missing {
                name: name.to_string(),
                dir: self.dir.clone(),
            })?;
            queue.extend(found);
        }
        let mut selected = BTreeSet::new();
        while let Some(name) = queue.pop_front() {
            if !selected.insert(name.clone()) {
                continue;
            }
            if let Some(module) = self.modules.get(&name) {
                for dep in &module.deps {
                    if self.modules.contains_key(dep) {
                        queue.push_back(dep.clone());
                    } else {
                        return Err(ModuleError::Missing {
                            name: dep.clone(),
                            dir: self.dir.clone(),
                        });
                    }
                }
            }
            if let Some(soft) = self.softdeps.get(&name) {
                for target in soft.pre.iter().chain(&soft.post) {
                    match self.lookup(target) {
                        Some(found) => queue.extend(found),
                        None => {
                            tracing::debug!(module = %name, softdep = %target, "soft dependency not available")
                        }
                    }
                }
            }
        }
        Ok(ModuleSet { names: selected })
    }

    /// Every module of the kernel (no trimming).
    pub fn all(&self) -> ModuleSet {
        ModuleSet {
            names: self.modules.keys().cloned().collect(),
        }
    }
}

/// A closed set of modules (every dependency of a member is a member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSet {
    names: BTreeSet<String>,
}

/// Index files for a subset, in the kernel's formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsetIndex {
    pub dep: String,
    pub alias: String,
    pub softdep: String,
    pub builtin: String,
    pub order: String,
}

impl ModuleSet {
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(&normalise(name))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// `modules.dep`, `.alias`, `.softdep`, `.builtin`, `.order` for this set.
    pub fn index(&self, index: &ModuleIndex) -> SubsetIndex {
        let mut members: Vec<(&String, &Module)> = index
            .modules
            .iter()
            .filter(|(name, _)| self.names.contains(*name))
            .collect();
        members.sort_by_key(|(_, m)| m.order);
        let mut dep = String::new();
        for (_, module) in &members {
            dep.push_str(&module.path);
            dep.push(':');
            for name in &module.deps {
                if let Some(d) = index.modules.get(name) {
                    dep.push(' ');
                    dep.push_str(&d.path);
                }
            }
            dep.push('\n');
        }
        let mut alias = String::from("# Aliases extracted from modules themselves.\n");
        for (pattern, module) in &index.aliases {
            if self.names.contains(module) {
                alias.push_str(&format!("alias {pattern} {module}\n"));
            }
        }
        let available = |target: &String| {
            index
                .lookup(target)
                .is_some_and(|m| m.iter().all(|m| self.names.contains(m)))
        };
        let mut softdep = String::from("# Soft dependencies extracted from modules themselves.\n");
        for (module, soft) in &index.softdeps {
            if !self.names.contains(module) {
                continue;
            }
            let pre: Vec<&String> = soft.pre.iter().filter(|t| available(t)).collect();
            let post: Vec<&String> = soft.post.iter().filter(|t| available(t)).collect();
            if pre.is_empty() && post.is_empty() {
                continue;
            }
            softdep.push_str(&format!("softdep {module}"));
            if !pre.is_empty() {
                softdep.push_str(" pre:");
                pre.iter().for_each(|t| softdep.push_str(&format!(" {t}")));
            }
            if !post.is_empty() {
                softdep.push_str(" post:");
                post.iter().for_each(|t| softdep.push_str(&format!(" {t}")));
            }
            softdep.push('\n');
        }
        let order = index
            .order_text
            .lines()
            .filter(|line| self.names.contains(&name_of_path(line)))
            .map(|line| format!("{line}\n"))
            .collect();
        SubsetIndex {
            dep,
            alias,
            softdep,
            builtin: index.builtin_text.clone(),
            order,
        }
    }

    /// Puts the set's `.ko` files and regenerated index files into `tree`
    /// under `<prefix>/lib/modules/<release>/`. Returns the bytes of module files.
    pub fn add_to_tree(
        &self,
        index: &ModuleIndex,
        tree: &mut ImageTree,
        prefix: &str,
    ) -> Result<u64, ModuleError> {
        let base = format!("{}/lib/modules/{}", prefix.trim_matches('/'), index.release);
        let base = base.trim_start_matches('/').to_string();
        let mut bytes = 0;
        for name in &self.names {
            let Some(module) = index.modules.get(name) else {
                continue;
            };
            let host = index.dir.join(&module.path);
            let len = fs::metadata(&host)
                .map_err(|source| ModuleError::Read {
                    path: host.clone(),
                    source,
                })?
                .len();
            bytes += len;
            tree.insert(
                &format!("{base}/{}", module.path),
                crate::tree::EntryKind::File(FileData::Host(host)),
                0o644,
            )?;
        }
        let subset = self.index(index);
        tree.bytes(&format!("{base}/modules.dep"), subset.dep, 0o644)?;
        tree.bytes(&format!("{base}/modules.alias"), subset.alias, 0o644)?;
        tree.bytes(&format!("{base}/modules.softdep"), subset.softdep, 0o644)?;
        tree.bytes(&format!("{base}/modules.builtin"), subset.builtin, 0o644)?;
        tree.bytes(&format!("{base}/modules.order"), subset.order, 0o644)?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/fs/isofs/isofs.ko:
";
    const ALIAS: &str = "\
alias crypto-crc32c crc32c_intel
alias crypto-crc32c crc32c_generic
alias fs-iso9660 isofs
alias virtio:d00000001v* virtio_net
";
    const SOFTDEP: &str = "\
softdep ext4 pre: crypto-crc32c
softdep jbd2 pre: crypto-crc32c
softdep cifs gcm
softdep virtio_net post: nonexistent
";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(
            DEP,
            ALIAS,
            SOFTDEP,
            "kernel/fs/nls/nls_base.ko\n",
            Path::new("modules.dep"),
        )
        .unwrap()
    }

    #[test]
    fn dependencies_and_softdeps_are_followed() {
        let set = index().resolve(&["ext4"]).unwrap();
        let names: Vec<&str> = set.names().collect();
        assert_eq!(
            names,
            [
                "crc16",
                "crc32c_generic",
                "crc32c_intel",
                "ext4",
                "jbd2",
                "mbcache"
            ]
        );
        let set = index()
            .resolve(&["virtio-net", "fs-iso9660", "nls_base"])
            .unwrap();
        let names: Vec<&str> = set.names().collect();
        assert_eq!(names, ["failover", "isofs", "net_failover", "virtio_net"]);
    }

    #[test]
    fn unknown_module_is_an_error() {
        let e = index().resolve(&["ext4", "no_such_mod"]).unwrap_err();
        assert!(e.to_string().contains("no_such_mod"), "{e}");
    }

    #[test]
    fn subset_index_lists_only_members() {
        let idx = index();
        let set = idx.resolve(&["virtio_net"]).unwrap();
        let sub = set.index(&idx);
        assert_eq!(
            sub.dep,
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
             kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
             kernel/net/core/failover.ko:\n"
        );
        assert!(sub.alias.contains("alias virtio:d00000001v* virtio_net\n"));
        assert!(!sub.alias.contains("isofs"));
        // The softdep on a module not in the set is dropped.
        assert!(!sub.softdep.contains("softdep virtio_net"));
        let set = idx.resolve(&["ext4"]).unwrap();
        let sub = set.index(&idx);
        assert!(
            sub.softdep.contains("softdep ext4 pre: crypto-crc32c\n"),
            "{}",
            sub.softdep
        );
    }
}
