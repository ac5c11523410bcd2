//! Loopback only: every address the tool connects to or binds must be in
//! 127.0.0.0/8 (or `::1`). Anything else is refused before a socket opens.
//!
//! Connections are spread over several source addresses (127.0.0.2 and up)
//! so that more connections than one address's ephemeral ports can be held
//! to one server port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// Why an address was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error(
        "refusing target {0}: the load tool only talks to loopback addresses (127.0.0.0/8, ::1)"
    )]
    NotLoopback(String),
    #[error("cannot parse target address `{0}` (expected HOST:PORT, e.g. 127.0.0.1:4222)")]
    Unparsable(String),
    #[error("too many source addresses: {0} (at most 250, 127.0.0.2 to 127.0.0.251)")]
    TooManySources(usize),
}

/// Whether `ip` is a loopback address.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// Parses `HOST:PORT` and accepts it only if every address it names is a
/// loopback address (`localhost` is resolved, and must resolve to loopback).
pub fn parse_target(s: &str) -> Result<SocketAddr, AddrError> {
    let s = s
        .trim()
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return check(addr);
    }
    // Only `localhost` is looked up; any other name is refused unresolved.
    let (host, _) = s
        .rsplit_once(':')
        .ok_or_else(|| AddrError::Unparsable(s.clone()))?;
    if host != "localhost" {
        return Err(AddrError::NotLoopback(s));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|_| AddrError::Unparsable(s.clone()))?
        .collect();
    let v4 = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| AddrError::Unparsable(s.clone()))?;
    check(v4)
}

fn check(addr: SocketAddr) -> Result<SocketAddr, AddrError> {
    if is_loopback(addr.ip()) {
        Ok(addr)
    } else {
        Err(AddrError::NotLoopback(addr.to_string()))
    }
}

/// `n` source addresses for clients: 127.0.0.2, 127.0.0.3, ... When `n` is
/// 0 the kernel picks the source (127.0.0.1 for a loopback target).
pub fn source_addrs(n: usize) -> Result<Vec<IpAddr>, AddrError> {
    if n > 250 {
        return Err(AddrError::TooManySources(n));
    }
    Ok((0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)))
        .collect())
}

/// The source address of the `i`-th connection.
pub fn pick(srcs: &[IpAddr], i: usize) -> Option<IpAddr> {
    if srcs.is_empty() {
        None
    } else {
        Some(srcs[i % srcs.len()])
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released; a race with another
/// process taking it in between is possible but unlikely).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted() {
        assert_eq!(
            parse_target("127.0.0.1:4222"),
            Ok("127.0.0.1:4222".parse().expect("addr"))
        );
        assert!(parse_target("127.9.8.7:1").is_ok());
        assert!(parse_target("ws://127.0.0.1:80/").is_ok());
        assert!(parse_target("[::1]:80").is_ok());
        let l = parse_target("localhost:80").expect("localhost");
        assert!(l.ip().is_loopback());
    }

    #[test]
    fn other_targets_are_refused() {
        for t in [
            "10.0.0.1:80",
            "192.168.1.1:80",
            "8.8.8.8:53",
            "0.0.0.0:80",
            "[::]:80",
            "[2001:db8::1]:80",
            "example.com:80",
        ] {
            assert!(
                matches!(parse_target(t), Err(AddrError::NotLoopback(_))),
                "{t} must be refused"
            );
        }
        assert!(matches!(
            parse_target("nonsense"),
            Err(AddrError::Unparsable(_))
        ));
    }

    #[test]
    fn source_addresses_stay_in_loopback() {
        let s = source_addrs(250).expect("250 sources");
        assert!(s.iter().all(|ip| is_loopback(*ip)));
        assert_eq!(s[0], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(s[249], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 251)));
        assert!(source_addrs(251).is_err());
        assert_eq!(pick(&s, 251), Some(s[1]));
        assert_eq!(pick(&[], 3), None);
    }
}
