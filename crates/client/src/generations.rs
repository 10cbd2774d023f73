//! Per-session generation high-water marks, kept OUTSIDE the encrypted database (in the
//! small file `generations` beside it), so that putting back an old copy of `store.db`
//! cannot roll them back: a session loaded from the database whose generation is lower than
//! its mark was restored from an old copy and is never sent on again
//! (`Session::from_bytes_at_least`); the client starts a fresh session instead.
//!
//! The mark is raised (and the file fsynced) *before* the database transaction that stores
//! the session commits, so a crash between the two can only make a session look stale
//! (costing a new PQXDH), never make a reused message key look fresh.
//!
//! If the file is missing while the database says it was created, every existing session is
//! treated as stale. See docs/ARCHITECTURE.md for why a file and not the server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{ClientError, Result};
use crate::store::key::write_atomic;

/// The file's name in the home directory.
pub(crate) const FILE: &str = "generations";
const MAGIC: &[u8; 4] = b"TGN1";
/// Bound on entries read back (a damaged file must not make us allocate without limit).
const MAX_ENTRIES: usize = 1_000_000;

/// The high-water marks, keyed by a session's PQXDH base key.
pub(crate) struct Generations {
    dir: PathBuf,
    marks: BTreeMap<[u8; 32], u64>,
    /// The file was expected but missing: every session not raised since is stale.
    lost: bool,
}

impl Generations {
    /// Loads the marks; `expected` says whether the store believes the file exists.
    pub(crate) fn load(dir: &Path, expected: bool) -> Result<Self> {
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self { dir: dir.to_owned(), marks: BTreeMap::new(), lost: expected });
            }
            Err(e) => return Err(e.into()),
        };
        let marks = decode(&bytes).ok_or(ClientError::Internal("generations file is damaged"))?;
        Ok(Self { dir: dir.to_owned(), marks, lost: false })
    }

    /// The generation a stored session must have at least (`u64::MAX` when the file was
    /// lost and this session was not written since: it cannot be trusted).
    pub(crate) fn expected(&self, base_key: &[u8; 32]) -> u64 {
        match self.marks.get(base_key) {
            Some(g) => *g,
            None if self.lost => u64::MAX,
            None => 0,
        }
    }

    /// Raises marks and writes the file durably if any grew.
    pub(crate) fn raise(&mut self, updates: &[([u8; 32], u64)]) -> Result<()> {
        let mut changed = false;
        for (k, g) in updates {
            match self.marks.get_mut(k) {
                Some(e) if *e >= *g => {}
                Some(e) => {
                    *e = *g;
                    changed = true;
                }
                None => {
                    self.marks.insert(*k, *g);
                    changed = true;
                }
            }
        }
        if changed || !self.dir.join(FILE).exists() {
            write_atomic(&self.dir, FILE, &encode(&self.marks), true)?;
        }
        Ok(())
    }

    /// Writes the file (also when empty), so its absence later means it was lost.
    pub(crate) fn ensure_file(&self) -> Result<()> {
        write_atomic(&self.dir, FILE, &encode(&self.marks), true)
    }
}

fn encode(marks: &BTreeMap<[u8; 32], u64>) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + marks.len() * 40);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&(marks.len() as u64).to_be_bytes());
    for (k, g) in marks {
        v.extend_from_slice(k);
        v.extend_from_slice(&g.to_be_bytes());
    }
    v
}

fn decode(bytes: &[u8]) -> Option<BTreeMap<[u8; 32], u64>> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let (n, mut rest) = rest.split_first_chunk::<8>()?;
    let n = usize::try_from(u64::from_be_bytes(*n)).ok()?;
    if n > MAX_ENTRIES {
        return None;
    }
    let mut marks = BTreeMap::new();
    for _ in 0..n {
        let (k, r) = rest.split_first_chunk::<32>()?;
        let (g, r) = r.split_first_chunk::<8>()?;
        marks.insert(*k, u64::from_be_bytes(*g));
        rest = r;
    }
    rest.is_empty().then_some(marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_only_grow_and_survive_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Generations::load(dir.path(), false).unwrap();
        assert_eq!(g.expected(&[1; 32]), 0);
        g.raise(&[([1; 32], 5), ([2; 32], 3)]).unwrap();
        g.raise(&[([1; 32], 4)]).unwrap();
        let g = Generations::load(dir.path(), true).unwrap();
        assert_eq!(g.expected(&[1; 32]), 5);
        assert_eq!(g.expected(&[2; 32]), 3);
        assert_eq!(g.expected(&[3; 32]), 0);
    }

    #[test]
    fn lost_file_makes_every_old_session_stale() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Generations::load(dir.path(), true).unwrap();
        assert_eq!(g.expected(&[1; 32]), u64::MAX);
        g.raise(&[([2; 32], 1)]).unwrap();
        assert_eq!(g.expected(&[2; 32]), 1);
        assert_eq!(g.expected(&[1; 32]), u64::MAX);
    }

    #[test]
    fn damaged_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"TGN1\0\0\0\0\0\0\0\x05abc").unwrap();
        assert!(Generations::load(dir.path(), true).is_err());
        assert!(decode(&encode(&BTreeMap::new())).unwrap().is_empty());
    }
}
