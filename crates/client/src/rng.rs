//! The operating system's randomness (through AWS-LC, already linked for the protocol's
//! primitives) behind the `rand_core` 0.6 traits the protocol core takes.

use rand_core::{CryptoRng, RngCore};

/// The error code reported when AWS-LC's generator fails.
const FAILED: core::num::NonZeroU32 = match core::num::NonZeroU32::new(rand_core::Error::CUSTOM_START) {
    Some(c) => c,
    None => core::num::NonZeroU32::MIN,
};

/// AWS-LC's system-seeded DRBG.
#[derive(Clone, Copy, Default)]
pub(crate) struct OsRng;

impl RngCore for OsRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if aws_lc_rs::rand::fill(dest).is_err() {
            // No randomness means no safe key: stop the process rather than go on.
            std::process::abort();
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        aws_lc_rs::rand::fill(dest).map_err(|_| rand_core::Error::from(FAILED))
    }
}

impl CryptoRng for OsRng {}
