//! Per-session generation high-water marks, kept OUTSIDE the encrypted database (in the
//! small file `generations` beside it), so that putting back an old copy of `store.db`
//! cannot roll them back: a session loaded from the database whose generation is lower than
//! its mark was restored from an old copy and is never sent on again
//! (`Session::from_bytes_at_least`); the client starts a fresh session instead.
//!
//! The mark is raised (and the file fsynced) *before* the database transaction that stores
//! the session commits, so a crash between the two can only make a session look stale
//! (costing a new PQXDH), never make a reused message key look fresh. Every stored session
//! therefore has a mark, and a session without one ([`Generations::expected_session`]) is
//! stale: its mark was pruned with it (it came back with an old copy of the database) or the
//! file was lost.
//!
//! **The file is an append-only log** (`TGN2`): a raise appends one 48-byte record per mark
//! that grew (`base key || u64 generation || 8-byte check`) and fsyncs the file, so a message
//! costs the same however long the history is. A mark whose session was deleted is pruned
//! ([`Generations::forget`], a record with generation 0). Once the records outnumber twice the
//! live marks plus [`COMPACT_MIN`], the file is rewritten with only the live marks (a new file,
//! fsynced, renamed over the old one): each rewrite follows at least as many appends as it
//! writes records, so the cost per raise stays bounded (at most about two records). A crash
//! mid-append can leave a torn last append; its records were never fsynced, so the session
//! they guard was never stored, and they are dropped (the file is rewritten at the next
//! raise). A bad record anywhere else means the file is damaged.
//!
//! If the file is missing while the database says it was created, every existing session is
//! treated as stale. A damaged file is rebuilt with no marks (so every stored session is
//! stale) and the user is told. See docs/ARCHITECTURE.md for why a file and not the server.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;

use crate::error::{ClientError, Result};
use crate::store::key::write_atomic;

/// The file's name in the home directory.
pub(crate) const FILE: &str = "generations";
/// The first format: the whole map, rewritten on every raise (read, then converted).
const MAGIC_V1: &[u8; 4] = b"TGN1";
/// The append-only log.
const MAGIC: &[u8; 4] = b"TGN2";
/// One record: base key, generation (0: the mark was pruned), check.
const RECORD: usize = 32 + 8 + 8;
/// Most records one append writes; a larger raise appends (and fsyncs) in several parts,
/// so a torn append is at most this long.
const MAX_APPEND: usize = 256;
/// Records appended beyond twice the live marks before the file is compacted.
pub(crate) const COMPACT_MIN: usize = 1024;
/// Domain of the records' check.
const CHECK_LABEL: &[u8] = b"tacit generations v2 record";

/// The high-water marks, keyed by a session's PQXDH base key.
pub(crate) struct Generations {
    dir: PathBuf,
    marks: HashMap<[u8; 32], u64>,
    /// The file was expected but missing: every session not raised since is stale.
    lost: bool,
    /// The file was damaged and [`Self::load`] rebuilt it without marks.
    rebuilt: bool,
    /// The log, open for appending; `None` until the file is (re)written.
    file: Option<File>,
    /// Records in the file.
    records: usize,
    /// Whether appends are fsynced: always, except in tests that count bytes over tens of
    /// thousands of raises.
    sync: bool,
    /// Bytes written to the file or its replacements (for the cost test).
    #[cfg(test)]
    written: u64,
}

