//! The checks of the fuzz targets `kt_record` and `mls_frame`.
//!
//! `kt_record`: the check of the fuzz target `kt_record` (`fuzz/fuzz_targets/kt_record.rs`), shared with
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

/// The check of the fuzz target `mls_frame` (`fuzz/fuzz_targets/mls_frame.rs`): the relay's
/// reader of an MLS `PrivateMessage` header (`src/mls_frame.rs`, included as the crate-root
/// module `mls_frame`) on bytes any client may post. Never a panic; a header that parses
/// is the one encoding of what it says (RFC 9420 section 2.1.2's shortest lengths): the
/// input begins with that header re-encoded. Returns whether it parsed.
pub fn check_mls_frame(input: &[u8]) -> bool {
    let Ok(h) = crate::mls_frame::private_header(input) else { return false };
    let mut again = vec![0, 1, 0, 2];
    let n = h.group_id.len();
    match n {
        0..=63 => again.push(n as u8),
        64..=16_383 => again.extend_from_slice(&(0x4000 | n as u16).to_be_bytes()),
        _ => again.extend_from_slice(&(0x8000_0000 | n as u32).to_be_bytes()),
    }
    again.extend_from_slice(h.group_id);
    again.extend_from_slice(&h.epoch.to_be_bytes());
    again.push(match h.content_type {
        crate::mls_frame::ContentType::Application => 1,
        crate::mls_frame::ContentType::Proposal => 2,
        crate::mls_frame::ContentType::Commit => 3,
    });
    assert!(input.starts_with(&again), "a parsed header is the one encoding of its fields");
    true
}
