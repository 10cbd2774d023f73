//! Wake-ups for connected devices. A send publishes each stored envelope to its mailbox's
//! subscribers (the WebSockets of that device), so live delivery needs no database read.
//! [`Bus`] is a trait so a fleet can replace [`LocalBus`] (one process) with NATS.
//!
//! Publishing never blocks: a subscriber whose queue is full loses the envelope from the
//! queue and is marked lagged; it then re-reads its mailbox from the store, where the
//! envelope is (it was committed before it was published).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tacit_api::Envelope;
use tokio::sync::mpsc;

use crate::store::DeviceKey;

/// Envelopes queued per subscriber before it is marked lagged.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// What a subscriber is handed.
#[derive(Clone, Debug)]
pub enum Live {
    /// A committed envelope of its mailbox.
    Envelope(Arc<Envelope>),
    /// Its mailbox holds committed envelopes that were not handed over (a group message
    /// too large to copy for every recipient): read them from the store.
    Wake,
}

/// Delivers published envelopes to the subscribers of a device.
pub trait Bus: Send + Sync + 'static {
    /// Starts receiving the envelopes published for `device` from now on.
    fn subscribe(&self, device: DeviceKey) -> Subscription;
    /// Hands a committed envelope to the device's subscribers (on this node or others).
    fn publish(&self, device: DeviceKey, envelope: Arc<Envelope>);
    /// Tells the device's subscribers that committed envelopes wait in the store.
    fn wake(&self, device: DeviceKey);
}

/// One subscriber's queue. Dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::Receiver<Live>,
    lagged: Arc<AtomicBool>,
    _guard: Box<dyn Send + Sync>,
}

impl Subscription {
    /// Makes a subscription from its parts (for [`Bus`] implementations): the queue, the
    /// flag the publisher sets when it dropped an envelope, and a guard whose drop
    /// unsubscribes.
    pub fn new(rx: mpsc::Receiver<Live>, lagged: Arc<AtomicBool>, guard: Box<dyn Send + Sync>) -> Self {
        Self { rx, lagged, _guard: guard }
    }

    /// The next published envelope or wake-up (`None` when the bus is gone).
    pub async fn recv(&mut self) -> Option<Live> {
        self.rx.recv().await
    }

    /// Whether envelopes were dropped since the last call (then re-read the mailbox).
    pub fn take_lagged(&self) -> bool {
        self.lagged.swap(false, Ordering::AcqRel)
    }
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Live>,
    lagged: Arc<AtomicBool>,
}

type Map = Arc<Mutex<HashMap<DeviceKey, Vec<Subscriber>>>>;

/// The in-process bus: a map from device to its subscribers' queues.
#[derive(Default)]
pub struct LocalBus {
    map: Map,
    next_id: AtomicU64,
}

impl LocalBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }
}

struct Unsubscribe {
    map: Map,
    device: DeviceKey,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let Ok(mut map) = self.map.lock()
            && let Some(subs) = map.get_mut(&self.device)
        {
            subs.retain(|s| s.id != self.id);
            if subs.is_empty() {
                map.remove(&self.device);
            }
        }
    }
}

impl LocalBus {
    /// Queues `live` for every subscriber of `device` (one whose queue is full is marked
    /// lagged: it reads its mailbox anyway).
    fn hand_over(&self, device: DeviceKey, live: Live) {
        let Ok(map) = self.map.lock() else { return };
        for s in map.get(&device).into_iter().flatten() {
            if s.tx.try_send(live.clone()).is_err() {
                s.lagged.store(true, Ordering::Release);
            }
        }
    }
}

impl Bus for LocalBus {
    fn subscribe(&self, device: DeviceKey) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut map) = self.map.lock() {
            map.entry(device).or_default().push(Subscriber { id, tx, lagged: lagged.clone() });
        }
        Subscription::new(rx, lagged, Box::new(Unsubscribe { map: self.map.clone(), device, id }))
    }

    fn publish(&self, device: DeviceKey, envelope: Arc<Envelope>) {
        self.hand_over(device, Live::Envelope(envelope));
    }

    fn wake(&self, device: DeviceKey) {
        self.hand_over(device, Live::Wake);
    }
}
