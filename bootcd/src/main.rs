//! `bootcd`: builds, signs, customises and inspects the node boot CD.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bootcd::build::{build, BuildOptions, KernelChoice};
use bootcd::customize::customize;
use bootcd::inspect::{inspect, verify};
use clap::{Args, Parser, Subcommand};
use config::node::ServerUrl;
use pkgsign::PublicKey;

#[derive(Parser)]
#[command(
    name = "bootcd",
    version,
    about = "Builds, signs, customises and inspects the node boot CD (hybrid BIOS/UEFI ISO)",
    long_about = "Builds the node boot CD: a hybrid ISO (BIOS via isolinux, UEFI via GRUB; also \
                  bootable when written to a disk or USB stick with dd) holding the kernel and an \
                  initramfs with init, the repository's root metadata, the boot server CA and URLs. \
                  The CD is signed with a pkgsign key (IMAGE.iso.sig) over the whole image with its \
                  64 KiB per-node area read as zeros, so per-node copies made with `customize` keep \
                  the same signature."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a CD image (and IMAGE.iso.sig).
    Build(Box<BuildArgs>),
    /// Check an image against its signature and a trusted key; report the per-node area.
    Verify {
        image: PathBuf,
        /// Trusted public key (pkgsign NAME.pub; a secret key file works too). Repeatable.
        #[arg(long = "key", required = true, value_name = "KEY")]
        keys: Vec<PathBuf>,
        /// Signature file (default: IMAGE.sig beside the image).
        #[arg(long)]
        signature: Option<PathBuf>,
    },
    /// Make a per-node copy of an image with a node config in its per-node area.
    ///
    /// The config (node.toml or PlanetLab's plnode.txt) must parse; it lands
    /// on the node as /etc/plnode/node/node.toml or /etc/plnode/node/plnode.txt.
    /// BASE.sig, if present, is copied to OUTPUT.sig and still verifies.
    Customize {
        base: PathBuf,
        #[arg(long, value_name = "FILE")]
        node_config: PathBuf,
        #[arg(short, long, value_name = "OUTPUT.iso")]
        output: PathBuf,
    },
    /// Print what an image carries: versions, servers, CA fingerprint, root
    /// version, node id, signature status.
    Show {
        image: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct BuildArgs {
    /// Where to write the image (IMAGE.iso; the signature goes to IMAGE.iso.sig).
    #[arg(short, long, value_name = "IMAGE.iso")]
    output: PathBuf,
    /// The static init binary (cargo build -p init --profile node --target x86_64-unknown-linux-musl).
    #[arg(long, value_name = "PATH")]
    init: PathBuf,
    /// The repository's trusted root metadata (REPO/metadata/root.json).
    #[arg(long, value_name = "PATH")]
    root_json: PathBuf,
    /// The boot server CA certificate (PEM): the only TLS trust root of the node.
    #[arg(long, value_name = "PATH")]
    ca: PathBuf,
    /// Boot server URL (https://host:port), tried in order. Repeatable.
    #[arg(long = "server-url", required = true, value_name = "URL")]
    server_urls: Vec<ServerUrl>,
    /// The CD's version (e.g. 2026.11.1).
    #[arg(long, value_name = "VERSION")]
    cd_version: String,
    /// pkgsign secret key to sign the image with.
    #[arg(long, value_name = "KEY", required_unless_present = "unsigned")]
    key: Option<PathBuf>,
    /// Build without a signature (for experiments; `verify` will refuse it).
    #[arg(long, conflicts_with = "key")]
    unsigned: bool,
    /// Kernel release (uname -r) from /boot and /lib/modules (default: the newest).
    #[arg(long, value_name = "RELEASE", conflicts_with_all = ["kernel", "modules_dir"])]
    kernel_release: Option<String>,
    /// Kernel image to use instead of one from /boot (needs --modules-dir).
    #[arg(long, value_name = "PATH", requires = "modules_dir")]
    kernel: Option<PathBuf>,
    /// Module directory of that kernel (/lib/modules/RELEASE).
    #[arg(long, value_name = "DIR", requires = "kernel")]
    modules_dir: Option<PathBuf>,
    /// A kernel module to add beyond the node's set (repeatable).
    #[arg(long = "module", value_name = "NAME")]
    modules: Vec<String>,
    /// Put this node config into the per-node area of the built image.
    #[arg(long, value_name = "FILE")]
    node_config: Option<PathBuf>,
    /// File times and the CD's build time, in seconds since 1970 (default: now,
    /// which makes the build not reproducible).
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS")]
    source_date_epoch: Option<u32>,
    /// busybox-static binary.
    #[arg(long, value_name = "PATH", default_value = "/bin/busybox")]
    busybox: PathBuf,
    /// e2fsprogs' mke2fs (its libraries come along).
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/mke2fs")]
    mke2fs: PathBuf,
    /// Leave dropbear (debug ssh) out.
    #[arg(long)]
    no_dropbear: bool,
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
        Ok(code) => code,
        Err(e) => {
            eprintln!("bootcd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Build(args) => {
            let args = *args;
            let started = Instant::now();
            let mut opts = BuildOptions::new(
                args.output,
                args.init,
                args.root_json,
                args.ca,
                args.server_urls,
                args.cd_version,
                mkimage::mtime_or_now(args.source_date_epoch),
            );
            opts.kernel = match (args.kernel_release, args.kernel, args.modules_dir) {
                (Some(release), _, _) => KernelChoice::Release(release),
                (None, Some(image), Some(modules_dir)) => {
                    KernelChoice::Paths { image, modules_dir }
                }
                _ => KernelChoice::Newest,
            };
            opts.extra_modules = args.modules;
            opts.signing_key = args.key;
            opts.node_config = args.node_config;
            opts.busybox = args.busybox;
            opts.mke2fs = args.mke2fs;
            opts.dropbear = !args.no_dropbear;
            let report = build(&opts).context("building the CD")?;
            println!(
                "{}: {} bytes (initramfs {} bytes, {} modules, kernel {}), CD {} in {:.1} s",
                report.iso.display(),
                report.iso_bytes,
                report.initrd_bytes,
                report.modules,
                report.cd_info.kernel_version,
                report.cd_info.cd_version,
                started.elapsed().as_secs_f64()
            );
            match &report.signature {
                Some(sig) => println!("{}: signature", sig.display()),
                None => println!("unsigned (built with --unsigned)"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            image,
            keys,
            signature,
        } => {
            let trusted = keys
                .iter()
                .map(|k| {
                    PublicKey::load_public_or_secret(k)
                        .with_context(|| format!("loading key {}", k.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            let verified = verify(&image, signature.as_deref(), &trusted)
                .with_context(|| format!("verifying {}", image.display()))?;
            println!("{}: signature OK (key {})", image.display(), verified.keyid);
            if verified.node_area.files.is_empty() {
                println!("per-node area: blank");
            } else {
                for line in &verified.node_area.description {
                    println!("per-node area (unsigned): {line}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Customize {
            base,
            node_config,
            output,
        } => {
            let started = Instant::now();
            let report = customize(&base, &node_config, &output).with_context(|| {
                format!(
                    "customising {} with {}",
                    base.display(),
                    node_config.display()
                )
            })?;
            for warning in &report.node_config.warnings {
                eprintln!("bootcd: warning: {}: {warning}", node_config.display());
            }
            println!(
                "{}: node {} ({}) in the per-node area as etc/plnode/node/{}, CD {}, in {:.3} s",
                report.output.display(),
                report.node_config.config.node_id,
                report.node_config.config.fqdn(),
                report.node_config.form.file_name(),
                report.cd_info.cd_version,
                started.elapsed().as_secs_f64()
            );
            match &report.signature {
                Some(sig) => println!(
                    "{}: copied (covers everything but the per-node area)",
                    sig.display()
                ),
                None => println!("the base image has no signature beside it; neither has the copy"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { image, json } => {
            let report = inspect(&image).with_context(|| format!("reading {}", image.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(ExitCode::SUCCESS);
            }
            let cd = &report.cd;
            println!(
                "image:        {} ({} bytes)",
                report.image.display(),
                report.size
            );
            println!("cd version:   {}", cd.cd_version);
            println!("built:        {}", cd.build_time);
            println!("kernel:       {}", cd.kernel_version);
            for (i, url) in cd.server_urls.iter().enumerate() {
                println!(
                    "{}{url}",
                    if i == 0 {
                        "servers:      "
                    } else {
                        "              "
                    }
                );
            }
            println!("CA sha256:    {}", cd.ca_sha256);
            match &report.root {
                Some(root) => println!(
                    "root:         version {}, expires {}, {} root key(s), threshold {}",
                    root.version,
                    root.expires,
                    root.root_keys.len(),
                    root.threshold
                ),
                None => println!(
                    "root:         version {} (root.json unreadable on the image)",
                    cd.root_version
                ),
            }
            match &report.node_area {
                Ok(area) if area.files.is_empty() => {
                    println!("node:         none (blank per-node area)")
                }
                Ok(area) => {
                    for line in &area.description {
                        println!("node:         {line}");
                    }
                }
                Err(e) => println!("node:         INVALID per-node area: {e}"),
            }
            match &report.signature {
                None => println!("signature:    none beside the image"),
                Some(sig) => {
                    let verdict = match (&sig.problem, sig.content_matches, sig.by_cd_root_key) {
                        (Some(problem), _, _) => format!("unusable: {problem}"),
                        (None, false, _) => "does NOT match the image".to_string(),
                        (None, true, true) => {
                            format!("matches, by key {} (a root key of this CD)", sig.keyid)
                        }
                        (None, true, false) => format!(
                            "matches, by key {} (check it with `bootcd verify --key`)",
                            sig.keyid
                        ),
                    };
                    println!("signature:    {}: {verdict}", sig.path.display());
                }
            }
            if report.node_area.is_err() {
                bail!("the per-node area of {} is not valid", image.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