impl Generations {
    /// Loads the marks; `expected` says whether the store believes the file exists.
    pub(crate) fn load(dir: &Path, expected: bool) -> Result<Self> {
        let mut g = Self {
            dir: dir.to_owned(),
            marks: HashMap::new(),
            lost: false,
            rebuilt: false,
            file: None,
            records: 0,
            sync: true,
            #[cfg(test)]
            written: 0,
        };
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                g.lost = expected;
                return Ok(g);
            }
            Err(e) => return Err(ClientError::file(&path, &e)),
        };
        let decoded = match bytes.strip_prefix(MAGIC.as_slice()) {
            Some(rest) => {
                decode_log(rest).map(|(marks, clean)| (marks, clean.then_some(rest.len() / RECORD)))
            }
            None => decode_v1(&bytes).map(|marks| (marks, None)),
        };
        match decoded {
            Some((marks, records)) => {
                g.marks = marks;
                if let Some(records) = records {
                    // A clean log: appends continue it as it is.
                    g.records = records;
                    let log = std::fs::OpenOptions::new().append(true).open(&path);
                    g.file = Some(log.map_err(|e| ClientError::file(&path, &e))?);
                }
            }
            None => {
                // Damaged (not a torn last append): rebuilt with no marks, at once, so the
                // damage is reported once. A session without a mark is stale, so every stored
                // session is treated as possibly restored from an old copy: none is sent on
                // again, and the next message to each contact starts a new session. Safe
                // whatever the damage hid; it costs one PQXDH per conversation (issue 8,
                // point 11).
                g.lost = true;
                g.rebuilt = true;
                g.ensure_file()?;
            }
        }
        Ok(g)
    }

    /// Whether [`Self::load`] found the file damaged and rebuilt it (every session stale):
    /// the user should be told.
    pub(crate) fn was_rebuilt(&self) -> bool {
        self.rebuilt
    }

    /// The generation a stored object that is not a session must have at least: its mark, 0
    /// when it has none (`u64::MAX` when the file was lost and it was not written since: it
    /// cannot be trusted). Such marks are never pruned (only [`Self::forget`] prunes).
    #[cfg_attr(not(test), allow(dead_code))] // for marks of objects other than sessions
    pub(crate) fn expected(&self, key: &[u8; 32]) -> u64 {
        match self.marks.get(key) {
            Some(g) => *g,
            None if self.lost => u64::MAX,
            None => 0,
        }
    }

    /// The generation a stored *session* must have at least. A session's mark is written
    /// before the session is stored and pruned only after it is deleted, so a session without
    /// a mark came back with an old copy of the database (or the file was lost): `u64::MAX`,
    /// it is stale. Before saying so, the file is read again, in case another process on the
    /// same store appended the mark since this one loaded it.
    pub(crate) fn expected_session(&mut self, base_key: &[u8; 32]) -> u64 {
        if !self.marks.contains_key(base_key) {
            self.merge_from_disk();
        }
        self.marks.get(base_key).copied().unwrap_or(u64::MAX)
    }

    /// Takes in the marks other processes on the same store appended to the log (a mark only
    /// grows; a pruned one stays pruned unless raised here). Anything unreadable is ignored:
    /// it can only leave a mark missing, which makes a session stale, never fresh.
    fn merge_from_disk(&mut self) {
        let Ok(bytes) = std::fs::read(self.dir.join(FILE)) else { return };
        let Some((marks, _)) = bytes.strip_prefix(MAGIC.as_slice()).and_then(decode_log) else { return };
        for (k, g) in marks {
            let e = self.marks.entry(k).or_insert(0);
            *e = (*e).max(g);
        }
    }

    /// Raises marks and makes them durable (one append and fsync, or a rewrite) before it
    /// returns, if any grew.
    pub(crate) fn raise(&mut self, updates: &[([u8; 32], u64)]) -> Result<()> {
        let mut grown = Vec::new();
        for (k, g) in updates {
            // Generation 0 is no mark (and marks the pruned ones in the file).
            let current = self.marks.get(k).copied().unwrap_or(0);
            if *g > current {
                self.marks.insert(*k, *g);
                grown.push((*k, *g));
            }
        }
        if self.file.is_none() {
            return self.compact();
        }
        if grown.is_empty() {
            return Ok(());
        }
        if !self.log_is_current() {
            // Another process rewrote the file: appends to our handle would be lost.
            return self.compact();
        }
        for part in grown.chunks(MAX_APPEND) {
            self.append(part)?;
        }
        self.compact_if_due()
    }

    /// Prunes the marks of deleted sessions (call after the deletion committed), durably (a
    /// crash before this leaves the marks, which only cost their bytes).
    pub(crate) fn forget(&mut self, base_keys: &[[u8; 32]]) -> Result<()> {
        let gone: Vec<_> =
            base_keys.iter().filter(|k| self.marks.remove(*k).is_some()).map(|k| (*k, 0)).collect();
        if gone.is_empty() || self.file.is_none() {
            // Without an open log the next raise rewrites the file from the map.
            return Ok(());
        }
        if !self.log_is_current() {
            // Another process rewrote the file: take its marks, then rewrite without these.
            self.merge_from_disk();
            for (k, _) in &gone {
                self.marks.remove(k);
            }
            self.file = None;
            return self.compact();
        }
        for part in gone.chunks(MAX_APPEND) {
            self.append(part)?;
        }
        self.compact_if_due()
    }

    /// Writes the file (also when empty), so its absence later means it was lost. The next
    /// raise rewrites it once more and then appends.
    pub(crate) fn ensure_file(&self) -> Result<()> {
        write_atomic(&self.dir, FILE, &self.encode(), true)
    }

    /// How many marks are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.marks.len()
    }

    /// Bytes written so far.
    #[cfg(test)]
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Whether the open log is still the file at the path (another process on the same
    /// store may have rewritten it).
    fn log_is_current(&self) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let Some(f) = &self.file else { return false };
            match (f.metadata(), std::fs::metadata(self.dir.join(FILE))) {
                (Ok(open), Ok(path)) => open.ino() == path.ino() && open.dev() == path.dev(),
                _ => false,
            }
        }
        #[cfg(not(unix))]
        {
            self.file.is_some()
        }
    }

    /// Appends records and fsyncs them, so that only the last append can ever be torn.
    fn append(&mut self, records: &[([u8; 32], u64)]) -> Result<()> {
        let sync = self.sync;
        let Some(f) = self.file.as_mut() else { return Err(ClientError::Internal("generations log")) };
        let mut buf = Vec::with_capacity(records.len() * RECORD);
        for (k, g) in records {
            put_record(&mut buf, k, *g);
        }
        let result = f.write_all(&buf).and_then(|()| if sync { f.sync_data() } else { Ok(()) });
        if let Err(e) = result {
            // The file may end in a partial record now: rewrite it before appending again.
            self.file = None;
            return Err(e.into());
        }
        self.records = self.records.saturating_add(records.len());
        #[cfg(test)]
        {
            self.written += buf.len() as u64;
        }
        Ok(())
    }

    fn compact_if_due(&mut self) -> Result<()> {
        if self.records > self.marks.len().saturating_mul(2).saturating_add(COMPACT_MIN) {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with the live marks only (new file, fsync, rename, fsync the
    /// folder): a crash leaves the old log or the new one, both with every live mark.
    fn compact(&mut self) -> Result<()> {
        if self.file.is_some() {
            // Another process may have appended to this log: keep its marks.
            self.merge_from_disk();
        }
        self.file = None;
        let buf = self.encode();
        write_atomic(&self.dir, FILE, &buf, true)?;
        #[cfg(test)]
        {
            self.written += buf.len() as u64;
        }
        self.records = self.marks.len();
        self.file = Some(std::fs::OpenOptions::new().append(true).open(self.dir.join(FILE))?);
        Ok(())
    }
}

impl Generations {
    /// The whole file for the live marks.
    fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(MAGIC.len() + self.marks.len() * RECORD);
        buf.extend_from_slice(MAGIC);
        for (k, g) in &self.marks {
            put_record(&mut buf, k, *g);
        }
        buf
    }
}

fn check(key: &[u8; 32], generation: u64) -> [u8; 8] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(CHECK_LABEL);
    ctx.update(key);
    ctx.update(&generation.to_be_bytes());
    ctx.finish().as_ref().first_chunk::<8>().copied().unwrap_or([0; 8])
}

