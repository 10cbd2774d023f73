//! The property the fuzz target `payload_decode` checks, shared by the target in `fuzz/`
//! (which includes this file with `#[path]`) and by `tests/fuzz_corpus.rs` (which replays the
//! committed corpus through it under `cargo test`).
//!
//! `check_payload_decode` must return normally for every input: a panic, a hang, a huge
//! allocation or a failed assertion is a bug in `src/payload.rs` (which depends on nothing
//! else of the client, so it is included here as it is). A refusal is a normal outcome.

#![allow(
    dead_code, // the decoder's file carries the encoders too
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../src/payload.rs"]
pub mod payload;

use payload::Payload;

/// `Payload::decode`: anything decoded re-encodes, and decodes again to the same payload;
/// a version 2 payload re-encodes to the identical bytes (version 1 texts too; a version 1
/// session reset re-encodes as version 2).
pub fn check_payload_decode(data: &[u8]) {
    let Ok(p) = Payload::decode(data) else { return };
    let bytes = p.encode().expect("a decoded payload encodes");
    assert_eq!(Payload::decode(&bytes), Ok(p.clone()), "stable");
    let v1_reset = matches!(p, Payload::SessionReset { .. }) && data.first() == Some(&1);
    if !v1_reset {
        assert_eq!(bytes, data, "canonical");
    }
}

#[path = "../../src/audit/listing.rs"]
pub mod listing;

/// `parse_listing` (a bucket listing from any URL, `tacit audit --log-dir URL`): never panics
/// on any bytes; no more keys than `<Key>` elements; a continuation token only from a page
/// that says it is truncated; a percent-encoded token is plain ASCII.
pub fn check_bucket_listing(data: &[u8]) {
    let xml = String::from_utf8_lossy(data);
    let (keys, next) = listing::parse_listing(&xml);
    assert!(keys.len() <= xml.matches("<Key>").count(), "more keys than elements");
    if let Some(t) = next {
        assert!(xml.contains("<IsTruncated>"), "a token from a page that is not truncated");
        let enc = listing::percent_encode(&t);
        assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)), "{enc}");
    }
}
