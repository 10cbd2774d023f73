//! tacit-groups end to end in memory: every device a member, checked against signed
//! device lists; state saved and loaded between every step as the SDK will.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)] // a test file

mod common;

use common::Account;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tacit_groups::{
    Commit, Directory, GroupDevice, GroupError, GroupMeta, MemberId, OpenGroup, Received, StoredGroup, Suite,
};
use tacit_protocol::{DeviceAddress, DeviceId, DeviceIdentity, UnixTime};

const NOW: UnixTime = UnixTime(1_790_000_000);

struct Device {
    mls: GroupDevice,
    /// Key packages made: reference → secret.
    key_packages: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
}

impl Account {
    fn device(&self, i: usize, suite: Suite, directory: &Directory) -> Device {
        Device {
            mls: GroupDevice::new(&self.devices[i].1, &self.address(i), suite, directory.clone()),
            key_packages: Vec::new(),
        }
    }
}

impl Device {
    fn key_package(&mut self) -> Vec<u8> {
        let kp = self.mls.new_key_package(NOW).unwrap();
        self.key_packages.push((kp.reference.clone(), kp.public.clone(), kp.secret.to_vec()));
        kp.public
    }

    fn join(&self, commit: &Commit) -> Result<OpenGroup, GroupError> {
        let welcome = commit.welcome.as_deref().unwrap();
        let refs = GroupDevice::welcome_references(welcome)?;
        let (r, _, secret) =
            self.key_packages.iter().find(|(r, _, _)| refs.contains(r)).ok_or(GroupError::WelcomeNotForUs)?;
        self.mls.join(welcome, commit.tree.as_deref().unwrap(), r, secret, NOW)
    }
}

/// Saves and loads again, as the SDK does between operations.
fn reload(device: &Device, group: &mut OpenGroup) -> OpenGroup {
    let stored = group.save().unwrap();
    let tree = group.tree().unwrap();
    let copy = StoredGroup {
        group_id: stored.group_id.clone(),
        epoch: stored.epoch,
        state: stored.state.clone(),
        past_epochs: stored.past_epochs.clone(),
    };
    device.mls.load(&copy, &tree).unwrap()
}

fn setup(suite: Suite) -> (Directory, Vec<Account>) {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let directory = Directory::new();
    let mut accounts = vec![
        Account::new("alice", 2, &mut rng),
        Account::new("bob", 2, &mut rng),
        Account::new("carol", 1, &mut rng),
    ];
    for a in &mut accounts {
        directory.insert(&a.list());
    }
    let _ = suite;
    (directory, accounts)
}

fn text(r: Received) -> (MemberId, Vec<u8>) {
    match r {
        Received::Application { sender, data, .. } => (sender, data),
        other => panic!("expected a message, got {other:?}"),
    }
}

