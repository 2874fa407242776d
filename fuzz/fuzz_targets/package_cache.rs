//! Untrusted package bytes on their way into the node's package cache: what
//! a server serves, and what an earlier attempt (against the same hostile
//! server, or cut by a crash) left as a partial file. Through
//! `VerifiedReader` and `PackageCache::ensure`: never a panic; a complete
//! file in the cache is always the signed package; a refused download
//! leaves nothing behind, so the next download of the right file succeeds.
//!
//! Seeds: `pkgsign/tests/data` (the signed package is its `tar-clean.tar.gz`).
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;

use libfuzzer_sys::fuzz_target;
use pkgsign::cache::{PackageCache, Quiet};
use pkgsign::fetch::DirFetcher;
use pkgsign::metadata::{Hashes, Sha256Digest, TargetInfo};
use pkgsign::verified::{Expected, VerifiedReader};
use pkgsign::VerifiedRepo;

const SIGNED: &[u8] = include_bytes!("../../pkgsign/tests/data/tar-clean.tar.gz");

fn verified_read(bytes: &[u8], expected: Expected) -> bool {
    VerifiedReader::new(bytes, expected)
        .read_to_end(&mut Vec::new())
        .is_ok()
}

fuzz_target!(|data: &[u8]| {
    let sha256 = Sha256Digest::of(SIGNED);
    let signed = Expected::new("package base", SIGNED.len() as u64, sha256);
    assert_eq!(verified_read(data, signed.clone()), data == SIGNED);
    assert!(verified_read(
        data,
        Expected::new("itself", data.len() as u64, Sha256Digest::of(data))
    ));

    let info = TargetInfo {
        version: "1".into(),
        length: SIGNED.len() as u64,
        hashes: Hashes { sha256 },
        path: format!("targets/{sha256}.base-1.tar.gz"),
        unpacked_length: None,
        base_image: false,
        custom: Default::default(),
    };
    let repo = VerifiedRepo {
        root_version: 1,
        timestamp_version: 1,
        snapshot_version: 1,
        targets_version: 1,
        targets_sha256: sha256,
        targets_expires: floor::Timestamp::from_unix(4_102_444_800),
        targets: BTreeMap::from([("base".to_string(), info.clone())]),
    };
    let Some(package) = repo.package("base") else {
        unreachable!("listed above")
    };
    let Ok(tmp) = tempfile::tempdir() else { return };
    let (served, cached) = (tmp.path().join("served"), tmp.path().join("cache"));
    let serve = |bytes: &[u8]| {
        let path = served.join(&info.path);
        fs::create_dir_all(path.parent().expect("under targets/")).expect("tmp is writable");
        fs::write(path, bytes).expect("tmp is writable");
    };
    let cache = PackageCache::new(&cached);
    let complete = cache.complete_path(&package);
    let partial = complete.with_extension("gz.part");
    // An earlier attempt kept the first third of what the server sent.
    fs::create_dir_all(complete.parent().expect("under targets/")).expect("tmp is writable");
    fs::write(&partial, &data[..data.len() / 3]).expect("tmp is writable");
    serve(data);
    match cache.ensure(&DirFetcher::new(&served), &package, &Quiet) {
        Ok(_) => assert_eq!(fs::read(&complete).expect("complete file"), SIGNED),
        Err(e) => {
            assert!(!complete.exists(), "{e}: a complete file after a failure");
            if e.is_refusal() {
                assert!(!partial.exists(), "{e}: a refused download left its bytes");
            }
        }
    }
    serve(SIGNED);
    if let Err(e) = cache.ensure(&DirFetcher::new(&served), &package, &Quiet) {
        panic!("the signed package after a hostile attempt: {e}");
    }
    assert_eq!(fs::read(&complete).expect("complete file"), SIGNED);
});
