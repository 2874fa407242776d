//! Regenerates `pkgsign/tests/data/`: one repository, document or archive
//! per threat, as an attacker (or a broken mirror) would serve it.
//!
//! ```text
//! cargo run -p pkgsign --example make-attack-fixtures [OUT_DIR]
//! ```
//!
//! The keys in `tests/data/keys/` are reused when present (so a rerun
//! changes only what the code changed) and made when missing. They are test
//! keys, published with the repository: nothing may ever trust them.
//! Metadata expires in 2100, except where expiry is the attack.
//! `tests/fixtures.rs` checks every fixture is refused for its reason, and
//! that every fixture here is one it knows.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::error::Error;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use common::{raw_header, sample_package, tar_bytes, targz, Item};
use pkgsign::fetch::DirFetcher;
use pkgsign::keys::SecretKey;
use pkgsign::metadata::{
    sign_document, Envelope, KeyEntry, MetaInfo, RoleKeys, RoleType, Root, Snapshot, Targets,
    Timestamp,
};
use pkgsign::repo::{Expiries, Repository, RoleSpec};
use pkgsign::Verifier;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Far enough that checked-in metadata never expires under a test.
const NEVER: &str = "2100-01-01T00:00:00Z";
/// Long past: the expiry of documents whose expiry is the attack.
const EXPIRED: &str = "2020-01-01T00:00:00Z";

/// The repository's keys: root 2-of-3, targets 2-of-2, snapshot and
/// timestamp 1-of-1, and a key an attacker wants to make the new root key.
struct Keys {
    root: [SecretKey; 3],
    targets: [SecretKey; 2],
    snapshot: SecretKey,
    timestamp: SecretKey,
    attacker: SecretKey,
}

impl Keys {
    fn load_or_make(dir: &Path) -> Result<Keys> {
        fs::create_dir_all(dir)?;
        let key = |name: &str| -> Result<SecretKey> {
            let path = dir.join(format!("test-only-{name}.pem"));
            if path.exists() {
                return Ok(SecretKey::load(&path)?);
            }
            let key = SecretKey::generate()?;
            key.save_new(&path)?;
            Ok(key)
        };
        Ok(Keys {
            root: [key("root-1")?, key("root-2")?, key("root-3")?],
            targets: [key("targets-1")?, key("targets-2")?],
            snapshot: key("snapshot")?,
            timestamp: key("timestamp")?,
            attacker: key("attacker")?,
        })
    }

    /// What `repo publish` signs with: every targets, snapshot and timestamp key.
    fn publishing(&self) -> Vec<SecretKey> {
        let mut keys: Vec<SecretKey> = self.targets.iter().map(copy).collect();
        keys.push(copy(&self.snapshot));
        keys.push(copy(&self.timestamp));
        keys
    }
}

fn copy(key: &SecretKey) -> SecretKey {
    match key.to_pem().ok().as_deref().and_then(SecretKey::from_pem) {
        Some(copy) => copy,
        None => unreachable!("a key's own PEM reads back"),
    }
}

fn time(text: &str) -> floor::Timestamp {
    match text.parse() {
        Ok(t) => t,
        Err(_) => unreachable!("constant RFC 3339 time"),
    }
}

fn never() -> Expiries {
    Expiries {
        targets: time(NEVER),
        snapshot: time(NEVER),
        timestamp: time(NEVER),
    }
}

fn spec(keys: &[SecretKey], threshold: u32) -> RoleSpec {
    RoleSpec {
        keys: keys.iter().map(|k| k.public().clone()).collect(),
        threshold,
    }
}

/// One scenario being built: the repository an attacker serves, and the
/// node's trusted state from before the attack.
struct Scenario<'k> {
    keys: &'k Keys,
    work: tempfile::TempDir,
    repo: Repository,
}