fn conversation(suite: Suite) {
    let (directory, accounts) = setup(suite);
    let alice = accounts[0].device(0, suite, &directory);
    let mut alice2 = accounts[0].device(1, suite, &directory);
    let mut bob = accounts[1].device(0, suite, &directory);
    let mut bob2 = accounts[1].device(1, suite, &directory);

    let meta = GroupMeta::new("Family", "🏡", vec![accounts[0].name.clone()]).unwrap();
    let mut ga = alice.mls.create(&meta, NOW).unwrap();
    let kps = vec![alice2.key_package(), bob.key_package(), bob2.key_package()];
    let commit = ga.commit(&kps, &[], None).unwrap();
    assert_eq!(commit.epoch, 0);
    let summary = ga.merge_pending().unwrap();
    assert_eq!(summary.added.len(), 3);
    let mut gb = bob.join(&commit).unwrap();
    let mut gb2 = bob2.join(&commit).unwrap();
    let mut ga2 = alice2.join(&commit).unwrap();
    assert_eq!(gb.meta().unwrap(), meta);
    assert_eq!(gb.epoch(), 1);
    assert_eq!(ga.epoch_authenticator().unwrap(), gb.epoch_authenticator().unwrap());
    assert_eq!(gb.members().len(), 4);

    // Messages both ways, with the state saved and loaded in between.
    let m = ga.encrypt(b"hello").unwrap();
    let mut gb = reload(&bob, &mut gb);
    assert_eq!(text(gb.process(&m).unwrap()), (alice.mls.member().clone(), b"hello".to_vec()));
    assert_eq!(text(gb2.process(&m).unwrap()).1, b"hello");
    assert_eq!(text(ga2.process(&m).unwrap()).1, b"hello");
    // A replay is refused, and the group goes on.
    assert!(matches!(gb.process(&m), Err(GroupError::Replayed)));
    let r = gb.encrypt(b"hi back").unwrap();
    assert_eq!(text(ga.process(&r).unwrap()), (bob.mls.member().clone(), b"hi back".to_vec()));
    // Own messages are not processed.
    assert!(matches!(ga.process(&m), Err(GroupError::OwnMessage)));

    // A message sent in epoch 1 that arrives after the commit to epoch 2 still decrypts;
    // one from a device removed by that commit is refused (mls-rs cannot attribute it).
    let late = gb.encrypt(b"late").unwrap();
    let late_removed = gb2.encrypt(b"late, removed").unwrap();
    let rename = GroupMeta::new("Family (new)", "🏠", vec![accounts[0].name.clone()]).unwrap();
    let carol_dir = accounts[2].device(0, suite, &directory);
    let mut carol = carol_dir;
    let c = ga.commit(&[carol.key_package()], &[bob2.mls.member().clone()], Some(&rename)).unwrap();
    let own = ga.merge_pending().unwrap();
    assert_eq!(own.removed, vec![bob2.mls.member().clone()]);
    assert_eq!(own.renamed.as_ref(), Some(&rename));
    let Received::Commit(s) = gb.process(&c.commit).unwrap() else { panic!() };
    assert_eq!(s.added, vec![carol.mls.member().clone()]);
    assert_eq!(s.removed, vec![bob2.mls.member().clone()]);
    assert_eq!(s.renamed, Some(rename.clone()));
    assert!(!s.removed_me);
    let Received::Commit(s2) = gb2.process(&c.commit).unwrap() else { panic!() };
    assert!(s2.removed_me);
    assert_eq!(text(ga.process(&late).unwrap()).1, b"late");
    assert_eq!(text(ga2.process(&c.commit).map(|_| ()).and_then(|_| ga2.process(&late)).unwrap()).1, b"late");
    assert!(matches!(ga.process(&late_removed), Err(GroupError::SenderGone)));
    let mut gc = carol.join(&c).unwrap();
    assert_eq!(gc.meta().unwrap(), rename);
    // The new member cannot read what was sent before it joined.
    assert!(gc.process(&late).is_err());
    assert!(gc.process(&m).is_err());
    // The removed device cannot read what is sent after its removal.
    let after = ga.encrypt(b"after").unwrap();
    assert!(gb2.process(&after).is_err());
    assert_eq!(text(gc.process(&after).unwrap()).1, b"after");
    let mut gb = reload(&bob, &mut gb);
    assert_eq!(text(gb.process(&after).unwrap()).1, b"after");
    assert_eq!(ga.epoch_authenticator().unwrap(), gb.epoch_authenticator().unwrap());
    assert_eq!(ga.epoch_authenticator().unwrap(), gc.epoch_authenticator().unwrap());
    let _ = &mut alice2;
    let _ = &mut bob2;
    let _ = &mut ga2;
}

#[test]
fn conversation_classical() {
    conversation(Suite::Classical);
}

#[test]
fn conversation_post_quantum() {
    conversation(Suite::PostQuantum);
}

