//! The checks of the fuzz target `group_decode` (`fuzz/fuzz_targets/group_decode.rs`),
//! shared with the corpus replay (`tests/fuzz_corpus.rs`): tacit-groups' own decoders,
//! and a group member processing the bytes as an MLS message.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // shared test code

use std::cell::RefCell;

use tacit_groups::{Directory, GroupDevice, GroupMeta, MemberId, OpenGroup, Suite};
use tacit_protocol::{
    AccountIdentity, AccountName, DeviceAddress, DeviceEntry, DeviceId, DeviceIdentity, DeviceList, UnixTime,
};

/// A two-member group, made once per thread: bob's side receives the fuzzed bytes.
pub struct Fixture {
    /// Alice's side (she sends the seed messages).
    pub alice: OpenGroup,
    /// Bob's side.
    pub bob: OpenGroup,
}

fn device(name: &str, seed: u8, directory: &Directory) -> GroupDevice {
    use rand_core::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([seed; 32]);
    let account = AccountIdentity::generate(&mut rng).unwrap();
    let identity = DeviceIdentity::generate(&mut rng).unwrap();
    let name = AccountName::new(name).unwrap();
    let id = DeviceId::new(1).unwrap();
    let entry = DeviceEntry { approver: true, ..DeviceEntry::new(id, identity.public().clone()) };
    directory.insert(&DeviceList::sign(&account, name.clone(), 1, vec![entry]).unwrap());
    GroupDevice::new(
        &identity,
        &DeviceAddress { account: name, device: id },
        Suite::Classical,
        directory.clone(),
    )
}

/// Builds the fixture.
pub fn fixture() -> Fixture {
    let now = UnixTime(1_790_000_000);
    let directory = Directory::new();
    let alice = device("alice", 1, &directory);
    let bob = device("bob", 2, &directory);
    let meta = GroupMeta::new("fuzz", "", vec![]).unwrap();
    let mut ga = alice.create(&meta, now).unwrap();
    let kp = bob.new_key_package(now).unwrap();
    let c = ga.commit(&[kp.public], &[], None).unwrap();
    ga.merge_pending().unwrap();
    let gb = bob
        .join(c.welcome.as_deref().unwrap(), c.tree.as_deref().unwrap(), &kp.reference, &kp.secret, now)
        .unwrap();
    Fixture { alice: ga, bob: gb }
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

/// Runs every check on `data`; true when some decoder accepted it.
pub fn check_group_decode(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(meta) = GroupMeta::from_bytes(data) {
        // One encoding: what decodes re-encodes to the same bytes.
        assert_eq!(meta.to_bytes(), data, "group metadata with two encodings");
        accepted = true;
    }
    if let Some(member) = MemberId::from_identifier(data) {
        assert_eq!(member.to_identifier(), data, "a member identifier with two encodings");
        accepted = true;
    }
    FIXTURE.with(|f| {
        let mut f = f.borrow_mut();
        let f = f.get_or_insert_with(fixture);
        let epoch = f.bob.epoch();
        match f.bob.process(data) {
            Ok(_) => accepted = true,
            // A refusal leaves the group where it was, and it still works.
            Err(_) => {
                assert_eq!(f.bob.epoch(), epoch);
                let m = f.alice.encrypt(b"still here").unwrap();
                f.bob.process(&m).unwrap();
            }
        }
    });
    accepted
}
