//! The repository: `repo publish` verifies with pkgsign and refuses what a
//! node would refuse; the server serves exactly the published files with
//! ETag, If-None-Match, Range and If-Range, and nothing else.

mod common;

use common::repo::{noise, SignedRepo};
use common::Workdir;
use sha2::{Digest, Sha256};

struct Published {
    wd: Workdir,
    repo: SignedRepo,
    big_path: String,
    big: Vec<u8>,
}

fn published() -> Published {
    let wd = Workdir::new();
    let repo = SignedRepo::new(&wd.tmp.path().join("staff-repo"));
    let content = noise(3 << 20, 7);
    let big_path = repo.add("base", "1.0", &content);
    repo.add("tools", "1.0", b"small");
    repo.publish();
    let out = wd.ok(&[
        "repo",
        "publish",
        repo.dir.to_str().unwrap(),
        "--root",
        repo.root_json().to_str().unwrap(),
    ]);
    assert!(
        out.contains("targets v1") && out.contains("2 package(s)"),
        "{out}"
    );
    let big = std::fs::read(repo.dir.join(&big_path)).unwrap();
    Published {
        wd,
        repo,
        big_path,
        big,
    }
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[test]
fn published_files_are_served_with_etags_and_conditional_requests() {
    let p = published();
    let server = p.wd.start();
    let (_, config) = p.wd.add_node("n1.example.org");
    let mut c = p.wd.client(&server, &config);

    let ts = c.get("/repo/metadata/timestamp.json", &[]);
    assert_eq!(ts.status, 200);
    assert_eq!(
        ts.body,
        std::fs::read(p.repo.dir.join("metadata/timestamp.json")).unwrap()
    );
    let etag = ts.header("etag").unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", sha(&ts.body)));
    assert_eq!(ts.header("cache-control"), Some("no-cache"));
    assert_eq!(ts.header("content-type"), Some("application/json"));

    let again = c.get("/repo/metadata/timestamp.json", &[("If-None-Match", &etag)]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let other = c.get(
        "/repo/metadata/timestamp.json",
        &[("If-None-Match", "\"0000\"")],
    );
    assert_eq!(other.status, 200);

    let path = format!("/repo/{}", p.big_path);
    let whole = c.get(&path, &[]);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body.len(), p.big.len());
    assert!(whole.body == p.big, "the large file arrives intact");
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert!(whole.header("cache-control").unwrap().contains("immutable"));
    // The same connection served all of it (keep-alive).
    assert_eq!(c.get("/repo/metadata/1.root.json", &[]).status, 200);

    // HEAD: headers only.
    let head = c.send_raw(&common::client::raw_request("HEAD", &path, &[], b""));
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(p.big.len().to_string().as_str())
    );
}

#[test]
fn ranges_resume_downloads_and_if_range_guards_against_a_changed_file() {
    let p = published();
    let server = p.wd.start();
    let (_, config) = p.wd.add_node("n1.example.org");
    let mut c = p.wd.client(&server, &config);
    let path = format!("/repo/{}", p.big_path);
    let len = p.big.len();
    let etag = c
        .get(&path, &[("Range", "bytes=0-0")])
        .header("etag")
        .unwrap()
        .to_string();

    // Resume from the middle, as a node whose download broke off does.
    let from = 1_000_000;
    let part = c.get(
        &path,
        &[("Range", &format!("bytes={from}-")), ("If-Range", &etag)],
    );
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes {from}-{}/{len}", len - 1).as_str())
    );
    assert!(part.body == p.big[from..]);

    let middle = c.get(&path, &[("Range", "bytes=10-19")]);
    assert_eq!(middle.status, 206);
    assert_eq!(middle.body, &p.big[10..20]);
    let tail = c.get(&path, &[("Range", "bytes=-5")]);
    assert_eq!(tail.body, &p.big[len - 5..]);

    // If-Range naming another version: the whole (current) file instead.
    let changed = c.get(
        &path,
        &[("Range", "bytes=100-"), ("If-Range", "\"deadbeef\"")],
    );
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body.len(), len);

    let beyond = c.get(&path, &[("Range", &format!("bytes={len}-"))]);
    assert_eq!(beyond.status, 416);
    assert_eq!(
        beyond.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    assert_eq!(beyond.error_code(), "range_not_satisfiable");

    // Small files come from memory: ranges work the same.
    let small = c.get("/repo/metadata/timestamp.json", &[("Range", "bytes=0-9")]);
    assert_eq!(small.status, 206);
    assert_eq!(small.body.len(), 10);
}

