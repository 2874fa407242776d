//! Downloads over HTTPS from a real server on 127.0.0.1 that misbehaves:
//! broken connections are resumed with Range + If-Range, changed files and
//! endless or slow bodies are refused, and the node stays untouched.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use common::server::{Knob, Pki, TestServer};
use common::*;
use pkgsign::fetch::{DownloadPolicy, FetchError, Fetcher, HttpFetcher};
use pkgsign::install::{self, InstallOptions};
use pkgsign::net::{build_client, ClientOptions};
use pkgsign::verify::{Verifier, VerifyError};

struct Setup {
    fx: Fixture,
    server: TestServer,
    pki: Pki,
}

fn big_package() -> Vec<u8> {
    // ~1 MiB of poorly compressible data, so breaks land mid-stream.
    let mut data = Vec::with_capacity(1 << 20);
    let mut x: u32 = 12345;
    for _ in 0..(1 << 20) {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        data.push((x >> 16) as u8);
    }
    targz(&[
        Item::Dir("data", 0o755),
        Item::File("data/blob", &data, 0o644),
        Item::File("data/small", b"s", 0o644),
    ])
}

impl Setup {
    fn new() -> Setup {
        let fx = Fixture::new();
        fx.add("base", "1", &big_package(), false);
        fx.publish();
        let pki = Pki::new("boot server CA");
        let server = TestServer::start(fx.repo_dir(), pki.leaf());
        fs::create_dir_all(fx.path("node")).unwrap();
        Setup { fx, server, pki }
    }

    fn fetcher(&self, read_timeout: Duration, policy: DownloadPolicy) -> HttpFetcher {
        let mut options = ClientOptions::new(self.pki.ca_pem.clone().into_bytes());
        options.read_timeout = read_timeout;
        HttpFetcher::new(
            &self.server.base_url(),
            build_client(&options).unwrap(),
            policy,
        )
        .unwrap()
    }

    fn quick_policy() -> DownloadPolicy {
        DownloadPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            ..DownloadPolicy::default()
        }
    }

    fn node(&self) -> PathBuf {
        self.fx.path("node")
    }

    fn install_with(&self, fetcher: &HttpFetcher) -> Result<install::InstallReport, String> {
        let mut verifier =
            Verifier::open(&self.node().join("state"), &self.fx.initial_root()).unwrap();
        let update = verifier
            .check(fetcher, SystemTime::now())
            .map_err(|e| e.to_string())?;
        let packages = update.repo().packages(&["base"]).unwrap();
        let report = install::install(
            fetcher,
            &packages,
            &self.node().join("target"),
            &InstallOptions::default(),
        )
        .map_err(|e| e.to_string())?;
        verifier.commit(update).map_err(|e| e.to_string())?;
        Ok(report)
    }

    fn install(&self) -> Result<install::InstallReport, String> {
        self.install_with(&self.fetcher(Duration::from_secs(10), Self::quick_policy()))
    }

    fn package_path(&self) -> String {
        let pending: BTreeMap<String, String> = fs::read_dir(self.fx.repo_dir().join("targets"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .map(|n| (n.clone(), n))
            .collect();
        format!("targets/{}", pending.keys().next().unwrap())
    }

    fn snapshot(&self) -> BTreeMap<String, String> {
        fs::create_dir_all(self.node()).unwrap();
        snapshot_tree(&self.node())
    }
}

#[test]
fn broken_download_resumes_with_range_and_if_range() {
    let setup = Setup::new();
    let path = setup.package_path();
    setup.server.set_knob(
        &path,
        Knob::BreakAfter {
            bytes: 300_000,
            times: 1,
        },
    );
    let report = setup.install().unwrap();
    assert!(report.unpacked_bytes > 1_000_000);
    let requests: Vec<_> = setup
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&path))
        .collect();
    assert_eq!(requests.len(), 2, "one break, one resume: {requests:?}");
    assert_eq!(requests[1].header("range"), Some("bytes=300000-"));
    assert!(
        requests[1]
            .header("if-range")
            .is_some_and(|v| v.starts_with('"')),
        "{requests:?}"
    );
    assert_eq!(
        fs::read(setup.node().join("target/data/small")).unwrap(),
        b"s"
    );
}

