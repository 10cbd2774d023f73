//! Issue 10 on the server, over real sockets, on SQLite and PostgreSQL: accounts and every
//! device list change are published in the akd directory; lookup and history proofs verify
//! against signed roots with the client's checks (`tacit-transparency`); every epoch's
//! append-only proof verifies with akd's auditor; restarts keep keys, epochs and proofs; an
//! epoch a crash left unsigned is completed at start; pending changes survive a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use protobuf::Message as _;
use reqwest::{Method, StatusCode};
use tacit_api as api;
use tacit_protocol::{AccountName, DeviceEntry, DeviceId, DeviceList, VerifyingKey};
use tacit_transparency::{AccountEntry, EpochRoot, KtError, SignedRoot, verify_history, verify_lookup};

on_both!(
    lookups_history_and_audits_verify,
    an_unsigned_epoch_is_finished_at_start,
    two_publishers_cannot_fork_the_log,
    cosignatures_of_listed_auditors_are_verified_kept_and_served,
    the_audit_blobs_are_listed_as_a_bucket_lists_them,
);

/// The auditor's checks over 1,000 epochs of 10 updates each (10 accounts, each publishing a
/// new list version per epoch), on SQLite: every root signed, every epoch an append-only
/// extension of the one before; the time per audited epoch is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_epochs_of_ten_updates_audit_clean() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.kt_epoch_interval_ms = 60_000;
        // One auditor reads 2,000 public resources in a burst.
        c.limits.address_requests_per_second = 100_000;
        c.limits.address_request_burst = 100_000;
        c.limits.requests_per_second = 100_000;
        c.limits.request_burst = 100_000;
    })
    .await;
    let http = server.http();
    let kt = server.state().transparency().unwrap().clone();
    let p = pin(&http).await;
    let mut users = Vec::new();
    for i in 0..10 {
        users.push(User::register(&http, &unique(&format!("u{i}")), 1).await);
    }
    kt.publish(1).await.unwrap();
    let first = kt.latest().unwrap().epoch;
    let mut versions = vec![1u64; users.len()];
    let started = std::time::Instant::now();
    for round in 0..999u64 {
        for (u, v) in users.iter().zip(versions.iter_mut()) {
            *v += 1;
            let list = DeviceList::sign(
                &u.account,
                AccountName::new(&u.name).unwrap(),
                *v,
                vec![DeviceEntry {
                    approver: true,
                    ..DeviceEntry::new(DeviceId::new(1).unwrap(), u.device.public().clone())
                }],
            )
            .unwrap()
            .to_bytes();
            let req = api::PublishDeviceListRequest {
                device_list: list.into(),
                rotation_signature: None,
                new_devices: vec![],
            };
            let (s, j) = http
                .call(Method::PUT, &api::DEVICE_LIST.replace("{name}", &u.name), Some(&u.token), Some(&req))
                .await;
            assert_eq!(s, 200, "{j}");
        }
        let epoch = kt.publish(round + 2).await.unwrap().unwrap();
        assert_eq!(epoch, first + round + 1);
    }
    let publishing = started.elapsed();
    let latest = kt.latest().unwrap().epoch;
    assert_eq!(latest, first + 999);
    let started = std::time::Instant::now();
    let mut previous = empty_root().await;
    for epoch in 1..=latest {
        let w: api::SignedRootWire =
            http.ok(Method::GET, &api::KT_EPOCH.replace("{epoch}", &epoch.to_string()), None, NONE).await;
        let root = signed(&w);
        root.verify(&p.key, &p.namespace).unwrap();
        let proof = http
            .request(Method::GET, &api::KT_AUDIT.replace("{epoch}", &epoch.to_string()), None)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        tacit_transparency::verify_append_only(&proof, previous, root.root.root, epoch).await.unwrap();
        previous = root.root.root;
    }
    let auditing = started.elapsed();
    eprintln!(
        "kt: 1,000 epochs of 10 updates: publishing {:.2} ms/epoch (with the HTTP list updates), auditing {:.2} ms/epoch",
        publishing.as_secs_f64() * 1000.0 / 999.0,
        auditing.as_secs_f64() * 1000.0 / latest as f64
    );
    server.finish().await;
}

