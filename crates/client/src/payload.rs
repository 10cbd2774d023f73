//! The plaintext inside every message (before the protocol pads and encrypts it).
//!
//! Every payload starts with the same header; the body depends on the version and kind:
//!
//! ```text
//! u8 version || u8 kind || u64 sent_time_ms (sender's clock, big-endian) || body
//!
//! version 1 (read forever; a session reset is still sent as version 1):
//!   kind 1 text:            body = UTF-8 text
//!   kind 2 session reset:   body empty
//! version 2 (issue 9: message ids, receipts, retry requests, sent-message sync):
//!   kind 1 text:            body = message_id[16] || UTF-8 text
//!   kind 2 session reset:   body empty
//!   kind 3 sent transcript: body = u8 n || peer account name[n] (a valid name) ||
//!                                  message_id[16] || UTF-8 text
//!                           (only from another device of the own account: what that device
//!                           sent to `peer`; peer = the own name for a note to self)
//!   kind 4 delivery receipt: body = u16 count (1..=256, big-endian) || count x message_id[16]
//!                           (exactly; a receipt says "this device has these messages")
//!   kind 5 retry request:   body = u32 device (big-endian) || digest[16] || u64 server_time_ms
//!                           (the device the undecryptable envelope came from, as the envelope
//!                           named it: the sender's other devices ignore the request;
//!                           digest = SHA-256(envelope content)[..16]; the envelope's
//!                           server_time_ms)
//!   kind 6 nothing:         body empty (what the other devices of an account get when a
//!                           message is resent to one of them after its retry request: a
//!                           send covers every device, and only the one that asked may get
//!                           the text); ignored
//!   kind 7 text with a transparency root: body = message_id[16] || root[112] || UTF-8 text
//!                           (root = u64 epoch || u64 timestamp_ms || digest[32] ||
//!                           signature[64]: the newest signed epoch root the sender has
//!                           seen, so contacts compare their views of the key transparency
//!                           log; sent as kind 1 when the text leaves no room for it)
//!   kind 8 group rejoin:    body = u8 n (1..=32) || group id[n] || key package (1..=8,192 bytes,
//!                           an MLS KeyPackage message)
//!                           (the sending device lost its state of the group (its data restored
//!                           from an older copy): take its old leaf out and this key package in,
//!                           in one commit; honoured only when the key package names the
//!                           sending device and that device is a member)
//!   kinds 9..=15:           unassigned
//!   kind 16 account key update: body = u32 n || signed device list[n] (n ≤ 8,192) ||
//!                           u32 m || the list it replaced[m] (m ≤ 8,192, signed by the old
//!                           key: it names the sender an approver) ||
//!                           u8 0 | u8 1 || account identity (stored-state encoding, 46 bytes)
//!                           (only from an approver of the own account, after it rotated the
//!                           account key: the new list, and to approvers the new key)
//!   kinds 17..=255:         reserved for own-device sync messages
//! ```
//!
//! A message id is 16 random bytes chosen by the sender; it names one message in every copy
//! of it (each recipient device, the sender's other devices, a resend after a retry request),
//! so a copy that arrives twice is stored once.
//!
//! A session reset is sent as the first message of a new session by a device that lost
//! its sessions' state (its data restored from an older copy, or `tacit session reset`):
//! the receiver shows a notice, never a message, and makes that session the one it sends
//! on. Unknown versions and kinds, and malformed bodies, are refused ([`PayloadError`]), so
//! later kinds can be added without an old client misreading them.
//!
//! This file depends on nothing else of the client (the fuzz target `payload_decode`
//! includes it).

use tacit_protocol::AccountName;
use tacit_protocol::padding::MAX_PLAINTEXT_LEN;

/// A message id: 16 random bytes chosen by the sender.
pub(crate) type MessageId = [u8; MESSAGE_ID_LEN];
/// A message id's length.
pub(crate) const MESSAGE_ID_LEN: usize = 16;
/// An envelope digest's length (SHA-256 of the envelope content, truncated).
pub(crate) const DIGEST_LEN: usize = 16;
/// The most message ids one delivery receipt carries.
pub(crate) const MAX_RECEIPT_IDS: usize = 256;

