//! Issue 9, fan-out: what the store writes of one send cost per recipient device, on a real
//! SQLCipher store (`synchronous=FULL`, WAL), with M sessions of other peers already stored.
//! A timing tool, not a check: run it on a quiet machine with
//! `cargo test -p tacit-client --lib fanout_store -- --ignored --nocapture`.
//!
//! Each send does what `send_payload` does in its transaction: for each of N devices
//! `put_session` + `prune_sessions`, then `raise_state_counter`, commit. The per-device cost
//! is the statements' time over 100 devices / 100 (the commit, one fsync, is timed apart:
//! it is per send).

use std::time::Instant;

use crate::client::SESSIONS_PER_DEVICE;
use crate::store::key::StoreSecret;
use crate::store::{self, Store};

/// Bytes of a stored session in the steady state (a sending chain and one receiving chain,
/// no skipped keys): about what `Session::to_bytes` gives.
const STATE_BYTES: usize = 700;
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

/// Median times of one send's store work for `n` devices, in µs: the per-device statements
/// (with `reads`, also the read `sendable` makes: `Store::sessions`), and the commit.
fn send_us(s: &mut Store, n: usize, generation: &mut u64, reads: bool) -> (f64, f64) {
    let state = vec![0x5b; STATE_BYTES];
    let mut work = Vec::with_capacity(ROUNDS);
    let mut commit = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        *generation += 1;
        let t = Instant::now();
        if reads {
            for d in 1..=n {
                assert_eq!(s.sessions("r", d as u32).unwrap().len(), 1);
            }
        }
        let tx = s.tx().unwrap();
        for d in 1..=n {
            store::put_session(&tx, "r", d as u32, &key(0, d), &state, *generation, false).unwrap();
            assert!(store::prune_sessions(&tx, "r", d as u32, SESSIONS_PER_DEVICE).unwrap().is_empty());
        }
        store::raise_state_counter(&tx).unwrap();
        work.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        tx.commit().unwrap();
        commit.push(t.elapsed().as_secs_f64() * 1e6);
    }
    work.sort_by(f64::total_cmp);
    commit.sort_by(f64::total_cmp);
    (work[ROUNDS / 2], commit[ROUNDS / 2])
}

#[test]
#[ignore = "timing tool: run with --ignored --nocapture on a quiet machine"]
fn fanout_store_cost_per_device() {
    println!(
        "| sessions of other peers | index on created_seq | with the reads | statements, 1 device | 10 | 100 \
         | per device (100) | commit (100) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for background in [0, 2_000, 10_000] {
        for index in [false, true] {
            for reads in [false, true] {
                let (_dir, mut s) = store_with(background, index);
                let mut generation = 1;
                // Warm the page cache and the WAL.
                send_us(&mut s, 100, &mut generation, reads);
                let t: Vec<(f64, f64)> =
                    [1, 10, 100].iter().map(|&n| send_us(&mut s, n, &mut generation, reads)).collect();
                println!(
                    "| {background} | {} | {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.1} µs | {:.0} µs |",
                    if index { "yes" } else { "no" },
                    if reads { "yes" } else { "no" },
                    t[0].0,
                    t[1].0,
                    t[2].0,
                    t[2].0 / 100.0,
                    t[2].1
                );
            }
        }
    }
}
