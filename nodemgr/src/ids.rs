//! Host id ranges: each sliver owns a disjoint block of 65,536 user and
//! group ids. Root inside a sliver is the block's first id outside, an
//! unprivileged id that owns nothing else on the node.
//!
//! The table is one JSON file in the state directory, replaced atomically
//! on every change (`floor::durable`), so a range is never handed out twice,
//! crashes included.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::name::SliceName;

/// Ids in one sliver's range.
pub const RANGE_SIZE: u32 = 65_536;
/// First host id of range 0: above every id a node gives its own users.
pub const DEFAULT_FIRST_ID: u32 = 1 << 20;
/// Project ids for disk quotas are `PROJECT_BASE + range index`.
pub const PROJECT_BASE: u32 = 100_000;

/// One sliver's block of host ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// Index in the table (also names the disk-quota project).
    pub index: u32,
    /// First host id: root (uid 0, gid 0) inside the sliver.
    pub first: u32,
}

impl IdRange {
    /// The host id of `inner` (an id inside the sliver).
    pub fn host_id(&self, inner: u32) -> u32 {
        self.first + inner
    }

    /// The ext4 project id of the sliver's writable layer.
    pub fn project_id(&self) -> u32 {
        PROJECT_BASE + self.index
    }

    /// The `uid_map`/`gid_map` line: `0 <first> 65536`.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.first, RANGE_SIZE)
    }
}