#[test]
fn a_stale_commit_loses_and_the_loser_rebases() {
    let (directory, accounts) = setup(Suite::Classical);
    let alice = accounts[0].device(0, Suite::Classical, &directory);
    let mut bob = accounts[1].device(0, Suite::Classical, &directory);
    let mut carol = accounts[2].device(0, Suite::Classical, &directory);
    let mut alice2 = accounts[0].device(1, Suite::Classical, &directory);
    let meta = GroupMeta::new("g", "", vec![]).unwrap();
    let mut ga = alice.mls.create(&meta, NOW).unwrap();
    let c = ga.commit(&[bob.key_package()], &[], None).unwrap();
    ga.merge_pending().unwrap();
    let mut gb = bob.join(&c).unwrap();
    // Both commit in epoch 1; the server takes alice's first.
    let from_alice = ga.commit(&[carol.key_package()], &[], None).unwrap();
    let from_bob = gb.commit(&[alice2.key_package()], &[], None).unwrap();
    ga.merge_pending().unwrap();
    // Bob learns he lost: drops his commit, processes the winner, commits again.
    gb.discard_pending();
    gb.process(&from_alice.commit).unwrap();
    // His old commit, for a stale epoch, is refused by everyone.
    assert!(matches!(ga.process(&from_bob.commit), Err(GroupError::WrongEpoch { current: 2 })));
    let retry = gb.commit(&[alice2.key_package()], &[], None).unwrap();
    gb.merge_pending().unwrap();
    ga.process(&retry.commit).unwrap();
    let ga2 = alice2.join(&retry).unwrap();
    assert_eq!(ga.epoch(), 3);
    assert_eq!(ga.epoch_authenticator().unwrap(), gb.epoch_authenticator().unwrap());
    assert_eq!(ga2.epoch_authenticator().unwrap(), gb.epoch_authenticator().unwrap());
}

#[test]
fn a_member_leaves_by_proposal_and_another_commits_it() {
    let (directory, accounts) = setup(Suite::Classical);
    let alice = accounts[0].device(0, Suite::Classical, &directory);
    let mut bob = accounts[1].device(0, Suite::Classical, &directory);
    let mut carol = accounts[2].device(0, Suite::Classical, &directory);
    let mut ga = alice.mls.create(&GroupMeta::new("g", "", vec![]).unwrap(), NOW).unwrap();
    let c = ga.commit(&[bob.key_package(), carol.key_package()], &[], None).unwrap();
    ga.merge_pending().unwrap();
    let mut gb = bob.join(&c).unwrap();
    let gc = carol.join(&c).unwrap();
    let leave = gc.propose_leave().unwrap();
    assert!(!ga.commit_required());
    assert!(matches!(ga.process(&leave).unwrap(), Received::Proposal { .. }));
    assert!(matches!(gb.process(&leave).unwrap(), Received::Proposal { .. }));
    // Nobody sends before the proposal is committed.
    assert!(ga.commit_required());
    assert!(matches!(ga.encrypt(b"too early"), Err(GroupError::CommitRequired)));
    // A commit of nothing of its own takes the proposal in.
    let commit = ga.commit(&[], &[], None).unwrap();
    let own = ga.merge_pending().unwrap();
    assert_eq!(own.removed, vec![carol.mls.member().clone()]);
    let Received::Commit(s) = gb.process(&commit.commit).unwrap() else { panic!() };
    assert_eq!(s.removed, vec![carol.mls.member().clone()]);
    assert!(!ga.commit_required() && !gb.commit_required());
    assert_eq!(ga.members().len(), 2);
    assert_eq!(ga.epoch_authenticator().unwrap(), gb.epoch_authenticator().unwrap());
    let m = ga.encrypt(b"without carol").unwrap();
    assert_eq!(text(gb.process(&m).unwrap()).1, b"without carol");
}

