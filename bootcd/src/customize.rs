//! `bootcd customize`: a per-node copy of a CD. The copy differs from the
//! base only inside the per-node area, which the signature reads as zeros,
//! so the base's `.sig` is copied along and still verifies. No rebuild, no
//! new key; a copy of a 40 MB image takes a fraction of a second (the copy
//! uses `copy_file_range`, a reflink where the file system has them).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use config::cd::CdInfo;

use crate::iso9660::IsoImage;
use crate::layout::{ISO_CD_INFO, NODE_AREA_SIZE};
use crate::nodecfg::{AreaError, NodeConfigFile};
use crate::signature::{self, SignatureError};

#[derive(Debug, thiserror::Error)]
pub enum CustomizeError {
    #[error(transparent)]
    NodeConfig(#[from] AreaError),
    #[error(transparent)]
    Image(#[from] SignatureError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the output {} is the base image itself; write the copy elsewhere", path.display())]
    SameFile { path: PathBuf },
    #[error("{}: {reason}", path.display())]
    CdInfo { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CustomizeError + '_ {
    move |source| CustomizeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `area` (exactly the area's size) into the per-node area of the
/// ISO at `iso`, in place.
pub fn write_area(iso: &Path, area: &[u8]) -> Result<(), SignatureError> {
    let extent = signature::node_area(iso)?;
    let io = |source| SignatureError::Io {
        path: iso.to_path_buf(),
        source,
    };
    if area.len() != NODE_AREA_SIZE {
        return Err(SignatureError::BadArea {
            path: iso.to_path_buf(),
            offset: extent.offset,
            len: area.len() as u64,
        });
    }
    let file = OpenOptions::new().write(true).open(iso).map_err(io)?;
    file.write_all_at(area, extent.offset).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Reads the CD's own description from `/plnode/cd.toml` on the image.
pub fn read_cd_info(iso: &Path) -> Result<CdInfo, CustomizeError> {
    let file = fs::File::open(iso).map_err(io_err(iso))?;
    let mut image = IsoImage::open(file).map_err(|source| {
        CustomizeError::Image(SignatureError::Iso {
            path: iso.to_path_buf(),
            source,
        })
    })?;
    let bytes = image.read_file(ISO_CD_INFO, 64 * 1024).map_err(|source| {
        CustomizeError::Image(SignatureError::Iso {
            path: iso.to_path_buf(),
            source,
        })
    })?;
    let text = String::from_utf8(bytes).map_err(|_| CustomizeError::CdInfo {
        path: iso.to_path_buf(),
        reason: format!("{ISO_CD_INFO} is not UTF-8"),
    })?;
    CdInfo::from_toml(&text, &iso.join(ISO_CD_INFO)).map_err(|e| CustomizeError::CdInfo {
        path: iso.to_path_buf(),
        reason: e.to_string(),
    })
}

/// What `customize` did.
#[derive(Debug, Clone)]
pub struct CustomizeReport {
    pub output: PathBuf,
    pub signature: Option<PathBuf>,
    pub node_config: NodeConfigFile,
    pub cd_info: CdInfo,
}

/// Copies `base` to `output` with `node_config` in the per-node area (and
/// `base.sig` to `output.sig` when there is one). Nothing is written when
/// the config does not parse or does not fit; the output appears whole or
/// not at all.
pub fn customize(
    base: &Path,
    node_config: &Path,
    output: &Path,
) -> Result<CustomizeReport, CustomizeError> {
    let config = NodeConfigFile::load(node_config)?;
    let cd_info = read_cd_info(base)?;
    let area = config.encode(u32::try_from(cd_info.build_time.unix()).unwrap_or(0))?;
    signature::node_area(base)?;
    if let (Ok(a), Ok(b)) = (fs::canonicalize(base), fs::canonicalize(output)) {
        if a == b {
            return Err(CustomizeError::SameFile {
                path: output.to_path_buf(),
            });
        }
    }
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".bootcd-customize-")
        .tempfile_in(&parent)
        .map_err(io_err(&parent))?;
    fs::copy(base, temp.path()).map_err(io_err(base))?;
    write_area(temp.path(), &area)?;

    let base_sig = signature::signature_path(base);
    let out_sig = signature::signature_path(output);
    let sig_temp = if base_sig.is_file() {
        let t = tempfile::Builder::new()
            .prefix(".bootcd-customize-")
            .tempfile_in(&parent)
            .map_err(io_err(&parent))?;
        fs::copy(&base_sig, t.path()).map_err(io_err(&base_sig))?;
        Some(t)
    } else {
        None
    };
    temp.persist(output).map_err(|e| CustomizeError::Io {
        path: output.to_path_buf(),
        source: e.error,
    })?;
    let signature = match sig_temp {
        Some(t) => {
            t.persist(&out_sig).map_err(|e| CustomizeError::Io {
                path: out_sig.clone(),
                source: e.error,
            })?;
            Some(out_sig)
        }
        None => {
            // A signature beside the output from an earlier copy no longer applies.
            match fs::remove_file(&out_sig) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(&out_sig)(e))
                }
                _ => {}
            }
            None
        }
    };
    Ok(CustomizeReport {
        output: output.to_path_buf(),
        signature,
        node_config: config,
        cd_info,
    })
}
