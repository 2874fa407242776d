//! Adding a package file to the repository's `targets/`.

use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::RepoError;
use crate::metadata::{valid_name, Hashes, Sha256Digest, TargetInfo};

/// Copies `file` into `targets_dir` under its content address and describes it.
pub fn store_package(
    targets_dir: &Path,
    file: &Path,
    name: &str,
    version: &str,
    base_image: bool,
    custom: Map<String, Value>,
) -> Result<TargetInfo, RepoError> {
    if !valid_name(name) {
        return Err(RepoError::BadName(name.to_string()));
    }
    if !valid_name(version) {
        return Err(RepoError::BadName(version.to_string()));
    }
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RepoError::Io { path, source }
    };
    fs::create_dir_all(targets_dir).map_err(io_err(targets_dir))?;
    let tmp = floor::durable::temp_path_in(targets_dir, ".tar.gz");
    let result = (|| {
        let (length, sha256) = copy_and_hash(file, &tmp)?;
        let unpacked_length = unpacked_length(&tmp).map_err(|reason| RepoError::BadPackage {
            path: file.into(),
            reason,
        })?;
        let file_name = format!("{sha256}.{name}-{version}.tar.gz");
        let final_path = targets_dir.join(&file_name);
        fs::rename(&tmp, &final_path).map_err(io_err(&final_path))?;
        floor::durable::sync_dir(targets_dir).map_err(|e| io_err(targets_dir)(e.into()))?;
        Ok(TargetInfo {
            version: version.to_string(),
            length,
            hashes: Hashes { sha256 },
            path: format!("targets/{file_name}"),
            unpacked_length: Some(unpacked_length),
            base_image,
            custom,
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn copy_and_hash(from: &Path, to: &Path) -> Result<(u64, Sha256Digest), RepoError> {
    let mut src = fs::File::open(from).map_err(|source| RepoError::Io {
        path: from.into(),
        source,
    })?;
    let to_err = |source| RepoError::Io {
        path: to.into(),
        source,
    };
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(to)
        .map_err(to_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut length = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(|source| RepoError::Io {
            path: from.into(),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(to_err)?;
        length += n as u64;
    }
    dst.sync_all().map_err(to_err)?;
    Ok((length, Sha256Digest(hasher.finalize().into())))
}

/// Total bytes of regular-file content in a `.tar.gz`; fails if it is not one.
pub fn unpacked_length(path: &Path) -> Result<u64, String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    let gunzip = flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file));
    let mut archive = tar::Archive::new(gunzip);
    let mut total = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar.gz: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("not a tar.gz: {e}"))?;
        if matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            total = total.saturating_add(entry.size());
        }
    }
    // Make sure the whole stream decompresses (a truncated file fails here).
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| format!("not a tar.gz: {e}"))?;
    Ok(total)
}
