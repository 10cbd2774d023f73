//! Connection slots: at most `max` TCP connections at once and `max_per_address` from one
//! client address ([`crate::limiter::client_of`]: IPv4 by address, IPv6 by /64). A full
//! server does not simply refuse newcomers, or a handful of addresses could hold every slot
//! for as long as they like; a new connection takes the slot of, in this order:
//!
//! 1. a connection waiting for a request's headers (slow-header clients, idle keep-alives):
//!    the one whose address holds the most connections, the longest waiting among those;
//! 2. else, when some address holds at least two more connections than the newcomer's
//!    address does, one of that address's: a request in progress before a WebSocket,
//!    the oldest first.
//!
//! Only when every address holds about as many connections as the newcomer's is the new
//! connection refused. An evicted connection is closed at once (a WebSocket without a
//! close frame, as if the network had dropped it). Trusted proxies are exempt from the
//! per-address count and are never chosen under rule 2.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::state::now_ms;

/// Waiting for a request's headers (a new connection, a slow one, an idle keep-alive).
const WAITING: u8 = 0;
/// A request in progress.
const SERVING: u8 = 1;
/// Upgraded to a WebSocket.
const UPGRADED: u8 = 2;

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its address holds `max_per_address` connections already.
    AddressFull,
    /// The server is full and no connection may be evicted for it.
    ServerFull,
}

/// Where a connection is in its life, for the eviction order.
#[derive(Default)]
struct Phase {
    /// [`WAITING`], [`SERVING`] or [`UPGRADED`].
    state: AtomicU8,
    /// When it entered that state (ms since the Unix epoch).
    since_ms: AtomicU64,
}

struct Entry {
    /// [`crate::limiter::client_of`] the peer.
    client: IpAddr,
    /// Whether it counts against its address (not for a trusted proxy).
    counted: bool,
    phase: Arc<Phase>,
    evict: CancellationToken,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
}

impl Table {
    fn held_by(&self, client: IpAddr) -> usize {
        self.per_address.get(&client).copied().unwrap_or(0)
    }

    /// Removes a connection and its count; false if it was gone already.
    fn remove(&mut self, id: u64) -> bool {
        let Some(e) = self.open.remove(&id) else { return false };
        if e.counted
            && let Some(n) = self.per_address.get_mut(&e.client)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_address.remove(&e.client);
            }
        }
        true
    }

    /// The connection a newcomer holding `held` connections may take the slot of, by the
    /// order in the module documentation (one pass over the open connections; only run
    /// when the server is full).
    fn victim(&self, held: usize) -> Option<u64> {
        // Rule 2 applies to the biggest holder only, and only if it holds 2 more.
        let biggest = self
            .per_address
            .iter()
            .max_by_key(|(_, n)| **n)
            .filter(|(_, n)| **n >= held.saturating_add(2))
            .map(|(client, _)| *client);
        let mut waiting: Option<((usize, u64, u64), u64)> = None;
        let mut busy: Option<((bool, u64, u64), u64)> = None;
        for (&id, e) in &self.open {
            let state = e.phase.state.load(Ordering::Relaxed);
            let since = e.phase.since_ms.load(Ordering::Relaxed);
            if state == WAITING {
                let holder = if e.counted { self.held_by(e.client) } else { 0 };
                // Most held first, then the longest waiting (earliest), then the oldest id.
                let rank = (holder, u64::MAX - since, u64::MAX - id);
                if waiting.as_ref().is_none_or(|(best, _)| rank > *best) {
                    waiting = Some((rank, id));
                }
            } else if waiting.is_none() && e.counted && Some(e.client) == biggest {
                // A request in progress before a WebSocket, then the oldest.
                let rank = (state == UPGRADED, since, id);
                if busy.as_ref().is_none_or(|(best, _)| rank < *best) {
                    busy = Some((rank, id));
                }
            }
        }
        waiting.map(|(_, id)| id).or(busy.map(|(_, id)| id))
    }
}

/// The slots of one listener.
pub(crate) struct Slots {
    max: usize,
    max_per_address: usize,
    table: Mutex<Table>,
}

