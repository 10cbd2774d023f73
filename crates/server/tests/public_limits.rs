//! Limits on what unauthenticated callers can take, over real sockets, on SQLite and on
//! PostgreSQL: device-list (and key rotation) reads count against the per-address budget (and never hold up
//! authenticated requests), and a rate-limit table filled from many networks still serves
//! a new client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[macro_use]
mod common;

use common::*;
use reqwest::Method;
use tacit_api as api;

on_both!(device_lists_are_limited_per_address, a_full_rate_limit_table_still_serves_a_new_client);

async fn device_lists_are_limited_per_address(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.limits.address_request_burst = 6;
        c.limits.address_requests_per_second = 1;
    })
    .await;
    let http = server.http();
    // Registering takes three of the address's six tokens (account, challenge, session).
    let alice = User::register(&http, &unique("alice"), 1).await;
    let path = api::DEVICE_LIST.replace("{name}", &alice.name);
    let mut served = 0;
    loop {
        let (s, _) = http.call(Method::GET, &path, None, NONE).await;
        if s.as_u16() == 429 {
            break;
        }
        assert!(s.is_success(), "{s}");
        served += 1;
        assert!(served < 20, "device lists are not limited");
    }
    // Enumerating names (existing or not) is no longer free, and neither are the rotations.
    let nobody = api::DEVICE_LIST.replace("{name}", "nobody");
    assert_code(http.call(Method::GET, &nobody, None, NONE).await, 429, "rate_limited");
    let rotations = api::ROTATIONS.replace("{name}", &alice.name);
    assert_code(http.call(Method::GET, &rotations, None, NONE).await, 429, "rate_limited");
    // Authenticated requests from the same address have budgets of their own.
    let (s, _) = http.call(Method::GET, api::MESSAGES, alice.tok(), NONE).await;
    assert!(s.is_success(), "{s}");
    server.finish().await;
}

async fn a_full_rate_limit_table_still_serves_a_new_client(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        // The loopback connection is a proxy, so each request names its own client.
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        c.limits.account_creation_burst = 1;
        c.limits.account_creations_per_hour = 1;
        c.limits.max_buckets = 32;
    })
    .await;
    let http = server.http();
    let create_from = |client: String, body: serde_json::Value| {
        let r = http.request(Method::POST, api::ACCOUNTS, None).header("x-forwarded-for", client).json(&body);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    // A flood from 200 networks (distinct /48s, so distinct /64s too), each spending its
    // account-creation budget: far more buckets than the table holds, none of them full
    // again for an hour.
    for i in 0..200u32 {
        let client = format!("2001:db8:{i:x}:1::1");
        assert_eq!(create_from(client, serde_json::json!("not an account")).await, 400);
    }
    // A new client can still create its account.
    let (_, req) = User::new_request(&unique("newcomer"), 1);
    let status = create_from("2001:db8:ffff:1::1".into(), serde_json::to_value(&req).unwrap()).await;
    assert_eq!(status, 200, "a new client refused by a full rate-limit table");
    let (_, req) = User::new_request(&unique("v4"), 1);
    assert_eq!(create_from("203.0.113.9".into(), serde_json::to_value(&req).unwrap()).await, 200);
    server.finish().await;
}
