//! The public header of an MLS `PrivateMessage` (RFC 9420, section 6.3): what a delivery
//! service can read of a group's message without any key, to keep the per-group order of
//! commits (section 14) and to refuse a message for another group or epoch.
//!
//! Tacit sends every group message, handshakes included, as a `PrivateMessage`
//! (`docs/PROTOCOL.md`, section 13), so the relay refuses the other wire formats. Only the
//! header is read; the rest is ciphertext the relay stores as it came.

/// RFC 9420 section 6: `ProtocolVersion mls10 = 1`.
const MLS10: u16 = 1;
/// RFC 9420 section 6: `WireFormat mls_private_message = 2`.
const PRIVATE_MESSAGE: u16 = 2;

/// RFC 9420 section 6: `ContentType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    /// `application(1)`.
    Application,
    /// `proposal(2)`.
    Proposal,
    /// `commit(3)`.
    Commit,
}

/// What the header of a `PrivateMessage` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrivateHeader<'a> {
    /// `group_id`.
    pub group_id: &'a [u8],
    /// `epoch`.
    pub epoch: u64,
    /// `content_type`.
    pub content_type: ContentType,
}

/// Why bytes are not an MLS `PrivateMessage` Tacit takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than its header says.
    #[error("truncated MLS message")]
    Truncated,
    /// Not MLS 1.0.
    #[error("not an MLS 1.0 message")]
    Version,
    /// Another wire format than `PrivateMessage` (group messages are encrypted).
    #[error("not an MLS PrivateMessage")]
    WireFormat,
    /// A content type RFC 9420 does not define.
    #[error("unknown MLS content type")]
    ContentType,
    /// A vector length that is not the variable-size encoding of section 2.1.2 (prefix
    /// `11`, or a longer encoding than needed).
    #[error("malformed MLS vector length")]
    Length,
}

