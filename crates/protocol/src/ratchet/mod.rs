//! The Double Ratchet (Signal's Double Ratchet specification, revision 1, 2016-11-20).
//!
//! The state machine follows section 3 literally (`RatchetEncrypt`, `RatchetDecrypt`,
//! `DHRatchet`, `SkipMessageKeys`) with two changes that do not alter any derived key:
//! * **Commit after authentication.** Decryption derives every new key on the side and
//!   changes the state only after the AEAD tag verified (the specification's note in
//!   section 3.5: "if an exception is raised ... discard any changes to the state").
//! * **Lazy sending chain.** The second half of `DHRatchet` (new `DHs`, `KDF_RK` for the
//!   sending chain) runs when the next message is sent rather than when one is received.
//!   The inputs are the same (root key and the peer's newest ratchet key), so the keys are
//!   the same; a receiver that never replies saves a key generation and a DH.

mod chain_key;
mod message_key;
mod receiver_chain;
mod root_key;

use std::collections::VecDeque;

use rand_core::{CryptoRng, RngCore};

pub(crate) use chain_key::ChainKey;
pub use chain_key::MAX_MESSAGE_GAP;
pub(crate) use message_key::MessageKey;
pub(crate) use receiver_chain::ReceiverChain;
pub use receiver_chain::{MAX_RECEIVING_CHAINS, MAX_SKIPPED_PER_CHAIN};
pub(crate) use root_key::RootKey;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::aead::TAG_LEN;
use crate::crypto::x25519::{X25519Public, X25519Secret};
use crate::crypto::{CryptoError, Secret32};
use crate::message::{HEADER_LEN, RatchetHeader, RatchetMessage};
use crate::padding;
use crate::session::SessionError;
use chain_key::AdvanceError;

/// The sending half of the state.
#[derive(Clone)]
pub(crate) enum SendState {
    /// A sending chain exists (`DHs`, `CKs`, `Ns` = the chain's index).
    Active { key: X25519Secret, chain: ChainKey },
    /// The responder's initial state: `DHs` is its signed prekey, no sending chain yet.
    KeyOnly(X25519Secret),
    /// A new ratchet key is due at the next send (see the module note).
    Pending,
}

/// One party's Double Ratchet state.
#[derive(Clone)]
pub(crate) struct DoubleRatchet {
    root: RootKey,
    sending: SendState,
    /// `PN`: length of the previous sending chain.
    previous_counter: u32,
    /// Receiving chains, oldest first; at most [`MAX_RECEIVING_CHAINS`].
    receiving: VecDeque<ReceiverChain>,
    /// `AD` followed by room for one header: the AEAD's associated data is
    /// `CONCAT(AD, header)` (section 3.4), assembled here without an allocation.
    aad: Vec<u8>,
}

impl DoubleRatchet {
    /// `RatchetInitAlice` (section 3.3): a fresh `DHs`, `DHr` = Bob's signed prekey, and the
    /// first `KDF_RK` from the PQXDH secret.
    pub(crate) fn init_initiator<R: RngCore + CryptoRng>(
        rng: &mut R,
        sk: &Secret32,
        remote_ratchet_key: X25519Public,
        ad: &[u8],
    ) -> Result<Self, CryptoError> {
        let key = X25519Secret::generate(rng)?;
        let dh = key.diffie_hellman(&remote_ratchet_key)?;
        let (root, chain) = RootKey(sk.clone()).ratchet(&dh)?;
        Ok(Self {
            root,
            sending: SendState::Active { key, chain },
            previous_counter: 0,
            receiving: VecDeque::new(),
            aad: aad_buffer(ad),
        })
    }

    /// `RatchetInitBob` (section 3.3): `DHs` = the signed prekey pair, `RK` = the PQXDH secret.
    pub(crate) fn init_responder(sk: &Secret32, signed_prekey: X25519Secret, ad: &[u8]) -> Self {
        Self {
            root: RootKey(sk.clone()),
            sending: SendState::KeyOnly(signed_prekey),
            previous_counter: 0,
            receiving: VecDeque::new(),
            aad: aad_buffer(ad),
        }
    }

