//! Issue 11 on the server, over real sockets, on SQLite and PostgreSQL: MLS KeyPackages
//! handed out like one-time prekeys (once each, oldest first, the last-resort one kept),
//! racing takers, bounds, the per-target budget, claims of many devices at once under a
//! budget counted in devices, and removal with the device.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[macro_use]
mod common;

use common::*;
use reqwest::{Method, StatusCode};
use tacit_api as api;

on_both!(
    key_packages_are_handed_out_once_and_the_last_resort_kept,
    racing_takers_never_get_the_same_key_package,
    uploads_are_bounded,
    over_the_target_budget_only_the_last_resort_is_handed_out,
    a_deleted_account_leaves_no_key_packages,
    a_claim_hands_out_one_key_package_per_device_named,
    claims_count_devices_against_their_own_budget,
);

fn kp(tag: u8, i: usize) -> api::Bytes {
    let mut v = vec![tag; 64];
    v[..8].copy_from_slice(&(i as u64).to_be_bytes());
    v.into()
}

fn path(user: &User) -> String {
    api::KEY_PACKAGE.replace("{name}", &user.name).replace("{device}", "1")
}

async fn take(http: &Http, taker: &User, target: &User) -> (StatusCode, serde_json::Value) {
    http.call(Method::GET, &path(target), taker.tok(), NONE).await
}

async fn key_packages_are_handed_out_once_and_the_last_resort_kept(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    // Nothing uploaded: 404, and the status says to refill.
    assert_code(take(&http, &alice, &bob).await, 404, "not_found");
    let s: api::KeyPackageStatus = http.ok(Method::GET, api::KEY_PACKAGES, bob.tok(), NONE).await;
    assert_eq!(s, api::KeyPackageStatus { available: 0, last_resort: false, low: true });

    let upload = api::KeyPackageUpload {
        key_packages: (0..3).map(|i| kp(1, i)).collect(),
        last_resort: Some(kp(9, 0)),
    };
    let s: api::KeyPackageStatus = http.ok(Method::PUT, api::KEY_PACKAGES, bob.tok(), Some(&upload)).await;
    assert_eq!(s, api::KeyPackageStatus { available: 3, last_resort: true, low: true });
    // Oldest first, each once.
    for i in 0..3 {
        let r: api::KeyPackageResponse = http.ok(Method::GET, &path(&bob), alice.tok(), NONE).await;
        assert_eq!(r, api::KeyPackageResponse { key_package: kp(1, i), last_resort: false });
    }
    // Then the last resort, again and again.
    for _ in 0..2 {
        let r: api::KeyPackageResponse = http.ok(Method::GET, &path(&bob), alice.tok(), NONE).await;
        assert_eq!(r, api::KeyPackageResponse { key_package: kp(9, 0), last_resort: true });
    }
    // A new last resort replaces the old; more KeyPackages add.
    let upload = api::KeyPackageUpload { key_packages: vec![kp(2, 0)], last_resort: Some(kp(8, 0)) };
    let s: api::KeyPackageStatus = http.ok(Method::PUT, api::KEY_PACKAGES, bob.tok(), Some(&upload)).await;
    assert_eq!((s.available, s.last_resort), (1, true));
    let r: api::KeyPackageResponse = http.ok(Method::GET, &path(&bob), alice.tok(), NONE).await;
    assert_eq!(r.key_package, kp(2, 0));
    let r: api::KeyPackageResponse = http.ok(Method::GET, &path(&bob), alice.tok(), NONE).await;
    assert_eq!(r, api::KeyPackageResponse { key_package: kp(8, 0), last_resort: true });
    // Unknown accounts and devices, and no token.
    let unknown = api::KEY_PACKAGE.replace("{name}", "nobody-here").replace("{device}", "1");
    assert_code(http.call(Method::GET, &unknown, alice.tok(), NONE).await, 404, "not_found");
    let other_device = api::KEY_PACKAGE.replace("{name}", &bob.name).replace("{device}", "2");
    assert_code(http.call(Method::GET, &other_device, alice.tok(), NONE).await, 404, "not_found");
    assert_eq!(http.call(Method::GET, &path(&bob), None, NONE).await.0, StatusCode::UNAUTHORIZED);
    server.finish().await;
}

