//! `mkimage build`: spec → package trees → reproducible `.tar.gz` files →
//! a pkgsign repository's pending list (publishing is `pkgsign repo publish`).
//!
//! Every package is rendered to a temporary file first; only when all of
//! them are complete are they moved into the output directory and added to
//! the repository, so a failed build leaves neither half a package nor half
//! a package set behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use pkgsign::repo::{RepoError, Repository};
use pkgsign::TargetInfo;

use crate::archive::{write_tar_gz, Mtime};
use crate::kernel::{Kernel, KernelError};
use crate::packages::{self, PackageError, PackageTree, ProgramFile, Skipped};
use crate::progress;
use crate::spec::ImageSpec;

/// The package names a spec can ask for.
pub const PACKAGE_NAMES: [&str; 3] = ["kernel", "base", "sliver-ref"];

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("package {name}: {source}")]
    Package {
        name: &'static str,
        #[source]
        source: PackageError,
    },
    #[error("writing package {name}: {}: {source}", path.display())]
    Write {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("repository {}: {source}", path.display())]
    Repo {
        path: PathBuf,
        #[source]
        source: RepoError,
    },
    #[error("--binary {0}: the spec lists no such binary under [[base.binaries]]")]
    UnknownBinary(String),
    #[error("binary {name}: no path (give `--binary {name}=PATH` or `path` in the spec)")]
    NoBinaryPath { name: String },
    #[error("binary {name}: {}: {source}", path.display())]
    BinaryMissing {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("file {dest}: {}: {source}", path.display())]
    FileMissing {
        dest: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--only {0}: the spec has no such package (it has: {1})")]
    NotInSpec(String, String),
    #[error("nothing to do: give --repo, --out-dir or both")]
    NoDestination,
}

/// What to build and where to put it.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub spec: ImageSpec,
    /// Relative paths in the spec are relative to this directory.
    pub spec_dir: PathBuf,
    /// `--binary NAME=PATH` overrides.
    pub binaries: BTreeMap<String, PathBuf>,
    pub mtime: Mtime,
    /// Build only these packages (default: every one the spec names).
    pub only: Option<BTreeSet<String>>,
    /// Keep the package files here as `NAME-VERSION.tar.gz`.
    pub out_dir: Option<PathBuf>,
    /// Add the packages to this repository's pending list.
    pub repo: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct BuiltPackage {
    pub name: &'static str,
    pub version: String,
    pub base_image: bool,
    /// Compressed size in bytes.
    pub length: u64,
    pub entries: usize,
    /// In `--out-dir`, when given.
    pub file: Option<PathBuf>,
    /// As listed in the repository's pending set, when given.
    pub target: Option<TargetInfo>,
}

#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub built: Vec<BuiltPackage>,
    pub skipped: Vec<Skipped>,
}

fn spec_names(spec: &ImageSpec) -> Vec<&'static str> {
    let mut names = Vec::new();
    if spec.kernel.is_some() {
        names.push("kernel");
    }
    if spec.base.is_some() {
        names.push("base");
    }
    if spec.sliver_ref.is_some() {
        names.push("sliver-ref");
    }
    names
}

