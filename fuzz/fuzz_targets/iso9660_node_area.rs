//! `bootcd`'s readers of an untrusted CD image: the ISO 9660 directory
//! walk that finds the per-node area and `plnode/cd.toml`, and the
//! per-node area's cpio check. Must never panic or allocate without bound.
//!
//! Seeds: `bootcd/tests/data` (per-node areas, good and hostile, and two
//! small ISO images carrying one).
#![no_main]

use std::io::Cursor;

use bootcd::iso9660::IsoImage;
use bootcd::layout::{ISO_CD_INFO, ISO_NODE_AREA, ISO_ROOT_JSON, NODE_AREA_SIZE};
use bootcd::nodecfg;
use libfuzzer_sys::fuzz_target;

fn walk(bytes: &[u8]) {
    if let Ok(mut image) = IsoImage::open(Cursor::new(bytes)) {
        for path in [ISO_NODE_AREA, ISO_CD_INFO, ISO_ROOT_JSON, "a/b/c/d"] {
            let _ = image.find(path);
            let _ = image.read_file(path, 1 << 20);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Volume descriptors start at sector 16: put the input there, so short
    // inputs reach the descriptor and directory parsing.
    let mut image = vec![0u8; 16 * 2048];
    image.extend_from_slice(data);
    walk(&image);
    walk(data);
    let mut area = data.to_vec();
    area.resize(NODE_AREA_SIZE, 0);
    if let Ok(files) = nodecfg::decode_area(&area) {
        for file in &files {
            assert!(file.path.starts_with("etc/plnode/node/"), "{}", file.path);
        }
        let _ = nodecfg::describe(&files);
    }
});
