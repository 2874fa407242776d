//! Finding the node's configuration.
//!
//! In order: the kernel command line, the per-node part of the CD, a USB
//! stick or partition (labelled `PLNODE`, or holding a `plnode.txt` /
//! `node.toml`), the installed disk. The first place that has a config wins
//! and is named on the console. A config that is there but does not parse is
//! an error, not a reason to quietly use another one: the admin must learn
//! that the file they wrote is wrong.

use std::fmt;
use std::path::{Path, PathBuf};

use config::NodeConfig;

use crate::blockdev::{self, BlockDevice, DevKind, FsKind, Mounted};
use crate::kernel_cmdline::Cmdline;

/// Label of a USB stick or partition made for node configs.
pub const CONFIG_LABEL: &str = "PLNODE";
/// Label of the installed system's file system.
pub const ROOT_LABEL: &str = "PLNODE_ROOT";
/// File names looked for, in order, on a stick (also under `plnode/`).
const FILE_NAMES: &[&str] = &[
    "node.toml",
    "plnode.txt",
    "plnode/node.toml",
    "plnode/plnode.txt",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    KernelCmdline,
    /// `/etc/plnode/node/FILE`, from the CD's per-node area.
    CdNodeArea(PathBuf),
    Removable {
        device: PathBuf,
        file: String,
    },
    InstalledDisk {
        device: PathBuf,
    },
}

impl ConfigSource {
    /// A short word for markers: `cmdline`, `cd`, `usb`, `disk`.
    pub fn tag(&self) -> &'static str {
        match self {
            ConfigSource::KernelCmdline => "cmdline",
            ConfigSource::CdNodeArea(_) => "cd",
            ConfigSource::Removable { .. } => "usb",
            ConfigSource::InstalledDisk { .. } => "disk",
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::KernelCmdline => write!(f, "the kernel command line (plnode.config)"),
            ConfigSource::CdNodeArea(p) => write!(f, "the CD's per-node area ({})", p.display()),
            ConfigSource::Removable { device, file } => write!(f, "{file} on {}", device.display()),
            ConfigSource::InstalledDisk { device } => {
                write!(f, "node.toml on the installed disk {}", device.display())
            }
        }
    }
}

pub struct Found {
    pub config: NodeConfig,
    /// The text as found, to be copied to the installed disk.
    pub text: String,
    pub source: ConfigSource,
    pub warnings: Vec<String>,
}

