//! Token-bucket rate limits kept in memory (per node): requests per device, split into
//! sends, acknowledgements and everything else; unauthenticated requests per client address
//! (never logged or stored); bundle fetches per requester. Each budget refills at a steady
//! rate up to a burst, so a client at its sustained rate has headroom for jitter.
//!
//! The table of buckets is bounded ([`RateLimits::max_buckets`]), and filling it never
//! refuses anyone: a bucket that has refilled completely is forgotten (that changes nothing),
//! and when the table is still full a new key evicts the buckets that are fullest, the ones
//! whose loss gives their owner the least (a bucket just drained by a flood is kept). So
//! however many addresses a flood comes from, a new client gets a bucket of its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde::Deserialize;

use crate::store::DeviceKey;

/// Default of [`RateLimits::max_buckets`] (about 20 MiB of table at most).
pub const MAX_BUCKETS: usize = 262_144;
/// Fewest buckets a table holds, whatever is configured.
const MIN_BUCKETS: usize = 16;
/// A full table evicts `1/EVICT_SHARE` of its buckets at once, so the scan that picks them
/// (linear in the table) runs once per that many new keys.
const EVICT_SHARE: usize = 16;
/// IPv6 account creations are counted per /48 (a site's usual allocation): a single /64 is
/// cheap, a /48 costs as much as an IPv4 address. Everything else counts per /64.
pub const ACCOUNT_PREFIX_V6: u32 = 48;
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
    /// Link offers published from one address (IPv6: per /64).
    LinkOffers(IpAddr),
    /// Devices whose KeyPackages one device claimed (issue 11).
    KeyPackageClaims(DeviceKey),
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
    /// Most rate-limit buckets kept in memory (one per device budget and per client
    /// address). A full table evicts its fullest buckets; it never refuses a new client.
    pub max_buckets: usize,
    // Store protection (issue 7, point 14).
    /// Bundle fetches per minute that hand out one target device's one-time keys, from
    /// all requesters together; beyond it bundles come without one-time keys.
    pub one_time_fetches_per_target_per_minute: u32,
    /// Link offers (`POST /v1/link`) per minute per client address, besides the address's
    /// request budget.
    pub link_offers_per_minute: u32,
    /// Devices whose KeyPackages one device may claim per hour (a claim of n devices
    /// costs n).
    pub key_package_claims_per_hour: u32,
    /// Burst of those.
    pub key_package_claim_burst: u32,
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
            max_buckets: MAX_BUCKETS,
            one_time_fetches_per_target_per_minute: tacit_api::limits::ONE_TIME_FETCHES_PER_TARGET_PER_MINUTE,
            link_offers_per_minute: tacit_api::limits::LINK_OFFERS_PER_MINUTE,
            key_package_claims_per_hour: tacit_api::limits::KEY_PACKAGE_CLAIMS_PER_HOUR,
            key_package_claim_burst: tacit_api::limits::KEY_PACKAGE_CLAIM_BURST,
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
            LimitKey::LinkOffers(_) => Budget::per_minute(self.link_offers_per_minute),
            LimitKey::KeyPackageClaims(_) => Budget {
                rate: self.key_package_claims_per_hour,
                period_ms: 3_600_000,
                burst: self.key_package_claim_burst.max(1),
            },
        }
    }
}

/// A bucket: milli-tokens left and when it was last refilled.
#[derive(Clone, Copy)]
struct Bucket {
    tokens: u64,
    at_ms: u64,
}

impl Bucket {
    /// Milli-tokens it holds at `now_ms` (refilled, at most the capacity).
    fn level(&self, budget: Budget, now_ms: u64) -> u64 {
        self.tokens.saturating_add(budget.refill(now_ms.saturating_sub(self.at_ms))).min(budget.capacity())
    }