#[test]
fn nothing_outside_the_published_files_is_served() {
    let p = published();
    let server = p.wd.start();
    let (_, config) = p.wd.add_node("n1.example.org");
    let mut c = p.wd.client(&server, &config);
    let attempts = [
        "/repo/metadata/../../registry.db",
        "/repo/metadata/..%2f..%2fregistry.db",
        "/repo/metadata/%2e%2e%2f%2e%2e%2fregistry.db",
        "/repo/metadata/%2e%2e",
        "/repo/targets/..",
        "/repo/index.json",
        "/repo/metadata/index.json",
        "/repo/pending.json",
        "/repo/../bootserver.toml",
        "/repo/ca/ca.key",
        "/repo/tls/server.key",
        "/repo/metadata/.hidden",
        "/repo/metadata/",
        "/repo/metadata",
        "/repo/metadata/timestamp.json/x",
        "/repo//etc/passwd",
        "/repo/%2fetc%2fpasswd",
        "/repo/metadata/%00",
        "//repo/metadata/timestamp.json/../../../registry.db",
    ];
    for path in attempts {
        let reply = c.get(path, &[]);
        assert!(
            reply.status == 404 || reply.status == 400,
            "{path}: {} {}",
            reply.status,
            reply.text()
        );
        assert!(
            !reply.body.windows(6).any(|w| w == b"SQLite"),
            "{path} leaked the database"
        );
        assert!(!reply.text().contains("PRIVATE KEY"), "{path} leaked a key");
    }
    // A file dropped into the snapshot after publishing is not in the index.
    let snapshot = std::fs::read_link(p.wd.dir.join("repo")).unwrap();
    std::fs::write(p.wd.dir.join(&snapshot).join("metadata/extra.json"), b"{}").unwrap();
    assert_eq!(c.get("/repo/metadata/extra.json", &[]).status, 404);
}

#[test]
fn unsigned_tampered_and_older_repositories_are_refused_and_the_served_one_stays() {
    let p = published();
    let server = p.wd.start();
    let (_, config) = p.wd.add_node("n1.example.org");
    let mut c = p.wd.client(&server, &config);
    let served = c.get("/repo/metadata/timestamp.json", &[]).body;
    let tmp = p.wd.tmp.path();

    // No trusted root yet on a fresh server.
    let fresh = Workdir::new();
    let e = fresh.fails(&["repo", "publish", p.repo.dir.to_str().unwrap()]);
    assert!(e.contains("--root"), "{e}");

    // Unsigned: a directory with packages but no signed metadata.
    let unsigned = tmp.join("unsigned");
    std::fs::create_dir_all(unsigned.join("metadata")).unwrap();
    std::fs::create_dir_all(unsigned.join("targets")).unwrap();
    std::fs::write(unsigned.join("targets/x.tar.gz"), b"payload").unwrap();
    let e = p.wd.fails(&["repo", "publish", unsigned.to_str().unwrap()]);
    assert!(e.contains("does not verify"), "{e}");

    // Tampered package: metadata fine, bytes changed.
    let tampered = tmp.join("tampered");
    copy_tree(&p.repo.dir, &tampered);
    let victim = tampered.join(&p.big_path);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let e = p.wd.fails(&["repo", "publish", tampered.to_str().unwrap()]);
    assert!(
        e.contains("package base") && e.contains("signed targets say"),
        "{e}"
    );

    // Tampered metadata: a signature no longer matches.
    let forged = tmp.join("forged");
    copy_tree(&p.repo.dir, &forged);
    let ts_path = forged.join("metadata/timestamp.json");
    let text = std::fs::read_to_string(&ts_path).unwrap();
    std::fs::write(&ts_path, text.replacen("\"version\":1", "\"version\":9", 1)).unwrap();
    let e = p.wd.fails(&["repo", "publish", forged.to_str().unwrap()]);
    assert!(e.contains("does not verify"), "{e}");

    // Older: keep a copy of version 1, publish version 2, then offer 1 again.
    let v1 = tmp.join("v1");
    copy_tree(&p.repo.dir, &v1);
    p.repo.add("tools", "1.1", b"newer");
    p.repo.publish();
    p.wd.ok(&["repo", "publish", p.repo.dir.to_str().unwrap()]);
    let v2_served = c.get("/repo/metadata/timestamp.json", &[]).body;
    assert_ne!(v2_served, served, "the new snapshot is served right away");
    let e = p.wd.fails(&["repo", "publish", v1.to_str().unwrap()]);
    assert!(e.contains("rollback"), "{e}");
    assert_eq!(c.get("/repo/metadata/timestamp.json", &[]).body, v2_served);

    let shown = p.wd.json(&["repo", "show"]);
    assert_eq!(shown[0]["timestamp_version"], 2);
    assert_eq!(shown[1]["timestamp_version"], 1);
    // Failed publishes left no staging directories behind.
    let leftovers: Vec<_> = std::fs::read_dir(p.wd.dir.join("repo.d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_verifier_reading_from_the_server_accepts_the_repository() {
    // What a node does: pkgsign's verifier over HTTPS against the server.
    let p = published();
    let server = p.wd.start();
    let state = p.wd.tmp.path().join("node-trust");
    let root = std::fs::read(p.repo.root_json()).unwrap();
    let mut verifier = pkgsign::Verifier::open(&state, &root).unwrap();
    let options = pkgsign::net::ClientOptions::new(std::fs::read(p.wd.ca()).unwrap());
    let client = pkgsign::net::build_client(&options).unwrap();
    let base = format!("https://localhost:{}/repo", server.addr.port());
    let fetcher = pkgsign::fetch::HttpFetcher::new(&base, client, Default::default()).unwrap();
    let verified = verifier
        .update(&fetcher, std::time::SystemTime::now())
        .unwrap();
    assert_eq!(verified.targets.len(), 2);
    assert_eq!(verified.targets["base"].length, p.big.len() as u64);
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for sub in ["metadata", "targets"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for e in std::fs::read_dir(from.join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(sub).join(e.file_name())).unwrap();
        }
    }
}
