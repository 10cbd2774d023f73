//! The check the fuzz target `kt_decode` runs (and `tests/fuzz_corpus.rs` replays): the
//! first byte picks a decoder, the rest is its input. Nothing may panic; an entry that
//! decodes must encode back to exactly its bytes; a proof is checked against the fixture's
//! root (`fuzz/fixtures/kt_root.bin`: u64 epoch || root[32], made with akd's in-memory
//! directory and its hard-coded VRF key by `generate_corpus`). Returns 1 when a proof
//! verified.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use tacit_protocol::AccountName;
use tacit_transparency::{AccountEntry, EpochRoot, SignedRoot, verify_history, verify_lookup};

/// akd's hard-coded test VRF key (`HardCodedAkdVRF`), private half.
pub const VRF_SECRET_HEX: &str = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721";

/// The account the fixture's proofs are for.
pub const NAME: &str = "alice";

pub fn vrf_public() -> [u8; 32] {
    let secret: Vec<u8> =
        (0..32).map(|i| u8::from_str_radix(&VRF_SECRET_HEX[2 * i..2 * i + 2], 16).unwrap()).collect();
    let key = akd_core::ecvrf::VRFPrivateKey::try_from(secret.as_slice()).unwrap();
    akd_core::ecvrf::VRFPublicKey::from(&key).to_bytes()
}

/// The fixture root as a signed root (the signature is not what these checks are about).
pub fn fixture_root(fixture: &[u8]) -> SignedRoot {
    SignedRoot {
        root: EpochRoot {
            namespace: "fuzz".into(),
            timestamp_ms: 0,
            epoch: u64::from_be_bytes(fixture[..8].try_into().unwrap()),
            root: fixture[8..40].try_into().unwrap(),
        },
        signature: [0; 64],
    }
}

pub fn check_kt_decode_with(fixture: &[u8], data: &[u8]) -> usize {
    let Some((&selector, rest)) = data.split_first() else { return 0 };
    let name = AccountName::new(NAME).unwrap();
    match selector % 3 {
        0 => {
            if let Ok(entry) = AccountEntry::from_bytes(rest) {
                assert_eq!(entry.to_bytes(), rest, "an entry encodes back to its bytes");
            }
            0
        }
        1 => usize::from(verify_lookup(&vrf_public(), &fixture_root(fixture), &name, rest).is_ok()),
        _ => usize::from(verify_history(&vrf_public(), &fixture_root(fixture), &name, rest).is_ok()),
    }
}