/// Leaves out the text: it holds the node's key.
impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Found")
            .field("config", &self.config)
            .field(
                "text",
                &format_args!("<{} bytes, redacted>", self.text.len()),
            )
            .field("source", &self.source)
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl Found {
    /// The text for the installed disk's `node.toml`: as found when it is
    /// TOML (comments kept), else (a PlanetLab `plnode.txt`) the same
    /// config in TOML, which is what the installed system reads.
    pub fn disk_text(&self) -> String {
        if config::NodeConfig::from_toml(&self.text, Path::new("node.toml")).is_ok() {
            self.text.clone()
        } else {
            self.config.to_toml()
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the node config from {place} is not valid: {error}")]
pub struct BadConfig {
    pub place: ConfigSource,
    pub error: Box<config::ConfigError>,
}

/// One place a config file may be read from.
pub trait Place {
    fn source(&self, file: &str) -> ConfigSource;
    /// The files this place may hold, in order of preference.
    fn file_names(&self) -> &[&str];
    fn read(&self, file: &str) -> Option<String>;
}

/// A directory (the CD's per-node area, or a mounted file system).
#[derive(Debug)]
pub struct DirPlace {
    pub dir: PathBuf,
    pub names: &'static [&'static str],
    pub make_source: fn(&Path, &str) -> ConfigSource,
}

impl Place for DirPlace {
    fn source(&self, file: &str) -> ConfigSource {
        (self.make_source)(&self.dir, file)
    }
    fn file_names(&self) -> &[&str] {
        self.names
    }
    fn read(&self, file: &str) -> Option<String> {
        let path = self.dir.join(file);
        // Only regular files; a stick could hold anything.
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > 64 * 1024 {
            return None;
        }
        std::fs::read_to_string(path).ok()
    }
}

fn parse_found(text: String, source: ConfigSource, file_hint: &Path) -> Result<Found, BadConfig> {
    match config::parse_any_node_config(&text, file_hint) {
        Ok((config, warnings)) => Ok(Found {
            config,
            text,
            source,
            warnings,
        }),
        Err(error) => Err(BadConfig {
            place: source,
            error: Box::new(error),
        }),
    }
}

/// Looks through the command line and then `places`, in order.
pub fn discover_in(cmdline: &Cmdline, places: &[&dyn Place]) -> Result<Option<Found>, BadConfig> {
    if let Some(text) = &cmdline.config {
        return parse_found(
            text.clone(),
            ConfigSource::KernelCmdline,
            Path::new("plnode.config"),
        )
        .map(Some);
    }
    for place in places {
        for name in place.file_names() {
            if let Some(text) = place.read(name) {
                return parse_found(text, place.source(name), Path::new(name)).map(Some);
            }
        }
    }
    Ok(None)
}

/// The CD's per-node area inside the initramfs.
pub fn cd_node_area(root: &Path) -> DirPlace {
    DirPlace {
        dir: root.join("etc/plnode/node"),
        names: &["node.toml", "plnode.txt"],
        make_source: |dir, file| ConfigSource::CdNodeArea(dir.join(file)),
    }
}

/// Where the file systems of candidate devices are mounted while looked at.
const PROBE_DIR: &str = "/run/plnode/probe";

/// Runs the whole discovery on the running machine: command line, CD area,
/// removable devices and partitions labelled PLNODE, then the installed disk.
pub fn discover(cmdline: &Cmdline) -> Result<Option<Found>, BadConfig> {
    let cd = cd_node_area(Path::new("/"));
    if cmdline.config.is_some() || cd.file_names().iter().any(|f| cd.read(f).is_some()) {
        return discover_in(cmdline, &[&cd]);
    }
    let devices = blockdev::list(Path::new("/sys/block"));
    let probed: Vec<(BlockDevice, blockdev::FsInfo)> = devices
        .into_iter()
        .filter(|d| matches!(d.kind, DevKind::Disk | DevKind::Partition))
        .filter_map(|d| blockdev::probe(&d.dev).map(|fs| (d, fs)))
        .collect();

    // Removable media and anything labelled PLNODE, except our own root.
    for (dev, fs) in &probed {
        let labelled = fs.label.as_deref() == Some(CONFIG_LABEL);
        if !(labelled || dev.removable) || fs.label.as_deref() == Some(ROOT_LABEL) {
            continue;
        }
        let Ok(mounted) = Mounted::new(&dev.dev, Path::new(PROBE_DIR), fs.kind, true) else {
            continue;
        };
        let device = dev.dev.clone();
        let place = DirPlace {
            dir: mounted.dir.clone(),
            names: FILE_NAMES,
            make_source: |_, f| ConfigSource::Removable {
                device: PathBuf::new(),
                file: f.to_string(),
            },
        };
        let found = discover_in(&Cmdline::default(), &[&place]);
        drop(mounted);
        match found {
            Ok(Some(mut f)) => {
                f.source = ConfigSource::Removable {
                    device,
                    file: f.source.file_name(),
                };
                return Ok(Some(f));
            }
            Ok(None) => continue,
            Err(mut bad) => {
                bad.place = ConfigSource::Removable {
                    device,
                    file: bad.place.file_name(),
                };
                return Err(bad);
            }
        }
    }

    // The installed disk keeps a copy of the config it was installed with.
    for (dev, fs) in &probed {
        if fs.label.as_deref() != Some(ROOT_LABEL) || fs.kind != FsKind::Ext || dev.removable {
            continue;
        }
        let Ok(mounted) = Mounted::new(&dev.dev, Path::new(PROBE_DIR), fs.kind, true) else {
            continue;
        };
        let text = DirPlace {
            dir: mounted.dir.clone(),
            names: &["node.toml"],
            make_source: |_, _| ConfigSource::KernelCmdline,
        }
        .read("node.toml");
        drop(mounted);
        if let Some(text) = text {
            return parse_found(
                text,
                ConfigSource::InstalledDisk {
                    device: dev.dev.clone(),
                },
                Path::new("node.toml"),
            )
            .map(Some);
        }
    }
    Ok(None)
}

impl ConfigSource {
    fn file_name(&self) -> String {
        match self {
            ConfigSource::Removable { file, .. } => file.clone(),
            ConfigSource::CdNodeArea(p) => p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = "[node]\nid = 7\nkey = \"0123456789abcdef0123456789abcdef\"\nhostname = \"n7\"\n[network]\nmethod = \"dhcp\"\n";
    const PLNODE: &str = "NODE_ID=\"9\"\nNODE_KEY=\"0123456789abcdef0123456789abcdef\"\nHOST_NAME=\"n9\"\nIP_METHOD=\"dhcp\"\n";

    fn stick(dir: &Path) -> DirPlace {
        DirPlace {
            dir: dir.to_path_buf(),
            names: FILE_NAMES,
            make_source: |d, f| ConfigSource::Removable {
                device: d.to_path_buf(),
                file: f.to_string(),
            },
        }
    }

    #[test]
    fn the_installed_disk_gets_toml_even_from_a_plnode_txt() {
        let usb = tempfile::tempdir().unwrap();
        let example = include_str!("../../../config/examples/plnode.txt");
        std::fs::write(usb.path().join("plnode.txt"), example).unwrap();
        let found = discover_in(&Cmdline::default(), &[&stick(usb.path())])
            .unwrap()
            .unwrap();
        let text = found.disk_text();
        let read_back = config::NodeConfig::from_toml(&text, Path::new("node.toml")).unwrap();
        assert_eq!(read_back, found.config);
        // TOML as found is kept as it is, comments and all.
        std::fs::remove_file(usb.path().join("plnode.txt")).unwrap();
        let commented = format!("# site 12, rack 3\n{TOML}");
        std::fs::write(usb.path().join("node.toml"), &commented).unwrap();
        let found = discover_in(&Cmdline::default(), &[&stick(usb.path())])
            .unwrap()
            .unwrap();
        assert_eq!(found.disk_text(), commented);
    }

    #[test]
    fn the_kernel_command_line_comes_first() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/plnode/node")).unwrap();
        std::fs::write(root.path().join("etc/plnode/node/plnode.txt"), PLNODE).unwrap();
        let cmdline = Cmdline {
            config: Some(TOML.into()),
            ..Default::default()
        };
        let found = discover_in(&cmdline, &[&cd_node_area(root.path())])
            .unwrap()
            .unwrap();
        assert_eq!(found.source, ConfigSource::KernelCmdline);
        assert_eq!(found.config.node_id.0, 7);
    }

    #[test]
    fn the_cd_area_is_used_before_a_stick_and_named() {
        let root = tempfile::tempdir().unwrap();
        let usb = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/plnode/node")).unwrap();
        std::fs::write(root.path().join("etc/plnode/node/plnode.txt"), PLNODE).unwrap();
        std::fs::write(usb.path().join("node.toml"), TOML).unwrap();
        let cd = cd_node_area(root.path());
        let found = discover_in(&Cmdline::default(), &[&cd, &stick(usb.path())])
            .unwrap()
            .unwrap();
        assert_eq!(found.config.node_id.0, 9);
        assert_eq!(found.source.tag(), "cd");
        assert!(found.source.to_string().contains("per-node area"));
    }

    #[test]
    fn a_stick_with_plnode_txt_in_a_folder_is_found() {
        let empty_cd = tempfile::tempdir().unwrap();
        let usb = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(usb.path().join("plnode")).unwrap();
        std::fs::write(usb.path().join("plnode/plnode.txt"), PLNODE).unwrap();
        let found = discover_in(
            &Cmdline::default(),
            &[&cd_node_area(empty_cd.path()), &stick(usb.path())],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            found.source,
            ConfigSource::Removable {
                device: usb.path().to_path_buf(),
                file: "plnode/plnode.txt".into()
            }
        );
    }

    #[test]
    fn a_broken_config_is_an_error_naming_where_it_came_from() {
        let usb = tempfile::tempdir().unwrap();
        std::fs::write(
            usb.path().join("node.toml"),
            TOML.replace("dhcp", "carrier-pigeon"),
        )
        .unwrap();
        let bad = discover_in(&Cmdline::default(), &[&stick(usb.path())]).unwrap_err();
        let text = bad.to_string();
        assert!(text.contains("node.toml on"), "{text}");
        assert!(text.contains("network.method"), "{text}");
    }

    #[test]
    fn nothing_found_is_not_an_error() {
        let empty = tempfile::tempdir().unwrap();
        assert!(discover_in(&Cmdline::default(), &[&stick(empty.path())])
            .unwrap()
            .is_none());
    }

    #[test]
    fn symlinks_on_a_stick_are_not_followed() {
        let usb = tempfile::tempdir().unwrap();
        let secret = usb.path().join("elsewhere.toml");
        std::fs::write(&secret, TOML).unwrap();
        std::os::unix::fs::symlink(&secret, usb.path().join("node.toml")).unwrap();
        assert!(discover_in(&Cmdline::default(), &[&stick(usb.path())])
            .unwrap()
            .is_none());
    }
}