    fn set_header(&mut self, header: &[u8; HEADER_LEN]) -> &[u8] {
        let start = self.aad.len() - HEADER_LEN;
        if let Some(tail) = self.aad.get_mut(start..) {
            tail.copy_from_slice(header);
        }
        &self.aad
    }

    /// `RatchetEncrypt` (section 3.4) with padding inside the encryption.
    pub(crate) fn encrypt<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        plaintext: &[u8],
    ) -> Result<RatchetMessage, SessionError> {
        let mut buf = padding::pad(plaintext, TAG_LEN)?;
        // Everything is computed on the side and assigned once the message is sealed.
        let (new_root, key, mut chain) = match &self.sending {
            SendState::Active { key, chain } => (None, key.clone(), chain.clone()),
            SendState::KeyOnly(_) | SendState::Pending => {
                // Second half of DHRatchet, deferred to now.
                let remote =
                    self.receiving.back().map(|c| c.ratchet_key).ok_or(SessionError::NoSendingChain)?;
                let key = X25519Secret::generate(rng)?;
                let (root, chain) = self.root.ratchet(&key.diffie_hellman(&remote)?)?;
                (Some(root), key, chain)
            }
        };
        let mk = chain.step()?;
        let header = RatchetHeader {
            ratchet_key: *key.public(),
            previous_counter: self.previous_counter,
            counter: mk.index(),
        };
        let aad = self.set_header(&header.to_bytes());
        mk.seal(aad, &mut buf)?;
        if let Some(root) = new_root {
            self.root = root;
        }
        self.sending = SendState::Active { key, chain };
        Ok(RatchetMessage { header, ciphertext: buf })
    }

    /// `RatchetDecrypt` (section 3.5). On any error the state is unchanged.
    pub(crate) fn decrypt(&mut self, msg: &RatchetMessage) -> Result<Vec<u8>, SessionError> {
        let h = msg.header;
        let header_bytes = h.to_bytes();
        // TrySkippedMessageKeys, or a message further along a known chain.
        if let Some(idx) = self.receiving.iter().position(|c| c.ratchet_key == h.ratchet_key) {
            let chain = self.receiving.get(idx).ok_or(SessionError::Internal)?;
            if let Some(mk) = chain.skipped.get(&h.counter) {
                let mk = mk.clone();
                let pt = self.open(&mk, &header_bytes, &msg.ciphertext)?;
                if let Some(c) = self.receiving.get_mut(idx) {
                    c.skipped.remove(&h.counter);
                }
                return Ok(pt);
            }
            let ck = chain.chain.as_ref().ok_or(SessionError::DuplicateMessage)?;
            let adv = ck.advance_to(h.counter).map_err(advance_error)?;
            let pt = self.open(&adv.key, &header_bytes, &msg.ciphertext)?;
            // Authenticated: derive the skipped keys and commit.
            let c = self.receiving.get_mut(idx).ok_or(SessionError::Internal)?;
            let skipped = match &c.chain {
                Some(ck) => ck.skip_to(h.counter).map_err(advance_error)?.0,
                None => Vec::new(),
            };
            c.chain = Some(adv.chain);
            c.store_skipped(skipped);
            return Ok(pt);
        }
        // A new ratchet key: DHRatchet, after SkipMessageKeys(PN) on the current chain.
        let our_key = match &self.sending {
            SendState::Active { key, .. } | SendState::KeyOnly(key) => key,
            SendState::Pending => return Err(SessionError::UnexpectedRatchetKey),
        };
        // Only bounds are checked before authentication; the closing chain's skipped keys
        // are derived after it.
        if let Some(ck) = self.receiving.back().and_then(|c| c.chain.as_ref())
            && h.previous_counter > ck.index()
        {
            ck.check_gap(h.previous_counter).map_err(advance_error)?;
        }
        let dh = our_key.diffie_hellman(&h.ratchet_key)?;
        let (root, ck) = self.root.ratchet(&dh)?;
        let adv = ck.advance_to(h.counter).map_err(advance_error)?;
        let pt = self.open(&adv.key, &header_bytes, &msg.ciphertext)?;
        // Authenticated: derive skipped keys, then commit.
        let closing = match self.receiving.back().and_then(|c| c.chain.as_ref()) {
            Some(ck) => ck.skip_to(h.previous_counter).map_err(advance_error)?.0,
            None => Vec::new(),
        };
        let skipped = ck.skip_to(h.counter).map_err(advance_error)?.0;
        if let Some(current) = self.receiving.back_mut() {
            current.chain = None;
            current.store_skipped(closing);
        }
        if let SendState::Active { chain, .. } = &self.sending {
            self.previous_counter = chain.index();
        }
        self.root = root;
        self.sending = SendState::Pending;
        let mut chain = ReceiverChain::new(h.ratchet_key, adv.chain);
        chain.store_skipped(skipped);
        self.receiving.push_back(chain);
        while self.receiving.len() > MAX_RECEIVING_CHAINS {
            self.receiving.pop_front();
        }
        Ok(pt)
    }

    fn open(
        &mut self,
        mk: &MessageKey,
        header: &[u8; HEADER_LEN],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, SessionError> {
        let mut buf = ciphertext.to_vec();
        let aad = self.set_header(header);
        mk.open(aad, &mut buf).map_err(|_| SessionError::DecryptionFailed)?;
        padding::unpad(&mut buf)?;
        Ok(buf)
    }

    /// Whether any message from the peer was ever decrypted.
    pub(crate) fn has_received(&self) -> bool {
        !self.receiving.is_empty()
    }

    pub(crate) fn encode(&self, w: &mut impl Writer) {
        w.put(self.root.0.expose());
        match &self.sending {
            SendState::Active { key, chain } => {
                w.put_u8(1);
                w.put(key.secret_bytes().expose());
                w.put(chain.key().expose());
                w.put_u32(chain.index());
            }
            SendState::KeyOnly(key) => {
                w.put_u8(2);
                w.put(key.secret_bytes().expose());
            }
            SendState::Pending => w.put_u8(3),
        }
        w.put_u32(self.previous_counter);
        w.put_count(self.receiving.len());
        for c in &self.receiving {
            w.put(c.ratchet_key.as_bytes());
            match &c.chain {
                Some(ck) => {
                    w.put_bool(true);
                    w.put(ck.key().expose());
                    w.put_u32(ck.index());
                }
                None => w.put_bool(false),
            }
            w.put_count(c.skipped.len());
            for (n, mk) in &c.skipped {
                w.put_u32(*n);
                w.put(mk.key().expose());
            }
        }
        let ad = self.aad.get(..self.aad.len() - HEADER_LEN).unwrap_or_default();
        w.put_bytes(ad);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let bad = |_| DecodeError::InvalidValue;
        let root = RootKey(Secret32(r.array()?));
        let sending = match r.u8()? {
            1 => {
                let key = X25519Secret::from_bytes(Secret32(r.array()?)).map_err(bad)?;
                let ck = Secret32(r.array()?);
                SendState::Active { key, chain: ChainKey::new(ck, r.u32()?) }
            }
            2 => SendState::KeyOnly(X25519Secret::from_bytes(Secret32(r.array()?)).map_err(bad)?),
            3 => SendState::Pending,
            t => return Err(DecodeError::UnknownTag(t)),
        };
        let previous_counter = r.u32()?;
        let mut receiving = VecDeque::new();
        for _ in 0..r.count(MAX_RECEIVING_CHAINS)? {
            let ratchet_key = X25519Public::from_bytes(r.array()?).map_err(bad)?;
            let chain = if r.bool()? {
                let ck = Secret32(r.array()?);
                Some(ChainKey::new(ck, r.u32()?))
            } else {
                None
            };
            let mut skipped = std::collections::BTreeMap::new();
            for _ in 0..r.count(MAX_SKIPPED_PER_CHAIN)? {
                let n = r.u32()?;
                // The encoder writes the map in ascending order: refuse duplicates and any
                // other order, so one state has exactly one encoding.
                if skipped.last_key_value().is_some_and(|(&last, _)| n <= last) {
                    return Err(DecodeError::InvalidValue);
                }
                skipped.insert(n, MessageKey::new(Secret32(r.array()?), n));
            }
            // Skipped keys lie below the chain's next index; ratchet keys are distinct.
            if let (Some(ck), Some((&last, _))) = (&chain, skipped.last_key_value())
                && last >= ck.index()
            {
                return Err(DecodeError::InvalidValue);
            }
            if receiving.iter().any(|c: &ReceiverChain| c.ratchet_key == ratchet_key) {
                return Err(DecodeError::InvalidValue);
            }
            receiving.push_back(ReceiverChain { ratchet_key, chain, skipped });
        }
        // Only the newest chain may still be open; the sending state matches the chains.
        let open_chains = receiving.iter().filter(|c| c.chain.is_some()).count();
        let newest_open = receiving.back().is_none_or(|c| c.chain.is_some() || open_chains == 0);
        let sending_consistent = match sending {
            SendState::KeyOnly(_) => receiving.is_empty(),
            SendState::Pending => !receiving.is_empty(),
            SendState::Active { .. } => true,
        };
        if open_chains > 1 || !newest_open || !sending_consistent {
            return Err(DecodeError::InvalidValue);
        }
        let ad = r.bytes(MAX_AD_LEN)?;
        Ok(Self { root, sending, previous_counter, receiving, aad: aad_buffer(ad) })
    }
}

