//! The prekey set's generation high-water mark, kept OUTSIDE the encrypted database (in the
//! small file `prekeys_generation` beside it), as [`crate::generations`] does for sessions:
//! putting back an old copy of `store.db` alone would otherwise bring back one-time private
//! keys already used and an old replay memory, so the same initial message could be
//! accepted twice. A prekey set loaded from the database below its mark is refused
//! (`DevicePrekeys::from_bytes_at_least`) and reset (`reset_after_rollback`).
//!
//! The mark is raised (and the file fsynced) *before* the database transaction that stores
//! the prekeys commits, so a crash between the two can only make the stored set look rolled
//! back (costing a reset and a new upload), never make used keys look fresh. If the file is
//! missing while the database says it was written, or damaged, the set is treated as rolled
//! back.

use std::path::{Path, PathBuf};

use crate::error::{ClientError, Result};
use crate::store::key::{remove_if_exists, write_atomic};

/// The file's name in the home directory.
pub(crate) const FILE: &str = "prekeys_generation";
const MAGIC: &[u8; 4] = b"TPG1";

/// The prekey set's high-water mark.
pub(crate) struct PrekeyMark {
    dir: PathBuf,
    mark: u64,
    /// The file was expected but missing: the stored set cannot be trusted.
    lost: bool,
    /// The file was damaged (and is treated as lost).
    damaged: bool,
}

impl PrekeyMark {
    /// Loads the mark; `expected` says whether the store believes the file exists.
    pub(crate) fn load(dir: &Path, expected: bool) -> Result<Self> {
        let path = dir.join(FILE);
        let lost = |damaged| Self { dir: dir.to_owned(), mark: 0, lost: expected || damaged, damaged };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(lost(false)),
            Err(e) => return Err(ClientError::file(&path, &e)),
        };
        match decode(&bytes) {
            Some(mark) => Ok(Self { dir: dir.to_owned(), mark, lost: false, damaged: false }),
            None => {
                // Damaged: treated as lost (the stored set is not trusted, so it is reset and
                // a new one uploaded at the next prekey maintenance). The file is removed, so
                // the next process finds it missing, which the store says it should not be,
                // until the reset writes it again (issue 8, point 11).
                remove_if_exists(&path)?;
                Ok(lost(true))
            }
        }
    }

    /// Whether [`Self::load`] found the file damaged (and treated it as lost): the user should
    /// be told.
    pub(crate) fn was_damaged(&self) -> bool {
        self.damaged
    }

    /// Reads the mark again (another process on the same home may have raised it): the
    /// larger of the two, so a mark never falls. A file gone since it was loaded keeps the
    /// mark held here (the next raise writes it back).
    pub(crate) fn reload(&mut self) -> Result<()> {
        match std::fs::read(self.dir.join(FILE)) {
            Ok(bytes) => {
                let mark =
                    decode(&bytes).ok_or(ClientError::Internal("prekeys_generation file is damaged"))?;
                if !self.lost {
                    self.mark = self.mark.max(mark);
                } else {
                    // Lost at load, written since by another process: that write is the mark.
                    self.mark = mark;
                    self.lost = false;
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the file exists on disk.
    pub(crate) fn exists(&self) -> bool {
        self.dir.join(FILE).exists()
    }

    /// The generation the stored prekey set must have at least (`u64::MAX` when the file
    /// was lost and not written since: no stored set can be trusted).
    pub(crate) fn expected(&self) -> u64 {
        if self.lost { u64::MAX } else { self.mark }
    }

    /// Records that a set of generation `g` is about to be stored, durably, before the
    /// database commits it. Writes only when the mark grows (or the file is missing).
    pub(crate) fn raise(&mut self, g: u64) -> Result<()> {
        if g > self.mark || self.lost || !self.exists() {
            let mark = if self.lost { g } else { self.mark.max(g) };
            write_atomic(&self.dir, FILE, &encode(mark), true)?;
            self.mark = mark;
            self.lost = false;
        }
        Ok(())
    }
}

fn encode(mark: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&mark.to_be_bytes());
    v
}

fn decode(bytes: &[u8]) -> Option<u64> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let g: [u8; 8] = rest.try_into().ok()?;
    Some(u64::from_be_bytes(g))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_only_grows_survives_reload_and_a_lost_file_trusts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = PrekeyMark::load(dir.path(), false).unwrap();
        assert_eq!(m.expected(), 0);
        m.raise(5).unwrap();
        m.raise(3).unwrap();
        assert_eq!(PrekeyMark::load(dir.path(), true).unwrap().expected(), 5);
        std::fs::remove_file(dir.path().join(FILE)).unwrap();
        let mut m = PrekeyMark::load(dir.path(), true).unwrap();
        assert_eq!(m.expected(), u64::MAX);
        m.raise(2).unwrap();
        assert_eq!(PrekeyMark::load(dir.path(), true).unwrap().expected(), 2);
        // A damaged file is treated as lost (and removed, so the next load finds it missing).
        std::fs::write(dir.path().join(FILE), b"TPG1\0\0").unwrap();
        let m = PrekeyMark::load(dir.path(), true).unwrap();
        assert!(m.was_damaged());
        assert_eq!(m.expected(), u64::MAX);
        assert!(!dir.path().join(FILE).exists());
        assert_eq!(PrekeyMark::load(dir.path(), true).unwrap().expected(), u64::MAX);
    }
}
