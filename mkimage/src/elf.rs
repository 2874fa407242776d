//! What a dynamically linked program needs at run time: its ELF
//! interpreter (`PT_INTERP`) and, transitively, the shared libraries named
//! by `DT_NEEDED`, found the way the dynamic loader finds them
//! (`DT_RUNPATH`/`DT_RPATH`, then the system directories).
//!
//! Reading the ELF headers ourselves (with `goblin`) instead of running
//! `ldd` keeps the build from executing the binaries it packs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use goblin::elf::Elf;

use crate::tree::{ImageTree, TreeError};

/// Where Debian's loader looks when a binary names no run path.
pub const SYSTEM_LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not an ELF file the loader can use: {reason}", path.display())]
    NotElf { path: PathBuf, reason: String },
    #[error("{}: needs {library}, which is in none of {searched}", needed_by.display())]
    LibraryNotFound {
        library: String,
        needed_by: PathBuf,
        searched: String,
    },
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// A file the programs need, at the absolute path the loader will look
/// for it (`image_path`), and where its bytes are on the host (symlinks
/// resolved).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuntimeFile {
    pub image_path: String,
    pub host_path: PathBuf,
}

struct ElfInfo {
    machine: u16,
    is_64: bool,
    interpreter: Option<String>,
    needed: Vec<String>,
    run_paths: Vec<String>,
}

fn read_elf(path: &Path) -> Result<ElfInfo, ElfError> {
    let bytes = fs::read(path).map_err(|source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let elf = Elf::parse(&bytes).map_err(|e| ElfError::NotElf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let origin = path
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let run_paths = elf
        .runpaths
        .iter()
        .chain(elf.rpaths.iter())
        .flat_map(|list| list.split(':'))
        .filter(|p| !p.is_empty())
        .map(|p| p.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin))
        .collect();
    Ok(ElfInfo {
        machine: elf.header.e_machine,
        is_64: elf.is_64,
        interpreter: elf.interpreter.map(str::to_string),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        run_paths,
    })
}

/// Finds the interpreter and shared libraries of `programs`. Statically
/// linked programs need nothing. The result is sorted and free of duplicates.
pub fn runtime_files(programs: &[PathBuf]) -> Result<Vec<RuntimeFile>, ElfError> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut done: BTreeSet<PathBuf> = BTreeSet::new();
    let mut queue: VecDeque<PathBuf> = programs.iter().cloned().collect();
    while let Some(path) = queue.pop_front() {
        if !done.insert(path.clone()) {
            continue;
        }
        let info = read_elf(&path)?;
        if let Some(interp) = &info.interpreter {
            let host = canonical(Path::new(interp))?;
            found.entry(interp.clone()).or_insert(host);
        }
        for library in &info.needed {
            if found
                .keys()
                .any(|k| k.rsplit('/').next() == Some(library.as_str()))
            {
                continue;
            }
            let (image_path, host) = find_library(library, &info, &path)?;
            queue.push_back(host.clone());
            found.insert(image_path, host);
        }
    }
    Ok(found
        .into_iter()
        .map(|(image_path, host_path)| RuntimeFile {
            image_path,
            host_path,
        })
        .collect())
}

fn canonical(path: &Path) -> Result<PathBuf, ElfError> {
    fs::canonicalize(path).map_err(|source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn find_library(
    library: &str,
    needer: &ElfInfo,
    needed_by: &Path,
) -> Result<(String, PathBuf), ElfError> {
    let dirs: Vec<String> = needer
        .run_paths
        .iter()
        .cloned()
        .chain(SYSTEM_LIBRARY_DIRS.iter().map(|d| d.to_string()))
        .collect();
    for dir in &dirs {
        let candidate = Path::new(dir).join(library);
        if !candidate.exists() {
            continue;
        }
        // Skip libraries of another architecture that share the name.
        let Ok(info) = read_elf(&candidate) else {
            continue;
        };
        if info.machine != needer.machine || info.is_64 != needer.is_64 {
            continue;
        }
        let image_path = format!("{}/{library}", dir.trim_end_matches('/'));
        return Ok((image_path, canonical(&candidate)?));
    }
    Err(ElfError::LibraryNotFound {
        library: library.to_string(),
        needed_by: needed_by.to_path_buf(),
        searched: dirs.join(", "),
    })
}

/// Adds `program` at `image_path` and everything it needs at run time.
/// Libraries already in the tree (from another program) are left as they are.
pub fn add_program(
    tree: &mut ImageTree,
    image_path: &str,
    program: &Path,
) -> Result<Vec<RuntimeFile>, ElfError> {
    let needs = runtime_files(&[program.to_path_buf()])?;
    tree.host_file(image_path, program)?;
    for file in &needs {
        if !tree.contains(&file.image_path) {
            tree.host_file_mode(&file.image_path, &file.host_path, 0o755)?;
        }
    }
    Ok(needs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropbear_needs_libc_and_the_loader() {
        let dropbear = Path::new("/usr/sbin/dropbear");
        if !dropbear.exists() {
            eprintln!("SKIP: /usr/sbin/dropbear missing (apt-get install dropbear-bin)");
            return;
        }
        let files = runtime_files(&[dropbear.to_path_buf()]).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.image_path.as_str()).collect();
        assert!(paths.contains(&"/lib64/ld-linux-x86-64.so.2"), "{paths:?}");
        assert!(paths.iter().any(|p| p.ends_with("/libc.so.6")), "{paths:?}");
        for f in &files {
            assert!(f.host_path.is_file(), "{f:?}");
        }
    }

    #[test]
    fn static_binary_needs_nothing_and_text_is_not_elf() {
        let busybox = Path::new("/bin/busybox");
        if busybox.exists() {
            assert!(runtime_files(&[busybox.to_path_buf()]).unwrap().is_empty());
        } else {
            eprintln!("SKIP (part): /bin/busybox missing (apt-get install busybox-static)");
        }
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("script");
        fs::write(&text, "#!/bin/sh\n").unwrap();
        assert!(matches!(
            runtime_files(&[text]),
            Err(ElfError::NotElf { .. })
        ));
    }
}
