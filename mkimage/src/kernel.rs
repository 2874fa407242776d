//! Finding the kernel to pack: an image (`vmlinuz`) and its module directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("kernel image {}: {source}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel modules {}: no modules.dep there ({source})", path.display())]
    Modules {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no kernel {release:?}: {} is missing", missing.display())]
    NoSuchRelease { release: String, missing: PathBuf },
    #[error("no kernel found: no {boot}/vmlinuz-* with a matching {modules}/<release>/modules.dep{hint}")]
    NoneFound {
        boot: String,
        modules: String,
        hint: &'static str,
    },
    #[error("installing linux-image-amd64 failed: {0}")]
    Install(String),
}

/// A kernel image and the modules built for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// `uname -r`, e.g. `6.1.0-56-amd64`: the module directory's name.
    pub release: String,
    pub image: PathBuf,
    pub modules_dir: PathBuf,
}

impl Kernel {
    /// A kernel given by paths; the release is the module directory's name.
    pub fn from_paths(image: &Path, modules_dir: &Path) -> Result<Kernel, KernelError> {
        fs::File::open(image).map_err(|source| KernelError::Image {
            path: image.to_path_buf(),
            source,
        })?;
        fs::metadata(modules_dir.join("modules.dep")).map_err(|source| KernelError::Modules {
            path: modules_dir.to_path_buf(),
            source,
        })?;
        let release = modules_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| KernelError::Modules {
                path: modules_dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "directory name is not the release",
                ),
            })?
            .to_string();
        Ok(Kernel {
            release,
            image: image.to_path_buf(),
            modules_dir: modules_dir.to_path_buf(),
        })
    }

    /// `release` from `boot_dir/vmlinuz-<release>` and `modules_root/<release>`,
    /// or, with no release, the newest kernel that has both.
    pub fn find(
        release: Option<&str>,
        boot_dir: &Path,
        modules_root: &Path,
    ) -> Result<Kernel, KernelError> {
        if let Some(release) = release {
            let image = boot_dir.join(format!("vmlinuz-{release}"));
            let modules = modules_root.join(release);
            for path in [&image, &modules] {
                if !path.exists() {
                    return Err(KernelError::NoSuchRelease {
                        release: release.into(),
                        missing: path.clone(),
                    });
                }
            }
            return Kernel::from_paths(&image, &modules);
        }
        let mut candidates: Vec<(Vec<u64>, String)> = fs::read_dir(boot_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("vmlinuz-"))
                    .map(str::to_string)
            })
            .filter(|r| modules_root.join(r).join("modules.dep").is_file())
            .map(|r| (version_key(&r), r))
            .collect();
        candidates.sort();
        let Some((_, newest)) = candidates.pop() else {
            return Err(KernelError::NoneFound {
                boot: boot_dir.display().to_string(),
                modules: modules_root.display().to_string(),
                hint: "",
            });
        };
        Kernel::from_paths(
            &boot_dir.join(format!("vmlinuz-{newest}")),
            &modules_root.join(newest),
        )
    }

    /// The newest Debian kernel on this machine; installs `linux-image-amd64`
    /// with apt when there is none (as a build machine starts out).
    pub fn find_or_install_debian() -> Result<Kernel, KernelError> {
        let boot = Path::new("/boot");
        let modules = Path::new("/lib/modules");
        match Kernel::find(None, boot, modules) {
            Ok(kernel) => Ok(kernel),
            Err(KernelError::NoneFound { .. }) if Path::new("/usr/bin/apt-get").exists() => {
                tracing::info!("no kernel in /boot: installing Debian's linux-image-amd64");
                let status = Command::new("apt-get")
                    .args([
                        "install",
                        "-y",
                        "--no-install-recommends",
                        "linux-image-amd64",
                    ])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .status()
                    .map_err(|e| KernelError::Install(e.to_string()))?;
                if !status.success() {
                    return Err(KernelError::Install(format!(
                        "apt-get exited with {status}"
                    )));
                }
                Kernel::find(None, boot, modules)
            }
            Err(KernelError::NoneFound { boot, modules, .. }) => Err(KernelError::NoneFound {
                boot,
                modules,
                hint: " (install Debian's linux-image-amd64)",
            }),
            Err(e) => Err(e),
        }
    }
}

/// Orders `6.1.0-56-amd64` after `6.1.0-9-amd64`: numbers compared as numbers.
fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_complete_kernel_is_chosen() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot");
        let modules = dir.path().join("modules");
        for (release, complete) in [
            ("6.1.0-9-amd64", true),
            ("6.1.0-56-amd64", true),
            ("6.2.0-1-amd64", false),
        ] {
            fs::create_dir_all(&boot).unwrap();
            fs::write(boot.join(format!("vmlinuz-{release}")), "k").unwrap();
            fs::create_dir_all(modules.join(release)).unwrap();
            if complete {
                fs::write(modules.join(release).join("modules.dep"), "").unwrap();
            }
        }
        let k = Kernel::find(None, &boot, &modules).unwrap();
        assert_eq!(k.release, "6.1.0-56-amd64");
        let e = Kernel::find(Some("5.10.0-1-amd64"), &boot, &modules).unwrap_err();
        assert!(e.to_string().contains("vmlinuz-5.10.0-1-amd64"), "{e}");
        let e = Kernel::from_paths(&boot.join("nope"), &modules.join("6.1.0-9-amd64")).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
