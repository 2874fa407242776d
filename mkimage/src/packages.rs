//! The three packages of the node OS, each assembled as an [`ImageTree`]:
//!
//! - `kernel`: `vmlinuz` and `lib/modules/<release>/` (DESIGN.md §4: the
//!   installed root bind-mounts it at `/lib/modules`).
//! - `base`: the installed node's root: busybox, the project's programs,
//!   an /etc skeleton, dropbear for staff, a few device nodes.
//! - `sliver-ref`: the root slivers start from (busybox or a Debian minbase).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Map, Value};

use crate::busybox::{self, BusyboxError};
use crate::elf::{self, ElfError};
use crate::kernel::Kernel;
use crate::kmod::{load_index, ModuleError, ModuleSet, NODE_MODULES};
use crate::spec::{BaseSpec, SliverFlavour, SliverRefSpec, SshServer};
use crate::tree::{ImageTree, TreeError};

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Modules(#[from] ModuleError),
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error(transparent)]
    Busybox(#[from] BusyboxError),
    #[error("{what}: {}: {source}", path.display())]
    Input {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("debootstrap failed ({status}); its log is in {}", log.display())]
    Debootstrap { status: String, log: PathBuf },
}

/// A package's content and what the repository will say about it.
#[derive(Debug)]
pub struct PackageTree {
    pub name: &'static str,
    pub version: String,
    /// Root file systems are base images: owners, device nodes, setuid
    /// files and absolute symlinks are allowed when installing them.
    pub base_image: bool,
    /// Signed free-form description (`TargetInfo.custom`).
    pub custom: Map<String, Value>,
    pub tree: ImageTree,
    /// Keeps files that `tree` refers to (a debootstrap root) alive.
    pub work_dir: Option<tempfile::TempDir>,
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// `kernel`: the image and its modules, all of them or (`trim`) the
/// node's set plus `extra_modules`, with dependencies and fresh indexes.
pub fn kernel_package(
    kernel: &Kernel,
    trim: bool,
    extra_modules: &[String],
    version: &str,
) -> Result<PackageTree, PackageError> {
    let mut tree = ImageTree::new();
    tree.host_file_mode("vmlinuz", &kernel.image, 0o644)?;
    let modules_prefix = format!("lib/modules/{}", kernel.release);
    let index = load_index(&kernel.modules_dir)?;
    let count = if trim {
        let wanted: Vec<&str> = NODE_MODULES
            .iter()
            .copied()
            .chain(extra_modules.iter().map(String::as_str))
            .collect();
        let set = ModuleSet::resolve(&index, &wanted)?;
        set.add_to_tree(&index, &mut tree, "")?;
        set.len()
    } else {
        if !extra_modules.is_empty() {
            // Still check they exist: a typo should not pass silently.
            ModuleSet::resolve(&index, extra_modules)?;
        }
        tree.import_dir(&modules_prefix, &kernel.modules_dir, false)?;
        // Links into kernel headers point outside the package.
        tree.remove(&format!("{modules_prefix}/build"));
        tree.remove(&format!("{modules_prefix}/source"));
        ModuleSet::all(&index).len()
    };
    Ok(PackageTree {
        name: "kernel",
        version: version.to_string(),
        base_image: false,
        custom: object(json!({
            "kind": "kernel",
            "kernel_release": kernel.release,
            "trimmed": trim,
            "modules": count,
        })),
        tree,
        work_dir: None,
    })
}

/// A project program to put into `base`.
#[derive(Debug, Clone)]
pub struct ProgramFile {
    pub name: String,
    pub dest: String,
    pub path: PathBuf,
}

/// The directories every node root has.
fn root_dirs(tree: &mut ImageTree) -> Result<(), TreeError> {
    for (dir, mode) in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("lib", 0o755),
        ("etc", 0o755),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("var/log", 0o755),
        ("var/tmp", 0o1777),
        ("root", 0o700),
        ("home", 0o755),
        ("mnt", 0o755),
    ] {
        tree.dir(dir, mode)?;
    }
    Ok(())
}