fn relative_to(dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

/// Resolves each binary the spec lists to an existing file.
/// The `[[base.files]]` of the spec, read now so a missing one fails early.
fn base_files(opts: &BuildOptions) -> Result<Vec<(String, Vec<u8>, u32)>, BuildError> {
    let Some(base) = &opts.spec.base else {
        return Ok(Vec::new());
    };
    base.files
        .iter()
        .map(|f| {
            let path = relative_to(&opts.spec_dir, &f.path);
            let bytes = fs::read(&path).map_err(|source| BuildError::FileMissing {
                dest: f.dest.clone(),
                path,
                source,
            })?;
            Ok((f.dest.clone(), bytes, f.mode))
        })
        .collect()
}

fn programs(opts: &BuildOptions) -> Result<Vec<ProgramFile>, BuildError> {
    let listed: Vec<_> = opts
        .spec
        .base
        .iter()
        .flat_map(|b| b.binaries.iter())
        .collect();
    for name in opts.binaries.keys() {
        if !listed.iter().any(|b| &b.name == name) {
            return Err(BuildError::UnknownBinary(name.clone()));
        }
    }
    listed
        .into_iter()
        .map(|binary| {
            let path = match (opts.binaries.get(&binary.name), &binary.path) {
                (Some(path), _) => path.clone(),
                (None, Some(path)) => relative_to(&opts.spec_dir, path),
                (None, None) => {
                    return Err(BuildError::NoBinaryPath {
                        name: binary.name.clone(),
                    })
                }
            };
            fs::File::open(&path).map_err(|source| BuildError::BinaryMissing {
                name: binary.name.clone(),
                path: path.clone(),
                source,
            })?;
            Ok(ProgramFile {
                name: binary.name.clone(),
                dest: binary.dest.clone(),
                path,
            })
        })
        .collect()
}

fn find_kernel(opts: &BuildOptions) -> Result<Option<Kernel>, BuildError> {
    let Some(spec) = &opts.spec.kernel else {
        return Ok(None);
    };
    let kernel = match (&spec.image, &spec.modules_dir, &spec.release) {
        (Some(image), Some(modules), _) => Kernel::from_paths(
            &relative_to(&opts.spec_dir, image),
            &relative_to(&opts.spec_dir, modules),
        )?,
        (_, _, Some(release)) => {
            Kernel::find(Some(release), Path::new("/boot"), Path::new("/lib/modules"))?
        }
        _ => Kernel::find_or_install_debian()?,
    };
    Ok(Some(kernel))
}

/// Builds the packages; see the module documentation for the order of effects.
pub fn build(opts: &BuildOptions) -> Result<BuildReport, BuildError> {
    if opts.out_dir.is_none() && opts.repo.is_none() {
        return Err(BuildError::NoDestination);
    }
    let available = spec_names(&opts.spec);
    let wanted: Vec<&'static str> = match &opts.only {
        Some(only) => {
            for name in only {
                if !available.contains(&name.as_str()) {
                    return Err(BuildError::NotInSpec(name.clone(), available.join(", ")));
                }
            }
            available
                .iter()
                .copied()
                .filter(|n| only.contains(*n))
                .collect()
        }
        None => available,
    };
    // Fail on a bad repository or missing input before the long work.
    let repo = match &opts.repo {
        Some(dir) => Some(Repository::open(dir).map_err(|source| BuildError::Repo {
            path: dir.clone(),
            source,
        })?),
        None => None,
    };
    if let Some(dir) = &opts.out_dir {
        fs::create_dir_all(dir).map_err(|source| BuildError::Write {
            name: "output",
            path: dir.clone(),
            source,
        })?;
    }
    let (programs, files) = if wanted.contains(&"base") {
        (programs(opts)?, base_files(opts)?)
    } else {
        (Vec::new(), Vec::new())
    };
    let kernel = if wanted.contains(&"kernel") {
        find_kernel(opts)?
    } else {
        None
    };

    let scratch = tempfile::Builder::new()
        .prefix(".mkimage-")
        .tempdir_in(opts.out_dir.as_deref().unwrap_or(&std::env::temp_dir()))
        .map_err(|source| BuildError::Write {
            name: "output",
            path: std::env::temp_dir(),
            source,
        })?;
    let mut report = BuildReport::default();
    let mut rendered = Vec::new();
    for name in wanted {
        let package = match name {
            "kernel" => {
                let spec = opts.spec.kernel.as_ref();
                let (Some(kernel), Some(spec)) = (&kernel, spec) else {
                    continue;
                };
                let version = spec.version.as_deref().unwrap_or(&opts.spec.version);
                packages::kernel_package(kernel, spec.trim, &spec.extra_modules, version)
                    .map_err(|source| BuildError::Package { name, source })?
            }
            "base" => {
                let Some(spec) = &opts.spec.base else {
                    continue;
                };
                let version = spec.version.as_deref().unwrap_or(&opts.spec.version);
                packages::base_package(spec, &programs, &files, version)
                    .map_err(|source| BuildError::Package { name, source })?
            }
            _ => {
                let Some(spec) = &opts.spec.sliver_ref else {
                    continue;
                };
                let version = spec.version.as_deref().unwrap_or(&opts.spec.version);
                match packages::sliver_ref_package(spec, version)
                    .map_err(|source| BuildError::Package { name, source })?
                {
                    Ok(package) => package,
                    Err(skipped) => {
                        tracing::warn!(package = skipped.name, reason = %skipped.reason, "skipped");
                        report.skipped.push(skipped);
                        continue;
                    }
                }
            }
        };
        let path = scratch
            .path()
            .join(format!("{}-{}.tar.gz", package.name, package.version));
        let length = render(&package, &path, opts.mtime)?;
        rendered.push((package, path, length));
    }

    // Everything is built: now make it visible.
    for (package, path, length) in rendered {
        let name = package.name;
        let file_name = format!("{}-{}.tar.gz", package.name, package.version);
        let target = match &repo {
            Some(repo) => Some(
                repo.add_package(
                    &path,
                    name,
                    &package.version,
                    package.base_image,
                    package.custom.clone(),
                )
                .map_err(|source| BuildError::Repo {
                    path: repo.dir().to_path_buf(),
                    source,
                })?,
            ),
            None => None,
        };
        let file = match &opts.out_dir {
            Some(dir) => {
                let dest = dir.join(&file_name);
                fs::rename(&path, &dest).map_err(|source| BuildError::Write {
                    name,
                    path: dest.clone(),
                    source,
                })?;
                Some(dest)
            }
            None => None,
        };
        tracing::info!(package = name, version = %package.version, bytes = length, "built");
        report.built.push(BuiltPackage {
            name,
            version: package.version.clone(),
            base_image: package.base_image,
            length,
            entries: package.tree.len(),
            file,
            target,
        });
    }
    Ok(report)
}

/// Writes one package file, returning its length.
fn render(package: &PackageTree, path: &Path, mtime: Mtime) -> Result<u64, BuildError> {
    let name = package.name;
    let err = |source| BuildError::Write {
        name,
        path: path.to_path_buf(),
        source,
    };
    let bar = progress::bytes(package.tree.file_bytes(), name);
    let file = fs::File::create(path).map_err(err)?;
    let writer = write_tar_gz(
        &package.tree,
        BufWriter::with_capacity(1 << 20, file),
        mtime,
        &bar,
    )
    .map_err(err)?;
    let file = writer.into_inner().map_err(|e| err(e.into_error()))?;
    file.sync_all().map_err(err)?;
    bar.finish_and_clear();
    Ok(file.metadata().map_err(err)?.len())
}
