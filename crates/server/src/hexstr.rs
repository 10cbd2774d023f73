//! Lowercase hex, the one way the server writes and reads keys, roots and ids in text
//! (config keys, akd blob names, blob ids).

/// `b` as lowercase hex.
pub(crate) fn encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// 64 hex digits as 32 bytes (`None` for anything else).
pub(crate) fn decode32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
