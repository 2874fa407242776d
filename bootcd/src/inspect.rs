//! `bootcd show` and `bootcd verify`: what an image carries, and whether
//! it is what was signed.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use config::cd::CdInfo;
use pkgsign::detached::DetachedSignature;
use pkgsign::metadata::{RoleType, Root};
use pkgsign::PublicKey;
use serde::Serialize;

use crate::customize::{read_cd_info, CustomizeError};
use crate::iso9660::IsoImage;
use crate::layout::{ISO_ROOT_JSON, NODE_AREA_SIZE};
use crate::nodecfg::{self, AreaError, AreaFile};
use crate::signature::{self, MaskedReader, SignatureError};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Image(#[from] CustomizeError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("{}: per-node area: {source}", path.display())]
    Area {
        path: PathBuf,
        #[source]
        source: Box<AreaError>,
    },
    #[error("no signature file {} (a signed CD has IMAGE.iso.sig beside it)", path.display())]
    NoSignature { path: PathBuf },
}

/// The per-node area as found.
#[derive(Debug, Clone, Serialize)]
pub struct NodeArea {
    /// `etc/plnode/node/…` files (empty: a blank, uncustomised image).
    pub files: Vec<String>,
    /// Node id from the config in the area, if it parses.
    pub node_id: Option<u64>,
    pub hostname: Option<String>,
    /// One line per file, for people.
    pub description: Vec<String>,
}

/// What the root metadata on the CD says.
#[derive(Debug, Clone, Serialize)]
pub struct RootSummary {
    pub version: u64,
    pub expires: String,
    pub root_keys: Vec<String>,
    pub threshold: u32,
}

/// Whether the `.sig` beside the image matches it (without a trusted key).
#[derive(Debug, Clone, Serialize)]
pub struct SignatureStatus {
    pub path: PathBuf,
    pub keyid: String,
    /// Content hash and length match the image with a zeroed per-node area.
    pub content_matches: bool,
    /// The signature verifies with a root key of the CD's own root.json.
    pub by_cd_root_key: bool,
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CdReport {
    pub image: PathBuf,
    pub size: u64,
    pub cd: CdInfo,
    pub root: Option<RootSummary>,
    pub node_area: Result<NodeArea, String>,
    pub signature: Option<SignatureStatus>,
}

fn read_area(path: &Path) -> Result<Vec<AreaFile>, InspectError> {
    let extent = signature::node_area(path)?;
    let file = File::open(path).map_err(|source| SignatureError::Io {
        path: path.into(),
        source,
    })?;
    let mut area = vec![0u8; NODE_AREA_SIZE];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut area, extent.offset).map_err(
        |source| SignatureError::Io {
            path: path.into(),
            source,
        },
    )?;
    nodecfg::decode_area(&area).map_err(|source| InspectError::Area {
        path: path.into(),
        source: Box::new(source),
    })
}

fn summarize_area(files: &[AreaFile]) -> NodeArea {
    let parsed = files.iter().find_map(|f| {
        let text = String::from_utf8_lossy(&f.data);
        config::parse_any_node_config(&text, Path::new(&f.path))
            .ok()
            .map(|(c, _)| c)
    });
    NodeArea {
        files: files.iter().map(|f| f.path.clone()).collect(),
        node_id: parsed.as_ref().map(|c| c.node_id.0),
        hostname: parsed.as_ref().map(|c| c.fqdn()),
        description: nodecfg::describe(files),
    }
}

fn read_root(path: &Path) -> Option<Root> {
    let file = File::open(path).ok()?;
    let mut image = IsoImage::open(file).ok()?;
    let bytes = image.read_file(ISO_ROOT_JSON, 512 * 1024).ok()?;
    pkgsign::metadata::parse_unverified::<Root>(&bytes)
        .ok()
        .map(|(_, root)| root)
}

fn root_keys(root: &Root) -> Vec<PublicKey> {
    root.keyring(RoleType::Root)
        .map(|k| k.keys.into_values().collect())
        .unwrap_or_default()
}

fn signature_status(path: &Path, sig_path: &Path, root: Option<&Root>) -> SignatureStatus {
    let mut status = SignatureStatus {
        path: sig_path.to_path_buf(),
        keyid: String::new(),
        content_matches: false,
        by_cd_root_key: false,
        problem: None,
    };
    let sig = match signature::load_signature(sig_path) {
        Ok(sig) => sig,
        Err(e) => {
            status.problem = Some(e.to_string());
            return status;
        }
    };
    status.keyid = sig.keyid.to_string();
    match content_matches(path, &sig) {
        Ok(matches) => status.content_matches = matches,
        Err(e) => status.problem = Some(e.to_string()),
    }
    if let Some(root) = root {
        status.by_cd_root_key = sig.check_signature(&root_keys(root)).is_ok();
    }
    status
}

fn content_matches(path: &Path, sig: &DetachedSignature) -> Result<bool, SignatureError> {
    let area = signature::node_area(path)?;
    let file = File::open(path).map_err(|source| SignatureError::Io {
        path: path.into(),
        source,
    })?;
    let reader = MaskedReader::new(BufReader::with_capacity(1 << 20, file), area);
    let (length, sha256) =
        pkgsign::detached::hash_reader(reader).map_err(|source| SignatureError::Io {
            path: path.into(),
            source,
        })?;
    Ok(length == sig.length && sha256 == sig.sha256)
}

/// Everything `bootcd show` prints.
pub fn inspect(path: &Path) -> Result<CdReport, InspectError> {
    let cd = read_cd_info(path)?;
    let size = std::fs::metadata(path)
        .map_err(|source| SignatureError::Io {
            path: path.into(),
            source,
        })?
        .len();
    let root = read_root(path);
    let node_area = read_area(path)
        .map(|files| summarize_area(&files))
        .map_err(|e| e.to_string());
    let sig_path = signature::signature_path(path);
    let signature = sig_path
        .is_file()
        .then(|| signature_status(path, &sig_path, root.as_ref()));
    let root = root.map(|r| RootSummary {
        version: r.version,
        expires: r.expires.to_string(),
        threshold: r
            .roles
            .get(&RoleType::Root)
            .map(|k| k.threshold)
            .unwrap_or(0),
        root_keys: root_keys(&r).iter().map(|k| k.id().to_string()).collect(),
    });
    Ok(CdReport {
        image: path.to_path_buf(),
        size,
        cd,
        root,
        node_area,
        signature,
    })
}

/// What `bootcd verify` established.
#[derive(Debug, Clone)]
pub struct Verified {
    pub keyid: String,
    pub node_area: NodeArea,
}

/// Checks the signature (`sig`, default `IMAGE.iso.sig`) with `trusted`
/// keys, and that the per-node area holds only `etc/plnode/node/*` files.
pub fn verify(
    path: &Path,
    sig: Option<&Path>,
    trusted: &[PublicKey],
) -> Result<Verified, InspectError> {
    let sig_path = sig
        .map(Path::to_path_buf)
        .unwrap_or_else(|| signature::signature_path(path));
    if !sig_path.is_file() {
        return Err(InspectError::NoSignature { path: sig_path });
    }
    let signature = signature::load_signature(&sig_path)?;
    signature::verify_iso(path, &signature, trusted)?;
    let files = read_area(path)?;
    Ok(Verified {
        keyid: signature.keyid.to_string(),
        node_area: summarize_area(&files),
    })
}
