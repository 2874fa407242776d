//! The command line of `bootcd`: argument types only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use config::node::ServerUrl;

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
pub struct BuildArgs {
    /// Where to write the image (IMAGE.iso; the signature goes to IMAGE.iso.sig).
    #[arg(short, long, value_name = "IMAGE.iso")]
    pub output: PathBuf,
    /// The static init binary (cargo build -p init --profile node --target x86_64-unknown-linux-musl).
    #[arg(long, value_name = "PATH")]
    pub init: PathBuf,
    /// The repository's trusted root metadata (REPO/metadata/root.json).
    #[arg(long, value_name = "PATH")]
    pub root_json: PathBuf,
    /// The boot server CA certificate (PEM): the only TLS trust root of the node.
    #[arg(long, value_name = "PATH")]
    pub ca: PathBuf,
    /// Boot server URL (https://host:port), tried in order. Repeatable.
    #[arg(long = "server-url", required = true, value_name = "URL")]
    pub server_urls: Vec<ServerUrl>,
    /// The CD's version (e.g. 2026.11.1).
    #[arg(long, value_name = "VERSION")]
    pub cd_version: String,
    /// pkgsign secret key to sign the image with.
    #[arg(long, value_name = "KEY", required_unless_present = "unsigned")]
    pub key: Option<PathBuf>,
    /// Build without a signature (for experiments; `verify` will refuse it).
    #[arg(long, conflicts_with = "key")]
    pub unsigned: bool,
    /// Kernel release (uname -r) from /boot and /lib/modules (default: the newest).
    #[arg(long, value_name = "RELEASE", conflicts_with_all = ["kernel", "modules_dir"])]
    pub kernel_release: Option<String>,
    /// Kernel image to use instead of one from /boot (needs --modules-dir).
    #[arg(long, value_name = "PATH", requires = "modules_dir")]
    pub kernel: Option<PathBuf>,
    /// Module directory of that kernel (/lib/modules/RELEASE).
    #[arg(long, value_name = "DIR", requires = "kernel")]
    pub modules_dir: Option<PathBuf>,
    /// A kernel module to add beyond the node's set (repeatable).
    #[arg(long = "module", value_name = "NAME")]
    pub modules: Vec<String>,
    /// Put this node config into the per-node area of the built image.
    #[arg(long, value_name = "FILE")]
    pub node_config: Option<PathBuf>,
    /// File times and the CD's build time, in seconds since 1970 (default: now,
    /// which makes the build not reproducible).
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS")]
    pub source_date_epoch: Option<u32>,
    /// busybox-static binary.
    #[arg(long, value_name = "PATH", default_value = "/bin/busybox")]
    pub busybox: PathBuf,
    /// e2fsprogs' mke2fs (its libraries come along).
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/mke2fs")]
    pub mke2fs: PathBuf,
    /// Leave dropbear (debug ssh) out.
    #[arg(long)]
    pub no_dropbear: bool,
}
