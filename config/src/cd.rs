//! What a boot CD says about itself (`/etc/plnode/cd.toml` in its initramfs
//! and `/plnode/cd.toml` on the ISO). Written by `bootcd build`, read by
//! `init` and `bootcd show`. It lives in the signed part of the CD.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{read_file_text, ConfigError, SourceText};
use crate::node::ServerUrl;
use crate::timestamp::Timestamp;

/// The CD's description of itself: signed with the CD, so a node trusts the
/// server URLs, the clock floor and the fingerprints in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdInfo {
    /// The CD's release, e.g. `2026.11.1`.
    pub cd_version: String,
    /// When the CD was built: the node never believes a clock earlier than this.
    pub build_time: Timestamp,
    /// Boot servers to try in order (a node config may name others).
    pub server_urls: Vec<ServerUrl>,
    /// `uname -r` of the kernel on the CD.
    pub kernel_version: String,
    /// Version of the repository root metadata on the CD.
    pub root_version: u64,
    /// SHA-256 fingerprint (hex) of the boot server CA certificate on the CD.
    pub ca_sha256: String,
}

impl CdInfo {
    /// Reads and checks `cd.toml`; [`ConfigError::Read`] when the file cannot
    /// be read, [`ConfigError::Invalid`] (with line and field) otherwise.
    pub fn load(path: &Path) -> Result<CdInfo, ConfigError> {
        let text = read_file_text(path)?;
        CdInfo::from_toml(&text, path)
    }

    /// Parses `cd.toml` text; `source` names it in errors. Unknown fields and
    /// an empty `server_urls` are refused.
    pub fn from_toml(text: &str, source: &Path) -> Result<CdInfo, ConfigError> {
        let src = SourceText::new(source, text);
        let info: CdInfo = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        if info.server_urls.is_empty() {
            return Err(src.error(
                None,
                Some("server_urls".into()),
                "a CD needs at least one boot server URL",
            ));
        }
        Ok(info)
    }

    /// The TOML that [`CdInfo::from_toml`] reads back to an equal value.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let info = CdInfo {
            cd_version: "2026.11.1".into(),
            build_time: Timestamp::from_unix(1_795_000_000),
            server_urls: vec!["https://10.0.2.2:8443".parse().unwrap()],
            kernel_version: "6.1.0-56-amd64".into(),
            root_version: 1,
            ca_sha256: "ab".repeat(32),
        };
        let text = info.to_toml();
        assert_eq!(
            CdInfo::from_toml(&text, Path::new("cd.toml")).unwrap(),
            info
        );
        let e = CdInfo::from_toml(&format!("{text}extra = 1\n"), Path::new("cd.toml")).unwrap_err();
        assert_eq!(e.field(), Some("extra"), "{e}");
    }
}
