//! PQXDH key agreement (Signal's "The PQXDH Key Agreement Protocol", revision 3, 2024-01-23).
//!
//! Parameters (section 2.2): curve X25519, hash SHA-256, info
//! [`KDF_INFO`], pqkem ML-KEM-1024 (CRYSTALS-Kyber-1024 as standardised in FIPS 203),
//! `EncodeEC` the 32-byte RFC 7748 encoding, `EncodeKEM` the 1,568-byte FIPS 203 encoding.
//! Signatures are Ed25519 by the device's signing key instead of XEdDSA by `IK` (Tacit
//! never writes primitives and no vetted crate offers XEdDSA); the device's signing key is
//! bound to `IK` by its own signature and by the account-signed device list.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::codec::Writer;
use crate::crypto::kdf::{hkdf_sha256, sha256};
use crate::crypto::kem::KemCiphertext;
use crate::crypto::x25519::{X25519Public, X25519Secret};
use crate::crypto::{CryptoError, Secret32};
use crate::identity::{DeviceAddress, DeviceIdentity, DevicePublic};
use crate::prekeys::{KemPrekeyKind, PrekeyBundle, PrekeySecrets, ReplayTag};

/// The KDF's `info` (section 2.2).
pub const KDF_INFO: &[u8] = b"Tacit_PQXDH_CURVE25519_SHA-256_ML-KEM-1024";
/// Prefix of the associated data (wire version 2).
pub const AD_LABEL: &[u8] = b"Tacit v2 PQXDH AD";
/// Prefix of the hash of an initial message's PQXDH fields (wire version 2).
pub const TRANSCRIPT_LABEL: &[u8] = b"Tacit v2 PQXDH transcript";

/// `KDF(KM)` (section 2.2): HKDF-SHA-256 with a salt of 32 zero bytes, input key material
/// `F || KM` where `F` is 32 `0xFF` bytes, and [`KDF_INFO`]; 32 bytes of output.
/// `KM = DH1 || DH2 || DH3 [|| DH4] || SS` (section 3.3).
pub(crate) fn kdf(dhs: &[&Secret32], ss: &Secret32) -> Result<Secret32, CryptoError> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * 6));
    ikm.extend_from_slice(&[0xFF; 32]);
    for dh in dhs {
        ikm.extend_from_slice(dh.expose());
    }
    ikm.extend_from_slice(ss.expose());
    let mut sk = Secret32([0u8; 32]);
    hkdf_sha256(&[0u8; 32], &ikm, &[KDF_INFO], &mut sk.0)?;
    Ok(sk)
}

/// The PQXDH fields of an initial message that the associated data binds: the base key
/// `EK_A`, the prekey ids Alice used and the KEM ciphertext.
pub(crate) struct InitialFields<'a> {
    pub(crate) base_key: &'a X25519Public,
    pub(crate) signed_prekey_id: u32,
    pub(crate) one_time_prekey_id: Option<u32>,
    pub(crate) kem_prekey_kind: KemPrekeyKind,
    pub(crate) kem_prekey_id: u32,
    pub(crate) kem_ciphertext: &'a KemCiphertext,
}

impl InitialFields<'_> {
    /// `SHA-256("Tacit v2 PQXDH transcript" || EK_A || u32 SPK id || bool has_opk ||
    /// [u32 OPK id] || u8 KEM kind || u32 KEM id || CT)` (`docs/PROTOCOL.md` section 5).
    fn transcript(&self) -> [u8; 32] {
        let mut m = Vec::with_capacity(TRANSCRIPT_LABEL.len() + 48 + self.kem_ciphertext.as_bytes().len());
        m.put(TRANSCRIPT_LABEL);
        m.put(self.base_key.as_bytes());
        m.put_u32(self.signed_prekey_id);
        match self.one_time_prekey_id {
            Some(id) => {
                m.put_bool(true);
                m.put_u32(id);
            }
            None => m.put_bool(false),
        }
        m.put_u8(self.kem_prekey_kind.tag());
        m.put_u32(self.kem_prekey_id);
        m.put(self.kem_ciphertext.as_bytes());
        sha256(&[&m])
    }
}

