//! Resource capabilities (the NSDI paper's rcaps): `acquire(rspec)` returns
//! a 128-bit random value, knowing which is the right to the resources it
//! names; `bind(slice, rcap)` puts them into a slice's sliver.
//!
//! The table (`<state>/rcaps.json`, written atomically) keeps for each rcap
//! its rspec, who acquired it, and the slice it is bound to once bound. It
//! stores the SHA-256 of each rcap, never the rcap itself: a reader of the
//! state directory learns which resources are promised, not how to claim
//! them. An rcap is bound at most once; binding another rcap to the same
//! slice releases the one bound before, deleting the sliver releases its
//! rcap, and an rcap never bound is released when its lease ends.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use config::rspec::Rspec;
use config::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::name::SliceName;

/// A resource capability: 128 random bits, written as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rcap([u8; 16]);

impl fmt::Debug for Rcap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Knowing an rcap is owning it: logs get its fingerprint only.
        write!(f, "Rcap({}…)", &self.fingerprint()[..8])
    }
}

/// Why a text is not an rcap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an rcap: an rcap is 32 hex digits")]
pub struct BadRcap;

impl Rcap {
    /// A new rcap from the kernel's random source.
    pub fn generate() -> Result<Rcap, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(Rcap(bytes))
    }

    /// The key under which the table stores it: hex SHA-256.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.0))
    }
}

impl fmt::Display for Rcap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for Rcap {
    type Err = BadRcap;
    fn from_str(s: &str) -> Result<Rcap, BadRcap> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| BadRcap)?;
        Ok(Rcap(bytes))
    }
}

/// Who asked for something: the node's own administrator (host root, the
/// reconciliation with the boot server) or a slice (a process of its
/// sliver, identified by its host uid).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Principal {
    /// Root on the node.
    Node,
    /// A process of this slice's sliver.
    Slice(SliceName),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Node => f.write_str("the node"),
            Principal::Slice(s) => write!(f, "slice {s}"),
        }
    }
}

/// One acquired rcap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RcapEntry {
    /// The resources it names.
    pub rspec: Rspec,
    /// Who acquired it.
    pub acquired_by: Principal,
    /// When.
    pub acquired: Timestamp,
    /// The slice it is bound to, once bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_to: Option<SliceName>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    /// Fingerprint → entry.
    rcaps: BTreeMap<String, RcapEntry>,
}