#[test]
fn leaves_are_checked_against_device_lists() {
    let (directory, mut accounts) = setup(Suite::Classical);
    let alice = accounts[0].device(0, Suite::Classical, &directory);
    let meta = GroupMeta::new("g", "", vec![]).unwrap();
    let mut ga = alice.mls.create(&meta, NOW).unwrap();

    // A device whose account's list is not held: the caller is told which list to fetch,
    // and nothing changed.
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let mut dave = Account::new("dave", 1, &mut rng);
    let other_dir = Directory::new();
    other_dir.insert(&dave.list());
    let mut dave_dev = dave.device(0, Suite::Classical, &other_dir);
    let kp = dave_dev.key_package();
    match ga.commit(std::slice::from_ref(&kp), &[], None) {
        Err(GroupError::NeedDeviceLists(names)) => assert_eq!(names, vec![dave.name.clone()]),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("added a device of an unknown account"),
    }
    assert_eq!(ga.epoch(), 0);
    assert!(!ga.members().values().any(|m| m.account == dave.name));
    // Once the list is held, the same key package is accepted.
    directory.insert(&dave.list());
    ga.commit(std::slice::from_ref(&kp), &[], None).unwrap();
    ga.discard_pending();

    // A key package signed by a device key the account's list does not have: refused.
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let impostor_identity = DeviceIdentity::generate(&mut rng).unwrap();
    let address = DeviceAddress { account: accounts[1].name.clone(), device: DeviceId::new(1).unwrap() };
    let impostor = GroupDevice::new(&impostor_identity, &address, Suite::Classical, directory.clone());
    let forged = impostor.new_key_package(NOW).unwrap().public;
    match ga.commit(&[forged], &[], None) {
        Err(GroupError::NotInDeviceList(m)) => assert_eq!(m.address(), address),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("added an impostor"),
    }
    // A device the list names under a device id it does not have: refused.
    let address = DeviceAddress { account: accounts[1].name.clone(), device: DeviceId::new(9).unwrap() };
    let wrong_id = GroupDevice::new(&accounts[1].devices[0].1, &address, Suite::Classical, directory.clone());
    let kp = wrong_id.new_key_package(NOW).unwrap().public;
    assert!(matches!(ga.commit(&[kp], &[], None), Err(GroupError::NotInDeviceList(_))));
    assert_eq!(ga.epoch(), 0);

    // A member revoked from its account's list: a later commit that touches its leaf
    // (its own) is refused by the others once they hold the new list.
    let mut bob = accounts[1].device(0, Suite::Classical, &directory);
    let c = ga.commit(&[bob.key_package()], &[], None).unwrap();
    ga.merge_pending().unwrap();
    let mut gb = bob.join(&c).unwrap();
    accounts[1].devices.remove(0);
    let new_list = accounts[1].list();
    directory.insert(&new_list);
    let update = gb.commit(&[], &[], None).unwrap();
    assert!(matches!(ga.process(&update.commit), Err(GroupError::NotInDeviceList(_))));
    assert_eq!(ga.epoch(), 1);
}

#[test]
fn tampered_and_foreign_messages_are_refused_and_change_nothing() {
    let (directory, accounts) = setup(Suite::Classical);
    let alice = accounts[0].device(0, Suite::Classical, &directory);
    let mut bob = accounts[1].device(0, Suite::Classical, &directory);
    let meta = GroupMeta::new("g", "", vec![]).unwrap();
    let mut ga = alice.mls.create(&meta, NOW).unwrap();
    let c = ga.commit(&[bob.key_package()], &[], None).unwrap();
    ga.merge_pending().unwrap();
    let mut gb = bob.join(&c).unwrap();
    // Bob's state is loaded twice from the same stored copy: `gb` gets the tampered
    // messages, `control` only the good ones; they must end in the same state.
    let stored = gb.save().unwrap();
    let tree = gb.tree().unwrap();
    let copy = StoredGroup {
        group_id: stored.group_id.clone(),
        epoch: stored.epoch,
        state: stored.state.clone(),
        past_epochs: stored.past_epochs.clone(),
    };
    let mut control = bob.mls.load(&copy, &tree).unwrap();
    let m0 = ga.encrypt(b"zero").unwrap();
    let m = ga.encrypt(b"one").unwrap();
    // m0 is processed and not saved: a refusal after it replays it.
    assert_eq!(text(gb.process(&m0).unwrap()).1, b"zero");
    assert_eq!(text(control.process(&m0).unwrap()).1, b"zero");
    for i in 0..m.len() {
        let mut t = m.clone();
        t[i] ^= 0x01;
        assert!(gb.process(&t).is_err(), "bit flipped at {i} accepted");
    }
    assert!(gb.process(&[]).is_err());
    assert!(gb.process(&m[..m.len() - 1]).is_err());
    assert_eq!(
        gb.save().unwrap().state.to_vec(),
        control.save().unwrap().state.to_vec(),
        "refused messages changed the state"
    );
    // The genuine message still decrypts; m0 is not delivered twice.
    assert_eq!(text(gb.process(&m).unwrap()).1, b"one");
    assert!(matches!(gb.process(&m0), Err(GroupError::Replayed)));
    let _ = &mut bob;

    // Another group's message.
    let mut other = alice.mls.create(&meta, NOW).unwrap();
    let foreign = other.encrypt(b"x").unwrap();
    assert!(matches!(gb.process(&foreign), Err(GroupError::WrongGroup)));
    // A Welcome for someone else.
    let carol = accounts[2].device(0, Suite::Classical, &directory);
    assert!(matches!(carol.join(&c), Err(GroupError::WelcomeNotForUs)));
    // A tree that is not the group's: refused.
    let mut dave = accounts[2].device(0, Suite::Classical, &directory);
    let c2 = ga.commit(&[dave.key_package()], &[], None).unwrap();
    let wrong_tree = Commit { tree: Some(ga.tree().unwrap()), ..c2 };
    assert!(dave.join(&wrong_tree).is_err());
}

