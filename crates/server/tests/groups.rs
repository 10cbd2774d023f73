//! Issue 11 on the relay, over real sockets, on SQLite and PostgreSQL: MLS groups made
//! with tacit-groups (mls-rs) delivered through `/v1/groups`: the first commit for an epoch
//! wins and the loser rebases; a Welcome goes only to the devices its commit adds; every
//! message is stored once and deleted after the last acknowledgement; the relay refuses
//! what it can check without keys, and a refusal changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[macro_use]
mod common;

use common::*;
use reqwest::{Method, StatusCode};
use tacit_api as api;
use tacit_groups::{Directory, GroupDevice, GroupMeta, OpenGroup, Received, Suite};
use tacit_protocol::{AccountName, DeviceAddress, DeviceId, UnixTime};

on_both!(
    a_group_conversation_through_the_relay,
    the_first_commit_for_an_epoch_wins_and_the_loser_rebases,
    racing_commits_never_fork_the_epoch,
    the_relay_refuses_what_it_can_check,
    a_message_is_stored_once_and_deleted_after_the_last_ack,
    removed_and_leaving_devices_get_nothing_more,
    connected_members_get_group_envelopes_live,
    a_device_is_taken_back_in_by_one_commit,
);

const NOW: UnixTime = UnixTime(1_790_000_000);

/// A relay user with its MLS device (every test user is device 1 of its account).
struct Member {
    user: User,
    mls: GroupDevice,
    key_packages: Vec<(Vec<u8>, Vec<u8>)>,
}

fn address(user: &User) -> DeviceAddress {
    DeviceAddress { account: AccountName::new(&user.name).unwrap(), device: DeviceId::new(1).unwrap() }
}

async fn member(http: &Http, prefix: &str, directory: &Directory) -> Member {
    let user = User::register(http, &unique(prefix), 4).await;
    directory.insert(&user.list);
    let mls = GroupDevice::new(&user.device, &address(&user), Suite::Classical, directory.clone());
    Member { user, mls, key_packages: Vec::new() }
}

impl Member {
    fn me(&self) -> api::GroupMember {
        api::GroupMember { account: self.user.name.clone(), device: 1 }
    }

    /// Uploads one KeyPackage (keeping its secret).
    async fn upload_key_package(&mut self, http: &Http) {
        let kp = self.mls.new_key_package(NOW).unwrap();
        self.key_packages.push((kp.reference.clone(), kp.secret.to_vec()));
        let upload = api::KeyPackageUpload { key_packages: vec![kp.public.into()], last_resort: None };
        let _: api::KeyPackageStatus =
            http.ok(Method::PUT, api::KEY_PACKAGES, self.user.tok(), Some(&upload)).await;
    }

    /// Joins from a Welcome envelope (the test's encoding: Welcome, then the tree).
    fn join(&self, envelope: &api::Envelope) -> OpenGroup {
        let g = envelope.group.as_ref().expect("a group envelope");
        assert_eq!(g.kind, api::GroupKind::Welcome);
        let (welcome, tree) = split(envelope.content.as_slice());
        let refs = GroupDevice::welcome_references(welcome).unwrap();
        let (r, secret) = self.key_packages.iter().find(|(r, _)| refs.contains(r)).unwrap();
        let group = self.mls.join(welcome, tree, r, secret, NOW).unwrap();
        assert_eq!(group.epoch(), g.epoch);
        group
    }

    async fn fetch(&self, http: &Http) -> Vec<api::Envelope> {
        self.user.fetch(http).await.envelopes
    }

    async fn ack(&self, http: &Http, envelopes: &[api::Envelope]) {
        let req = api::AckRequest { ids: envelopes.iter().map(|e| e.id).collect(), state_counter: None };
        let (status, _) = http.call(Method::POST, api::ACK, self.user.tok(), Some(&req)).await;
        assert!(status.is_success());
    }
}

