//! The typed runtime model the proxy runs from: every value parsed, defaults applied. It is
//! data only; runtime modules build their objects (TLS configs, pools, key sets) from it.
//!
//! It serializes (for the admin `/config` page) with secrets and key file paths redacted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::uri::{Authority, Scheme};
use ipnet::IpNet;
use serde::{Serialize, Serializer};

use crate::protocol::grpc::Code;

mod route;
mod ser;
mod upstream;

pub use route::*;
use ser::*;
pub use upstream::*;

/// The default limit on one message, in each direction.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 << 20;
/// The default CORS preflight cache lifetime.
pub const DEFAULT_CORS_MAX_AGE: Duration = Duration::from_secs(7200);
/// The default reflection refresh interval.
pub const DEFAULT_REFLECTION_REFRESH: Duration = Duration::from_secs(300);

/// The runtime configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The admin listener (health, metrics, config, reload, drain); none when absent.
    pub admin: Option<Admin>,
    /// One line per finished call on stderr.
    pub access_log: AccessLog,
    /// Trace context propagation and optional span export.
    pub tracing: Tracing,
    /// How the process stops.
    pub shutdown: Shutdown,
    /// Caller-side connection limits and timeouts.
    pub limits: Limits,
    /// Reload when the config file changes.
    pub watch: bool,
    /// Peers whose `X-Forwarded-For` is trusted.
    #[serde(serialize_with = "display_list")]
    pub trusted_proxies: Vec<IpNet>,
    /// Shared rate-limit buckets (`redis://…`); in-process when absent.
    #[serde(serialize_with = "redact_url")]
    pub rate_limit_store: Option<String>,
    /// What to do when the shared store cannot be reached.
    pub rate_limit_store_failure: FailMode,
    /// The WebSocket transport (improbable-eng `grpc-websockets`).
    pub websocket: WebSocket,
    /// Where to listen.
    pub listeners: Vec<Listener>,
    /// Cross-origin policy.
    pub cors: Cors,
    /// Backends.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Routes, in match order.
    pub routes: Vec<Route>,
    /// Static files served for plain GET requests (the demo page); never from YAML.
    #[serde(skip)]
    pub assets: Option<crate::assets::Assets>,
    /// The file this config was read from; none in quick mode and the demo (nothing to reload).
    pub source: Option<PathBuf>,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Admin {
    /// Address to bind (loopback by default in examples; never a public listener).
    pub address: SocketAddr,
}

/// Access log settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessLog {
    /// Whether to write a line per call.
    pub enabled: bool,
    /// Line format.
    pub format: LogFormat,
}

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `key=value` text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Tracing settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tracing {
    /// Whether calls that arrive without a `traceparent` start a trace (a `tracing` section is
    /// present); callers' traces are always continued.
    pub enabled: bool,
    /// OTLP/gRPC collector endpoint, e.g. `http://127.0.0.1:4317`; no export when absent.
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces sampled (callers' sampled flags are followed).
    pub sample_ratio: f64,
    /// `service.name` of exported spans.
    pub service_name: String,
}

/// Shutdown behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shutdown {
    /// How long listeners keep accepting after readiness fails.
    #[serde(serialize_with = "duration")]
    pub delay: Duration,
    /// How long in-flight calls may take to finish.
    #[serde(serialize_with = "duration")]
    pub drain_timeout: Duration,
}

/// Caller-side limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Open connections per listener.
    pub max_connections: usize,
    /// Time to receive a request's headers (and a TLS handshake).
    #[serde(serialize_with = "duration")]
    pub header_timeout: Duration,
    /// Longest gap while reading a request body that must arrive whole (HTTP/1.1 bodies,
    /// Connect unary).
    #[serde(serialize_with = "duration")]
    pub body_timeout: Duration,
    /// A connection with no call in flight and no traffic for this long is closed.
    #[serde(serialize_with = "duration")]
    pub idle_timeout: Duration,
    /// HTTP/2 streams per caller connection.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            max_concurrent_streams: 1000,
        }
    }
}

/// Open or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Let the call through.
    Open,
    /// Refuse the call.
    Closed,
}

/// The WebSocket transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WebSocket {
    /// Whether upgrades are accepted.
    pub enabled: bool,
    /// How often a PING goes to the caller while a socket is open.
    #[serde(serialize_with = "duration")]
    pub ping_interval: Duration,
    /// A socket with no message either way for this long is closed.
    #[serde(serialize_with = "duration")]
    pub idle_timeout: Duration,
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    /// Name in metrics and logs (default: the address as written).
    pub name: String,
    /// Address to bind.
    pub address: SocketAddr,
    /// TLS; cleartext when absent.
    pub tls: Option<ServerTls>,
}

/// TLS for a listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerTls {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    #[serde(serialize_with = "redacted")]
    pub key: PathBuf,
    /// CA certificates that sign client certificates (PEM).
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required (only with `client_ca`).
    pub client_auth: ClientAuth,
    /// Header carrying the verified client identity upstream (always stripped from callers).
    #[serde(serialize_with = "opt_header")]
    pub identity_header: Option<HeaderName>,
}

/// Client certificate policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// No client certificates asked for.
    None,
    /// Asked for, verified when sent.
    Optional,
    /// Required and verified.
    Required,
}

/// Which origins may call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowOrigins {
    /// Any origin (`*`).
    Any,
    /// Exactly these origins.
    List(Vec<String>),
}

/// Cross-origin policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cors {
    /// Allowed origins; an empty list allows no cross-origin call.
    pub allow_origins: AllowOrigins,
    /// Whether to send `Access-Control-Allow-Credentials: true`.
    pub allow_credentials: bool,
    /// Preflight cache lifetime.
    #[serde(serialize_with = "duration")]
    pub max_age: Duration,
    /// Extra response headers always exposed to scripts.
    #[serde(serialize_with = "headers")]
    pub expose_headers: Vec<HeaderName>,
    /// Request headers preflights allow; none means the protocol headers, every header the
    /// config itself reads, and whatever else the preflight asks for.
    #[serde(serialize_with = "opt_headers")]
    pub allow_headers: Option<Vec<HeaderName>>,
}

impl Default for Cors {
    fn default() -> Cors {
        Cors {
            allow_origins: AllowOrigins::List(Vec::new()),
            allow_credentials: false,
            max_age: DEFAULT_CORS_MAX_AGE,
            expose_headers: Vec::new(),
            allow_headers: None,
        }
    }
}
