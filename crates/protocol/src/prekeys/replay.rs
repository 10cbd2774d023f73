//! The replay memory of one signed prekey: initial messages that used no one-time key are
//! remembered so a second delivery is refused (PQXDH revision 3, section 4.2: "Bob may wish
//! to remember ... and reject replayed messages").
//!
//! An entry is a [`ReplayTag`], not the base key's bytes: X25519 clears the cofactor, so the
//! base key plus any of the 8 small-order points gives the same Diffie-Hellman outputs and
//! session key while its bytes differ. The tag is a hash of `X25519(SPK_B, EK_A)`, which is
//! equal for every such equivalent key.
//!
//! The memory is bounded per sender and in total, and filling it never refuses a sender
//! that stayed within its own bound: when the total is reached, an entry of the sender with
//! the most entries is forgotten instead. An attacker with many accounts can therefore not
//! make another sender's genuine first message undeliverable (issue 7 point 4); a forgotten
//! entry re-opens a replay only of that sender's own message, and only after the session it
//! made has been deleted (the client matches an initial message to a session it holds by
//! its base key first).

use std::collections::BTreeMap;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::Secret32;
use crate::crypto::kdf::sha256;
use crate::crypto::x25519::X25519Public;

use super::store::PrekeyError;

/// Most initial messages without a one-time key remembered **per signed prekey**. When it
/// is reached, an entry of the sender with the most entries is forgotten (see the module
/// documentation) and [`crate::DevicePrekeys::plan`] asks for a new signed prekey once the
/// memory is half full.
pub const MAX_SEEN_BASE_KEYS: usize = 10_000;
/// Most initial messages without a one-time key one sender (an `IK_A`) may have remembered
/// per signed prekey; further ones from that sender are refused
/// ([`PrekeyError::ReplayMemoryFull`]) until the signed prekey rotates (every 2 days). An
/// honest device starts a handful of sessions with one device in that time.
pub const MAX_SEEN_PER_SENDER: usize = 32;

/// Label of the replay tag's hash.
const TAG_LABEL: &[u8] = b"Tacit v2 replay tag";

/// What the replay memory keeps of an initial message: `SHA-256("Tacit v2 replay tag" ||
/// X25519(SPK_B, EK_A))`, equal for all encodings of equivalent base keys.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) struct ReplayTag([u8; 32]);

impl ReplayTag {
    /// The tag of `dh3 = X25519(SPK_B, EK_A)`.
    pub(crate) fn from_dh3(dh3: &Secret32) -> Self {
        Self(sha256(&[TAG_LABEL, dh3.expose()]))
    }
}

/// The replay memory of one signed prekey: tag to the sender (`IK_A`) that sent it.
#[derive(Clone, Default)]
pub(super) struct ReplayMemory {
    tags: BTreeMap<ReplayTag, X25519Public>,
    per_sender: BTreeMap<X25519Public, usize>,
}

impl ReplayMemory {
    /// Number of remembered initial messages.
    pub(super) fn len(&self) -> usize {
        self.tags.len()
    }

    /// Refuses a replay (a tag already remembered, from any sender) and a sender that has
    /// used up its own bound.
    pub(super) fn check(&self, sender: &X25519Public, tag: &ReplayTag) -> Result<(), PrekeyError> {
        if self.tags.contains_key(tag) {
            return Err(PrekeyError::ReplayedInitialMessage);
        }
        if self.per_sender.get(sender).is_some_and(|n| *n >= MAX_SEEN_PER_SENDER) {
            return Err(PrekeyError::ReplayMemoryFull);
        }
        Ok(())
    }

    /// Remembers an authenticated initial message ([`Self::check`] passed), forgetting one
    /// entry of the sender with the most entries when the memory is full.
    pub(super) fn insert(&mut self, sender: X25519Public, tag: ReplayTag) {
        if self.tags.len() >= MAX_SEEN_BASE_KEYS {
            self.evict_one();
        }
        if self.tags.insert(tag, sender).is_none() {
            *self.per_sender.entry(sender).or_default() += 1;
        }
    }

    /// Forgets the lowest tag of the sender with the most entries (the lowest sender key
    /// among equals). Linear, and runs only while the memory is full.
    fn evict_one(&mut self) {
        let Some(top) =
            self.per_sender.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(k, _)| *k)
        else {
            return;
        };
        let Some(tag) = self.tags.iter().find(|(_, s)| **s == top).map(|(t, _)| *t) else {
            return;
        };
        self.tags.remove(&tag);
        if let Some(n) = self.per_sender.get_mut(&top) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_sender.remove(&top);
            }
        }
    }

    /// `u32 n || n × (tag (32) || sender IK (32))`, tags ascending.
    pub(super) fn encode(&self, w: &mut impl Writer) {
        w.put_count(self.tags.len());
        for (tag, sender) in &self.tags {
            w.put(&tag.0);
            w.put(sender.as_bytes());
        }
    }

    /// Reads what [`Self::encode`] wrote, refusing unsorted tags and any bound exceeded.
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        for _ in 0..r.count(MAX_SEEN_BASE_KEYS)? {
            let tag = ReplayTag(r.array()?);
            let sender = X25519Public::from_bytes(r.array()?).map_err(|_| DecodeError::InvalidValue)?;
            if m.tags.last_key_value().is_some_and(|(last, _)| tag <= *last) {
                return Err(DecodeError::InvalidValue);
            }
            let n = m.per_sender.entry(sender).or_default();
            *n += 1;
            if *n > MAX_SEEN_PER_SENDER {
                return Err(DecodeError::InvalidValue);
            }
            m.tags.insert(tag, sender);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> X25519Public {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        X25519Public::from_bytes(k).unwrap()
    }

    fn tag(i: u32) -> ReplayTag {
        ReplayTag::from_dh3(&Secret32(*key(i).as_bytes()))
    }

    #[test]
    fn full_memory_forgets_the_biggest_sender_never_refuses_a_newcomer() {
        let mut m = ReplayMemory::default();
        // Attackers, each at its own bound, fill the memory.
        let per = MAX_SEEN_PER_SENDER as u32;
        let attackers = (MAX_SEEN_BASE_KEYS as u32).div_ceil(per);
        for a in 0..attackers {
            for j in 0..per {
                let t = tag(a * per + j);
                if m.check(&key(a), &t).is_ok() {
                    m.insert(key(a), t);
                }
            }
            assert_eq!(m.check(&key(a), &tag(u32::MAX - a)), Err(PrekeyError::ReplayMemoryFull));
        }
        assert_eq!(m.len(), MAX_SEEN_BASE_KEYS);
        // A genuine sender is still accepted, and remembered.
        let alice = key(1_000_000);
        let t = tag(1_000_000);
        assert_eq!(m.check(&alice, &t), Ok(()));
        m.insert(alice, t);
        assert_eq!(m.check(&alice, &t), Err(PrekeyError::ReplayedInitialMessage));
        assert_eq!(m.len(), MAX_SEEN_BASE_KEYS);
        let back =
            ReplayMemory::decode(&mut Reader::new(&crate::codec::encode_exact(|w| m.encode(w)))).unwrap();
        assert_eq!(back.check(&alice, &t), Err(PrekeyError::ReplayedInitialMessage));
    }
}
