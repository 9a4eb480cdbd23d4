//! Matching a call to a route: exact method, service or path prefix, optionally a host.
//! First match wins.

use std::time::Duration;

use crate::config::{Config, MatchKind};

/// What a matched route says about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    /// Index of the route.
    pub(crate) route: usize,
    /// Index of the upstream.
    pub(crate) upstream: usize,
    /// Cap on the call duration.
    pub(crate) timeout: Option<Duration>,
    /// Limit on one message.
    pub(crate) max_message_size: usize,
    /// Longest gap in a request body that must arrive whole.
    pub(crate) body_timeout: Duration,
    /// The route's retry policy for unary calls.
    pub(crate) retry: Option<crate::upstream::RetrySpec>,
}

#[derive(Debug)]
struct Entry {
    kind: MatchKind,
    host: Option<String>,
    target: Target,
}

/// The routes of a config, in order.
#[derive(Debug)]
pub(crate) struct RouteTable {
    entries: Vec<Entry>,
}

impl RouteTable {
    pub(crate) fn new(config: &Config) -> RouteTable {
        let entries = config
            .routes
            .iter()
            .enumerate()
            .map(|(route, r)| {
                let up = &config.upstreams[r.upstream];
                Entry {
                    kind: r.kind.clone(),
                    host: r.host.clone(),
                    target: Target {
                        route,
                        upstream: r.upstream,
                        timeout: r.timeout.or(up.timeout),
                        max_message_size: r.max_message_size.unwrap_or(up.max_message_size),
                        body_timeout: config.limits.body_timeout,
                        retry: r.retry.as_ref().map(crate::upstream::RetrySpec::new),
                    },
                }
            })
            .collect();
        RouteTable { entries }
    }

    /// The first route that matches `path` and `host` (port ignored, case-insensitive).
    pub(crate) fn resolve(&self, path: &str, host: Option<&str>) -> Option<Target> {
        let host = host.map(strip_port);
        self.entries
            .iter()
            .find(|e| {
                let host_ok = match (&e.host, host) {
                    (None, _) => true,
                    (Some(want), Some(have)) => want.eq_ignore_ascii_case(have),
                    (Some(_), None) => false,
                };
                host_ok && path_matches(&e.kind, path)
            })
            .map(|e| e.target)
    }
}

fn path_matches(kind: &MatchKind, path: &str) -> bool {
    match kind {
        MatchKind::Method(m) => m == path,
        MatchKind::Service(s) => path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(s.as_str()))
            .and_then(|p| p.strip_prefix('/'))
            .is_some_and(|method| !method.is_empty() && !method.contains('/')),
        MatchKind::Prefix(p) => path.starts_with(p.as_str()),
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let yaml = r#"
listeners: [{ address: 127.0.0.1:0 }]
upstreams:
  - { name: a, endpoints: ["http://127.0.0.1:1"], timeout: 5s }
  - { name: b, endpoints: ["http://127.0.0.1:2"], max_message_size: 1KiB }
  - { name: c, endpoints: ["http://127.0.0.1:3"] }
routes:
  - { match: { method: /pkg.Svc/Special }, upstream: b }
  - { match: { service: pkg.Svc, host: api.example.com }, upstream: c }
  - { match: { service: pkg.Svc }, upstream: a, timeout: 1s }
  - { match: { prefix: /other. }, upstream: b }
"#;
        match Config::from_yaml(yaml, "t.yaml") {
            Ok(c) => RouteTable::new(&c),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn first_match_wins() {
        let t = table();
        let r = |p, h| t.resolve(p, h).map(|t| t.upstream);
        assert_eq!(r("/pkg.Svc/Special", None), Some(1));
        assert_eq!(r("/pkg.Svc/Other", None), Some(0));
        assert_eq!(r("/pkg.Svc/Other", Some("API.example.com:8443")), Some(2));
        assert_eq!(r("/pkg.Svc/Other", Some("web.example.com")), Some(0));
        assert_eq!(r("/pkg.SvcX/Other", None), None);
        assert_eq!(r("/pkg.Svc/", None), None);
        assert_eq!(r("/other.Thing/M", None), Some(1));
        assert_eq!(r("/nothing/M", None), None);
    }

    #[test]
    fn limits_come_from_route_then_upstream() {
        let t = table();
        let a = t.resolve("/pkg.Svc/X", None);
        assert_eq!(a.map(|t| t.timeout), Some(Some(Duration::from_secs(1))));
        let b = t.resolve("/pkg.Svc/Special", None);
        assert_eq!(b.map(|t| t.max_message_size), Some(1024));
        assert_eq!(b.map(|t| t.timeout), Some(None));
    }

    #[test]
    fn ports_are_ignored_in_hosts() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
