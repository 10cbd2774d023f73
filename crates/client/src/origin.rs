//! What a server URL says about the server: its origin (`scheme://host[:port]`, as the server
//! signs it in its authentication challenge) and whether plain `http://` to it stays on this
//! machine.

use std::net::IpAddr;

use crate::ClientError;

/// Longest server URL considered (a URL is typed by the user, but an origin comes from the
/// server).
const MAX_URL_LEN: usize = 2048;

/// A URL's scheme, host and port.
struct Authority {
    /// `http` or `https`, lower case.
    scheme: String,
    /// The host, lower case; an IPv6 address keeps its brackets.
    host: String,
    /// The port, unless it is the scheme's default (80, 443) or absent.
    port: Option<u16>,
}

fn parse(url: &str) -> Option<Authority> {
    if url.len() > MAX_URL_LEN {
        return None;
    }
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    // Userinfo is not part of an origin (and a server URL has none).
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, after) = authority.split_at(end + 1);
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    Some(Authority { scheme, host: host.to_ascii_lowercase(), port: port.filter(|p| *p != default) })
}

/// `scheme://host[:port]` of `url`, normalised (lower case, default port dropped, no path),
/// or `None` if it is not an `http(s)://` URL.
pub(crate) fn normalized(url: &str) -> Option<String> {
    let a = parse(url)?;
    Some(match a.port {
        Some(p) => format!("{}://{}:{p}", a.scheme, a.host),
        None => format!("{}://{}", a.scheme, a.host),
    })
}

/// Whether two URLs have the same origin (what a server signs against what we dialled).
pub(crate) fn same(dialled: &str, signed: &str) -> bool {
    matches!((normalized(dialled), normalized(signed)), (Some(a), Some(b)) if a == b)
}

/// The host of a plain `http://` URL that is not on this machine (not a loopback address or
/// `localhost`); `None` for `https://` and for loopback.
pub(crate) fn remote_plain_http_host(url: &str) -> Option<String> {
    let a = parse(url)?;
    if a.scheme != "http" {
        return None;
    }
    let bare = a.host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match bare.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().is_loopback(),
        Err(_) => bare == "localhost",
    };
    (!loopback).then_some(a.host)
}

/// Checks a server URL typed by the user before anything is made or sent (issue 8, point 7):
/// `http://` or `https://`, a host and an optional port, nothing else. The server's API is at
/// the root of its address, so a path, query or fragment would only reach something else
/// (and make a store that can never register); credentials have no place in it.
pub(crate) fn check_server_url(url: &str) -> Result<(), ClientError> {
    let bad = |reason: String| Err(ClientError::BadServerUrl(reason));
    let shape = "give scheme://host[:port], e.g. https://chat.example or http://127.0.0.1:7878";
    let Some((scheme, rest)) = url.split_once("://") else {
        return bad(format!("{url:?} is not a URL: {shape}"));
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return bad(format!("{scheme}:// is not supported: the server URL starts with http:// or https://"));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return bad(format!("a server URL holds no user name or password (user@host): {shape}"));
    }
    let what = match tail.chars().next() {
        None => None,
        Some('/') => Some("a path"),
        Some('?') => Some("a query"),
        Some(_) => Some("a fragment"),
    };
    if authority.chars().any(|c| c.is_whitespace() || c.is_control()) || parse(url).is_none() {
        return bad(format!("{url:?} is not a valid server address: {shape}"));
    }
    if let Some(what) = what {
        return bad(format!(
            "{url:?} has {what}: the server's API is at the root of its address; give {scheme}://{authority}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_url_is_a_scheme_a_host_and_a_port() {
        for good in
            ["http://127.0.0.1:7878", "https://chat.example", "HTTPS://Chat.Example:8443", "http://[::1]:1"]
        {
            assert!(check_server_url(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("ftp://x", "ftp:// is not supported"),
            ("127.0.0.1:7878", "is not a URL"),
            ("http://host/path", "has a path"),
            ("http://host?x=1", "has a query"),
            ("http://host#top", "has a fragment"),
            ("http://u:pw@host", "no user name or password"),
            ("http://", "not a valid server address"),
            ("http://host:99999", "not a valid server address"),
            ("http://ho st", "not a valid server address"),
        ] {
            let e = check_server_url(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Usage, "{bad}");
            assert!(e.to_string().contains(says), "{bad}: {e}");
            assert!(!e.to_string().contains("pw"), "credentials are not echoed: {e}");
        }
    }

    #[test]
    fn origins_compare_normalised() {
        assert!(same("http://127.0.0.1:7878", "http://127.0.0.1:7878"));
        assert!(same("https://Chat.Example/", "https://chat.example:443"));
        assert!(same("https://chat.example/tacit", "https://chat.example"));
        assert!(same("http://[::1]:80", "http://[::1]"));
        assert!(!same("http://127.0.0.1:7878", "http://0.0.0.0:7878"));
        assert!(!same("https://a.example", "http://a.example"));
        assert!(!same("https://a.example", "https://a.example.evil"));
        assert!(!same("https://a.example", "https://a.example:8443"));
        assert!(!same("https://a.example", "garbage"));
        assert!(!same("https://a.example:99999", "https://a.example:99999"));
    }

    #[test]
    fn plain_http_is_remote_unless_loopback() {
        for local in [
            "http://127.0.0.1:1",
            "http://127.8.9.1",
            "http://[::1]:5",
            "http://LOCALHOST:7",
            "https://x.example",
        ] {
            assert_eq!(remote_plain_http_host(local), None, "{local}");
        }
        for (remote, host) in [
            ("http://192.0.2.2:7878", "192.0.2.2"),
            ("http://chat.example", "chat.example"),
            ("http://[2001:db8::1]:80/x", "[2001:db8::1]"),
            ("http://localhost.evil.example", "localhost.evil.example"),
            ("http://127.0.0.1@evil.example", "evil.example"),
        ] {
            assert_eq!(remote_plain_http_host(remote).as_deref(), Some(host), "{remote}");
        }
    }
}