#[test]
fn a_received_message_prints_no_plaintext() {
    let (_, accounts) = setup(Suite::Classical);
    let r = Received::Application {
        sender: accounts[0].member(0),
        leaf: 1,
        data: b"top secret".to_vec(),
        epoch: 3,
    };
    let shown = format!("{r:?}");
    assert!(!shown.contains("top secret") && !shown.contains("116, 111, 112"), "{shown}");
    assert!(shown.contains("*** (10 bytes)"), "{shown}");
}

#[test]
fn a_device_that_fell_behind_is_taken_back_in_by_one_commit() {
    let (directory, accounts) = setup(Suite::Classical);
    let alice = accounts[0].device(0, Suite::Classical, &directory);
    let mut bob = accounts[1].device(0, Suite::Classical, &directory);
    let mut carol = accounts[2].device(0, Suite::Classical, &directory);
    let mut ga = alice.mls.create(&GroupMeta::new("g", "", vec![]).unwrap(), NOW).unwrap();
    let c = ga.commit(&[bob.key_package(), carol.key_package()], &[], None).unwrap();
    ga.merge_pending().unwrap();
    let mut gc = carol.join(&c).unwrap();
    // Bob's state is lost (restored from a copy older than the group): his device's leaf
    // is still in the tree, with the same signature key his new key package carries.
    let bob_old_leaf = ga.members().into_iter().find(|(_, m)| m == bob.mls.member()).unwrap().0;
    let kp = bob.key_package();
    assert_eq!(GroupDevice::key_package_member(&kp).unwrap(), *bob.mls.member());
    assert!(matches!(GroupDevice::key_package_member(b"junk"), Err(GroupError::Malformed)));
    // Adding him while the old leaf stays would put one signature key in two leaves.
    assert!(ga.commit(std::slice::from_ref(&kp), &[], None).is_err());
    ga.discard_pending();
    let rejoin = ga.commit(std::slice::from_ref(&kp), &[bob.mls.member().clone()], None).unwrap();
    let own = ga.merge_pending().unwrap();
    assert_eq!(own.rejoined, vec![bob.mls.member().clone()]);
    assert!(own.added.is_empty() && own.removed.is_empty(), "{own:?}");
    let Received::Commit(s) = gc.process(&rejoin.commit).unwrap() else { panic!() };
    assert_eq!(s.rejoined, vec![bob.mls.member().clone()]);
    assert!(s.added.is_empty() && s.removed.is_empty() && !s.removed_me);
    let mut gb = bob.join(&rejoin).unwrap();
    assert_eq!(gb.members().len(), 3);
    assert_eq!(ga.epoch_authenticator().unwrap(), gb.epoch_authenticator().unwrap());
    assert_eq!(gc.epoch_authenticator().unwrap(), gb.epoch_authenticator().unwrap());
    let m = gb.encrypt(b"back").unwrap();
    assert_eq!(text(ga.process(&m).unwrap()), (bob.mls.member().clone(), b"back".to_vec()));
    assert_eq!(text(gc.process(&m).unwrap()).1, b"back");
    let m = gc.encrypt(b"welcome back").unwrap();
    assert_eq!(text(gb.process(&m).unwrap()).1, b"welcome back");

    // A second request answered by another member (both asked; one commit each won in
    // turn) re-adds him again from the same key package: a last-resort one, kept.
    let again = gc.commit(&[kp], &[bob.mls.member().clone()], None).unwrap();
    gc.merge_pending().unwrap();
    ga.process(&again.commit).unwrap();
    let Received::Commit(s) = gb.process(&again.commit).unwrap() else { panic!() };
    assert!(s.removed_me && s.rejoined == vec![bob.mls.member().clone()], "{s:?}");
    let gb = bob.join(&again).unwrap();
    assert_eq!(ga.epoch_authenticator().unwrap(), gb.epoch_authenticator().unwrap());
    assert!(gb.members().values().filter(|m| *m == bob.mls.member()).count() == 1);
    let _ = bob_old_leaf;
}

