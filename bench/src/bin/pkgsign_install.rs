//! Benchmark: installing a ~200 MB signed package with pkgsign versus what a
//! user would otherwise script (`gpg --verify` of a detached signature,
//! `sha256sum -c`, `tar -xzf`) and versus bare `tar -xzf`, in one run.
//!
//! pkgsign goes through the library path the CLI uses: verify the metadata,
//! stream the package (length limit, sha256, gunzip, checked extraction)
//! into a staging directory, syncfs, swap into place. Run with
//! `cargo run --release -p bench --bin pkgsign_install [-- --rounds N --mb SIZE
//! --ext4 SIZE_MB]`.
//!
//! Five contenders, each with and without durability: bare `tar -xzf`,
//! `tar -xzf; sync`, the three-step script, the three-step script followed
//! by `sync`, and pkgsign (which always syncs). `sync` is `sync -f DIR`
//! (syncfs of the work directory's file system), the call pkgsign makes;
//! `--ext4` gives the benchmark a file system of its own so that syncfs
//! flushes only the benchmark's data. Every ratio is printed.

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
    /// Run only these contenders (tar, tar+sync, 3-step, 3-step+sync,
    /// pkgsign; repeatable), e.g. `--only pkgsign` under a profiler.
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,
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

/// Wall-clock time and CPU time of one contender.
#[derive(Clone, Copy)]
struct Timing {
    wall: Duration,
    cpu: Duration,
}

