//! The per-node area (`/boot/nodecfg.img`): 64 KiB that both boot loaders
//! load as a second initrd. Blank (all zeros) in the signed image; a
//! customised copy holds an uncompressed newc cpio with exactly one file,
//! `etc/plnode/node/node.toml` or `etc/plnode/node/plnode.txt`, followed
//! by zeros (the kernel skips zero padding between initrd archives).

use std::path::Path;

use config::NodeConfig;

use crate::layout::{NODE_AREA_SIZE, NODE_CONFIG_DIR};

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;

#[derive(Debug, thiserror::Error)]
pub enum AreaError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("node config {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not UTF-8 text", path.display())]
    NotText { path: std::path::PathBuf },
    #[error("node config is {size} bytes; the per-node area holds at most {max} bytes of it")]
    TooLarge { size: usize, max: usize },
    #[error("per-node area is not a newc cpio archive followed by zeros: {0}")]
    Malformed(String),
    #[error(
        "per-node area holds {0:?}: only regular files directly in {NODE_CONFIG_DIR}/ are allowed"
    )]
    Forbidden(String),
    #[error("per-node area is {0} bytes, expected {NODE_AREA_SIZE}")]
    WrongSize(u64),
}

/// Which form the node config has; decides its file name on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigForm {
    Toml,
    PlnodeTxt,
}

impl ConfigForm {
    pub fn file_name(self) -> &'static str {
        match self {
            ConfigForm::Toml => "node.toml",
            ConfigForm::PlnodeTxt => "plnode.txt",
        }
    }
}

/// A node config checked by the `config` crate, ready to be stamped.
#[derive(Clone)]
pub struct NodeConfigFile {
    pub form: ConfigForm,
    pub text: String,
    pub config: NodeConfig,
    /// Import warnings of a `plnode.txt`.
    pub warnings: Vec<String>,
}

/// Leaves out the text: it holds the node's key.
impl std::fmt::Debug for NodeConfigFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfigFile")
            .field("form", &self.form)
            .field(
                "text",
                &format_args!("<{} bytes, redacted>", self.text.len()),
            )
            .field("config", &self.config)
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl NodeConfigFile {
    /// Parses `text` (TOML or plnode.txt, chosen by content); `source` names
    /// it in errors. A config that does not parse is refused with the
    /// parser's error.
    pub fn parse(text: &str, source: &Path) -> Result<NodeConfigFile, AreaError> {
        let (config, warnings) = config::parse_any_node_config(text, source)?;
        // parse_any chose the form by content; TOML is what parses as TOML.
        let form = if NodeConfig::from_toml(text, source).is_ok() {
            ConfigForm::Toml
        } else {
            ConfigForm::PlnodeTxt
        };
        Ok(NodeConfigFile {
            form,
            text: text.to_string(),
            config,
            warnings,
        })
    }

    pub fn load(path: &Path) -> Result<NodeConfigFile, AreaError> {
        let bytes = std::fs::read(path).map_err(|source| AreaError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| AreaError::NotText {
            path: path.to_path_buf(),
        })?;
        NodeConfigFile::parse(&text, path)
    }

    /// The area's bytes: exactly [`NODE_AREA_SIZE`].
    pub fn encode(&self, mtime: u32) -> Result<Vec<u8>, AreaError> {
        encode_area(self.form.file_name(), self.text.as_bytes(), mtime)
    }
}

/// An area holding one file `etc/plnode/node/<file_name>` with `data`.
pub fn encode_area(file_name: &str, data: &[u8], mtime: u32) -> Result<Vec<u8>, AreaError> {
    let name = format!("{NODE_CONFIG_DIR}/{file_name}");
    let overhead = 2 * (110 + 4) + name.len() + "TRAILER!!!".len() + 8;
    let max = NODE_AREA_SIZE - overhead;
    if data.len() > max {
        return Err(AreaError::TooLarge {
            size: data.len(),
            max,
        });
    }
    let mut out = Vec::with_capacity(NODE_AREA_SIZE);
    let mut writer = cpio::newc::Builder::new(&name)
        .ino(1)
        .mode(S_IFREG | 0o600)
        .mtime(mtime)
        .write(&mut out, data.len() as u32);
    std::io::Write::write_all(&mut writer, data)
        .map_err(|e| AreaError::Malformed(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| AreaError::Malformed(e.to_string()))?;
    cpio::newc::trailer(&mut out).map_err(|e| AreaError::Malformed(e.to_string()))?;
    if out.len() > NODE_AREA_SIZE {
        return Err(AreaError::TooLarge {
            size: data.len(),
            max,
        });
    }
    out.resize(NODE_AREA_SIZE, 0);
    Ok(out)
}

/// A file found in the per-node area.
#[derive(Clone, PartialEq, Eq)]
pub struct AreaFile {
    /// Path as in the archive (`etc/plnode/node/node.toml`).
    pub path: String,
    pub data: Vec<u8>,
}

/// Shows the size and a hash of the data, not the data: a node config
/// holds the node's key.
impl std::fmt::Debug for AreaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(&self.data);
        f.debug_struct("AreaFile")
            .field("path", &self.path)
            .field(
                "data",
                &format_args!(
                    "<{} bytes, sha256 {}>",
                    self.data.len(),
                    hex::encode(digest)
                ),
            )
            .finish()
    }
}

