//! Issue 10's malicious server: the real server on loopback with a lying key transparency
//! directory installed (`tacit-server`'s test-only feature `malicious`, `kt::malice`). The
//! liar holds everything a malicious operator holds: the directory's VRF key, its root
//! signing key and its store; it answers the transparency routes as it likes, forks the log
//! (a second akd directory over the same keys, replayed from the real history) or leaves
//! changes out of it. Each behaviour of `docs/THREAT_MODEL.md` ("A lying directory") is a
//! test here, on SQLite and PostgreSQL, that names the error or alarm that finds it, and
//! checks that nothing was encrypted to a key that failed a check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)] // a test file

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Relay, account, link, texts};
use tacit_client::api::{KtProofResponse, SignedRootWire};
use tacit_client::{Client, ConnectOptions, KtViolation, RelayProbe};
use tacit_protocol::{AccountIdentity, AccountName, DeviceEntry, DeviceId, DeviceIdentity, DeviceList};
use tacit_server::kt::Transparency;
use tacit_server::kt::malice::{Fork, KtLie, KtRequest, Malice};
use tacit_transparency::AccountEntry;

on_both!(
    a_substituted_key_is_refused_before_anything_is_encrypted,
    an_older_epoch_after_a_newer_one_is_refused_as_a_rollback,
    two_clients_shown_different_roots_find_the_fork_from_each_others_messages,
    a_history_rewritten_in_a_later_epoch_is_found_by_the_owner_and_the_auditor,
    an_omitted_update_is_found_by_the_owner_and_refused_by_contacts,
    an_account_made_again_and_left_out_of_the_directory_is_found_by_its_owner,
    a_proof_for_another_account_is_refused,
    a_first_time_contact_is_not_shown_an_old_list_with_a_revoked_device,
    a_fork_without_the_required_auditors_cosignatures_is_refused_before_encrypting,
);

/// A liar answering with a closure.
struct Liar<F>(F);