impl Slots {
    /// At most `max` connections, `max_per_address` from one client (both at least one).
    pub(crate) fn new(max: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self { max: max.max(1), max_per_address: max_per_address.max(1), table: Mutex::default() })
    }

    /// Admits a connection from `client` (`counted`: not a trusted proxy), evicting another
    /// if the server is full and the order allows.
    pub(crate) fn admit(self: &Arc<Self>, client: IpAddr, counted: bool) -> Result<Slot, Refused> {
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let held = if counted { t.held_by(client) } else { 0 };
        if counted && held >= self.max_per_address {
            return Err(Refused::AddressFull);
        }
        if t.open.len() >= self.max {
            let Some(victim) = t.victim(held) else { return Err(Refused::ServerFull) };
            if let Some(e) = t.open.get(&victim) {
                e.evict.cancel();
            }
            t.remove(victim);
        }
        let id = t.next_id;
        t.next_id = t.next_id.wrapping_add(1);
        let phase = Arc::new(Phase { state: AtomicU8::new(WAITING), since_ms: AtomicU64::new(now_ms()) });
        let evict = CancellationToken::new();
        t.open.insert(id, Entry { client, counted, phase: phase.clone(), evict: evict.clone() });
        if counted {
            *t.per_address.entry(client).or_insert(0) += 1;
        }
        Ok(Slot { inner: Arc::new(Held { slots: self.clone(), id, phase, evict }) })
    }

    /// Connections open (for tests).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.table.lock().unwrap_or_else(PoisonError::into_inner).open.len()
    }
}

/// A connection's slot, carried in each request's extensions so a WebSocket keeps it for as
/// long as the socket lives; freed when the last clone drops.
#[derive(Clone)]
pub(crate) struct Slot {
    inner: Arc<Held>,
}

struct Held {
    slots: Arc<Slots>,
    id: u64,
    phase: Arc<Phase>,
    evict: CancellationToken,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.slots.table.lock().unwrap_or_else(PoisonError::into_inner).remove(self.id);
    }
}

impl Slot {
    fn set(&self, state: u8) {
        self.inner.phase.state.store(state, Ordering::Relaxed);
        self.inner.phase.since_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A request's headers have arrived: it is being served.
    pub(crate) fn serving(&self) {
        self.set(SERVING);
    }

    /// The request was answered; the connection waits for the next one (or, after `101`,
    /// has become a WebSocket).
    pub(crate) fn answered(&self, upgraded: bool) {
        self.set(if upgraded { UPGRADED } else { WAITING });
    }

    /// Completes when the connection was evicted for a newcomer: close it.
    pub(crate) async fn evicted(&self) {
        self.inner.evict.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4([192, 0, 2, n].into())
    }

    #[test]
    fn a_full_server_evicts_waiting_connections_of_the_biggest_holder_first() {
        let slots = Slots::new(4, 3);
        let a1 = slots.admit(ip(1), true).unwrap();
        let a2 = slots.admit(ip(1), true).unwrap();
        let b1 = slots.admit(ip(2), true).unwrap();
        let b2 = slots.admit(ip(2), true).unwrap();
        a1.serving();
        a2.answered(true);
        // Full: only b's are waiting; a new address takes the older of them.
        let c1 = slots.admit(ip(3), true).unwrap();
        assert!(b1.inner.evict.is_cancelled() && !b2.inner.evict.is_cancelled());
        assert_eq!(slots.open(), 4);
        // The evicted connection's slot dropping later frees nothing twice.
        drop(b1);
        assert_eq!(slots.open(), 4);
        // No waiting connection left once b2 and c1 are busy: address 1 holds 2, a
        // newcomer from address 2 holds 1 (not 2 fewer): refused.
        b2.serving();
        c1.serving();
        assert_eq!(slots.admit(ip(2), true).err(), Some(Refused::ServerFull));
        // A brand-new address holds 0: it takes a request in progress of address 1 before
        // its WebSocket.
        let d1 = slots.admit(ip(4), true).unwrap();
        assert!(a1.inner.evict.is_cancelled() && !a2.inner.evict.is_cancelled());
        drop((a1, a2, b2, c1, d1));
        assert_eq!(slots.open(), 0);
    }

    #[test]
    fn the_per_address_cap_holds_and_trusted_proxies_are_exempt() {
        let slots = Slots::new(100, 2);
        let _a = (slots.admit(ip(1), true).unwrap(), slots.admit(ip(1), true).unwrap());
        assert_eq!(slots.admit(ip(1), true).err(), Some(Refused::AddressFull));
        let _proxy: Vec<Slot> = (0..10).map(|_| slots.admit(ip(9), false).unwrap()).collect();
        assert!(slots.admit(ip(2), true).is_ok());
    }
}