async fn racing_takers_never_get_the_same_key_package(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let bob = User::register(&http, &unique("bob"), 1).await;
    let upload = api::KeyPackageUpload {
        key_packages: (0..20).map(|i| kp(3, i)).collect(),
        last_resort: Some(kp(7, 0)),
    };
    let _: api::KeyPackageStatus = http.ok(Method::PUT, api::KEY_PACKAGES, bob.tok(), Some(&upload)).await;
    let mut takers = Vec::new();
    for i in 0..8 {
        takers.push(User::register(&http, &unique(&format!("t{i}")), 1).await);
    }
    let mut tasks = Vec::new();
    for t in takers {
        let http = http.clone();
        let p = path(&bob);
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..3 {
                let r: api::KeyPackageResponse = http.ok(Method::GET, &p, t.tok(), NONE).await;
                got.push(r);
            }
            got
        }));
    }
    let mut one_time = Vec::new();
    let mut last_resort = 0;
    for t in tasks {
        for r in t.await.unwrap() {
            if r.last_resort {
                assert_eq!(r.key_package, kp(7, 0));
                last_resort += 1;
            } else {
                one_time.push(r.key_package.as_slice().to_vec());
            }
        }
    }
    // 24 takes of 20 KeyPackages: each handed out exactly once, then the last resort.
    let n = one_time.len();
    one_time.sort();
    one_time.dedup();
    assert_eq!((n, one_time.len(), last_resort), (20, 20, 4));
    server.finish().await;
}

async fn uploads_are_bounded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let bob = User::register(&http, &unique("bob"), 1).await;
    let too_many = api::KeyPackageUpload {
        key_packages: (0..=api::limits::MAX_KEY_PACKAGES_PER_UPLOAD).map(|i| kp(1, i)).collect(),
        last_resort: None,
    };
    assert_code(
        http.call(Method::PUT, api::KEY_PACKAGES, bob.tok(), Some(&too_many)).await,
        413,
        "too_large",
    );
    let too_big = api::KeyPackageUpload {
        key_packages: vec![vec![1u8; api::limits::MAX_KEY_PACKAGE_BYTES + 1].into()],
        last_resort: None,
    };
    assert_code(
        http.call(Method::PUT, api::KEY_PACKAGES, bob.tok(), Some(&too_big)).await,
        400,
        "bad_request",
    );
    let empty = api::KeyPackageUpload { key_packages: vec![], last_resort: Some(Vec::new().into()) };
    assert_code(http.call(Method::PUT, api::KEY_PACKAGES, bob.tok(), Some(&empty)).await, 400, "bad_request");
    // Refused uploads stored nothing.
    let s: api::KeyPackageStatus = http.ok(Method::GET, api::KEY_PACKAGES, bob.tok(), NONE).await;
    assert_eq!((s.available, s.last_resort), (0, false));
    // Beyond the stored bound the oldest go.
    for round in 0..(api::limits::MAX_STORED_KEY_PACKAGES / api::limits::MAX_KEY_PACKAGES_PER_UPLOAD + 1) {
        let up = api::KeyPackageUpload {
            key_packages: (0..api::limits::MAX_KEY_PACKAGES_PER_UPLOAD)
                .map(|i| kp(1, round * api::limits::MAX_KEY_PACKAGES_PER_UPLOAD + i))
                .collect(),
            last_resort: None,
        };
        let s: api::KeyPackageStatus = http.ok(Method::PUT, api::KEY_PACKAGES, bob.tok(), Some(&up)).await;
        assert!(s.available as usize <= api::limits::MAX_STORED_KEY_PACKAGES);
    }
    let alice = User::register(&http, &unique("alice"), 1).await;
    let r: api::KeyPackageResponse = http.ok(Method::GET, &path(&bob), alice.tok(), NONE).await;
    assert_eq!(r.key_package, kp(1, api::limits::MAX_KEY_PACKAGES_PER_UPLOAD), "the oldest were dropped");
    server.finish().await;
}

