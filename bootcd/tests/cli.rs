//! `bootcd` as staff and site admins use it: build a signed CD, verify it,
//! stamp node configs into copies, show what an image carries, and refuse
//! bad input without leaving files behind. Booting is tested in
//! `qemu-tests`; here `/init` is busybox-static (any static program does
//! for what these tests look at).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use bootcd::iso9660::IsoImage;
use pkgsign::metadata::RoleType;
use pkgsign::repo::{Repository, RoleSpec};
use pkgsign::SecretKey;
use sha2::{Digest, Sha256};

const EPOCH: &str = "1795000000";
const NODE_TOML: &str = "[node]\nid = 7\nkey = \"3f6c1a9e0b7d42e5a8c4f1e2d3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f70\"\nhostname = \"node7\"\ndomain = \"example.org\"\n\n[network]\nmethod = \"dhcp\"\n";

struct Fixture {
    dir: PathBuf,
    key: PathBuf,
    public: PathBuf,
    root_json: PathBuf,
    ca: PathBuf,
    ca_sha256: String,
}

/// Prerequisites; `Err` is a SKIP reason.
fn prerequisites() -> Result<(), String> {
    for (tool, package) in [
        ("xorriso", "xorriso"),
        ("grub-mkimage", "grub-common"),
        ("mformat", "mtools"),
    ] {
        if !["/usr/bin", "/usr/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists())
        {
            return Err(format!("{tool} missing (apt-get install {package})"));
        }
    }
    for (file, package) in [
        ("/usr/lib/ISOLINUX/isolinux.bin", "isolinux"),
        ("/usr/lib/grub/x86_64-efi/linux.mod", "grub-efi-amd64-bin"),
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

fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    let fixture = FIXTURE.get_or_init(|| {
        prerequisites()?;
        // One directory per test process: nextest runs each test in its own
        // process, in parallel, and they must not clear each other's files.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("bootcd-cli-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let secret = SecretKey::generate().unwrap();
        let key = dir.join("release.key");
        secret.save_new(&key).unwrap();
        let public = dir.join("release.pub");
        fs::write(&public, secret.public().to_pem().unwrap()).unwrap();
        let spec = RoleSpec {
            keys: vec![secret.public().clone()],
            threshold: 1,
        };
        let roles: BTreeMap<_, _> = RoleType::ALL
            .into_iter()
            .map(|r| (r, spec.clone()))
            .collect();
        let expires = floor::Timestamp::now().plus(std::time::Duration::from_secs(86_400 * 365));
        Repository::init(&dir.join("repo"), &roles, expires, &[secret]).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let ca = dir.join("ca.pem");
        fs::write(&ca, ca_cert.pem()).unwrap();
        let ca_sha256 = hex::encode(Sha256::digest(ca_cert.der()));
        Ok(Fixture {
            root_json: dir.join("repo/metadata/root.json"),
            dir,
            key,
            public,
            ca,
            ca_sha256,
        })
    });
    match fixture {
        Ok(f) => Some(f),
        Err(reason) => {
            eprintln!("SKIP: {reason}");
            None
        }
    }
}

fn bootcd(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_bootcd"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .unwrap();
    eprintln!(
        "$ bootcd {}\n{}{}",
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

fn build_args<'a>(f: &'a Fixture, output: &'a str) -> Vec<&'a str> {
    vec![
        "build",
        "-o",
        output,
        "--init",
        "/bin/busybox",
        "--root-json",
        s(&f.root_json),
        "--ca",
        s(&f.ca),
        "--server-url",
        "https://boot.example.org:8443",
        "--server-url",
        "https://10.0.2.2:8443",
        "--cd-version",
        "2026.11.1",
        "--key",
        s(&f.key),
    ]
}

/// One signed CD shared by the tests that only read it.
fn built_cd() -> Option<&'static PathBuf> {
    static ISO: OnceLock<Option<PathBuf>> = OnceLock::new();
    ISO.get_or_init(|| {
        let f = fixture()?;
        let iso = f.dir.join("shared/cd.iso");
        fs::create_dir_all(iso.parent().unwrap()).unwrap();
        let out = bootcd(&build_args(f, s(&iso)));
        assert!(out.status.success(), "build failed: {}", text(&out));
        Some(iso)
    })
    .as_ref()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn sig_of(iso: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sig", iso.display()))
}

#[test]
fn signed_cd_verifies_shows_and_customised_copies_keep_the_signature() {
    let Some(f) = fixture() else { return };
    let Some(iso) = built_cd() else { return };
    assert!(sig_of(iso).is_file());
    let size = fs::metadata(iso).unwrap().len();
    assert!(size < 40 << 20, "ISO is {size} bytes");

    let out = bootcd(&["verify", s(iso), "--key", s(&f.public)]);
    assert!(out.status.success());
    assert!(
        text(&out).contains("per-node area: blank"),
        "{}",
        text(&out)
    );

    let out = bootcd(&["show", s(iso)]);
    assert!(out.status.success());
    let shown = text(&out);
    for expected in [
        "cd version:   2026.11.1",
        "https://boot.example.org:8443",
        "https://10.0.2.2:8443",
        &format!("CA sha256:    {}", f.ca_sha256),
        "root:         version 1",
        "none (blank per-node area)",
        "a root key of this CD",
    ] {
        assert!(shown.contains(expected), "{expected:?} not in:\n{shown}");
    }

    // A node.toml and a plnode.txt, each into its own copy.
    let work = f.dir.join("customise");
    fs::create_dir_all(&work).unwrap();
    let node_toml = work.join("node.toml");
    fs::write(&node_toml, NODE_TOML).unwrap();
    let plnode = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/plnode.txt");
    for (config, node, file) in [
        (&node_toml, "node 7", "node.toml"),
        (&plnode, "node 3", "plnode.txt"),
    ] {
        let copy = work.join(format!("{file}.iso"));
        let out = bootcd(&[
            "customize",
            s(iso),
            "--node-config",
            s(config),
            "-o",
            s(&copy),
        ]);
        assert!(out.status.success());
        assert!(sig_of(&copy).is_file(), "the signature comes along");
        let out = bootcd(&["verify", s(&copy), "--key", s(&f.public)]);
        assert!(out.status.success());
        let said = text(&out);
        assert!(
            said.contains(&format!("etc/plnode/node/{file}")) && said.contains(node),
            "{said}"
        );
        let out = bootcd(&["show", s(&copy), "--json"]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let expected_id: u64 = node.trim_start_matches("node ").parse().unwrap();
        assert_eq!(json["node_area"]["Ok"]["node_id"], expected_id, "{json}");
        assert_eq!(json["signature"]["content_matches"], true);
        // The copy differs from the base only inside the per-node area.
        let area = IsoImage::open(fs::File::open(&copy).unwrap())
            .unwrap()
            .find("boot/nodecfg.img")
            .unwrap();
        let (a, b) = (fs::read(iso).unwrap(), fs::read(&copy).unwrap());
        assert_eq!(a.len(), b.len());
        let differing: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        assert!(!differing.is_empty());
        assert!(differing
            .iter()
            .all(|&i| (area.offset..area.offset + area.len).contains(&(i as u64))));
    }
}

#[test]
fn verify_rejects_modified_images_and_foreign_keys() {
    let Some(f) = fixture() else { return };
    let Some(iso) = built_cd() else { return };
    let work = f.dir.join("tamper");
    fs::create_dir_all(&work).unwrap();

    // One byte of the signed payload changed.
    let tampered = work.join("initrd-changed.iso");
    fs::copy(iso, &tampered).unwrap();
    fs::copy(sig_of(iso), sig_of(&tampered)).unwrap();
    let initrd = IsoImage::open(fs::File::open(&tampered).unwrap())
        .unwrap()
        .find("boot/initrd.img")
        .unwrap();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tampered)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, initrd.offset + 1000).unwrap();
    file.write_all_at(&[byte[0] ^ 0x20], initrd.offset + 1000)
        .unwrap();
    let out = bootcd(&["verify", s(&tampered), "--key", s(&f.public)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("sha256"), "{}", text(&out));

    // The per-node area carrying something other than a node config (a
    // second /init would replace the signed one at boot).
    let evil = work.join("area-init.iso");
    fs::copy(iso, &evil).unwrap();
    fs::copy(sig_of(iso), sig_of(&evil)).unwrap();
    let area = IsoImage::open(fs::File::open(&evil).unwrap())
        .unwrap()
        .find("boot/nodecfg.img")
        .unwrap();
    let mut cpio = Vec::new();
    let mut w = cpio::newc::Builder::new("init")
        .mode(0o100755)
        .write(&mut cpio, 10);
    std::io::Write::write_all(&mut w, b"#!/bin/sh\n").unwrap();
    w.finish().unwrap();
    cpio::newc::trailer(&mut cpio).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&evil)
        .unwrap()
        .write_all_at(&cpio, area.offset)
        .unwrap();
    let out = bootcd(&["verify", s(&evil), "--key", s(&f.public)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("\"init\""), "{}", text(&out));
    let out = bootcd(&["show", s(&evil)]);
    assert!(
        !out.status.success() && text(&out).contains("INVALID per-node area"),
        "{}",
        text(&out)
    );

    // A key the image was not signed with.
    let other = work.join("other.key");
    SecretKey::generate().unwrap().save_new(&other).unwrap();
    let out = bootcd(&["verify", s(iso), "--key", s(&other)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not trusted"), "{}", text(&out));
}

#[test]
fn two_builds_from_the_same_inputs_are_byte_identical() {
    let Some(f) = fixture() else { return };
    let Some(first) = built_cd() else { return };
    let again = f.dir.join("again/cd.iso");
    fs::create_dir_all(again.parent().unwrap()).unwrap();
    let out = bootcd(&build_args(f, s(&again)));
    assert!(out.status.success());
    let (a, b) = (fs::read(first).unwrap(), fs::read(&again).unwrap());
    assert_eq!(a.len(), b.len());
    if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
        panic!("the images first differ at byte {i} (sector {})", i / 2048);
    }
    assert_eq!(
        fs::read(sig_of(first)).unwrap(),
        fs::read(sig_of(&again)).unwrap()
    );
}

#[test]
fn bad_input_gives_a_clear_error_and_no_output() {
    let Some(f) = fixture() else { return };
    let release = fs::read_dir("/lib/modules")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            Path::new("/boot")
                .join(format!(
                    "vmlinuz-{}",
                    p.file_name().unwrap().to_string_lossy()
                ))
                .exists()
        })
        .unwrap();
    let garbage_key = f.dir.join("garbage.key");
    fs::write(&garbage_key, "not a key\n").unwrap();
    let bad_toml = f.dir.join("bad-node.toml");
    fs::write(&bad_toml, "[node]\nid = \"seven\"\n").unwrap();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "missing kernel",
            vec![
                "--kernel",
                "/nonexistent/vmlinuz",
                "--modules-dir",
                s(&release),
            ],
            "/nonexistent/vmlinuz",
        ),
        (
            "missing module",
            vec!["--module", "no_such_module"],
            "no_such_module",
        ),
        (
            "missing key",
            vec!["--key", "/nonexistent/release.key"],
            "/nonexistent/release.key",
        ),
        (
            "unreadable key",
            vec!["--key", s(&garbage_key)],
            "not a PKCS#8",
        ),
        (
            "bad node config",
            vec!["--node-config", s(&bad_toml)],
            "bad-node.toml",
        ),
        (
            "dynamic init",
            vec!["--init", "/usr/sbin/mke2fs"],
            "dynamically linked",
        ),
        (
            "bad root metadata",
            vec!["--root-json", s(&f.ca)],
            "root metadata",
        ),
        ("bad CA", vec!["--ca", s(&f.root_json)], "CA"),
    ];
    for (name, extra, expected) in cases {
        let dir = f.dir.join("bad").join(name.replace(' ', "-"));
        fs::create_dir_all(&dir).unwrap();
        let output = dir.join("cd.iso");
        let mut args = build_args(f, s(&output));
        // Later options of the same name win over the defaults above for
        // single-valued ones: drop the defaults that the case replaces.
        for flag in ["--key", "--init", "--root-json", "--ca"] {
            if extra.contains(&flag) {
                let at = args.iter().position(|a| *a == flag).unwrap();
                args.drain(at..at + 2);
            }
        }
        args.extend(extra.iter().copied());
        let out = bootcd(&args);
        assert!(!out.status.success(), "{name}: build succeeded");
        assert_one_line_error(&out);
        assert!(
            text(&out).contains(expected),
            "{name}: {expected:?} not in {}",
            text(&out)
        );
        assert!(
            files_in(&dir).is_empty(),
            "{name}: left {:?}",
            files_in(&dir)
        );
    }

    // customize: a config that does not parse, and one that does not fit.
    let Some(iso) = built_cd() else { return };
    let dir = f.dir.join("bad/customize");
    fs::create_dir_all(&dir).unwrap();
    let huge = f.dir.join("huge-node.toml");
    fs::write(&huge, format!("{NODE_TOML}# {}\n", "x".repeat(70_000))).unwrap();
    for (config, expected) in [(&bad_toml, "bad-node.toml"), (&huge, "at most")] {
        let output = dir.join("node.iso");
        let out = bootcd(&[
            "customize",
            s(iso),
            "--node-config",
            s(config),
            "-o",
            s(&output),
        ]);
        assert!(!out.status.success());
        assert_one_line_error(&out);
        assert!(
            text(&out).contains(expected),
            "{expected:?} not in {}",
            text(&out)
        );
        assert!(files_in(&dir).is_empty(), "left {:?}", files_in(&dir));
    }
}

/// A failing command prints its error on one line, each cause once.
fn assert_one_line_error(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let parts: Vec<&str> = errors[0].split(": ").map(str::trim).collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(part),
            "{part:?} repeated in {}",
            errors[0]
        );
    }
}