fn put_record(buf: &mut Vec<u8>, key: &[u8; 32], generation: u64) {
    buf.extend_from_slice(key);
    buf.extend_from_slice(&generation.to_be_bytes());
    buf.extend_from_slice(&check(key, generation));
}

/// Replays the log's records. `None`: damaged. The flag says whether the log ended cleanly
/// (else a torn last append was dropped, and the file must be rewritten before appending).
fn decode_log(mut rest: &[u8]) -> Option<(HashMap<[u8; 32], u64>, bool)> {
    let mut marks = HashMap::new();
    while !rest.is_empty() {
        let record = rest.split_first_chunk::<RECORD>().and_then(|(r, tail)| {
            let (k, r) = r.split_first_chunk::<32>()?;
            let (g, c) = r.split_first_chunk::<8>()?;
            let g = u64::from_be_bytes(*g);
            (c == check(k, g)).then_some((*k, g, tail))
        });
        match record {
            Some((k, 0, tail)) => {
                marks.remove(&k);
                rest = tail;
            }
            Some((k, g, tail)) => {
                let e = marks.entry(k).or_insert(0);
                *e = (*e).max(g);
                rest = tail;
            }
            // Only the last append can be torn (it was not fsynced, so nothing relies on it).
            None if rest.len() <= MAX_APPEND * RECORD => return Some((marks, false)),
            None => return None,
        }
    }
    Some((marks, true))
}

