//! Interoperability with an MLS implementation no one at Tacit wrote: openmls 0.9.2 (with
//! its RustCrypto provider), the library Tacit did not choose, as a member of Tacit groups.
//!
//! The openmls member is a Tacit device like any other: its basic credential is the
//! device's `MemberId` identifier and its leaf signs with the device's Ed25519 key, the one
//! its account's signed device list names, so Tacit's directory accepts it and nothing
//! else. It joins from a Tacit Welcome with the ratchet tree sent beside it, reads the
//! group's metadata (the 0xF7A1 group context extension), Tacit's messages and its commits
//! (all PrivateMessages, Padmé-padded, each with an update path), and Tacit reads its
//! messages and its commit, and follows Tacit's renames (Tacit groups list their metadata
//! extension in required_capabilities, which openmls requires before it accepts a new group
//! context). The other way, a Tacit device joins a group openmls created only when every
//! leaf of it is in the verified device lists, and there renames go both ways.
//!
//! openmls checks key package lifetimes against the system clock, so the times Tacit is
//! given here are read from it as well (Tacit itself reads no clock).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)] // a test file

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::Account;
use openmls::prelude as om;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tacit_groups::{
    Commit, Directory, GroupDevice, GroupError, GroupMeta, MemberId, OpenGroup, Received, Suite,
};
use tacit_protocol::{DeviceIdentity, UnixTime};

/// Cipher suite 1, `Suite::Classical`.
const SUITE: om::Ciphersuite = om::Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// Tacit's group metadata extension (`GroupMeta`), a group context extension every leaf
/// must declare in its capabilities (RFC 9420 §11.1).
const META_EXTENSION: u16 = 0xF7A1;

/// The system clock, a minute back (key packages made now are valid from now).
fn now() -> UnixTime {
    UnixTime(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 60)
}

impl Account {
    /// Device `i` as a Tacit (mls-rs) device.
    fn tacit(&self, i: usize, directory: &Directory) -> TacitDevice {
        TacitDevice {
            mls: GroupDevice::new(&self.devices[i].1, &self.address(i), Suite::Classical, directory.clone()),
            key_packages: Vec::new(),
        }
    }

    /// Device `i` as an openmls member with the device's own credential and key.
    fn openmls(&self, i: usize) -> OpenMember {
        OpenMember::new(&self.devices[i].1, self.member(i))
    }
}

/// A Tacit device and the secrets of the key packages it made.
struct TacitDevice {
    mls: GroupDevice,
    /// (reference, secret)
    key_packages: Vec<(Vec<u8>, Vec<u8>)>,
}

impl TacitDevice {
    fn key_package(&mut self) -> Vec<u8> {
        let kp = self.mls.new_key_package(now()).unwrap();
        self.key_packages.push((kp.reference, kp.secret.to_vec()));
        kp.public
    }

    fn join(&self, welcome: &[u8], tree: &[u8]) -> Result<OpenGroup, GroupError> {
        let refs = GroupDevice::welcome_references(welcome)?;
        let (r, secret) =
            self.key_packages.iter().find(|(r, _)| refs.contains(r)).ok_or(GroupError::WelcomeNotForUs)?;
        self.mls.join(welcome, tree, r, secret, now())
    }

    fn join_commit(&self, commit: &Commit) -> Result<OpenGroup, GroupError> {
        self.join(commit.welcome.as_deref().unwrap(), commit.tree.as_deref().unwrap())
    }
}

/// An openmls member: its provider (crypto, randomness, storage), signer and credential.
struct OpenMember {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: om::CredentialWithKey,
    id: MemberId,
}

/// What openmls made of a message.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    /// Application data and who sent it (the sender's credential read as a `MemberId`).
    Text(MemberId, Vec<u8>),
    /// A commit, merged.
    Commit,
}

fn decode(bytes: &[u8]) -> om::MlsMessageIn {
    om::MlsMessageIn::tls_deserialize_exact(bytes).unwrap()
}

fn member_of(credential: &om::Credential) -> MemberId {
    let basic = om::BasicCredential::try_from(credential.clone()).unwrap();
    MemberId::from_identifier(basic.identity()).unwrap()
}

