//! Token-bucket rate limits kept in memory (per node): requests per device, split into
//! sends, acknowledgements and everything else; unauthenticated requests per client address
//! (never logged or stored); bundle fetches per requester. Each budget refills at a steady
//! rate up to a burst, so a client at its sustained rate has headroom for jitter.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde::Deserialize;

use crate::store::DeviceKey;

/// Entries kept before idle buckets are swept (at most once a second).
const SWEEP_AT: usize = 65_536;
/// Entries never exceeded: a new key beyond this is refused until a sweep frees room.
const MAX_ENTRIES: usize = 4 * SWEEP_AT;
/// A bucket costs this many milli-tokens per event.
const MILLI: u64 = 1000;

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// Unauthenticated requests from one address.
    Address(IpAddr),
    /// Authenticated requests of one device other than sends and acknowledgements.
    Device(DeviceKey),
    /// Sends (`POST /v1/messages`) of one device.
    Sends(DeviceKey),
    /// Acknowledgements of one device (HTTP requests and WebSocket frames).
    Acks(DeviceKey),
    /// Bundle fetches by one requesting device.
    Bundles(DeviceKey),
    /// Account creations from one address.
    Accounts(IpAddr),
    // Store protection (issue 7, point 14).
    /// Bundle fetches that hand out one target device's one-time keys, whoever asks.
    OneTimeFetches(DeviceKey),
}

impl LimitKey {
    /// Whether the key is for unauthenticated callers (who can make new keys cheaply).
    fn unauthenticated(&self) -> bool {
        matches!(self, Self::Address(_) | Self::Accounts(_))
    }
}

/// A steady rate and the burst a bucket holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Events added per `period_ms`.
    pub rate: u32,
    /// The refill period in milliseconds.
    pub period_ms: u64,
    /// The most events allowed at once (the bucket's size).
    pub burst: u32,
}

impl Budget {
    /// `rate` events per second, bursts of `burst`.
    pub fn per_second(rate: u32, burst: u32) -> Self {
        Self { rate, period_ms: 1000, burst: burst.max(1) }
    }

    /// `rate` events per minute, bursts of `rate`.
    pub fn per_minute(rate: u32) -> Self {
        Self { rate, period_ms: 60_000, burst: rate.max(1) }
    }

    /// After this long without events a bucket is full again, so forgetting it changes
    /// nothing: the time to refill a whole burst.
    fn full_after_ms(self) -> u64 {
        if self.rate == 0 {
            return u64::MAX;
        }
        self.period_ms.saturating_mul(u64::from(self.burst).div_ceil(u64::from(self.rate)))
    }

    fn capacity(self) -> u64 {
        u64::from(self.burst) * MILLI
    }

    /// Milli-tokens refilled in `elapsed_ms`.
    fn refill(self, elapsed_ms: u64) -> u64 {
        elapsed_ms.saturating_mul(u64::from(self.rate)).saturating_mul(MILLI) / self.period_ms.max(1)
    }

    /// Milliseconds until `missing` milli-tokens are refilled.
    fn wait_ms(self, missing: u64) -> u64 {
        let per_ms_num = u64::from(self.rate).saturating_mul(MILLI);
        if per_ms_num == 0 {
            return u64::MAX;
        }
        missing.saturating_mul(self.period_ms).div_ceil(per_ms_num)
    }
}

/// Rate limits of a server, configurable (`[limits]` in the config file).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimits {
    /// Authenticated requests per second per device, other than sends and acknowledgements.
    pub requests_per_second: u32,
    /// Burst of those.
    pub request_burst: u32,
    /// Sends per second per device.
    pub sends_per_second: u32,
    /// Burst of sends.
    pub send_burst: u32,
    /// Acknowledgements (HTTP requests or WebSocket frames) per second per device. A
    /// WebSocket over budget is slowed down, never closed.
    pub acks_per_second: u32,
    /// Burst of acknowledgements.
    pub ack_burst: u32,
    /// Unauthenticated requests per second per client address (IPv6: per /64).
    pub address_requests_per_second: u32,
    /// Burst of those.
    pub address_request_burst: u32,
    /// Bundle fetches per minute per requesting device.
    pub bundle_fetches_per_minute: u32,
    /// Account creations per hour per client address (checked before the request body is
    /// read).
    pub account_creations_per_hour: u32,
    /// Burst of those (`tacit bench relay --clients N` creates N accounts at once).
    pub account_creation_burst: u32,
    // Store protection (issue 7, point 14).
    /// Bundle fetches per minute that hand out one target device's one-time keys, from
    /// all requesters together; beyond it bundles come without one-time keys.
    pub one_time_fetches_per_target_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            requests_per_second: tacit_api::limits::REQUESTS_PER_SECOND,
            request_burst: 2 * tacit_api::limits::REQUESTS_PER_SECOND,
            sends_per_second: 1000,
            send_burst: 2000,
            acks_per_second: 2000,
            ack_burst: 4000,
            address_requests_per_second: tacit_api::limits::REQUESTS_PER_SECOND,
            address_request_burst: 2 * tacit_api::limits::REQUESTS_PER_SECOND,
            bundle_fetches_per_minute: tacit_api::limits::BUNDLE_FETCHES_PER_MINUTE,
            account_creations_per_hour: 60,
            account_creation_burst: 200,
            one_time_fetches_per_target_per_minute: tacit_api::limits::ONE_TIME_FETCHES_PER_TARGET_PER_MINUTE,
        }
    }
}

