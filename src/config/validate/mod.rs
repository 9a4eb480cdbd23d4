//! From the file model to the runtime model: defaults applied, cross-references and value
//! rules checked. Every error names the key path and, found by its text, the line and column.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use ipnet::IpNet;

mod route;
mod upstream;

use super::file;
use super::model::*;
use super::ConfigError;
use crate::protocol::grpc::Code;

pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a str,
}

type Result<T> = std::result::Result<T, ConfigError>;

impl Validator<'_> {
    /// An error at the first line (from the top) that contains `needle`.
    pub(super) fn error(&self, key: String, needle: Option<&str>, message: String) -> ConfigError {
        // Values checked after parsing have no position from the parser: find it by text.
        let found = needle.and_then(|n| {
            self.text
                .lines()
                .enumerate()
                .find_map(|(i, l)| l.find(n).map(|c| (i + 1, c + 1)))
        });
        ConfigError {
            origin: self.origin.to_owned(),
            line: found.map(|f| f.0),
            column: found.map(|f| f.1),
            key,
            message,
        }
    }

    fn header(&self, key: String, name: &str) -> Result<HeaderName> {
        HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| self.error(key, Some(name), format!("invalid header name {name:?}")))
    }

    pub(super) fn validate(&self, f: file::File) -> Result<Config> {
        if f.listeners.is_empty() {
            return Err(self.error(
                "listeners".into(),
                Some("listeners"),
                "at least one listener is required".into(),
            ));
        }
        let mut listeners: Vec<Listener> = Vec::new();
        for (i, l) in f.listeners.into_iter().enumerate() {
            let listener = self.listener(i, l)?;
            let fixed_port = listener.address.port() != 0;
            if fixed_port && listeners.iter().any(|o| o.address == listener.address) {
                return Err(self.error(
                    format!("listeners[{i}].address"),
                    Some(&listener.address.to_string()),
                    format!("duplicate listener address {}", listener.address),
                ));
            }
            listeners.push(listener);
        }
        let admin = f.admin.map(|a| Admin {
            address: a.address.0,
        });
        if let Some(a) = &admin {
            // Port 0 (any free port) never collides.
            if a.address.port() != 0 && listeners.iter().any(|l| l.address == a.address) {
                return Err(self.error(
                    "admin.address".into(),
                    Some("admin"),
                    "the admin address must not be one of the listeners".into(),
                ));
            }
        }
        let cors = match f.cors {
            None => Cors::default(),
            Some(c) => self.cors(c)?,
        };
        let mut upstreams: Vec<Arc<Upstream>> = Vec::new();
        for (i, u) in f.upstreams.into_iter().enumerate() {
            let u = self.upstream(i, u)?;
            if upstreams.iter().any(|o| o.name == u.name) {
                return Err(self.error(
                    format!("upstreams[{i}].name"),
                    Some(&u.name),
                    format!("duplicate upstream name {:?}", u.name),
                ));
            }
            upstreams.push(Arc::new(u));
        }
        if upstreams.is_empty() {
            return Err(self.error(
                "upstreams".into(),
                Some("upstreams"),
                "at least one upstream is required".into(),
            ));
        }
        let mut routes = Vec::new();
        for (i, r) in f.routes.into_iter().enumerate() {
            routes.push(self.route(i, r, &upstreams)?);
        }
        if routes.is_empty() {
            return Err(self.error(
                "routes".into(),
                Some("routes"),
                "at least one route is required".into(),
            ));
        }
        let mut trusted_proxies = Vec::new();
        for (i, t) in f.trusted_proxies.iter().enumerate() {
            trusted_proxies.push(parse_cidr(t).ok_or_else(|| {
                self.error(
                    format!("trusted_proxies[{i}]"),
                    Some(t),
                    format!("invalid CIDR {t:?}: expected an address or a network like 10.0.0.0/8"),
                )
            })?);
        }
        if let Some(url) = &f.rate_limit_store {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(self.error(
                    "rate_limit_store".into(),
                    Some("rate_limit_store"),
                    format!("invalid store {url:?}: expected redis://host:port[/db]"),
                ));
            }
        }
        let access_log = match f.access_log {
            None => AccessLog {
                enabled: false,
                format: LogFormat::Text,
            },
            Some(a) => AccessLog {
                enabled: a.enabled,
                format: match a.format {
                    Some(file::LogFormat::Json) => LogFormat::Json,
                    Some(file::LogFormat::Text) | None => LogFormat::Text,
                },
            },
        };
        Ok(Config {
            admin,
            access_log,
            tracing: self.tracing(f.tracing)?,
            shutdown: Shutdown {
                delay: f
                    .shutdown
                    .as_ref()
                    .and_then(|s| s.delay)
                    .map_or(Duration::ZERO, |d| d.0),
                drain_timeout: f
                    .shutdown
                    .as_ref()
                    .and_then(|s| s.drain_timeout)
                    .map_or(Duration::from_secs(30), |d| d.0),
            },
            limits: self.limits(f.limits)?,
            watch: f.watch,
            trusted_proxies,
            rate_limit_store: f.rate_limit_store,
            rate_limit_store_failure: match f.rate_limit_store_failure {
                Some(file::FailMode::Closed) => FailMode::Closed,
                Some(file::FailMode::Open) | None => FailMode::Open,
            },
            websocket: {
                let w = f.websocket;
                WebSocket {
                    enabled: w.as_ref().is_none_or(|w| w.enabled),
                    ping_interval: w
                        .as_ref()
                        .and_then(|w| w.ping_interval)
                        .map_or(Duration::from_secs(30), |d| d.0),
                    idle_timeout: w
                        .as_ref()
                        .and_then(|w| w.idle_timeout)
                        .map_or(Duration::from_secs(300), |d| d.0),
                }
            },
            listeners,
            cors,
            upstreams,
            routes,
            assets: None,
            source: None,
        })
    }

    fn listener(&self, i: usize, l: file::Listener) -> Result<Listener> {
        let key = |k: &str| format!("listeners[{i}].tls.{k}");
        let tls = match l.tls {
            None => None,
            Some(t) => {
                let client_auth =
                    match (&t.client_ca, t.client_auth) {
                        (None, None) => ClientAuth::None,
                        (None, Some(_)) => return Err(self.error(
                            key("client_auth"),
                            Some("client_auth"),
                            "client_auth needs client_ca, the CA that signs client certificates"
                                .into(),
                        )),
                        (Some(_), Some(file::ClientAuth::Optional)) => ClientAuth::Optional,
                        (Some(_), Some(file::ClientAuth::Required) | None) => ClientAuth::Required,
                    };
                let identity_header = match &t.identity_header {
                    Some(h) => Some(self.header(key("identity_header"), h)?),
                    None => None,
                };
                if identity_header.is_some() && client_auth == ClientAuth::None {
                    return Err(self.error(
                        key("identity_header"),
                        Some("identity_header"),
                        "identity_header needs client certificates (client_ca)".into(),
                    ));
                }
                Some(ServerTls {
                    cert: t.cert,
                    key: t.key,
                    client_ca: t.client_ca,
                    client_auth,
                    identity_header,
                })
            }
        };
        Ok(Listener {
            name: l.name.unwrap_or_else(|| l.address.0.to_string()),
            address: l.address.0,
            tls,
        })
    }

    fn cors(&self, c: file::Cors) -> Result<Cors> {
        let allow_origins = super::origins(c.allow_origins)
            .map_err(|m| self.error("cors.allow_origins".into(), Some("allow_origins"), m))?;
        if c.allow_credentials && allow_origins == AllowOrigins::Any {
            return Err(self.error(
                "cors.allow_credentials".into(),
                Some("allow_credentials"),
                "allow_credentials: true cannot be combined with allow_origins: [\"*\"] (any site could call with the user's cookies); list the origins".into(),
            ));
        }
        let mut expose_headers = Vec::new();
        for (i, h) in c.expose_headers.iter().enumerate() {
            expose_headers.push(self.header(format!("cors.expose_headers[{i}]"), h)?);
        }
        let allow_headers = match c.allow_headers {
            None => None,
            Some(list) => {
                let mut names = Vec::new();
                for (i, h) in list.iter().enumerate() {
                    names.push(self.header(format!("cors.allow_headers[{i}]"), h)?);
                }
                Some(names)
            }
        };
        Ok(Cors {
            allow_origins,
            allow_credentials: c.allow_credentials,
            max_age: c.max_age.map_or(DEFAULT_CORS_MAX_AGE, |d| d.0),
            expose_headers,
            allow_headers,
        })
    }

    fn tracing(&self, t: Option<file::Tracing>) -> Result<Tracing> {
        let Some(t) = t else {
            return Ok(Tracing {
                enabled: false,
                otlp_endpoint: None,
                sample_ratio: 1.0,
                service_name: "switchboard".into(),
            });
        };
        let ratio = t.sample_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&ratio) {
            return Err(self.error(
                "tracing.sample_ratio".into(),
                Some("sample_ratio"),
                format!("invalid ratio {ratio}: expected a number from 0 to 1"),
            ));
        }
        let endpoint = t.otlp.map(|o| o.endpoint);
        if let Some(e) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://"))
                || e.parse::<http::Uri>().is_err()
            {
                return Err(self.error(
                    "tracing.otlp.endpoint".into(),
                    Some("endpoint"),
                    format!("invalid endpoint {e:?}: expected a URL like http://127.0.0.1:4317"),
                ));
            }
        }
        Ok(Tracing {
            enabled: true,
            otlp_endpoint: endpoint,
            sample_ratio: ratio,
            service_name: t.service_name.unwrap_or_else(|| "switchboard".into()),
        })
    }

    fn limits(&self, l: Option<file::Limits>) -> Result<Limits> {
        let d = Limits::default();
        let Some(l) = l else {
            return Ok(d);
        };
        let positive = |key: &str, v: Option<file::Dur>, default: Duration| {
            let v = v.map_or(default, |d| d.0);
            if v.is_zero() {
                return Err(self.error(
                    format!("limits.{key}"),
                    Some(key),
                    "must be more than 0".into(),
                ));
            }
            Ok(v)
        };
        let limits = Limits {
            max_connections: l.max_connections.unwrap_or(d.max_connections),
            header_timeout: positive("header_timeout", l.header_timeout, d.header_timeout)?,
            body_timeout: positive("body_timeout", l.body_timeout, d.body_timeout)?,
            idle_timeout: positive("idle_timeout", l.idle_timeout, d.idle_timeout)?,
            max_concurrent_streams: l.max_concurrent_streams.unwrap_or(d.max_concurrent_streams),
        };
        if limits.max_connections == 0 {
            return Err(self.error(
                "limits.max_connections".into(),
                Some("max_connections"),
                "must be at least 1".into(),
            ));
        }
        if limits.max_concurrent_streams == 0 {
            return Err(self.error(
                "limits.max_concurrent_streams".into(),
                Some("max_concurrent_streams"),
                "must be at least 1".into(),
            ));
        }
        Ok(limits)
    }
}

/// A status code by its name: `unavailable`, `UNAVAILABLE`, `canceled`/`cancelled`.
pub fn code_by_name(name: &str) -> Option<Code> {
    let n = name.trim().to_ascii_lowercase();
    let n = if n == "cancelled" {
        "canceled".to_owned()
    } else {
        n
    };
    (0..=16).map(Code::from_i32).find(|c| c.connect_name() == n)
}

/// `10.0.0.0/8`, `::1/128`, or a bare address.
fn parse_cidr(text: &str) -> Option<IpNet> {
    let t = text.trim();
    t.parse::<IpNet>()
        .ok()
        .or_else(|| t.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// 64 hex digits.
fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    if t.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(t.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Parses a file of SHA-256 hashes (hex, one per line; blank lines and `#` comments skipped).
pub fn parse_key_hashes(text: &str) -> std::result::Result<Vec<[u8; 32]>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        out.push(
            parse_sha256(l).ok_or_else(|| {
                format!("line {}: expected a SHA-256 hash (64 hex digits)", n + 1)
            })?,
        );
    }
    Ok(out)
}