/// passwd, group, shadow, hosts, nsswitch.conf, shells, profile, os-release.
pub fn etc_skeleton(tree: &mut ImageTree, os_name: &str, version: &str) -> Result<(), TreeError> {
    tree.bytes(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        0o644,
    )?;
    tree.bytes("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644)?;
    // Locked passwords: staff log in with keys only.
    tree.bytes(
        "etc/shadow",
        "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
        0o600,
    )?;
    tree.bytes(
        "etc/hosts",
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        0o644,
    )?;
    tree.bytes(
        "etc/nsswitch.conf",
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
        0o644,
    )?;
    tree.bytes("etc/shells", "/bin/sh\n/bin/ash\n", 0o644)?;
    tree.bytes(
        "etc/profile",
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\h:\\w\\$ '\n",
        0o644,
    )?;
    tree.bytes(
        "etc/os-release",
        format!("NAME=\"{os_name}\"\nID=plnode\nVERSION_ID=\"{version}\"\nPRETTY_NAME=\"{os_name} {version}\"\n"),
        0o644,
    )?;
    Ok(())
}

/// Files a running node rewrites, linked into `/run` (a tmpfs): the
/// installed root is mounted read-only, and the CD's root carries the same
/// links so the two agree.
pub fn runtime_links(tree: &mut ImageTree) -> Result<(), TreeError> {
    tree.symlink("etc/resolv.conf", "/run/plnode/resolv.conf")
}

/// What the node manager (`nodemgr`, installed at `nodemgr_dest`) needs in
/// `base`: e2fsprogs' `mke2fs` with its libraries and `/etc/mke2fs.conf`
/// (busybox's cannot make ext4 with project quotas), and the slices' ssh
/// logins on a read-only root: `/etc/passwd` links to
/// `/run/plnode/passwd`, which nodemgr writes from the node's own accounts
/// (`/etc/passwd.node`) and one account per sliver, whose shell `vsh` (a
/// link to nodemgr beside it) is listed in `/etc/shells`.
pub fn node_manager_support(tree: &mut ImageTree, nodemgr_dest: &str) -> Result<(), PackageError> {
    let mke2fs = ["/sbin/mke2fs", "/usr/sbin/mke2fs"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or_else(|| PackageError::Input {
            what: "mke2fs for the slivers' file system (apt-get install e2fsprogs)".into(),
            path: PathBuf::from("/sbin/mke2fs"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
    // Busybox's applet of that name makes ext2 only: the real one replaces it.
    tree.remove("sbin/mke2fs");
    elf::add_program(tree, "sbin/mke2fs", mke2fs)?;
    if Path::new("/etc/mke2fs.conf").is_file() {
        tree.host_file_mode("etc/mke2fs.conf", Path::new("/etc/mke2fs.conf"), 0o644)?;
    }
    let dest = nodemgr_dest.trim_start_matches('/');
    let (dir, file) = dest.rsplit_once('/').unwrap_or(("", dest));
    let vsh = if dir.is_empty() {
        "vsh".to_string()
    } else {
        format!("{dir}/vsh")
    };
    tree.symlink(&vsh, file)?;
    let passwd =
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    tree.remove("etc/passwd");
    tree.bytes("etc/passwd.node", passwd, 0o644)?;
    tree.symlink("etc/passwd", "/run/plnode/passwd")?;
    tree.remove("etc/shells");
    tree.bytes("etc/shells", format!("/bin/sh\n/bin/ash\n/{vsh}\n"), 0o644)?;
    Ok(())
}

/// dropbear (server and key tool) with its libraries and host key directory.
pub fn add_dropbear(tree: &mut ImageTree) -> Result<(), PackageError> {
    for (dest, host) in [
        ("usr/sbin/dropbear", "/usr/sbin/dropbear"),
        ("usr/bin/dropbearkey", "/usr/bin/dropbearkey"),
    ] {
        let host = Path::new(host);
        if !host.exists() {
            return Err(PackageError::Input {
                what: "ssh server (apt-get install dropbear-bin)".into(),
                path: host.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        elf::add_program(tree, dest, host)?;
    }
    // Host keys on the node's partition, so they survive updates and
    // staff do not see a new host key after every deployment.
    tree.symlink("etc/dropbear", "/plnode/ssh")?;
    Ok(())
}

/// `base`: the installed node's root file system.
pub fn base_package(
    spec: &BaseSpec,
    programs: &[ProgramFile],
    files: &[(String, Vec<u8>, u32)],
    version: &str,
) -> Result<PackageTree, PackageError> {
    let mut tree = ImageTree::new();
    root_dirs(&mut tree)?;
    tree.dir("plnode", 0o755)?; // the node partition, bind-mounted (DESIGN.md §4)
    tree.dir("lib/modules", 0o755)?; // the kernel package's modules, bind-mounted
    tree.dir("etc/plnode", 0o755)?;
    // Programs first: busybox links never shadow them.
    for program in programs {
        elf::add_program(&mut tree, &program.dest, &program.path)?;
        tree.set_mode(&program.dest, 0o755);
    }
    busybox::add_busybox(&mut tree, &spec.busybox)?;
    if spec.ssh == SshServer::Dropbear {
        add_dropbear(&mut tree)?;
    }
    etc_skeleton(&mut tree, "PlanetLab node OS", version)?;
    runtime_links(&mut tree)?;
    if let Some(nodemgr) = programs.iter().find(|p| p.name == "nodemgr") {
        node_manager_support(&mut tree, &nodemgr.dest)?;
    }
    for (dest, bytes, mode) in files {
        tree.bytes(dest.trim_start_matches('/'), bytes.clone(), *mode)?;
    }
    tree.char_device("dev/console", 5, 1, 0o600)?;
    tree.char_device("dev/null", 1, 3, 0o666)?;
    Ok(PackageTree {
        name: "base",
        version: version.to_string(),
        base_image: true,
        custom: object(json!({
            "kind": "base",
            "programs": programs.iter().map(|p| json!({"name": p.name, "path": p.dest})).collect::<Vec<_>>(),
            "ssh": match spec.ssh { SshServer::Dropbear => "dropbear", SshServer::None => "none" },
        })),
        tree,
        work_dir: None,
    })
}

/// Why a package was not built (the build goes on without it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub name: &'static str,
    pub reason: String,
}

/// `sliver-ref`: busybox and an /etc skeleton, or a Debian minbase.
pub fn sliver_ref_package(
    spec: &SliverRefSpec,
    version: &str,
) -> Result<Result<PackageTree, Skipped>, PackageError> {
    let (tree, work_dir, flavour) = match spec.flavour {
        SliverFlavour::Busybox => {
            let mut tree = ImageTree::new();
            root_dirs(&mut tree)?;
            busybox::add_busybox(&mut tree, &spec.busybox)?;
            etc_skeleton(&mut tree, "PlanetLab sliver", version)?;
            (tree, None, "busybox")
        }
        SliverFlavour::Debootstrap => match debootstrap(spec)? {
            Ok((tree, dir)) => (tree, Some(dir), "debootstrap"),
            Err(reason) => {
                return Ok(Err(Skipped {
                    name: "sliver-ref",
                    reason,
                }))
            }
        },
    };
    let mut custom = object(json!({ "kind": "sliver-ref", "flavour": flavour }));
    if spec.flavour == SliverFlavour::Debootstrap {
        custom.insert("suite".into(), Value::String(spec.suite.clone()));
    }
    Ok(Ok(PackageTree {
        name: "sliver-ref",
        version: version.to_string(),
        base_image: true,
        custom,
        tree,
        work_dir,
    }))
}

fn find_program(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Runs `debootstrap --variant=minbase`; `Ok(Err(reason))` when it cannot run here.
fn debootstrap(
    spec: &SliverRefSpec,
) -> Result<Result<(ImageTree, tempfile::TempDir), String>, PackageError> {
    let Some(program) = find_program("debootstrap") else {
        return Ok(Err(
            "debootstrap is not installed (apt-get install debootstrap)".into(),
        ));
    };
    if !crate::running_as_root() {
        return Ok(Err("debootstrap needs root".into()));
    }
    let work = tempfile::Builder::new()
        .prefix("mkimage-debootstrap-")
        .tempdir()
        .map_err(|source| PackageError::Input {
            what: "work directory".into(),
            path: std::env::temp_dir(),
            source,
        })?;
    let root = work.path().join("root");
    let log = work.path().join("debootstrap.log");
    let log_file = std::fs::File::create(&log).map_err(|source| PackageError::Input {
        what: "debootstrap log".into(),
        path: log.clone(),
        source,
    })?;
    let log_err = log_file.try_clone().map_err(|source| PackageError::Input {
        what: "debootstrap log".into(),
        path: log.clone(),
        source,
    })?;
    tracing::info!(suite = %spec.suite, mirror = %spec.mirror, "running debootstrap --variant=minbase (minutes)");
    let status = Command::new(program)
        .args(["--variant=minbase", &spec.suite])
        .arg(&root)
        .arg(&spec.mirror)
        .stdout(log_file)
        .stderr(log_err)
        .status()
        .map_err(|source| PackageError::Input {
            what: "debootstrap".into(),
            path: root.clone(),
            source,
        })?;
    if !status.success() {
        let kept = std::env::temp_dir().join("mkimage-debootstrap.log");
        let _ = std::fs::copy(&log, &kept);
        return Err(PackageError::Debootstrap {
            status: status.to_string(),
            log: kept,
        });
    }
    let mut tree = ImageTree::new();
    let skipped = tree.import_dir("", &root, true)?;
    if !skipped.is_empty() {
        tracing::info!(
            count = skipped.len(),
            "sockets and FIFOs left out of sliver-ref"
        );
    }
    // Downloaded package files are not part of a root file system.
    let cached: Vec<String> = tree
        .entries()
        .filter(|(p, _)| p.starts_with("var/cache/apt/archives/") && p.ends_with(".deb"))
        .map(|(p, _)| p.to_string())
        .collect();
    for path in cached {
        tree.remove(&path);
    }
    Ok(Ok((tree, work)))
}

#[cfg(test)]
mod node_manager_tests {
    use super::*;
    use crate::tree::EntryKind;

    #[test]
    fn a_base_with_nodemgr_gets_mke2fs_vsh_and_logins_in_run() {
        let Some(mke2fs) = ["/sbin/mke2fs", "/usr/sbin/mke2fs"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            eprintln!("SKIP: no mke2fs (apt-get install e2fsprogs)");
            return;
        };
        let mut tree = ImageTree::new();
        tree.dir("etc", 0o755).unwrap();
        etc_skeleton(&mut tree, "test", "1").unwrap();
        // Busybox's applet is replaced.
        tree.symlink("sbin/mke2fs", "../bin/busybox").unwrap();
        node_manager_support(&mut tree, "/usr/sbin/nodemgr").unwrap();
        let kind = |p: &str| tree.get(p).map(|e| e.kind.clone());
        assert!(
            matches!(kind("sbin/mke2fs"), Some(EntryKind::File(_))),
            "{mke2fs}"
        );
        assert_eq!(
            kind("usr/sbin/vsh"),
            Some(EntryKind::Symlink("nodemgr".into()))
        );
        assert_eq!(
            kind("etc/passwd"),
            Some(EntryKind::Symlink("/run/plnode/passwd".into()))
        );
        assert!(tree.contains("etc/passwd.node"));
        let Some(EntryKind::File(crate::tree::FileData::Bytes(shells))) = kind("etc/shells") else {
            panic!("no /etc/shells");
        };
        assert!(String::from_utf8_lossy(&shells).contains("/usr/sbin/vsh\n"));
    }
}