/// What went wrong with the rcap table.
#[derive(Debug, thiserror::Error)]
pub enum RcapError {
    /// Reading or writing the file.
    #[error(transparent)]
    File(#[from] floor::durable::DurableError),
    /// The file is not a valid table.
    #[error("{}: not a valid rcap table: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No such rcap (never acquired, released, or forged).
    #[error("unknown rcap: never acquired on this node, or released")]
    Unknown,
    /// The rcap is bound already.
    #[error("the rcap is already bound to slice {0}")]
    Bound(SliceName),
}

/// The rcap table, as read from its file.
#[derive(Debug, Clone)]
pub struct RcapTable {
    path: PathBuf,
    file: TableFile,
}

impl RcapTable {
    /// Reads the table at `path` (empty when there is no file yet).
    pub fn load(path: &Path) -> Result<RcapTable, RcapError> {
        let file = match floor::durable::read_if_exists(path)? {
            None => TableFile::default(),
            Some(bytes) => parse_table(&bytes).map_err(|reason| RcapError::Corrupt {
                path: path.to_path_buf(),
                reason,
            })?,
        };
        Ok(RcapTable {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Writes the table (replacing the old one atomically).
    pub fn save(&self) -> Result<(), RcapError> {
        let json = serde_json::to_vec_pretty(&self.file).map_err(|e| RcapError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| floor::durable::DurableError {
                op: floor::durable::Op::Write,
                path: dir.to_path_buf(),
                source,
            })?;
        }
        floor::durable::write_atomic_mode(&self.path, &json, 0o600)?;
        Ok(())
    }

    /// Records a new rcap for `rspec`.
    pub fn insert(&mut self, rcap: &Rcap, rspec: Rspec, by: Principal, now: Timestamp) {
        self.file.rcaps.insert(
            rcap.fingerprint(),
            RcapEntry {
                rspec,
                acquired_by: by,
                acquired: now,
                bound_to: None,
            },
        );
    }

    /// The entry of an unbound rcap, ready to bind.
    pub fn unbound(&self, rcap: &Rcap) -> Result<&RcapEntry, RcapError> {
        let entry = self
            .file
            .rcaps
            .get(&rcap.fingerprint())
            .ok_or(RcapError::Unknown)?;
        match &entry.bound_to {
            Some(slice) => Err(RcapError::Bound(slice.clone())),
            None => Ok(entry),
        }
    }

    /// Marks `rcap` bound to `slice`, releasing the rcap bound to it before.
    pub fn bind(&mut self, rcap: &Rcap, slice: &SliceName) -> Result<(), RcapError> {
        self.unbound(rcap)?;
        self.release_slice(slice);
        if let Some(entry) = self.file.rcaps.get_mut(&rcap.fingerprint()) {
            entry.bound_to = Some(slice.clone());
        }
        Ok(())
    }

    /// Releases the rcap bound to `slice` (its sliver went away or got
    /// another); true if there was one.
    pub fn release_slice(&mut self, slice: &SliceName) -> bool {
        let before = self.file.rcaps.len();
        self.file
            .rcaps
            .retain(|_, e| e.bound_to.as_ref() != Some(slice));
        self.file.rcaps.len() != before
    }

    /// Forgets `rcap` if it is not bound (an acquire whose bind failed);
    /// true if it was there.
    pub fn remove_unbound(&mut self, rcap: &Rcap) -> bool {
        let key = rcap.fingerprint();
        if self
            .file
            .rcaps
            .get(&key)
            .is_some_and(|e| e.bound_to.is_none())
        {
            self.file.rcaps.remove(&key);
            return true;
        }
        false
    }

    /// Releases unbound rcaps whose lease ended by `now`; how many.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        let before = self.file.rcaps.len();
        self.file
            .rcaps
            .retain(|_, e| e.bound_to.is_some() || e.rspec.lease_end.is_none_or(|end| end > now));
        before - self.file.rcaps.len()
    }

    /// The rspecs of acquired rcaps that are not bound (promised, not yet
    /// in a sliver).
    pub fn unbound_rspecs(&self) -> impl Iterator<Item = &Rspec> {
        self.file
            .rcaps
            .values()
            .filter(|e| e.bound_to.is_none())
            .map(|e| &e.rspec)
    }

    /// Every entry (fingerprint, entry).
    pub fn entries(&self) -> impl Iterator<Item = (&String, &RcapEntry)> {
        self.file.rcaps.iter()
    }
}

/// Parses and checks a table file's bytes.
pub fn parse_table_bytes(bytes: &[u8]) -> Result<(), String> {
    parse_table(bytes).map(|_| ())
}

fn parse_table(bytes: &[u8]) -> Result<TableFile, String> {
    let file: TableFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    for (key, entry) in &file.rcaps {
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{key:?} is not a SHA-256 fingerprint"));
        }
        entry.rspec.validate().map_err(|e| format!("{key}: {e}"))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(s: &str) -> SliceName {
        SliceName::new(s).unwrap()
    }

    #[test]
    fn rcaps_print_as_hex_and_parse_back_only_whole() {
        let r = Rcap::generate().unwrap();
        let text = r.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<Rcap>().unwrap(), r);
        assert!(text[..31].parse::<Rcap>().is_err());
        assert!(format!("{text}00").parse::<Rcap>().is_err());
        assert!("zz".repeat(16).parse::<Rcap>().is_err());
        assert!(!format!("{r:?}").contains(&text));
    }

    #[test]
    fn an_rcap_binds_once_and_a_new_one_releases_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rcaps.json");
        let mut t = RcapTable::load(&path).unwrap();
        let (a, b) = (Rcap::generate().unwrap(), Rcap::generate().unwrap());
        let now = Timestamp::now();
        t.insert(&a, Rspec::default(), Principal::Node, now);
        t.insert(&b, Rspec::default(), Principal::Node, now);
        t.bind(&a, &slice("pl_a")).unwrap();
        assert!(matches!(
            t.bind(&a, &slice("pl_b")),
            Err(RcapError::Bound(_))
        ));
        t.bind(&b, &slice("pl_a")).unwrap();
        assert!(matches!(t.unbound(&a), Err(RcapError::Unknown)));
        t.save().unwrap();
        let back = RcapTable::load(&path).unwrap();
        assert_eq!(back.entries().count(), 1);
        // The file names fingerprints, never the rcaps.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&b.to_string()));
        assert!(text.contains(&b.fingerprint()));
        let forged = Rcap::generate().unwrap();
        assert!(matches!(back.unbound(&forged), Err(RcapError::Unknown)));
    }

    #[test]
    fn unbound_rcaps_end_with_their_lease() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = RcapTable::load(&dir.path().join("rcaps.json")).unwrap();
        let now = Timestamp::now();
        let ended = Rspec {
            lease_end: Some(Timestamp::from_unix(now.unix() - 1)),
            ..Rspec::default()
        };
        t.insert(
            &Rcap::generate().unwrap(),
            ended.clone(),
            Principal::Node,
            now,
        );
        t.insert(
            &Rcap::generate().unwrap(),
            Rspec::default(),
            Principal::Node,
            now,
        );
        assert_eq!(t.expire(now), 1);
        assert_eq!(t.unbound_rspecs().count(), 1);
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(parse_table_bytes(br#"{"rcaps":{"xyz":{}}}"#).is_err());
        assert!(parse_table_bytes(b"[]").is_err());
        assert!(parse_table_bytes(br#"{"rcaps":{}}"#).is_ok());
    }
}
