//! Issue 9, fan-out: what the store writes of one send cost per recipient device, on a real
//! SQLCipher store (`synchronous=FULL`, WAL), with M sessions of other peers already stored.
//! A timing tool, not a check: run it on a quiet machine with
//! `cargo test -p tacit-client --lib fanout_store -- --ignored --nocapture`.
//!
//! Each send does what `send_payload` does: for each of 100 devices the read of `sendable`,
//! then in one transaction `put_session` + `prune_sessions`, `raise_state_counter`, commit.
//! Each statement's time over the 100 devices / 100 is its cost per device; the commit (one
//! fsync) is per send.

use std::time::Instant;

use crate::client::SESSIONS_PER_DEVICE;
use crate::store::key::StoreSecret;
use crate::store::{self, Store};

/// Bytes of a stored session in the steady state (a sending chain and one receiving chain,
/// no skipped keys): what `Session::to_bytes` gives (578 bytes).
const STATE_BYTES: usize = 580;
/// Recipient devices of the send.
const DEVICES: usize = 100;
/// Sends timed per configuration (the median is reported).
const ROUNDS: usize = 21;

fn key(peer: usize, device: usize) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(peer as u64).to_le_bytes());
    k[8..16].copy_from_slice(&(device as u64).to_le_bytes());
    k[31] = 1;
    k
}

/// A store with `background` sessions of other peers and one session for each of 100
/// recipient devices (peer "r", devices 1..=100).
fn store_with(background: usize, index: bool) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::create(dir.path(), &StoreSecret::NoPassphrase).unwrap();
    if index {
        s.conn().execute_batch("CREATE INDEX sessions_seq ON sessions (created_seq)").unwrap();
    }
    let state = vec![0x5a; STATE_BYTES];
    let tx = s.tx().unwrap();
    // The other peers' sessions with their creation order given (put_session would scan
    // the table for each).
    for i in 0..background {
        tx.execute(
            "INSERT INTO sessions (base_key, peer, device, state, generation, stale, created_seq)
             VALUES (?1, ?2, ?3, ?4, 1, 0, ?5)",
            rusqlite::params![
                key(1_000_000 + i, 0).as_slice(),
                format!("p{}", i / 3),
                (i % 3 + 1) as i64,
                state,
                (i + 1) as i64
            ],
        )
        .unwrap();
    }
    for d in 1..=100 {
        store::put_session(&tx, "r", d as u32, &key(0, d), &state, 1, false).unwrap();
    }
    tx.commit().unwrap();
    (dir, s)
}

/// Median times, in µs, of one send's store work for 100 devices: per device the read of
/// `sendable` (`Store::sessions`), `put_session` and `prune_sessions` (as `send_payload`
/// does them), and the commit of the transaction (per send).
fn send_us(s: &mut Store, generation: &mut u64) -> [f64; 4] {
    let state = vec![0x5b; STATE_BYTES];
    let mut t = [(); 4].map(|()| Vec::with_capacity(ROUNDS));
    for _ in 0..ROUNDS {
        *generation += 1;
        let start = Instant::now();
        for d in 1..=DEVICES {
            assert_eq!(s.sessions("r", d as u32).unwrap().len(), 1);
        }
        t[0].push(start.elapsed());
        let tx = s.tx().unwrap();
        let start = Instant::now();
        for d in 1..=DEVICES {
            store::put_session(&tx, "r", d as u32, &key(0, d), &state, *generation, false).unwrap();
        }
        t[1].push(start.elapsed());
        let start = Instant::now();
        for d in 1..=DEVICES {
            assert!(store::prune_sessions(&tx, "r", d as u32, SESSIONS_PER_DEVICE).unwrap().is_empty());
        }
        t[2].push(start.elapsed());
        store::raise_state_counter(&tx).unwrap();
        let start = Instant::now();
        tx.commit().unwrap();
        t[3].push(start.elapsed());
    }
    t.map(|mut v| {
        v.sort();
        v[ROUNDS / 2].as_secs_f64() * 1e6
    })
}

#[test]
#[ignore = "timing tool: run with --ignored --nocapture on a quiet machine"]
fn fanout_store_cost_per_device() {
    println!(
        "| sessions of other peers | index on created_seq | per device: read | put_session | prune_sessions \
         | commit of a send to {DEVICES} devices |"
    );
    println!("|---|---|---|---|---|---|");
    for background in [0, 2_000, 10_000] {
        for index in [false, true] {
            let (_dir, mut s) = store_with(background, index);
            let mut generation = 1;
            // Warm the page cache and the WAL.
            send_us(&mut s, &mut generation);
            let [read, put, prune, commit] = send_us(&mut s, &mut generation);
            let n = DEVICES as f64;
            println!(
                "| {background} | {} | {:.1} µs | {:.1} µs | {:.1} µs | {commit:.0} µs |",
                if index { "yes" } else { "no" },
                read / n,
                put / n,
                prune / n,
            );
        }
    }
}
