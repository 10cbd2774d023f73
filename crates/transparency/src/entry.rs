//! What an account's label commits to: its signed device list (which names the account and
//! carries its account key and version), or that the account was deleted (so a name taken
//! again later is a new version, never a silent swap).

use crate::KtError;

/// Prefixes the account name in its akd label (domain separation from any other kind of
/// label a later version may add).
pub const LABEL_PREFIX: &[u8] = b"tacit.account.v1:";

/// The largest encoded entry: a device list of 32 devices with labels fits in 16 KiB.
pub const MAX_ENTRY_BYTES: usize = 16 * 1024;

const FORMAT: u8 = 1;
const KIND_LIST: u8 = 1;
const KIND_DELETED: u8 = 2;

/// The akd label of an account.
pub fn account_label(name: &tacit_protocol::AccountName) -> Vec<u8> {
    let mut label = Vec::with_capacity(LABEL_PREFIX.len() + name.as_str().len());
    label.extend_from_slice(LABEL_PREFIX);
    label.extend_from_slice(name.as_str().as_bytes());
    label
}

/// One version of an account's label.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AccountEntry {
    /// The account's signed device list as the server stores it (`DeviceList::to_bytes`);
    /// the reader verifies it with `DeviceList::verify`.
    List(Vec<u8>),
    /// The account was deleted.
    Deleted,
}

impl AccountEntry {
    /// `u8 format (1) || u8 kind || body`: kind 1 is a list (body: its bytes), 2 deleted
    /// (no body).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::List(list) => {
                let mut out = Vec::with_capacity(2 + list.len());
                out.extend_from_slice(&[FORMAT, KIND_LIST]);
                out.extend_from_slice(list);
                out
            }
            Self::Deleted => vec![FORMAT, KIND_DELETED],
        }
    }

    /// Decodes an entry (the list inside is not verified here).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KtError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(KtError::TooLarge("account entry"));
        }
        match bytes {
            [FORMAT, KIND_LIST, list @ ..] if !list.is_empty() => Ok(Self::List(list.to_vec())),
            [FORMAT, KIND_DELETED] => Ok(Self::Deleted),
            _ => Err(KtError::Malformed("account entry")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_are_refused() {
        for e in [AccountEntry::List(vec![1, 2, 3]), AccountEntry::Deleted] {
            assert_eq!(AccountEntry::from_bytes(&e.to_bytes()), Ok(e));
        }
        for bad in [&[][..], &[1], &[1, 1], &[2, 1, 0], &[1, 2, 0], &[1, 3]] {
            assert_eq!(AccountEntry::from_bytes(bad), Err(KtError::Malformed("account entry")));
        }
        let big = AccountEntry::List(vec![0; MAX_ENTRY_BYTES]).to_bytes();
        assert_eq!(AccountEntry::from_bytes(&big), Err(KtError::TooLarge("account entry")));
    }

    #[test]
    fn labels_are_prefixed_names() {
        let name = tacit_protocol::AccountName::new("alice").unwrap();
        assert_eq!(account_label(&name), b"tacit.account.v1:alice".to_vec());
    }
}
