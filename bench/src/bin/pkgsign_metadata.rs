//! Benchmark: verifying repository metadata that lists 10,000 packages —
//! total time of a full update (root, timestamp, snapshot, targets), and the
//! share of it spent in signature checks versus parsing.
//!
//! Run with `cargo run --release -p bench --bin pkgsign_metadata [-- --targets N --rounds R]`.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use clap::Parser;
use pkgsign::fetch::DirFetcher;
use pkgsign::metadata::{
    parse_expiry, Envelope, Hashes, RoleType, Sha256Digest, TargetInfo, Targets,
};
use pkgsign::repo::{Expiries, Pending, Repository, RoleSpec};
use pkgsign::verify::Verifier;
use pkgsign::SecretKey;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    targets: usize,
    #[arg(long, default_value_t = 20)]
    rounds: u32,
}

fn per_round(total: Duration, rounds: u32) -> f64 {
    total.as_secs_f64() * 1000.0 / rounds as f64
}

fn time<T>(rounds: u32, mut f: impl FnMut() -> T) -> Duration {
    let start = Instant::now();
    for _ in 0..rounds {
        black_box(f());
    }
    start.elapsed()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
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
    let repo_dir = dir.path().join("repo");
    let repo = Repository::init(&repo_dir, &roles, expires, &keys[..1])?;
    let mut pending = Pending::default();
    for i in 0..args.targets {
        // Small stand-in files: publishing checks that each listed file exists.
        let content = format!("package {i} {}", "x".repeat(i % 50));
        let digest = Sha256Digest::of(content.as_bytes());
        let path = format!("targets/{digest}.package-{i:05}-1.0.tar.gz");
        std::fs::write(repo_dir.join(&path), &content)?;
        let mut custom = serde_json::Map::new();
        custom.insert("arch".into(), "x86_64".into());
        pending.add.insert(
            format!("package-{i:05}"),
            TargetInfo {
                version: format!("1.{}.{}", i % 7, i % 13),
                length: content.len() as u64,
                hashes: Hashes { sha256: digest },
                path,
                unpacked_length: Some(40_000 + i as u64),
                base_image: false,
                custom,
            },
        );
    }
    pending.save(&repo_dir.join("pending.json"))?;
    repo.publish(
        &keys[1..],
        &Expiries {
            targets: expires,
            snapshot: expires,
            timestamp: expires,
        },
    )?;
    let root = std::fs::read(repo_dir.join("metadata/1.root.json"))?;
    let targets_bytes = std::fs::read(repo_dir.join("metadata/1.targets.json"))?;
    println!(
        "{} targets: targets.json is {:.2} MB",
        args.targets,
        targets_bytes.len() as f64 / 1e6
    );

    // A full update as a node does it (fresh state each round; not persisted).
    let fetcher = DirFetcher::new(&repo_dir);
    let state = dir.path().join("state");
    let check = time(args.rounds, || {
        let verifier = Verifier::open(&state, &root).expect("open");
        verifier.check(&fetcher, SystemTime::now()).expect("verify")
    });
    // The same plus persisting the accepted documents (fsync'd writes).
    let update = time(args.rounds.min(5), || {
        let _ = std::fs::remove_dir_all(&state);
        let mut verifier = Verifier::open(&state, &root).expect("open");
        verifier
            .update(&fetcher, SystemTime::now())
            .expect("update")
    });

    // Breakdown on the targets document, which dominates.
    let keyring = Repository::open(&repo_dir)?
        .root()?
        .keyring(RoleType::Targets)?;
    let envelope = Envelope::parse(&targets_bytes)?;
    let read = time(args.rounds, || {
        std::fs::read(repo_dir.join("metadata/1.targets.json")).expect("read")
    });
    let hash = time(args.rounds, || Sha256Digest::of(&targets_bytes));
    let parse = time(args.rounds, || {
        Envelope::parse(&targets_bytes).expect("parse")
    });
    let signatures = time(args.rounds, || {
        envelope.check_threshold(&keyring).expect("signature")
    });
    let decode = time(args.rounds, || {
        envelope.decode::<Targets>().expect("decode")
    });

    let total = per_round(check, args.rounds);
    let part = |d: Duration| {
        (
            per_round(d, args.rounds),
            100.0 * per_round(d, args.rounds) / total,
        )
    };
    println!("full verification (root, timestamp, snapshot, targets): {total:.1} ms per update");
    println!(
        "  with persisting the state (fsync):                    {:.1} ms",
        per_round(update, args.rounds.min(5))
    );
    println!("targets document, per update:");
    for (name, d) in [
        ("read file", read),
        ("sha256 vs snapshot", hash),
        ("parse (strict JSON + canonical re-encode)", parse),
        ("decode (typed roles + checks)", decode),
        ("signature check (ed25519)", signatures),
    ] {
        let (ms, pct) = part(d);
        println!("  {name:<45} {ms:>7.2} ms  {pct:>5.1} %");
    }
    let (sig_ms, _) = part(signatures);
    let (parse_ms, _) = part(parse);
    let (decode_ms, _) = part(decode);
    println!(
        "signature checks vs parsing: {:.1} % vs {:.1} % of the total",
        100.0 * sig_ms / total,
        100.0 * (parse_ms + decode_ms) / total
    );
    Ok(())
}
