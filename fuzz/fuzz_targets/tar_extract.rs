//! Safe extraction of arbitrary bytes as a package, gzip'd (recognised by
//! its magic number, as a package is) or a bare tar, as an ordinary package
//! and as a base image. Must never panic and never write outside the
//! destination; whatever it accepts must match the manifest it records.
//!
//! Seeds: `pkgsign/tests/data` (every tar escape, a decompression bomb, the
//! packages of the repository fixtures).
#![no_main]

use std::fs;
use std::io::Read;
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

fn extract(archive: &[u8], base_image: bool) {
    let Ok(tmp) = tempfile::tempdir() else { return };
    // tmp/outer/inner/root: escapes upward would show up as extra names.
    let dest = tmp.path().join("outer/inner/root");
    if fs::create_dir_all(&dest).is_err() {
        return;
    }
    let policy = ExtractPolicy {
        base_image,
        preserve_ownership: false,
        max_unpacked: 1 << 20,
    };
    let mut manifest = Manifest::default();
    let source: Box<dyn Read> = if archive.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(archive))
    } else {
        Box::new(archive)
    };
    let result = extract_tar(source, &dest, "", &policy, &mut manifest);
    for (dir, only) in [
        (tmp.path().to_path_buf(), "outer"),
        (tmp.path().join("outer"), "inner"),
        (tmp.path().join("outer/inner"), "root"),
    ] {
        assert_eq!(names(&dir), [only], "wrote outside the destination");
    }
    if result.is_ok() {
        if let Err(e) = verify_tree(&dest, &manifest, true) {
            panic!("extracted tree differs from its manifest: {e}");
        }
    }
    let _ = remove_tree(tmp.path());
}

fuzz_target!(|data: &[u8]| {
    extract(data, false);
    extract(data, true);
});
