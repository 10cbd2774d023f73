//! A 1:1 session with one remote device: PQXDH to start, the Double Ratchet after.
//!
//! ```
//! # use tacit_protocol::*;
//! # use rand_core::OsRng;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let alice_addr = DeviceAddress { account: AccountName::new("alice")?, device: DeviceId::new(1).unwrap() };
//! let bob_addr = DeviceAddress { account: AccountName::new("bob")?, device: DeviceId::new(1).unwrap() };
//! let alice = DeviceIdentity::generate(&mut OsRng)?;
//! let bob = DeviceIdentity::generate(&mut OsRng)?;
//! let mut bob_prekeys = DevicePrekeys::new();
//! let plan = bob_prekeys.plan(UnixTime(0), &PrekeyPolicy::default(), 0, 0);
//! bob_prekeys.execute(&mut OsRng, &bob, UnixTime(0), &plan)?;
//! let bundle = bob_prekeys.bundle(bob_addr.clone(), &bob).unwrap();
//!
//! // Bob's account signs his device list; Alice verifies it and takes his device from it.
//! let bob_account = AccountIdentity::generate(&mut OsRng)?;
//! let entry = DeviceEntry { approver: true, ..DeviceEntry::new(bob_addr.device, bob.public().clone()) };
//! let list = DeviceList::sign(&bob_account, bob_addr.account.clone(), 1, vec![entry])?;
//! let list = DeviceList::verify(&list.to_bytes(), &bob_addr.account, None, None)?;
//! let bob_device = list.verified_device(bob_addr.device).unwrap();
//! let mut a = Session::initiate(&mut OsRng, &alice, alice_addr.clone(), &bundle, &bob_device, UnixTime(0))?;
//! let wire = a.encrypt(&mut OsRng, b"hi bob")?.to_bytes();
//! let Message::Prekey(first) = Message::from_bytes(&wire)? else { unreachable!() };
//! // Bob looks Alice's device up in her verified device list the same way.
//! let alice_device = VerifiedDevice::dangerous_assume_verified(alice_addr, alice.public().clone());
//! let (mut b, text) = Session::accept(&bob, bob_addr, &mut bob_prekeys, &alice_device, &first)?;
//! assert_eq!(text, b"hi bob");
//! let reply = b.encrypt(&mut OsRng, b"hi alice")?;
//! assert_eq!(a.decrypt(&reply)?, b"hi alice");
//! # Ok(()) }
//! ```

use rand_core::{CryptoRng, RngCore};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::CryptoError;
use crate::crypto::kem::KemCiphertext;
use crate::crypto::x25519::X25519Public;
use crate::device_list::VerifiedDevice;
use crate::identity::{DeviceAddress, DeviceIdentity, DevicePublic};
use crate::message::{Message, PrekeyMessage, RatchetMessage};
use crate::padding::PaddingError;
use crate::pqxdh;
use crate::prekeys::{DevicePrekeys, KemPrekeyKind, PrekeyBundle, PrekeyError, PrekeyUse, UnixTime};
use crate::ratchet::DoubleRatchet;
use crate::state::{StateKind, read_header, write_header};

