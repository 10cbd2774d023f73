//! Who a leaf is: the account and device named in its credential.
//!
//! A leaf's credential is an MLS `basic` credential (RFC 9420 §5.3) whose identifier is
//! `u8 version (1) || u8 len || account name || u32 device id` (big-endian). The
//! leaf's signature key is the device's own Ed25519 signing key, the one its account's
//! signed device list names, so the pair (credential, signature key) is checked against
//! that list and nothing else ([`crate::Directory`]).

use mls_rs_core::identity::{BasicCredential, Credential, SigningIdentity};
use tacit_protocol::{AccountName, DeviceAddress, DeviceId};

const VERSION: u8 = 1;

/// The account and device a leaf belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId {
    /// The account.
    pub account: AccountName,
    /// The account's device.
    pub device: DeviceId,
}

impl MemberId {
    /// The member for a device address.
    pub fn new(address: &DeviceAddress) -> Self {
        Self { account: address.account.clone(), device: address.device }
    }

    /// The device address.
    pub fn address(&self) -> DeviceAddress {
        DeviceAddress { account: self.account.clone(), device: self.device }
    }

    /// The credential identifier.
    pub fn to_identifier(&self) -> Vec<u8> {
        let name = self.account.as_str().as_bytes();
        let mut v = Vec::with_capacity(2 + name.len() + 4);
        v.push(VERSION);
        // Account names are at most 32 bytes (`AccountName::new`).
        v.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        v.extend_from_slice(name);
        v.extend_from_slice(&self.device.get().to_be_bytes());
        v
    }

    /// Parses an identifier; only the one encoding [`Self::to_identifier`] writes.
    pub fn from_identifier(bytes: &[u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        let (&len, rest) = rest.split_first()?;
        if version != VERSION || rest.len() != usize::from(len) + 4 {
            return None;
        }
        let (name, device) = rest.split_at(usize::from(len));
        let account = AccountName::new(std::str::from_utf8(name).ok()?).ok()?;
        let device = DeviceId::new(u32::from_be_bytes(device.try_into().ok()?))?;
        Some(Self { account, device })
    }

    /// The member a signing identity names, if its credential is Tacit's.
    pub fn from_signing_identity(identity: &SigningIdentity) -> Option<Self> {
        match &identity.credential {
            Credential::Basic(basic) => Self::from_identifier(&basic.identifier),
            _ => None,
        }
    }

    pub(crate) fn credential(&self) -> Credential {
        Credential::Basic(BasicCredential::new(self.to_identifier()))
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.account.as_str(), self.device.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_round_trip_and_one_encoding() {
        let m = MemberId { account: AccountName::new("alice").unwrap(), device: DeviceId::new(7).unwrap() };
        let id = m.to_identifier();
        assert_eq!(id, [&[1u8, 5][..], b"alice", &[0, 0, 0, 7]].concat());
        assert_eq!(MemberId::from_identifier(&id), Some(m.clone()));
        // Every cut, an extra byte, another version, a bad name, device 0: refused.
        for cut in 0..id.len() {
            assert_eq!(MemberId::from_identifier(&id[..cut]), None);
        }
        assert_eq!(MemberId::from_identifier(&[id.clone(), vec![0]].concat()), None);
        let mut v2 = id.clone();
        v2[0] = 2;
        assert_eq!(MemberId::from_identifier(&v2), None);
        let mut upper = id.clone();
        upper[2] = b'A';
        assert_eq!(MemberId::from_identifier(&upper), None);
        let mut zero = id;
        zero[7..].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(MemberId::from_identifier(&zero), None);
    }
}
