//! The kernel command line's `plnode.*` options.
//!
//! | option | meaning |
//! | --- | --- |
//! | `plnode.config=BASE64` | the node config (TOML or plnode.txt), base64 (URL-safe or standard) |
//! | `plnode.debug` | go to `debug` without asking the server |
//! | `plnode.handover=ID` | kexec'd by the CD: hand over to deployment ID at once |
//! | `plnode.disk=NAME` | install onto this disk (e.g. `vda`) instead of choosing |
//! | `plnode.fullcheck` | re-hash every installed file before hand-over |

use base64::Engine as _;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// Node config text from `plnode.config`.
    pub config: Option<String>,
    pub debug: bool,
    pub handover: Option<String>,
    pub disk: Option<String>,
    pub full_check: bool,
    /// Problems with `plnode.*` options; reported, never fatal.
    pub warnings: Vec<String>,
}

/// Splits a command line into words, honouring double quotes as the kernel does.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(current);
    }
    out
}

impl Cmdline {
    pub fn parse(text: &str) -> Cmdline {
        let mut c = Cmdline::default();
        for word in words(text) {
            let Some(option) = word.strip_prefix("plnode.") else {
                continue;
            };
            let (key, value) = match option.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (option, None),
            };
            match (key, value) {
                ("config", Some(v)) => match decode_base64(v) {
                    Ok(text) => c.config = Some(text),
                    Err(e) => c.warnings.push(format!("plnode.config: {e}; ignored")),
                },
                ("debug", None) => c.debug = true,
                ("fullcheck", None) => c.full_check = true,
                ("handover", Some(v)) if is_safe_name(v) => c.handover = Some(v.to_string()),
                ("disk", Some(v)) if is_safe_name(v) => c.disk = Some(v.to_string()),
                (k, _) => c
                    .warnings
                    .push(format!("plnode.{k}: unknown option or bad value; ignored")),
            }
        }
        c
    }

    /// Reads `/proc/cmdline`.
    pub fn read() -> Cmdline {
        Cmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
    }
}

/// A device or deployment name: no path separators, no surprises.
fn is_safe_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && v != "."
        && v != ".."
}

fn decode_base64(v: &str) -> Result<String, String> {
    let engines = [
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    let bytes = engines
        .iter()
        .find_map(|e| e.decode(v).ok())
        .ok_or_else(|| "not valid base64".to_string())?;
    String::from_utf8(bytes).map_err(|_| "decoded config is not UTF-8 text".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_picked_from_a_real_command_line() {
        let cfg = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("[node]\nid = 3\n");
        let c = Cmdline::parse(&format!(
            "BOOT_IMAGE=/boot/vmlinuz console=ttyS0,115200n8 quiet plnode.config={cfg} plnode.fullcheck plnode.disk=vdb\n"
        ));
        assert_eq!(c.config.as_deref(), Some("[node]\nid = 3\n"));
        assert!(c.full_check && !c.debug);
        assert_eq!(c.disk.as_deref(), Some("vdb"));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn quoted_words_and_bad_values() {
        assert_eq!(words(r#"a "b c" d"#), vec!["a", "b c", "d"]);
        let c = Cmdline::parse("plnode.handover=../../etc plnode.config=%%% plnode.frobnicate");
        assert_eq!(c.handover, None);
        assert_eq!(c.config, None);
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
    }
}
