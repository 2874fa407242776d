//! The command line of `pkgsign`: argument types only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Sign, publish, verify and install node OS packages.
///
/// Staff create keys (`keygen`), a repository (`repo init`), add packages
/// (`repo add`) and publish them signed (`repo publish`). Nodes and tools
/// check a repository against a trusted root (`verify`) and install
/// packages from it (`install`). Every failure prints one line and exits
/// non-zero, leaving target and state directories as they were.
#[derive(Parser)]
#[command(name = "pkgsign", version, about, long_about)]
pub struct Cli {
    /// More log output (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Generate an ed25519 key pair: NAME (secret, PKCS#8 PEM, mode 0600) and NAME.pub.
    Keygen {
        /// Path of the secret key; the public key goes to the same path plus `.pub`.
        /// Existing files are never overwritten.
        #[arg(long, value_name = "NAME")]
        out: PathBuf,
    },
    /// Work on a repository directory (staff side).
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Fetch and verify a repository's metadata against a trusted root.
    ///
    /// Walks the root chain, then checks timestamp, snapshot and targets
    /// (signatures, versions that never go back, expiry, hashes, lengths) and
    /// records the accepted versions in the state directory.
    Verify {
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Verify, then download and install packages into a directory.
    ///
    /// Each package is streamed once (length limit, sha256, gunzip, checked
    /// tar extraction) into a staging directory beside TARGET, which then
    /// replaces TARGET atomically. On any failure TARGET and the state
    /// directory are left as they were.
    Install {
        #[command(flatten)]
        source: SourceArgs,
        /// Directory to install into (replaced as a whole).
        #[arg(long, value_name = "DIR")]
        target: PathBuf,
        /// Put each package in TARGET/<name>/ instead of merging them.
        #[arg(long)]
        subdirs: bool,
        /// Write the manifest of installed files (for `verify-tree`) here.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Package names to install.
        #[arg(required = true, value_name = "PKG")]
        packages: Vec<String>,
    },
    /// Check an installed tree against its manifest (types, sizes, modes, links).
    VerifyTree {
        /// The installed directory.
        dir: PathBuf,
        /// Manifest written by `install --manifest`.
        #[arg(long, value_name = "FILE")]
        manifest: PathBuf,
        /// Also re-hash every file's content.
        #[arg(long)]
        full: bool,
    },
    /// Write a detached signature for a file (for example an ISO image).
    SignFile {
        /// File to sign.
        file: PathBuf,
        /// Secret key to sign with.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// Signature file [default: FILE.sig].
        #[arg(long, value_name = "SIG")]
        out: Option<PathBuf>,
    },
    /// Verify a file against a detached signature and trusted public keys.
    VerifyFile {
        /// File to check.
        file: PathBuf,
        /// Signature file [default: FILE.sig].
        #[arg(long, value_name = "SIG")]
        sig: Option<PathBuf>,
        /// Trusted public key (repeat for several).
        #[arg(long = "key", value_name = "KEY.pub", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Show a metadata document's type, version, expiry and signers (without trusting it).
    Inspect {
        /// A metadata file such as metadata/timestamp.json.
        file: PathBuf,
    },
}

#[derive(Args)]
pub struct SourceArgs {
    /// Repository: a directory, or an https:// base URL (…/repo).
    pub source: String,
    /// Trusted root metadata (for example the CD's root.json).
    #[arg(long, value_name = "ROOT.json")]
    pub root: PathBuf,
    /// Verifier state directory (holds the newest accepted metadata).
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// CA certificate (PEM) to trust for https sources; nothing else is trusted.
    #[arg(long, value_name = "CA.pem")]
    pub ca: Option<PathBuf>,
    /// HTTP proxy for https sources.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
}

#[derive(Subcommand)]
pub enum RepoCommand {
    /// Create a repository: root version 1 with keys and thresholds for every role.
    Init {
        /// Repository directory (holds metadata/, targets/, pending.json).
        repo: PathBuf,
        #[command(flatten)]
        roles: RoleKeyArgs,
        /// Secret keys to sign the root with (a threshold of the root keys).
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<PathBuf>,
        /// Root expiry: a duration (365d, 12h) or an RFC 3339 time.
        #[arg(long, default_value = "365d")]
        expires: String,
    },
    /// Copy a package (.tar.gz) into the repository and list it for the next publish.
    Add {
        /// Repository directory (holds metadata/, targets/, pending.json).
        repo: PathBuf,
        /// The package, a .tar.gz (for example made by `mkimage`).
        file: PathBuf,
        /// Package name nodes ask for (letters, digits, . _ + -).
        #[arg(long)]
        name: String,
        /// Package version (letters, digits, . _ + -).
        #[arg(long)]
        version: String,
        /// The package is a base image: may hold device nodes, setuid files and
        /// absolute symlinks, and keeps its ownership.
        #[arg(long)]
        base_image: bool,
        /// Extra signed field, KEY=VALUE (a string), repeatable.
        #[arg(long, value_name = "KEY=VALUE")]
        custom: Vec<String>,
    },
    /// List a package for removal at the next publish.
    Remove {
        /// Repository directory.
        repo: PathBuf,
        /// Package name.
        name: String,
    },
    /// Publish: new targets, snapshot and timestamp, signed with the given keys.
    Publish {
        /// Repository directory (holds metadata/, targets/, pending.json).
        repo: PathBuf,
        /// Secret keys; each document is signed by those that belong to its role.
        #[arg(long = "key", value_name = "KEY", required = true)]
        keys: Vec<PathBuf>,
        /// Expiry of targets and snapshot (and timestamp unless --timestamp-expires).
        #[arg(long, default_value = "30d")]
        expires: String,
        /// Expiry of the timestamp alone (nodes refuse an expired one: keep it
        /// short and refresh it with `repo timestamp`).
        #[arg(long, value_name = "EXPIRES")]
        timestamp_expires: Option<String>,
    },
    /// Re-sign only the timestamp with a new version and expiry.
    Timestamp {
        /// Repository directory (holds metadata/, targets/, pending.json).
        repo: PathBuf,
        /// Secret timestamp key(s).
        #[arg(long = "key", value_name = "KEY", required = true)]
        keys: Vec<PathBuf>,
        /// New timestamp expiry (duration like 1d or RFC 3339).
        #[arg(long, default_value = "1d")]
        expires: String,
    },
    /// Write the next root version with new keys for some roles, signed by a
    /// threshold of the old and of the new root keys.
    RotateRoot {
        /// Repository directory (holds metadata/, targets/, pending.json).
        repo: PathBuf,
        /// Roles given here get these keys; the others keep theirs.
        #[command(flatten)]
        roles: RoleKeyArgs,
        /// Secret keys: a threshold of the old root keys and of the new ones.
        #[arg(long = "key", value_name = "KEY", required = true)]
        keys: Vec<PathBuf>,
        /// Expiry of the new root (duration like 365d, or RFC 3339).
        #[arg(long, default_value = "365d")]
        expires: String,
    },
    /// Print the repository's roles, versions, expiries, packages and pending changes.
    Show {
        /// Repository directory.
        repo: PathBuf,
    },
}

/// Public keys and thresholds per role (a secret key file works too).
#[derive(Args)]
pub struct RoleKeyArgs {
    /// Public key of the root role (repeat for several; a secret key file works too).
    #[arg(long = "root-key", value_name = "KEY.pub")]
    pub root_keys: Vec<PathBuf>,
    /// How many root keys must sign [default: 1].
    #[arg(long, value_name = "K")]
    pub root_threshold: Option<u32>,
    /// Public key of the targets role (repeat for several; a secret key file works too).
    #[arg(long = "targets-key", value_name = "KEY.pub")]
    pub targets_keys: Vec<PathBuf>,
    /// How many targets keys must sign [default: 1].
    #[arg(long, value_name = "K")]
    pub targets_threshold: Option<u32>,
    /// Public key of the snapshot role (repeat for several; a secret key file works too).
    #[arg(long = "snapshot-key", value_name = "KEY.pub")]
    pub snapshot_keys: Vec<PathBuf>,
    /// How many snapshot keys must sign [default: 1].
    #[arg(long, value_name = "K")]
    pub snapshot_threshold: Option<u32>,
    /// Public key of the timestamp role (repeat for several; a secret key file works too).
    #[arg(long = "timestamp-key", value_name = "KEY.pub")]
    pub timestamp_keys: Vec<PathBuf>,
    /// How many timestamp keys must sign [default: 1].
    #[arg(long, value_name = "K")]
    pub timestamp_threshold: Option<u32>,
}