/// Unpacks a newc cpio (regular files, directories, symlinks) into `dest`.
fn unpack_cpio(mut data: &[u8], dest: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut names = Vec::new();
    loop {
        let mut reader = cpio::NewcReader::new(data).unwrap();
        let entry = reader.entry().clone();
        if entry.is_trailer() {
            break;
        }
        let path = dest.join(entry.name());
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut content).unwrap();
        match entry.mode() & 0o170000 {
            0o040000 => fs::create_dir_all(&path).unwrap(),
            0o100000 => {
                fs::write(&path, &content).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode() & 0o7777))
                    .unwrap();
            }
            0o120000 => {
                std::os::unix::fs::symlink(String::from_utf8(content).unwrap(), &path).unwrap()
            }
            _ => {}
        }
        names.push(entry.name().to_string());
        data = reader.finish().unwrap();
    }
    names
}

#[test]
fn initramfs_holds_init_trust_roots_modules_and_working_tools() {
    let Some(f) = fixture() else { return };
    let Some(iso) = built_cd() else { return };
    let mut image = IsoImage::open(fs::File::open(iso).unwrap()).unwrap();
    let initrd = image.read_file("boot/initrd.img", 100 << 20).unwrap();
    assert_eq!(
        initrd.len() % 4,
        0,
        "padded so the per-node archive starts aligned"
    );
    let mut cpio = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&initrd[..]), &mut cpio).unwrap();
    let root = f.dir.join("initramfs");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).unwrap();
    let names = unpack_cpio(&cpio, &root);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries in path order");
    for path in [
        "init",
        "etc/plnode/cd.toml",
        "etc/plnode/ca.pem",
        "etc/plnode/root.json",
        "etc/plnode/node",
        "dev/console",
    ] {
        assert!(names.iter().any(|n| n == path), "{path} missing");
    }
    assert!(
        fs::symlink_metadata(root.join("etc/dropbear"))
            .unwrap()
            .is_dir(),
        "host keys need a writable directory"
    );
    assert_eq!(
        fs::read(root.join("etc/plnode/root.json")).unwrap(),
        fs::read(&f.root_json).unwrap()
    );
    let cd = config::cd::CdInfo::load(&root.join("etc/plnode/cd.toml")).unwrap();
    assert_eq!((cd.cd_version.as_str(), cd.root_version), ("2026.11.1", 1));
    assert_eq!(cd.ca_sha256, f.ca_sha256);
    assert_eq!(cd.build_time.unix(), EPOCH.parse::<i64>().unwrap());
    let modules = root.join("lib/modules").join(&cd.kernel_version);
    let dep = fs::read_to_string(modules.join("modules.dep")).unwrap();
    for module in [
        "virtio_net.ko",
        "virtio_blk.ko",
        "virtio_scsi.ko",
        "virtio_pci.ko",
        "e1000e.ko",
        "igb.ko",
        "ixgbe.ko",
        "r8169.ko",
        "ahci.ko",
        "nvme.ko",
        "sd_mod.ko",
        "sr_mod.ko",
        "ext4.ko",
        "crc32c_generic.ko",
        "isofs.ko",
        "vfat.ko",
        "overlay.ko",
        "sch_htb.ko",
        "cls_fw.ko",
        "cls_u32.ko",
    ] {
        assert!(
            dep.lines().any(|l| l
                .split(':')
                .next()
                .unwrap()
                .ends_with(&format!("/{module}"))),
            "{module}"
        );
    }
    assert!(fs::read_to_string(modules.join("modules.alias"))
        .unwrap()
        .contains(" virtio_net\n"));

    if !mkimage::running_as_root() {
        eprintln!("SKIP (part): not root, so the initramfs tools are not run in a chroot");
        return;
    }
    for (program, args, expected) in [
        ("/sbin/mke2fs", vec!["-V"], "mke2fs"),
        ("/usr/sbin/dropbear", vec!["-V"], "Dropbear"),
        ("/bin/sh", vec!["-c", "echo shell-ok"], "shell-ok"),
    ] {
        let out = Command::new("chroot")
            .arg(&root)
            .arg(program)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            text(&out).contains(expected),
            "{program} in the initramfs: {}",
            text(&out)
        );
    }
}
