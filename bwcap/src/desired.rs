//! What the node should look like: the egress interface, the node's cap, and
//! every sliver with its cgroup and rspec. Built by `nodemgr` from the boot
//! server's reply, or read from a state file (TOML, [`DesiredState::from_toml`])
//! by `bwcap apply`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use config::rspec::Rspec;
use config::units::{ByteSize, Rate};
use serde::Deserialize;

use crate::names::{InterfaceName, SliceName};

/// PlanetLab's daily byte budget per sliver (bwmon's `default_MaxKByte`):
/// 10,546,875 KiB.
pub const DEFAULT_DAILY_BUDGET: ByteSize = ByteSize::from_bytes(10_546_875 * 1024);

/// The highest rate bwcap accepts anywhere (1 Tbit/s): anything above is a
/// typo, not a link.
pub const MAX_RATE: Rate = Rate::from_bits_per_sec(1_000_000_000_000);

/// The lowest rate HTB can be given (1 byte/s).
pub const MIN_RATE: Rate = Rate::from_bits_per_sec(8);

/// Slivers one node can have classes for (class minors 0x10 to 0xffff).
pub const MAX_SLIVERS: usize = 0xffff - 0x10 + 1;

/// The cgroup v2 root on a node.
pub const NODE_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The desired bandwidth layout of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredState {
    /// The egress interface the caps apply to.
    pub interface: InterfaceName,
    /// The node's outgoing cap (set by the site admin); `None`: the link's
    /// speed (see [`crate::Bwcap::apply`]).
    pub node_cap: Option<Rate>,
    /// The cgroup of the node's own services (on a node the cgroup v2 root,
    /// [`NODE_CGROUP_ROOT`]). Its traffic, and that of every cgroup below
    /// it without a program of its own, goes to the node's class; traffic of
    /// a `slivers/` child cgroup that is not (yet) in [`Self::slivers`] goes
    /// to the default class. `None`: no node program (node traffic is then
    /// unclassified and goes to the default class).
    pub node_cgroup: Option<PathBuf>,
    /// The slivers.
    pub slivers: Vec<SliverSpec>,
}

/// One sliver's share of the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliverSpec {
    /// The slice.
    pub slice: SliceName,
    /// The sliver's cgroup v2 directory (`<root>/slivers/<slice>`).
    pub cgroup: PathBuf,
    /// Its resources: `net_min_rate` (guaranteed), `net_max_rate`
    /// (ceiling), `cpu_share` (scales its share of spare capacity).
    pub rspec: Rspec,
    /// Bytes it may send per day before its ceiling is lowered.
    pub daily_budget: ByteSize,
}

impl SliverSpec {
    /// A sliver with PlanetLab's default daily budget.
    pub fn new(slice: SliceName, cgroup: PathBuf, rspec: Rspec) -> SliverSpec {
        SliverSpec {
            slice,
            cgroup,
            rspec,
            daily_budget: DEFAULT_DAILY_BUDGET,
        }
    }
}

/// A desired state that cannot be applied; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidState {
    /// The node cap is zero, too small or absurd.
    #[error("node cap {cap}: {problem}")]
    NodeCap {
        /// The cap given.
        cap: Rate,
        /// What is wrong.
        problem: String,
    },
    /// A sliver's rspec or budget is out of range.
    #[error("sliver {slice}: {problem}")]
    Sliver {
        /// The slice.
        slice: SliceName,
        /// What is wrong.
        problem: String,
    },
    /// Two slivers share a slice name or a cgroup.
    #[error("sliver {slice}: {problem}")]
    Duplicate {
        /// The slice named second.
        slice: SliceName,
        /// What is shared.
        problem: String,
    },
    /// More slivers than there are class ids.
    #[error("{count} slivers: at most {MAX_SLIVERS} fit one HTB qdisc")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// A path that must be absolute is not.
    #[error("{what} {}: must be an absolute path", path.display())]
    RelativePath {
        /// Which path.
        what: String,
        /// The path.
        path: PathBuf,
    },
}

