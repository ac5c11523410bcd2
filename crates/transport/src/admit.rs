//! Who may connect: `Origin` patterns (`websocket.allowed-origins`), the
//! client's address behind trusted proxies (`http.trusted-proxies`), and
//! the count of connections per client address
//! (`websocket.max-connections-per-ip`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use warp::http::HeaderMap;

/// A pattern of `websocket.allowed-origins`: `*` matches any run of
/// characters (none included), everything else itself, ASCII case aside
/// (`https://*.example.com`, `http://localhost:*`, `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern(String);

impl OriginPattern {
    /// `*`: every origin.
    pub fn any() -> OriginPattern {
        OriginPattern("*".to_owned())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `origin` (an `Origin` header's value) matches.
    pub fn matches(&self, origin: &str) -> bool {
        sente_lite_protocol::wildcard_match(
            &self.0.to_ascii_lowercase(),
            &origin.to_ascii_lowercase(),
        )
    }
}

impl From<&str> for OriginPattern {
    fn from(s: &str) -> OriginPattern {
        OriginPattern(s.trim().to_owned())
    }
}

/// Whether an upgrade with these headers may proceed: no `Origin` (not a
/// browser), or one that matches a pattern.
pub(crate) fn origin_allowed(
    patterns: &[OriginPattern],
    headers: &HeaderMap,
) -> Result<(), String> {
    let Some(origin) = headers.get(warp::http::header::ORIGIN) else {
        return Ok(());
    };
    let origin = String::from_utf8_lossy(origin.as_bytes());
    if patterns.iter().any(|p| p.matches(&origin)) {
        Ok(())
    } else {
        Err(origin.into_owned())
    }
}

/// An address or a network of `http.trusted-proxies`: `10.0.0.1`,
/// `10.0.0.0/8`, `::1`, `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why an `http.trusted-proxies` entry is not an address or network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or network (10.0.0.1, 10.0.0.0/8, ::1, fd00::/8)")]
pub struct IpNetError(String);

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<IpNet, IpNetError> {
        let bad = || IpNetError(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl IpNet {
    /// Whether `ip` is in it (an IPv4-mapped IPv6 address counts as its
    /// IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let whole = usize::from(bits / 8);
    let rest = bits % 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[whole] & mask) == (b[whole] & mask)
}

/// An IPv4-mapped IPv6 address as IPv4; others unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The client's address: the TCP peer's, unless the peer is a trusted
/// proxy; then the rightmost address of `X-Forwarded-For` that is not a
/// trusted proxy (the leftmost if all are), else `X-Real-IP`, else the
/// peer's. An entry that is not an address stops the walk at the hop
/// before it (what the proxies can vouch for).
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if !forwarded.is_empty() {
        let mut hop = peer;
        for entry in forwarded.iter().rev() {
            let Some(ip) = parse_forwarded(entry) else {
                return hop;
            };
            if !is_trusted(ip) {
                return ip;
            }
            hop = ip;
        }
        return hop;
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_forwarded)
        .unwrap_or(peer)
}

/// An address as proxies write it: `1.2.3.4`, `::1`, `[::1]`, or with a
/// port (`1.2.3.4:5678`, `[::1]:5678`).
fn parse_forwarded(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    let inner = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'))?;
    inner
        .parse::<Ipv6Addr>()
        .ok()
        .map(|v6| canonical(IpAddr::V6(v6)))
}

/// Open connections per client address (only addresses with at least one).
#[derive(Debug, Default)]
pub(crate) struct PerIp {
    counts: parking_lot::Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// Takes a place for `ip` if it has fewer than `max` (0: no limit).
    pub(crate) fn try_enter(&self, ip: IpAddr, max: usize) -> bool {
        let mut counts = self.counts.lock();
        let n = counts.entry(ip).or_insert(0);
        if max != 0 && *n >= max {
            if *n == 0 {
                counts.remove(&ip);
            }
            return false;
        }
        *n += 1;
        true
    }

    /// Gives `ip`'s place back.
    pub(crate) fn leave(&self, ip: IpAddr) {
        let mut counts = self.counts.lock();
        if let Some(n) = counts.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }

    /// How many connections `ip` has.
    #[cfg(test)]
    pub(crate) fn count(&self, ip: IpAddr) -> usize {
        self.counts.lock().get(&ip).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                warp::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn origin_patterns_match_runs_of_characters() {
        let p = OriginPattern::from("https://*.example.com");
        assert!(p.matches("https://app.example.com"));
        assert!(p.matches("https://a.b.example.com"));
        assert!(p.matches("HTTPS://App.Example.COM"));
        assert!(!p.matches("https://example.com"));
        assert!(!p.matches("https://evil.com/.example.com.evil"));
        assert!(!p.matches("http://app.example.com"));
        assert!(!p.matches("https://app.example.com.evil.com"));
        assert!(OriginPattern::any().matches("null"));
        assert!(OriginPattern::from("http://localhost:*").matches("http://localhost:8080"));
        assert!(!OriginPattern::from("http://localhost:*").matches("http://localhost.evil:1"));
        assert!(OriginPattern::from("a**b").matches("ab"));
    }

    #[test]
    fn an_upgrade_without_origin_passes_and_a_wrong_one_does_not() {
        let only = vec![OriginPattern::from("https://good.example")];
        assert!(origin_allowed(&only, &headers(&[])).is_ok());
        assert!(origin_allowed(&only, &headers(&[("origin", "https://good.example")])).is_ok());
        assert_eq!(
            origin_allowed(&only, &headers(&[("origin", "https://evil.example")])),
            Err("https://evil.example".to_owned())
        );
        assert!(origin_allowed(&[], &headers(&[("origin", "https://good.example")])).is_err());
    }

    #[test]
    fn networks_parse_and_contain() {
        let n: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        let odd: IpNet = "192.168.0.0/23".parse().unwrap();
        assert!(odd.contains("192.168.1.255".parse().unwrap()));
        assert!(!odd.contains("192.168.2.0".parse().unwrap()));
        assert!("0.0.0.0/0"
            .parse::<IpNet>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/x",
            "1.2.3",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_address_comes_from_headers_only_behind_a_trusted_proxy() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let forged = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "5.6.7.8")]);
        assert_eq!(client_ip(peer, &forged, &[]), peer);
        assert_eq!(client_ip(peer, &forged, &nets(&["192.168.0.0/16"])), peer);
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(peer, &forged, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // The rightmost untrusted entry: what the client wrote itself on
        // the left is not believed.
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.9")]);
        assert_eq!(
            client_ip(peer, &chain, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // Two header lines are one list.
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        assert_eq!(
            client_ip(peer, &split, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // Only trusted hops: the leftmost.
        let inner = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.9")]);
        assert_eq!(
            client_ip(peer, &inner, &trusted),
            "10.9.9.9".parse::<IpAddr>().unwrap()
        );
        // Garbage stops the walk at the hop before it.
        let junk = headers(&[("x-forwarded-for", "1.2.3.4, junk")]);
        assert_eq!(client_ip(peer, &junk, &trusted), peer);
        // X-Real-IP when there is no X-Forwarded-For; ports and brackets.
        let real = headers(&[("x-real-ip", "[2001:db8::1]:443")]);
        assert_eq!(
            client_ip(peer, &real, &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        let port = headers(&[("x-forwarded-for", "1.2.3.4:5555")]);
        assert_eq!(
            client_ip(peer, &port, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, &headers(&[]), &trusted), peer);
    }

    #[test]
    fn per_ip_counts_enter_and_leave() {
        let p = PerIp::default();
        let a: IpAddr = "1.1.1.1".parse().unwrap();
        assert!(p.try_enter(a, 2));
        assert!(p.try_enter(a, 2));
        assert!(!p.try_enter(a, 2));
        assert!(p.try_enter("2.2.2.2".parse().unwrap(), 2));
        p.leave(a);
        assert_eq!(p.count(a), 1);
        assert!(p.try_enter(a, 2));
        assert!(p.try_enter(a, 0), "0 is no limit");
        for _ in 0..3 {
            p.leave(a);
        }
        assert_eq!(p.count(a), 0);
        assert!(
            p.counts.lock().get(&a).is_none(),
            "no entry is kept for an address with none"
        );
    }
}
