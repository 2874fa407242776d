//! Benchmark: installing a ~200 MB signed package with pkgsign versus what a
//! user would otherwise script (`gpg --verify` of a detached signature,
//! `sha256sum -c`, `tar -xzf`) and versus bare `tar -xzf`, in one run.
//!
//! pkgsign goes through the library path the CLI uses: verify the metadata,
//! stream the package (length limit, sha256, gunzip, checked extraction)
//! into a staging directory, syncfs, swap into place. Run with
//! `cargo run --release -p bench --bin pkgsign_install [-- --rounds N --mb SIZE]`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Parser;
use pkgsign::fetch::DirFetcher;
use pkgsign::install::{self, InstallOptions};
use pkgsign::metadata::{parse_expiry, RoleType};
use pkgsign::repo::{Expiries, Repository, RoleSpec};
use pkgsign::verify::Verifier;
use pkgsign::SecretKey;

#[derive(Parser)]
struct Args {
    /// Rounds per contender (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Approximate unpacked size of the package in MB.
    #[arg(long, default_value_t = 200)]
    mb: u64,
    /// Work directory (default: a temporary directory under /var/tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run on a fresh ext4 file system of this many MB (a loop mount; needs
    /// root), so that fsync/syncfs flush only the benchmark's own data and
    /// not whatever else the machine is writing.
    #[arg(long, value_name = "MB")]
    ext4: Option<u64>,
}

/// A loop-mounted ext4 file system, unmounted and deleted on drop.
struct LoopFs {
    image: PathBuf,
    mount: PathBuf,
}

impl LoopFs {
    fn create(mb: u64) -> Result<LoopFs> {
        let image = PathBuf::from(format!("/var/tmp/pkgsign-bench-{}.img", std::process::id()));
        let mount = PathBuf::from(format!("/var/tmp/pkgsign-bench-{}.mnt", std::process::id()));
        fs::File::create(&image)?.set_len(mb << 20)?;
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))?;
        fs::create_dir_all(&mount)?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount))?;
        Ok(LoopFs { image, mount })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // gpg started an agent whose home is on this file system.
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.mount.join("work/gnupg"))
            .args(["--kill", "gpg-agent"])
            .status();
        // The agent takes a moment to exit; retry the unmount briefly.
        for _ in 0..50 {
            let quiet = Command::new("umount")
                .arg(&self.mount)
                .stderr(std::process::Stdio::null())
                .status();
            if quiet.is_ok_and(|s| s.success()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = fs::remove_dir(&self.mount);
        let _ = fs::remove_file(&self.image);
    }
}

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "the",
    "node",
    "slice",
    "kernel",
    "module",
    "config",
    "network",
    "interface",
    "packet",
    "bandwidth",
    "return",
    "static",
    "struct",
    "int",
    "char",
    "void",
    "if",
    "else",
    "for",
    "while",
    "error",
    "value",
    "buffer",
    "length",
    "size_t",
    "unsigned",
    "const",
    "include",
    "define",
    "endif",
    "printf",
    "memcpy",
    "0x1f",
    "42",
    "NULL",
    "break",
];

/// Source-code-like text (compresses about 4:1 with gzip).
fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        out.extend_from_slice(word.as_bytes());
        out.push(if rng.below(9) == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// Machine-code-like bytes (compresses about 2:1).
fn binary(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let r = rng.next();
        match r % 4 {
            0 => out.extend_from_slice(&[0u8; 8]),
            1 => out.extend_from_slice(&r.to_le_bytes()),
            _ => out.extend_from_slice(&(r as u32 & 0x00ff_ff0f).to_le_bytes()),
        }
    }
    out.truncate(len);
    out
}