/// The associated data (section 3.3: `AD = Encode(IK_A) || Encode(IK_B)`, extended as the
/// specification allows with identifying information): a label, then for the initiator and
/// then the responder their device signing key, X25519 identity key and address, then the
/// hash of the initial message's PQXDH fields. Binding the base key, the prekey ids and the
/// KEM ciphertext means an initial message whose fields were changed (an equivalent
/// encoding of `EK_A`, another prekey id) fails to authenticate.
pub(crate) fn associated_data(
    initiator: &DevicePublic,
    initiator_address: &DeviceAddress,
    responder: &DevicePublic,
    responder_address: &DeviceAddress,
    fields: &InitialFields<'_>,
) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_LABEL.len() + 2 * (64 + 38) + 32);
    ad.put(AD_LABEL);
    for (id, addr) in [(initiator, initiator_address), (responder, responder_address)] {
        ad.put(id.signing_key().as_bytes());
        ad.put(id.dh_key().as_bytes());
        addr.encode(&mut ad);
    }
    ad.put(&fields.transcript());
    ad
}

/// What Alice computes (section 3.3).
pub(crate) struct Initiated {
    pub(crate) sk: Secret32,
    pub(crate) base_key: X25519Public,
    pub(crate) kem_ciphertext: KemCiphertext,
}

/// Alice's side: the bundle's signatures must already have been verified.
pub(crate) fn initiate<R: RngCore + CryptoRng>(
    rng: &mut R,
    local: &DeviceIdentity,
    bundle: &PrekeyBundle,
) -> Result<Initiated, CryptoError> {
    let (kem_ciphertext, ss) = bundle.kem_prekey.key.encapsulate()?;
    initiate_with(rng, local, bundle, kem_ciphertext, &ss)
}

/// Alice's side given the KEM output (split out so known-answer tests can fix it: AWS-LC
/// offers no deterministic encapsulation).
pub(crate) fn initiate_with<R: RngCore + CryptoRng>(
    rng: &mut R,
    local: &DeviceIdentity,
    bundle: &PrekeyBundle,
    kem_ciphertext: KemCiphertext,
    ss: &Secret32,
) -> Result<Initiated, CryptoError> {
    let ek = X25519Secret::generate(rng)?;
    let spk = &bundle.signed_prekey.key;
    let dh1 = local.dh().diffie_hellman(spk)?;
    let dh2 = ek.diffie_hellman(bundle.identity.dh_key())?;
    let dh3 = ek.diffie_hellman(spk)?;
    let sk = match &bundle.one_time_prekey {
        Some(opk) => kdf(&[&dh1, &dh2, &dh3, &ek.diffie_hellman(&opk.key)?], ss)?,
        None => kdf(&[&dh1, &dh2, &dh3], ss)?,
    };
    Ok(Initiated { sk, base_key: *ek.public(), kem_ciphertext })
}

/// Bob's side (section 3.4): the same DHs from his private keys, and decapsulation. Also
/// returns the replay memory's tag of the base key (a hash of `DH3`, equal for every
/// encoding of an equivalent `EK_A`).
pub(crate) fn respond(
    local: &DeviceIdentity,
    keys: &PrekeySecrets<'_>,
    identity_key: &X25519Public,
    base_key: &X25519Public,
    kem_ciphertext: &KemCiphertext,
) -> Result<(Secret32, ReplayTag), CryptoError> {
    let dh1 = keys.signed.diffie_hellman(identity_key)?;
    let dh2 = local.dh().diffie_hellman(base_key)?;
    let dh3 = keys.signed.diffie_hellman(base_key)?;
    let ss = keys.kem.decapsulate(kem_ciphertext)?;
    let tag = ReplayTag::from_dh3(&dh3);
    let sk = match keys.one_time {
        Some(opk) => kdf(&[&dh1, &dh2, &dh3, &opk.diffie_hellman(base_key)?], &ss),
        None => kdf(&[&dh1, &dh2, &dh3], &ss),
    }?;
    Ok((sk, tag))
}
