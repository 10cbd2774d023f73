//! Client addresses behind trusted reverse proxies. A request whose connection comes from a
//! trusted proxy is attributed to the address that proxy reports in `X-Forwarded-For`: the
//! rightmost entry that is not itself a trusted proxy (entries further left were written by
//! the client and prove nothing). Requests from anyone else keep their socket's address, so
//! a client cannot choose its own address by sending the header directly.

use std::net::IpAddr;

use axum::http::HeaderMap;
use serde::Deserialize;

/// An address block in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`) or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl TryFrom<String> for IpNet {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("not an address or CIDR block: {s}");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => {
                (a.parse::<IpAddr>().map_err(|_| bad())?, Some(p.parse::<u8>().map_err(|_| bad())?))
            }
            None => (s.parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl IpNet {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)), u128::from(u32::from(ip)), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => masked(u128::from(net), u128::from(ip), self.prefix, 128),
            _ => false,
        }
    }
}

fn masked(net: u128, ip: u128, prefix: u8, bits: u32) -> bool {
    let host_bits = bits.saturating_sub(u32::from(prefix));
    if host_bits >= 128 {
        return true;
    }
    (net >> host_bits) == (ip >> host_bits)
}

/// Whether `ip` belongs to a trusted proxy.
pub(crate) fn trusted(proxies: &[IpNet], ip: IpAddr) -> bool {
    proxies.iter().any(|n| n.contains(ip))
}

/// Most `X-Forwarded-For` entries looked at (a longer chain is cut at its right end).
const MAX_HOPS: usize = 16;

/// The client's address: `peer` itself unless it is a trusted proxy, else the rightmost
/// `X-Forwarded-For` entry that is not a trusted proxy (or the leftmost one if all are).
pub(crate) fn client_address(proxies: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !trusted(proxies, peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev().take(MAX_HOPS) {
        // Unparseable entries (garbage, `unknown`) end the walk: nothing left of them can
        // be attributed.
        let Ok(ip) = hop.parse::<IpAddr>() else { break };
        client = ip;
        if !trusted(proxies, ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn blocks_parse_and_match() {
        let n: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        let one: IpNet = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()) && !one.contains("192.0.2.8".parse().unwrap()));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(
            v6.contains("2001:db8:ffff::1".parse().unwrap()) && !v6.contains("2001:db9::1".parse().unwrap())
        );
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0.0/x", ""] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop_and_only_behind_a_trusted_proxy() {
        let proxies = nets(&["10.0.0.0/8"]);
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.9".parse().unwrap();
        // A client sending the header itself gains nothing.
        assert_eq!(client_address(&proxies, stranger, &headers(&["1.2.3.4"])), stranger);
        // Behind the proxy: the entry the proxy appended, not what the client wrote before it.
        let h = headers(&["6.6.6.6, 203.0.113.5"]);
        assert_eq!(client_address(&proxies, proxy, &h), "203.0.113.5".parse::<IpAddr>().unwrap());
        // Chains of trusted proxies are walked through, across repeated headers.
        let h = headers(&["203.0.113.5", "10.0.0.2"]);
        assert_eq!(client_address(&proxies, proxy, &h), "203.0.113.5".parse::<IpAddr>().unwrap());
        // No header, or garbage: the proxy's own address.
        assert_eq!(client_address(&proxies, proxy, &HeaderMap::new()), proxy);
        assert_eq!(client_address(&proxies, proxy, &headers(&["unknown"])), proxy);
        // No trusted proxies configured: the socket's address, whatever the header says.
        assert_eq!(client_address(&[], proxy, &headers(&["203.0.113.5"])), proxy);
    }
}