/// Why a session operation failed. After any error the session is unchanged and can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The bytes are not a well-formed message or state.
    #[error("malformed input: {0}")]
    Decode(#[from] DecodeError),
    /// A primitive refused its input (bad signature, invalid key, degenerate DH).
    #[error("cryptographic check failed: {0}")]
    Crypto(#[from] CryptoError),
    /// The prekeys an initial message names are unknown, used, or replayed.
    #[error("prekey problem: {0}")]
    Prekey(#[from] PrekeyError),
    /// The message did not authenticate (forged, corrupted, or for another session).
    #[error("message failed to authenticate")]
    DecryptionFailed,
    /// The message's key was already used or is no longer held: a duplicate, a replay, or a
    /// message delayed past the skipped-key bounds.
    #[error("duplicate or expired message")]
    DuplicateMessage,
    /// The message claims to be more than [`crate::MAX_MESSAGE_GAP`] ahead of its chain.
    #[error("message number jumps too far ahead")]
    TooBigMessageGap,
    /// A new ratchet key arrived before this side replied to the previous one.
    #[error("unexpected ratchet key")]
    UnexpectedRatchetKey,
    /// The plaintext is too long, or the decrypted padding is invalid.
    #[error("padding: {0}")]
    Padding(#[from] PaddingError),
    /// A bundle's or initial message's identity is not the device's known identity.
    #[error("identity does not match the device list")]
    IdentityMismatch,
    /// An initial message that belongs to a different session (another base key): the
    /// caller should [`Session::accept`] it as a new session.
    #[error("initial message for another session")]
    OtherSession,
    /// This side cannot send yet (never happens for sessions made by this crate).
    #[error("no sending chain")]
    NoSendingChain,
    /// A stored session is older than the newest copy the client wrote: it was restored
    /// from an old backup and may already have used its next message keys. Start a new
    /// session with the peer instead.
    #[error("session restored from an old copy (generation {stored} < {expected})")]
    RolledBack {
        /// The loaded copy's generation.
        stored: u64,
        /// The generation the client last wrote for this session.
        expected: u64,
    },
    /// An internal invariant failed; please report it.
    #[error("internal error")]
    Internal,
}

/// The bundle must be for exactly the device the caller verified, and its prekeys signed
/// by that device.
fn check_bundle(bundle: &PrekeyBundle, remote: &VerifiedDevice) -> Result<(), SessionError> {
    if bundle.identity != *remote.identity() || bundle.address != *remote.address() {
        return Err(SessionError::IdentityMismatch);
    }
    bundle.verify()?;
    Ok(())
}

/// How long a session may stay pending (its initial message not answered) before
/// [`Session::pending_expired`] says to start a new one: 30 days, as libsignal's
/// `MAX_UNACKNOWLEDGED_SESSION_AGE`. It equals the retired-key grace of
/// [`crate::PrekeyPolicy::default`], so the signed prekey a pending session names has not
/// been deleted before then.
pub const MAX_PENDING_AGE_SECS: u64 = 30 * 86_400;

/// The initial-message fields Alice repeats on every message until Bob answers.
#[derive(Clone)]
struct Pending {
    /// When the session was made (the caller's clock).
    since: UnixTime,
    signed_prekey_id: u32,
    one_time_prekey_id: Option<u32>,
    kem_prekey_kind: KemPrekeyKind,
    kem_prekey_id: u32,
    kem_ciphertext: KemCiphertext,
    identity_key: X25519Public,
}

/// A 1:1 session with one remote device.
///
/// Deliberately not `Clone`: two copies that both encrypt would use the same message keys.
/// Persist with [`Session::to_bytes`] and load with [`Session::from_bytes_at_least`].
pub struct Session {
    ratchet: DoubleRatchet,
    local_address: DeviceAddress,
    remote_address: DeviceAddress,
    remote_identity: DevicePublic,
    base_key: X25519Public,
    pending: Option<Pending>,
    generation: u64,
}

impl Session {
    /// Starts a session with `remote` from its prekey `bundle` (PQXDH section 3.3).
    ///
    /// `remote` comes from the account's verified [`crate::DeviceList`] (whose verification
    /// checked the identity's binding signature). The bundle must name exactly that address
    /// and identity, and its signed prekey and KEM prekey signatures must verify under it;
    /// then PQXDH runs and the ratchet starts. Messages sent before the peer answers are
    /// [`Message::Prekey`]s.
    ///
    /// `now` is when the session is made; it stays pending until the peer answers, and
    /// [`Self::pending_expired`] tells when to give up on it.
    pub fn initiate<R: RngCore + CryptoRng>(
        rng: &mut R,
        local: &DeviceIdentity,
        local_address: DeviceAddress,
        bundle: &PrekeyBundle,
        remote: &VerifiedDevice,
        now: UnixTime,
    ) -> Result<Self, SessionError> {
        check_bundle(bundle, remote)?;
        let out = pqxdh::initiate(rng, local, bundle)?;
        Self::finish_initiate(rng, local, local_address, bundle, out, now)
    }

    fn finish_initiate<R: RngCore + CryptoRng>(
        rng: &mut R,
        local: &DeviceIdentity,
        local_address: DeviceAddress,
        bundle: &PrekeyBundle,
        out: pqxdh::Initiated,
        now: UnixTime,
    ) -> Result<Self, SessionError> {
        let pending = Pending {
            since: now,
            signed_prekey_id: bundle.signed_prekey.id,
            one_time_prekey_id: bundle.one_time_prekey.map(|k| k.id),
            kem_prekey_kind: bundle.kem_prekey.kind,
            kem_prekey_id: bundle.kem_prekey.id,
            kem_ciphertext: out.kem_ciphertext,
            identity_key: *local.public().dh_key(),
        };
        let fields = pqxdh::InitialFields {
            base_key: &out.base_key,
            signed_prekey_id: pending.signed_prekey_id,
            one_time_prekey_id: pending.one_time_prekey_id,
            kem_prekey_kind: pending.kem_prekey_kind,
            kem_prekey_id: pending.kem_prekey_id,
            kem_ciphertext: &pending.kem_ciphertext,
        };
        let ad = pqxdh::associated_data(
            local.public(),
            &local_address,
            &bundle.identity,
            &bundle.address,
            &fields,
        );
        let ratchet = DoubleRatchet::init_initiator(rng, &out.sk, bundle.signed_prekey.key, &ad)?;
        Ok(Self {
            ratchet,
            local_address,
            remote_address: bundle.address.clone(),
            remote_identity: bundle.identity.clone(),
            base_key: out.base_key,
            pending: Some(pending),
            generation: 0,
        })
    }

    /// Known-answer tests fix the KEM output, which AWS-LC cannot derandomise.
    #[cfg(test)]
    #[allow(dead_code)] // used by the known-answer tests
    pub(crate) fn initiate_with_kem<R: RngCore + CryptoRng>(
        rng: &mut R,
        local: &DeviceIdentity,
        local_address: DeviceAddress,
        bundle: &PrekeyBundle,
        remote: &VerifiedDevice,
        ct: KemCiphertext,
        ss: &crate::crypto::Secret32,
    ) -> Result<Self, SessionError> {
        check_bundle(bundle, remote)?;
        let out = pqxdh::initiate_with(rng, local, bundle, ct, ss)?;
        Self::finish_initiate(rng, local, local_address, bundle, out, UnixTime(0))
    }

    /// Accepts an initial message (PQXDH section 3.4) from `sender`, the device the
    /// envelope claims it came from, as found in the sender's verified device list. Returns
    /// the new session and the first plaintext. The used one-time prekeys are deleted from
    /// `prekeys` only after the first message authenticated; on any error nothing changes.
    pub fn accept(
        local: &DeviceIdentity,
        local_address: DeviceAddress,
        prekeys: &mut DevicePrekeys,
        sender: &VerifiedDevice,
        message: &PrekeyMessage,
    ) -> Result<(Self, Vec<u8>), SessionError> {
        let sender_identity = sender.identity();
        if message.identity_key != *sender_identity.dh_key() {
            return Err(SessionError::IdentityMismatch);
        }
        let used = PrekeyUse {
            signed_id: message.signed_prekey_id,
            one_time_id: message.one_time_prekey_id,
            kem_id: message.kem_prekey_id,
            kem_kind: message.kem_prekey_kind,
            sender: message.identity_key,
        };
        let secrets = prekeys.lookup(&used)?;
        let (sk, tag) = pqxdh::respond(
            local,
            &secrets,
            &message.identity_key,
            &message.base_key,
            &message.kem_ciphertext,
        )?;
        prekeys.check_replay(&used, &tag)?;
        let fields = pqxdh::InitialFields {
            base_key: &message.base_key,
            signed_prekey_id: message.signed_prekey_id,
            one_time_prekey_id: message.one_time_prekey_id,
            kem_prekey_kind: message.kem_prekey_kind,
            kem_prekey_id: message.kem_prekey_id,
            kem_ciphertext: &message.kem_ciphertext,
        };
        let ad = pqxdh::associated_data(
            sender_identity,
            sender.address(),
            local.public(),
            &local_address,
            &fields,
        );
        let mut ratchet = DoubleRatchet::init_responder(&sk, secrets.signed.clone(), &ad);
        let plaintext = ratchet.decrypt(&message.message)?;
        prekeys.consume(&used, tag);
        let session = Self {
            ratchet,
            local_address,
            remote_address: sender.address().clone(),
            remote_identity: sender_identity.clone(),
            base_key: message.base_key,
            pending: None,
            generation: 1,
        };
        Ok((session, plaintext))
    }

    /// Encrypts `plaintext` (padded to its size bucket) for the remote device.
    pub fn encrypt<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        plaintext: &[u8],
    ) -> Result<Message, SessionError> {
        let message = self.ratchet.encrypt(rng, plaintext)?;
        self.generation = self.generation.wrapping_add(1);
        Ok(match &self.pending {
            None => Message::Ratchet(message),
            Some(p) => Message::Prekey(PrekeyMessage {
                identity_key: p.identity_key,
                base_key: self.base_key,
                signed_prekey_id: p.signed_prekey_id,
                one_time_prekey_id: p.one_time_prekey_id,
                kem_prekey_kind: p.kem_prekey_kind,
                kem_prekey_id: p.kem_prekey_id,
                kem_ciphertext: p.kem_ciphertext.clone(),
                message,
            }),
        })
    }

    /// Decrypts a message on this session. A [`Message::Prekey`] is accepted only if it
    /// belongs to this session (same base key), as a resend of the initial message does.
    pub fn decrypt(&mut self, message: &Message) -> Result<Vec<u8>, SessionError> {
        let inner: &RatchetMessage = match message {
            Message::Ratchet(m) => m,
            Message::Prekey(p) if p.base_key == self.base_key => &p.message,
            Message::Prekey(_) => return Err(SessionError::OtherSession),
        };
        let pt = self.ratchet.decrypt(inner)?;
        if self.ratchet.has_received() {
            self.pending = None;
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(pt)
    }

    /// Decodes and decrypts wire bytes.
    pub fn decrypt_bytes(&mut self, bytes: &[u8]) -> Result<Vec<u8>, SessionError> {
        self.decrypt(&Message::from_bytes(bytes)?)
    }

    /// A copy for tests that explore alternative futures of one state.
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> Self {
        Self {
            ratchet: self.ratchet.clone(),
            local_address: self.local_address.clone(),
            remote_address: self.remote_address.clone(),
            remote_identity: self.remote_identity.clone(),
            base_key: self.base_key,
            pending: self.pending.clone(),
            generation: self.generation,
        }
    }

    /// The remote device's address.
    pub fn remote_address(&self) -> &DeviceAddress {
        &self.remote_address
    }

    /// The remote device's identity, as used in PQXDH.
    pub fn remote_identity(&self) -> &DevicePublic {
        &self.remote_identity
    }

    /// The PQXDH base key that identifies this session.
    pub fn base_key(&self) -> &X25519Public {
        &self.base_key
    }

    /// Whether the peer has not answered yet (messages still carry the PQXDH fields).
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether the session is still pending more than [`MAX_PENDING_AGE_SECS`] after it
    /// was made (`now` from the caller's clock): the peer never answered, so its initial
    /// message may never have arrived. The caller stops sending on it and starts a new
    /// session from a fresh bundle, as libsignal does. A session loaded from a format that
    /// did not record the time counts as made at time 0.
    pub fn pending_expired(&self, now: UnixTime) -> bool {
        self.pending.as_ref().is_some_and(|p| now.0 >= p.since.0.saturating_add(MAX_PENDING_AGE_SECS))
    }

    /// Grows by one with every change; see [`crate::state`] on restored copies. Generations
    /// are per session (a new session starts low), so a client records them per
    /// [`Self::base_key`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Serialises the whole session (secret: keep it in the encrypted store).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        crate::codec::encode_exact(|w| self.encode(w))
    }

    fn encode(&self, w: &mut impl Writer) {
        write_header(w, StateKind::Session, self.generation);
        self.local_address.encode(w);
        self.remote_address.encode(w);
        self.remote_identity.encode(w);
        w.put(self.base_key.as_bytes());
        match &self.pending {
            Some(p) => {
                w.put_bool(true);
                w.put_u64(p.since.0);
                w.put_u32(p.signed_prekey_id);
                match p.one_time_prekey_id {
                    Some(id) => {
                        w.put_bool(true);
                        w.put_u32(id);
                    }
                    None => w.put_bool(false),
                }
                w.put_u8(match p.kem_prekey_kind {
                    KemPrekeyKind::OneTime => 1,
                    KemPrekeyKind::LastResort => 2,
                });
                w.put_u32(p.kem_prekey_id);
                w.put(p.kem_ciphertext.as_bytes());
                w.put(p.identity_key.as_bytes());
            }
            None => w.put_bool(false),
        }
        self.ratchet.encode(w);
    }

    /// Restores a session and refuses it if it is older than the newest copy written
    /// (`expected`: the generation the client recorded, keyed by [`Self::base_key`], in a
    /// place a restored backup cannot roll back).
    pub fn from_bytes_at_least(bytes: &[u8], expected: u64) -> Result<Self, SessionError> {
        let s = Self::from_bytes(bytes)?;
        if s.generation < expected {
            return Err(SessionError::RolledBack { stored: s.generation, expected });
        }
        Ok(s)
    }

    /// Restores a session written by [`Self::to_bytes`]. Prefer
    /// [`Self::from_bytes_at_least`], which detects a copy restored from an old backup.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SessionError> {
        let mut r = Reader::new(bytes);
        let (generation, format) = read_header(&mut r, StateKind::Session)?;
        let local_address = DeviceAddress::decode(&mut r)?;
        let remote_address = DeviceAddress::decode(&mut r)?;
        let remote_identity = DevicePublic::decode_unverified(&mut r)?;
        let key =
            |r: &mut Reader<'_>| X25519Public::from_bytes(r.array()?).map_err(|_| DecodeError::InvalidValue);
        let base_key = key(&mut r)?;
        let pending = if r.bool()? {
            let since = UnixTime(if format >= 2 { r.u64()? } else { 0 });
            let signed_prekey_id = r.u32()?;
            let one_time_prekey_id = if r.bool()? { Some(r.u32()?) } else { None };
            let kem_prekey_kind = match r.u8()? {
                1 => KemPrekeyKind::OneTime,
                2 => KemPrekeyKind::LastResort,
                t => return Err(DecodeError::UnknownTag(t).into()),
            };
            let kem_prekey_id = r.u32()?;
            let kem_ciphertext = KemCiphertext::from_bytes(r.take(crate::crypto::kem::CIPHERTEXT_LEN)?)?;
            let identity_key = key(&mut r)?;
            Some(Pending {
                since,
                signed_prekey_id,
                one_time_prekey_id,
                kem_prekey_kind,
                kem_prekey_id,
                kem_ciphertext,
                identity_key,
            })
        } else {
            None
        };
        let ratchet = DoubleRatchet::decode(&mut r)?;
        r.finish()?;
        Ok(Self { ratchet, local_address, remote_address, remote_identity, base_key, pending, generation })
    }
}
