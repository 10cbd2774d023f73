//! A connected client refills its one-time prekeys when the server says they run low
//! (`prekeys_low` on the WebSocket), without waiting for the user's next command. Real
//! server on loopback, on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)] // a test file

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{Backend, Relay, account};

on_both!(a_connected_client_refills_when_the_server_says_it_is_low);

/// Bob's one-time keys left on the server, by kind (read from the store directly).
async fn left(relay: &Relay) -> (i64, i64) {
    let sql = "SELECT (SELECT count(*) FROM one_time_prekeys WHERE account_id = (SELECT id FROM accounts WHERE name = 'bob')), \
               (SELECT count(*) FROM kem_prekeys WHERE account_id = (SELECT id FROM accounts WHERE name = 'bob'))";
    match relay.schema() {
        None => {
            let c = rusqlite::Connection::open(relay.data_dir().join("tacit.db")).unwrap();
            c.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap()
        }
        Some(schema) => {
            let c = common::pg_admin().await;
            c.batch_execute(&format!("SET search_path TO {schema}")).await.unwrap();
            let r = c.query_one(sql, &[]).await.unwrap();
            (r.get(0), r.get(1))
        }
    }
}

/// Leaves bob `n` one-time keys of each kind on the server (as if bundles had taken the rest).
async fn keep_only(relay: &Relay, n: u32) {
    let mut sql = String::new();
    for table in ["one_time_prekeys", "kem_prekeys"] {
        sql.push_str(&format!(
            "DELETE FROM {table} WHERE account_id = (SELECT id FROM accounts WHERE name = 'bob') AND id NOT IN \
             (SELECT id FROM {table} WHERE account_id = (SELECT id FROM accounts WHERE name = 'bob') ORDER BY id LIMIT {n});"
        ));
    }
    match relay.schema() {
        None => rusqlite::Connection::open(relay.data_dir().join("tacit.db"))
            .unwrap()
            .execute_batch(&sql)
            .unwrap(),
        Some(schema) => {
            let c = common::pg_admin().await;
            c.batch_execute(&format!("SET search_path TO {schema}; {sql}")).await.unwrap();
        }
    }
}

/// Bob listens; alice's first message takes a bundle that leaves bob below the low water.
/// The frame reaches bob before alice's envelope, and he uploads at once: his keys are back
/// well before `receive` ends (which waits 300 ms after the message, then runs its own
/// maintenance: without the frame, that is when the refill would come).
async fn a_connected_client_refills_when_the_server_says_it_is_low(backend: Backend) {
    let relay = Relay::start(backend).await;
    let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = account(&relay, ha.path(), "alice").await;
    let mut bob = account(&relay, hb.path(), "bob").await;
    let water = tacit_api::limits::LOW_PREKEY_WATER;
    keep_only(&relay, water).await;
    assert_eq!(left(&relay).await, (i64::from(water), i64::from(water)));
    let full = i64::from(tacit_protocol::PrekeyPolicy::default().one_time_target);
    let mut refilled_at = None;
    let mut returned_at = None;
    let listen = async {
        let got = bob.receive(Duration::from_secs(10)).await.unwrap();
        returned_at = Some(Instant::now());
        got
    };
    let send_and_watch = async {
        // Bob's socket is open once his receive has authenticated and connected.
        tokio::time::sleep(Duration::from_millis(500)).await;
        alice.send_text("bob", "hello").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            if left(&relay).await.0 >= full {
                refilled_at = Some(Instant::now());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (got, ()) = tokio::join!(listen, send_and_watch);
    assert_eq!(got.len(), 1);
    let (refilled, returned) = (refilled_at.expect("bob refilled"), returned_at.unwrap());
    assert!(
        returned.saturating_duration_since(refilled) > Duration::from_millis(150),
        "refilled only {:?} before receive returned: at the end-of-command maintenance, not on the frame",
        returned.saturating_duration_since(refilled)
    );
    assert_eq!(left(&relay).await, (full, full));
    relay.stop().await;
}