impl OpenMember {
    fn new(identity: &DeviceIdentity, id: MemberId) -> Self {
        // Tacit's MLS signature key is the Ed25519 seed then the public key; openmls's
        // basic-credential signer takes the 32-byte seed (ed25519-dalek 2's `SigningKey`).
        let key = identity.mls_signature_key();
        let (seed, public) = key.split_at(32);
        let signer = SignatureKeyPair::from_raw(om::SignatureScheme::ED25519, seed.to_vec(), public.to_vec());
        assert_eq!(signer.public(), identity.public().signing_key().as_bytes());
        let credential = om::CredentialWithKey {
            credential: om::BasicCredential::new(id.to_identifier()).into(),
            signature_key: signer.public().into(),
        };
        Self { provider: OpenMlsRustCrypto::default(), signer, credential, id }
    }

    /// Suite 1, and support for Tacit's group context extension, which Tacit (mls-rs) and
    /// openmls both require of every leaf of a group that has it. (Versions and credential
    /// types: openmls's defaults, MLS 1.0 and basic.)
    fn capabilities() -> om::Capabilities {
        om::Capabilities::builder()
            .ciphersuites(vec![SUITE])
            .extensions(vec![om::ExtensionType::Unknown(META_EXTENSION)])
            .build()
    }

    /// Tacit's wire rules on openmls's side: handshake messages encrypted both ways
    /// (PrivateMessage), the ratchet tree beside the Welcome, not in it. Padding: openmls
    /// pads to a multiple of a fixed size, not Padmé; it accepts any zero padding when
    /// reading, Padmé included, and Tacit accepts its padding.
    fn join_config() -> om::MlsGroupJoinConfig {
        om::MlsGroupJoinConfig::builder()
            .wire_format_policy(om::PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(false)
            .padding_size(64)
            .build()
    }

    fn key_package(&self) -> Vec<u8> {
        let bundle = om::KeyPackage::builder()
            .leaf_node_capabilities(Self::capabilities())
            .build(SUITE, &self.provider, &self.signer, self.credential.clone())
            .unwrap();
        om::MlsMessageOut::from(bundle.key_package().clone()).to_bytes().unwrap()
    }

    fn join(&self, commit: &Commit) -> om::MlsGroup {
        let om::MlsMessageBodyIn::Welcome(welcome) = decode(commit.welcome.as_deref().unwrap()).extract()
        else {
            panic!("not a Welcome")
        };
        let tree = om::RatchetTreeIn::tls_deserialize_exact(commit.tree.as_deref().unwrap()).unwrap();
        om::StagedWelcome::new_from_welcome(&self.provider, &Self::join_config(), welcome, Some(tree))
            .unwrap()
            .into_group(&self.provider)
            .unwrap()
    }

    fn send(&self, group: &mut om::MlsGroup, text: &[u8]) -> Vec<u8> {
        group.create_message(&self.provider, &self.signer, text).unwrap().to_bytes().unwrap()
    }

    fn receive(&self, group: &mut om::MlsGroup, bytes: &[u8]) -> Got {
        let message = decode(bytes);
        // Tacit sends nothing in the clear.
        assert!(matches!(message.wire_format(), om::WireFormat::PrivateMessage));
        let processed =
            group.process_message(&self.provider, message.try_into_protocol_message().unwrap()).unwrap();
        let sender = member_of(processed.credential());
        match processed.into_content() {
            om::ProcessedMessageContent::ApplicationMessage(m) => Got::Text(sender, m.into_bytes()),
            om::ProcessedMessageContent::StagedCommitMessage(staged) => {
                group.merge_staged_commit(&self.provider, *staged).unwrap();
                Got::Commit
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The group's metadata as openmls holds it in the group context.
    fn meta(group: &om::MlsGroup) -> GroupMeta {
        let ext = group.extensions().unknown(META_EXTENSION).expect("no Tacit metadata");
        GroupMeta::from_bytes(&ext.0).unwrap()
    }

    /// The members openmls sees, as Tacit names them, by leaf.
    fn members(group: &om::MlsGroup) -> std::collections::BTreeMap<u32, MemberId> {
        group.members().map(|m| (m.index.u32(), member_of(&m.credential))).collect()
    }
}

fn text(r: Received) -> (MemberId, Vec<u8>) {
    match r {
        Received::Application { sender, data, .. } => (sender, data),
        other => panic!("expected a message, got {other:?}"),
    }
}

fn setup() -> (Directory, Account, Account) {
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let directory = Directory::new();
    let mut alice = Account::new("alice", 2, &mut rng);
    let mut bob = Account::new("bob", 1, &mut rng);
    directory.insert(&alice.list());
    directory.insert(&bob.list());
    (directory, alice, bob)
}

/// openmls (bob's device) joins a Tacit group from its Welcome and tree; both read each
/// other's messages and commits through three more epochs.
#[test]
fn openmls_joins_a_tacit_group_and_both_read_each_other() {
    let (directory, alice, bob) = setup();
    let a1 = alice.tacit(0, &directory);
    let mut a2 = alice.tacit(1, &directory);
    let ob = bob.openmls(0);

    // Alice creates the group and adds the openmls device from its KeyPackage.
    let meta = GroupMeta::new("Interop", "🔗", vec![alice.name.clone()]).unwrap();
    let mut ga = a1.mls.create(&meta, now()).unwrap();
    let c = ga.commit(&[ob.key_package()], &[], None).unwrap();
    let summary = ga.merge_pending().unwrap();
    assert_eq!(summary.added, vec![ob.id.clone()]);
    assert!(c.tree.is_some(), "Tacit sends the tree beside the Welcome");

    // openmls joins: same epoch, same authenticator, same members, Tacit's metadata.
    let mut og = ob.join(&c);
    assert_eq!(og.epoch().as_u64(), ga.epoch());
    assert_eq!(og.epoch_authenticator().as_slice(), ga.epoch_authenticator().unwrap());
    assert_eq!(OpenMember::meta(&og), meta);
    assert_eq!(OpenMember::members(&og), ga.members());

    // Tacit to openmls, openmls to Tacit.
    let m = ga.encrypt(b"hello from Tacit").unwrap();
    assert_eq!(ob.receive(&mut og, &m), Got::Text(alice.member(0), b"hello from Tacit".to_vec()));
    let r = ob.send(&mut og, b"hello from openmls");
    assert_eq!(
        ga.process(&r).unwrap(),
        Received::Application {
            sender: ob.id.clone(),
            leaf: og.own_leaf_index().u32(),
            data: b"hello from openmls".to_vec(),
            epoch: 1,
        }
    );

    // A Tacit commit adding alice's second (Tacit) device: openmls follows.
    let c2 = ga.commit(&[a2.key_package()], &[], None).unwrap();
    ga.merge_pending().unwrap();
    assert_eq!(ob.receive(&mut og, &c2.commit), Got::Commit);
    let mut ga2 = a2.join_commit(&c2).unwrap();
    assert_eq!(og.epoch().as_u64(), 2);
    assert_eq!(og.epoch_authenticator().as_slice(), ga.epoch_authenticator().unwrap());
    assert_eq!(ga2.epoch_authenticator().unwrap(), ga.epoch_authenticator().unwrap());
    assert_eq!(OpenMember::members(&og), ga.members());

    // A Tacit commit with only its update path: openmls follows.
    let c3 = ga.commit(&[], &[], None).unwrap();
    ga.merge_pending().unwrap();
    assert_eq!(ob.receive(&mut og, &c3.commit), Got::Commit);
    assert!(matches!(ga2.process(&c3.commit).unwrap(), Received::Commit(_)));
    assert_eq!(og.epoch().as_u64(), 3);
    assert_eq!(og.epoch_authenticator().as_slice(), ga.epoch_authenticator().unwrap());
    assert_eq!(ga2.epoch_authenticator().unwrap(), ga.epoch_authenticator().unwrap());

    // Messages each way in the new epoch, with both Tacit devices.
    let m = ga2.encrypt(b"from alice's second device").unwrap();
    assert_eq!(ob.receive(&mut og, &m), Got::Text(alice.member(1), b"from alice's second device".to_vec()));
    assert_eq!(text(ga.process(&m).unwrap()).1, b"from alice's second device");
    let r = ob.send(&mut og, b"still here");
    assert_eq!(text(ga.process(&r).unwrap()), (ob.id.clone(), b"still here".to_vec()));
    assert_eq!(text(ga2.process(&r).unwrap()), (ob.id.clone(), b"still here".to_vec()));

    // openmls commits (an update of its own leaf, with a path, encrypted): both Tacit
    // devices accept it (its new leaf keeps the device's key, which the directory lists).
    let bundle = og.self_update(&ob.provider, &ob.signer, om::LeafNodeParameters::default()).unwrap();
    let oc = bundle.commit().to_bytes().unwrap();
    og.merge_pending_commit(&ob.provider).unwrap();
    assert!(matches!(decode(&oc).wire_format(), om::WireFormat::PrivateMessage));
    for g in [&mut ga, &mut ga2] {
        let Received::Commit(s) = g.process(&oc).unwrap() else { panic!("not a commit") };
        assert_eq!(s.committer, ob.id);
        assert_eq!((s.epoch, s.added.len(), s.removed.len(), s.renamed), (4, 0, 0, None));
    }
    assert_eq!(og.epoch_authenticator().as_slice(), ga.epoch_authenticator().unwrap());
    assert_eq!(ga2.epoch_authenticator().unwrap(), ga.epoch_authenticator().unwrap());

    // And messages both ways after it.
    let m = ga.encrypt(b"after your commit").unwrap();
    assert_eq!(ob.receive(&mut og, &m), Got::Text(alice.member(0), b"after your commit".to_vec()));
    let r = ob.send(&mut og, b"after my commit");
    assert_eq!(text(ga.process(&r).unwrap()), (ob.id.clone(), b"after my commit".to_vec()));
    assert_eq!(text(ga2.process(&r).unwrap()), (ob.id.clone(), b"after my commit".to_vec()));

    // A Tacit rename (a GroupContextExtensions proposal in the commit): openmls 0.9.2
    // accepts a new group context only if every extension in it that is not one of RFC
    // 9420's defaults is listed in a required_capabilities extension (its check valn1001),
    // which Tacit's groups carry for that reason. (Without it, this commit was refused with
    // `ExtensionNotInRequiredCapabilities` and openmls stayed behind.)
    let rename = GroupMeta::new("Interop (renamed)", "🧪", vec![alice.name.clone()]).unwrap();
    let c5 = ga.commit(&[], &[], Some(&rename)).unwrap();
    ga.merge_pending().unwrap();
    assert_eq!(ob.receive(&mut og, &c5.commit), Got::Commit);
    let Received::Commit(s) = ga2.process(&c5.commit).unwrap() else { panic!("not a commit") };
    assert_eq!(s.renamed.as_ref(), Some(&rename));
    assert_eq!(og.epoch().as_u64(), ga.epoch());
    assert_eq!(og.epoch_authenticator().as_slice(), ga.epoch_authenticator().unwrap().as_slice());
    assert_eq!(OpenMember::meta(&og), rename);
    let m = ga.encrypt(b"after the rename").unwrap();
    assert_eq!(ob.receive(&mut og, &m), Got::Text(alice.member(0), b"after the rename".to_vec()));
}

/// The directory still decides with openmls in the group: an openmls KeyPackage for bob's
/// device signed with a key bob's list does not have is refused by Tacit.
#[test]
fn tacit_refuses_an_openmls_key_package_whose_key_is_not_listed() {
    let (directory, alice, bob) = setup();
    let a1 = alice.tacit(0, &directory);
    let meta = GroupMeta::new("g", "", vec![]).unwrap();
    let mut ga = a1.mls.create(&meta, now()).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let impostor = OpenMember::new(&DeviceIdentity::generate(&mut rng).unwrap(), bob.member(0));
    match ga.commit(&[impostor.key_package()], &[], None) {
        Err(GroupError::NotInDeviceList(m)) => assert_eq!(m, bob.member(0)),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("added an impostor"),
    }
    assert_eq!(ga.epoch(), 0);
    // The genuine device's KeyPackage is accepted.
    ga.commit(&[bob.openmls(0).key_package()], &[], None).unwrap();
}

/// A group context with Tacit's metadata and, as openmls needs to accept a later change
/// of it, a required_capabilities extension listing the metadata extension.
fn context_extensions(meta: &GroupMeta) -> om::Extensions<om::GroupContext> {
    om::Extensions::from_vec(vec![
        om::Extension::Unknown(META_EXTENSION, om::UnknownExtension(meta.to_bytes())),
        om::Extension::RequiredCapabilities(om::RequiredCapabilitiesExtension::new(
            &[om::ExtensionType::Unknown(META_EXTENSION)],
            &[],
            &[],
        )),
    ])
    .unwrap()
}

/// A group openmls created with Tacit's settings (metadata extension, PrivateMessage
/// handshakes, tree beside the Welcome, a path in every commit): a Tacit device joins it
/// and both read each other, but only when the creator's leaf is in its account's list.
#[test]
fn tacit_joins_an_openmls_group_only_if_its_leaves_are_listed() {
    let (directory, alice, bob) = setup();
    let mut a1 = alice.tacit(0, &directory);
    let meta = GroupMeta::new("openmls-made", "", vec![bob.name.clone()]).unwrap();
    let create = |creator: &OpenMember| {
        om::MlsGroup::builder()
            .ciphersuite(SUITE)
            .with_wire_format_policy(om::PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(false)
            .with_capabilities(OpenMember::capabilities())
            .with_group_context_extensions(context_extensions(&meta))
            .build(&creator.provider, &creator.signer, creator.credential.clone())
            .unwrap()
    };
    // Adds a Tacit KeyPackage; the Welcome and the tree, as Tacit takes them.
    let add = |creator: &OpenMember, group: &mut om::MlsGroup, kp: &[u8]| {
        let om::MlsMessageBodyIn::KeyPackage(kp) = decode(kp).extract() else { panic!("not a KeyPackage") };
        let kp = kp.validate(creator.provider.crypto(), om::ProtocolVersion::Mls10).unwrap();
        let bundle = group
            .commit_builder()
            .propose_adds([kp])
            .force_self_update(true)
            .load_psks(creator.provider.storage())
            .unwrap()
            .build(creator.provider.rand(), creator.provider.crypto(), &creator.signer, |_| true)
            .unwrap()
            .stage_commit(&creator.provider)
            .unwrap();
        group.merge_pending_commit(&creator.provider).unwrap();
        let welcome = bundle.to_welcome_msg().unwrap().to_bytes().unwrap();
        let tree = group.export_ratchet_tree().tls_serialize_detached().unwrap();
        (welcome, tree)
    };

    // Created by a device claiming bob's device 1 with a key bob's list does not have.
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let impostor = OpenMember::new(&DeviceIdentity::generate(&mut rng).unwrap(), bob.member(0));
    let mut gi = create(&impostor);
    let (welcome, tree) = add(&impostor, &mut gi, &a1.key_package());
    match a1.join(&welcome, &tree) {
        Err(GroupError::NotInDeviceList(m)) => assert_eq!(m, bob.member(0)),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("joined a group with an impostor"),
    }

    // Created by bob's real device: joined, and both read each other.
    let ob = bob.openmls(0);
    let mut og = create(&ob);
    let (welcome, tree) = add(&ob, &mut og, &a1.key_package());
    let mut ga = a1.join(&welcome, &tree).unwrap();
    assert_eq!(ga.meta().unwrap(), meta);
    assert_eq!(ga.epoch(), og.epoch().as_u64());
    assert_eq!(ga.epoch_authenticator().unwrap(), og.epoch_authenticator().as_slice());
    assert_eq!(ga.members(), OpenMember::members(&og));
    let r = ob.send(&mut og, b"welcome to my group");
    assert_eq!(text(ga.process(&r).unwrap()), (ob.id.clone(), b"welcome to my group".to_vec()));
    let m = ga.encrypt(b"thanks").unwrap();
    assert_eq!(ob.receive(&mut og, &m), Got::Text(alice.member(0), b"thanks".to_vec()));
    // A Tacit commit in the openmls-made group.
    let c = ga.commit(&[], &[], None).unwrap();
    ga.merge_pending().unwrap();
    assert_eq!(ob.receive(&mut og, &c.commit), Got::Commit);
    assert_eq!(ga.epoch_authenticator().unwrap(), og.epoch_authenticator().as_slice());

    // Renames both ways: with required_capabilities in the group context (which Tacit's
    // commit keeps), openmls accepts Tacit's rename, and Tacit openmls's.
    let rename = GroupMeta::new("renamed by Tacit", "", vec![bob.name.clone()]).unwrap();
    let c = ga.commit(&[], &[], Some(&rename)).unwrap();
    ga.merge_pending().unwrap();
    assert_eq!(ob.receive(&mut og, &c.commit), Got::Commit);
    assert_eq!(OpenMember::meta(&og), rename);
    let rename = GroupMeta::new("renamed by openmls", "", vec![bob.name.clone()]).unwrap();
    let (oc, _, _) =
        og.update_group_context_extensions(&ob.provider, context_extensions(&rename), &ob.signer).unwrap();
    og.merge_pending_commit(&ob.provider).unwrap();
    let Received::Commit(s) = ga.process(&oc.to_bytes().unwrap()).unwrap() else { panic!("not a commit") };
    assert_eq!((s.committer, s.renamed), (ob.id.clone(), Some(rename.clone())));
    assert_eq!(ga.meta().unwrap(), rename);
    assert_eq!(ga.epoch_authenticator().unwrap(), og.epoch_authenticator().as_slice());
    let m = ga.encrypt(b"nice name").unwrap();
    assert_eq!(ob.receive(&mut og, &m), Got::Text(alice.member(0), b"nice name".to_vec()));
}