/// CPU time (user + system) used so far by this process (all its threads)
/// and by the children it waited for (and theirs: tar's gzip). Kernel
/// threads' writeback work is nobody's and is not counted.
fn cpu_used() -> Duration {
    fn of(who: libc::c_int) -> Duration {
        // SAFETY: rusage is plain data; getrusage fills it in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid, writable rusage.
        if unsafe { libc::getrusage(who, &mut usage) } != 0 {
            return Duration::ZERO;
        }
        let time = |t: libc::timeval| {
            Duration::new(t.tv_sec as u64, 0) + Duration::from_micros(t.tv_usec as u64)
        };
        time(usage.ru_utime) + time(usage.ru_stime)
    }
    of(libc::RUSAGE_SELF) + of(libc::RUSAGE_CHILDREN)
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<Timing> {
    let (start, cpu_start) = (Instant::now(), cpu_used());
    f()?;
    Ok(Timing {
        wall: start.elapsed(),
        cpu: cpu_used().saturating_sub(cpu_start),
    })
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

/// What is timed, in the order each round runs them.
#[derive(Clone, Copy)]
enum Contender {
    /// `tar -xzf`: unverified, not durable.
    Tar,
    /// `tar -xzf; sync -f`: unverified, durable.
    TarSync,
    /// `gpg --verify; sha256sum -c; tar -xzf`: verified, not durable.
    Script,
    /// The three steps, then `sync -f`: verified, durable.
    ScriptSync,
    /// `pkgsign install`: verified, durable, atomic.
    Pkgsign,
}

const CONTENDERS: [Contender; 5] = [
    Contender::Tar,
    Contender::TarSync,
    Contender::Script,
    Contender::ScriptSync,
    Contender::Pkgsign,
];

impl Contender {
    fn label(self) -> &'static str {
        match self {
            Contender::Tar => "tar -xzf",
            Contender::TarSync => "tar -xzf; sync",
            Contender::Script => "gpg --verify; sha256sum -c; tar -xzf",
            Contender::ScriptSync => "gpg --verify; sha256sum -c; tar -xzf; sync",
            Contender::Pkgsign => "pkgsign install (verified, synced, atomic)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Contender::Tar => "tar",
            Contender::TarSync => "tar+sync",
            Contender::Script => "3-step",
            Contender::ScriptSync => "3-step+sync",
            Contender::Pkgsign => "pkgsign",
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    // `RUST_LOG=pkgsign=debug` shows how long each stage of the install took.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
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

    let tar_into = |dest: &Path| {
        run(Command::new("tar")
            .arg("-xzf")
            .arg(&package)
            .arg("-C")
            .arg(dest))
    };
    let three_steps = |dest: &Path| {
        run(gpg(&["--verify"]).arg(&sig).arg(&package))?;
        run(Command::new("sha256sum")
            .arg("--quiet")
            .arg("-c")
            .arg(&sums)
            .current_dir(&work))?;
        tar_into(dest)
    };
    let pkgsign = |dest: &Path, state: &Path| {
        let fetcher = DirFetcher::new(&repo_dir);
        let mut verifier = Verifier::open(state, &root)?;
        let update = verifier.check(&fetcher, SystemTime::now())?;
        let packages = update
            .repo()
            .packages(&["base"])
            .map_err(|n| anyhow::anyhow!("no {n}"))?;
        install::install(&fetcher, &packages, dest, &InstallOptions::default())?;
        verifier.commit(update)?;
        anyhow::Ok(())
    };

    for name in &args.only {
        if !CONTENDERS.iter().any(|c| c.short() == name) {
            bail!("--only {name}: no such contender");
        }
    }
    let contenders: Vec<Contender> = CONTENDERS
        .into_iter()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|n| n == c.short()))
        .collect();
    let mut times: Vec<Vec<Timing>> = vec![Vec::new(); contenders.len()];
    for round in 0..args.rounds {
        for (index, contender) in contenders.iter().enumerate() {
            // Each contender starts from a clean, flushed file system.
            let dest = work.join("dest");
            remove(&dest)?;
            run(&mut sync())?;
            let state = work.join(format!("state-{round}"));
            remove(&state)?;
            let elapsed = timed(|| match contender {
                Contender::Tar => {
                    fs::create_dir(&dest)?;
                    tar_into(&dest)
                }
                Contender::TarSync => {
                    fs::create_dir(&dest)?;
                    tar_into(&dest)?;
                    run(&mut sync())
                }
                Contender::Script => {
                    fs::create_dir(&dest)?;
                    three_steps(&dest)
                }
                Contender::ScriptSync => {
                    fs::create_dir(&dest)?;
                    three_steps(&dest)?;
                    run(&mut sync())
                }
                Contender::Pkgsign => pkgsign(&dest, &state),
            })?;
            times[index].push(elapsed);
        }
        remove(&work.join("dest"))?;
        run(&mut sync())?;
        let line: Vec<String> = contenders
            .iter()
            .zip(&times)
            .map(|(c, t)| {
                format!(
                    "{} {:.2}s ({:.2}s cpu)",
                    c.short(),
                    t[round].wall.as_secs_f64(),
                    t[round].cpu.as_secs_f64()
                )
            })
            .collect();
        println!("round {}: {}", round + 1, line.join("  "));
    }
    let medians: Vec<f64> = times
        .iter()
        .map(|t| median(t.iter().map(|t| t.wall).collect()).as_secs_f64())
        .collect();
    let cpu_medians: Vec<f64> = times
        .iter()
        .map(|t| median(t.iter().map(|t| t.cpu).collect()).as_secs_f64())
        .collect();
    println!();
    println!(
        "median of {} rounds (wall clock; CPU time of the process and its children):",
        args.rounds
    );
    for ((contender, secs), cpu) in contenders.iter().zip(&medians).zip(&cpu_medians) {
        println!(
            "  {:<46} {secs:>7.2} s  {cpu:>7.2} s cpu",
            contender.label()
        );
    }
    println!();
    println!("ratios (row / column; below 1 means the row is faster):");
    print!("  {:<22}", "");
    for contender in &contenders {
        print!(" {:>12}", contender.short());
    }
    println!();
    for (row, row_secs) in contenders.iter().zip(&medians) {
        print!("  {:<22}", row.short());
        for col_secs in &medians {
            print!(" {:>11.2}x", row_secs / col_secs);
        }
        println!();
    }
    if contenders.len() == CONTENDERS.len() {
        let last = CONTENDERS.len() - 1;
        println!();
        println!(
            "  pkgsign / bare tar: {:.2}x wall clock, {:.2}x CPU (target <= 1.00x wall: \
             verified, durable and atomic no slower than unverified, non-durable tar)",
            medians[last] / medians[0],
            cpu_medians[last] / cpu_medians[0]
        );
    }
    Ok(())
}
