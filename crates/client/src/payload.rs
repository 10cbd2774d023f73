//! The plaintext inside every message (before the protocol pads and encrypts it):
//!
//! ```text
//! u8 version (1) || u8 kind || u64 sent_time_ms (sender's clock) || body
//! kind 1 (text):          body = UTF-8 text
//! kind 2 (session reset): body empty
//! ```
//!
//! A session reset is sent as the first message of a new session by a device that lost
//! its sessions' state (its data restored from an older copy, or `tacit session reset`):
//! the receiver shows a notice, never a message, and makes that session the one it sends
//! on. Unknown versions and kinds are refused, so later payload kinds (files, receipts)
//! can be added without an old client misreading them.

use crate::error::{ClientError, Result};

const VERSION: u8 = 1;
const KIND_TEXT: u8 = 1;
const KIND_SESSION_RESET: u8 = 2;
const HEADER_LEN: usize = 1 + 1 + 8;
/// Largest text a message carries (the protocol's largest plaintext minus this header).
pub const MAX_TEXT_BYTES: usize = tacit_protocol::padding::MAX_PLAINTEXT_LEN - HEADER_LEN;

/// A decoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TextPayload {
    pub(crate) sent_time_ms: u64,
    pub(crate) text: String,
}

impl TextPayload {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        if self.text.len() > MAX_TEXT_BYTES {
            return Err(ClientError::MessageTooLong { len: self.text.len(), max: MAX_TEXT_BYTES });
        }
        let mut v = Vec::with_capacity(HEADER_LEN + self.text.len());
        v.push(VERSION);
        v.push(KIND_TEXT);
        v.extend_from_slice(&self.sent_time_ms.to_be_bytes());
        v.extend_from_slice(self.text.as_bytes());
        Ok(v)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let (&[version, kind], rest) = bytes.split_first_chunk::<2>()?;
        if version != VERSION || kind != KIND_TEXT {
            return None;
        }
        let (t, text) = rest.split_first_chunk::<8>()?;
        Some(Self { sent_time_ms: u64::from_be_bytes(*t), text: String::from_utf8(text.to_vec()).ok()? })
    }
}

/// A decoded payload of any kind this version reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Payload {
    /// A text message.
    Text(TextPayload),
    /// The sending device replaced its sessions with this device by the one this came on.
    SessionReset {
        /// The sender's clock when it sent it.
        sent_time_ms: u64,
    },
}

impl Payload {
    /// A session reset's encoding.
    pub(crate) fn session_reset(sent_time_ms: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN);
        v.push(VERSION);
        v.push(KIND_SESSION_RESET);
        v.extend_from_slice(&sent_time_ms.to_be_bytes());
        v
    }

    /// Any kind this version reads; `None` for other versions, kinds and malformed bodies.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [VERSION, KIND_SESSION_RESET, rest @ ..] => {
                let t: [u8; 8] = rest.try_into().ok()?;
                Some(Self::SessionReset { sent_time_ms: u64::from_be_bytes(t) })
            }
            _ => TextPayload::decode(bytes).map(Self::Text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let p = TextPayload { sent_time_ms: 42, text: "héllo".into() };
        assert_eq!(TextPayload::decode(&p.encode().unwrap()), Some(p));
        assert_eq!(TextPayload::decode(&[2, 1, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(TextPayload::decode(&[1, 9, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(TextPayload::decode(&[1, 1, 0]), None);
        assert_eq!(TextPayload::decode(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]), None);
        let long = TextPayload { sent_time_ms: 0, text: "a".repeat(MAX_TEXT_BYTES + 1) };
        assert!(matches!(long.encode(), Err(ClientError::MessageTooLong { .. })));
    }

    #[test]
    fn a_session_reset_round_trips_and_is_never_text() {
        let r = Payload::session_reset(42);
        assert_eq!(r, [1, 2, 0, 0, 0, 0, 0, 0, 0, 42]);
        assert_eq!(Payload::decode(&r), Some(Payload::SessionReset { sent_time_ms: 42 }));
        assert_eq!(TextPayload::decode(&r), None, "an older reader refuses it");
        assert_eq!(Payload::decode(&[1, 2, 0, 0, 0, 0, 0, 0, 0, 42, 0]), None, "no body");
        assert_eq!(Payload::decode(&[1, 2, 0]), None);
        assert_eq!(Payload::decode(&[2, 2, 0, 0, 0, 0, 0, 0, 0, 42]), None);
        let t = TextPayload { sent_time_ms: 1, text: "x".into() };
        assert_eq!(Payload::decode(&t.encode().unwrap()), Some(Payload::Text(t)));
    }
}
