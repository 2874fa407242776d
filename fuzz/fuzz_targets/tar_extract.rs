//! Safe extraction of arbitrary bytes as a package. Must never panic and
//! never write outside the destination; whatever it accepts must match the
//! manifest it records.
#![no_main]

use std::fs;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pkgsign::install::{extract_tar, remove_tree, verify_tree, ExtractPolicy, Manifest};

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, archive)) = data.split_first() else {
        return;
    };
    let Ok(tmp) = tempfile::tempdir() else { return };
    // tmp/outer/inner/root: escapes upward would show up as extra names.
    let dest = tmp.path().join("outer/inner/root");
    if fs::create_dir_all(&dest).is_err() {
        return;
    }
    let policy = ExtractPolicy {
        base_image: flags & 1 != 0,
        preserve_ownership: false,
        max_unpacked: 1 << 20,
    };
    let mut manifest = Manifest::default();
    let result = if flags & 2 != 0 {
        let gunzip = flate2::bufread::MultiGzDecoder::new(archive);
        extract_tar(gunzip, &dest, "", &policy, &mut manifest)
    } else {
        extract_tar(archive, &dest, "", &policy, &mut manifest)
    };
    assert_eq!(
        names(tmp.path()),
        ["outer"],
        "wrote outside the destination"
    );
    assert_eq!(
        names(&tmp.path().join("outer")),
        ["inner"],
        "wrote outside the destination"
    );
    assert_eq!(
        names(&tmp.path().join("outer/inner")),
        ["root"],
        "wrote outside the destination"
    );
    if result.is_ok() {
        if let Err(e) = verify_tree(&dest, &manifest, true) {
            panic!("extracted tree differs from its manifest: {e}");
        }
    }
    let _ = remove_tree(tmp.path());
});
