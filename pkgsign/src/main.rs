//! `pkgsign`: keys, signed package repositories, verification and installation.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};

use floor::Timestamp as Time;
use pkgsign::detached;
use pkgsign::fetch::{DirFetcher, DownloadPolicy, Fetcher, HttpFetcher};
use pkgsign::install::{self, InstallOptions, Manifest, Progress};
use pkgsign::keys::{self, PublicKey, SecretKey};
use pkgsign::metadata::{self, parse_expiry, Envelope, RoleType};
use pkgsign::net::{build_client, ClientOptions};
use pkgsign::repo::{Expiries, Repository, RoleSpec};
use pkgsign::verify::{VerifiedRepo, Verifier};

/// Sign, publish, verify and install node OS packages.
///
/// Staff create keys (`keygen`), a repository (`repo init`), add packages
/// (`repo add`) and publish them signed (`repo publish`). Nodes and tools
/// check a repository against a trusted root (`verify`) and install
/// packages from it (`install`). Every failure prints one line and exits
/// non-zero, leaving target and state directories as they were.
#[derive(Parser)]
#[command(name = "pkgsign", version, about, long_about)]
struct Cli {
    /// More log output (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
struct SourceArgs {
    /// Repository: a directory, or an https:// base URL (…/repo).
    source: String,
    /// Trusted root metadata (for example the CD's root.json).
    #[arg(long, value_name = "ROOT.json")]
    root: PathBuf,
    /// Verifier state directory (holds the newest accepted metadata).
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// CA certificate (PEM) to trust for https sources; nothing else is trusted.
    #[arg(long, value_name = "CA.pem")]
    ca: Option<PathBuf>,
    /// HTTP proxy for https sources.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
}

#[derive(Subcommand)]
enum RepoCommand {
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
struct RoleKeyArgs {
    /// Public key of the root role (repeat for several; a secret key file works too).
    #[arg(long = "root-key", value_name = "KEY.pub")]
    root_keys: Vec<PathBuf>,
    /// How many root keys must sign [default: 1].
    #[arg(long, value_name = "K")]
    root_threshold: Option<u32>,
    /// Public key of the targets role (repeat for several; a secret key file works too).
    #[arg(long = "targets-key", value_name = "KEY.pub")]
    targets_keys: Vec<PathBuf>,
    /// How many targets keys must sign [default: 1].
    #[arg(long, value_name = "K")]
    targets_threshold: Option<u32>,
    /// Public key of the snapshot role (repeat for several; a secret key file works too).
    #[arg(long = "snapshot-key", value_name = "KEY.pub")]
    snapshot_keys: Vec<PathBuf>,
    /// How many snapshot keys must sign [default: 1].
    #[arg(long, value_name = "K")]
    snapshot_threshold: Option<u32>,
    /// Public key of the timestamp role (repeat for several; a secret key file works too).
    #[arg(long = "timestamp-key", value_name = "KEY.pub")]
    timestamp_keys: Vec<PathBuf>,
    /// How many timestamp keys must sign [default: 1].
    #[arg(long, value_name = "K")]
    timestamp_threshold: Option<u32>,
}

impl RoleKeyArgs {
    fn specs(&self) -> Result<BTreeMap<RoleType, RoleSpec>> {
        let mut out = BTreeMap::new();
        let roles = [
            (RoleType::Root, &self.root_keys, self.root_threshold),
            (
                RoleType::Targets,
                &self.targets_keys,
                self.targets_threshold,
            ),
            (
                RoleType::Snapshot,
                &self.snapshot_keys,
                self.snapshot_threshold,
            ),
            (
                RoleType::Timestamp,
                &self.timestamp_keys,
                self.timestamp_threshold,
            ),
        ];
        for (role, paths, threshold) in roles {
            if paths.is_empty() {
                if threshold.is_some() {
                    bail!("--{role}-threshold given without --{role}-key");
                }
                continue;
            }
            let keys = paths
                .iter()
                .map(|p| PublicKey::load_public_or_secret(p))
                .collect::<Result<Vec<_>, _>>()?;
            out.insert(
                role,
                RoleSpec {
                    keys,
                    threshold: threshold.unwrap_or(1),
                },
            );
        }
        Ok(out)
    }
}

fn load_secret_keys(paths: &[PathBuf]) -> Result<Vec<SecretKey>> {
    paths
        .iter()
        .map(|p| SecretKey::load(p).map_err(anyhow::Error::from))
        .collect()
}

fn expiry(text: &str) -> Result<Time> {
    parse_expiry(text, Time::now()).with_context(|| "--expires".to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pkgsign: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping causes whose text the
/// line already holds (library errors include their source's message).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Keygen { out } => {
            let key = keys::generate_key_files(&out)?;
            println!("{}  key id {}", out.display(), key.id());
            println!("{}", keys::public_key_path(&out).display());
            Ok(())
        }
        Command::Repo(cmd) => run_repo(cmd),
        Command::Verify { source } => {
            let (fetcher, mut verifier) = open_source(&source)?;
            let repo = verifier
                .update(fetcher.as_ref(), SystemTime::now())
                .with_context(|| format!("verifying {}", source.source))?;
            print_repo(&repo);
            Ok(())
        }
        Command::Install {
            source,
            target,
            subdirs,
            manifest,
            packages,
        } => {
            let (fetcher, mut verifier) = open_source(&source)?;
            let update = verifier
                .check(fetcher.as_ref(), SystemTime::now())
                .with_context(|| format!("verifying {}", source.source))?;
            let chosen = update
                .repo()
                .packages(&packages)
                .map_err(|name| anyhow!("no package {name:?} in the repository"))?;
            let report = with_progress(|progress| {
                let options = InstallOptions {
                    into_subdirs: subdirs,
                    progress: Some(progress),
                };
                install::install(fetcher.as_ref(), &chosen, &target, &options)
            })
            .with_context(|| format!("installing into {}", target.display()))?;
            if let Some(path) = &manifest {
                std::fs::write(path, report.manifest.to_json())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            verifier
                .commit(update)
                .context("recording the verified metadata")?;
            println!(
                "installed {} package(s) into {}: {} bytes read, {} entries, {} bytes unpacked",
                chosen.len(),
                target.display(),
                report.bytes,
                report.entries,
                report.unpacked_bytes
            );
            Ok(())
        }
        Command::VerifyTree {
            dir,
            manifest,
            full,
        } => {
            let bytes = std::fs::read(&manifest)
                .with_context(|| format!("reading {}", manifest.display()))?;
            let manifest =
                Manifest::from_json(&bytes).map_err(|e| anyhow!("{}: {e}", manifest.display()))?;
            install::verify_tree(&dir, &manifest, full)
                .with_context(|| format!("{}", dir.display()))?;
            println!(
                "{}: {} entries match the manifest",
                dir.display(),
                manifest.entries.len()
            );
            Ok(())
        }
        Command::SignFile { file, key, out } => {
            let key = SecretKey::load(&key)?;
            let signature = detached::sign_file(&key, &file)?;
            let out = out.unwrap_or_else(|| sig_path(&file));
            std::fs::write(&out, signature.to_json())
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{}: {} bytes, sha256 {}, signed by {}",
                out.display(),
                signature.length,
                signature.sha256,
                signature.keyid
            );
            Ok(())
        }
        Command::VerifyFile { file, sig, keys } => {
            let trusted = keys
                .iter()
                .map(|p| PublicKey::load_public_or_secret(p))
                .collect::<Result<Vec<_>, _>>()?;
            let sig = sig.unwrap_or_else(|| sig_path(&file));
            detached::verify_file(&file, &sig, &trusted)
                .with_context(|| format!("{}", file.display()))?;
            println!("{}: signature OK", file.display());
            Ok(())
        }
        Command::Inspect { file } => inspect(&file),
    }
}

fn sig_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

fn open_source(args: &SourceArgs) -> Result<(Box<dyn Fetcher>, Verifier)> {
    let root =
        std::fs::read(&args.root).with_context(|| format!("reading {}", args.root.display()))?;
    let verifier = Verifier::open(&args.state, &root)
        .with_context(|| format!("opening state {}", args.state.display()))?;
    let fetcher: Box<dyn Fetcher> = if args.source.starts_with("https://")
        || args.source.starts_with("http://")
    {
        let ca_path = args
            .ca
            .as_ref()
            .ok_or_else(|| anyhow!("--ca is required for an https source"))?;
        let ca =
            std::fs::read(ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
        let mut options = ClientOptions::new(ca);
        options.proxy = args.proxy.clone();
        let client = build_client(&options).with_context(|| format!("{}", ca_path.display()))?;
        Box::new(HttpFetcher::new(
            &args.source,
            client,
            DownloadPolicy::default(),
        )?)
    } else {
        let dir = Path::new(&args.source);
        if !dir.is_dir() {
            bail!("{}: not a directory or https URL", args.source);
        }
        Box::new(DirFetcher::new(dir))
    };
    Ok((fetcher, verifier))
}

fn print_repo(repo: &VerifiedRepo) {
    println!(
        "verified: root v{}, timestamp v{}, snapshot v{}, targets v{} (expires {}), {} package(s)",
        repo.root_version,
        repo.timestamp_version,
        repo.snapshot_version,
        repo.targets_version,
        repo.targets_expires,
        repo.targets.len()
    );
    for (name, info) in &repo.targets {
        println!(
            "  {name} {} {} bytes sha256 {}{}",
            info.version,
            info.length,
            info.sha256(),
            if info.base_image { " base-image" } else { "" }
        );
    }
}

/// Runs `work` with a progress bar on stderr when it is a terminal.
fn with_progress<T>(work: impl FnOnce(&(dyn Fn(Progress) + Sync)) -> T) -> T {
    if !std::io::stderr().is_terminal() {
        return work(&|_| {});
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let result = work(&|p: Progress| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    });
    bar.finish_and_clear();
    result
}

fn parse_custom(pairs: &[String]) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--custom {pair:?}: expected KEY=VALUE"))?;
        if key.is_empty() {
            bail!("--custom {pair:?}: empty key");
        }
        map.insert(key.to_string(), Value::String(value.to_string()));
    }
    Ok(map)
}

