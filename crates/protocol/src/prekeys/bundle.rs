//! The bundle Alice fetches to start a session (PQXDH section 3.2).

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::CryptoError;
use crate::identity::{DeviceAddress, DevicePublic};

use super::public::{KemPrekeyPublic, OneTimePrekeyPublic, SignedPrekeyPublic};

/// Format version of a [`PrekeyBundle`] encoding.
const BUNDLE_VERSION: u8 = 1;

/// Everything Alice needs to start a session with one of Bob's devices (PQXDH section 3.2).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PrekeyBundle {
    /// The device the bundle belongs to.
    pub address: DeviceAddress,
    /// The device's identity.
    pub identity: DevicePublic,
    /// Its current signed prekey.
    pub signed_prekey: SignedPrekeyPublic,
    /// A one-time KEM prekey, or the last-resort one when none is left.
    pub kem_prekey: KemPrekeyPublic,
    /// A one-time X25519 prekey, if any is left.
    pub one_time_prekey: Option<OneTimePrekeyPublic>,
}

impl PrekeyBundle {
    /// Encodes the bundle.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(2_000);
        w.put_u8(BUNDLE_VERSION);
        self.address.encode(&mut w);
        self.identity.encode(&mut w);
        self.signed_prekey.encode(&mut w);
        self.kem_prekey.encode(&mut w);
        match &self.one_time_prekey {
            Some(k) => {
                w.put_bool(true);
                k.encode(&mut w);
            }
            None => w.put_bool(false),
        }
        w
    }

    /// Decodes a bundle. The identity's binding signature is verified here (a
    /// [`DevicePublic`] is always a verified one), so a bundle with a forged binding is
    /// refused; the prekey signatures and the match with the device list are checked by
    /// [`crate::Session::initiate`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = r.u8()?;
        if v != BUNDLE_VERSION {
            return Err(DecodeError::UnknownVersion(v));
        }
        let address = DeviceAddress::decode(&mut r)?;
        let identity = DevicePublic::decode(&mut r)?;
        let signed_prekey = SignedPrekeyPublic::decode(&mut r)?;
        let kem_prekey = KemPrekeyPublic::decode(&mut r)?;
        let one_time_prekey = if r.bool()? { Some(OneTimePrekeyPublic::decode(&mut r)?) } else { None };
        r.finish()?;
        Ok(Self { address, identity, signed_prekey, kem_prekey, one_time_prekey })
    }

    /// Verifies the prekey signatures against the bundle's identity.
    pub fn verify(&self) -> Result<(), CryptoError> {
        self.signed_prekey.verify(&self.identity)?;
        self.kem_prekey.verify(&self.identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::x25519::X25519Secret;
    use crate::identity::{AccountName, DeviceId, DeviceIdentity};
    use crate::prekeys::{DevicePrekeys, KemPrekeyKind, PrekeyPolicy, UnixTime};
    use rand_core::SeedableRng;

    fn addr() -> DeviceAddress {
        DeviceAddress { account: AccountName::new("bob").unwrap(), device: DeviceId::new(1).unwrap() }
    }

    #[test]
    fn bundle_round_trip_and_signature_checks() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let id = DeviceIdentity::generate(&mut rng).unwrap();
        let mut p = DevicePrekeys::new();
        let plan = p.plan(UnixTime(0), &PrekeyPolicy::default(), 0, 0);
        p.execute(&mut rng, &id, UnixTime(0), &plan).unwrap();
        let b = p.bundle(addr(), &id).unwrap();
        let bytes = b.to_bytes();
        assert_eq!(PrekeyBundle::from_bytes(&bytes).unwrap(), b);
        // Swap in a signed prekey signed by nobody: refused.
        let mut forged = b.clone();
        forged.signed_prekey.key = *X25519Secret::generate(&mut rng).unwrap().public();
        assert!(PrekeyBundle::from_bytes(&forged.to_bytes()).unwrap().verify().is_err());
        let mut forged = b;
        forged.kem_prekey.kind = KemPrekeyKind::LastResort;
        assert!(PrekeyBundle::from_bytes(&forged.to_bytes()).unwrap().verify().is_err());
    }

    /// Issue 7 point 8: a bundle whose identity's binding signature is broken does not
    /// decode, so no `DevicePublic` claiming to be verified comes out of it.
    #[test]
    fn bundle_with_a_broken_identity_binding_is_refused() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let id = DeviceIdentity::generate(&mut rng).unwrap();
        let mut p = DevicePrekeys::new();
        let plan = p.plan(UnixTime(0), &PrekeyPolicy::default(), 0, 0);
        p.execute(&mut rng, &id, UnixTime(0), &plan).unwrap();
        let bytes = p.bundle(addr(), &id).unwrap().to_bytes();
        // version (1) || address "bob"/1 (1 + 3 + 4) || DSK (32) || IK (32) || binding (64)
        let binding_at = 1 + 8 + 64;
        for i in [binding_at, binding_at + 63] {
            let mut forged = bytes.clone();
            forged[i] ^= 1;
            assert_eq!(PrekeyBundle::from_bytes(&forged), Err(DecodeError::InvalidValue));
        }
        // The identity key swapped for another (valid) one under the same binding: refused.
        let other = DeviceIdentity::generate(&mut rng).unwrap();
        let mut forged = bytes.clone();
        forged[1 + 8 + 32..1 + 8 + 64].copy_from_slice(other.public().dh_key().as_bytes());
        assert_eq!(PrekeyBundle::from_bytes(&forged), Err(DecodeError::InvalidValue));
        assert!(PrekeyBundle::from_bytes(&bytes).is_ok());
    }
}
