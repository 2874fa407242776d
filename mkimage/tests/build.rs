//! `mkimage build` as staff run it: the node OS packages from a spec, twice
//! identical, added to a pkgsign repository, installable by pkgsign's safe
//! extractor, and (as root) the base root actually runs its programs.
//! busybox-static stands in for the project's `init` binary: packaging
//! does not care which static program it is.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pkgsign::install::{extract_tar, ExtractPolicy, Manifest};
use pkgsign::metadata::RoleType;
use pkgsign::repo::{Repository, RoleSpec};
use pkgsign::SecretKey;

const SPEC: &str = r#"
version = "2026.11.1"
source_date_epoch = 1795000000

[kernel]
trim = true
extra_modules = ["dummy"]

[base]
ssh = "dropbear"

[[base.binaries]]
name = "init"
dest = "/sbin/init"

[[base.files]]
dest = "/etc/plnode/supervisor.toml"
path = "supervisor.toml"

[sliver_ref]
flavour = "busybox"
"#;

const SUPERVISOR: &str =
    "[[service]]\nname = \"sshd\"\ncommand = [\"/usr/sbin/dropbear\", \"-F\"]\n";

fn prerequisites() -> Result<(), String> {
    for (file, package) in [
        ("/bin/busybox", "busybox-static"),
        ("/usr/sbin/dropbear", "dropbear-bin"),
    ] {
        if !Path::new(file).exists() {
            return Err(format!("{file} missing (apt-get install {package})"));
        }
    }
    let kernel = fs::read_dir("/boot")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        })
        .unwrap_or(false);
    if !kernel {
        return Err("no Debian kernel in /boot (apt-get install linux-image-amd64)".into());
    }
    Ok(())
}

macro_rules! require {
    () => {
        if let Err(reason) = prerequisites() {
            eprintln!("SKIP: {reason}");
            return;
        }
    };
}

