//! The group's name, avatar text and member roles, kept in the encrypted group context
//! (a group context extension, RFC 9420 §11.1), never in server metadata: every member
//! agrees on it through the key schedule, joiners get it in the Welcome's encrypted
//! GroupInfo, and a rename is a GroupContextExtensions proposal inside an encrypted commit.
//!
//! Encoding (one encoding per value): `u8 version (1) || u8 name_len || name ||
//! u8 avatar_len || avatar || u16 admins || admins × (u8 len || account)`, accounts sorted
//! and distinct.

use mls_rs::Extension;
use mls_rs::extension::ExtensionType;
use tacit_protocol::AccountName;

/// The extension type (from RFC 9420's private-use range, §17.3).
pub const META_EXTENSION: ExtensionType = ExtensionType::new(0xF7A1);
/// A group name is at most this many bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 128;
/// Avatar text (an emoji or a few letters) is at most this many bytes.
pub const MAX_AVATAR_BYTES: usize = 32;
/// At most this many admin accounts.
pub const MAX_ADMINS: usize = 1_000;

const VERSION: u8 = 1;

/// What the group says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMeta {
    /// The group's name.
    pub name: String,
    /// Short text shown as the group's picture.
    pub avatar: String,
    /// Accounts with the admin role (sorted, distinct).
    pub admins: Vec<AccountName>,
}

/// Why group metadata was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetaError {
    /// A name that is empty, too long, or has control characters.
    #[error("a group name is 1 to {MAX_NAME_BYTES} bytes with no control characters")]
    BadName,
    /// Avatar text too long or with control characters.
    #[error("avatar text is at most {MAX_AVATAR_BYTES} bytes with no control characters")]
    BadAvatar,
    /// Too many admins.
    #[error("at most {MAX_ADMINS} admins")]
    TooManyAdmins,
    /// Bytes that are not the one encoding of a value.
    #[error("malformed group metadata")]
    Malformed,
}

fn valid_text(s: &str, max: usize, allow_empty: bool) -> bool {
    (allow_empty || !s.is_empty()) && s.len() <= max && !s.chars().any(char::is_control)
}

impl GroupMeta {
    /// Checked metadata (admins sorted and deduplicated).
    pub fn new(name: &str, avatar: &str, mut admins: Vec<AccountName>) -> Result<Self, MetaError> {
        if !valid_text(name, MAX_NAME_BYTES, false) {
            return Err(MetaError::BadName);
        }
        if !valid_text(avatar, MAX_AVATAR_BYTES, true) {
            return Err(MetaError::BadAvatar);
        }
        admins.sort();
        admins.dedup();
        if admins.len() > MAX_ADMINS {
            return Err(MetaError::TooManyAdmins);
        }
        Ok(Self { name: name.to_owned(), avatar: avatar.to_owned(), admins })
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![VERSION];
        for text in [&self.name, &self.avatar] {
            // Bounded by `new` (at most 128 bytes).
            v.push(u8::try_from(text.len()).unwrap_or(u8::MAX));
            v.extend_from_slice(text.as_bytes());
        }
        v.extend_from_slice(&u16::try_from(self.admins.len()).unwrap_or(u16::MAX).to_be_bytes());
        for a in &self.admins {
            v.push(u8::try_from(a.as_str().len()).unwrap_or(u8::MAX));
            v.extend_from_slice(a.as_str().as_bytes());
        }
        v
    }

    /// Decodes the one encoding [`Self::to_bytes`] writes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MetaError> {
        fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], MetaError> {
            if r.len() < n {
                return Err(MetaError::Malformed);
            }
            let (a, b) = r.split_at(n);
            *r = b;
            Ok(a)
        }
        fn text(r: &mut &[u8]) -> Result<String, MetaError> {
            let len = take(r, 1)?.first().copied().map(usize::from).ok_or(MetaError::Malformed)?;
            std::str::from_utf8(take(r, len)?).map(str::to_owned).map_err(|_| MetaError::Malformed)
        }
        let mut r = bytes;
        if take(&mut r, 1)? != [VERSION] {
            return Err(MetaError::Malformed);
        }
        let name = text(&mut r)?;
        let avatar = text(&mut r)?;
        let n = take(&mut r, 2)?;
        let n = usize::from(u16::from_be_bytes([
            n.first().copied().unwrap_or(0),
            n.get(1).copied().unwrap_or(0),
        ]));
        if n > MAX_ADMINS {
            return Err(MetaError::TooManyAdmins);
        }
        let mut admins = Vec::with_capacity(n);
        for _ in 0..n {
            admins.push(AccountName::new(&text(&mut r)?).map_err(|_| MetaError::Malformed)?);
        }
        if !r.is_empty() || !admins.windows(2).all(|w| matches!(w, [a, b] if a < b)) {
            return Err(MetaError::Malformed);
        }
        Self::new(&name, &avatar, admins)
    }

    pub(crate) fn extension(&self) -> Extension {
        Extension::new(META_EXTENSION, self.to_bytes())
    }

    /// Whether `account` has the admin role.
    pub fn is_admin(&self, account: &AccountName) -> bool {
        self.admins.binary_search(account).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> AccountName {
        AccountName::new(s).unwrap()
    }

    #[test]
    fn round_trip_and_one_encoding() {
        let m = GroupMeta::new("Family 🏡", "🏡", vec![name("bob"), name("alice"), name("bob")]).unwrap();
        assert_eq!(m.admins, vec![name("alice"), name("bob")]);
        let b = m.to_bytes();
        assert_eq!(GroupMeta::from_bytes(&b).unwrap(), m);
        for cut in 0..b.len() {
            assert!(GroupMeta::from_bytes(&b[..cut]).is_err());
        }
        assert!(GroupMeta::from_bytes(&[b.clone(), vec![0]].concat()).is_err());
        // Admins out of order are not the encoding of anything.
        let swapped = GroupMeta { admins: vec![name("bob"), name("alice")], ..m.clone() }.to_bytes();
        assert_eq!(GroupMeta::from_bytes(&swapped), Err(MetaError::Malformed));
    }

    #[test]
    fn bounds() {
        assert_eq!(GroupMeta::new("", "", vec![]), Err(MetaError::BadName));
        assert_eq!(GroupMeta::new(&"x".repeat(129), "", vec![]), Err(MetaError::BadName));
        assert_eq!(GroupMeta::new("a\nb", "", vec![]), Err(MetaError::BadName));
        assert_eq!(GroupMeta::new("ok", &"x".repeat(33), vec![]), Err(MetaError::BadAvatar));
        assert!(GroupMeta::new(&"x".repeat(128), &"y".repeat(32), vec![]).is_ok());
    }
}