#[test]
fn file_changed_between_break_and_resume_is_refused() {
    let setup = Setup::new();
    let path = setup.package_path();
    // The connection breaks; the resumed request finds different content
    // (a new ETag), so If-Range fails and the server sends the whole file.
    setup.server.set_knob(
        &path,
        Knob::ChangeOnResume {
            break_after: 300_000,
        },
    );
    let before = setup.snapshot();
    let err = setup.install().unwrap_err();
    assert!(
        err.contains("changed on the server during the download"),
        "{err}"
    );
    assert_eq!(setup.snapshot(), before);
    let resumed = setup
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&path))
        .nth(1)
        .unwrap();
    assert!(resumed.header("if-range").is_some());
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let setup = Setup::new();
    setup.server.set_knob(
        "metadata/timestamp.json",
        Knob::Status {
            code: 503,
            times: 2,
        },
    );
    setup.install().unwrap();
    let tries = setup
        .server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("timestamp.json"))
        .count();
    assert_eq!(tries, 3);
}

#[test]
fn retries_are_bounded() {
    let setup = Setup::new();
    setup.server.set_knob(
        "metadata/timestamp.json",
        Knob::Status {
            code: 503,
            times: 100,
        },
    );
    let before = setup.snapshot();
    let err = setup.install().unwrap_err();
    assert!(
        err.contains("server answered HTTP 503 (gave up after 3 attempts)"),
        "{err}"
    );
    assert_eq!(setup.snapshot(), before);
}

#[test]
fn endless_package_with_advertised_length_is_refused_before_reading() {
    let setup = Setup::new();
    let path = setup.package_path();
    setup.server.set_knob(
        &path,
        Knob::Extra {
            bytes: 10_000,
            advertise: true,
        },
    );
    let before = setup.snapshot();
    let err = setup.install().unwrap_err();
    assert!(err.contains("longer than the allowed"), "{err}");
    assert_eq!(setup.snapshot(), before);
}

#[test]
fn endless_package_without_length_is_cut_at_the_signed_length() {
    let setup = Setup::new();
    let path = setup.package_path();
    setup.server.set_knob(
        &path,
        Knob::Extra {
            bytes: 10_000_000,
            advertise: false,
        },
    );
    let before = setup.snapshot();
    let err = setup.install().unwrap_err();
    assert!(err.contains("longer than the allowed"), "{err}");
    assert_eq!(setup.snapshot(), before);
    let requests = setup
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&path))
        .count();
    assert_eq!(requests, 1, "endless data is not retried");
}

#[test]
fn endless_timestamp_is_cut_at_16_kib() {
    let setup = Setup::new();
    setup.server.set_knob(
        "metadata/timestamp.json",
        Knob::Extra {
            bytes: 1_000_000,
            advertise: false,
        },
    );
    let before = setup.snapshot();
    let err = setup.install().unwrap_err();
    assert!(err.contains("longer than the allowed 16384 bytes"), "{err}");
    assert_eq!(setup.snapshot(), before);
}

#[test]
fn stalled_server_times_out_and_gives_up() {
    let setup = Setup::new();
    let path = setup.package_path();
    setup.server.set_knob(&path, Knob::StallAfter(100_000));
    let before = setup.snapshot();
    let policy = DownloadPolicy {
        max_attempts: 2,
        ..Setup::quick_policy()
    };
    let err = setup
        .install_with(&setup.fetcher(Duration::from_millis(700), policy))
        .unwrap_err();
    assert!(
        err.contains("timed out") && err.contains("gave up after 2 attempts"),
        "{err}"
    );
    assert_eq!(setup.snapshot(), before);
}

#[test]
fn trickling_server_is_abandoned_by_the_minimum_rate() {
    let setup = Setup::new();
    setup.server.set_knob(
        "metadata/timestamp.json",
        Knob::Trickle { bytes_per_sec: 50 },
    );
    let before = setup.snapshot();
    // Each byte arrives well within the read timeout; only the rate check stops it.
    let policy = DownloadPolicy {
        max_attempts: 2,
        min_rate: 1000,
        rate_window: Duration::from_millis(500),
        ..Setup::quick_policy()
    };
    let err = setup
        .install_with(&setup.fetcher(Duration::from_secs(10), policy))
        .unwrap_err();
    assert!(err.contains("slow-retrieval defence"), "{err}");
    assert_eq!(setup.snapshot(), before);
}