const V1: u8 = 1;
const V2: u8 = 2;
const KIND_TEXT: u8 = 1;
const KIND_SESSION_RESET: u8 = 2;
const KIND_SENT_TRANSCRIPT: u8 = 3;
const KIND_RECEIPT: u8 = 4;
const KIND_RETRY_REQUEST: u8 = 5;
const KIND_NOTHING: u8 = 6;
const KIND_TEXT_ROOT: u8 = 7;
const KIND_GROUP_REJOIN: u8 = 8;
/// Longest group id a rejoin request names (the relay's bound).
pub(crate) const MAX_GROUP_ID_LEN: usize = 32;
/// Largest key package a rejoin request carries (the relay's bound on an uploaded one).
pub(crate) const MAX_KEY_PACKAGE_LEN: usize = 8 * 1024;
/// The length of a gossiped transparency root (kind 7).
pub(crate) const GOSSIP_ROOT_LEN: usize = 112;
/// A gossiped transparency root, as encoded.
pub(crate) type GossipRoot = [u8; GOSSIP_ROOT_LEN];
const KIND_ACCOUNT_KEY_UPDATE: u8 = 16;
/// Largest device list an account key update carries.
const MAX_UPDATE_LIST: usize = 8192;
/// Length of an account identity's stored encoding.
const ACCOUNT_SECRET_LEN: usize = 46;

/// An account identity's stored encoding, carried to the own account's approvers (secret:
/// never printed, wiped on drop).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AccountSecret(pub(crate) zeroize::Zeroizing<Vec<u8>>);

impl core::fmt::Debug for AccountSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AccountSecret(***)")
    }
}
const HEADER_LEN: usize = 1 + 1 + 8;
/// Largest text a message carries: the protocol's largest plaintext less the largest
/// overhead a text travels with (a sent transcript's: header, name, message id), so every
/// text that can be sent can be synced to the sender's other devices as well.
pub const MAX_TEXT_BYTES: usize = MAX_PLAINTEXT_LEN - HEADER_LEN - 1 - AccountName::MAX_LEN - MESSAGE_ID_LEN;

/// Why a payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadError {
    /// A text over [`MAX_TEXT_BYTES`].
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A version this client does not read.
    Version(u8),
    /// A kind this client does not read.
    Kind(u8),
    /// A body that does not decode (lengths, UTF-8, a bad name, counts).
    Malformed,
}

/// A decoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Payload {
    /// A text message; `message_id` is `None` for version 1 (no id).
    Text {
        /// Its id.
        message_id: Option<MessageId>,
        /// The sender's clock when it sent it.
        sent_time_ms: u64,
        /// The text.
        text: String,
        /// The newest transparency root the sender has seen (kind 7).
        root: Option<GossipRoot>,
    },
    /// The sending device replaced its sessions with this device by the one this came on.
    SessionReset {
        /// The sender's clock when it sent it.
        sent_time_ms: u64,
    },
    /// Another device of the own account sent this text to `peer`.
    SentTranscript {
        /// The account it was sent to (the own name: a note to self).
        peer: AccountName,
        /// The message's id.
        message_id: MessageId,
        /// The sending device's clock when it sent it.
        sent_time_ms: u64,
        /// The text.
        text: String,
    },
    /// Nothing (the share of a resend that goes to the devices that did not ask for it).
    Nothing {
        /// The sender's clock when it sent it.
        sent_time_ms: u64,
    },
    /// The sending device has these messages.
    Receipt {
        /// The sender's clock when it sent it.
        sent_time_ms: u64,
        /// 1 to [`MAX_RECEIPT_IDS`] message ids.
        message_ids: Vec<MessageId>,
    },
    /// An approver of the own account rotated the account key: the new signed list and, for
    /// a device that holds the key, the new key.
    AccountKeyUpdate {
        /// The sender's clock when it sent it.
        sent_time_ms: u64,
        /// The new signed device list (signed by the new key).
        list: Vec<u8>,
        /// The list it replaced (signed by the old key).
        previous: Vec<u8>,
        /// The new account identity (to approvers only).
        account: Option<AccountSecret>,
    },
    /// The sending device lost its state of a group it is a member of: re-add it from this
    /// key package (and take its old leaf out) in one commit.
    GroupRejoin {
        /// The sender's clock when it sent it.
        sent_time_ms: u64,
        /// The MLS group id (1 to [`MAX_GROUP_ID_LEN`] bytes).
        group_id: Vec<u8>,
        /// A key package of the sending device (1 to [`MAX_KEY_PACKAGE_LEN`] bytes).
        key_package: Vec<u8>,
    },
    /// The sending device could not decrypt an envelope from `device`: send it again.
    RetryRequest {
        /// The sender's clock when it sent it.
        sent_time_ms: u64,
        /// The device the envelope came from.
        device: u32,
        /// SHA-256 of the envelope's content, first 16 bytes.
        digest: [u8; DIGEST_LEN],
        /// The envelope's server time.
        server_time_ms: u64,
    },
}