    /// How full it is at `now_ms`, in millionths of its capacity.
    fn fill(&self, budget: Budget, now_ms: u64) -> u64 {
        self.level(budget, now_ms).saturating_mul(1_000_000) / budget.capacity().max(1)
    }
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

/// Drops every bucket that has refilled completely (forgetting it changes nothing).
fn sweep(map: &mut HashMap<LimitKey, Bucket>, limits: &RateLimits, now_ms: u64) {
    map.retain(|k, b| {
        let budget = limits.budget(k);
        b.level(budget, now_ms) < budget.capacity()
    });
}

/// Evicts the `1/EVICT_SHARE` fullest buckets (at least one): their owners lose the least
/// (a fresh bucket is a full one), while buckets a flood has drained are kept.
fn evict_fullest(map: &mut HashMap<LimitKey, Bucket>, limits: &RateLimits, now_ms: u64) {
    let mut fill: Vec<(u64, LimitKey)> =
        map.iter().map(|(k, b)| (b.fill(limits.budget(k), now_ms), *k)).collect();
    let n = (fill.len() / EVICT_SHARE).max(1);
    if fill.len() > n {
        fill.select_nth_unstable_by(n, |a, b| b.0.cmp(&a.0));
    }
    for (_, key) in fill.iter().take(n) {
        map.remove(key);
    }
}

/// The key for a client address: IPv6 by /64 (one host usually holds a whole /64).
pub fn address_key(ip: IpAddr) -> LimitKey {
    LimitKey::Address(client_of(ip))
}

/// The key for account creations from a client address: IPv4 by address, IPv6 by /48
/// ([`ACCOUNT_PREFIX_V6`]), so that the cheapest thing to hold many of (a /64) buys no more
/// accounts than one address does.
pub fn account_key(ip: IpAddr) -> LimitKey {
    LimitKey::Accounts(match client_of(ip) {
        IpAddr::V6(v6) => IpAddr::V6(prefix(v6, ACCOUNT_PREFIX_V6)),
        v4 => v4,
    })
}

/// The client an address stands for: itself for IPv4, its /64 for IPv6 (one host usually
/// holds a whole /64). An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a dual-stack `[::]`
/// listener sees IPv4 peers) is its IPv4 address, so each IPv4 host is its own client and not
/// one /64 shared by all of them. Every per-address limit counts by this.
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(prefix(v6, 64)),
        },
    }
}