/// The first format: `TGN1 || u64 n || n × (base key || u64 generation)`.
fn decode_v1(bytes: &[u8]) -> Option<HashMap<[u8; 32], u64>> {
    let rest = bytes.strip_prefix(MAGIC_V1.as_slice())?;
    let (n, mut rest) = rest.split_first_chunk::<8>()?;
    // The count must match the length, so nothing is allocated beyond the file's size.
    if usize::try_from(u64::from_be_bytes(*n)).ok()?.checked_mul(40)? != rest.len() {
        return None;
    }
    let mut marks = HashMap::new();
    while let Some((k, r)) = rest.split_first_chunk::<32>() {
        let (g, r) = r.split_first_chunk::<8>()?;
        marks.insert(*k, u64::from_be_bytes(*g));
        rest = r;
    }
    Some(marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&i.to_be_bytes());
        k[31] = 1;
        k
    }

    fn file_len(dir: &Path) -> usize {
        std::fs::metadata(dir.join(FILE)).unwrap().len() as usize
    }

    #[test]
    fn marks_only_grow_and_survive_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Generations::load(dir.path(), false).unwrap();
        assert_eq!(g.expected(&[1; 32]), 0);
        g.raise(&[([1; 32], 5), ([2; 32], 3)]).unwrap();
        g.raise(&[([1; 32], 4)]).unwrap();
        g.raise(&[([2; 32], 7)]).unwrap();
        let mut g = Generations::load(dir.path(), true).unwrap();
        assert_eq!(g.expected(&[1; 32]), 5);
        assert_eq!(g.expected(&[2; 32]), 7);
        assert_eq!(g.expected(&[3; 32]), 0);
        assert_eq!(g.expected_session(&[3; 32]), u64::MAX, "a session without a mark is stale");
    }

    #[test]
    fn lost_file_makes_every_old_session_stale() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Generations::load(dir.path(), true).unwrap();
        assert_eq!(g.expected(&[1; 32]), u64::MAX);
        g.raise(&[([2; 32], 1)]).unwrap();
        assert_eq!(g.expected(&[2; 32]), 1);
        assert_eq!(g.expected(&[1; 32]), u64::MAX);
        assert_eq!(g.expected_session(&[1; 32]), u64::MAX);
    }

    #[test]
    fn a_damaged_file_is_rebuilt_without_marks_but_a_torn_last_append_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"TGN1\0\0\0\0\0\0\0\x05abc").unwrap();
        assert_rebuilt(dir.path(), &[]);
        std::fs::remove_file(dir.path().join(FILE)).unwrap();

        // A log of 2,000 records, then a torn append (half a record).
        let mut g = Generations::load(dir.path(), false).unwrap();
        g.sync = false;
        g.ensure_file().unwrap();
        for i in 0..2000 {
            g.raise(&[(key(i), 1)]).unwrap();
        }
        drop(g);
        let mut bytes = std::fs::read(dir.path().join(FILE)).unwrap();
        let intact = bytes.clone();
        bytes.extend_from_slice(&intact[4..4 + RECORD / 2]);
        std::fs::write(dir.path().join(FILE), &bytes).unwrap();
        let mut g = Generations::load(dir.path(), true).unwrap();
        assert_eq!((g.len(), g.expected(&key(1999))), (2000, 1));
        // The next raise rewrites the file, so the log is clean again.
        g.raise(&[(key(5), 2)]).unwrap();
        drop(g);
        let g = Generations::load(dir.path(), true).unwrap();
        assert_eq!((g.len(), g.expected(&key(5))), (2000, 2));

        // A flipped bit far from the end is damage, not a torn append.
        let mut bytes = intact;
        bytes[4 + 40] ^= 1;
        std::fs::write(dir.path().join(FILE), &bytes).unwrap();
        assert_rebuilt(dir.path(), &[key(0), key(1999)]);
    }

    /// Loading a damaged file rebuilds it with no mark: every session (`sessions`) is stale,
    /// the rebuilt file loads cleanly, and a raise after it is kept.
    fn assert_rebuilt(dir: &Path, sessions: &[[u8; 32]]) {
        let mut g = Generations::load(dir, true).unwrap();
        assert!(g.was_rebuilt());
        for s in sessions {
            assert_eq!(g.expected_session(s), u64::MAX, "every stored session is stale");
        }
        let mut again = Generations::load(dir, true).unwrap();
        assert!(!again.was_rebuilt(), "rebuilt once, then a clean file");
        assert_eq!(again.len(), 0);
        for s in sessions {
            assert_eq!(again.expected_session(s), u64::MAX, "and still stale after a reload");
        }
        g.raise(&[(key(7), 3)]).unwrap();
        assert_eq!(Generations::load(dir, true).unwrap().expected(&key(7)), 3);
    }

    #[test]
    fn the_first_format_is_read_and_converted() {
        let dir = tempfile::tempdir().unwrap();
        let mut v1 = b"TGN1".to_vec();
        v1.extend_from_slice(&2u64.to_be_bytes());
        for (k, g) in [([1u8; 32], 9u64), ([2; 32], 4)] {
            v1.extend_from_slice(&k);
            v1.extend_from_slice(&g.to_be_bytes());
        }
        std::fs::write(dir.path().join(FILE), &v1).unwrap();
        let mut g = Generations::load(dir.path(), true).unwrap();
        assert_eq!((g.expected(&[1; 32]), g.expected(&[2; 32])), (9, 4));
        g.raise(&[([3; 32], 1)]).unwrap();
        assert!(std::fs::read(dir.path().join(FILE)).unwrap().starts_with(MAGIC));
        let g = Generations::load(dir.path(), true).unwrap();
        assert_eq!((g.expected(&[1; 32]), g.expected(&[2; 32]), g.expected(&[3; 32])), (9, 4, 1));
    }

    /// Two clients on one store (say `receive --wait` and `send`): a mark one appends is seen
    /// by the other, so a session the other stored is not taken for a restored one, and a
    /// rewrite keeps it.
    #[test]
    fn marks_appended_by_another_process_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Generations::load(dir.path(), false).unwrap();
        a.raise(&[([1; 32], 1)]).unwrap();
        let mut b = Generations::load(dir.path(), true).unwrap();
        b.raise(&[([2; 32], 3)]).unwrap();
        assert_eq!(a.expected_session(&[2; 32]), 3);
        assert_eq!(a.expected_session(&[9; 32]), u64::MAX);
        b.raise(&[([4; 32], 1)]).unwrap();
        a.compact().unwrap();
        let g = Generations::load(dir.path(), true).unwrap();
        assert_eq!((g.expected(&[1; 32]), g.expected(&[2; 32]), g.expected(&[4; 32])), (1, 3, 1));
        // b's handle is the replaced file now: its next raise must reach the new one, and so
        // must a pruning.
        b.raise(&[([5; 32], 2)]).unwrap();
        let g = Generations::load(dir.path(), true).unwrap();
        assert_eq!((g.expected(&[1; 32]), g.expected(&[5; 32])), (1, 2));
        a.compact().unwrap();
        b.forget(&[[2; 32]]).unwrap();
        let g = Generations::load(dir.path(), true).unwrap();
        assert_eq!((g.expected(&[1; 32]), g.expected(&[2; 32]), g.expected(&[5; 32])), (1, 0, 2));
    }

    /// Pruned marks stay pruned after a reload, and the file shrinks back to the live marks.
    #[test]
    fn forgotten_marks_are_pruned_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Generations::load(dir.path(), false).unwrap();
        g.sync = false;
        g.ensure_file().unwrap();
        // 20,000 sessions, each raised a few times and then deleted, 5 alive at any time.
        for i in 0..20_000u64 {
            g.raise(&[(key(i), 1)]).unwrap();
            g.raise(&[(key(i), 2)]).unwrap();
            if i >= 5 {
                g.forget(&[key(i - 5)]).unwrap();
            }
            assert!(file_len(dir.path()) <= 4 + (2 * 5 + COMPACT_MIN + 2) * RECORD);
        }
        assert_eq!(g.len(), 5);
        drop(g);
        let mut g = Generations::load(dir.path(), true).unwrap();
        assert_eq!(g.len(), 5);
        assert_eq!(g.expected_session(&key(19_999)), 2);
        assert_eq!(g.expected_session(&key(0)), u64::MAX, "pruned: a restored copy of it is stale");
    }

    /// A raise writes the same few bytes whether the history holds ten marks or tens of
    /// thousands (the first format rewrote every mark on every raise: 40 bytes per mark).
    #[test]
    fn bytes_written_per_raise_do_not_grow_with_history() {
        let mut per_raise = Vec::new();
        for history in [10u64, 1_000, 20_000] {
            let dir = tempfile::tempdir().unwrap();
            let mut g = Generations::load(dir.path(), false).unwrap();
            g.sync = false;
            g.ensure_file().unwrap();
            for i in 0..history {
                g.raise(&[(key(i), 1)]).unwrap();
            }
            // Messages on those sessions, enough for the file to be rewritten a few times.
            let raises = 3 * (history + COMPACT_MIN as u64);
            let before = g.written();
            for i in 0..raises {
                g.raise(&[(key(i % history), 2 + i / history)]).unwrap();
            }
            per_raise.push((g.written() - before) / raises);
            assert!(file_len(dir.path()) <= 4 + (2 * history as usize + COMPACT_MIN + 1) * RECORD);
        }
        eprintln!("bytes written per raise with 10, 1,000 and 20,000 marks: {per_raise:?}");
        // One record per raise, plus at most about one more for the amortised rewrites.
        assert!(per_raise.iter().all(|b| *b <= 2 * RECORD as u64 + 8), "{per_raise:?}");
        let dir = tempfile::tempdir().unwrap();
        let mut g = Generations::load(dir.path(), false).unwrap();
        g.raise(&[(key(3), 1)]).unwrap();
        // Unchanged marks cost nothing.
        let before = g.written();
        g.raise(&[(key(3), 1)]).unwrap();
        assert_eq!(g.written(), before);
    }
}
