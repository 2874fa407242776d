//! The CD's initramfs (the signed payload, DESIGN.md §3): init, the trust
//! roots, the node's kernel modules, and the tools a debug or reinstall
//! session needs (busybox, mke2fs, dropbear). Rendered as a gzip'd newc
//! cpio by `mkimage::archive`, so it is reproducible.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use mkimage::archive::{gzip, write_newc, Mtime};
use mkimage::kmod::{ModuleIndex, ModuleSet};
use mkimage::tree::ImageTree;
use mkimage::{busybox, elf, packages};

use crate::layout::*;

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("init {}: {reason}", path.display())]
    Init { path: PathBuf, reason: String },
    #[error(transparent)]
    Tree(#[from] mkimage::tree::TreeError),
    #[error(transparent)]
    Modules(#[from] mkimage::kmod::ModuleError),
    #[error(transparent)]
    Elf(#[from] elf::ElfError),
    #[error(transparent)]
    Busybox(#[from] busybox::BusyboxError),
    #[error(transparent)]
    Package(#[from] packages::PackageError),
    #[error("writing the initramfs {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What goes into the initramfs.
#[derive(Debug)]
pub struct InitramfsContent<'a> {
    pub init: &'a Path,
    pub cd_info_toml: &'a str,
    pub ca_pem: &'a [u8],
    pub root_json: &'a [u8],
    pub modules: &'a ModuleIndex,
    pub module_set: &'a ModuleSet,
    pub busybox: &'a Path,
    pub mke2fs: &'a Path,
    /// Debian's dropbear, for staff in the `debug` state.
    pub dropbear: bool,
    pub cd_version: &'a str,
}

/// Checks that `init` is a static executable: the initramfs has no loader
/// for it until `/init` itself is running.
pub fn check_init(init: &Path) -> Result<(), InitramfsError> {
    let needs = elf::runtime_files(&[init.to_path_buf()]).map_err(|e| InitramfsError::Init {
        path: init.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !needs.is_empty() {
        return Err(InitramfsError::Init {
            path: init.to_path_buf(),
            reason: "is dynamically linked; build it static \
                     (cargo build -p init --profile node --target x86_64-unknown-linux-musl)"
                .into(),
        });
    }
    Ok(())
}

/// The initramfs as a tree.
pub fn initramfs_tree(content: &InitramfsContent<'_>) -> Result<ImageTree, InitramfsError> {
    check_init(content.init)?;
    let mut tree = ImageTree::new();
    tree.host_file_mode("init", content.init, 0o755)?;
    for (dir, mode) in [
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("mnt", 0o755),
        ("root", 0o700),
        ("var/log", 0o755),
    ] {
        tree.dir(dir, mode)?;
    }
    // The kernel opens /dev/console for init's stdio before init runs.
    tree.char_device("dev/console", 5, 1, 0o600)?;
    tree.char_device("dev/null", 1, 3, 0o666)?;
    tree.bytes(INITRAMFS_CD_INFO, content.cd_info_toml, 0o644)?;
    tree.bytes(INITRAMFS_CA_PEM, content.ca_pem, 0o644)?;
    tree.bytes(INITRAMFS_ROOT_JSON, content.root_json, 0o644)?;
    // Where the per-node area's files land (the kernel does not create parents).
    tree.dir(NODE_CONFIG_DIR, 0o755)?;
    content
        .module_set
        .add_to_tree(content.modules, &mut tree, "")?;
    elf::add_program(&mut tree, "sbin/mke2fs", content.mke2fs)?;
    if Path::new("/etc/mke2fs.conf").is_file() {
        tree.host_file_mode("etc/mke2fs.conf", Path::new("/etc/mke2fs.conf"), 0o644)?;
    }
    if content.dropbear {
        packages::add_dropbear(&mut tree)?;
        // The CD's host keys live in RAM: a plain directory, whatever the
        // installed base does with /etc/dropbear.
        tree.remove("etc/dropbear");
        tree.dir("etc/dropbear", 0o700)?;
    }
    busybox::add_busybox(&mut tree, content.busybox)?;
    packages::etc_skeleton(&mut tree, "PlanetLab node CD", content.cd_version)?;
    packages::runtime_links(&mut tree)?;
    Ok(tree)
}

/// Writes `tree` as the gzip'd cpio at `path`, zero-padded to a multiple
/// of 4 bytes so the per-node archive after it starts aligned whatever
/// the boot loader does. Returns the file's length.
pub fn write_initramfs(tree: &ImageTree, path: &Path, mtime: Mtime) -> Result<u64, InitramfsError> {
    let err = |source| InitramfsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let bar = mkimage::progress::bytes(tree.file_bytes(), "initramfs");
    let file = File::create(path).map_err(err)?;
    let gz = write_newc(
        tree,
        gzip(BufWriter::with_capacity(1 << 20, file), 9),
        mtime,
        &bar,
    )
    .map_err(err)?;
    let mut writer = gz.finish().map_err(err)?;
    writer.flush().map_err(err)?;
    let file = writer.into_inner().map_err(|e| err(e.into_error()))?;
    let len = file.metadata().map_err(err)?.len();
    let padded = len.div_ceil(4) * 4;
    file.set_len(padded).map_err(err)?;
    bar.finish_and_clear();
    Ok(padded)
}