fn header(version: u8, kind: u8, sent_time_ms: u64, body_len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + body_len);
    v.push(version);
    v.push(kind);
    v.extend_from_slice(&sent_time_ms.to_be_bytes());
    v
}

/// A message id and what follows it.
fn split_id(b: &[u8]) -> Result<(MessageId, &[u8]), PayloadError> {
    let (id, rest) = b.split_first_chunk::<MESSAGE_ID_LEN>().ok_or(PayloadError::Malformed)?;
    Ok((*id, rest))
}

fn text_len(text: &str) -> Result<(), PayloadError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(PayloadError::TooLong { len: text.len() });
    }
    Ok(())
}

impl Payload {
    /// A text message with a new id (`message_id`) in the version 2 encoding.
    #[cfg(test)]
    pub(crate) fn text(message_id: MessageId, sent_time_ms: u64, text: &str) -> Self {
        Self::Text { message_id: Some(message_id), sent_time_ms, text: text.to_owned(), root: None }
    }

    /// A session reset's encoding (version 1: every client since issue 8 reads it).
    pub(crate) fn session_reset(sent_time_ms: u64) -> Vec<u8> {
        header(V1, KIND_SESSION_RESET, sent_time_ms, 0)
    }

    /// The encoding; a text over [`MAX_TEXT_BYTES`] or a receipt with no id or more than
    /// [`MAX_RECEIPT_IDS`] is refused.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        Ok(match self {
            Self::Text { message_id: None, sent_time_ms, text, .. } => {
                text_len(text)?;
                let mut v = header(V1, KIND_TEXT, *sent_time_ms, text.len());
                v.extend_from_slice(text.as_bytes());
                v
            }
            Self::Text { message_id: Some(id), sent_time_ms, text, root } => {
                text_len(text)?;
                // The root rides along when the padded plaintext has room for it.
                match root.filter(|_| {
                    HEADER_LEN + MESSAGE_ID_LEN + GOSSIP_ROOT_LEN + text.len() <= MAX_PLAINTEXT_LEN
                }) {
                    Some(root) => {
                        let mut v = header(
                            V2,
                            KIND_TEXT_ROOT,
                            *sent_time_ms,
                            MESSAGE_ID_LEN + GOSSIP_ROOT_LEN + text.len(),
                        );
                        v.extend_from_slice(id);
                        v.extend_from_slice(&root);
                        v.extend_from_slice(text.as_bytes());
                        v
                    }
                    None => {
                        let mut v = header(V2, KIND_TEXT, *sent_time_ms, MESSAGE_ID_LEN + text.len());
                        v.extend_from_slice(id);
                        v.extend_from_slice(text.as_bytes());
                        v
                    }
                }
            }
            Self::SessionReset { sent_time_ms } => header(V2, KIND_SESSION_RESET, *sent_time_ms, 0),
            Self::Nothing { sent_time_ms } => header(V2, KIND_NOTHING, *sent_time_ms, 0),
            Self::SentTranscript { peer, message_id, sent_time_ms, text } => {
                text_len(text)?;
                let name = peer.as_str().as_bytes();
                let n = u8::try_from(name.len()).map_err(|_| PayloadError::Malformed)?;
                let mut v = header(
                    V2,
                    KIND_SENT_TRANSCRIPT,
                    *sent_time_ms,
                    1 + name.len() + MESSAGE_ID_LEN + text.len(),
                );
                v.push(n);
                v.extend_from_slice(name);
                v.extend_from_slice(message_id);
                v.extend_from_slice(text.as_bytes());
                v
            }
            Self::Receipt { sent_time_ms, message_ids } => {
                if message_ids.is_empty() || message_ids.len() > MAX_RECEIPT_IDS {
                    return Err(PayloadError::Malformed);
                }
                let count = u16::try_from(message_ids.len()).map_err(|_| PayloadError::Malformed)?;
                let mut v = header(V2, KIND_RECEIPT, *sent_time_ms, 2 + MESSAGE_ID_LEN * message_ids.len());
                v.extend_from_slice(&count.to_be_bytes());
                for id in message_ids {
                    v.extend_from_slice(id);
                }
                v
            }
            // Carries a secret: a sender uses [`Payload::account_key_update`], whose memory is
            // wiped; this copy is for tests and the fuzz target's round trip.
            Self::AccountKeyUpdate { sent_time_ms, list, previous, account } => Self::account_key_update(
                *sent_time_ms,
                list,
                previous,
                account.as_ref().map(|a| a.0.as_slice()),
            )?
            .to_vec(),
            Self::GroupRejoin { sent_time_ms, group_id, key_package } => {
                if !(1..=MAX_GROUP_ID_LEN).contains(&group_id.len())
                    || !(1..=MAX_KEY_PACKAGE_LEN).contains(&key_package.len())
                {
                    return Err(PayloadError::Malformed);
                }
                let n = u8::try_from(group_id.len()).map_err(|_| PayloadError::Malformed)?;
                let mut v =
                    header(V2, KIND_GROUP_REJOIN, *sent_time_ms, 1 + group_id.len() + key_package.len());
                v.push(n);
                v.extend_from_slice(group_id);
                v.extend_from_slice(key_package);
                v
            }
            Self::RetryRequest { sent_time_ms, device, digest, server_time_ms } => {
                let mut v = header(V2, KIND_RETRY_REQUEST, *sent_time_ms, 4 + DIGEST_LEN + 8);
                v.extend_from_slice(&device.to_be_bytes());
                v.extend_from_slice(digest);
                v.extend_from_slice(&server_time_ms.to_be_bytes());
                v
            }
        })
    }

    /// An account key update's encoding (kind 16), in memory wiped on drop.
    pub(crate) fn account_key_update(
        sent_time_ms: u64,
        list: &[u8],
        previous: &[u8],
        account: Option<&[u8]>,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, PayloadError> {
        let n = u32::try_from(list.len()).map_err(|_| PayloadError::Malformed)?;
        let m = u32::try_from(previous.len()).map_err(|_| PayloadError::Malformed)?;
        if list.len() > MAX_UPDATE_LIST
            || previous.len() > MAX_UPDATE_LIST
            || account.is_some_and(|a| a.len() != ACCOUNT_SECRET_LEN)
        {
            return Err(PayloadError::Malformed);
        }
        let len = HEADER_LEN + 8 + list.len() + previous.len() + 1 + account.map_or(0, <[u8]>::len);
        let mut v = zeroize::Zeroizing::new(Vec::with_capacity(len));
        v.extend_from_slice(&header(V2, KIND_ACCOUNT_KEY_UPDATE, sent_time_ms, 0));
        v.extend_from_slice(&n.to_be_bytes());
        v.extend_from_slice(list);
        v.extend_from_slice(&m.to_be_bytes());
        v.extend_from_slice(previous);
        match account {
            Some(a) => {
                v.push(1);
                v.extend_from_slice(a);
            }
            None => v.push(0),
        }
        Ok(v)
    }

    /// Any version and kind this client reads; anything else is refused.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let (&[version, kind], rest) = bytes.split_first_chunk::<2>().ok_or(PayloadError::Malformed)?;
        let (t, body) = rest.split_first_chunk::<8>().ok_or(PayloadError::Malformed)?;
        let sent_time_ms = u64::from_be_bytes(*t);
        let utf8 = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| PayloadError::Malformed);
        match (version, kind) {
            (V1, KIND_TEXT) => {
                Ok(Self::Text { message_id: None, sent_time_ms, text: utf8(body)?, root: None })
            }
            (V1 | V2, KIND_SESSION_RESET) if body.is_empty() => Ok(Self::SessionReset { sent_time_ms }),
            (V1 | V2, KIND_SESSION_RESET) => Err(PayloadError::Malformed),
            (V1, k) => Err(PayloadError::Kind(k)),
            (V2, KIND_TEXT) => {
                let (message_id, text) = split_id(body)?;
                Ok(Self::Text { message_id: Some(message_id), sent_time_ms, text: utf8(text)?, root: None })
            }
            (V2, KIND_TEXT_ROOT) => {
                let (message_id, rest) = split_id(body)?;
                let (root, text) =
                    rest.split_first_chunk::<GOSSIP_ROOT_LEN>().ok_or(PayloadError::Malformed)?;
                Ok(Self::Text {
                    message_id: Some(message_id),
                    sent_time_ms,
                    text: utf8(text)?,
                    root: Some(*root),
                })
            }
            (V2, KIND_SENT_TRANSCRIPT) => {
                let (&n, rest) = body.split_first().ok_or(PayloadError::Malformed)?;
                let n = usize::from(n);
                if rest.len() < n {
                    return Err(PayloadError::Malformed);
                }
                let (name, rest) = rest.split_at(n);
                let name = std::str::from_utf8(name).map_err(|_| PayloadError::Malformed)?;
                let peer = AccountName::new(name).map_err(|_| PayloadError::Malformed)?;
                let (message_id, text) = split_id(rest)?;
                Ok(Self::SentTranscript { peer, message_id, sent_time_ms, text: utf8(text)? })
            }
            (V2, KIND_RECEIPT) => {
                let (c, ids) = body.split_first_chunk::<2>().ok_or(PayloadError::Malformed)?;
                let count = usize::from(u16::from_be_bytes(*c));
                if count == 0 || count > MAX_RECEIPT_IDS || ids.len() != count * MESSAGE_ID_LEN {
                    return Err(PayloadError::Malformed);
                }
                let mut message_ids = Vec::with_capacity(count);
                for chunk in ids.chunks_exact(MESSAGE_ID_LEN) {
                    message_ids.push(split_id(chunk)?.0);
                }
                Ok(Self::Receipt { sent_time_ms, message_ids })
            }
            (V2, KIND_NOTHING) if body.is_empty() => Ok(Self::Nothing { sent_time_ms }),
            (V2, KIND_NOTHING) => Err(PayloadError::Malformed),
            (V2, KIND_ACCOUNT_KEY_UPDATE) => {
                let (n, rest) = body.split_first_chunk::<4>().ok_or(PayloadError::Malformed)?;
                let n = usize::try_from(u32::from_be_bytes(*n)).map_err(|_| PayloadError::Malformed)?;
                if n > MAX_UPDATE_LIST || n > rest.len() {
                    return Err(PayloadError::Malformed);
                }
                let (list, rest) = rest.split_at(n);
                let (m, rest) = rest.split_first_chunk::<4>().ok_or(PayloadError::Malformed)?;
                let m = usize::try_from(u32::from_be_bytes(*m)).map_err(|_| PayloadError::Malformed)?;
                if m > MAX_UPDATE_LIST || m > rest.len() {
                    return Err(PayloadError::Malformed);
                }
                let (previous, rest) = rest.split_at(m);
                let account = match rest {
                    [0] => None,
                    [1, a @ ..] if a.len() == ACCOUNT_SECRET_LEN => {
                        Some(AccountSecret(zeroize::Zeroizing::new(a.to_vec())))
                    }
                    _ => return Err(PayloadError::Malformed),
                };
                Ok(Self::AccountKeyUpdate {
                    sent_time_ms,
                    list: list.to_vec(),
                    previous: previous.to_vec(),
                    account,
                })
            }
            (V2, KIND_RETRY_REQUEST) => {
                let (d, rest) = body.split_first_chunk::<4>().ok_or(PayloadError::Malformed)?;
                let (digest, rest) = rest.split_first_chunk::<DIGEST_LEN>().ok_or(PayloadError::Malformed)?;
                let t: [u8; 8] = rest.try_into().map_err(|_| PayloadError::Malformed)?;
                Ok(Self::RetryRequest {
                    sent_time_ms,
                    device: u32::from_be_bytes(*d),
                    digest: *digest,
                    server_time_ms: u64::from_be_bytes(t),
                })
            }
            (V2, KIND_GROUP_REJOIN) => {
                let (&n, rest) = body.split_first().ok_or(PayloadError::Malformed)?;
                let n = usize::from(n);
                if !(1..=MAX_GROUP_ID_LEN).contains(&n) || rest.len() <= n {
                    return Err(PayloadError::Malformed);
                }
                let (group_id, key_package) = rest.split_at(n);
                if key_package.len() > MAX_KEY_PACKAGE_LEN {
                    return Err(PayloadError::Malformed);
                }
                Ok(Self::GroupRejoin {
                    sent_time_ms,
                    group_id: group_id.to_vec(),
                    key_package: key_package.to_vec(),
                })
            }
            (V2, k) => Err(PayloadError::Kind(k)),
            (v, _) => Err(PayloadError::Version(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> AccountName {
        AccountName::new(n).unwrap()
    }

    #[test]
    fn version_1_payloads_still_decode() {
        // Bytes as a client before issue 9 wrote them.
        let mut v1 = vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 42];
        v1.extend_from_slice("héllo".as_bytes());
        assert_eq!(
            Payload::decode(&v1),
            Ok(Payload::Text { message_id: None, sent_time_ms: 42, text: "héllo".into(), root: None })
        );
        let reset = [1, 2, 0, 0, 0, 0, 0, 0, 0, 42];
        assert_eq!(Payload::decode(&reset), Ok(Payload::SessionReset { sent_time_ms: 42 }));
        assert_eq!(Payload::session_reset(42), reset, "a reset is still sent as version 1");
        // Version 1 never had the later kinds.
        assert_eq!(Payload::decode(&[1, 4, 0, 0, 0, 0, 0, 0, 0, 0]), Err(PayloadError::Kind(4)));
        assert_eq!(Payload::decode(&[1, 2, 0, 0, 0, 0, 0, 0, 0, 42, 0]), Err(PayloadError::Malformed));
        assert_eq!(Payload::decode(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]), Err(PayloadError::Malformed));
        assert_eq!(Payload::decode(&[1, 1, 0]), Err(PayloadError::Malformed));
        let t = Payload::Text { message_id: None, sent_time_ms: 1, text: "x".into(), root: None };
        assert_eq!(t.encode().unwrap(), [1, 1, 0, 0, 0, 0, 0, 0, 0, 1, b'x']);
    }

    #[test]
    fn version_2_encodings_are_exact_and_round_trip() {
        let id = [7u8; 16];
        let text = Payload::text(id, 258, "hi");
        let mut want = vec![2, 1, 0, 0, 0, 0, 0, 0, 1, 2];
        want.extend_from_slice(&id);
        want.extend_from_slice(b"hi");
        assert_eq!(text.encode().unwrap(), want);

        let t =
            Payload::SentTranscript { peer: name("bob"), message_id: id, sent_time_ms: 1, text: "yo".into() };
        let mut want = vec![2, 3, 0, 0, 0, 0, 0, 0, 0, 1, 3, b'b', b'o', b'b'];
        want.extend_from_slice(&id);
        want.extend_from_slice(b"yo");
        assert_eq!(t.encode().unwrap(), want);

        let r = Payload::Receipt { sent_time_ms: 1, message_ids: vec![[1; 16], [2; 16]] };
        let mut want = vec![2, 4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2];
        want.extend_from_slice(&[1; 16]);
        want.extend_from_slice(&[2; 16]);
        assert_eq!(r.encode().unwrap(), want);

        let q = Payload::RetryRequest { sent_time_ms: 1, device: 3, digest: [9; 16], server_time_ms: 5 };
        let mut want = vec![2, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3];
        want.extend_from_slice(&[9; 16]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(q.encode().unwrap(), want);

        let reset = Payload::SessionReset { sent_time_ms: 9 };
        for p in [text, t, r, q, reset] {
            assert_eq!(Payload::decode(&p.encode().unwrap()), Ok(p));
        }
    }

    #[test]
    fn group_rejoins_round_trip_and_their_bounds_hold() {
        let r =
            Payload::GroupRejoin { sent_time_ms: 3, group_id: vec![0xab; 32], key_package: vec![1, 2, 3] };
        let bytes = r.encode().unwrap();
        let mut want = vec![2, 8, 0, 0, 0, 0, 0, 0, 0, 3, 32];
        want.extend_from_slice(&[0xab; 32]);
        want.extend_from_slice(&[1, 2, 3]);
        assert_eq!(bytes, want);
        assert_eq!(Payload::decode(&bytes), Ok(r));
        // The largest key package passes; one byte more, an empty one, or a group id of 0 or
        // 33 bytes is refused both ways.
        let big = Payload::GroupRejoin {
            sent_time_ms: 0,
            group_id: vec![1],
            key_package: vec![9; MAX_KEY_PACKAGE_LEN],
        };
        let mut bytes = big.encode().unwrap();
        assert_eq!(Payload::decode(&bytes), Ok(big));
        bytes.push(9);
        assert_eq!(Payload::decode(&bytes), Err(PayloadError::Malformed));
        for (g, k) in [(0, 1), (33, 1), (1, 0), (1, MAX_KEY_PACKAGE_LEN + 1)] {
            let p = Payload::GroupRejoin { sent_time_ms: 0, group_id: vec![1; g], key_package: vec![1; k] };
            assert_eq!(p.encode(), Err(PayloadError::Malformed), "{g} {k}");
            let mut raw = vec![2, 8, 0, 0, 0, 0, 0, 0, 0, 0, g as u8];
            raw.extend(vec![1; g + k]);
            assert_eq!(Payload::decode(&raw), Err(PayloadError::Malformed), "{g} {k}");
        }
    }

    #[test]
    fn account_key_updates_round_trip_and_bad_ones_are_refused() {
        let list = vec![7u8; 300];
        let prev = vec![8u8; 200];
        let secret = vec![9u8; ACCOUNT_SECRET_LEN];
        for account in [None, Some(secret.as_slice())] {
            let bytes = Payload::account_key_update(5, &list, &prev, account).unwrap();
            let p = Payload::decode(&bytes).unwrap();
            assert_eq!(
                p,
                Payload::AccountKeyUpdate {
                    sent_time_ms: 5,
                    list: list.clone(),
                    previous: prev.clone(),
                    account: account.map(|a| AccountSecret(zeroize::Zeroizing::new(a.to_vec()))),
                }
            );
            assert_eq!(p.encode().unwrap(), bytes.to_vec());
            assert!(!format!("{p:?}").contains("9, 9"), "the key is never printed");
        }
        let good = Payload::account_key_update(5, &list, &prev, Some(&secret)).unwrap();
        // Cut short, a wrong key length, a list length past the end, trailing bytes.
        for bad in [good[..good.len() - 1].to_vec(), [&good[..], &[0]].concat(), {
            let mut b = good.to_vec();
            b[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
            b
        }] {
            assert_eq!(Payload::decode(&bad), Err(PayloadError::Malformed));
        }
        assert!(Payload::account_key_update(5, &vec![0; MAX_UPDATE_LIST + 1], &prev, None).is_err());
        assert!(Payload::account_key_update(5, &list, &vec![0; MAX_UPDATE_LIST + 1], None).is_err());
        assert!(Payload::account_key_update(5, &list, &prev, Some(&[1, 2, 3])).is_err());
    }

    #[test]
    fn a_text_carries_the_newest_root_when_it_has_room() {
        let root = [7u8; GOSSIP_ROOT_LEN];
        let t =
            Payload::Text { message_id: Some([1; 16]), sent_time_ms: 9, text: "hi".into(), root: Some(root) };
        let bytes = t.encode().unwrap();
        assert_eq!(bytes[1], KIND_TEXT_ROOT);
        assert_eq!(Payload::decode(&bytes), Ok(t));
        // Cut into the root: refused.
        assert_eq!(Payload::decode(&bytes[..HEADER_LEN + MESSAGE_ID_LEN + 10]), Err(PayloadError::Malformed));
        // The longest text leaves no room: it goes as kind 1, without the root.
        let long = "a".repeat(MAX_TEXT_BYTES);
        let t = Payload::Text {
            message_id: Some([1; 16]),
            sent_time_ms: 9,
            text: long.clone(),
            root: Some(root),
        };
        let bytes = t.encode().unwrap();
        assert_eq!(bytes[1], KIND_TEXT);
        assert!(bytes.len() <= MAX_PLAINTEXT_LEN);
        assert_eq!(
            Payload::decode(&bytes),
            Ok(Payload::Text { message_id: Some([1; 16]), sent_time_ms: 9, text: long, root: None })
        );
    }

    #[test]
    fn malformed_and_unknown_payloads_are_refused() {
        let h = |kind: u8| vec![2, kind, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(Payload::decode(&[3, 1, 0, 0, 0, 0, 0, 0, 0, 0]), Err(PayloadError::Version(3)));
        assert_eq!(Payload::decode(&h(6)), Ok(Payload::Nothing { sent_time_ms: 0 }));
        assert_eq!(Payload::decode(&[2, 6, 0, 0, 0, 0, 0, 0, 0, 0, 1]), Err(PayloadError::Malformed));
        assert_eq!(Payload::decode(&h(7)), Err(PayloadError::Malformed), "a text with a root needs both");
        assert_eq!(
            Payload::decode(&h(8)),
            Err(PayloadError::Malformed),
            "a rejoin needs a group and a key package"
        );
        assert_eq!(Payload::decode(&h(9)), Err(PayloadError::Kind(9)));
        assert_eq!(
            Payload::decode(&h(16)),
            Err(PayloadError::Malformed),
            "an account key update needs its body"
        );
        assert_eq!(Payload::decode(&h(17)), Err(PayloadError::Kind(17)), "left for device sync");
        assert_eq!(Payload::decode(&h(1)), Err(PayloadError::Malformed), "a text needs its id");
        // Receipts: a count of 0, over the bound, or not matching the body.
        let receipt = |count: u16, ids: usize| {
            let mut v = h(4);
            v.extend_from_slice(&count.to_be_bytes());
            v.extend(std::iter::repeat_n(1u8, ids * 16));
            Payload::decode(&v)
        };
        assert!(receipt(1, 1).is_ok());
        assert!(receipt(256, 256).is_ok());
        assert_eq!(receipt(0, 0), Err(PayloadError::Malformed));
        assert_eq!(receipt(257, 257), Err(PayloadError::Malformed));
        assert_eq!(receipt(2, 1), Err(PayloadError::Malformed));
        assert_eq!(receipt(1, 2), Err(PayloadError::Malformed));
        let too_many = Payload::Receipt { sent_time_ms: 0, message_ids: vec![[0; 16]; 257] };
        assert_eq!(too_many.encode(), Err(PayloadError::Malformed));
        assert_eq!(
            Payload::Receipt { sent_time_ms: 0, message_ids: vec![] }.encode(),
            Err(PayloadError::Malformed)
        );
        // Transcripts: a name that is not an account name, a length past the body.
        let mut bad = h(3);
        bad.extend_from_slice(&[3, b'B', b'O', b'B']);
        bad.extend_from_slice(&[0; 16]);
        assert_eq!(Payload::decode(&bad), Err(PayloadError::Malformed));
        let mut short = h(3);
        short.extend_from_slice(&[200, b'b']);
        assert_eq!(Payload::decode(&short), Err(PayloadError::Malformed));
        // Retry requests are exactly 28 bytes of body.
        let mut q = h(5);
        q.extend_from_slice(&[0; 28]);
        assert!(Payload::decode(&q).is_ok());
        q.push(0);
        assert_eq!(Payload::decode(&q), Err(PayloadError::Malformed));
        // Texts are bounded so that their transcript fits a message.
        let long = Payload::text([0; 16], 0, &"a".repeat(MAX_TEXT_BYTES + 1));
        assert_eq!(long.encode(), Err(PayloadError::TooLong { len: MAX_TEXT_BYTES + 1 }));
        let longest = Payload::SentTranscript {
            peer: name(&"a".repeat(AccountName::MAX_LEN)),
            message_id: [0; 16],
            sent_time_ms: 0,
            text: "a".repeat(MAX_TEXT_BYTES),
        };
        assert_eq!(longest.encode().unwrap().len(), MAX_PLAINTEXT_LEN);
    }
}
