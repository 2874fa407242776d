//! `mkimage`: builds the node OS packages into a pkgsign repository.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use mkimage::build::{build, BuildOptions, PACKAGE_NAMES};
use mkimage::ImageSpec;

#[derive(Parser)]
#[command(
    name = "mkimage",
    version,
    about = "Builds the node OS packages (kernel, base, sliver-ref) into a pkgsign repository",
    long_about = "Builds the node OS packages (kernel, base, sliver-ref) described by a TOML spec \
                  (see config/examples/nodeos.toml) as reproducible .tar.gz files and adds them to \
                  a pkgsign repository's pending list. Publishing is `pkgsign repo publish`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the packages a spec describes and add them to a repository.
    ///
    /// Same inputs and same SOURCE_DATE_EPOCH give byte-identical packages.
    /// Nothing is added or written unless every package was built.
    Build {
        /// The package-set spec (TOML).
        spec: PathBuf,
        /// Repository to add the packages to (made with `pkgsign repo init`).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// Also keep the package files here, as NAME-VERSION.tar.gz.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Where a program listed in the spec's [[base.binaries]] is,
        /// overriding its `path` (e.g. `--binary init=target/.../init`).
        #[arg(long = "binary", value_name = "NAME=PATH", value_parser = parse_binary)]
        binaries: Vec<(String, PathBuf)>,
        /// Build only these packages (repeatable): kernel, base, sliver-ref.
        #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(PACKAGE_NAMES))]
        only: Vec<String>,
        /// Time stamp of every file in the packages, in seconds since 1970
        /// (default: the spec's source_date_epoch, else now).
        #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS")]
        source_date_epoch: Option<u32>,
    },
}

fn parse_binary(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("expected NAME=PATH, got {arg:?}")),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkimage: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
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