async fn over_the_target_budget_only_the_last_resort_is_handed_out(backend: Backend) {
    let server =
        TestServer::start_with(backend, |c| c.limits.one_time_fetches_per_target_per_minute = 3).await;
    let http = server.http();
    let bob = User::register(&http, &unique("bob"), 1).await;
    let upload = api::KeyPackageUpload {
        key_packages: (0..10).map(|i| kp(4, i)).collect(),
        last_resort: Some(kp(6, 0)),
    };
    let _: api::KeyPackageStatus = http.ok(Method::PUT, api::KEY_PACKAGES, bob.tok(), Some(&upload)).await;
    let mut got = Vec::new();
    for i in 0..6 {
        let t = User::register(&http, &unique(&format!("b{i}")), 1).await;
        let r: api::KeyPackageResponse = http.ok(Method::GET, &path(&bob), t.tok(), NONE).await;
        got.push(r.last_resort);
    }
    assert_eq!(got, vec![false, false, false, true, true, true]);
    let s: api::KeyPackageStatus = http.ok(Method::GET, api::KEY_PACKAGES, bob.tok(), NONE).await;
    assert_eq!(s.available, 7, "the budget protected the rest");
    server.finish().await;
}

async fn a_deleted_account_leaves_no_key_packages(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let bob = User::register(&http, &unique("bob"), 1).await;
    let upload = api::KeyPackageUpload {
        key_packages: (0..5).map(|i| kp(5, i)).collect(),
        last_resort: Some(kp(5, 9)),
    };
    let _: api::KeyPackageStatus = http.ok(Method::PUT, api::KEY_PACKAGES, bob.tok(), Some(&upload)).await;
    let (status, body) =
        http.call(Method::DELETE, &api::ACCOUNT.replace("{name}", &bob.name), bob.tok(), NONE).await;
    assert!(status.is_success(), "{status} {body}");
    let left = match server.schema() {
        None => {
            let db = rusqlite::Connection::open(server.data_dir().join("tacit.db")).unwrap();
            db.query_row("SELECT count(*) FROM key_packages", [], |r| r.get::<_, i64>(0)).unwrap()
        }
        Some(schema) => {
            let pg = pg_admin().await;
            pg.query_one(&format!("SELECT count(*) FROM {schema}.key_packages"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(left, 0);
    server.finish().await;
}

async fn upload_some(http: &Http, user: &User, tag: u8, n: usize) {
    let upload = api::KeyPackageUpload {
        key_packages: (0..n).map(|i| kp(tag, i)).collect(),
        last_resort: Some(kp(tag, 99)),
    };
    let _: api::KeyPackageStatus = http.ok(Method::PUT, api::KEY_PACKAGES, user.tok(), Some(&upload)).await;
}

fn claim_of(devices: &[(&str, u32)]) -> api::KeyPackageClaim {
    api::KeyPackageClaim {
        devices: devices
            .iter()
            .map(|(account, device)| api::GroupMember { account: (*account).to_owned(), device: *device })
            .collect(),
    }
}

async fn a_claim_hands_out_one_key_package_per_device_named(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let bob = User::register(&http, &unique("bob"), 1).await;
    let carol = User::register(&http, &unique("carol"), 1).await;
    let dave = User::register(&http, &unique("dave"), 1).await;
    upload_some(&http, &bob, 1, 2).await;
    upload_some(&http, &carol, 2, 1).await;
    let claim = claim_of(&[
        (&bob.name, 1),
        (&carol.name, 1),
        ("nobody-here", 1),
        (&bob.name, 2),
        (&dave.name, 1),
        ("Not A Name", 1),
        (&carol.name, 0),
    ]);
    let r: api::KeyPackageClaimResponse =
        http.ok(Method::POST, api::KEY_PACKAGE_CLAIM, alice.tok(), Some(&claim)).await;
    let got: Vec<_> = r
        .key_packages
        .iter()
        .map(|k| (k.account.as_str(), k.device, k.key_package.clone(), k.last_resort))
        .collect();
    assert_eq!(
        got,
        vec![
            (bob.name.as_str(), 1, Some(kp(1, 0)), false),
            (carol.name.as_str(), 1, Some(kp(2, 0)), false),
            ("nobody-here", 1, None, false),
            (bob.name.as_str(), 2, None, false),
            (dave.name.as_str(), 1, None, false),
            ("Not A Name", 1, None, false),
            (carol.name.as_str(), 0, None, false),
        ],
        "in order; the unknown, the device without KeyPackages and the invalid get none"
    );
    // Each handed out once: the next claim gets the next, then the last resort.
    let claim = claim_of(&[(&bob.name, 1), (&carol.name, 1)]);
    let r: api::KeyPackageClaimResponse =
        http.ok(Method::POST, api::KEY_PACKAGE_CLAIM, alice.tok(), Some(&claim)).await;
    assert_eq!(r.key_packages[0].key_package, Some(kp(1, 1)));
    assert_eq!(
        (r.key_packages[1].key_package.clone(), r.key_packages[1].last_resort),
        (Some(kp(2, 99)), true)
    );
    let s: api::KeyPackageStatus = http.ok(Method::GET, api::KEY_PACKAGES, bob.tok(), NONE).await;
    assert_eq!(s.available, 0);
    // Bounds: a device named twice, too many devices, no token; none of them took anything.
    upload_some(&http, &bob, 3, 1).await;
    let twice = claim_of(&[(&bob.name, 1), (&bob.name, 1)]);
    assert_code(
        http.call(Method::POST, api::KEY_PACKAGE_CLAIM, alice.tok(), Some(&twice)).await,
        400,
        "bad_request",
    );
    let names: Vec<String> = (0..=api::limits::MAX_KEY_PACKAGE_CLAIM).map(|i| format!("n{i}")).collect();
    let many: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let many = claim_of(&many);
    assert_code(
        http.call(Method::POST, api::KEY_PACKAGE_CLAIM, alice.tok(), Some(&many)).await,
        413,
        "too_large",
    );
    assert_eq!(
        http.call(Method::POST, api::KEY_PACKAGE_CLAIM, None, Some(&twice)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let s: api::KeyPackageStatus = http.ok(Method::GET, api::KEY_PACKAGES, bob.tok(), NONE).await;
    assert_eq!(s.available, 1, "refused claims took nothing");
    server.finish().await;
}

async fn claims_count_devices_against_their_own_budget(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.limits.key_package_claims_per_hour = 5;
        c.limits.key_package_claim_burst = 5;
        c.limits.bundle_fetches_per_minute = 1;
    })
    .await;
    let http = server.http();
    let alice = User::register(&http, &unique("alice"), 1).await;
    let mut targets = Vec::new();
    for i in 0..4 {
        let t = User::register(&http, &unique(&format!("t{i}")), 1).await;
        upload_some(&http, &t, 4, 3).await;
        targets.push(t);
    }
    let three: Vec<(&str, u32)> = targets[..3].iter().map(|t| (t.name.as_str(), 1)).collect();
    let _: api::KeyPackageClaimResponse =
        http.ok(Method::POST, api::KEY_PACKAGE_CLAIM, alice.tok(), Some(&claim_of(&three))).await;
    // 2 devices left in the budget: 3 more are refused whole, and take nothing.
    assert_code(
        http.call(Method::POST, api::KEY_PACKAGE_CLAIM, alice.tok(), Some(&claim_of(&three))).await,
        429,
        "rate_limited",
    );
    let s: api::KeyPackageStatus = http.ok(Method::GET, api::KEY_PACKAGES, targets[0].tok(), NONE).await;
    assert_eq!(s.available, 2);
    // Single takes share it (and no longer the 1:1 bundle budget of 1 a minute).
    let r: api::KeyPackageResponse = http.ok(Method::GET, &path(&targets[3]), alice.tok(), NONE).await;
    assert!(!r.last_resort);
    let r: api::KeyPackageResponse = http.ok(Method::GET, &path(&targets[3]), alice.tok(), NONE).await;
    assert!(!r.last_resort);
    assert_code(take(&http, &alice, &targets[3]).await, 429, "rate_limited");
    // Another device has a budget of its own.
    let bob = User::register(&http, &unique("bob"), 1).await;
    let r: api::KeyPackageClaimResponse =
        http.ok(Method::POST, api::KEY_PACKAGE_CLAIM, bob.tok(), Some(&claim_of(&three))).await;
    assert!(r.key_packages.iter().all(|k| k.key_package.is_some()));
    server.finish().await;
}