fn fast(c: &mut tacit_server::ServerConfig) {
    c.kt_epoch_interval_ms = 50;
}

fn signed(w: &api::SignedRootWire) -> SignedRoot {
    SignedRoot {
        root: EpochRoot {
            namespace: w.namespace.clone(),
            timestamp_ms: w.timestamp_ms,
            epoch: w.epoch,
            root: w.root.0.clone().try_into().unwrap(),
        },
        signature: w.signature.0.clone().try_into().unwrap(),
    }
}

struct Pinned {
    key: VerifyingKey,
    vrf: [u8; 32],
    namespace: String,
}

async fn pin(http: &Http) -> Pinned {
    let info: api::KtInfo = http.ok(Method::GET, api::KT, None, NONE).await;
    Pinned {
        key: VerifyingKey::from_bytes(info.public_key.0.try_into().unwrap()).unwrap(),
        vrf: info.vrf_public_key.0.try_into().unwrap(),
        namespace: info.namespace,
    }
}

/// Polls the lookup of `name` until it proves at least `version`; returns the proof and its
/// verified result.
async fn lookup_until(
    http: &Http,
    p: &Pinned,
    name: &str,
    version: u64,
) -> (api::KtProofResponse, u64, AccountEntry) {
    let an = AccountName::new(name).unwrap();
    for _ in 0..200 {
        let (s, j) = http.call(Method::GET, &api::KT_LOOKUP.replace("{name}", name), None, NONE).await;
        if s == StatusCode::OK {
            let r: api::KtProofResponse = serde_json::from_value(j).unwrap();
            let root = signed(&r.root);
            root.verify(&p.key, &p.namespace).unwrap();
            let v = verify_lookup(&p.vrf, &root, &an, &r.proof.0).unwrap();
            if v.version >= version {
                return (r, v.version, v.entry);
            }
        } else {
            assert_eq!(s, StatusCode::NOT_FOUND, "{j}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{name} did not reach version {version} in the directory");
}

/// The akd root of an empty directory (epoch 0): it depends on the configuration only.
async fn empty_root() -> [u8; 32] {
    let db = akd::storage::memory::AsyncInMemoryDatabase::new();
    let dir = akd::Directory::<tacit_transparency::Config, _, _>::new(
        akd::storage::StorageManager::new_no_cache(db),
        akd::ecvrf::HardCodedAkdVRF,
        akd::AzksParallelismConfig::default(),
    )
    .await
    .unwrap();
    dir.get_epoch_hash().await.unwrap().1
}

/// Verifies every epoch's signature and append-only proof from 1 to `latest`, as an auditor.
async fn audit_all(http: &Http, p: &Pinned, latest: u64) {
    let mut previous = empty_root().await;
    for epoch in 1..=latest {
        let w: api::SignedRootWire =
            http.ok(Method::GET, &api::KT_EPOCH.replace("{epoch}", &epoch.to_string()), None, NONE).await;
        let root = signed(&w);
        root.verify(&p.key, &p.namespace).unwrap();
        let blob = http
            .request(Method::GET, &api::KT_AUDIT.replace("{epoch}", &epoch.to_string()), None)
            .send()
            .await
            .unwrap();
        assert_eq!(blob.status(), 200);
        let bytes = blob.bytes().await.unwrap();
        let proof = akd::proto::specs::types::SingleAppendOnlyProof::parse_from_bytes(&bytes).unwrap();
        let proof = akd::SingleAppendOnlyProof::try_from(&proof).unwrap();
        akd::auditor::verify_consecutive_append_only::<tacit_transparency::Config>(
            &proof,
            previous,
            root.root.root,
            epoch,
        )
        .await
        .unwrap();
        // Positive control: the same proof does not join the wrong roots.
        assert!(
            akd::auditor::verify_consecutive_append_only::<tacit_transparency::Config>(
                &proof,
                root.root.root,
                previous,
                epoch,
            )
            .await
            .is_err()
        );
        // The same proof by akd's blob name (start epoch) and plexi's (end epoch), at the
        // host root; a name whose roots do not join is not found.
        let hex = |b: &[u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        for named in [epoch - 1, epoch] {
            let path = format!("/{named}/{}/{}", hex(&previous), hex(&root.root.root));
            let r = reqwest::get(format!("{}{path}", http.base)).await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.bytes().await.unwrap(), bytes, "{path}");
        }
        let wrong = format!("/{epoch}/{}/{}", hex(&root.root.root), hex(&previous));
        assert_eq!(reqwest::get(format!("{}{wrong}", http.base)).await.unwrap().status(), 404);
        previous = root.root.root;
    }
}

async fn lookups_history_and_audits_verify(backend: Backend) {
    let server = TestServer::start_with(backend, fast).await;
    let http = server.http();
    let p = pin(&http).await;
    assert!(p.namespace.starts_with("tacit.127.0.0.1-"), "{}", p.namespace);
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;

    // Each account's first version is its first list.
    let (r, version, entry) = lookup_until(&http, &p, &alice.name, 1).await;
    assert_eq!((version, entry), (1, AccountEntry::List(alice.list.to_bytes())));
    // The same proof does not pass for another account, another key, or with a flipped bit.
    let root = signed(&r.root);
    let bob_name = AccountName::new(&bob.name).unwrap();
    assert_eq!(verify_lookup(&p.vrf, &root, &bob_name, &r.proof.0), Err(KtError::WrongAccount));
    let mut other_vrf = p.vrf;
    other_vrf[0] ^= 1;
    let alice_name = AccountName::new(&alice.name).unwrap();
    assert!(verify_lookup(&other_vrf, &root, &alice_name, &r.proof.0).is_err());
    for i in [0, r.proof.0.len() / 2, r.proof.0.len() - 1] {
        let mut bad = r.proof.0.clone();
        bad[i] ^= 1;
        assert!(verify_lookup(&p.vrf, &root, &alice_name, &bad).is_err(), "flipped byte {i} passed");
    }
    let mut forged = root.clone();
    forged.root.root[0] ^= 1;
    assert_eq!(forged.verify(&p.key, &p.namespace), Err(KtError::BadRootSignature));
    assert!(verify_lookup(&p.vrf, &forged, &alice_name, &r.proof.0).is_err());

    // A new list is a new version.
    let v2 = DeviceList::sign(
        &alice.account,
        alice_name.clone(),
        2,
        vec![DeviceEntry {
            approver: true,
            ..DeviceEntry::new(DeviceId::new(1).unwrap(), alice.device.public().clone())
        }],
    )
    .unwrap()
    .to_bytes();
    let req = api::PublishDeviceListRequest {
        device_list: v2.clone().into(),
        rotation_signature: None,
        new_devices: vec![],
    };
    let (s, j) = http
        .call(Method::PUT, &api::DEVICE_LIST.replace("{name}", &alice.name), Some(&alice.token), Some(&req))
        .await;
    assert_eq!(s, 200, "{j}");
    let (_, version, entry) = lookup_until(&http, &p, &alice.name, 2).await;
    assert_eq!((version, entry), (2, AccountEntry::List(v2.clone())));

    // The history shows both, newest first.
    let h: api::KtProofResponse =
        http.ok(Method::GET, &api::KT_HISTORY.replace("{name}", &alice.name), None, NONE).await;
    let root = signed(&h.root);
    root.verify(&p.key, &p.namespace).unwrap();
    let versions = verify_history(&p.vrf, &root, &alice_name, &h.proof.0).unwrap();
    assert_eq!(
        versions.iter().map(|v| (v.version, v.entry.clone())).collect::<Vec<_>>(),
        vec![(2, AccountEntry::List(v2.clone())), (1, AccountEntry::List(alice.list.to_bytes()))]
    );

    // A deleted account's label says so.
    let (s, _) = http.call(Method::DELETE, &api::ACCOUNT.replace("{name}", &bob.name), bob.tok(), NONE).await;
    assert_eq!(s, 204);
    let (_, version, entry) = lookup_until(&http, &p, &bob.name, 2).await;
    assert_eq!((version, entry), (2, AccountEntry::Deleted));

    // Unknown names and epochs.
    let (s, _) =
        http.call(Method::GET, &api::KT_LOOKUP.replace("{name}", &unique("nobody")), None, NONE).await;
    assert_eq!(s, 404);
    let (s, _) = http.call(Method::GET, &api::KT_LOOKUP.replace("{name}", "NOT A NAME"), None, NONE).await;
    assert_eq!(s, 404);
    let (s, _) = http.call(Method::GET, &api::KT_EPOCH.replace("{epoch}", "99999"), None, NONE).await;
    assert_eq!(s, 404);
    let (s, _) = http.call(Method::GET, &api::KT_EPOCH.replace("{epoch}", "x"), None, NONE).await;
    assert_eq!(s, 404);

    let info: api::KtInfo = http.ok(Method::GET, api::KT, None, NONE).await;
    let latest = info.latest.unwrap().epoch;
    audit_all(&http, &p, latest).await;

    // After a restart: the same keys, the same epochs, proofs still verify.
    let server = server.restart().await;
    let http = server.http();
    let again = pin(&http).await;
    assert_eq!((again.key, again.vrf, &again.namespace), (p.key, p.vrf, &p.namespace));
    let info: api::KtInfo = http.ok(Method::GET, api::KT, None, NONE).await;
    assert_eq!(info.latest.unwrap().epoch, latest);
    let (_, version, _) = lookup_until(&http, &again, &alice.name, 2).await;
    assert_eq!(version, 2);
    audit_all(&http, &again, latest).await;
    server.finish().await;
}

/// A crash between an epoch's commit and its signature leaves an epoch without a row in
/// `kt_epochs`; a crash before the commit leaves its changes pending. The next start signs
/// the first and publishes the second.
async fn an_unsigned_epoch_is_finished_at_start(backend: Backend) {
    let server = TestServer::start_with(backend, fast).await;
    let http = server.http();
    let p = pin(&http).await;
    let alice = User::register(&http, &unique("alice"), 1).await;
    lookup_until(&http, &p, &alice.name, 1).await;
    let info: api::KtInfo = http.ok(Method::GET, api::KT, None, NONE).await;
    let latest = info.latest.unwrap().epoch;
    // Stop with the publisher off (a huge interval) so the next change stays pending, and
    // take the newest epoch's signature away.
    let mut server = server.restart_with(|c| c.kt_epoch_interval_ms = 60_000).await;
    let http = server.http();
    let bob = User::register(&http, &unique("bob"), 1).await;
    server.shutdown().await;
    let sql = format!("DELETE FROM kt_epochs WHERE epoch = {latest}");
    match server.schema() {
        Some(schema) => {
            let admin = pg_admin().await;
            admin.batch_execute(&format!("SET search_path = {schema}; {sql}")).await.unwrap();
        }
        None => {
            let c = rusqlite::Connection::open(server.data_dir().join("tacit.db")).unwrap();
            c.execute_batch(&sql).unwrap();
        }
    }
    let server = server.restart_with(fast).await;
    let http = server.http();
    let w: api::SignedRootWire =
        http.ok(Method::GET, &api::KT_EPOCH.replace("{epoch}", &latest.to_string()), None, NONE).await;
    signed(&w).verify(&p.key, &p.namespace).unwrap();
    lookup_until(&http, &p, &alice.name, 1).await;
    let (_, version, entry) = lookup_until(&http, &p, &bob.name, 1).await;
    assert_eq!((version, entry), (1, AccountEntry::List(bob.list.to_bytes())));
    let info: api::KtInfo = http.ok(Method::GET, api::KT, None, NONE).await;
    audit_all(&http, &p, info.latest.unwrap().epoch).await;
    server.finish().await;
}

/// Two publishers on one database (two nodes of a fleet): the one whose view is an epoch
/// behind fails its commit instead of overwriting the other's epoch, starts over from the
/// database, and publishes the next epoch; every epoch still audits.
async fn two_publishers_cannot_fork_the_log(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.kt_epoch_interval_ms = 60_000).await;
    let http = server.http();
    let p = pin(&http).await;
    let a = server.state().transparency().unwrap().clone();
    let store: std::sync::Arc<dyn tacit_server::KtStore> = server.state().store().clone();
    let settings = tacit_server::kt::KtSettings {
        namespace: p.namespace.clone(),
        epoch_interval: Duration::from_secs(60),
        explicit_namespace: false,
        auditors: Vec::new(),
    };
    let b = tacit_server::kt::Transparency::open(store, settings, 1).await.unwrap();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let before = a.latest().map_or(0, |e| e.epoch);
    assert_eq!(a.publish(2).await.unwrap(), Some(before + 1));
    let bob = User::register(&http, &unique("bob"), 1).await;
    assert!(b.publish(3).await.is_err(), "a publisher an epoch behind must not commit");
    assert_eq!(b.publish(4).await.unwrap(), Some(before + 2));
    let (_, v, entry) = lookup_until(&http, &p, &bob.name, 1).await;
    assert_eq!((v, entry), (1, AccountEntry::List(bob.list.to_bytes())));
    let (_, v, _) = lookup_until(&http, &p, &alice.name, 1).await;
    assert_eq!(v, 1);
    audit_all(&http, &p, before + 2).await;
    server.finish().await;
}

/// Auditors' cosignatures: a listed auditor's, verified over the epoch's root, is kept and
/// served with that root (lookups and the epoch route); one from an auditor the server does
/// not list is refused (403), one that does not verify (a flipped bit, another epoch's root)
/// is refused (400), one for an unknown epoch is 404; nothing refused is served.
async fn cosignatures_of_listed_auditors_are_verified_kept_and_served(backend: Backend) {
    let listed = tacit_transparency::RootSigner::from_seed([41; 32]).unwrap();
    let other = tacit_transparency::RootSigner::from_seed([42; 32]).unwrap();
    let hex = |k: [u8; 32]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let listed_hex = hex(listed.public());
    let server = TestServer::start_with(backend, |c| {
        fast(c);
        c.kt_auditors = vec![listed_hex];
    })
    .await;
    let http = server.http();
    let p = pin(&http).await;
    let alice = User::register(&http, &unique("alice"), 1).await;
    let (r, _, _) = lookup_until(&http, &p, &alice.name, 1).await;
    let epoch = r.root.epoch;
    assert!(r.root.cosignatures.is_empty());
    let root: [u8; 32] = r.root.root.0.clone().try_into().unwrap();
    let cosign = |signer: &tacit_transparency::RootSigner, root: [u8; 32], epoch: u64| {
        let s = signer.sign(EpochRoot {
            namespace: p.namespace.clone(),
            timestamp_ms: 1_700_000_000_000,
            epoch,
            root,
        });
        api::KtCosignatureWire {
            auditor: signer.public().to_vec().into(),
            timestamp_ms: s.root.timestamp_ms,
            signature: s.signature.to_vec().into(),
        }
    };
    let put = |e: u64, c: api::KtCosignatureWire| {
        let http = http.clone();
        async move {
            http.call(Method::PUT, &api::KT_COSIGNATURES.replace("{epoch}", &e.to_string()), None, Some(&c))
                .await
        }
    };
    assert_eq!(put(epoch, cosign(&other, root, epoch)).await.0, StatusCode::FORBIDDEN);
    let mut flipped = cosign(&listed, root, epoch);
    flipped.signature.0[5] ^= 1;
    assert_eq!(put(epoch, flipped).await.0, StatusCode::BAD_REQUEST);
    let mut wrong_root = root;
    wrong_root[0] ^= 1;
    assert_eq!(put(epoch, cosign(&listed, wrong_root, epoch)).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(put(epoch + 1000, cosign(&listed, root, epoch + 1000)).await.0, StatusCode::NOT_FOUND);
    let (_, j) = http.call(Method::GET, &api::KT_LOOKUP.replace("{name}", &alice.name), None, NONE).await;
    let refused: api::KtProofResponse = serde_json::from_value(j).unwrap();
    assert!(refused.root.cosignatures.is_empty(), "nothing refused is served");

    assert_eq!(put(epoch, cosign(&listed, root, epoch)).await.0, StatusCode::NO_CONTENT);
    let (_, j) = http.call(Method::GET, &api::KT_LOOKUP.replace("{name}", &alice.name), None, NONE).await;
    let served: api::KtProofResponse = serde_json::from_value(j).unwrap();
    assert_eq!(served.root.epoch, epoch);
    assert_eq!(served.root.cosignatures, vec![cosign(&listed, root, epoch)]);
    let key = VerifyingKey::from_bytes(listed.public()).unwrap();
    let c = &served.root.cosignatures[0];
    let signed = SignedRoot {
        root: EpochRoot { timestamp_ms: c.timestamp_ms, ..signed(&served.root).root },
        signature: c.signature.0.clone().try_into().unwrap(),
    };
    signed.verify(&key, &p.namespace).unwrap();
    let e: api::SignedRootWire =
        http.ok(Method::GET, &api::KT_EPOCH.replace("{epoch}", &epoch.to_string()), None, NONE).await;
    assert_eq!(e.cosignatures.len(), 1);
    server.finish().await;
}

/// `GET /?list-type=2`: every audit blob's akd name, paged as S3's `ListObjectsV2` (the
/// token the epoch after the page's last blob); the names chain from the empty root and
/// each one is served by the blob route. Without `list-type=2`: 404.
async fn the_audit_blobs_are_listed_as_a_bucket_lists_them(backend: Backend) {
    let server = TestServer::start_with(backend, fast).await;
    let http = server.http();
    let p = pin(&http).await;
    for i in 0..3 {
        let u = User::register(&http, &unique(&format!("l{i}")), 1).await;
        lookup_until(&http, &p, &u.name, 1).await;
    }
    let info: api::KtInfo = http.ok(Method::GET, api::KT, None, NONE).await;
    let newest = info.latest.unwrap().epoch;
    assert!(newest >= 3);
    let raw = |q: String| {
        let http = http.clone();
        async move {
            let r = http.request(Method::GET, &q, None).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    assert_eq!(raw("/".into()).await.0, StatusCode::NOT_FOUND);
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &token {
            Some(t) => format!("/?list-type=2&max-keys=2&continuation-token={t}"),
            None => "/?list-type=2&max-keys=2".into(),
        };
        let (status, xml) = raw(q).await;
        assert_eq!(status, StatusCode::OK, "{xml}");
        pages += 1;
        let between = |a: &str, b: &str| -> Vec<String> {
            xml.split(a).skip(1).filter_map(|x| x.split(b).next()).map(str::to_owned).collect()
        };
        keys.extend(between("<Key>", "</Key>"));
        if between("<IsTruncated>", "</IsTruncated>") != ["true"] {
            break;
        }
        token = between("<NextContinuationToken>", "</NextContinuationToken>").first().cloned();
        assert!(token.is_some(), "{xml}");
    }
    assert_eq!(keys.len() as u64, newest, "{keys:?}");
    assert_eq!(pages as u64, newest.div_ceil(2));
    let mut previous: String = empty_root().await.iter().map(|b| format!("{b:02x}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let parts: Vec<&str> = k.split('/').collect();
        assert_eq!((parts[0], parts[1]), (i.to_string().as_str(), previous.as_str()), "{keys:?}");
        let (status, _) = raw(format!("/{k}")).await;
        assert_eq!(status, StatusCode::OK, "{k}");
        previous = parts[2].to_owned();
    }
    server.finish().await;
}
