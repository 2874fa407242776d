//! Per-node areas as a CD may carry them (checked in under
//! `tests/data/node-areas/` by `cargo run -p bootcd --example
//! make-node-area-fixtures`, with two small ISO images in `tests/data/iso/`;
//! seeds of the `iso9660_node_area` fuzz target).
//! The area is not signed, so anyone with the CD can rewrite it: only
//! regular files directly in `etc/plnode/node/` are accepted, and anything
//! else is refused for its reason. Every file on disk is listed here, and
//! every one listed is on disk.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use bootcd::iso9660::IsoImage;
use bootcd::layout::{ISO_NODE_AREA, NODE_AREA_SIZE};
use bootcd::nodecfg::{decode_area, describe, AreaError, AreaFile};

enum Expect {
    /// These files, and `describe` names this node.
    Files(&'static [&'static str], Option<&'static str>),
    /// `AreaError::Forbidden` for this path.
    Forbidden(&'static str),
    /// `AreaError::Malformed`, the reason containing this.
    Malformed(&'static str),
}

use Expect::*;

const FIXTURES: &[(&str, Expect)] = &[
    (
        "good-node-toml.img",
        Files(
            &["etc/plnode/node/node.toml"],
            Some("node 7 (node7.cs.example.edu)"),
        ),
    ),
    (
        "good-plnode-txt.img",
        Files(
            &["etc/plnode/node/plnode.txt"],
            Some("node 3 (planetlab-3.cs.example.edu)"),
        ),
    ),
    ("blank.img", Files(&[], None)),
    ("forbidden-replaces-init.img", Forbidden("init")),
    (
        "forbidden-dotdot.img",
        Forbidden("etc/plnode/node/../../../init"),
    ),
    ("forbidden-trust-root.img", Forbidden("etc/plnode/ca.pem")),
    (
        "forbidden-subdirectory.img",
        Forbidden("etc/plnode/node/sub/node.toml"),
    ),
    (
        "forbidden-symlink.img",
        Forbidden("etc/plnode/node/node.toml"),
    ),
    ("forbidden-directory.img", Forbidden("etc/plnode/node/x")),
    (
        "forbidden-hard-link.img",
        Forbidden("etc/plnode/node/node.toml"),
    ),
    (
        "malformed-data-after-trailer.img",
        Malformed("data after the archive trailer"),
    ),
    ("malformed-not-cpio.img", Malformed("Invalid magic number")),
    (
        "malformed-file-larger-than-area.img",
        Malformed("exceeds the area"),
    ),
    (
        "malformed-too-many-files.img",
        Malformed("more than 16 files"),
    ),
];

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/node-areas")
}

/// A fixture as the CD holds it: padded with zeros to the area's size.
fn area(name: &str) -> Vec<u8> {
    let mut bytes = fs::read(data().join(name)).unwrap();
    assert!(bytes.len() <= NODE_AREA_SIZE, "{name}");
    bytes.resize(NODE_AREA_SIZE, 0);
    bytes
}

#[test]
fn every_area_is_read_or_refused_for_its_reason() {
    for (name, expect) in FIXTURES {
        match (expect, decode_area(&area(name))) {
            (Files(paths, node), Ok(files)) => {
                let found: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
                assert_eq!(found, *paths, "{name}");
                if let Some(node) = node {
                    let said = describe(&files);
                    assert!(said[0].contains(node), "{name}: {said:?}");
                }
            }
            (Forbidden(path), Err(AreaError::Forbidden(found))) => {
                assert_eq!(found, *path, "{name}")
            }
            (Malformed(why), Err(AreaError::Malformed(reason))) => {
                assert!(reason.contains(why), "{name}: {reason}")
            }
            (_, Ok(files)) => panic!("{name}: accepted {files:?}"),
            (_, Err(e)) => panic!("{name}: refused for another reason: {e}"),
        }
    }
}

#[test]
fn the_fixtures_on_disk_are_the_ones_listed() {
    let listed: BTreeSet<String> = FIXTURES.iter().map(|(n, _)| n.to_string()).collect();
    let on_disk: BTreeSet<String> = fs::read_dir(data())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(on_disk, listed);
}

fn iso_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/iso")
}

/// The per-node area as `bootcd show` and `verify` find it in an image.
fn area_of(iso: &str) -> Result<Vec<AreaFile>, AreaError> {
    let file = fs::File::open(iso_data().join(iso)).unwrap();
    let mut image = IsoImage::open(file).unwrap();
    let area = image
        .read_file(ISO_NODE_AREA, NODE_AREA_SIZE as u64 + 1)
        .unwrap();
    decode_area(&area)
}

#[test]
fn an_area_is_found_where_a_boot_cd_has_it() {
    let files = area_of("customised-node-7.iso").unwrap();
    assert!(describe(&files)[0].contains("node 7 (node7.cs.example.edu)"));
    assert!(matches!(
        area_of("node-area-wrong-size.iso"),
        Err(AreaError::WrongSize(4096))
    ));
    let on_disk: BTreeSet<String> = fs::read_dir(iso_data())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        on_disk,
        BTreeSet::from([
            "customised-node-7.iso".into(),
            "node-area-wrong-size.iso".into()
        ])
    );
}