/// The Welcome and the tree beside it in one envelope (a length prefix; the SDK has its own).
fn pack(welcome: &[u8], tree: &[u8]) -> Vec<u8> {
    let mut out = (welcome.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(welcome);
    out.extend_from_slice(tree);
    out
}

fn split(bytes: &[u8]) -> (&[u8], &[u8]) {
    let n = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    (&bytes[4..4 + n], &bytes[4 + n..])
}

/// The device's state counter as a new authentication answers it.
async fn counter_at_login(http: &Http, user: &common::User) -> Option<u64> {
    let c = user.challenge(http).await;
    let s: api::SessionResponse =
        http.ok(Method::POST, api::AUTH_SESSION, None, Some(&user.answer(&c))).await;
    s.state_counter
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn commits_path(group: &[u8]) -> String {
    api::GROUP_COMMITS.replace("{group}", &hex(group))
}

fn messages_path(group: &[u8]) -> String {
    api::GROUP_MESSAGES.replace("{group}", &hex(group))
}

fn status_path(group: &[u8]) -> String {
    api::GROUP.replace("{group}", &hex(group))
}

/// `by` commits adding the devices of `adds` (their KeyPackages taken from the relay) and
/// removing `removes`, and posts it; merges on success.
async fn commit(
    http: &Http,
    by: &Member,
    group: &mut OpenGroup,
    adds: &[&Member],
    removes: &[&Member],
) -> (StatusCode, serde_json::Value) {
    let mut kps = Vec::new();
    for m in adds {
        let path = api::KEY_PACKAGE.replace("{name}", &m.user.name).replace("{device}", "1");
        let r: api::KeyPackageResponse = http.ok(Method::GET, &path, by.user.tok(), NONE).await;
        kps.push(r.key_package.0);
    }
    let remove: Vec<_> = removes.iter().map(|m| m.mls.member().clone()).collect();
    let c = group.commit(&kps, &remove, None).unwrap();
    let req = api::GroupCommitRequest {
        commit: c.commit.clone().into(),
        welcome: c.welcome.as_ref().map(|w| pack(w, c.tree.as_deref().unwrap()).into()),
        added: adds.iter().map(|m| m.me()).collect(),
        removed: removes.iter().map(|m| m.me()).collect(),
        idempotency_key: None,
        state_counter: None,
    };
    let out = http.call(Method::POST, &commits_path(group.id()), by.user.tok(), Some(&req)).await;
    if out.0.is_success() {
        group.merge_pending().unwrap();
    } else {
        group.discard_pending();
    }
    out
}

async fn say(http: &Http, by: &Member, group: &mut OpenGroup, text: &str) -> (StatusCode, serde_json::Value) {
    let req = api::GroupMessageRequest {
        content: group.encrypt(text.as_bytes()).unwrap().into(),
        idempotency_key: None,
        state_counter: None,
    };
    http.call(Method::POST, &messages_path(group.id()), by.user.tok(), Some(&req)).await
}

/// Processes every group envelope waiting for `m` in `group`, acknowledges them, and
/// returns the texts read.
async fn receive(http: &Http, m: &Member, group: &mut OpenGroup) -> Vec<String> {
    let envelopes = m.fetch(http).await;
    let mut texts = Vec::new();
    for e in &envelopes {
        let g = e.group.as_ref().unwrap();
        assert_eq!(g.id.as_slice(), group.id());
        match group.process(e.content.as_slice()).unwrap() {
            Received::Application { data, epoch, .. } => {
                assert_eq!((g.kind, g.epoch), (api::GroupKind::Message, epoch));
                texts.push(String::from_utf8(data).unwrap());
            }
            Received::Commit(_) => assert_eq!(g.kind, api::GroupKind::Commit),
            other => panic!("{other:?}"),
        }
    }
    m.ack(http, &envelopes).await;
    texts
}

async fn status(http: &Http, m: &Member, group: &[u8]) -> api::GroupStatus {
    http.ok(Method::GET, &status_path(group), m.user.tok(), NONE).await
}

/// Rows of a table of the server's store.
async fn rows(server: &TestServer, table: &str) -> i64 {
    match server.schema() {
        None => {
            let db = rusqlite::Connection::open(server.data_dir().join("tacit.db")).unwrap();
            db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get::<_, i64>(0)).unwrap()
        }
        Some(schema) => pg_admin()
            .await
            .query_one(&format!("SELECT count(*) FROM {schema}.{table}"), &[])
            .await
            .unwrap()
            .get(0),
    }
}

/// A group of `alice` and the others, all joined.
async fn group_of(http: &Http, alice: &Member, others: &mut [Member]) -> (OpenGroup, Vec<OpenGroup>) {
    let mut group = alice.mls.create(&GroupMeta::new("relay test", "", vec![]).unwrap(), NOW).unwrap();
    for m in others.iter_mut() {
        m.upload_key_package(http).await;
    }
    let adds: Vec<&Member> = others.iter().collect();
    let (status, body) = commit(http, alice, &mut group, &adds, &[]).await;
    assert!(status.is_success(), "{body}");
    let mut groups = Vec::new();
    for m in others.iter() {
        let envelopes = m.fetch(http).await;
        assert_eq!(envelopes.len(), 1);
        groups.push(m.join(&envelopes[0]));
        m.ack(http, &envelopes).await;
    }
    (group, groups)
}

async fn a_group_conversation_through_the_relay(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let directory = Directory::new();
    let alice = member(&http, "alice", &directory).await;
    let mut bob = member(&http, "bob", &directory).await;
    let mut carol = member(&http, "carol", &directory).await;

    // Alice makes the group (epoch 0 is new to the relay) adding Bob: Bob gets the Welcome.
    let mut a = alice.mls.create(&GroupMeta::new("family", "", vec![]).unwrap(), NOW).unwrap();
    bob.upload_key_package(&http).await;
    let (code, body) = commit(&http, &alice, &mut a, &[&bob], &[]).await;
    assert!(code.is_success(), "{body}");
    let envelopes = bob.fetch(&http).await;
    assert_eq!(envelopes.len(), 1);
    assert_eq!((envelopes[0].sender.as_str(), envelopes[0].sender_device), (alice.user.name.as_str(), 1));
    let mut b = bob.join(&envelopes[0]);
    bob.ack(&http, &envelopes).await;
    let s = status(&http, &bob, a.id()).await;
    assert_eq!(s.epoch, 1);
    let mut names: Vec<_> = vec![alice.me(), bob.me()];
    names.sort();
    assert_eq!(s.members, names);

    // Messages both ways.
    assert!(say(&http, &alice, &mut a, "hello bob").await.0.is_success());
    assert_eq!(receive(&http, &bob, &mut b).await, ["hello bob"]);
    assert!(say(&http, &bob, &mut b, "hi alice").await.0.is_success());
    assert_eq!(receive(&http, &alice, &mut a).await, ["hi alice"]);

    // Bob adds Carol: Alice gets the commit, Carol the Welcome, and all three talk.
    carol.upload_key_package(&http).await;
    assert!(commit(&http, &bob, &mut b, &[&carol], &[]).await.0.is_success());
    assert!(receive(&http, &alice, &mut a).await.is_empty());
    let envelopes = carol.fetch(&http).await;
    assert_eq!(envelopes.len(), 1, "Carol gets the Welcome only, not the commit");
    let mut c = carol.join(&envelopes[0]);
    carol.ack(&http, &envelopes).await;
    assert!(say(&http, &carol, &mut c, "hi all").await.0.is_success());
    assert_eq!(receive(&http, &alice, &mut a).await, ["hi all"]);
    assert_eq!(receive(&http, &bob, &mut b).await, ["hi all"]);
    assert!(carol.fetch(&http).await.is_empty(), "no copy to the sender");
    for g in [&a, &b, &c] {
        assert_eq!(g.epoch(), 2);
        assert_eq!(g.epoch_authenticator().unwrap(), a.epoch_authenticator().unwrap());
    }
    assert_eq!(status(&http, &carol, a.id()).await.epoch, 2);
    server.finish().await;
}

fn bare_commit(commit: Vec<u8>) -> api::GroupCommitRequest {
    api::GroupCommitRequest {
        commit: commit.into(),
        welcome: None,
        added: vec![],
        removed: vec![],
        idempotency_key: None,
        state_counter: None,
    }
}

async fn the_first_commit_for_an_epoch_wins_and_the_loser_rebases(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let directory = Directory::new();
    let alice = member(&http, "alice", &directory).await;
    let mut others = vec![member(&http, "bob", &directory).await];
    let (mut a, mut groups) = group_of(&http, &alice, &mut others).await;
    let (bob, b) = (&others[0], &mut groups[0]);

    // Both update in epoch 1; Alice's reaches the relay first.
    let alice_commit = a.commit(&[], &[], None).unwrap();
    let bob_commit = b.commit(&[], &[], None).unwrap();
    let path = commits_path(a.id());
    let (code, _) =
        http.call(Method::POST, &path, alice.user.tok(), Some(&bare_commit(alice_commit.commit))).await;
    assert!(code.is_success());
    a.merge_pending().unwrap();
    let (code, body) =
        http.call(Method::POST, &path, bob.user.tok(), Some(&bare_commit(bob_commit.commit))).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    let conflict: api::GroupEpochConflict = serde_json::from_value(body).unwrap();
    assert_eq!(conflict, api::GroupEpochConflict { code: api::ErrorCode::StaleEpoch, epoch: 2 });
    // Alice got nothing of Bob's losing commit.
    assert!(alice.fetch(&http).await.is_empty());
    // Bob drops his, processes the winner, and commits again in epoch 2.
    b.discard_pending();
    assert!(receive(&http, bob, b).await.is_empty());
    let retry = b.commit(&[], &[], None).unwrap();
    assert_eq!(retry.epoch, 2);
    let (code, body) = http.call(Method::POST, &path, bob.user.tok(), Some(&bare_commit(retry.commit))).await;
    assert!(code.is_success(), "{body}");
    b.merge_pending().unwrap();
    assert!(receive(&http, &alice, &mut a).await.is_empty());
    assert_eq!((a.epoch(), b.epoch()), (3, 3));
    assert_eq!(a.epoch_authenticator().unwrap(), b.epoch_authenticator().unwrap());
    assert_eq!(status(&http, &alice, a.id()).await.epoch, 3);
    server.finish().await;
}

/// A `PrivateMessage` header with filler ciphertext: the relay reads nothing else.
fn frame(group: &[u8], epoch: u64, content_type: u8, tag: u8) -> Vec<u8> {
    let mut m = vec![0, 1, 0, 2, group.len() as u8];
    m.extend_from_slice(group);
    m.extend_from_slice(&epoch.to_be_bytes());
    m.push(content_type);
    m.extend_from_slice(&[0, 1, tag, 0x40, 0x40]);
    m.extend_from_slice(&[tag; 64]);
    m
}

async fn racing_commits_never_fork_the_epoch(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let mut users = Vec::new();
    for i in 0..8 {
        users.push(User::register(&http, &unique(&format!("racer{i}")), 1).await);
    }
    let group = [7u8; 16];
    let path = commits_path(&group);
    // users[0] makes the group with everyone (the Welcome is opaque to the relay).
    let create = api::GroupCommitRequest {
        commit: frame(&group, 0, 3, 0).into(),
        welcome: Some(vec![1; 10].into()),
        added: users[1..].iter().map(|u| api::GroupMember { account: u.name.clone(), device: 1 }).collect(),
        removed: vec![],
        idempotency_key: None,
        state_counter: None,
    };
    let (code, body) = http.call(Method::POST, &path, users[0].tok(), Some(&create)).await;
    assert!(code.is_success(), "{body}");
    for round in 1..=5u64 {
        // Everyone commits in this epoch at once: exactly one wins.
        let mut tasks = Vec::new();
        for (i, u) in users.iter().enumerate() {
            let (http, path, tok) = (http.clone(), path.clone(), u.token.clone());
            let req = bare_commit(frame(&group, round, 3, i as u8));
            tasks.push(tokio::spawn(
                async move { http.call(Method::POST, &path, Some(&tok), Some(&req)).await },
            ));
        }
        let mut won = 0;
        for t in tasks {
            let (code, body) = t.await.unwrap();
            if code.is_success() {
                won += 1;
            } else {
                assert_eq!(code, StatusCode::CONFLICT, "{body}");
                assert_eq!(body["epoch"], round + 1);
            }
        }
        assert_eq!(won, 1, "round {round}");
    }
    // Every device holds the same commits in the same order: one per epoch.
    let mut orders = Vec::new();
    for u in &users {
        let envelopes = u.fetch(&http).await.envelopes;
        let commits: Vec<(u64, Vec<u8>)> = envelopes
            .iter()
            .filter(|e| e.group.as_ref().unwrap().kind == api::GroupKind::Commit)
            .map(|e| (e.group.as_ref().unwrap().epoch, e.content.0.clone()))
            .collect();
        orders.push(commits);
    }
    // The winner of a round has no copy of its own commit; compare by epoch.
    for epoch in 1..=5u64 {
        let seen: std::collections::BTreeSet<Vec<u8>> = orders
            .iter()
            .flat_map(|o| o.iter().filter(|(e, _)| *e == epoch).map(|(_, c)| c.clone()))
            .collect();
        assert_eq!(seen.len(), 1, "one commit for epoch {epoch}");
        assert_eq!(orders.iter().filter(|o| o.iter().any(|(e, _)| *e == epoch)).count(), 7);
    }
    for o in &orders {
        assert!(o.windows(2).all(|w| w[0].0 < w[1].0), "in epoch order");
    }
    // A commit sent again with its idempotency key (its answer lost) is answered as the
    // first time, and taken once.
    let mut again = bare_commit(frame(&group, 6, 3, 99));
    again.idempotency_key = Some(vec![3u8; 16].into());
    let first: api::SendResponse = http.ok(Method::POST, &path, users[0].tok(), Some(&again)).await;
    let second: api::SendResponse = http.ok(Method::POST, &path, users[0].tok(), Some(&again)).await;
    assert_eq!(first, second);
    let s: api::GroupStatus = http.ok(Method::GET, &status_path(&group), users[0].tok(), NONE).await;
    assert_eq!(s.epoch, 7);
    server.finish().await;
}

async fn the_relay_refuses_what_it_can_check(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let directory = Directory::new();
    let alice = member(&http, "alice", &directory).await;
    let mallory = member(&http, "mallory", &directory).await;
    let mut others = vec![member(&http, "bob", &directory).await];
    let (mut a, _) = group_of(&http, &alice, &mut others).await;
    let bob = &others[0];
    let id = a.id().to_vec();
    let before = status(&http, &alice, &id).await;
    let payloads = rows(&server, "group_payloads").await;

    // A non-member can neither commit, nor send, nor read the group's state.
    assert_code(
        http.call(
            Method::POST,
            &commits_path(&id),
            mallory.user.tok(),
            Some(&bare_commit(frame(&id, 1, 3, 1))),
        )
        .await,
        404,
        "not_found",
    );
    let msg = |content: Vec<u8>| api::GroupMessageRequest {
        content: content.into(),
        idempotency_key: None,
        state_counter: None,
    };
    assert_code(
        http.call(Method::POST, &messages_path(&id), mallory.user.tok(), Some(&msg(frame(&id, 1, 1, 1))))
            .await,
        404,
        "not_found",
    );
    assert_code(http.call(Method::GET, &status_path(&id), mallory.user.tok(), NONE).await, 404, "not_found");
    // A group the relay does not know, past epoch 0.
    assert_code(
        http.call(
            Method::POST,
            &commits_path(&[9; 8]),
            alice.user.tok(),
            Some(&bare_commit(frame(&[9; 8], 3, 3, 1))),
        )
        .await,
        404,
        "not_found",
    );
    // Stale epochs, with the group's epoch in the answer.
    let (code, body) =
        http.call(Method::POST, &messages_path(&id), bob.user.tok(), Some(&msg(frame(&id, 0, 1, 1)))).await;
    assert_eq!(
        (code, body["code"].as_str(), body["epoch"].as_u64()),
        (StatusCode::CONFLICT, Some("stale_epoch"), Some(1))
    );
    let (code, body) = http
        .call(Method::POST, &commits_path(&id), bob.user.tok(), Some(&bare_commit(frame(&id, 5, 3, 1))))
        .await;
    assert_eq!((code, body["epoch"].as_u64()), (StatusCode::CONFLICT, Some(1)));
    // Not a PrivateMessage of this group, or of the wrong kind for the route.
    for (path, body) in [
        (commits_path(&id), serde_json::to_value(bare_commit(frame(&[1; 16], 1, 3, 1))).unwrap()),
        (commits_path(&id), serde_json::to_value(bare_commit(frame(&id, 1, 1, 1))).unwrap()),
        (commits_path(&id), serde_json::to_value(bare_commit(b"not mls".to_vec())).unwrap()),
        (messages_path(&id), serde_json::to_value(msg(frame(&id, 1, 3, 1))).unwrap()),
        (messages_path(&id), serde_json::to_value(msg(frame(&[1; 16], 1, 1, 1))).unwrap()),
        (
            messages_path(&id),
            serde_json::to_value(msg({
                let mut public = frame(&id, 1, 1, 1);
                public[3] = 1;
                public
            }))
            .unwrap(),
        ),
    ] {
        assert_code(http.call(Method::POST, &path, bob.user.tok(), Some(&body)).await, 400, "bad_request");
    }
    // Member changes that do not fit the group.
    let with = |added: Vec<api::GroupMember>, removed: Vec<api::GroupMember>, welcome: Option<Vec<u8>>| {
        api::GroupCommitRequest {
            commit: frame(&id, 1, 3, 1).into(),
            welcome: welcome.map(Into::into),
            added,
            removed,
            idempotency_key: None,
            state_counter: None,
        }
    };
    let ghost = api::GroupMember { account: "nobody-here".into(), device: 1 };
    let cases = [
        (with(vec![bob.me()], vec![], Some(vec![1])), 400, "bad_request"),
        (with(vec![mallory.me()], vec![], None), 400, "bad_request"),
        (with(vec![], vec![], Some(vec![1])), 400, "bad_request"),
        (with(vec![mallory.me(), mallory.me()], vec![], Some(vec![1])), 400, "bad_request"),
        // A device both added and removed is a rejoin (its old leaf replaced), accepted:
        // `a_device_is_taken_back_in_by_one_commit`.
        (with(vec![], vec![alice.me()], None), 400, "bad_request"),
        (with(vec![ghost.clone()], vec![], Some(vec![1])), 404, "not_found"),
        (
            with(
                vec![api::GroupMember { account: mallory.user.name.clone(), device: 2 }],
                vec![],
                Some(vec![1]),
            ),
            404,
            "not_found",
        ),
        (
            with(vec![api::GroupMember { account: "NO".into(), device: 1 }], vec![], Some(vec![1])),
            400,
            "bad_request",
        ),
    ];
    for (req, code, name) in cases {
        assert_code(
            http.call(Method::POST, &commits_path(&id), alice.user.tok(), Some(&req)).await,
            code,
            name,
        );
    }
    // Bad group ids in the path, no token, too large a message.
    for bad in ["00FF", "0", &"ab".repeat(33)] {
        let path = api::GROUP.replace("{group}", bad);
        assert_code(http.call(Method::GET, &path, alice.user.tok(), NONE).await, 404, "not_found");
    }
    assert_eq!(http.call(Method::GET, &status_path(&id), None, NONE).await.0, StatusCode::UNAUTHORIZED);
    let mut big = frame(&id, 1, 1, 1);
    big.resize(api::limits::MAX_ENVELOPE_BYTES + 1, 0);
    assert_code(
        http.call(Method::POST, &messages_path(&id), alice.user.tok(), Some(&msg(big))).await,
        413,
        "too_large",
    );

    // Nothing of it was stored, and the group goes on.
    assert_eq!(status(&http, &alice, &id).await, before);
    assert_eq!(rows(&server, "group_payloads").await, payloads);
    assert!(bob.fetch(&http).await.is_empty() && mallory.fetch(&http).await.is_empty());
    // An idempotent retry is answered as the first and stored once.
    let key: api::Bytes = vec![5u8; 16].into();
    let content: api::Bytes = a.encrypt(b"once").unwrap().into();
    let req = api::GroupMessageRequest { content, idempotency_key: Some(key), state_counter: None };
    let first: api::SendResponse =
        http.ok(Method::POST, &messages_path(&id), alice.user.tok(), Some(&req)).await;
    let again: api::SendResponse =
        http.ok(Method::POST, &messages_path(&id), alice.user.tok(), Some(&req)).await;
    assert_eq!(first, again);
    assert_eq!(bob.fetch(&http).await.len(), 1);
    server.finish().await;
}

async fn a_message_is_stored_once_and_deleted_after_the_last_ack(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let directory = Directory::new();
    let alice = member(&http, "alice", &directory).await;
    let mut others = Vec::new();
    for i in 0..4 {
        others.push(member(&http, &format!("m{i}"), &directory).await);
    }
    let (mut a, mut groups) = group_of(&http, &alice, &mut others).await;
    assert_eq!(rows(&server, "group_payloads").await, 0, "the Welcome went when all four acknowledged it");
    let text = "x".repeat(1000);
    assert!(say(&http, &alice, &mut a, &text).await.0.is_success());
    assert_eq!(rows(&server, "group_payloads").await, 1, "stored once for four recipients");
    let envelopes = rows(&server, "envelopes").await;
    assert_eq!(envelopes, 4);
    for (i, (m, g)) in others.iter().zip(groups.iter_mut()).enumerate() {
        assert_eq!(rows(&server, "group_payloads").await, 1, "still referenced before ack {i}");
        assert_eq!(receive(&http, m, g).await, vec![text.clone()]);
    }
    assert_eq!(rows(&server, "group_payloads").await, 0, "deleted after the last acknowledgement");
    assert_eq!(rows(&server, "envelopes").await, 0);
    // A member account deleted with a message pending releases its reference.
    assert!(say(&http, &alice, &mut a, "again").await.0.is_success());
    for m in &others[..3] {
        let e = m.fetch(&http).await;
        m.ack(&http, &e).await;
    }
    assert_eq!(rows(&server, "group_payloads").await, 1);
    let last = &others[3];
    let path = api::ACCOUNT.replace("{name}", &last.user.name);
    assert!(http.call(Method::DELETE, &path, last.user.tok(), NONE).await.0.is_success());
    assert_eq!(rows(&server, "group_payloads").await, 0);
    let s = status(&http, &alice, a.id()).await;
    assert_eq!(s.members.len(), 4, "the deleted account's device left the group");
    server.finish().await;
}

async fn removed_and_leaving_devices_get_nothing_more(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let directory = Directory::new();
    let alice = member(&http, "alice", &directory).await;
    let mut others = vec![member(&http, "bob", &directory).await, member(&http, "carol", &directory).await];
    let (mut a, mut groups) = group_of(&http, &alice, &mut others).await;
    let (bob, carol) = (&others[0], &others[1]);
    // Alice removes Bob: Bob gets the commit that removes him, then nothing.
    let (code, body) = commit(&http, &alice, &mut a, &[], &[bob]).await;
    assert!(code.is_success(), "{body}");
    let envelopes = bob.fetch(&http).await;
    assert_eq!(envelopes.len(), 1);
    assert_eq!(envelopes[0].group.as_ref().unwrap().kind, api::GroupKind::Commit);
    assert!(matches!(groups[0].process(envelopes[0].content.as_slice()).unwrap(), Received::Commit(_)));
    bob.ack(&http, &envelopes).await;
    assert!(say(&http, &alice, &mut a, "after bob").await.0.is_success());
    assert!(bob.fetch(&http).await.is_empty());
    assert_eq!(receive(&http, carol, &mut groups[1]).await, ["after bob"]);
    // Bob can no longer post or commit.
    let late = api::GroupMessageRequest {
        content: groups[0]
            .encrypt(b"still here?")
            .map(Into::into)
            .unwrap_or_else(|_| frame(a.id(), 2, 1, 1).into()),
        idempotency_key: None,
        state_counter: None,
    };
    assert_code(
        http.call(Method::POST, &messages_path(a.id()), bob.user.tok(), Some(&late)).await,
        404,
        "not_found",
    );
    // Carol leaves the delivery (her removal proposal would go first): nothing more for her.
    let path = api::GROUP_MEMBERSHIP.replace("{group}", &hex(a.id()));
    assert_eq!(http.call(Method::DELETE, &path, carol.user.tok(), NONE).await.0, StatusCode::NO_CONTENT);
    assert_code(http.call(Method::DELETE, &path, carol.user.tok(), NONE).await, 404, "not_found");
    assert!(say(&http, &alice, &mut a, "after carol").await.0.is_success());
    assert!(carol.fetch(&http).await.is_empty());
    assert_eq!(status(&http, &alice, a.id()).await.members, [alice.me()]);
    // The last member leaving deletes the group.
    assert_eq!(http.call(Method::DELETE, &path, alice.user.tok(), NONE).await.0, StatusCode::NO_CONTENT);
    assert_eq!(rows(&server, "groups").await, 0);
    server.finish().await;
}

async fn connected_members_get_group_envelopes_live(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let directory = Directory::new();
    let alice = member(&http, "alice", &directory).await;
    let mut others = vec![member(&http, "bob", &directory).await];
    let (mut a, mut groups) = group_of(&http, &alice, &mut others).await;
    let bob = &others[0];
    let mut ws = ws_connect(&server, bob.user.tok()).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, api::ServerFrame::Drained);
    // A small message is handed over with its envelope.
    assert!(say(&http, &alice, &mut a, "live").await.0.is_success());
    let api::ServerFrame::Envelope(e) = next_frame(&mut ws).await else { panic!() };
    assert_eq!(e.group.as_ref().unwrap().kind, api::GroupKind::Message);
    assert!(matches!(groups[0].process(e.content.as_slice()).unwrap(), Received::Application { .. }));
    ws_ack(&mut ws, vec![e.id]).await;
    // A large one wakes the connection, which reads it from the store.
    let big = "y".repeat(20_000);
    assert!(say(&http, &alice, &mut a, &big).await.0.is_success());
    let api::ServerFrame::Envelope(e) = next_frame(&mut ws).await else { panic!() };
    match groups[0].process(e.content.as_slice()).unwrap() {
        Received::Application { data, .. } => assert_eq!(data, big.as_bytes()),
        other => panic!("{other:?}"),
    }
    server.finish().await;
}

