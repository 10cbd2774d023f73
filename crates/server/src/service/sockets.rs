//! Open WebSockets by device: at most `max_per_device` each (a new one beyond that closes
//! the device's oldest, as a phone that changed networks reconnects before the server has
//! noticed its old socket is dead), and every socket of an account closed when the account
//! is deleted. The registry also tells a device's sockets when its one-time prekeys run
//! low ([`Sockets::prekeys_low`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::{AccountId, DeviceKey};

/// Why the server ends a socket on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The device opened another socket beyond its limit.
    Replaced,
    /// The account was deleted.
    AccountDeleted,
    /// The device was revoked (a list without it) or logged out.
    DeviceRemoved,
}

/// The registry (one per server).
pub(crate) struct Sockets {
    max_per_device: usize,
    next_id: AtomicU64,
    open: Mutex<HashMap<DeviceKey, VecDeque<Entry>>>,
}

struct Entry {
    id: u64,
    end: CancellationToken,
    why: std::sync::Arc<Mutex<Option<Ended>>>,
    /// One-time prekeys left `(X25519, ML-KEM)` when a fetch left them low. At most one
    /// signal waits per socket; later ones are dropped meanwhile (the client refills from
    /// the status it asks for, not from the frame's counts).
    low: mpsc::Sender<(u32, u32)>,
}

/// One open socket's registration; dropping it unregisters.
pub(crate) struct Registration<'a> {
    sockets: &'a Sockets,
    device: DeviceKey,
    id: u64,
    /// Cancelled when the server ends this socket; [`Registration::why`] says why.
    pub(crate) end: CancellationToken,
    why: std::sync::Arc<Mutex<Option<Ended>>>,
    low: Option<mpsc::Receiver<(u32, u32)>>,
}

impl Registration<'_> {
    /// The receiver of [`Sockets::prekeys_low`] signals for this socket (once).
    pub(crate) fn take_low(&mut self) -> Option<mpsc::Receiver<(u32, u32)>> {
        self.low.take()
    }

    /// The socket's number (unique in this server's lifetime).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Why the socket was ended (once `end` is cancelled).
    pub(crate) fn why(&self) -> Option<Ended> {
        self.why.lock().ok().and_then(|w| *w)
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut open) = self.sockets.open.lock()
            && let Some(list) = open.get_mut(&self.device)
        {
            list.retain(|e| e.id != self.id);
            if list.is_empty() {
                open.remove(&self.device);
            }
        }
    }
}

fn end(entry: &Entry, why: Ended) {
    if let Ok(mut w) = entry.why.lock() {
        w.get_or_insert(why);
    }
    entry.end.cancel();
}

impl Sockets {
    /// A registry allowing `max_per_device` sockets per device (at least one).
    pub(crate) fn new(max_per_device: usize) -> Self {
        Self { max_per_device: max_per_device.max(1), next_id: AtomicU64::new(0), open: Mutex::default() }
    }

    /// Registers a new socket of `device`, ending its oldest ones beyond the limit.
    pub(crate) fn register(&self, device: DeviceKey) -> Registration<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (low, low_rx) = mpsc::channel(1);
        let entry = Entry { id, end: CancellationToken::new(), why: std::sync::Arc::default(), low };
        let registration = Registration {
            sockets: self,
            device,
            id,
            end: entry.end.clone(),
            why: entry.why.clone(),
            low: Some(low_rx),
        };
        if let Ok(mut open) = self.open.lock() {
            let list = open.entry(device).or_default();
            list.push_back(entry);
            while list.len() > self.max_per_device {
                if let Some(old) = list.pop_front() {
                    end(&old, Ended::Replaced);
                }
            }
        }
        registration
    }

    /// Ends every socket of `account`.
    pub(crate) fn end_account(&self, account: AccountId) {
        if let Ok(open) = self.open.lock() {
            for entry in open.iter().filter(|(d, _)| d.account == account).flat_map(|(_, l)| l) {
                end(entry, Ended::AccountDeleted);
            }
        }
    }

    /// Ends every socket of `device` (revoked or logged out).
    pub(crate) fn end_device(&self, device: DeviceKey) {
        if let Ok(open) = self.open.lock() {
            for entry in open.get(&device).into_iter().flatten() {
                end(entry, Ended::DeviceRemoved);
            }
        }
    }

    /// Tells every open socket of `device` that it has `one_time` and `kem_one_time`
    /// one-time prekeys left (a socket that has a signal waiting already gets no second).
    pub(crate) fn prekeys_low(&self, device: DeviceKey, one_time: u32, kem_one_time: u32) {
        if let Ok(open) = self.open.lock() {
            for entry in open.get(&device).into_iter().flatten() {
                let _ = entry.low.try_send((one_time, kem_one_time));
            }
        }
    }

    /// Sockets open now.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.open.lock().map(|o| o.values().map(VecDeque::len).sum()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_socket_is_replaced_and_account_deletion_ends_all() {
        let s = Sockets::new(2);
        let d = DeviceKey { account: 1, device: 1 };
        let other = DeviceKey { account: 2, device: 1 };
        let a = s.register(d);
        let b = s.register(d);
        let x = s.register(other);
        assert!(!a.end.is_cancelled());
        let c = s.register(d);
        assert!(a.end.is_cancelled() && a.why() == Some(Ended::Replaced));
        assert!(!b.end.is_cancelled() && !c.end.is_cancelled());
        drop(a);
        assert_eq!(s.count(), 3);
        s.end_account(1);
        assert_eq!((b.why(), c.why()), (Some(Ended::AccountDeleted), Some(Ended::AccountDeleted)));
        assert!(!x.end.is_cancelled());
        drop((b, c, x));
        assert_eq!(s.count(), 0);
    }
}