fn check_rate(rate: Rate) -> Result<(), String> {
    if rate < MIN_RATE {
        Err(format!(
            "{rate} is below {MIN_RATE} (HTB needs a rate of at least 1 byte/s)"
        ))
    } else if rate > MAX_RATE {
        Err(format!("{rate} is above {MAX_RATE}"))
    } else {
        Ok(())
    }
}

impl DesiredState {
    /// Checks everything that can be checked without the kernel: rates in
    /// range, no duplicates, absolute paths. [`crate::Bwcap::apply`] calls
    /// this (and checks the interface and cgroups) before sending anything.
    pub fn validate(&self) -> Result<(), InvalidState> {
        if let Some(cap) = self.node_cap {
            check_rate(cap).map_err(|problem| InvalidState::NodeCap { cap, problem })?;
        }
        if let Some(path) = &self.node_cgroup {
            if !path.is_absolute() {
                return Err(InvalidState::RelativePath {
                    what: "node cgroup".into(),
                    path: path.clone(),
                });
            }
        }
        if self.slivers.len() > MAX_SLIVERS {
            return Err(InvalidState::TooMany {
                count: self.slivers.len(),
            });
        }
        let mut names = BTreeSet::new();
        let mut cgroups = BTreeSet::new();
        for s in &self.slivers {
            let bad = |problem: String| InvalidState::Sliver {
                slice: s.slice.clone(),
                problem,
            };
            s.rspec.validate().map_err(bad)?;
            check_rate(s.rspec.net_min_rate).map_err(|p| bad(format!("net_min_rate {p}")))?;
            check_rate(s.rspec.net_max_rate).map_err(|p| bad(format!("net_max_rate {p}")))?;
            if s.daily_budget.bytes() == 0 {
                return Err(bad("daily_budget must be above zero".into()));
            }
            if !s.cgroup.is_absolute() {
                return Err(InvalidState::RelativePath {
                    what: format!("sliver {} cgroup", s.slice),
                    path: s.cgroup.clone(),
                });
            }
            if !names.insert(&s.slice) {
                return Err(InvalidState::Duplicate {
                    slice: s.slice.clone(),
                    problem: "listed twice".into(),
                });
            }
            if !cgroups.insert(&s.cgroup) {
                return Err(InvalidState::Duplicate {
                    slice: s.slice.clone(),
                    problem: format!("cgroup {} is another sliver's", s.cgroup.display()),
                });
            }
        }
        Ok(())
    }

    /// Parses a state file (the format is in `docs/DESIGN.md`, "Bandwidth
    /// caps"); `source` names the file in errors. The result is validated.
    pub fn from_toml(text: &str, source: &Path) -> Result<DesiredState, StateFileError> {
        let file: StateFile = toml::from_str(text).map_err(|e| StateFileError::Parse {
            path: source.to_path_buf(),
            source: Box::new(e),
        })?;
        let node_cgroup = file
            .node_cgroup
            .unwrap_or_else(|| PathBuf::from(NODE_CGROUP_ROOT));
        let slivers = file
            .sliver
            .into_iter()
            .map(|s| {
                let cgroup = s
                    .cgroup
                    .unwrap_or_else(|| node_cgroup.join("slivers").join(s.slice.as_str()));
                let defaults = Rspec::default();
                SliverSpec {
                    rspec: Rspec {
                        cpu_share: s.cpu_share.unwrap_or(defaults.cpu_share),
                        net_min_rate: s.net_min_rate.unwrap_or(defaults.net_min_rate),
                        net_max_rate: s.net_max_rate.unwrap_or(defaults.net_max_rate),
                        ..defaults
                    },
                    slice: s.slice,
                    cgroup,
                    daily_budget: s.daily_budget.unwrap_or(DEFAULT_DAILY_BUDGET),
                }
            })
            .collect();
        let state = DesiredState {
            interface: file.interface,
            node_cap: file.node_cap,
            node_cgroup: Some(node_cgroup),
            slivers,
        };
        state
            .validate()
            .map_err(|invalid| StateFileError::Invalid {
                path: source.to_path_buf(),
                source: invalid,
            })?;
        Ok(state)
    }

    /// Reads and parses a state file.
    pub fn load(path: &Path) -> Result<DesiredState, StateFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| StateFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        DesiredState::from_toml(&text, path)
    }
}

