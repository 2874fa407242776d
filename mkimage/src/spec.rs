//! The package-set spec: a small TOML file saying which packages to build
//! and from what (see `config/examples/nodeos.toml`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
}

/// The whole spec.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Version given to every package that does not set its own.
    pub version: String,
    /// Time stamp for every file in the packages when neither
    /// `--source-date-epoch` nor `SOURCE_DATE_EPOCH` gives one.
    #[serde(default)]
    pub source_date_epoch: Option<u32>,
    #[serde(default)]
    pub kernel: Option<KernelSpec>,
    #[serde(default)]
    pub base: Option<BaseSpec>,
    #[serde(default)]
    pub sliver_ref: Option<SliverRefSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    #[serde(default)]
    pub version: Option<String>,
    /// `uname -r` of a kernel in /boot and /lib/modules; default: the newest.
    #[serde(default)]
    pub release: Option<String>,
    /// Explicit kernel image and module directory (both or neither).
    #[serde(default)]
    pub image: Option<PathBuf>,
    #[serde(default)]
    pub modules_dir: Option<PathBuf>,
    /// Keep only the node's modules (`mkimage::kmod::NODE_MODULES` plus
    /// `extra_modules`) and what they depend on.
    #[serde(default)]
    pub trim: bool,
    #[serde(default)]
    pub extra_modules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseSpec {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default = "default_busybox")]
    pub busybox: PathBuf,
    #[serde(default)]
    pub ssh: SshServer,
    /// The project's node-side programs.
    #[serde(default)]
    pub binaries: Vec<BinarySpec>,
    /// Configuration files copied in as they are (e.g. the supervisor's
    /// service list, `/etc/plnode/supervisor.toml`).
    #[serde(default)]
    pub files: Vec<FileSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Absolute path inside the node's root.
    pub dest: String,
    /// The file to copy, relative to the spec file.
    pub path: PathBuf,
    /// Permission bits (default 0o644).
    #[serde(default = "default_file_mode")]
    pub mode: u32,
}

fn default_file_mode() -> u32 {
    0o644
}

fn default_busybox() -> PathBuf {
    PathBuf::from(crate::busybox::DEFAULT_BUSYBOX)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SshServer {
    /// Debian's dropbear-bin, with its libraries.
    #[default]
    Dropbear,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinarySpec {
    /// Name used on the command line (`--binary NAME=PATH`).
    pub name: String,
    /// Absolute path inside the node's root.
    pub dest: String,
    /// Where the built program is, relative to the spec file; the command
    /// line can override it.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliverRefSpec {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub flavour: SliverFlavour,
    #[serde(default = "default_suite")]
    pub suite: String,
    #[serde(default = "default_mirror")]
    pub mirror: String,
    #[serde(default = "default_busybox")]
    pub busybox: PathBuf,
}

fn default_suite() -> String {
    "bookworm".into()
}

fn default_mirror() -> String {
    "http://deb.debian.org/debian".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SliverFlavour {
    /// busybox and an /etc skeleton: small and quick (tests).
    #[default]
    Busybox,
    /// A Debian minbase made with `debootstrap --variant=minbase`.
    Debootstrap,
}

impl ImageSpec {
    pub fn load(path: &Path) -> Result<ImageSpec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.into(),
            source,
        })?;
        ImageSpec::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<ImageSpec, SpecError> {
        let err = |message: String| SpecError::Parse {
            path: path.into(),
            message,
        };
        let spec: ImageSpec =
            toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        let mut versions = vec![("version", Some(&spec.version))];
        versions.push((
            "kernel.version",
            spec.kernel.as_ref().and_then(|k| k.version.as_ref()),
        ));
        versions.push((
            "base.version",
            spec.base.as_ref().and_then(|b| b.version.as_ref()),
        ));
        versions.push((
            "sliver_ref.version",
            spec.sliver_ref.as_ref().and_then(|s| s.version.as_ref()),
        ));
        for (field, version) in versions {
            if let Some(version) = version {
                if !pkgsign::metadata::valid_name(version) {
                    return Err(err(format!(
                        "{field} = {version:?}: use letters, digits and . _ + - (starting with a letter or digit)"
                    )));
                }
            }
        }
        if let Some(kernel) = &spec.kernel {
            if kernel.image.is_some() != kernel.modules_dir.is_some() {
                return Err(err(
                    "kernel: give both `image` and `modules_dir`, or neither".into(),
                ));
            }
            if kernel.release.is_some() && kernel.image.is_some() {
                return Err(err(
                    "kernel: `release` and `image`/`modules_dir` exclude each other".into(),
                ));
            }
        }
        if let Some(base) = &spec.base {
            let mut names = std::collections::BTreeSet::new();
            for binary in &base.binaries {
                if !names.insert(&binary.name) {
                    return Err(err(format!(
                        "base.binaries: {:?} is listed twice",
                        binary.name
                    )));
                }
                if !binary.dest.starts_with('/') || crate::tree::image_path(&binary.dest).is_err() {
                    return Err(err(format!(
                        "base.binaries {:?}: dest {:?} must be an absolute path without `.` or `..`",
                        binary.name, binary.dest
                    )));
                }
            }
        }
        if spec.kernel.is_none() && spec.base.is_none() && spec.sliver_ref.is_none() {
            return Err(err(
                "names no package: add a [kernel], [base] or [sliver_ref] section".into(),
            ));
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_spec_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/nodeos.toml");
        let spec = ImageSpec::load(&path).unwrap();
        assert!(spec.kernel.as_ref().unwrap().trim);
        assert_eq!(spec.base.as_ref().unwrap().binaries[0].name, "init");
        assert_eq!(
            spec.sliver_ref.as_ref().unwrap().flavour,
            SliverFlavour::Busybox
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let p = Path::new("spec.toml");
        let e =
            ImageSpec::parse("version = \"1\"\n[kernel]\ntrim = true\nbogus = 1\n", p).unwrap_err();
        assert!(
            e.to_string().contains("bogus") && e.to_string().contains("spec.toml"),
            "{e}"
        );
        let e = ImageSpec::parse("version = \"../x\"\n[kernel]\n", p).unwrap_err();
        assert!(e.to_string().contains("version"), "{e}");
        let e = ImageSpec::parse("version = \"1\"\n", p).unwrap_err();
        assert!(e.to_string().contains("names no package"), "{e}");
        let e = ImageSpec::parse(
            "version = \"1\"\n[base]\n[[base.binaries]]\nname = \"init\"\ndest = \"sbin/init\"\n",
            p,
        )
        .unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
    }
}
