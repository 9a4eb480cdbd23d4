//! Who the client is: `X-Forwarded-For` / `X-Forwarded-Proto` for the upstream, and the client
//! IP used by rate limits and logs, following `trusted_proxies`. Also the headers only the
//! proxy may write (the mTLS identity, JWT claims): removed from every caller's request first,
//! so a caller cannot forge them on any listener or route.
//!
//! The rule: from a peer that is not a trusted proxy, incoming `X-Forwarded-For`, `X-Real-IP`
//! and `Forwarded` are dropped and `X-Forwarded-For` becomes the peer's IP; from a trusted
//! peer the peer's IP is appended. The client IP is the first address, from the right of
//! `X-Forwarded-For` + peer, that is not a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;
use ipnet::IpNet;

use crate::config::{Auth, Config};
use crate::observe::ConnInfo;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The `trusted_proxies` rule and the headers reserved for the proxy.
#[derive(Debug, Default)]
pub(crate) struct Forwarded {
    trusted: Vec<IpNet>,
    /// Every listener's `identity_header` and every route's claim headers.
    reserved: Vec<HeaderName>,
}

impl Forwarded {
    pub(crate) fn new(config: &Config) -> Forwarded {
        let mut reserved: Vec<HeaderName> = Vec::new();
        let identity = config
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref()?.identity_header.clone());
        let claims = config.routes.iter().flat_map(|r| match &r.auth {
            Some(Auth::Jwt(j)) => j
                .claims_to_headers
                .iter()
                .map(|c| c.header.clone())
                .collect(),
            _ => Vec::new(),
        });
        for name in identity.chain(claims) {
            if !reserved.contains(&name) {
                reserved.push(name);
            }
        }
        Forwarded {
            trusted: config.trusted_proxies.clone(),
            reserved,
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Rewrites the forwarding headers of a request from `conn`, puts the connection's
    /// verified identity in its header, and returns the client IP.
    pub(crate) fn apply(&self, headers: &mut HeaderMap, conn: &ConnInfo) -> IpAddr {
        for name in &self.reserved {
            headers.remove(name);
        }
        if let (Some(name), Some(identity)) = (&conn.identity_header, &conn.client_identity) {
            headers.insert(name.clone(), identity.clone());
        }
        let peer = conn.peer.ip().to_canonical();
        let proto = HeaderValue::from_static(if conn.tls { "https" } else { "http" });
        if !self.is_trusted(peer) {
            headers.remove(X_REAL_IP);
            headers.remove(header::FORWARDED);
            headers.insert(X_FORWARDED_FOR, conn.peer_ip.clone());
            headers.insert(X_FORWARDED_PROTO, proto);
            return peer;
        }
        // A trusted proxy: its list is kept and the peer appended; the client is the first
        // untrusted hop from the right. An entry that is not an address ends the walk: what
        // lies left of it cannot be checked.
        let mut client = peer;
        let mut joined = Vec::<u8>::new();
        for value in headers.get_all(&X_FORWARDED_FOR) {
            if !joined.is_empty() {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(value.as_bytes());
        }
        let entries: Vec<&[u8]> = joined.split(|b| *b == b',').collect();
        for entry in entries.iter().rev() {
            let Some(ip) = parse_hop(entry) else {
                break;
            };
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        if joined.is_empty() {
            headers.insert(X_FORWARDED_FOR, conn.peer_ip.clone());
        } else {
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(conn.peer_ip.as_bytes());
            match HeaderValue::from_bytes(&joined) {
                Ok(v) => {
                    headers.insert(X_FORWARDED_FOR, v);
                }
                Err(_) => {
                    headers.insert(X_FORWARDED_FOR, conn.peer_ip.clone());
                }
            }
        }
        // The scheme the trusted proxy saw, when it says; else ours.
        let keep_proto = headers
            .get(&X_FORWARDED_PROTO)
            .is_some_and(|p| p == "https" || p == "http");
        if !keep_proto {
            headers.insert(X_FORWARDED_PROTO, proto);
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an IP, optionally with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;

    fn conn(peer: &str, tls: bool) -> ConnInfo {
        ConnInfo::new(peer.parse().unwrap(), Arc::from("l"), tls, None, None)
    }

    fn forwarded(trusted: &[&str]) -> Forwarded {
        Forwarded {
            trusted: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            reserved: vec![HeaderName::from_static("x-client-cert")],
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn untrusted_peer_replaces_everything() {
        let f = forwarded(&["10.0.0.0/8"]);
        let mut h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-real-ip", "1.1.1.1"),
            ("forwarded", "for=1.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-client-cert", "Subject=\"CN=admin\""),
        ]);
        let ip = f.apply(&mut h, &conn("203.0.113.7:4444", false));
        assert_eq!(ip, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(h["x-forwarded-for"], "203.0.113.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(!h.contains_key("x-real-ip"));
        assert!(!h.contains_key("forwarded"));
        assert!(!h.contains_key("x-client-cert"));
    }

    #[test]
    fn trusted_peer_appends_and_the_client_is_the_first_untrusted_from_the_right() {
        let f = forwarded(&["10.0.0.0/8", "192.168.0.0/16"]);
        let mut h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.1"),
            ("x-forwarded-for", "192.168.1.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let ip = f.apply(&mut h, &conn("10.1.1.1:80", false));
        assert_eq!(ip, "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            h["x-forwarded-for"],
            "6.6.6.6, 198.51.100.1, 192.168.1.1, 10.1.1.1"
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        // Every hop trusted: the leftmost is the client.
        let mut h = headers(&[("x-forwarded-for", "10.9.9.9")]);
        assert_eq!(
            f.apply(&mut h, &conn("10.1.1.1:80", true)),
            "10.9.9.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        // Garbage stops the walk at the last good hop.
        let mut h = headers(&[("x-forwarded-for", "1.2.3.4, junk, 10.2.2.2")]);
        assert_eq!(
            f.apply(&mut h, &conn("10.1.1.1:80", false)),
            "10.2.2.2".parse::<IpAddr>().unwrap()
        );
        // No list from a trusted peer: the peer itself.
        let mut h = HeaderMap::new();
        assert_eq!(
            f.apply(&mut h, &conn("10.1.1.1:80", false)),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(h["x-forwarded-for"], "10.1.1.1");
    }

    #[test]
    fn hops_with_ports_and_mapped_addresses() {
        assert_eq!(parse_hop(b" 1.2.3.4:80"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(
            parse_hop(b"[2001:db8::1]:443"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse_hop(b"[2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse_hop(b"::ffff:1.2.3.4"),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(parse_hop(b"unknown"), None);
        let f = forwarded(&[]);
        let mut h = HeaderMap::new();
        let ip = f.apply(&mut h, &conn("[::ffff:127.0.0.1]:5", false));
        assert_eq!(ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    }

    #[test]
    fn identity_is_set_from_the_connection_only() {
        let f = forwarded(&[]);
        let c = ConnInfo::new(
            "127.0.0.1:5".parse().unwrap(),
            Arc::from("l"),
            true,
            Some(HeaderValue::from_static("Subject=\"CN=alice\"")),
            Some(HeaderName::from_static("x-client-cert")),
        );
        let mut h = headers(&[("x-client-cert", "Subject=\"CN=admin\"")]);
        f.apply(&mut h, &c);
        assert_eq!(h.get_all("x-client-cert").iter().count(), 1);
        assert_eq!(h["x-client-cert"], "Subject=\"CN=alice\"");
    }
}