fn run_repo(cmd: RepoCommand) -> Result<()> {
    match cmd {
        RepoCommand::Init {
            repo,
            roles,
            keys,
            expires,
        } => {
            let specs = roles.specs()?;
            let keys = load_secret_keys(&keys)?;
            Repository::init(&repo, &specs, expiry(&expires)?, &keys)?;
            println!("{}: repository created (root v1)", repo.display());
        }
        RepoCommand::Add {
            repo,
            file,
            name,
            version,
            base_image,
            custom,
        } => {
            let repository = Repository::open(&repo)?;
            let info = repository.add_package(
                &file,
                &name,
                &version,
                base_image,
                parse_custom(&custom)?,
            )?;
            println!(
                "{name} {version}: {} ({} bytes, {} unpacked), pending publish",
                info.path,
                info.length,
                info.unpacked_length.unwrap_or(0)
            );
        }
        RepoCommand::Remove { repo, name } => {
            Repository::open(&repo)?.remove_package(&name)?;
            println!("{name}: pending removal");
        }
        RepoCommand::Publish {
            repo,
            keys,
            expires,
            timestamp_expires,
        } => {
            let repository = Repository::open(&repo)?;
            let keys = load_secret_keys(&keys)?;
            let expires = expiry(&expires)?;
            let timestamp = match timestamp_expires {
                Some(text) => parse_expiry(&text, Time::now()).context("--timestamp-expires")?,
                None => expires,
            };
            let published = repository.publish(
                &keys,
                &Expiries {
                    targets: expires,
                    snapshot: expires,
                    timestamp,
                },
            )?;
            println!(
                "published targets v{}, snapshot v{}, timestamp v{}: {} package(s)",
                published.targets_version,
                published.snapshot_version,
                published.timestamp_version,
                published.packages
            );
        }
        RepoCommand::Timestamp {
            repo,
            keys,
            expires,
        } => {
            let version = Repository::open(&repo)?
                .refresh_timestamp(&load_secret_keys(&keys)?, expiry(&expires)?)?;
            println!("timestamp v{version}");
        }
        RepoCommand::RotateRoot {
            repo,
            roles,
            keys,
            expires,
        } => {
            let repository = Repository::open(&repo)?;
            let specs = roles.specs()?;
            let version =
                repository.rotate_root(&specs, expiry(&expires)?, &load_secret_keys(&keys)?)?;
            println!("root v{version} written");
            if specs.keys().any(|r| *r != RoleType::Root) {
                println!(
                    "run `pkgsign repo publish` so that the documents are signed by the new keys"
                );
            }
        }
        RepoCommand::Show { repo } => show(&Repository::open(&repo)?)?,
    }
    Ok(())
}