impl<'k> Scenario<'k> {
    /// A published repository holding package `base` version 1.
    fn new(keys: &'k Keys) -> Result<Scenario<'k>> {
        let work = tempfile::tempdir()?;
        let mut roles = BTreeMap::new();
        roles.insert(RoleType::Root, spec(&keys.root, 2));
        roles.insert(RoleType::Targets, spec(&keys.targets, 2));
        roles.insert(
            RoleType::Snapshot,
            spec(std::slice::from_ref(&keys.snapshot), 1),
        );
        roles.insert(
            RoleType::Timestamp,
            spec(std::slice::from_ref(&keys.timestamp), 1),
        );
        let signers = [copy(&keys.root[0]), copy(&keys.root[1])];
        let repo = Repository::init(&work.path().join("repo"), &roles, time(NEVER), &signers)?;
        let scenario = Scenario { keys, work, repo };
        scenario.add("base", "1", &sample_package("one"))?;
        scenario.publish()?;
        Ok(scenario)
    }

    fn add(&self, name: &str, version: &str, archive: &[u8]) -> Result<()> {
        let upload = self.work.path().join("upload.tar.gz");
        fs::write(&upload, archive)?;
        self.repo
            .add_package(&upload, name, version, false, Default::default())?;
        fs::remove_file(upload)?;
        Ok(())
    }

    fn publish(&self) -> Result<()> {
        self.repo.publish(&self.keys.publishing(), &never())?;
        Ok(())
    }

    fn metadata(&self, file: &str) -> PathBuf {
        self.repo.dir().join("metadata").join(file)
    }

    fn read(&self, file: &str) -> Result<Vec<u8>> {
        Ok(fs::read(self.metadata(file))?)
    }

    fn write(&self, file: &str, bytes: &[u8]) -> Result<()> {
        Ok(fs::write(self.metadata(file), bytes)?)
    }

    fn decode<T: pkgsign::metadata::Role>(&self, file: &str) -> Result<T> {
        Ok(Envelope::parse(&self.read(file)?)?.decode()?)
    }

    /// The path of package `name` in the published targets.
    fn package_file(&self, name: &str) -> Result<PathBuf> {
        let status = self.repo.status()?;
        let targets = status.targets.ok_or("nothing published")?;
        let info = targets.targets.get(name).ok_or("no such package")?;
        Ok(self.repo.dir().join(&info.path))
    }

    /// Lets a node accept the repository as it is now: its state directory
    /// is what the fixture's `trusted/` holds.
    fn trust_now(&self) -> Result<()> {
        let mut verifier = Verifier::open(&self.trusted_dir(), &self.read("1.root.json")?)?;
        verifier.update(&DirFetcher::new(self.repo.dir()), SystemTime::now())?;
        Ok(())
    }

    fn trusted_dir(&self) -> PathBuf {
        self.work.path().join("trusted")
    }

    /// Signs `doc` with `keys` and writes it as `file`; returns its bytes.
    fn forge<T: pkgsign::metadata::Role>(
        &self,
        file: &str,
        doc: &T,
        keys: &[&SecretKey],
    ) -> Result<Vec<u8>> {
        let bytes = sign_document(doc, keys)?;
        self.write(file, &bytes)?;
        Ok(bytes)
    }

    /// Writes the scenario to `out/name/`: `initial-root.json` (the root a
    /// node starts from, as on its CD), `repo/` (what is served) and, when
    /// the node accepted something before the attack, `trusted/`.
    fn save(&self, out: &Path, name: &str) -> Result<()> {
        let dir = out.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("initial-root.json"), self.read("1.root.json")?)?;
        for sub in ["metadata", "targets"] {
            copy_dir(&self.repo.dir().join(sub), &dir.join("repo").join(sub))?;
        }
        if self.trusted_dir().exists() {
            copy_dir(&self.trusted_dir(), &dir.join("trusted"))?;
        }
        Ok(())
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    let mut entries: Vec<_> = fs::read_dir(from)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Targets version 2 (same packages), signed by `signers`, with a snapshot
/// and timestamp signed properly on top: what an attacker holding those
/// keys, and fewer targets keys than the threshold, can publish.
fn targets_signed_by(s: &Scenario<'_>, signers: &[&SecretKey], twice: bool) -> Result<()> {
    let mut targets: Targets = s.decode("1.targets.json")?;
    targets.version = 2;
    let mut bytes = sign_document(&targets, signers)?;
    if twice {
        let mut value: serde_json::Value = serde_json::from_slice(&bytes)?;
        let signatures = value["signatures"]
            .as_array_mut()
            .ok_or("signatures is an array")?;
        signatures.push(signatures[0].clone());
        bytes = pkgsign::canonical::encode(&value)?;
    }
    s.write("2.targets.json", &bytes)?;
    let snapshot = Snapshot::new(2, time(NEVER), MetaInfo::describe(2, &bytes));
    let snapshot = s.forge("2.snapshot.json", &snapshot, &[&s.keys.snapshot])?;
    let timestamp = Timestamp::new(2, time(NEVER), MetaInfo::describe(2, &snapshot));
    s.forge("timestamp.json", &timestamp, &[&s.keys.timestamp])?;
    Ok(())
}

/// A root 2 that hands every role but snapshot to the attacker's key.
fn attacker_root(s: &Scenario<'_>, version: u64) -> Result<Root> {
    let mut root: Root = s.decode("1.root.json")?;
    root.version = version;
    let attacker = &s.keys.attacker;
    root.keys
        .insert(*attacker.id(), KeyEntry::ed25519(attacker.public()));
    for role in [RoleType::Root, RoleType::Targets, RoleType::Timestamp] {
        root.roles.insert(
            role,
            RoleKeys {
                keyids: vec![*attacker.id()],
                threshold: 1,
            },
        );
    }
    root.keys.retain(|id, _| {
        root.roles
            .values()
            .any(|role_keys| role_keys.keyids.contains(id))
    });
    Ok(root)
}

fn tuf_scenarios(keys: &Keys, out: &Path) -> Result<()> {
    // Nothing wrong: accepted, and its package installs.
    let s = Scenario::new(keys)?;
    s.save(out, "clean")?;

    // Timestamp 1 served again after the node saw timestamp 2.
    let s = Scenario::new(keys)?;
    let old = s.read("timestamp.json")?;
    s.publish()?;
    s.trust_now()?;
    s.write("timestamp.json", &old)?;
    s.save(out, "rollback-timestamp")?;

    // With the timestamp key only: a fresh timestamp pointing at snapshot 1.
    let s = Scenario::new(keys)?;
    let snapshot_1 = s.read("1.snapshot.json")?;
    s.publish()?;
    s.trust_now()?;
    let timestamp = Timestamp::new(3, time(NEVER), MetaInfo::describe(1, &snapshot_1));
    s.forge("timestamp.json", &timestamp, &[&keys.timestamp])?;
    s.save(out, "rollback-snapshot")?;

    // With the snapshot and timestamp keys: a fresh snapshot naming targets 1.
    let s = Scenario::new(keys)?;
    let targets_1 = s.read("1.targets.json")?;
    s.publish()?;
    s.trust_now()?;
    let snapshot = Snapshot::new(3, time(NEVER), MetaInfo::describe(1, &targets_1));
    let snapshot = s.forge("3.snapshot.json", &snapshot, &[&keys.snapshot])?;
    let timestamp = Timestamp::new(3, time(NEVER), MetaInfo::describe(3, &snapshot));
    s.forge("timestamp.json", &timestamp, &[&keys.timestamp])?;
    s.save(out, "rollback-targets")?;

    // A mirror keeps serving a timestamp long expired: the node must notice.
    let s = Scenario::new(keys)?;
    s.repo
        .refresh_timestamp(&[copy(&keys.timestamp)], time(EXPIRED))?;
    s.save(out, "freeze-expired-timestamp")?;

    // The newest root itself expired.
    let s = Scenario::new(keys)?;
    let signers = [copy(&keys.root[0]), copy(&keys.root[1])];
    s.repo
        .rotate_root(&BTreeMap::new(), time(EXPIRED), &signers)?;
    s.save(out, "freeze-expired-root")?;

    // The timestamp names snapshot 2; snapshot 1's bytes are served for it.
    let s = Scenario::new(keys)?;
    s.publish()?;
    let (one, two) = (s.read("1.snapshot.json")?, s.read("2.snapshot.json")?);
    if one.len() != two.len() {
        return Err("snapshots 1 and 2 differ in length: the fixture would test the length".into());
    }
    s.write("2.snapshot.json", &one)?;
    s.save(out, "mix-and-match-snapshot")?;

    // The snapshot names targets 2; targets 1's bytes are served for it.
    let s = Scenario::new(keys)?;
    s.publish()?;
    let (one, two) = (s.read("1.targets.json")?, s.read("2.targets.json")?);
    if one.len() != two.len() {
        return Err("targets 1 and 2 differ in length: the fixture would test the length".into());
    }
    s.write("2.targets.json", &one)?;
    s.save(out, "mix-and-match-targets")?;

    // Another package (valid, hostile) of exactly the signed length at the
    // signed path: only the hash tells.
    let s = Scenario::new(keys)?;
    let file = s.package_file("base")?;
    let length = fs::metadata(&file)?.len() as usize;
    fs::write(&file, same_length_package(length)?)?;
    s.save(out, "arbitrary-package-swapped-target")?;

    // One bit of the signed package flipped on the way.
    let s = Scenario::new(keys)?;
    let file = s.package_file("base")?;
    let mut bytes = fs::read(&file)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&file, bytes)?;
    s.save(out, "arbitrary-package-bit-flip")?;

    // Endless data: a timestamp beyond its fixed limit, a targets document
    // and a package beyond their signed lengths.
    let s = Scenario::new(keys)?;
    let mut bytes = s.read("timestamp.json")?;
    bytes.extend(std::iter::repeat_n(b' ', 20_000));
    s.write("timestamp.json", &bytes)?;
    s.save(out, "endless-data-timestamp")?;

    let s = Scenario::new(keys)?;
    let mut bytes = s.read("1.targets.json")?;
    bytes.extend(std::iter::repeat_n(b' ', 4096));
    s.write("1.targets.json", &bytes)?;
    s.save(out, "endless-data-targets")?;

    let s = Scenario::new(keys)?;
    let file = s.package_file("base")?;
    let mut bytes = fs::read(&file)?;
    bytes.extend(std::iter::repeat_n(0u8, 4096));
    fs::write(&file, bytes)?;
    s.save(out, "endless-data-package")?;

    // The signed unpacked length understates the archive's content (a
    // decompression bomb the publisher's tools did not measure).
    let s = Scenario::new(keys)?;
    let archive = targz(&[
        Item::File("a", &[1u8; 1000], 0o644),
        Item::File("b", &[2u8; 1000], 0o644),
    ]);
    s.add("base", "2", &archive)?;
    let pending_path = s.repo.dir().join("pending.json");
    let mut pending: serde_json::Value = serde_json::from_slice(&fs::read(&pending_path)?)?;
    pending["add"]["base"]["unpacked_length"] = 1500.into();
    fs::write(&pending_path, serde_json::to_vec(&pending)?)?;
    s.publish()?;
    s.save(out, "unpacked-length-understated")?;

    // One of the two targets keys (below the 2-of-2 threshold) signs targets 2.
    let s = Scenario::new(keys)?;
    targets_signed_by(&s, &[&keys.targets[0]], false)?;
    s.save(out, "threshold-one-of-two-signatures")?;

    // The same key's signature twice still counts once.
    let s = Scenario::new(keys)?;
    targets_signed_by(&s, &[&keys.targets[0]], true)?;
    s.save(out, "threshold-duplicate-signatures")?;

    // A new root handing the repository to the attacker, signed by one old
    // root key (threshold 2) and the attacker's.
    let s = Scenario::new(keys)?;
    let root = attacker_root(&s, 2)?;
    s.forge("2.root.json", &root, &[&keys.root[0], &keys.attacker])?;
    s.save(out, "root-rotation-unsigned-by-old")?;

    // A properly signed root that skips a version.
    let s = Scenario::new(keys)?;
    let mut root: Root = s.decode("1.root.json")?;
    root.version = 3;
    s.forge("2.root.json", &root, &[&keys.root[0], &keys.root[1]])?;
    s.save(out, "root-rotation-version-skip")?;
    Ok(())
}

/// A hostile but valid package of exactly `length` bytes: the gzip
/// header's comment pads it.
fn same_length_package(length: usize) -> Result<Vec<u8>> {
    let tar = tar_bytes(&[
        Item::Dir("etc", 0o755),
        Item::File("etc/motd", b"owned\n", 0o644),
    ]);
    let build = |comment_len: usize| -> Result<Vec<u8>> {
        let mut encoder = flate2::GzBuilder::new()
            .comment(vec![b'x'; comment_len])
            .write(Vec::new(), flate2::Compression::best());
        encoder.write_all(&tar)?;
        Ok(encoder.finish()?)
    };
    let bare = build(0)?.len();
    if bare >= length {
        return Err(
            format!("the hostile package ({bare} bytes) is not shorter than {length}").into(),
        );
    }
    let padded = build(length - bare)?;
    if padded.len() != length {
        return Err(format!("padded package is {} bytes, not {length}", padded.len()).into());
    }
    Ok(padded)
}

/// Single documents that must not parse or validate, whatever signs them.
fn document_fixtures(keys: &Keys, out: &Path) -> Result<()> {
    let s = Scenario::new(keys)?;
    let timestamp = String::from_utf8(s.read("timestamp.json")?)?;
    let targets: Targets = s.decode("1.targets.json")?;
    let root: Root = s.decode("1.root.json")?;

    // Two readers could take either value: a duplicate key is an error.
    let duplicate = timestamp.replacen("\"version\":1", "\"version\":1,\"version\":9", 1);
    if duplicate == timestamp {
        return Err("timestamp has no \"version\":1 to duplicate".into());
    }
    fs::write(out.join("duplicate-json-keys.json"), duplicate)?;

    // Floats have no canonical form.
    let float = timestamp.replacen("\"version\":1", "\"version\":1.0", 1);
    fs::write(out.join("float-in-metadata.json"), float)?;

    // Nesting beyond the parser's depth limit.
    let depth = pkgsign::canonical::MAX_DEPTH + 1;
    let deep = format!(
        "{{\"signatures\":[],\"signed\":{{\"x\":{}{}}}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    fs::write(out.join("nesting-too-deep.json"), deep)?;

    // An envelope with a field nothing signs.
    let extra = timestamp.replacen(
        "{\"signatures\"",
        "{\"comment\":\"trust me\",\"signatures\"",
        1,
    );
    fs::write(out.join("envelope-extra-field.json"), extra)?;

    // Properly signed targets whose package path leaves `targets/`.
    let mut escaping = targets.clone();
    if let Some(info) = escaping.targets.values_mut().next() {
        info.path = "targets/../../../etc/shadow".into();
    }
    let signers: Vec<&SecretKey> = keys.targets.iter().collect();
    fs::write(
        out.join("targets-path-escapes-repository.json"),
        sign_document(&escaping, &signers)?,
    )?;

    // Properly signed targets with a hash algorithm no one checks.
    let mut value = serde_json::to_value(&targets)?;
    if let Some(hashes) = value["targets"]["base"]["hashes"].as_object_mut() {
        hashes.insert("md5".into(), "00".repeat(16).into());
    }
    let signed = pkgsign::canonical::encode(&value)?;
    let mut envelope = serde_json::json!({"signatures": [], "signed": value});
    for key in &keys.targets {
        envelope["signatures"]
            .as_array_mut()
            .ok_or("signatures is an array")?
            .push(serde_json::json!({
                "keyid": key.id().to_string(),
                "sig": hex::encode(key.sign(&signed)),
            }));
    }
    fs::write(
        out.join("targets-unknown-hash-algorithm.json"),
        pkgsign::canonical::encode(&envelope)?,
    )?;

    // A root whose root role needs no signature at all.
    let mut lax = root.clone();
    lax.version = 2;
    if let Some(role_keys) = lax.roles.get_mut(&RoleType::Root) {
        role_keys.threshold = 0;
    }
    fs::write(
        out.join("root-threshold-zero.json"),
        sign_document(&lax, &[&keys.root[0], &keys.root[1]])?,
    )?;
    Ok(())
}

/// Archives that must not be extracted (as ordinary packages; the test
/// says which are refused in base images too).
fn archive_fixtures(out: &Path) -> Result<()> {
    let write = |name: &str, bytes: Vec<u8>| fs::write(out.join(name), bytes);
    write("tar-clean.tar.gz", sample_package("clean"))?;
    write(
        "tar-dotdot.tar.gz",
        targz(&[Item::File("a/../../evil", b"x", 0o644)]),
    )?;
    write(
        "tar-absolute-path.tar.gz",
        targz(&[Item::File("/tmp/evil", b"x", 0o644)]),
    )?;
    write(
        "tar-symlink-escape.tar.gz",
        targz(&[Item::Dir("a", 0o755), Item::Symlink("a/l", "../../evil")]),
    )?;
    write(
        "tar-symlink-absolute.tar.gz",
        targz(&[Item::Symlink("passwd", "/etc/passwd")]),
    )?;
    write(
        "tar-write-through-symlink.tar.gz",
        targz(&[
            Item::Symlink("d", "/tmp"),
            Item::File("d/evil", b"x", 0o644),
        ]),
    )?;
    write(
        "tar-symlink-dotdot-after-name.tar.gz",
        targz(&[Item::Symlink("l", "a/../../evil")]),
    )?;
    write(
        "tar-write-through-symlink-inside.tar.gz",
        targz(&[
            Item::Dir("real", 0o755),
            Item::Symlink("d", "real"),
            Item::File("d/f", b"x", 0o644),
        ]),
    )?;
    write(
        "tar-file-replaced-by-symlink.tar.gz",
        targz(&[
            Item::File("f", b"x", 0o644),
            Item::Symlink("f", "real"),
            Item::File("f/x", b"x", 0o644),
        ]),
    )?;
    write(
        "tar-hardlink-escape.tar.gz",
        targz(&[Item::HardLink("h", "../evil")]),
    )?;
    write(
        "tar-hardlink-absolute.tar.gz",
        targz(&[Item::HardLink("h", "/etc/shadow")]),
    )?;
    write(
        "tar-hardlink-to-symlink.tar.gz",
        targz(&[Item::Symlink("s", "x"), Item::HardLink("h", "s")]),
    )?;
    write(
        "tar-hardlink-to-missing-file.tar.gz",
        targz(&[Item::HardLink("h", "missing")]),
    )?;
    write(
        "tar-device-node.tar.gz",
        targz(&[Item::CharDevice("null", 1, 3)]),
    )?;
    write("tar-fifo.tar.gz", targz(&[Item::Fifo("fifo")]))?;
    write(
        "tar-setuid.tar.gz",
        targz(&[Item::File("su", b"#!/bin/sh\n", 0o4755)]),
    )?;
    write(
        "tar-setgid-directory.tar.gz",
        targz(&[Item::Dir("d", 0o2775)]),
    )?;
    write(
        "tar-directory-replaced-by-file.tar.gz",
        targz(&[Item::Dir("etc", 0o755), Item::File("etc", b"x", 0o644)]),
    )?;
    // 64 MiB of zeros in ~64 KiB: far beyond 64 times the package's length.
    let zeros = vec![0u8; 64 << 20];
    let mut tar = tar::Builder::new(Vec::new());
    let header = raw_header(
        b"bomb",
        tar::EntryType::Regular,
        0o644,
        zeros.len() as u64,
        b"",
    );
    tar.append(&header, &zeros[..])?;
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&tar.into_inner()?)?;
    write("gzip-bomb.tar.gz", bomb.finish()?)?;
    Ok(())
}

fn main() -> Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data"));
    fs::create_dir_all(&out)?;
    let keys = Keys::load_or_make(&out.join("keys"))?;
    tuf_scenarios(&keys, &out)?;
    document_fixtures(&keys, &out)?;
    archive_fixtures(&out)?;
    println!("fixtures written to {}", out.display());
    Ok(())
}
