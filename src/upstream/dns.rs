//! Resolving endpoint names to addresses. By default with the system's resolver
//! (`getaddrinfo` on a blocking thread, as `tokio::net::lookup_host` does), so `/etc/hosts`,
//! `/etc/resolv.conf` and cluster DNS all work as for any other program, and nothing is
//! cached here: every refresh asks again. An upstream may name DNS servers to ask instead
//! (over UDP and TCP, no cache).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

/// One lookup may take this long; the last good answer stays in use meanwhile.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where names are resolved.
pub(crate) enum Resolver {
    System,
    Servers(Box<TokioResolver>),
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resolver::System => f.write_str("System"),
            Resolver::Servers(_) => f.write_str("Servers"),
        }
    }
}

impl Resolver {
    /// The system resolver, or these DNS servers when there are any.
    pub(crate) fn new(servers: &[SocketAddr]) -> Result<Resolver, String> {
        if servers.is_empty() {
            return Ok(Resolver::System);
        }
        let name_servers = servers
            .iter()
            .map(|s| {
                let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                for c in &mut ns.connections {
                    c.port = s.port();
                }
                ns
            })
            .collect();
        let mut opts = ResolverOpts::default();
        // Every refresh asks the servers: a cached answer would hide a change.
        opts.cache_size = 0;
        opts.timeout = LOOKUP_TIMEOUT / 2;
        opts.attempts = 1;
        let resolver = TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), name_servers),
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()
        .map_err(|e| format!("DNS resolver: {e}"))?;
        Ok(Resolver::Servers(Box::new(resolver)))
    }

    /// The addresses of `host`, with `port`, sorted and without repeats. An error when there
    /// is none.
    pub(crate) async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let lookup = async {
            match self {
                Resolver::System => tokio::net::lookup_host((host, port))
                    .await
                    .map(|addrs| addrs.collect::<Vec<_>>())
                    .map_err(|e| e.to_string()),
                Resolver::Servers(r) => r
                    .lookup_ip(host)
                    .await
                    .map(|ips| {
                        ips.iter()
                            .map(|ip: IpAddr| SocketAddr::new(ip, port))
                            .collect()
                    })
                    .map_err(|e| e.to_string()),
            }
        };
        let mut addrs = tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
            .await
            .map_err(|_| format!("no answer within {LOOKUP_TIMEOUT:?}"))??;
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err("no address".to_owned());
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn system_resolver_reads_the_hosts_file() {
        // `localhost` is in every /etc/hosts.
        let addrs = Resolver::System.resolve("localhost", 50051).await.unwrap();
        assert!(addrs
            .iter()
            .all(|a| a.port() == 50051 && a.ip().is_loopback()));
        assert!(Resolver::System
            .resolve("no-such-host.invalid", 1)
            .await
            .is_err());
    }
}