/// Reads an area: blank → no files. Anything but regular files directly
/// in `etc/plnode/node/`, or anything but zeros after the archive, is an error.
pub fn decode_area(area: &[u8]) -> Result<Vec<AreaFile>, AreaError> {
    if area.len() != NODE_AREA_SIZE {
        return Err(AreaError::WrongSize(area.len() as u64));
    }
    if area.iter().all(|&b| b == 0) {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    let mut rest: &[u8] = area;
    loop {
        let mut reader =
            cpio::NewcReader::new(rest).map_err(|e| AreaError::Malformed(e.to_string()))?;
        let entry = reader.entry();
        if entry.is_trailer() {
            rest = reader
                .finish()
                .map_err(|e| AreaError::Malformed(e.to_string()))?;
            break;
        }
        let path = entry.name().to_string();
        let allowed = path
            .strip_prefix(NODE_CONFIG_DIR)
            .and_then(|p| p.strip_prefix('/'))
            .is_some_and(|name| {
                !name.is_empty() && !name.contains('/') && name != "." && name != ".."
            });
        if !allowed || entry.mode() & S_IFMT != S_IFREG || entry.nlink() > 1 {
            return Err(AreaError::Forbidden(path));
        }
        let size = entry.file_size() as usize;
        if size > NODE_AREA_SIZE {
            return Err(AreaError::Malformed(format!(
                "{path}: size {size} exceeds the area"
            )));
        }
        let mut data = Vec::with_capacity(size);
        std::io::Read::read_to_end(&mut reader, &mut data)
            .map_err(|e| AreaError::Malformed(e.to_string()))?;
        if data.len() != size {
            return Err(AreaError::Malformed(format!("{path}: truncated")));
        }
        rest = reader
            .finish()
            .map_err(|e| AreaError::Malformed(e.to_string()))?;
        files.push(AreaFile { path, data });
        if files.len() > 16 {
            return Err(AreaError::Malformed("more than 16 files".into()));
        }
    }
    if rest.iter().any(|&b| b != 0) {
        return Err(AreaError::Malformed(
            "data after the archive trailer".into(),
        ));
    }
    Ok(files)
}

/// What a decoded area says about the node, for reports.
pub fn describe(files: &[AreaFile]) -> Vec<String> {
    files
        .iter()
        .map(|file| {
            let text = String::from_utf8_lossy(&file.data);
            match config::parse_any_node_config(&text, Path::new(&file.path)) {
                Ok((config, _)) => format!(
                    "{} ({} bytes): node {} ({})",
                    file.path,
                    file.data.len(),
                    config.node_id,
                    config.fqdn()
                ),
                Err(e) => format!(
                    "{} ({} bytes): does not parse: {e}",
                    file.path,
                    file.data.len()
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE_TOML: &str = "[node]\nid = 7\nkey = \"3f6c1a9e0b7d42e5a8c4f1e2d3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f70\"\nhostname = \"node7\"\n\n[network]\nmethod = \"dhcp\"\n";

    #[test]
    fn area_round_trip() {
        let file = NodeConfigFile::parse(NODE_TOML, Path::new("node.toml")).unwrap();
        assert_eq!(file.form, ConfigForm::Toml);
        let area = file.encode(1).unwrap();
        assert_eq!(area.len(), NODE_AREA_SIZE);
        let files = decode_area(&area).unwrap();
        assert_eq!(
            files,
            vec![AreaFile {
                path: "etc/plnode/node/node.toml".into(),
                data: NODE_TOML.as_bytes().to_vec()
            }]
        );
        assert!(describe(&files)[0].contains("node 7"));
        assert!(decode_area(&vec![0; NODE_AREA_SIZE]).unwrap().is_empty());
    }

    #[test]
    fn debug_output_never_shows_the_node_key() {
        let key = "3f6c1a9e0b7d42e5a8c4f1e2d3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f70";
        let file = NodeConfigFile::parse(NODE_TOML, Path::new("node.toml")).unwrap();
        let files = decode_area(&file.encode(1).unwrap()).unwrap();
        for shown in [format!("{file:?}"), format!("{files:?}")] {
            assert!(!shown.contains(key), "{shown}");
            assert!(shown.contains("bytes"), "{shown}");
        }
    }

    #[test]
    fn plnode_txt_is_recognised() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/plnode.txt"),
        )
        .unwrap();
        let file = NodeConfigFile::parse(&text, Path::new("plnode.txt")).unwrap();
        assert_eq!(file.form, ConfigForm::PlnodeTxt);
        assert_eq!(file.config.node_id.0, 3);
        let files = decode_area(&file.encode(1).unwrap()).unwrap();
        assert_eq!(files[0].path, "etc/plnode/node/plnode.txt");
    }

    #[test]
    fn bad_configs_and_areas_are_refused() {
        let e = NodeConfigFile::parse("[node]\nid = \"x\"\n", Path::new("bad.toml")).unwrap_err();
        assert!(e.to_string().contains("bad.toml"), "{e}");
        assert!(matches!(
            encode_area("node.toml", &vec![b'#'; NODE_AREA_SIZE], 0),
            Err(AreaError::TooLarge { .. })
        ));
        // A file outside the node directory (it would replace /init).
        let mut evil = encode_area("x", b"#!/bin/sh\n", 0).unwrap();
        let bad = b"init\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        let name_len = "etc/plnode/node/x".len();
        evil[110..110 + name_len].copy_from_slice(&bad[..name_len]);
        assert!(matches!(decode_area(&evil), Err(AreaError::Forbidden(_))));
        let mut trailing = encode_area("node.toml", NODE_TOML.as_bytes(), 0).unwrap();
        trailing[NODE_AREA_SIZE - 1] = 1;
        assert!(matches!(
            decode_area(&trailing),
            Err(AreaError::Malformed(_))
        ));
        assert!(matches!(
            decode_area(&[0; 10]),
            Err(AreaError::WrongSize(10))
        ));
    }
}
