//! The signed epoch root, in Cloudflare plexi's format so that its auditors verify Tacit's log
//! unchanged: an Ed25519 signature over plexi's `SignatureMessage` (plexi-core 0.1.2,
//! `proto/specs/types.proto`, ciphersuite 1 = protobuf + Ed25519):
//!
//! ```text
//! message Epoch { required uint64 inner = 1; }
//! message SignatureMessage {
//!     required uint32 ciphersuite = 1;  // 1
//!     required string namespace = 2;    // e.g. "tacit.example.org.v1"
//!     required uint64 timestamp = 3;    // milliseconds since the Unix epoch
//!     required Epoch epoch = 4;
//!     required bytes digest = 5;        // the akd root hash of that epoch
//! }
//! ```
//!
//! Fields are written in field order, as protobuf encoders (prost, which plexi uses) do; the
//! known-answer test is plexi's own test vector. The signer's `key_id` is the last byte of
//! its public key (plexi's `ed25519_public_key_to_key_id`).

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use tacit_protocol::{Signature, VerifyingKey};
use zeroize::Zeroizing;

use crate::{KtError, ROOT_LEN};

/// plexi's ciphersuite number for protobuf-encoded messages signed with Ed25519.
pub const CIPHERSUITE_PROTOBUF_ED25519: u32 = 1;

/// The longest namespace accepted (plexi sets none; a URL-like name fits).
pub const MAX_NAMESPACE_BYTES: usize = 128;

/// One epoch's root, as signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochRoot {
    /// The log's name (plexi's namespace).
    pub namespace: String,
    /// When the server signed it, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The epoch.
    pub epoch: u64,
    /// The akd root hash of the epoch.
    pub root: [u8; ROOT_LEN],
}

/// Appends `v` as a protobuf varint (LEB128: seven bits a byte, low first, the high bit set
/// on every byte but the last), the one encoding of `v`.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        // Seven low bits with the continuation bit; truncation is the encoding.
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

impl EpochRoot {
    /// The bytes signed: plexi's `SignatureMessage` in protobuf.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut epoch = Vec::with_capacity(11);
        epoch.push(0x08); // field 1, varint
        put_varint(&mut epoch, self.epoch);
        let mut out = Vec::with_capacity(64 + self.namespace.len());
        out.push(0x08); // field 1, varint: ciphersuite
        put_varint(&mut out, u64::from(CIPHERSUITE_PROTOBUF_ED25519));
        put_bytes_field(&mut out, 0x12, self.namespace.as_bytes()); // field 2: namespace
        out.push(0x18); // field 3, varint: timestamp
        put_varint(&mut out, self.timestamp_ms);
        put_bytes_field(&mut out, 0x22, &epoch); // field 4: Epoch message
        put_bytes_field(&mut out, 0x2a, &self.root); // field 5: digest
        out
    }
}

/// An epoch root with the server's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRoot {
    /// What was signed.
    pub root: EpochRoot,
    /// Ed25519 over [`EpochRoot::signed_message`].
    pub signature: [u8; 64],
}

impl SignedRoot {
    /// Checks the signature under `key` and that the root belongs to `namespace`.
    pub fn verify(&self, key: &VerifyingKey, namespace: &str) -> Result<(), KtError> {
        if self.root.namespace != namespace {
            return Err(KtError::WrongNamespace(self.root.namespace.clone()));
        }
        key.verify(&self.root.signed_message(), &Signature::from_bytes(self.signature))
            .map_err(|_| KtError::BadRootSignature)
    }
}

/// plexi's one-byte key id: the last byte of the Ed25519 public key.
pub fn key_id(public: &[u8; 32]) -> u8 {
    public[31]
}

/// The server's transparency signing key (Ed25519). Its seed zeroizes on drop and it has no
/// `Debug`.
pub struct RootSigner {
    seed: Zeroizing<[u8; 32]>,
    pair: Ed25519KeyPair,
    public: [u8; 32],
}

impl RootSigner {
    /// The key of a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Result<Self, KtError> {
        let seed = Zeroizing::new(seed);
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_slice())
            .map_err(|_| KtError::Malformed("transparency signing key"))?;
        let public: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| KtError::Malformed("transparency signing key"))?;
        Ok(Self { seed, pair, public })
    }

    /// The seed (to store it).
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The public key clients pin.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// Signs a root.
    pub fn sign(&self, root: EpochRoot) -> SignedRoot {
        let sig = self.pair.sign(&root.signed_message());
        let mut signature = [0u8; 64];
        signature.copy_from_slice(sig.as_ref());
        SignedRoot { root, signature }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// plexi-core 0.1.2 `tests/test-vectors.json`, the ciphersuite-1 vector.
    #[test]
    fn plexi_test_vector() {
        let signer =
            RootSigner::from_seed(arr("d6af1bca3db4fc2766b0c483706c20bf4837a46d54c1d39c2a34a9088572d712"))
                .unwrap();
        assert_eq!(
            signer.public(),
            arr::<32>("606a878700158d92b3a14a0fd37ec82e0f05f92fcf23146abfda2e3a2f10a9bc")
        );
        assert_eq!(key_id(&signer.public()), 188);
        let root = EpochRoot {
            namespace: "log1.example.com".into(),
            timestamp_ms: 1_717_084_639_921,
            epoch: 1,
            root: [0x11; 32],
        };
        let signed = signer.sign(root);
        assert_eq!(
            signed.signature,
            arr::<64>(
                "769d1ae73792dd8da1515793ba29f2f33f2fca84ba7386f9a01d8272e67c4379bdcfd91ea4fa49eafd8f243ac36fe3a7aae90ae92f1729c3c468ddf4e6d2a309"
            )
        );
        let key = VerifyingKey::from_bytes(signer.public()).unwrap();
        signed.verify(&key, "log1.example.com").unwrap();
        assert_eq!(
            signed.verify(&key, "log2.example.com"),
            Err(KtError::WrongNamespace("log1.example.com".into()))
        );
        for flip in [0usize, 40] {
            let mut bad = signed.clone();
            match flip {
                0 => bad.signature[0] ^= 1,
                _ => bad.root.epoch = 2,
            }
            assert_eq!(bad.verify(&key, "log1.example.com"), Err(KtError::BadRootSignature));
        }
    }

    #[test]
    fn large_epochs_and_timestamps_encode_as_varints() {
        let root = EpochRoot { namespace: String::new(), timestamp_ms: u64::MAX, epoch: 300, root: [0; 32] };
        let m = root.signed_message();
        // ciphersuite, empty namespace, 10-byte varint timestamp, epoch 300 = ac 02.
        assert_eq!(&m[..6], &[0x08, 0x01, 0x12, 0x00, 0x18, 0xff]);
        assert_eq!(&m[14..22], &[0x01, 0x22, 0x03, 0x08, 0xac, 0x02, 0x2a, 0x20]);
        assert_eq!(m.len(), 22 + 32);
    }
}
