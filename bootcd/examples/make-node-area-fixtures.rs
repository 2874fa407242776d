//! Regenerates `bootcd/tests/data/node-areas/`: per-node areas of a boot
//! CD (`/boot/nodecfg.img`) as a customised CD carries them, and as someone
//! with the CD in hand could rewrite them (the area is not signed).
//!
//! ```text
//! cargo run -p bootcd --example make-node-area-fixtures [OUT_DIR]
//! ```
//!
//! Files are stored without the area's trailing zeros; a reader pads them
//! back to the area's 64 KiB. Beside them, in `../iso/`, two small ISO
//! images (made with xorriso, as `bootcd build` does) carrying an area
//! where a boot CD has it. `tests/node_areas.rs` says what each must do.

use std::error::Error;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bootcd::layout::NODE_AREA_SIZE;
use bootcd::nodecfg::{encode_area, NodeConfigFile};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFDIR: u32 = 0o040000;

const NODE_TOML: &str = "[node]\nid = 7\nkey = \"3f6c1a9e0b7d42e5a8c4f1e2d3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f70\"\nhostname = \"node7\"\ndomain = \"cs.example.edu\"\n\n[network]\nmethod = \"dhcp\"\n";

/// One newc entry.
struct Entry<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    data: &'a [u8],
}

/// A newc archive of `entries` and its trailer, as the area holds it.
fn archive(entries: &[Entry<'_>]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (ino, entry) in entries.iter().enumerate() {
        let mut writer = cpio::newc::Builder::new(entry.name)
            .ino(ino as u32 + 1)
            .mode(entry.mode)
            .nlink(entry.nlink)
            .mtime(1_700_000_000)
            .write(&mut out, entry.data.len() as u32);
        writer.write_all(entry.data)?;
        writer.finish()?;
    }
    cpio::newc::trailer(&mut out)?;
    Ok(out)
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry {
        name,
        mode: S_IFREG | 0o600,
        nlink: 1,
        data,
    }
}

/// Drops the trailing zeros (a reader pads the area back).
fn trimmed(mut area: Vec<u8>) -> Vec<u8> {
    while area.last() == Some(&0) {
        area.pop();
    }
    area
}

fn main() -> Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/node-areas"));
    fs::create_dir_all(&out)?;
    let write = |name: &str, bytes: Vec<u8>| fs::write(out.join(name), trimmed(bytes));

    // What `bootcd customize` writes, and a blank (never customised) area.
    let toml = NodeConfigFile::parse(NODE_TOML, Path::new("node.toml"))?;
    write("good-node-toml.img", toml.encode(1_700_000_000)?)?;
    let plnode = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/plnode.txt"),
    )?;
    let plnode = NodeConfigFile::parse(&plnode, Path::new("plnode.txt"))?;
    write("good-plnode-txt.img", plnode.encode(1_700_000_000)?)?;
    write("blank.img", vec![0; NODE_AREA_SIZE])?;

    // Files the kernel would unpack over the signed initramfs.
    let script = b"#!/bin/sh\nexec /bin/sh\n";
    write(
        "forbidden-replaces-init.img",
        archive(&[file("init", script)])?,
    )?;
    write(
        "forbidden-dotdot.img",
        archive(&[file("etc/plnode/node/../../../init", script)])?,
    )?;
    write(
        "forbidden-trust-root.img",
        archive(&[file("etc/plnode/ca.pem", b"-----BEGIN CERTIFICATE-----\n")])?,
    )?;
    write(
        "forbidden-subdirectory.img",
        archive(&[file("etc/plnode/node/sub/node.toml", NODE_TOML.as_bytes())])?,
    )?;
    write(
        "forbidden-symlink.img",
        archive(&[Entry {
            name: "etc/plnode/node/node.toml",
            mode: S_IFLNK | 0o777,
            nlink: 1,
            data: b"../../../etc/shadow",
        }])?,
    )?;
    write(
        "forbidden-directory.img",
        archive(&[Entry {
            name: "etc/plnode/node/x",
            mode: S_IFDIR | 0o755,
            nlink: 2,
            data: b"",
        }])?,
    )?;
    write(
        "forbidden-hard-link.img",
        archive(&[Entry {
            nlink: 2,
            ..file("etc/plnode/node/node.toml", NODE_TOML.as_bytes())
        }])?,
    )?;

    // Broken archives.
    let mut after = encode_area("node.toml", NODE_TOML.as_bytes(), 1_700_000_000)?;
    after[NODE_AREA_SIZE - 1] = b'!';
    write("malformed-data-after-trailer.img", after)?;
    write(
        "malformed-not-cpio.img",
        b"MZ\x90\0this is not a cpio archive".to_vec(),
    )?;
    let mut huge = archive(&[file("etc/plnode/node/node.toml", b"x")])?;
    // The header's size field (8 hex digits at byte 54): 16 MiB.
    huge[54..62].copy_from_slice(b"01000000");
    write("malformed-file-larger-than-area.img", huge)?;
    let names: Vec<String> = (0..17).map(|i| format!("etc/plnode/node/f{i}")).collect();
    let many: Vec<Entry<'_>> = names.iter().map(|n| file(n, b"x")).collect();
    write("malformed-too-many-files.img", archive(&many)?)?;
    let isos = out.join("../iso");
    fs::create_dir_all(&isos)?;
    let mut area = toml.encode(1_700_000_000)?;
    make_iso(&area, &isos.join("customised-node-7.iso"))?;
    area.truncate(4096);
    make_iso(&area, &isos.join("node-area-wrong-size.iso"))?;
    println!("fixtures written to {}", out.display());
    Ok(())
}

/// A small ISO 9660 image holding `boot/nodecfg.img` (`area`) and
/// `plnode/cd.toml`, reproducible (`SOURCE_DATE_EPOCH`).
fn make_iso(area: &[u8], iso: &Path) -> Result<()> {
    let tree = tempfile::tempdir()?;
    fs::create_dir_all(tree.path().join("boot"))?;
    fs::create_dir_all(tree.path().join("plnode"))?;
    fs::write(tree.path().join("boot/nodecfg.img"), area)?;
    fs::write(
        tree.path().join("plnode/cd.toml"),
        "cd_version = \"2026.11.1\"\n",
    )?;
    let status = std::process::Command::new("xorriso")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-iso-level",
            "3",
            "-r",
            "-V",
            "PLNODE",
            "-o",
        ])
        .arg(iso)
        .arg(tree.path())
        .status()?;
    if !status.success() {
        return Err(format!("xorriso failed: {status}").into());
    }
    Ok(())
}
