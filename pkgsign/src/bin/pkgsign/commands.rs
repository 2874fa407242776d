//! What each `pkgsign` command does, through the library.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
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

use crate::cli::{Command, RepoCommand, RoleKeyArgs, SourceArgs};

/// The role specs the key arguments name.
fn role_specs(args: &RoleKeyArgs) -> Result<BTreeMap<RoleType, RoleSpec>> {
    let mut out = BTreeMap::new();
    let roles = [
        (RoleType::Root, &args.root_keys, args.root_threshold),
        (
            RoleType::Targets,
            &args.targets_keys,
            args.targets_threshold,
        ),
        (
            RoleType::Snapshot,
            &args.snapshot_keys,
            args.snapshot_threshold,
        ),
        (
            RoleType::Timestamp,
            &args.timestamp_keys,
            args.timestamp_threshold,
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

fn load_secret_keys(paths: &[PathBuf]) -> Result<Vec<SecretKey>> {
    paths
        .iter()
        .map(|p| SecretKey::load(p).map_err(anyhow::Error::from))
        .collect()
}

fn expiry(text: &str) -> Result<Time> {
    parse_expiry(text, Time::now()).with_context(|| "--expires".to_string())
}

pub fn run(command: Command) -> Result<()> {
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
                Manifest::from_json(&bytes).with_context(|| manifest.display().to_string())?;
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
            let specs = role_specs(&roles)?;
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
            let specs = role_specs(&roles)?;
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