/// Longest associated data a stored session may carry.
const MAX_AD_LEN: usize = 1_024;

fn aad_buffer(ad: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ad.len() + HEADER_LEN);
    v.extend_from_slice(ad);
    v.resize(ad.len() + HEADER_LEN, 0);
    v
}

fn advance_error(e: AdvanceError) -> SessionError {
    match e {
        AdvanceError::InThePast => SessionError::DuplicateMessage,
        AdvanceError::TooBigGap => SessionError::TooBigMessageGap,
        AdvanceError::Crypto(c) => SessionError::Crypto(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `session_state_decode` fuzz target: a stored state whose skipped keys
    /// were out of order (or repeated) decoded, then re-encoded to different bytes.
    #[test]
    fn decode_refuses_unsorted_or_duplicate_skipped_keys() {
        let signed = X25519Secret::from_bytes(Secret32([2; 32])).unwrap();
        let mut ratchet = DoubleRatchet::init_responder(&Secret32([1; 32]), signed, b"ad");
        let mut chain = ReceiverChain::new(
            X25519Public::from_bytes([9; 32]).unwrap(),
            ChainKey::new(Secret32([3; 32]), 5),
        );
        chain.store_skipped(vec![
            MessageKey::new(Secret32([4; 32]), 1),
            MessageKey::new(Secret32([5; 32]), 3),
        ]);
        ratchet.receiving.push_back(chain);
        ratchet.sending = SendState::Pending;
        let mut good = Vec::new();
        ratchet.encode(&mut good);
        let mut again = Vec::new();
        DoubleRatchet::decode(&mut Reader::new(&good)).unwrap().encode(&mut again);
        assert_eq!(good, again);

        let first = [&1u32.to_be_bytes()[..], &[4u8; 32]].concat();
        let pos = good.windows(36).position(|w| w == first).unwrap();
        let second = good[pos + 36..pos + 72].to_vec();
        let mut swapped = good.clone();
        swapped[pos..pos + 36].copy_from_slice(&second);
        swapped[pos + 36..pos + 72].copy_from_slice(&first);
        assert_eq!(DoubleRatchet::decode(&mut Reader::new(&swapped)).err(), Some(DecodeError::InvalidValue));
        let mut repeated = good.clone();
        repeated[pos + 36..pos + 72].copy_from_slice(&first);
        assert_eq!(DoubleRatchet::decode(&mut Reader::new(&repeated)).err(), Some(DecodeError::InvalidValue));
    }
}
