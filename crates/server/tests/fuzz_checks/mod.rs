//! The check of the fuzz target `kt_record` (`fuzz/fuzz_targets/kt_record.rs`), shared with
//! the corpus replay (`tests/fuzz_corpus.rs`): the server's key transparency record
//! decoder (`src/kt/records.rs`, which both include as the crate-root module `records`)
//! on bytes read from its own database, which a full disk, a bad restore or a hostile
//! database administrator may have changed.
//!
//! Input: a first byte choosing the record id (even: the 37 bytes that follow, as a tree
//! node's id; odd: the azks record's id), then the stored bytes. A corrupt record is an
//! error, never a panic; a tree node in the current compact form decodes to the record
//! whose id it was read under and is the one encoding of it (re-encoded: the same bytes);
//! anything that decodes re-encodes to bytes that decode to the same record.

use akd::storage::types::DbRecord;

use crate::records::{AZKS_ID, decode, encode};

/// The current compact form's tag (`records::NODE_COMPACT2`).
const NODE_COMPACT2: u8 = 4;

/// Runs the check on one input; returns whether it decoded to a record.
pub fn check_kt_record(input: &[u8]) -> bool {
    let Some((&choice, rest)) = input.split_first() else { return false };
    let (id, data) = if choice % 2 == 0 {
        if rest.len() < 37 {
            return false;
        }
        rest.split_at(37)
    } else {
        (AZKS_ID.as_slice(), rest)
    };
    let Ok(record) = decode(id, data) else { return false };
    let again = encode(&record).expect("a decoded azks or tree node encodes");
    assert_eq!(decode(id, &again).ok().as_ref(), Some(&record), "a re-encoded record decodes to itself");
    if data.first() == Some(&NODE_COMPACT2) {
        assert_eq!(again, data, "a compact record is the one encoding of what it decodes to");
        assert_eq!(record.get_full_binary_id(), id, "a compact record is the record of its id");
    }
    if let DbRecord::Azks(_) = record {
        assert_eq!(id, AZKS_ID.as_slice());
    }
    true
}