/// Reads the header of `bytes`, an `MLSMessage` (RFC 9420 section 6) that must hold a
/// `PrivateMessage` (section 6.3.1):
///
/// ```text
/// struct { ProtocolVersion version; WireFormat wire_format; PrivateMessage private_message; } MLSMessage;
/// struct { opaque group_id<V>; uint64 epoch; ContentType content_type;
///          opaque authenticated_data<V>; opaque encrypted_sender_data<V>; opaque ciphertext<V>; } PrivateMessage;
/// ```
///
/// The three vectors after `content_type` are length-checked too, so that a message
/// whose header parses is whole.
pub fn private_header(bytes: &[u8]) -> Result<PrivateHeader<'_>, FrameError> {
    let mut r = Reader(bytes);
    if r.u16()? != MLS10 {
        return Err(FrameError::Version);
    }
    if r.u16()? != PRIVATE_MESSAGE {
        return Err(FrameError::WireFormat);
    }
    let group_id = r.vector()?;
    let epoch = u64::from_be_bytes(r.array::<8>()?);
    let content_type = match r.array::<1>()? {
        [1] => ContentType::Application,
        [2] => ContentType::Proposal,
        [3] => ContentType::Commit,
        _ => return Err(FrameError::ContentType),
    };
    for _ in 0..3 {
        r.vector()?;
    }
    Ok(PrivateHeader { group_id, epoch, content_type })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array::<2>()?))
    }

    /// A vector: its length ([`Self::length`]), then that many bytes.
    fn vector(&mut self) -> Result<&'a [u8], FrameError> {
        let len = self.length()?;
        self.take(usize::try_from(len).map_err(|_| FrameError::Truncated)?)
    }

    /// RFC 9420 section 2.1.2: the two top bits of the first byte give the length of the
    /// length (1, 2 or 4 bytes; `11` is invalid), which must be the shortest that holds it.
    fn length(&mut self) -> Result<u32, FrameError> {
        let [first] = self.array::<1>()?;
        let (len, min) = match first >> 6 {
            0 => (u32::from(first & 0x3f), 0u32),
            1 => {
                let [b] = self.array::<1>()?;
                (u32::from(first & 0x3f) << 8 | u32::from(b), 64)
            }
            2 => {
                let [b, c, d] = self.array::<3>()?;
                (u32::from_be_bytes([first & 0x3f, b, c, d]), 16_384)
            }
            _ => return Err(FrameError::Length),
        };
        if len < min {
            return Err(FrameError::Length);
        }
        Ok(len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn message(group: &[u8], epoch: u64, content: u8) -> Vec<u8> {
        let mut m = vec![0, 1, 0, 2, u8::try_from(group.len()).unwrap()];
        m.extend_from_slice(group);
        m.extend_from_slice(&epoch.to_be_bytes());
        m.push(content);
        m.extend_from_slice(&[0, 1, 7, 0x40, 0x40]);
        m.extend_from_slice(&[9; 64]);
        m
    }

    #[test]
    fn reads_a_header_and_refuses_the_rest() {
        let m = message(b"group", 7, 3);
        let h = private_header(&m).unwrap();
        assert_eq!((h.group_id, h.epoch, h.content_type), (&b"group"[..], 7, ContentType::Commit));
        assert_eq!(private_header(&message(b"g", 0, 1)).unwrap().content_type, ContentType::Application);
        assert_eq!(private_header(&message(b"g", 0, 2)).unwrap().content_type, ContentType::Proposal);
        assert_eq!(private_header(&message(b"g", 0, 4)), Err(FrameError::ContentType));
        assert_eq!(private_header(&message(b"g", 0, 0)), Err(FrameError::ContentType));
        let mut public = m.clone();
        public[3] = 1;
        assert_eq!(private_header(&public), Err(FrameError::WireFormat));
        let mut v2 = m.clone();
        v2[1] = 2;
        assert_eq!(private_header(&v2), Err(FrameError::Version));
        for cut in 0..m.len() {
            assert!(private_header(&m[..cut]).is_err(), "{cut}");
        }
        // A two-byte length holding a value that fits in one, and the invalid prefix 11.
        let mut long = vec![0, 1, 0, 2, 0x40, 1, b'g'];
        long.extend_from_slice(&[0; 8]);
        long.extend_from_slice(&[1, 0, 0, 0]);
        assert_eq!(private_header(&long), Err(FrameError::Length));
        let mut prefix = m.clone();
        prefix[4] = 0xc0;
        assert_eq!(private_header(&prefix), Err(FrameError::Length));
        // Trailing bytes after the last vector are not the header's business.
        let mut trailing = m;
        trailing.push(0);
        assert!(private_header(&trailing).is_ok());
    }

    /// The MLS working group's published vectors (github.com/mlswg/mls-implementations,
    /// `tests/vectors/mls/relay_vectors.json`), for the part of MLS Tacit reads itself:
    /// every variable-size length of `deserialization.json`, and the header of every
    /// `PrivateMessage` (proposal, commit, application) of `message-protection.json` for
    /// all 7 suites, made by other implementations; their `PublicMessage` forms refused.
    #[test]
    fn the_mls_working_groups_vectors_parse() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../tests/vectors/mls/relay_vectors.json")).unwrap();
        let hex = |s: &serde_json::Value| -> Vec<u8> {
            let s = s.as_str().unwrap();
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
        };
        let lengths = v["deserialization"].as_array().unwrap();
        assert!(lengths.len() >= 10);
        for case in lengths {
            let header = hex(&case["vlbytes_header"]);
            let mut r = Reader(&header);
            assert_eq!(u64::from(r.length().unwrap()), case["length"].as_u64().unwrap(), "{case}");
            assert!(r.0.is_empty(), "{case}: the whole header read");
        }
        let cases = v["message_protection"].as_array().unwrap();
        assert_eq!(cases.len(), 7);
        for case in cases {
            let group = hex(&case["group_id"]);
            let epoch = case["epoch"].as_u64().unwrap();
            for (field, content) in [
                ("proposal_priv", ContentType::Proposal),
                ("commit_priv", ContentType::Commit),
                ("application_priv", ContentType::Application),
            ] {
                let m = hex(&case[field]);
                let h = private_header(&m).unwrap();
                assert_eq!(
                    (h.group_id, h.epoch, h.content_type),
                    (group.as_slice(), epoch, content),
                    "{field}"
                );
            }
            for field in ["proposal_pub", "commit_pub"] {
                assert_eq!(private_header(&hex(&case[field])), Err(FrameError::WireFormat), "{field}");
            }
        }
    }
}
