//! Versioned framing for stored state (identities, prekeys, sessions).
//!
//! Every stored object starts with the magic `TACT`, a kind byte, a format version byte and
//! a 64-bit **generation** that grows with every change. A client keeps the latest
//! generation it wrote somewhere a restored backup cannot roll back; a loaded object whose
//! generation is lower was restored from an old copy, and a session in that state must not
//! send on its chains again (it may already have used those keys).

use crate::codec::{DecodeError, Reader, Writer};

const MAGIC: &[u8; 4] = b"TACT";
/// Current format version of every stored kind. Version 2 (with wire version 2): a pending
/// session records since when it is pending, and a signed prekey's replay memory holds
/// replay tags by sender instead of raw base keys. Version 1 is still read.
const STATE_VERSION: u8 = 2;
/// The oldest format version still read.
const OLDEST_STATE_VERSION: u8 = 1;

/// What a stored blob holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum StateKind {
    Session = 1,
    DeviceIdentity = 2,
    AccountIdentity = 3,
    Prekeys = 4,
    /// A new device's link in progress (`link::PendingLink`).
    PendingLink = 5,
}

pub(crate) fn write_header(w: &mut impl Writer, kind: StateKind, generation: u64) {
    w.put(MAGIC);
    w.put_u8(kind as u8);
    w.put_u8(STATE_VERSION);
    w.put_u64(generation);
}

/// Reads the header; returns the generation and the format version.
pub(crate) fn read_header(r: &mut Reader<'_>, kind: StateKind) -> Result<(u64, u8), DecodeError> {
    if r.take(4)? != MAGIC {
        return Err(DecodeError::InvalidValue);
    }
    let k = r.u8()?;
    if k != kind as u8 {
        return Err(DecodeError::UnknownTag(k));
    }
    let v = r.u8()?;
    if !(OLDEST_STATE_VERSION..=STATE_VERSION).contains(&v) {
        return Err(DecodeError::UnknownVersion(v));
    }
    Ok((r.u64()?, v))
}
