//! The command line of `mkimage`: argument types only.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use mkimage::build::PACKAGE_NAMES;

#[derive(Parser)]
#[command(
    name = "mkimage",
    version,
    about = "Builds the node OS packages (kernel, base, sliver-ref) into a pkgsign repository",
    long_about = "Builds the node OS packages (kernel, base, sliver-ref) described by a TOML spec \
                  (see config/examples/nodeos.toml) as reproducible .tar.gz files and adds them to \
                  a pkgsign repository's pending list. Publishing is `pkgsign repo publish`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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

pub fn parse_binary(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("expected NAME=PATH, got {arg:?}")),
    }
}
