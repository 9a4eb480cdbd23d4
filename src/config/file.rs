//! The YAML file as written by users. The only file that knows serde_yaml; values are checked
//! while parsing where that is possible, so errors carry a line and column.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::units;

/// Any serializable value as YAML (the admin `/config` page).
pub(super) fn to_yaml<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_yaml::to_string(value).map_err(|e| e.to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    #[serde(default)]
    pub(super) admin: Option<Admin>,
    #[serde(default)]
    pub(super) access_log: Option<AccessLog>,
    #[serde(default)]
    pub(super) tracing: Option<Tracing>,
    #[serde(default)]
    pub(super) shutdown: Option<Shutdown>,
    #[serde(default)]
    pub(super) limits: Option<Limits>,
    /// Reload when the file changes.
    #[serde(default)]
    pub(super) watch: bool,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
    #[serde(default)]
    pub(super) rate_limit_store: Option<String>,
    #[serde(default)]
    pub(super) rate_limit_store_failure: Option<FailMode>,
    #[serde(default)]
    pub(super) websocket: Option<WebSocket>,
    pub(super) listeners: Vec<Listener>,
    #[serde(default)]
    pub(super) cors: Option<Cors>,
    pub(super) upstreams: Vec<Upstream>,
    pub(super) routes: Vec<Route>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Admin {
    pub(super) address: Addr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccessLog {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    #[serde(default)]
    pub(super) format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Tracing {
    #[serde(default)]
    pub(super) otlp: Option<Otlp>,
    #[serde(default)]
    pub(super) sample_ratio: Option<f64>,
    #[serde(default)]
    pub(super) service_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Otlp {
    pub(super) endpoint: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Shutdown {
    #[serde(default)]
    pub(super) delay: Option<Dur>,
    #[serde(default)]
    pub(super) drain_timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Limits {
    #[serde(default)]
    pub(super) max_connections: Option<usize>,
    #[serde(default)]
    pub(super) header_timeout: Option<Dur>,
    #[serde(default)]
    pub(super) body_timeout: Option<Dur>,
    #[serde(default)]
    pub(super) idle_timeout: Option<Dur>,
    #[serde(default)]
    pub(super) max_concurrent_streams: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FailMode {
    Open,
    Closed,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebSocket {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    #[serde(default)]
    pub(super) ping_interval: Option<Dur>,
    #[serde(default)]
    pub(super) idle_timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Listener {
    pub(super) address: Addr,
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) tls: Option<ServerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    #[serde(default)]
    pub(super) client_ca: Option<PathBuf>,
    #[serde(default)]
    pub(super) client_auth: Option<ClientAuth>,
    #[serde(default)]
    pub(super) identity_header: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum ClientAuth {
    Required,
    Optional,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Cors {
    #[serde(default)]
    pub(super) allow_origins: Vec<String>,
    #[serde(default)]
    pub(super) allow_credentials: bool,
    #[serde(default)]
    pub(super) max_age: Option<Dur>,
    #[serde(default)]
    pub(super) expose_headers: Vec<String>,
    #[serde(default)]
    pub(super) allow_headers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Upstream {
    pub(super) name: String,
    pub(super) endpoints: Vec<String>,
    #[serde(default)]
    pub(super) dns_refresh: Option<Dur>,
    #[serde(default)]
    pub(super) balance: Option<Balance>,
    #[serde(default)]
    pub(super) connect_timeout: Option<Dur>,
    #[serde(default)]
    pub(super) keepalive: Option<Keepalive>,
    #[serde(default)]
    pub(super) health_check: Option<HealthCheck>,
    #[serde(default)]
    pub(super) outlier: Option<Outlier>,
    #[serde(default)]
    pub(super) timeout: Option<Dur>,
    #[serde(default)]
    pub(super) max_message_size: Option<Size>,
    #[serde(default)]
    pub(super) tls: Option<ClientTls>,
    #[serde(default)]
    pub(super) json: Option<Json>,
    #[serde(default)]
    pub(super) rest: Option<bool>,
    #[serde(default)]
    pub(super) openapi: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Balance {
    RoundRobin,
    LeastRequest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Keepalive {
    #[serde(default)]
    pub(super) interval: Option<Dur>,
    #[serde(default)]
    pub(super) timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthCheck {
    #[serde(default)]
    pub(super) interval: Option<Dur>,
    #[serde(default)]
    pub(super) timeout: Option<Dur>,
    #[serde(default)]
    pub(super) service: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Outlier {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    #[serde(default)]
    pub(super) consecutive_failures: Option<u32>,
    #[serde(default)]
    pub(super) base_ejection: Option<Dur>,
    #[serde(default)]
    pub(super) max_ejection: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Json {
    #[serde(default)]
    pub(super) descriptors: Option<PathBuf>,
    #[serde(default)]
    pub(super) reflection: Option<Reflection>,
    #[serde(default)]
    pub(super) refresh: Option<Dur>,
    #[serde(default)]
    pub(super) passthrough: bool,
    #[serde(default)]
    pub(super) ignore_unknown_fields: bool,
}

/// `auto`, `true` or `false`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reflection {
    Auto,
    On,
    Off,
}

impl<'de> Deserialize<'de> for Reflection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            B(bool),
            S(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::B(true)) => Ok(Reflection::On),
            Ok(Raw::B(false)) => Ok(Reflection::Off),
            Ok(Raw::S(s)) if s == "auto" => Ok(Reflection::Auto),
            Ok(Raw::S(s)) if s == "true" => Ok(Reflection::On),
            Ok(Raw::S(s)) if s == "false" => Ok(Reflection::Off),
            _ => Err(de::Error::custom("expected auto, true or false")),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClientTls {
    #[serde(default)]
    pub(super) ca: Option<PathBuf>,
    #[serde(default)]
    pub(super) cert: Option<PathBuf>,
    #[serde(default)]
    pub(super) key: Option<PathBuf>,
    #[serde(default)]
    pub(super) server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Route {
    #[serde(rename = "match")]
    pub(super) matcher: Match,
    pub(super) upstream: String,
    #[serde(default)]
    pub(super) timeout: Option<Dur>,
    #[serde(default)]
    pub(super) max_message_size: Option<Size>,
    #[serde(default)]
    pub(super) descriptors: Option<PathBuf>,
    #[serde(default)]
    pub(super) auth: Option<Auth>,
    #[serde(default)]
    pub(super) rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub(super) retry: Option<Retry>,
    #[serde(default)]
    pub(super) rest: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Match {
    #[serde(default)]
    pub(super) method: Option<String>,
    #[serde(default)]
    pub(super) service: Option<String>,
    #[serde(default)]
    pub(super) prefix: Option<String>,
    #[serde(default)]
    pub(super) host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Auth {
    #[serde(default)]
    pub(super) jwt: Option<Jwt>,
    #[serde(default)]
    pub(super) api_key: Option<ApiKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Jwt {
    /// A JWKS file, or an `https://` URL.
    pub(super) jwks: String,
    #[serde(default)]
    pub(super) issuer: Option<String>,
    #[serde(default)]
    pub(super) audience: Option<OneOrMany>,
    #[serde(default)]
    pub(super) header: Option<String>,
    #[serde(default)]
    pub(super) cookie: Option<String>,
    #[serde(default)]
    pub(super) leeway: Option<Dur>,
    #[serde(default)]
    pub(super) forward_token: bool,
    /// Claim name → upstream header name.
    #[serde(default)]
    pub(super) claims_to_headers: Vec<ClaimHeader>,
    #[serde(default)]
    pub(super) jwks_cache: Option<Dur>,
    #[serde(default)]
    pub(super) jwks_timeout: Option<Dur>,
    /// Extra roots for an `https` JWKS URL (PEM).
    #[serde(default)]
    pub(super) jwks_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClaimHeader {
    pub(super) claim: String,
    pub(super) header: String,
}

/// One string or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApiKey {
    #[serde(default)]
    pub(super) header: Option<String>,
    /// SHA-256 hashes of the accepted keys, hex.
    #[serde(default)]
    pub(super) keys: Vec<String>,
    /// A file of SHA-256 hashes, one per line.
    #[serde(default)]
    pub(super) keys_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimit {
    pub(super) per_second: f64,
    #[serde(default)]
    pub(super) burst: Option<u32>,
    #[serde(default)]
    pub(super) key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Retry {
    #[serde(default)]
    pub(super) on: Vec<String>,
    #[serde(default)]
    pub(super) attempts: Option<u32>,
    #[serde(default)]
    pub(super) backoff: Option<Dur>,
}

fn yes() -> bool {
    true
}

/// A duration parsed from `30s`-style text.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dur(pub(super) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = scalar_text(d)?;
        units::parse_duration(&text)
            .map(Dur)
            .map_err(de::Error::custom)
    }
}

/// A size parsed from `4MiB`-style text or a number of bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Size(pub(super) usize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = scalar_text(d)?;
        units::parse_size(&text)
            .map(Size)
            .map_err(de::Error::custom)
    }
}

/// A socket address.
#[derive(Debug, Clone, Copy)]
pub(super) struct Addr(pub(super) SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = scalar_text(d)?;
        text.parse().map(Addr).map_err(|_| {
            de::Error::custom(format!(
                "invalid address {text:?}: expected IP:PORT, like 0.0.0.0:8080 or [::1]:8080"
            ))
        })
    }
}

/// Reads a scalar (string or number) as text.
fn scalar_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        U(u64),
    }
    match Scalar::deserialize(d) {
        Ok(Scalar::S(s)) => Ok(s),
        Ok(Scalar::U(n)) => Ok(n.to_string()),
        Err(_) => Err(de::Error::custom("expected a string or a number")),
    }
}

/// A parse problem: key path, line and column, message.
pub(super) type ParseError = (String, Option<(usize, usize)>, String);

/// Parses the file, returning the key path and position of the first problem.
pub(super) fn parse(text: &str) -> Result<File, ParseError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, File>(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut location = inner.location().map(|l| (l.line(), l.column()));
        let mut message = inner.to_string();
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        // serde_yaml may prefix the message with the part of the path it knows.
        if let Some((prefix, rest)) = message.split_once(": ") {
            if path.starts_with(prefix) {
                message = rest.to_owned();
            }
        }
        // Errors raised while reading a value point at the enclosing mapping; move to the
        // line of the key itself.
        if let (Some((line, _)), Some(key)) = (location, path.rsplit('.').next()) {
            let key = key.split('[').next().unwrap_or(key);
            let found = text
                .lines()
                .enumerate()
                .skip(line.saturating_sub(1))
                .find_map(|(i, l)| l.find(&format!("{key}:")).map(|col| (i + 1, col + 1)));
            if found.is_some() {
                location = found;
            }
        }
        (path, location, message)
    })
}