impl RateLimits {
    /// The budget for a key.
    pub(crate) fn budget(&self, key: &LimitKey) -> Budget {
        match key {
            LimitKey::Address(_) => {
                Budget::per_second(self.address_requests_per_second, self.address_request_burst)
            }
            LimitKey::Device(_) => Budget::per_second(self.requests_per_second, self.request_burst),
            LimitKey::Sends(_) => Budget::per_second(self.sends_per_second, self.send_burst),
            LimitKey::Acks(_) => Budget::per_second(self.acks_per_second, self.ack_burst),
            LimitKey::Bundles(_) => Budget::per_minute(self.bundle_fetches_per_minute),
            LimitKey::Accounts(_) => Budget {
                rate: self.account_creations_per_hour,
                period_ms: 3_600_000,
                burst: self.account_creation_burst.max(1),
            },
            LimitKey::OneTimeFetches(_) => Budget::per_minute(self.one_time_fetches_per_target_per_minute),
        }
    }
}

/// A bucket: milli-tokens left and when it was last refilled.
#[derive(Clone, Copy)]
struct Bucket {
    tokens: u64,
    at_ms: u64,
}

/// Token buckets per key.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<Buckets>,
    /// The budgets, to know when a bucket is full again.
    limits: RateLimits,
}

#[derive(Default)]
struct Buckets {
    map: HashMap<LimitKey, Bucket>,
    last_sweep_ms: u64,
}

/// Drops every bucket idle long enough to be full again.
fn sweep(map: &mut HashMap<LimitKey, Bucket>, limits: &RateLimits, now_ms: u64) {
    map.retain(|k, b| b.at_ms.saturating_add(limits.budget(k).full_after_ms()) > now_ms);
}

/// The key for a client address: IPv6 by /64 (one host usually holds a whole /64).
pub fn address_key(ip: IpAddr) -> LimitKey {
    LimitKey::Address(client_of(ip))
}

/// The client an address stands for: itself, or its /64 for IPv6 (one host usually holds a
/// whole /64). Every per-address limit counts by this.
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
    }
}

impl RateLimiter {
    /// A limiter for these budgets.
    pub fn new(limits: RateLimits) -> Self {
        Self { buckets: Mutex::default(), limits }
    }

    /// Takes one token for `key`; `Err(ms)` (and nothing taken) if the bucket is empty,
    /// with the time until a token is there.
    #[cfg(test)]
    pub fn check(&self, key: LimitKey, budget: Budget, now_ms: u64) -> Result<(), u64> {
        self.check_n(key, budget, now_ms, 1)
    }

    /// Takes `n` tokens for `key` (at most a whole burst), or none and `Err(ms)`.
    pub fn check_n(&self, key: LimitKey, budget: Budget, now_ms: u64, n: u32) -> Result<(), u64> {
        let Ok(mut guard) = self.buckets.lock() else { return Err(1000) };
        let Buckets { map, last_sweep_ms } = &mut *guard;
        if map.len() >= SWEEP_AT && now_ms.saturating_sub(*last_sweep_ms) >= 1000 {
            sweep(map, &self.limits, now_ms);
            *last_sweep_ms = now_ms;
        }
        // When full, only new unauthenticated keys are refused: those are cheap to make (a
        // new address), while device keys are bounded by the devices holding a valid token,
        // so a flood of addresses never locks devices out.
        if map.len() >= MAX_ENTRIES && !map.contains_key(&key) && key.unauthenticated() {
            return Err(1000);
        }
        let cap = budget.capacity();
        let b = map.entry(key).or_insert(Bucket { tokens: cap, at_ms: now_ms });
        let elapsed = now_ms.saturating_sub(b.at_ms);
        let refill = budget.refill(elapsed);
        if refill > 0 {
            b.tokens = b.tokens.saturating_add(refill).min(cap);
            b.at_ms = now_ms;
        }
        let cost = u64::from(n.max(1)).saturating_mul(MILLI).min(cap);
        if b.tokens >= cost {
            b.tokens -= cost;
            Ok(())
        } else {
            Err(budget.wait_ms(cost - b.tokens).max(1))
        }
    }