/// A tree of many small files and some large ones, about `mb` MB in total.
fn make_tree(root: &Path, mb: u64) -> Result<(u64, u64)> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let total = mb << 20;
    let small_budget = total * 2 / 5;
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut dir_index = 0;
    while bytes < small_budget {
        let dir = root.join(format!("usr/share/pkg{:03}", dir_index / 100));
        fs::create_dir_all(&dir)?;
        let len = 256 + rng.below(8192) as usize;
        let data = if rng.below(4) == 0 {
            binary(&mut rng, len)
        } else {
            text(&mut rng, len)
        };
        fs::write(dir.join(format!("file{dir_index:05}.txt")), &data)?;
        dir_index += 1;
        files += 1;
        bytes += len as u64;
    }
    let bin = root.join("usr/lib");
    fs::create_dir_all(&bin)?;
    let large = 12;
    let each = ((total - bytes) / large) as usize;
    for i in 0..large {
        let data = if i % 2 == 0 {
            binary(&mut rng, each)
        } else {
            text(&mut rng, each)
        };
        fs::write(bin.join(format!("large{i:02}.so")), &data)?;
        files += 1;
        bytes += each as u64;
    }
    Ok((files, bytes))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn remove(path: &Path) -> Result<()> {
    if path.exists() {
        install::remove_tree(path)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    for tool in ["tar", "gzip", "gpg", "sha256sum", "sync"] {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()?
            .stdout
            .is_empty()
        {
            bail!("{tool} is not installed (apt-get install -y gnupg coreutils tar gzip)");
        }
    }
    let work_holder;
    let loop_fs;
    let work = match (&args.dir, args.ext4) {
        (_, Some(mb)) => {
            loop_fs =
                LoopFs::create(mb).context("creating the ext4 loop file system (needs root)")?;
            loop_fs.mount.join("work")
        }
        (Some(d), None) => {
            fs::create_dir_all(d)?;
            d.clone()
        }
        (None, None) => {
            work_holder = tempfile::Builder::new()
                .prefix("pkgsign-bench-")
                .tempdir_in("/var/tmp")?;
            work_holder.path().to_path_buf()
        }
    };
    fs::create_dir_all(&work)?;
    println!("work directory: {}", work.display());
    // `sync -f` flushes only the file system holding the work directory
    // (syncfs), like pkgsign does.
    let sync = || {
        let mut c = Command::new("sync");
        c.arg("-f").arg(&work);
        c
    };

    // The package.
    let tree = work.join("tree");
    let (files, bytes) = make_tree(&tree, args.mb)?;
    let package = work.join("pkg.tar.gz");
    run(Command::new("tar")
        .arg("-czf")
        .arg(&package)
        .arg("-C")
        .arg(&tree)
        .arg("."))?;
    remove(&tree)?;
    let package_len = fs::metadata(&package)?.len();
    println!(
        "package: {files} files, {:.1} MB unpacked, {:.1} MB gzip ({:.2}:1)",
        bytes as f64 / 1e6,
        package_len as f64 / 1e6,
        bytes as f64 / package_len as f64
    );

    // The signed repository.
    let keys: Vec<SecretKey> = (0..4)
        .map(|_| SecretKey::generate())
        .collect::<Result<_, _>>()?;
    let mut roles = std::collections::BTreeMap::new();
    for (role, key) in RoleType::ALL.into_iter().zip(&keys) {
        roles.insert(
            role,
            RoleSpec {
                keys: vec![key.public().clone()],
                threshold: 1,
            },
        );
    }
    let expires = parse_expiry("30d", floor::Timestamp::now())?;
    let repo_dir = work.join("repo");
    let repo = Repository::init(&repo_dir, &roles, expires, &keys[..1])?;
    repo.add_package(&package, "base", "1", false, Default::default())?;
    repo.publish(
        &keys[1..],
        &Expiries {
            targets: expires,
            snapshot: expires,
            timestamp: expires,
        },
    )?;
    let root = fs::read(repo_dir.join("metadata/1.root.json"))?;

    // What a user would set up instead: a gpg key, a detached signature, a checksum file.
    let gnupg = work.join("gnupg");
    fs::create_dir_all(&gnupg)?;
    let gpg = |extra: &[&str]| {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &gnupg).args([
            "--batch",
            "--quiet",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        c.args(extra);
        c
    };
    run(&mut gpg(&[
        "--quick-gen-key",
        "bench <bench@example.org>",
        "ed25519",
        "sign",
        "never",
    ]))?;
    let sig = work.join("pkg.tar.gz.sig");
    run(gpg(&["--detach-sign", "--output"]).arg(&sig).arg(&package))?;
    let sums = work.join("SHA256SUMS");
    let out = Command::new("sha256sum")
        .arg("pkg.tar.gz")
        .current_dir(&work)
        .output()?;
    fs::File::create(&sums)?.write_all(&out.stdout)?;

    let (mut bare, mut bare_sync, mut script, mut ours) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let dest = work.join("dest-tar");
        remove(&dest)?;
        fs::create_dir_all(&dest)?;
        bare.push(timed(|| {
            run(Command::new("tar")
                .arg("-xzf")
                .arg(&package)
                .arg("-C")
                .arg(&dest))
        })?);
        remove(&dest)?;
        run(&mut sync())?;

        fs::create_dir_all(&dest)?;
        bare_sync.push(timed(|| {
            run(Command::new("tar")
                .arg("-xzf")
                .arg(&package)
                .arg("-C")
                .arg(&dest))?;
            run(&mut sync())
        })?);
        remove(&dest)?;
        run(&mut sync())?;

        let dest = work.join("dest-script");
        remove(&dest)?;
        fs::create_dir_all(&dest)?;
        script.push(timed(|| {
            run(gpg(&["--verify"]).arg(&sig).arg(&package))?;
            run(Command::new("sha256sum")
                .arg("--quiet")
                .arg("-c")
                .arg(&sums)
                .current_dir(&work))?;
            run(Command::new("tar")
                .arg("-xzf")
                .arg(&package)
                .arg("-C")
                .arg(&dest))
        })?);
        remove(&dest)?;
        run(&mut sync())?;

        let dest = work.join("dest-pkgsign");
        let state = work.join(format!("state-{round}"));
        ours.push(timed(|| {
            let fetcher = DirFetcher::new(&repo_dir);
            let mut verifier = Verifier::open(&state, &root)?;
            let update = verifier.check(&fetcher, SystemTime::now())?;
            let packages = update
                .repo()
                .packages(&["base"])
                .map_err(|n| anyhow::anyhow!("no {n}"))?;
            install::install(&fetcher, &packages, &dest, &InstallOptions::default())?;
            verifier.commit(update)?;
            Ok(())
        })?);
        remove(&dest)?;
        run(&mut sync())?;
        println!(
            "round {}: tar {:.2}s  tar+sync -f {:.2}s  gpg+sha256sum+tar {:.2}s  pkgsign install {:.2}s",
            round + 1,
            bare[round].as_secs_f64(),
            bare_sync[round].as_secs_f64(),
            script[round].as_secs_f64(),
            ours[round].as_secs_f64()
        );
    }
    let (bare, bare_sync, script, ours) = (
        median(bare),
        median(bare_sync),
        median(script),
        median(ours),
    );
    println!();
    println!("median of {} rounds:", args.rounds);
    println!(
        "  tar -xzf                          {:>7.2} s",
        bare.as_secs_f64()
    );
    println!(
        "  tar -xzf; sync                    {:>7.2} s",
        bare_sync.as_secs_f64()
    );
    println!(
        "  gpg --verify; sha256sum -c; tar   {:>7.2} s",
        script.as_secs_f64()
    );
    println!(
        "  pkgsign install (verify + fsync)  {:>7.2} s",
        ours.as_secs_f64()
    );
    println!(
        "  speed-up over the three-step script: {:.2}x (target >= 1.5x)",
        script.as_secs_f64() / ours.as_secs_f64()
    );
    println!(
        "  pkgsign / bare tar:                 {:.2}x (target <= 1.25x)",
        ours.as_secs_f64() / bare.as_secs_f64()
    );
    println!(
        "  pkgsign / (tar; sync):              {:.2}x",
        ours.as_secs_f64() / bare_sync.as_secs_f64()
    );
    Ok(())
}