/// What went wrong with the id table.
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    /// Reading or writing the table file.
    #[error(transparent)]
    File(#[from] floor::durable::DurableError),
    /// The file is not a valid table.
    #[error("{}: not a valid id table: {reason}", path.display())]
    Corrupt {
        /// The table file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Every range is taken.
    #[error("all {0} id ranges are in use")]
    Full(u32),
    /// The slice already holds a range.
    #[error("slice {0} already holds an id range")]
    Taken(SliceName),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    first_id: u32,
    /// Range index → slice.
    ranges: BTreeMap<u32, SliceName>,
}

/// The allocation table, as read from its file.
#[derive(Debug, Clone)]
pub struct IdTable {
    path: PathBuf,
    capacity: u32,
    file: TableFile,
}

impl IdTable {
    /// Reads the table at `path` (empty when the file does not exist yet).
    /// `capacity` bounds the number of ranges; a table written with another
    /// `first_id` is refused (ids would move under running slivers).
    pub fn load(path: &Path, first_id: u32, capacity: u32) -> Result<IdTable, IdError> {
        let corrupt = |reason: String| IdError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let file = match floor::durable::read_if_exists(path)? {
            None => TableFile {
                first_id,
                ranges: BTreeMap::new(),
            },
            Some(bytes) => {
                let file = parse_table(&bytes).map_err(corrupt)?;
                if file.first_id != first_id {
                    return Err(corrupt(format!(
                        "written for first id {}, configured {first_id}",
                        file.first_id
                    )));
                }
                file
            }
        };
        Ok(IdTable {
            path: path.to_path_buf(),
            capacity,
            file,
        })
    }

    /// The range of `slice`, if it holds one.
    pub fn get(&self, slice: &SliceName) -> Option<IdRange> {
        self.file
            .ranges
            .iter()
            .find(|(_, s)| *s == slice)
            .map(|(&index, _)| self.range(index))
    }

    /// Every allocated range.
    pub fn iter(&self) -> impl Iterator<Item = (&SliceName, IdRange)> + '_ {
        self.file
            .ranges
            .iter()
            .map(|(&index, s)| (s, self.range(index)))
    }

    fn range(&self, index: u32) -> IdRange {
        IdRange {
            index,
            first: self.file.first_id + index * RANGE_SIZE,
        }
    }

    /// Gives `slice` the lowest free range and writes the table.
    pub fn allocate(&mut self, slice: &SliceName) -> Result<IdRange, IdError> {
        let range = self.reserve(slice)?;
        if let Err(e) = self.save() {
            self.unreserve(slice);
            return Err(e);
        }
        Ok(range)
    }

    /// Gives `slice` the lowest free range in memory only; [`Self::save`]
    /// makes it durable.
    pub fn reserve(&mut self, slice: &SliceName) -> Result<IdRange, IdError> {
        if self.get(slice).is_some() {
            return Err(IdError::Taken(slice.clone()));
        }
        let index = (0..self.capacity)
            .find(|i| !self.file.ranges.contains_key(i))
            .ok_or(IdError::Full(self.capacity))?;
        self.file.ranges.insert(index, slice.clone());
        Ok(self.range(index))
    }

    /// Forgets `slice`'s range in memory only; whether it held one.
    pub fn unreserve(&mut self, slice: &SliceName) -> bool {
        match self.get(slice) {
            Some(range) => self.file.ranges.remove(&range.index).is_some(),
            None => false,
        }
    }

    /// Records that `slice` holds `range` (a state file says so, the table
    /// lost it in a crash), in memory only. Fails when the range is another
    /// slice's or not one of this table's.
    pub fn adopt(&mut self, slice: &SliceName, range: IdRange) -> Result<(), IdError> {
        let expected = self.range(range.index);
        if range.index >= self.capacity || expected != range {
            return Err(IdError::Corrupt {
                path: self.path.clone(),
                reason: format!(
                    "slice {slice}'s state names range {range:?}, which this table cannot hold"
                ),
            });
        }
        match self.file.ranges.get(&range.index) {
            Some(owner) if owner != slice => Err(IdError::Corrupt {
                path: self.path.clone(),
                reason: format!(
                    "range {} belongs to {owner}, but {slice}'s state names it",
                    range.index
                ),
            }),
            _ => {
                self.unreserve(slice);
                self.file.ranges.insert(range.index, slice.clone());
                Ok(())
            }
        }
    }

    /// Returns `slice`'s range to the pool and writes the table; whether
    /// it held one.
    pub fn release(&mut self, slice: &SliceName) -> Result<bool, IdError> {
        let Some(range) = self.get(slice) else {
            return Ok(false);
        };
        self.file.ranges.remove(&range.index);
        if let Err(e) = self.save() {
            self.file.ranges.insert(range.index, slice.clone());
            return Err(e);
        }
        Ok(true)
    }

    /// Writes the table (atomically, durably).
    pub fn save(&self) -> Result<(), IdError> {
        let json = serde_json::to_vec_pretty(&self.file).map_err(|e| IdError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        floor::durable::write_atomic(&self.path, &json)?;
        Ok(())
    }
}

/// Parses a table file, checking that no range is given twice and that
/// every id fits into 32 bits.
fn parse_table(bytes: &[u8]) -> Result<TableFile, String> {
    let file: TableFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut seen = std::collections::BTreeSet::new();
    for (&index, slice) in &file.ranges {
        if !seen.insert(slice) {
            return Err(format!("slice {slice} holds two ranges"));
        }
        let last = u64::from(file.first_id) + (u64::from(index) + 1) * u64::from(RANGE_SIZE);
        if last > u64::from(u32::MAX) {
            return Err(format!("range {index} ends beyond the largest id"));
        }
    }
    Ok(file)
}

/// Checks the bytes of an id table file the way [`IdTable::load`] does
/// (for fuzzing).
pub fn check_table_bytes(bytes: &[u8]) -> Result<usize, String> {
    parse_table(bytes).map(|f| f.ranges.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> SliceName {
        SliceName::new(s).unwrap()
    }

    #[test]
    fn ranges_are_disjoint_persisted_and_reused_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.json");
        let mut t = IdTable::load(&path, DEFAULT_FIRST_ID, 10).unwrap();
        let a = t.allocate(&name("a")).unwrap();
        let b = t.allocate(&name("b")).unwrap();
        assert_eq!(a.first, DEFAULT_FIRST_ID);
        assert_eq!(b.first, DEFAULT_FIRST_ID + RANGE_SIZE);
        assert_ne!(a.project_id(), b.project_id());
        assert!(matches!(t.allocate(&name("a")), Err(IdError::Taken(_))));

        let mut again = IdTable::load(&path, DEFAULT_FIRST_ID, 10).unwrap();
        assert_eq!(again.get(&name("b")), Some(b));
        assert!(again.release(&name("a")).unwrap());
        assert!(!again.release(&name("a")).unwrap());
        assert_eq!(again.allocate(&name("c")).unwrap(), a);
    }

    #[test]
    fn a_full_table_refuses_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.json");
        let mut t = IdTable::load(&path, DEFAULT_FIRST_ID, 1).unwrap();
        t.allocate(&name("a")).unwrap();
        assert!(matches!(t.allocate(&name("b")), Err(IdError::Full(1))));
        assert!(IdTable::load(&path, 5, 1).is_err());
        std::fs::write(&path, br#"{"first_id":0,"ranges":{"0":"a","1":"a"}}"#).unwrap();
        let e = IdTable::load(&path, 0, 4).unwrap_err().to_string();
        assert!(e.contains("two ranges") && e.contains("ids.json"), "{e}");
        std::fs::write(&path, br#"{"first_id":0,"ranges":{"0":"../x"}}"#).unwrap();
        assert!(IdTable::load(&path, 0, 4).is_err());
        std::fs::write(&path, br#"{"first_id":4294901760,"ranges":{"1":"a"}}"#).unwrap();
        assert!(IdTable::load(&path, 4294901760, 4).is_err());
    }
}