    /// Forgets buckets that are full again (run on a timer, and when the map is large).
    pub fn sweep(&self, now_ms: u64) {
        if let Ok(mut guard) = self.buckets.lock() {
            sweep(&mut guard.map, &self.limits, now_ms);
            guard.last_sweep_ms = now_ms;
        }
    }

    /// Buckets held (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().map(|b| b.map.len()).unwrap_or(0)
    }

    /// Records one event; false if `key` is over its budget.
    #[cfg(test)]
    pub fn allow(&self, key: LimitKey, budget: Budget, now_ms: u64) -> bool {
        self.check(key, budget, now_ms).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_bursts_and_refills() {
        let l = RateLimiter::default();
        let k = LimitKey::Device(DeviceKey { account: 1, device: 1 });
        let b = Budget::per_second(2, 4);
        for _ in 0..4 {
            assert!(l.allow(k, b, 5_000));
        }
        assert_eq!(l.check(k, b, 5_000), Err(500));
        assert!(!l.allow(k, b, 5_499));
        assert!(l.allow(k, b, 5_500));
        assert!(!l.allow(k, b, 5_500));
        // Idle time refills up to the burst, not beyond.
        for _ in 0..4 {
            assert!(l.allow(k, b, 60_000));
        }
        assert!(!l.allow(k, b, 60_000));
    }

    #[test]
    fn sweeping_forgets_only_buckets_that_are_full_again() {
        let l = RateLimiter::default();
        let limits = RateLimits::default();
        let device = LimitKey::Device(DeviceKey { account: 1, device: 1 });
        let accounts = LimitKey::Accounts(IpAddr::V4([10, 0, 0, 1].into()));
        let burst = limits.account_creation_burst;
        for _ in 0..burst {
            assert!(l.allow(accounts, limits.budget(&accounts), 0));
        }
        assert!(!l.allow(accounts, limits.budget(&accounts), 0));
        assert!(l.allow(device, limits.budget(&device), 0));
        // Two minutes on, the device's bucket is full and forgotten; the account-creation
        // bucket is not full yet and must be kept, or a sweep would hand out a new burst.
        l.sweep(120_000);
        assert_eq!(l.len(), 1);
        assert!(l.allow(accounts, limits.budget(&accounts), 120_000), "two new accounts in two minutes");
        assert!(l.allow(accounts, limits.budget(&accounts), 120_000));
        assert!(!l.allow(accounts, limits.budget(&accounts), 120_000));
        // An hour later 60 more are allowed, and the bucket is still far from full (a burst
        // of 200 at 60 an hour takes 4 hours to refill): it is kept.
        let hour = 3_600_000;
        l.sweep(120_000 + hour);
        assert_eq!(l.len(), 1);
        for _ in 0..60 {
            assert!(l.allow(accounts, limits.budget(&accounts), 120_000 + hour));
        }
        assert!(!l.allow(accounts, limits.budget(&accounts), 120_000 + hour));
        l.sweep(120_000 + hour + 4 * hour);
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn large_events_cost_more_but_never_more_than_a_burst() {
        let l = RateLimiter::default();
        let k = LimitKey::Acks(DeviceKey { account: 1, device: 1 });
        let b = Budget::per_second(10, 20);
        assert!(l.check_n(k, b, 0, 16).is_ok());
        assert_eq!(l.check_n(k, b, 0, 16), Err(1200), "4 left: 12 tokens at 10/s");
        assert!(l.check_n(k, b, 0, 4).is_ok());
        // A cost above the burst waits for a full bucket instead of never passing.
        assert!(l.check_n(k, b, 2_000, 1_000).is_ok());
        assert!(l.check_n(k, b, 2_000, 1).is_err());
    }

    #[test]
    fn ipv6_addresses_share_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap_or(IpAddr::V4([0; 4].into()));
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap_or(IpAddr::V4([0; 4].into()));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::V4([0; 4].into()));
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
    }

    #[test]
    fn budgets_are_separate() {
        let l = RateLimiter::default();
        let d = DeviceKey { account: 1, device: 1 };
        let limits = RateLimits { sends_per_second: 1, send_burst: 1, ..RateLimits::default() };
        let sends = LimitKey::Sends(d);
        assert!(l.allow(sends, limits.budget(&sends), 0));
        assert!(!l.allow(sends, limits.budget(&sends), 0));
        let other = LimitKey::Device(d);
        assert!(l.allow(other, limits.budget(&other), 0));
        let acks = LimitKey::Acks(d);
        assert!(l.allow(acks, limits.budget(&acks), 0));
    }
}
