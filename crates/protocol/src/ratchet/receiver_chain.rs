//! Receiving chains and their skipped message keys (Double Ratchet specification, section
//! 3.2 `MKSKIPPED`, and section 4 on out-of-order messages).

use std::collections::BTreeMap;

use crate::crypto::x25519::X25519Public;

use super::chain_key::ChainKey;
use super::message_key::MessageKey;

/// Most skipped message keys kept per receiving chain (libsignal's `MAX_MESSAGE_KEYS`).
/// When more are skipped, the keys of the **oldest** (lowest-numbered) messages are evicted
/// first: those messages can then no longer be decrypted, which bounds both memory and how
/// long a captured state can read delayed messages.
pub const MAX_SKIPPED_PER_CHAIN: usize = 2_000;
/// Most receiving chains kept (libsignal's `MAX_RECEIVER_CHAINS`); when a sixth starts, the
/// oldest chain and all its skipped keys are deleted.
pub const MAX_RECEIVING_CHAINS: usize = 5;

/// One receiving chain: the peer's ratchet key, the chain key (only for the newest chain;
/// older chains are closed once the peer moves on, as the specification's `SkipMessageKeys`
/// up to `PN` implies) and the keys of messages skipped on it.
#[derive(Clone)]
pub(crate) struct ReceiverChain {
    pub(crate) ratchet_key: X25519Public,
    pub(crate) chain: Option<ChainKey>,
    pub(crate) skipped: BTreeMap<u32, MessageKey>,
}

impl ReceiverChain {
    pub(crate) fn new(ratchet_key: X25519Public, chain: ChainKey) -> Self {
        Self { ratchet_key, chain: Some(chain), skipped: BTreeMap::new() }
    }

    /// Stores skipped keys, evicting the oldest beyond [`MAX_SKIPPED_PER_CHAIN`].
    pub(crate) fn store_skipped(&mut self, keys: Vec<MessageKey>) {
        let keep_from = keys.len().saturating_sub(MAX_SKIPPED_PER_CHAIN);
        for k in keys.into_iter().skip(keep_from) {
            self.skipped.insert(k.index(), k);
        }
        while self.skipped.len() > MAX_SKIPPED_PER_CHAIN {
            self.skipped.pop_first();
        }
    }
}
