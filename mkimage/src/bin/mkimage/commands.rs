//! What `mkimage` does for each command, through the library.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use mkimage::build::{build, BuildOptions};
use mkimage::ImageSpec;

use crate::cli::Command;

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Build {
            spec: spec_path,
            repo,
            out_dir,
            binaries,
            only,
            source_date_epoch,
        } => {
            let spec = ImageSpec::load(&spec_path)?;
            let mut overrides = BTreeMap::new();
            for (name, path) in binaries {
                if overrides.insert(name.clone(), path).is_some() {
                    bail!("--binary {name} given twice");
                }
            }
            let spec_dir = spec_path
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_default();
            let mtime = mkimage::mtime_or_now(source_date_epoch.or(spec.source_date_epoch));
            let opts = BuildOptions {
                spec,
                spec_dir: if spec_dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    spec_dir
                },
                binaries: overrides,
                mtime,
                only: (!only.is_empty()).then(|| only.into_iter().collect::<BTreeSet<_>>()),
                out_dir,
                repo: repo.clone(),
            };
            let report =
                build(&opts).with_context(|| format!("building {}", spec_path.display()))?;
            for package in &report.built {
                let mut line = format!(
                    "{} {}: {} bytes, {} entries{}",
                    package.name,
                    package.version,
                    package.length,
                    package.entries,
                    if package.base_image {
                        ", base image"
                    } else {
                        ""
                    }
                );
                if let Some(target) = &package.target {
                    line.push_str(&format!(", sha256 {}", target.hashes.sha256));
                }
                if let Some(file) = &package.file {
                    line.push_str(&format!(", {}", file.display()));
                }
                println!("{line}");
            }
            for skipped in &report.skipped {
                println!("{}: skipped: {}", skipped.name, skipped.reason);
            }
            if let Some(repo) = repo {
                println!(
                    "added to {} (pending): run `pkgsign repo publish` to sign and publish",
                    repo.display()
                );
            }
            Ok(())
        }
    }
}