/// A device that lost its state (restored from an older copy) is removed and added again
/// in one commit: it gets that commit (for its old leaf), then the Welcome, and is one
/// member of the group, reading and sending again.
async fn a_device_is_taken_back_in_by_one_commit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let directory = Directory::new();
    let alice = member(&http, "alice", &directory).await;
    let mut others = vec![member(&http, "bob", &directory).await, member(&http, "carol", &directory).await];
    let (mut a, mut groups) = group_of(&http, &alice, &mut others).await;
    let before = status(&http, &alice, a.id()).await.members;
    // Bob's state is gone; he has a new KeyPackage on the relay.
    others[0].upload_key_package(&http).await;
    let (bob, carol) = (&others[0], &others[1]);
    let (code, body) = commit(&http, &alice, &mut a, &[bob], &[bob]).await;
    assert!(code.is_success(), "{body}");
    let envelopes = bob.fetch(&http).await;
    let kinds: Vec<_> = envelopes.iter().map(|e| e.group.as_ref().unwrap().kind).collect();
    assert_eq!(kinds, [api::GroupKind::Commit, api::GroupKind::Welcome]);
    let mut b = bob.join(&envelopes[1]);
    bob.ack(&http, &envelopes).await;
    assert_eq!(status(&http, &alice, a.id()).await.members, before, "one membership, as before");
    assert!(receive(&http, carol, &mut groups[1]).await.is_empty());
    assert_eq!(b.epoch_authenticator().unwrap(), a.epoch_authenticator().unwrap());
    // A group message records the sender's state counter with it (a commit too, below).
    let counted = api::GroupMessageRequest {
        content: b.encrypt(b"back").unwrap().into(),
        idempotency_key: None,
        state_counter: Some(41),
    };
    assert!(
        http.call(Method::POST, &messages_path(b.id()), bob.user.tok(), Some(&counted)).await.0.is_success()
    );
    assert_eq!(counter_at_login(&http, &bob.user).await, Some(41));
    assert_eq!(receive(&http, &alice, &mut a).await, ["back"]);
    assert_eq!(receive(&http, carol, &mut groups[1]).await, ["back"]);
    assert!(say(&http, carol, &mut groups[1], "welcome back").await.0.is_success());
    assert_eq!(receive(&http, bob, &mut b).await, ["welcome back"]);
    let c = b.commit(&[], &[], None).unwrap();
    let req = api::GroupCommitRequest { state_counter: Some(42), ..bare_commit(c.commit) };
    assert!(http.call(Method::POST, &commits_path(b.id()), bob.user.tok(), Some(&req)).await.0.is_success());
    assert_eq!(counter_at_login(&http, &bob.user).await, Some(42));
    // A refused commit (a stale epoch: Carol has not seen Bob's) records nothing.
    let stale = groups[1].commit(&[], &[], None).unwrap();
    let req = api::GroupCommitRequest { state_counter: Some(99), ..bare_commit(stale.commit) };
    let refused = http.call(Method::POST, &commits_path(b.id()), carol.user.tok(), Some(&req)).await;
    assert_eq!(refused.0, StatusCode::CONFLICT, "{}", refused.1);
    assert_ne!(counter_at_login(&http, &carol.user).await, Some(99));
    server.finish().await;
}