/// A state file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML of the expected shape (the message names line and field).
    #[error("{}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// Well-formed but not applicable.
    #[error("{}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: InvalidState,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    interface: InterfaceName,
    #[serde(default)]
    node_cap: Option<Rate>,
    #[serde(default)]
    node_cgroup: Option<PathBuf>,
    #[serde(default)]
    sliver: Vec<SliverEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SliverEntry {
    slice: SliceName,
    #[serde(default)]
    cgroup: Option<PathBuf>,
    #[serde(default)]
    net_min_rate: Option<Rate>,
    #[serde(default)]
    net_max_rate: Option<Rate>,
    #[serde(default)]
    cpu_share: Option<u32>,
    #[serde(default)]
    daily_budget: Option<ByteSize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DesiredState, String> {
        DesiredState::from_toml(text, Path::new("state.toml")).map_err(|e| {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                s.push_str(": ");
                s.push_str(&cause.to_string());
                source = cause.source();
            }
            s
        })
    }

    #[test]
    fn a_full_state_file_parses_with_defaults() {
        let s = parse(
            r#"
interface = "eth0"
node_cap = "100mbit"

[[sliver]]
slice = "princeton_codeen"
net_min_rate = "1mbit"
net_max_rate = "50mbit"
cpu_share = 4
daily_budget = "5GiB"

[[sliver]]
slice = "mit_x"
cgroup = "/sys/fs/cgroup/elsewhere/mit_x"
"#,
        )
        .unwrap();
        assert_eq!(s.interface.as_str(), "eth0");
        assert_eq!(s.node_cap, Some(Rate::mbit(100)));
        assert_eq!(s.node_cgroup.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        let a = &s.slivers[0];
        assert_eq!(
            a.cgroup,
            Path::new("/sys/fs/cgroup/slivers/princeton_codeen")
        );
        assert_eq!((a.rspec.cpu_share, a.daily_budget), (4, ByteSize::gib(5)));
        let b = &s.slivers[1];
        assert_eq!(b.rspec.net_min_rate, Rate::kbit(5));
        assert_eq!(b.rspec.net_max_rate, Rate::mbit(10));
        assert_eq!(b.daily_budget, DEFAULT_DAILY_BUDGET);
        assert_eq!(b.cgroup, Path::new("/sys/fs/cgroup/elsewhere/mit_x"));
    }

    #[test]
    fn the_example_state_file_parses() {
        let text = include_str!("../tests/data/state/node.toml");
        let s = parse(text).unwrap();
        assert_eq!(s.slivers.len(), 3);
        assert_eq!(s.slivers[2].daily_budget, ByteSize::gib(5));
    }

    #[test]
    fn bad_input_gets_one_clear_error() {
        let cases = [
            (
                "interface = \"eth0\"\nnode_cap = \"0mbit\"",
                "node cap 0bit: 0bit is below 8bit",
            ),
            ("interface = \"eth0\"\nnode_cap = -5", "not negative"),
            ("interface = \"eth0\"\nnode_cap = \"5tbit\"", "above 1tbit"),
            ("interface = \"eth0/x\"", "interface name"),
            (
                "interface = \"eth0\"\nnode_cap = \"10furlongs\"",
                "unknown unit",
            ),
            (
                "interface = \"eth0\"\n[[sliver]]\nslice = \"a\"\nnet_min_rate = \"20mbit\"",
                "sliver a: net_min_rate 20mbit is above net_max_rate 10mbit",
            ),
            (
                "interface = \"eth0\"\n[[sliver]]\nslice = \"a\"\n[[sliver]]\nslice = \"a\"",
                "listed twice",
            ),
            (
                "interface = \"eth0\"\n[[sliver]]\nslice = \"A\"",
                "slice name",
            ),
            (
                "interface = \"eth0\"\n[[sliver]]\nslice = \"a\"\ncgroup = \"rel\"",
                "absolute",
            ),
            ("interface = \"eth0\"\ncap = 1", "unknown field"),
            (
                "interface = \"eth0\"\n[[sliver]]\nslice = \"a\"\ndaily_budget = 0",
                "daily_budget",
            ),
        ];
        for (text, expected) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with("state.toml"), "{e}");
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }
}
