//! Fixed-window rate limits kept in memory (per node): requests per device, unauthenticated
//! requests per client address (never logged or stored), bundle fetches per requester.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::store::DeviceKey;

/// Entries kept before stale windows are swept.
const SWEEP_AT: usize = 65_536;

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// Unauthenticated requests from one address.
    Address(IpAddr),
    /// Authenticated requests of one device.
    Device(DeviceKey),
    /// Bundle fetches by one requesting device.
    Bundles(DeviceKey),
}

/// Counts events per key in fixed windows.
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<LimitKey, (u64, u32)>>, // window start (ms), count
}

impl RateLimiter {
    /// Records one event; false if `key` already had `limit` events in the current window
    /// of `window_ms`.
    pub fn allow(&self, key: LimitKey, limit: u32, window_ms: u64, now_ms: u64) -> bool {
        let Ok(mut map) = self.windows.lock() else { return false };
        let window = now_ms - now_ms % window_ms.max(1);
        if map.len() >= SWEEP_AT {
            // A window that started over a minute (the longest limit) ago is over.
            map.retain(|_, (start, _)| start.saturating_add(60_000) > now_ms);
        }
        let entry = map.entry(key).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= limit {
            return false;
        }
        entry.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_window() {
        let l = RateLimiter::default();
        let k = LimitKey::Device(DeviceKey { account: 1, device: 1 });
        assert!(l.allow(k, 2, 1000, 5_000));
        assert!(l.allow(k, 2, 1000, 5_100));
        assert!(!l.allow(k, 2, 1000, 5_999));
        assert!(l.allow(k, 2, 1000, 6_000));
    }
}