/// Key refresh (issue 11, "update"): a commit with nothing but an update path replaces the
/// committer's keys. A copy of Bob's state taken before his refresh (a stolen device
/// image) follows the group until Bob refreshes, and reads nothing after: it cannot process
/// his commit (its new path secrets are encrypted to the copath only, RFC 9420 §7.6; mls-rs
/// also refuses a device's own commit) and so holds no later epoch's keys. Positive
/// control: the same kind of copy follows another member's refresh and reads on.
#[test]
fn a_refresh_locks_out_a_copy_of_the_device_taken_before_it() {
    let (directory, accounts) = setup(Suite::PostQuantum);
    let alice = accounts[0].device(0, Suite::PostQuantum, &directory);
    let mut bob = accounts[1].device(0, Suite::PostQuantum, &directory);
    let mut carol = accounts[2].device(0, Suite::PostQuantum, &directory);
    let mut ga = alice.mls.create(&GroupMeta::new("g", "", vec![]).unwrap(), NOW).unwrap();
    let c = ga.commit(&[bob.key_package(), carol.key_package()], &[], None).unwrap();
    ga.merge_pending().unwrap();
    let mut gb = bob.join(&c).unwrap();
    let mut gc = carol.join(&c).unwrap();

    // Carol refreshes: the copy of Bob's state follows (it is Bob's, as good as his).
    let mut stolen = reload(&bob, &mut gb);
    let refresh = gc.commit(&[], &[], None).unwrap();
    let own = gc.merge_pending().unwrap();
    assert!(
        own.added.is_empty() && own.removed.is_empty() && own.renamed.is_none() && own.rejoined.is_empty()
    );
    for g in [&mut ga, &mut gb, &mut stolen] {
        let Received::Commit(s) = g.process(&refresh.commit).unwrap() else { panic!() };
        assert!(s.added.is_empty() && s.removed.is_empty() && !s.removed_me, "{s:?}");
    }
    let m = ga.encrypt(b"before bob refreshes").unwrap();
    assert_eq!(text(stolen.process(&m).unwrap()).1, b"before bob refreshes");
    assert_eq!(text(gb.process(&m).unwrap()).1, b"before bob refreshes");

    // Bob refreshes: the copy is left behind for good.
    let epoch = gb.epoch();
    let refresh = gb.commit(&[], &[], None).unwrap();
    gb.merge_pending().unwrap();
    assert_eq!(gb.epoch(), epoch + 1);
    ga.process(&refresh.commit).unwrap();
    gc.process(&refresh.commit).unwrap();
    assert!(stolen.process(&refresh.commit).is_err());
    let m = ga.encrypt(b"after bob refreshes").unwrap();
    assert!(stolen.process(&m).is_err());
    assert_eq!(text(gb.process(&m).unwrap()).1, b"after bob refreshes");
    assert_eq!(text(gc.process(&m).unwrap()).1, b"after bob refreshes");
    // Nor can it follow the next commit of another member, made on Bob's new keys.
    let next = gc.commit(&[], &[], None).unwrap();
    gc.merge_pending().unwrap();
    assert!(stolen.process(&next.commit).is_err());
    gb.process(&next.commit).unwrap();
    assert_eq!(ga.process(&next.commit).map(|_| ()).ok(), Some(()));
    assert_eq!(ga.epoch_authenticator().unwrap(), gb.epoch_authenticator().unwrap());
    assert_eq!(gc.epoch_authenticator().unwrap(), gb.epoch_authenticator().unwrap());
}
