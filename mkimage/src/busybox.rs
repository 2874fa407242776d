//! busybox (Debian's `busybox-static`) and its applet links.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tree::{image_path, EntryKind, ImageTree, TreeError};

/// Where `busybox-static` installs the binary.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

#[derive(Debug, thiserror::Error)]
pub enum BusyboxError {
    #[error("{}: cannot run it to list its applets: {source} (apt-get install busybox-static)", path.display())]
    Run {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: `--list-full` failed: {stderr}", path.display())]
    List { path: PathBuf, stderr: String },
    #[error("{}: is dynamically linked; the image needs busybox-static", path.display())]
    NotStatic { path: PathBuf },
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// The applet paths busybox was built with (`bin/sh`, `sbin/ip`, …).
pub fn applets(busybox: &Path) -> Result<Vec<String>, BusyboxError> {
    let output = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|source| BusyboxError::Run {
            path: busybox.to_path_buf(),
            source,
        })?;
    if !output.status.success() {
        return Err(BusyboxError::List {
            path: busybox.to_path_buf(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        // `linuxrc` is busybox's own init for old initrds: never wanted.
        .filter(|l| !l.is_empty() && *l != "linuxrc" && image_path(l).is_ok())
        .map(str::to_string)
        .collect())
}

/// Adds busybox at `/bin/busybox` and a symlink for every applet whose
/// path is still free (the project's own programs win). The links are
/// relative (`../bin/busybox`), so they stay inside the tree wherever it
/// is extracted. Returns the number of links made.
pub fn add_busybox(tree: &mut ImageTree, busybox: &Path) -> Result<usize, BusyboxError> {
    let needs =
        crate::elf::runtime_files(&[busybox.to_path_buf()]).map_err(|e| BusyboxError::List {
            path: busybox.to_path_buf(),
            stderr: e.to_string(),
        })?;
    if !needs.is_empty() {
        return Err(BusyboxError::NotStatic {
            path: busybox.to_path_buf(),
        });
    }
    let list = applets(busybox)?;
    tree.host_file_mode("bin/busybox", busybox, 0o755)?;
    let mut links = 0;
    for applet in list {
        if applet == "bin/busybox" {
            continue;
        }
        let target = format!("{}bin/busybox", "../".repeat(applet.matches('/').count()));
        if tree.insert_if_absent(&applet, EntryKind::Symlink(target), 0o777)? {
            links += 1;
        }
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_applets_without_shadowing() {
        let busybox = Path::new(DEFAULT_BUSYBOX);
        if !busybox.exists() {
            eprintln!("SKIP: {DEFAULT_BUSYBOX} missing (apt-get install busybox-static)");
            return;
        }
        let mut tree = ImageTree::new();
        tree.bytes("sbin/init", "ours", 0o755).unwrap();
        let links = add_busybox(&mut tree, busybox).unwrap();
        assert!(links > 100, "{links} links");
        assert_eq!(
            tree.get("bin/sh").unwrap().kind,
            EntryKind::Symlink("../bin/busybox".into())
        );
        assert_eq!(
            tree.get("usr/bin/env").unwrap().kind,
            EntryKind::Symlink("../../bin/busybox".into())
        );
        assert!(matches!(
            tree.get("sbin/init").unwrap().kind,
            EntryKind::File(_)
        ));
        assert!(!tree.contains("linuxrc"));
    }
}