fn mkimage(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_mkimage"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    eprintln!(
        "$ mkimage {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("mkimage")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn extract(package: &Path, dest: &Path, base_image: bool) -> Manifest {
    fs::create_dir_all(dest).unwrap();
    let mut manifest = Manifest::default();
    let file = fs::File::open(package).unwrap();
    let policy = ExtractPolicy {
        base_image,
        preserve_ownership: false,
        max_unpacked: u64::MAX,
    };
    extract_tar(
        flate2::read::GzDecoder::new(file),
        dest,
        "",
        &policy,
        &mut manifest,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", package.display()));
    manifest
}

#[test]
fn packages_are_reproducible_and_go_into_a_repository() {
    require!();
    let dir = scratch("reproducible");
    let spec = dir.join("nodeos.toml");
    fs::write(&spec, SPEC).unwrap();
    fs::write(dir.join("supervisor.toml"), SUPERVISOR).unwrap();
    let mut outputs = Vec::new();
    for run in ["a", "b"] {
        let out_dir = dir.join(run);
        let out = mkimage(&[
            "build",
            s(&spec),
            "--out-dir",
            s(&out_dir),
            "--binary",
            "init=/bin/busybox",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            files(&out_dir),
            [
                "base-2026.11.1.tar.gz",
                "kernel-2026.11.1.tar.gz",
                "sliver-ref-2026.11.1.tar.gz"
            ]
        );
        outputs.push(out_dir);
    }
    for name in files(&outputs[0]) {
        let a = fs::read(outputs[0].join(&name)).unwrap();
        let b = fs::read(outputs[1].join(&name)).unwrap();
        assert!(a == b, "{name} differs between two builds");
        // gzip header: no name, no time stamp.
        assert_eq!(a[3] & 0x08, 0, "{name}: gzip header carries a file name");
        assert_eq!(
            &a[4..8],
            &[0, 0, 0, 0],
            "{name}: gzip header carries a time"
        );
    }
    // A different time stamp gives different bytes (the epoch is used).
    let c = dir.join("c");
    let out = mkimage(&[
        "build",
        s(&spec),
        "--out-dir",
        s(&c),
        "--binary",
        "init=/bin/busybox",
        "--only",
        "sliver-ref",
        "--source-date-epoch",
        "1795000001",
    ]);
    assert!(out.status.success());
    assert_ne!(
        fs::read(c.join("sliver-ref-2026.11.1.tar.gz")).unwrap(),
        fs::read(outputs[0].join("sliver-ref-2026.11.1.tar.gz")).unwrap()
    );

    // Into a repository: listed as pending with the right flags.
    let key = SecretKey::generate().unwrap();
    let spec_keys = RoleSpec {
        keys: vec![key.public().clone()],
        threshold: 1,
    };
    let roles: BTreeMap<_, _> = RoleType::ALL
        .into_iter()
        .map(|r| (r, spec_keys.clone()))
        .collect();
    let repo_dir = dir.join("repo");
    let expires = floor::Timestamp::now().plus(std::time::Duration::from_secs(86_400));
    Repository::init(&repo_dir, &roles, expires, &[key]).unwrap();
    let out = mkimage(&[
        "build",
        s(&spec),
        "--repo",
        s(&repo_dir),
        "--binary",
        "init=/bin/busybox",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let pending: serde_json::Value =
        serde_json::from_slice(&fs::read(repo_dir.join("pending.json")).unwrap()).unwrap();
    let add = &pending["add"];
    assert_eq!(add["base"]["base_image"], true);
    assert_eq!(add["sliver-ref"]["base_image"], true);
    assert_eq!(add["kernel"]["base_image"], false);
    assert_eq!(add["kernel"]["custom"]["trimmed"], true);
    assert_eq!(add["base"]["version"], "2026.11.1");
    let base_len = fs::metadata(outputs[0].join("base-2026.11.1.tar.gz"))
        .unwrap()
        .len();
    assert_eq!(
        add["base"]["length"], base_len,
        "the repository holds the same bytes"
    );
}

#[test]
fn packages_extract_safely_and_hold_what_a_node_needs() {
    require!();
    let dir = scratch("contents");
    let spec = dir.join("nodeos.toml");
    fs::write(&spec, SPEC).unwrap();
    fs::write(dir.join("supervisor.toml"), SUPERVISOR).unwrap();
    let out_dir = dir.join("out");
    let out = mkimage(&[
        "build",
        s(&spec),
        "--out-dir",
        s(&out_dir),
        "--binary",
        "init=/bin/busybox",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    let kernel = dir.join("kernel");
    let manifest = extract(&out_dir.join("kernel-2026.11.1.tar.gz"), &kernel, false);
    let release = fs::read_dir(kernel.join("lib/modules"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .file_name();
    let modules = kernel.join("lib/modules").join(&release);
    let dep = fs::read_to_string(modules.join("modules.dep")).unwrap();
    for module in [
        "ext4.ko",
        "crc32c_generic.ko",
        "virtio_net.ko",
        "sch_htb.ko",
        "dummy.ko",
        "jbd2.ko",
    ] {
        assert!(dep.contains(module), "{module} missing from modules.dep");
    }
    for line in dep.lines() {
        let (path, deps) = line.split_once(':').unwrap();
        for p in std::iter::once(path).chain(deps.split_whitespace()) {
            assert!(
                modules.join(p).is_file(),
                "modules.dep names {p}, which is not in the package"
            );
        }
    }
    assert!(fs::read_to_string(modules.join("modules.softdep"))
        .unwrap()
        .contains("softdep ext4 pre: crypto-crc32c"));
    assert!(kernel.join("vmlinuz").is_file());
    assert!(
        manifest.entries.len() < 400,
        "trimmed kernel has {} entries",
        manifest.entries.len()
    );

    let base = dir.join("base");
    extract(&out_dir.join("base-2026.11.1.tar.gz"), &base, true);
    for path in [
        "sbin/init",
        "bin/busybox",
        "usr/sbin/dropbear",
        "lib64/ld-linux-x86-64.so.2",
        "etc/passwd",
        "etc/plnode/supervisor.toml",
    ] {
        assert!(base.join(path).exists(), "base lacks {path}");
    }
    // ssh host keys live on the node's partition, kept across updates.
    assert_eq!(
        fs::read_link(base.join("etc/dropbear")).unwrap(),
        Path::new("/plnode/ssh")
    );
    assert_eq!(
        fs::read_link(base.join("bin/sh")).unwrap(),
        Path::new("../bin/busybox")
    );
    // Not a base image: device nodes and absolute links would be refused.
    let sliver = dir.join("sliver");
    extract(&out_dir.join("sliver-ref-2026.11.1.tar.gz"), &sliver, false);
    assert!(sliver.join("bin/sh").exists());

    if !mkimage::running_as_root() {
        eprintln!("SKIP (part): not root, so the base root's programs are not run in a chroot");
        return;
    }
    // The loader and libraries found via DT_NEEDED are enough to run dropbear.
    for (program, args) in [
        ("/usr/sbin/dropbear", vec!["-V"]),
        ("/bin/sh", vec!["-c", "echo chroot-ok"]),
    ] {
        let out = Command::new("chroot")
            .arg(&base)
            .arg(program)
            .args(&args)
            .output()
            .unwrap();
        let said = text(&out);
        assert!(
            said.contains("Dropbear") || said.contains("chroot-ok"),
            "{program} in the base root: {said}"
        );
    }
}

#[test]
fn bad_specs_and_inputs_are_refused_without_output() {
    require!();
    let dir = scratch("bad");
    let spec = dir.join("nodeos.toml");
    fs::write(&spec, SPEC).unwrap();
    fs::write(dir.join("supervisor.toml"), SUPERVISOR).unwrap();
    let bad_spec = dir.join("bad.toml");
    fs::write(&bad_spec, "version = \"1\"\n[kernel]\ntrimm = true\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["build", s(&bad_spec), "--out-dir"], "trimm"),
        (
            vec![
                "build",
                s(&spec),
                "--binary",
                "nodemgr=/bin/busybox",
                "--out-dir",
            ],
            "nodemgr",
        ),
        (
            vec![
                "build",
                s(&spec),
                "--binary",
                "init=/nonexistent/init",
                "--out-dir",
            ],
            "/nonexistent/init",
        ),
        (vec!["build", s(&spec), "--out-dir"], "--binary init=PATH"),
    ];
    for (args, expected) in cases {
        let out_dir = dir.join("out");
        let mut args = args.clone();
        args.push(s(&out_dir));
        let out = mkimage(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            text(&out).contains(expected),
            "{expected:?} not in {}",
            text(&out)
        );
        assert!(
            !out_dir.exists() || files(&out_dir).is_empty(),
            "left {:?}",
            files(&out_dir)
        );
    }
    // A module that does not exist: nothing is written, not even the other packages.
    let missing = dir.join("missing-module.toml");
    fs::write(&missing, SPEC.replace("\"dummy\"", "\"no_such_module\"")).unwrap();
    let out_dir = dir.join("out2");
    let out = mkimage(&[
        "build",
        s(&missing),
        "--out-dir",
        s(&out_dir),
        "--binary",
        "init=/bin/busybox",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no_such_module"), "{}", text(&out));
    assert!(files(&out_dir).is_empty(), "left {:?}", files(&out_dir));
}

/// Bad specs fail with one line, each cause once, and build nothing.
#[test]
fn bad_specs_fail_with_one_line_each_cause_once() {
    let dir = scratch("bad-specs");
    let malformed = dir.join("malformed.toml");
    fs::write(&malformed, "version = 3\n[kernel]\ntrim = \"yes\"\n").unwrap();
    let missing = dir.join("nospec.toml");
    for (spec, expected) in [(&missing, "No such file"), (&malformed, "malformed.toml")] {
        let out = mkimage(&["build", s(spec), "--out-dir", s(&dir.join("out"))]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(expected), "{stderr}");
        let parts: Vec<&str> = errors[0].split(": ").map(str::trim).collect();
        for (i, part) in parts.iter().enumerate() {
            assert!(
                !parts[i + 1..].contains(part),
                "{part:?} repeated in {}",
                errors[0]
            );
        }
        assert!(!dir.join("out").exists());
    }
}
