//! Symmetric-key chains (Double Ratchet specification, sections 2.2 and 5.2: `KDF_CK`).

use crate::crypto::kdf::HmacKey;
use crate::crypto::{CryptoError, Secret32};

use super::message_key::MessageKey;

/// The largest forward jump within one chain that a message may ask for (libsignal's
/// `MAX_FORWARD_JUMPS`): a header with a larger `n` is refused before any key is derived.
pub const MAX_MESSAGE_GAP: u32 = 25_000;

/// A sending or receiving chain key together with the index of the next message key.
#[derive(Clone)]
pub(crate) struct ChainKey {
    key: Secret32,
    index: u32,
}

impl ChainKey {
    pub(crate) fn new(key: Secret32, index: u32) -> Self {
        Self { key, index }
    }

    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    pub(crate) fn key(&self) -> &Secret32 {
        &self.key
    }

    /// `KDF_CK(ck)`: the message key is HMAC-SHA-256(ck, 0x01) and the next chain key is
    /// HMAC-SHA-256(ck, 0x02) (Double Ratchet section 5.2). Returns the message key for the
    /// current index and advances.
    pub(crate) fn step(&mut self) -> Result<MessageKey, CryptoError> {
        let next_index = self.index.checked_add(1).ok_or(CryptoError::Library)?;
        let hmac = HmacKey::new(&self.key);
        let mk = MessageKey::new(hmac.mac(&[0x01]), self.index);
        self.key = hmac.mac(&[0x02]);
        self.index = next_index;
        Ok(mk)
    }

    /// Fails unless message `n` lies within [`MAX_MESSAGE_GAP`] ahead of this chain.
    pub(crate) fn check_gap(&self, n: u32) -> Result<(), AdvanceError> {
        if n < self.index {
            return Err(AdvanceError::InThePast);
        }
        if n - self.index > MAX_MESSAGE_GAP {
            return Err(AdvanceError::TooBigGap);
        }
        Ok(())
    }

    /// Advances a copy of this chain to message `n`: returns the key for `n` and the chain
    /// after it, keeping none of the keys on the way, so an unauthenticated header costs at
    /// most [`MAX_MESSAGE_GAP`] steps and no allocation. `self` is left untouched; once the
    /// message authenticated, [`Self::skip_to`] on the original chain gives the skipped keys.
    pub(crate) fn advance_to(&self, n: u32) -> Result<Advance, AdvanceError> {
        self.check_gap(n)?;
        let mut chain = self.clone();
        while chain.index < n {
            chain.step().map_err(AdvanceError::Crypto)?;
        }
        let key = chain.step().map_err(AdvanceError::Crypto)?;
        Ok(Advance { key, chain })
    }

    /// Like [`Self::advance_to`] but stops before `n`, deriving only the skipped keys
    /// (used to close a chain at the `PN` of the next header).
    pub(crate) fn skip_to(&self, n: u32) -> Result<(Vec<MessageKey>, ChainKey), AdvanceError> {
        if n <= self.index {
            return Ok((Vec::new(), self.clone()));
        }
        self.check_gap(n)?;
        let mut chain = self.clone();
        let mut skipped = Vec::with_capacity((n - self.index) as usize);
        while chain.index < n {
            skipped.push(chain.step().map_err(AdvanceError::Crypto)?);
        }
        Ok((skipped, chain))
    }
}

/// The result of [`ChainKey::advance_to`].
pub(crate) struct Advance {
    pub(crate) key: MessageKey,
    pub(crate) chain: ChainKey,
}

/// Why a chain could not be advanced.
#[derive(Debug)]
pub(crate) enum AdvanceError {
    InThePast,
    TooBigGap,
    Crypto(CryptoError),
}