#[test]
fn metadata_not_found_is_distinguishable() {
    let setup = Setup::new();
    let fetcher = setup.fetcher(Duration::from_secs(10), Setup::quick_policy());
    let err = pkgsign::fetch::fetch_to_vec(&fetcher, "metadata/99.root.json", 1000).unwrap_err();
    assert!(matches!(err, FetchError::NotFound { .. }), "{err}");
    let _: Option<VerifyError> = None;
}

#[test]
fn conditional_fetch_of_an_unchanged_file_sends_no_body() {
    let setup = Setup::new();
    let fetcher = setup.fetcher(Duration::from_secs(10), Setup::quick_policy());
    let path = "metadata/timestamp.json";
    let bytes = fs::read(setup.fx.repo_dir().join(path)).unwrap();
    let tag = common::server::etag(&bytes);
    let unchanged = fetcher.fetch_if_none_match(path, 16384, &tag).unwrap();
    assert!(unchanged.is_none(), "the server answered 304: no body");
    let mut changed = fetcher
        .fetch_if_none_match(path, 16384, "\"some-older-tag\"")
        .unwrap()
        .expect("a different tag gets the file");
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut changed, &mut got).unwrap();
    assert_eq!(got, bytes);
    let seen: Vec<_> = setup
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(path))
        .collect();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("if-none-match"), Some(tag.as_str()));
    // The limit still holds for a conditional fetch that gets a body.
    let err = fetcher
        .fetch_if_none_match(path, 10, "\"x\"")
        .err()
        .expect("longer than 10 bytes");
    assert!(matches!(err, FetchError::TooLong { .. }), "{err}");
}

#[test]
fn download_continues_where_an_earlier_run_stopped() {
    let setup = Setup::new();
    let path = setup.package_path();
    let whole = fs::read(setup.fx.repo_dir().join(&path)).unwrap();
    let tag = common::server::etag(&whole);
    let fetcher = setup.fetcher(Duration::from_secs(10), Setup::quick_policy());
    // An earlier run kept the first 200,000 bytes; this one also loses its
    // connection once and must still deliver exactly the rest.
    let kept = 200_000u64;
    setup.server.set_knob(
        &path,
        Knob::BreakAfter {
            bytes: 300_000,
            times: 1,
        },
    );
    let mut rest = Vec::new();
    let mut reader = fetcher
        .fetch_from(&path, kept, &tag, whole.len() as u64)
        .unwrap();
    std::io::Read::read_to_end(&mut reader, &mut rest).unwrap();
    assert_eq!(rest.len() as u64, whole.len() as u64 - kept);
    assert_eq!(&whole[kept as usize..], &rest[..]);
    let seen: Vec<_> = setup
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&path))
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].header("range"), Some("bytes=200000-"));
    assert_eq!(seen[0].header("if-range"), Some(tag.as_str()));
    assert_eq!(seen[1].header("range"), Some("bytes=500000-"));
}

#[test]
fn continuing_a_download_of_a_changed_file_is_refused() {
    let setup = Setup::new();
    let path = setup.package_path();
    let whole = fs::read(setup.fx.repo_dir().join(&path)).unwrap();
    let fetcher = setup.fetcher(Duration::from_secs(10), Setup::quick_policy());
    // The partial file came from content with another tag: the server sends
    // the whole file, which cannot be appended to what was kept.
    let err = fetcher
        .fetch_from(&path, 1000, "\"not-this-file\"", whole.len() as u64)
        .err()
        .expect("refused");
    assert!(matches!(err, FetchError::Changed { .. }), "{err}");
    // More kept than the file may have is refused without a request.
    let err = fetcher
        .fetch_from(&path, whole.len() as u64 + 1, "\"x\"", whole.len() as u64)
        .err()
        .expect("refused");
    assert!(matches!(err, FetchError::TooLong { .. }), "{err}");
}
