//! Kernel module selection: which `.ko` files a node needs, with everything
//! they depend on, and index files regenerated for exactly that subset.
//!
//! Input is a kernel's module directory (`/lib/modules/<release>`), read by
//! [`floor::kmod`], the same parser the node's modprobe uses, so what is
//! packed here is exactly what the node resolves; an index with a line
//! that parser would skip is refused. The output index files use the same
//! text formats, so `modprobe` (busybox's or init's) reads them.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use floor::kmod::{normalise, KmodError, ModuleIndex};

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
    // the kernel's socket table over netlink, for the sensors' connections
    // sensor (inet_diag comes as their dependency)
    "tcp_diag",
    "udp_diag",
];

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Index(#[from] KmodError),
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// Reads a kernel's module index, refusing one with malformed lines.
pub fn load_index(dir: &Path) -> Result<ModuleIndex, ModuleError> {
    let index = ModuleIndex::load(dir)?;
    index.ensure_well_formed()?;
    Ok(index)
}

/// A closed set of modules: every module any member's load plan asks for
/// (hard and soft dependencies) is a member.
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
    /// The modules in `wanted` and everything their load plans need. A
    /// wanted name that is unknown is an error; a missing soft dependency
    /// is skipped (it is optional by nature).
    pub fn resolve<S: AsRef<str>>(
        index: &ModuleIndex,
        wanted: &[S],
    ) -> Result<ModuleSet, ModuleError> {
        Ok(ModuleSet {
            names: index.closure(wanted)?,
        })
    }

    /// Every module of the kernel (no trimming).
    pub fn all(index: &ModuleIndex) -> ModuleSet {
        ModuleSet {
            names: index.modules().map(|(n, _)| n.to_string()).collect(),
        }
    }

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
        let mut members: Vec<(&str, &floor::kmod::Module)> = index
            .modules()
            .filter(|(name, _)| self.names.contains(*name))
            .collect();
        members.sort_by_key(|(_, m)| m.order);
        let mut dep = String::new();
        for (_, module) in &members {
            dep.push_str(&module.path);
            dep.push(':');
            for name in &module.deps {
                if let Some(d) = index.module(name) {
                    dep.push(' ');
                    dep.push_str(&d.path);
                }
            }
            dep.push('\n');
        }
        let mut alias = String::from("# Aliases extracted from modules themselves.\n");
        for (pattern, module) in index.aliases() {
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
        for (module, soft) in index.softdeps() {
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
            .texts()
            .order
            .lines()
            .filter(|line| self.names.contains(&floor::kmod::name_of_path(line)))
            .map(|line| format!("{line}\n"))
            .collect();
        SubsetIndex {
            dep,
            alias,
            softdep,
            builtin: index.texts().builtin.clone(),
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
        let base = format!(
            "{}/lib/modules/{}",
            prefix.trim_matches('/'),
            index.release()
        );
        let base = base.trim_start_matches('/').to_string();
        let mut bytes = 0;
        for name in &self.names {
            let Some(module) = index.module(name) else {
                continue;
            };
            let host = index.dir().join(&module.path);
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
            Path::new("/lib/modules/test"),
            floor::kmod::IndexTexts {
                dep: DEP.into(),
                alias: ALIAS.into(),
                softdep: SOFTDEP.into(),
                builtin: "kernel/fs/nls/nls_base.ko\n".into(),
                order: String::new(),
            },
        )
    }

    #[test]
    fn dependencies_and_softdeps_are_followed() {
        let set = ModuleSet::resolve(&index(), &["ext4"]).unwrap();
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
        let set = ModuleSet::resolve(&index(), &["virtio-net", "fs-iso9660", "nls_base"]).unwrap();
        let names: Vec<&str> = set.names().collect();
        assert_eq!(names, ["failover", "isofs", "net_failover", "virtio_net"]);
    }

    #[test]
    fn unknown_module_is_an_error() {
        let e = ModuleSet::resolve(&index(), &["ext4", "no_such_mod"]).unwrap_err();
        assert!(e.to_string().contains("no_such_mod"), "{e}");
    }

    #[test]
    fn subset_index_lists_only_members() {
        let idx = index();
        let set = ModuleSet::resolve(&idx, &["virtio_net"]).unwrap();
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
        let set = ModuleSet::resolve(&idx, &["ext4"]).unwrap();
        let sub = set.index(&idx);
        assert!(
            sub.softdep.contains("softdep ext4 pre: crypto-crc32c\n"),
            "{}",
            sub.softdep
        );
    }
}