/// The first `bits` bits of `v6`, the rest zero.
fn prefix(v6: std::net::Ipv6Addr, bits: u32) -> std::net::Ipv6Addr {
    let host = 128u32.saturating_sub(bits);
    let mask = u128::MAX.checked_shl(host).unwrap_or(0);
    (u128::from(v6) & mask).into()
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
        let max = self.limits.max_buckets.max(MIN_BUCKETS);
        if map.len() >= max && !map.contains_key(&key) {
            // Full: first forget what has refilled (at most once a second), then, if that
            // freed nothing, evict the fullest. A new key is never refused.
            if now_ms.saturating_sub(*last_sweep_ms) >= 1000 {
                sweep(map, &self.limits, now_ms);
                *last_sweep_ms = now_ms;
            }
            if map.len() >= max {
                evict_fullest(map, &self.limits, now_ms);
            }
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4([0; 4].into()))
    }

    #[test]
    fn ipv4_mapped_peers_are_each_their_own_client() {
        // A dual-stack `[::]` listener sees IPv4 peers as ::ffff:a.b.c.d: each is its IPv4
        // address, not one /64 (::ffff:0:0/64) shared by every IPv4 host.
        assert_eq!(client_of(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(client_of(ip("::ffff:192.0.2.2")), ip("192.0.2.2"));
        assert_ne!(client_of(ip("::ffff:192.0.2.1")), client_of(ip("::ffff:192.0.2.2")));
        assert_ne!(client_of(ip("::ffff:10.0.0.1")), client_of(ip("::ffff:172.16.0.1")));
        // The same host over IPv4 and IPv4-mapped is one client.
        assert_eq!(client_of(ip("::ffff:192.0.2.1")), client_of(ip("192.0.2.1")));
        assert_eq!(address_key(ip("::ffff:192.0.2.1")), address_key(ip("192.0.2.1")));
        // Plain IPv4 is untouched; IPv6 (loopback, IPv4-compatible ::a.b.c.d) is still a /64.
        assert_eq!(client_of(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(client_of(ip("::1")), ip("::"));
        assert_eq!(client_of(ip("::192.0.2.1")), ip("::"));
        assert_eq!(client_of(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
    }

    #[test]
    fn account_creations_count_per_slash_48() {
        assert_eq!(account_key(ip("2001:db8:1:2::1")), account_key(ip("2001:db8:1:ffff::1")));
        assert_ne!(account_key(ip("2001:db8:1:2::1")), account_key(ip("2001:db8:2:2::1")));
        assert_eq!(account_key(ip("::ffff:192.0.2.1")), LimitKey::Accounts(ip("192.0.2.1")));
        assert_ne!(account_key(ip("192.0.2.1")), account_key(ip("192.0.2.2")));
    }

    /// The `n`th /48 of 2001:db8::/32's neighbourhood (distinct for every `n < 2^32`).
    fn site(n: u32) -> IpAddr {
        IpAddr::V6((0x2001_0db8_0000_0000_0000_0000_0000_0000u128 | (u128::from(n) << 80)).into())
    }

    #[test]
    fn a_table_filled_from_many_networks_still_serves_a_new_client() {
        let limits = RateLimits::default();
        let l = RateLimiter::new(limits);
        // A flood from MAX_BUCKETS distinct networks, each draining its account-creation
        // budget: the table is full of buckets that stay empty for hours.
        let n = u32::try_from(MAX_BUCKETS).unwrap_or(u32::MAX);
        let burst = limits.account_creation_burst;
        for i in 0..n {
            let k = account_key(site(i));
            assert!(l.check_n(k, limits.budget(&k), 1_000, burst).is_ok());
        }
        assert_eq!(l.len(), MAX_BUCKETS);
        // A new client, seconds later, is served (it was refused for hours before).
        let newcomer = account_key(site(n));
        assert!(l.allow(newcomer, limits.budget(&newcomer), 5_000), "a new client refused");
        let address = address_key(site(n + 1));
        assert!(l.allow(address, limits.budget(&address), 5_000));
        assert!(l.len() <= MAX_BUCKETS);
        // The flood gained little: all but one in EVICT_SHARE of its drained buckets are
        // kept, still empty.
        let refused = (0..n)
            .filter(|&i| {
                let k = account_key(site(i));
                l.check(k, limits.budget(&k), 5_000).is_err()
            })
            .count();
        assert!(refused >= MAX_BUCKETS - 2 * MAX_BUCKETS / EVICT_SHARE - 2, "{refused} still refused");
    }

    #[test]
    fn a_full_table_evicts_the_fullest_buckets_first() {
        let limits = RateLimits { max_buckets: 64, ..RateLimits::default() };
        let l = RateLimiter::new(limits);
        // 16 drained account buckets (a flood), then ordinary clients that made one
        // request each and fill the table.
        for i in 0..16 {
            let k = account_key(site(i));
            assert!(l.check_n(k, limits.budget(&k), 0, limits.account_creation_burst).is_ok());
        }
        for i in 16..400 {
            let k = account_key(site(i));
            assert!(l.allow(k, limits.budget(&k), 0), "client {i} refused");
            assert!(l.len() <= 64);
        }
        // The drained buckets were never the ones evicted.
        for i in 0..16 {
            let k = account_key(site(i));
            assert!(!l.allow(k, limits.budget(&k), 0), "drained bucket {i} was forgotten");
        }
    }

    #[test]
    fn the_table_size_is_configurable_and_has_a_floor() {
        let c = crate::ServerConfig::from_toml("[limits]\nmax_buckets = 1000\n").unwrap_or_default();
        assert_eq!(c.limits.max_buckets, 1000);
        assert_eq!(RateLimits::default().max_buckets, MAX_BUCKETS);
        // Zero is taken as the floor, not as "no table".
        let limits = RateLimits { max_buckets: 0, ..RateLimits::default() };
        let l = RateLimiter::new(limits);
        for i in 0..100 {
            let k = address_key(site(i));
            assert!(l.allow(k, limits.budget(&k), 0));
        }
        assert_eq!(l.len(), MIN_BUCKETS);
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