fn show(repo: &Repository) -> Result<()> {
    let status = repo.status()?;
    println!(
        "root v{} expires {}",
        status.root.version, status.root.expires
    );
    for role in RoleType::ALL {
        let ring = status.root.keyring(role)?;
        let ids: Vec<String> = ring.keys.keys().map(|k| k.short()).collect();
        println!(
            "  {role:<9} {} of {}: {}",
            ring.threshold,
            ring.keys.len(),
            ids.join(" ")
        );
    }
    match (&status.timestamp, &status.snapshot, &status.targets) {
        (Some(ts), Some(snap), Some(targets)) => {
            println!("timestamp v{} expires {}", ts.version, ts.expires);
            println!("snapshot v{} expires {}", snap.version, snap.expires);
            println!(
                "targets v{} expires {}: {} package(s)",
                targets.version,
                targets.expires,
                targets.targets.len()
            );
            for (name, info) in &targets.targets {
                println!(
                    "  {name} {} {} bytes {}",
                    info.version, info.length, info.path
                );
            }
        }
        _ => println!("nothing published yet"),
    }
    for (name, info) in &status.pending.add {
        println!("pending add: {name} {}", info.version);
    }
    for name in &status.pending.remove {
        println!("pending remove: {name}");
    }
    Ok(())
}

fn inspect(file: &Path) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let envelope = Envelope::parse(&bytes).with_context(|| format!("{}", file.display()))?;
    let role = envelope
        .claimed_type()
        .ok_or_else(|| anyhow!("{}: no valid _type", file.display()))?;
    let (version, expires) = match role {
        RoleType::Root => describe::<metadata::Root>(&envelope)?,
        RoleType::Targets => describe::<metadata::Targets>(&envelope)?,
        RoleType::Snapshot => describe::<metadata::Snapshot>(&envelope)?,
        RoleType::Timestamp => describe::<metadata::Timestamp>(&envelope)?,
    };
    println!(
        "{role} v{version} expires {expires} ({} bytes; signatures NOT checked)",
        bytes.len()
    );
    for sig in &envelope.signatures {
        println!("  signed by {}", sig.keyid);
    }
    Ok(())
}

fn describe<T: metadata::Role>(envelope: &Envelope) -> Result<(u64, Time)> {
    let doc: T = envelope.decode()?;
    Ok((doc.version(), doc.expires()))
}
