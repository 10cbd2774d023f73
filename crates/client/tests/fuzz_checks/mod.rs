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