impl<F: Fn(Option<&str>, KtRequest<'_>) -> Option<KtLie> + Send + Sync + 'static> Malice for Liar<F> {
    fn answer(&self, who: Option<&str>, request: KtRequest<'_>) -> Option<KtLie> {
        (self.0)(who, request)
    }
}

/// A liar that leaves one account's changes out of the directory.
struct Omit(&'static str);

impl Malice for Omit {
    fn answer(&self, _: Option<&str>, _: KtRequest<'_>) -> Option<KtLie> {
        None
    }

    fn omits(&self, name: &str) -> bool {
        name == self.0
    }
}

/// Installs a liar: `f(who, request)`, `who` the account asking (by its bearer token).
fn lie(relay: &Relay, f: impl Fn(Option<&str>, KtRequest<'_>) -> Option<KtLie> + Send + Sync + 'static) {
    relay.state().set_malice(Some(Arc::new(Liar(f))));
}

fn honest(relay: &Relay) {
    relay.state().set_malice(None);
}

fn kt(relay: &Relay) -> &Arc<Transparency> {
    relay.state().transparency().unwrap()
}

fn newest(relay: &Relay) -> u64 {
    kt(relay).latest().map_or(0, |e| e.epoch)
}

fn name(n: &str) -> AccountName {
    AccountName::new(n).unwrap()
}

/// Makes the real log publish a new epoch: creates account `n` (no device of it is kept)
/// and waits until the epoch holding it is signed.
async fn advance(relay: &Relay, n: &str) -> u64 {
    let before = newest(relay);
    RelayProbe::new(&relay.url, &ConnectOptions::default()).unwrap().create_account(n, None).await.unwrap();
    for _ in 0..200 {
        if newest(relay) > before && kt(relay).lookup(&name(n)).await.is_ok() {
            return newest(relay);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no epoch published {n}");
}

/// A signed device list of `n` that its owner never made: a key the attacker holds.
fn forged_list(n: &str) -> Vec<u8> {
    let mut rng = rand_core::OsRng;
    let account = AccountIdentity::generate(&mut rng).unwrap();
    let device = DeviceIdentity::generate(&mut rng).unwrap();
    let entry = DeviceEntry {
        approver: true,
        ..DeviceEntry::new(DeviceId::new(1).unwrap(), device.public().clone())
    };
    let list = DeviceList::sign(&account, name(n), 1, vec![entry]).unwrap();
    AccountEntry::List(list.to_bytes()).to_bytes()
}

/// The real log's history of `names` replayed into a fork up to the newest epoch, with
/// `rewrite` applied to every value.
async fn fork(
    relay: &Relay,
    names: &[&str],
    rewrite: impl Fn(&AccountName, u64, Vec<u8>) -> Vec<u8>,
) -> Fork {
    let names: Vec<AccountName> = names.iter().map(|n| name(n)).collect();
    Fork::replay(kt(relay), &names, newest(relay), rewrite).await.unwrap()
}

fn root_of(w: &SignedRootWire) -> (u64, Vec<u8>) {
    (w.epoch, w.root.0.to_vec())
}

/// Substituting a contact's key: the server answers alice's lookup of bob with a proof
/// that bob's entry holds a list with a key the attacker made, under the real signed root.
/// The proof does not verify: `bad-proof`, before anything is encrypted; bob receives
/// nothing. Honest again, the same send goes through. (Signing a fork instead, where the
/// proof verifies, is the next test's fork, found by the contacts' messages.)
async fn a_substituted_key_is_refused_before_anything_is_encrypted(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    alice.send_text("bob", "one").await.unwrap();
    assert_eq!(bob.receive(Duration::ZERO).await.unwrap().len(), 1);

    let forged = forged_list("bob");
    let fork =
        fork(&relay, &["alice", "bob"], |n, _, v| if n.as_str() == "bob" { forged.clone() } else { v }).await;
    let substituted = fork.lookup(&name("bob")).await.unwrap();
    let real_root = kt(&relay).honest_lookup(&name("bob")).await.unwrap().root;
    lie(&relay, move |_, r| match r {
        KtRequest::Lookup("bob") => {
            Some(KtLie::Proof(KtProofResponse { root: real_root.clone(), ..substituted.clone() }))
        }
        _ => None,
    });
    let err = alice.send_text("bob", "two").await.unwrap_err();
    assert_eq!(err.kt_violation(), Some(KtViolation::BadProof), "{err}");
    assert!(err.to_string().contains("bob"), "{err}");
    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty(), "nothing was encrypted to bob");

    honest(&relay);
    alice.send_text("bob", "three").await.unwrap();
    let got = bob.receive(Duration::ZERO).await.unwrap();
    assert_eq!(got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["three"]);
    relay.stop().await;
}

/// An older epoch after a newer one: alice's lookup of bob answered with a proof the
/// server gave at an earlier epoch (valid then, signed by its key). Alice saw a newer
/// epoch: `rollback`, before anything is encrypted.
async fn an_older_epoch_after_a_newer_one_is_refused_as_a_rollback(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    alice.send_text("bob", "one").await.unwrap();
    bob.receive(Duration::ZERO).await.unwrap();
    let old = kt(&relay).honest_lookup(&name("bob")).await.unwrap();
    advance(&relay, "carol").await;
    alice.send_text("bob", "two").await.unwrap();
    assert!(alice.kt_status().await.unwrap().newest_epoch.unwrap().0 > old.root.epoch);
    bob.receive(Duration::ZERO).await.unwrap();

    lie(&relay, move |_, r| matches!(r, KtRequest::Lookup("bob")).then(|| KtLie::Proof(old.clone())));
    let err = alice.send_text("bob", "three").await.unwrap_err();
    assert_eq!(err.kt_violation(), Some(KtViolation::Rollback), "{err}");
    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty(), "nothing was encrypted to bob");

    honest(&relay);
    alice.send_text("bob", "four").await.unwrap();
    assert_eq!(bob.receive(Duration::ZERO).await.unwrap().len(), 1);
    relay.stop().await;
}

/// Different roots for two clients: the server shows alice, and only her, a fork (the real
/// history replayed, then an epoch of the attacker's choosing, signed with the server's key;
/// its proofs verify), and bob the real log, consistently. Neither can tell alone. The real
/// log then publishes its own epoch of that number; bob's next message carries it and alice
/// finds the fork (`fork` alarm, kept for `kt status`); alice's next message carries her
/// root of that epoch, and bob finds it too. (What the forked epoch holds is the attacker's
/// choice: a key for bob it made is the same fork; messages alice encrypts in that view
/// before the fork is found reach that key, unless she requires auditors' cosignatures.)
async fn two_clients_shown_different_roots_find_the_fork_from_each_others_messages(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    alice.send_text("bob", "one").await.unwrap();
    bob.receive(Duration::ZERO).await.unwrap();

    let mut fork = fork(&relay, &["alice", "bob"], |_, _, v| v).await;
    // The replay is faithful: the fork's root of the newest epoch is the real one.
    let real = kt(&relay).latest().unwrap();
    assert_eq!(fork.latest().map(|r| root_of(&r)), Some((real.epoch, real.root.to_vec())));
    let forked =
        fork.publish(vec![(name("mallory"), forged_list("mallory"))], real.timestamp_ms + 1).await.unwrap();
    let fork_root = fork.root(forked).unwrap();
    let mut answers = std::collections::HashMap::new();
    for n in ["alice", "bob"] {
        answers.insert((n, false), fork.lookup(&name(n)).await.unwrap());
        answers.insert((n, true), fork.history(&name(n)).await.unwrap());
    }
    let mut info = kt(&relay).info();
    info.latest = Some(fork_root.clone());
    let shown = fork_root.clone();
    lie(&relay, move |who, r| {
        if who != Some("alice") {
            return None;
        }
        match r {
            KtRequest::Info => Some(KtLie::Info(info.clone())),
            KtRequest::Epoch(e) if e == forked => Some(KtLie::Root(shown.clone())),
            KtRequest::Epoch(e) | KtRequest::Audit(e) if e > forked => Some(KtLie::NotFound),
            KtRequest::Lookup(n) => answers.get(&(n, false)).cloned().map(KtLie::Proof),
            KtRequest::History(n) => answers.get(&(n, true)).cloned().map(KtLie::Proof),
            _ => None,
        }
    });
    assert_eq!(alice.kt_status().await.unwrap().newest_epoch.unwrap().0, forked);

    // The real log reaches that epoch number with other content; bob sees it.
    assert_eq!(advance(&relay, "carol").await, forked);
    assert!(bob.kt_status().await.unwrap().forks.is_empty(), "bob alone cannot tell");
    bob.send_text("alice", "two").await.unwrap();
    assert_eq!(bob.kt_status().await.unwrap().newest_epoch.unwrap().0, forked);
    assert!(alice.kt_status().await.unwrap().forks.is_empty(), "alice alone cannot tell");
    alice.receive(Duration::ZERO).await.unwrap();
    assert!(alice.take_warnings().iter().any(|w| w.contains("KEY TRANSPARENCY ALARM")));
    let forks = alice.kt_status().await.unwrap().forks;
    assert_eq!(forks.len(), 1, "{forks:?}");
    assert!(forks[0].contains("you and bob") && forks[0].contains(&format!("epoch {forked}")), "{forks:?}");

    // The server rejoins alice to the real log at a newer epoch (so her newest root is the
    // real one); her message to bob still carries her root of the forked epoch.
    honest(&relay);
    let rejoined = advance(&relay, "dave").await;
    assert_eq!(alice.kt_status().await.unwrap().newest_epoch.unwrap().0, rejoined);
    alice.send_text("bob", "three").await.unwrap();
    let got = bob.receive(Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    let forks = bob.kt_status().await.unwrap().forks;
    assert_eq!(forks.len(), 1, "bob finds it from alice's message: {forks:?}");
    assert!(forks[0].contains(&hex(&fork_root.root.0)), "{forks:?}");
    assert_eq!(texts(&bob, "alice"), ["one", "two", "three"]);

    // The evidence is kept: the server, honest to alice again, cannot make her forget it.
    advance(&relay, "erin").await;
    assert_eq!(alice.kt_status().await.unwrap().forks.len(), 1);
    relay.stop().await;
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Rewriting an account's history in a later epoch: the server publishes an epoch whose
/// directory shows alice's first version with a key the attacker made (the whole log
/// replayed with that one value changed; signed; its proofs verify). Alice's own-history
/// monitor raises the alarm (a key she did not make); the auditor, which verified the
/// real log up to the epoch before, finds no append-only proof into the new root
/// (`audit`, exit 4 in `tacit audit`).
async fn a_history_rewritten_in_a_later_epoch_is_found_by_the_owner_and_the_auditor(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb, hs) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    alice.send_text("bob", "one").await.unwrap();
    bob.receive(Duration::ZERO).await.unwrap();
    let state = hs.path().join("audit.json");
    let audit = |state: std::path::PathBuf, url: String| async move {
        tacit_client::audit::audit_server(&url, &state, &ConnectOptions::default(), None, |_, _| {}).await
    };
    let before = audit(state.clone(), relay.url.clone()).await.unwrap();
    let own = alice.kt_status().await.unwrap().own_history.unwrap();
    assert!(own.alarms.is_empty(), "{:?}", own.alarms);

    let forged = forged_list("alice");
    let first = alice.kt_history("alice").await.unwrap().last().unwrap().epoch;
    let mut fork =
        fork(
            &relay,
            &["alice", "bob"],
            |n, e, v| {
                if n.as_str() == "alice" && e == first { forged.clone() } else { v }
            },
        )
        .await;
    let real = kt(&relay).latest().unwrap();
    let rewritten =
        fork.publish(vec![(name("filler"), forged_list("filler"))], real.timestamp_ms + 1).await.unwrap();
    let mut info = kt(&relay).info();
    info.latest = fork.root(rewritten);
    let (alice_history, audit_proof) =
        (fork.history(&name("alice")).await.unwrap(), fork.audit(rewritten).await.unwrap());
    let roots: Vec<Option<SignedRootWire>> = (0..=rewritten).map(|e| fork.root(e)).collect();
    lie(&relay, move |_, r| match r {
        KtRequest::Info => Some(KtLie::Info(info.clone())),
        KtRequest::Epoch(e) => roots.get(e as usize).cloned().flatten().map(KtLie::Root),
        KtRequest::Audit(e) if e == rewritten => Some(KtLie::Bytes(audit_proof.clone())),
        KtRequest::History("alice") => Some(KtLie::Proof(alice_history.clone())),
        _ => None,
    });
    let own = alice.kt_status().await.unwrap().own_history.unwrap();
    assert_eq!(own.epoch, rewritten);
    assert!(
        own.alarms.iter().any(|a| a.contains("version 1") && a.contains("a key you did not make")),
        "{:?}",
        own.alarms
    );
    let err = audit(state.clone(), relay.url.clone()).await.unwrap_err();
    assert_eq!(err.kt_violation(), Some(KtViolation::Audit), "{err} (audited to {:?} before)", before.epochs);

    // Positive control: honest again, both pass (the auditor's state kept the real epochs).
    honest(&relay);
    advance(&relay, "carol").await;
    audit(state, relay.url.clone()).await.unwrap();
    relay.stop().await;
}

/// Omitting an update: the publisher leaves bob's new account out of the directory (its
/// change is dropped as if published). Alice cannot get bob's keys: `unpublished` once the
/// wait for the next epoch runs out, nothing sent; bob's monitor raises the alarm two
/// epochs after the server accepted his list.
async fn an_omitted_update_is_found_by_the_owner_and_refused_by_contacts(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    relay.state().set_malice(Some(Arc::new(Omit("bob"))));
    let mut bob = account(&relay, hb.path(), "bob").await;
    advance(&relay, "carol").await;
    // One epoch after: not yet an alarm (an honest server may be publishing it).
    let err = alice.send_text("bob", "one").await.unwrap_err();
    assert_eq!(err.kt_violation(), Some(KtViolation::Unpublished), "{err}");
    advance(&relay, "dave").await;
    let own = bob.kt_status().await.unwrap().own_history.expect("an alarm");
    assert!(own.alarms.iter().any(|a| a.contains("left the update out")), "{:?}", own.alarms);
    // Positive control: alice's own account, published, raises none.
    let own = alice.kt_status().await.unwrap().own_history.unwrap();
    assert!(own.alarms.is_empty(), "{:?}", own.alarms);
    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty());
    relay.stop().await;
}

/// A name deleted and taken again, the new account left out of the directory: its newest
/// version stays the earlier account's list. One epoch after, no alarm (an honest server
/// may be publishing it); two after, the owner's monitor finds the omission (before, the
/// earlier account's list version counted as this account's published one and hid it).
async fn an_account_made_again_and_left_out_of_the_directory_is_found_by_its_owner(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (hb, hb2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut bob = account(&relay, hb.path(), "bob").await;
    advance(&relay, "carol").await;
    assert!(
        bob.kt_status().await.unwrap().own_history.is_some_and(|o| o.versions == 1 && o.alarms.is_empty())
    );
    relay.state().set_malice(Some(Arc::new(Omit("bob"))));
    bob.delete_account().await.unwrap();
    let mut bob = account(&relay, hb2.path(), "bob").await;
    advance(&relay, "dave").await;
    assert!(bob.kt_status().await.unwrap().own_history.is_none(), "one epoch after: not yet");
    advance(&relay, "erin").await;
    let own = bob.kt_status().await.unwrap().own_history.expect("an alarm");
    assert!(own.alarms.iter().any(|a| a.contains("left the update out")), "{:?}", own.alarms);
    relay.stop().await;
}

/// A proof for another account: alice's lookup of bob answered with carol's (valid, for
/// the real root). The VRF binds the proof to carol's label: `wrong-account`.
async fn a_proof_for_another_account_is_refused(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb, hc) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    let _carol = account(&relay, hc.path(), "carol").await;
    advance(&relay, "dave").await;
    let carols = kt(&relay).honest_lookup(&name("carol")).await.unwrap();
    lie(&relay, move |_, r| matches!(r, KtRequest::Lookup("bob")).then(|| KtLie::Proof(carols.clone())));
    let err = alice.send_text("bob", "one").await.unwrap_err();
    assert_eq!(err.kt_violation(), Some(KtViolation::WrongAccount), "{err}");
    honest(&relay);
    alice.send_text("bob", "two").await.unwrap();
    let got = bob.receive(Duration::ZERO).await.unwrap();
    assert_eq!(got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["two"]);
    relay.stop().await;
}

/// A first-time contact shown an old device list: bob linked a laptop, then revoked it
/// (the laptop is the attacker's now). Carol, new, has never talked to bob; the server
/// answers her lookup of bob with the proof of the list that still holds the laptop (valid
/// at its epoch, signed). Carol's device saw a newer epoch when it was made: `rollback`,
/// nothing encrypted to the revoked laptop (or to bob).
async fn a_first_time_contact_is_not_shown_an_old_list_with_a_revoked_device(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (hb, hl, hc) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut bob = account(&relay, hb.path(), "bob").await;
    let mut laptop = link(&relay, &mut bob, hl.path()).await;
    let with_laptop = loop {
        let l = kt(&relay).honest_lookup(&name("bob")).await.unwrap();
        if !l.pending {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    bob.revoke_device(laptop.device_id()).await.unwrap();
    advance(&relay, "dave").await;

    let mut carol = account(&relay, hc.path(), "carol").await;
    lie(&relay, move |_, r| matches!(r, KtRequest::Lookup("bob")).then(|| KtLie::Proof(with_laptop.clone())));
    let err = carol.send_text("bob", "for bob only").await.unwrap_err();
    assert_eq!(err.kt_violation(), Some(KtViolation::Rollback), "{err}");
    assert!(carol.history("bob").unwrap_or_default().is_empty(), "nothing was encrypted");
    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty(), "nothing was sent");

    honest(&relay);
    carol.send_text("bob", "for bob only").await.unwrap();
    assert_eq!(texts_received(&mut bob).await, ["for bob only"]);
    // The honest list has no laptop: the revoked device is refused by the server.
    assert!(laptop.receive(Duration::ZERO).await.is_err());
    relay.stop().await;
}

async fn texts_received(c: &mut Client) -> Vec<String> {
    c.receive(Duration::ZERO).await.unwrap().into_iter().map(|m| m.text).collect()
}

/// Requiring auditors closes the fork's window: alice requires one auditor's cosignature;
/// the auditor (`tacit audit --cosign`, as a library) audits the real log and posts its
/// cosignature of the newest root, which the server (listing it) serves with that root.
/// Honest, alice's send goes through. The server then shows alice a fork with bob's key
/// substituted (signed, its proofs verify; the real epoch's cosignature copied onto it):
/// `not-cosigned` after the wait, nothing encrypted. Carol, who requires no auditor, is
/// shown the same fork and takes it (the positive control: the proofs do verify). Honest
/// again and audited again, alice sends.
async fn a_fork_without_the_required_auditors_cosignatures_is_refused_before_encrypting(backend: Backend) {
    let auditor = tacit_transparency::RootSigner::from_seed([77; 32]).unwrap();
    let relay = Relay::start_with(backend, false, |c| c.kt_auditors = vec![hex(&auditor.public())]).await;
    let (ha, hb, hc, hs) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut alice = account(&relay, ha.path(), "alice").await;
    alice.require_auditors(&[auditor.public()], 1, Duration::from_secs(2)).unwrap();
    let mut bob = account(&relay, hb.path(), "bob").await;
    let mut carol = account(&relay, hc.path(), "carol").await;
    advance(&relay, "dave").await;
    let state = hs.path().join("audit.json");
    let audit = || async {
        tacit_client::audit::audit_server(
            &relay.url,
            &state,
            &ConnectOptions::default(),
            Some(&auditor),
            |_, _| {},
        )
        .await
        .unwrap()
    };
    let report = audit().await;
    assert_eq!(report.posted, Some(Ok(newest(&relay))), "{report:?}");
    alice.send_text("bob", "one").await.unwrap();
    assert_eq!(bob.receive(Duration::ZERO).await.unwrap().len(), 1);

    let forged = forged_list("bob");
    let mut fork = fork(&relay, &["alice", "bob", "carol", "dave"], |_, _, v| v).await;
    let real = kt(&relay).honest_lookup(&name("bob")).await.unwrap();
    let forked = fork.publish(vec![(name("bob"), forged.clone())], real.root.timestamp_ms + 1).await.unwrap();
    let mut substituted = fork.lookup(&name("bob")).await.unwrap();
    substituted.root.cosignatures = real.root.cosignatures.clone();
    assert_eq!(substituted.root.cosignatures.len(), 1, "the real root is cosigned");
    let history = fork.history(&name("bob")).await.unwrap();
    lie(&relay, move |_, r| match r {
        KtRequest::Lookup("bob") => Some(KtLie::Proof(substituted.clone())),
        KtRequest::History("bob") => Some(KtLie::Proof(history.clone())),
        _ => None,
    });
    let err = alice.send_text("bob", "two").await.unwrap_err();
    assert_eq!(err.kt_violation(), Some(KtViolation::NotCosigned), "{err}");
    assert!(err.to_string().contains(&format!("epoch {forked}")), "{err}");
    assert!(bob.receive(Duration::ZERO).await.unwrap().is_empty(), "nothing was encrypted");
    let shown = carol.kt_history("bob").await.unwrap();
    assert_eq!(shown[0].epoch, forked, "without auditors the fork's proofs pass: {shown:?}");
    let forged_key = DeviceList::verify(
        &match AccountEntry::from_bytes(&forged).unwrap() {
            AccountEntry::List(b) => b,
            AccountEntry::Deleted => unreachable!(),
        },
        &name("bob"),
        None,
        None,
    )
    .unwrap();
    assert_eq!(shown[0].account_key.as_deref(), Some(hex(forged_key.account_key().as_bytes()).as_str()));

    honest(&relay);
    // The real log passes the forked epoch (alice keeps the fork's signed root of that
    // epoch as evidence, so the real one of the same number would be a fork to her).
    advance(&relay, "erin").await;
    assert!(advance(&relay, "frank").await > forked);
    // A new epoch the auditor has not reached: refused after the wait...
    let err = alice.send_text("bob", "three").await.unwrap_err();
    assert_eq!(err.kt_violation(), Some(KtViolation::NotCosigned), "{err}");
    // ...and sent once it has.
    audit().await;
    alice.send_text("bob", "four").await.unwrap();
    let got = bob.receive(Duration::ZERO).await.unwrap();
    assert_eq!(got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["four"]);
    relay.stop().await;
}
