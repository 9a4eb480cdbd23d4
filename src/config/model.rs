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

/// A backend: a name and the endpoints that serve it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Upstream {
    /// Name used by routes, metrics and error messages.
    pub name: String,
    /// Endpoints as written; DNS names become one endpoint per address.
    pub endpoints: Vec<Endpoint>,
    /// How often DNS names are resolved again.
    #[serde(serialize_with = "duration")]
    pub dns_refresh: Duration,
    /// How calls are spread over endpoints.
    pub balance: Balance,
    /// TCP + TLS + HTTP/2 handshake.
    #[serde(serialize_with = "duration")]
    pub connect_timeout: Duration,
    /// HTTP/2 PINGs.
    pub keepalive: Keepalive,
    /// Active health checks (grpc.health.v1); none when absent.
    pub health_check: Option<HealthCheck>,
    /// Passive health: ejecting endpoints that keep failing; none when disabled.
    pub outlier: Option<Outlier>,
    /// Cap on the duration of each call; a shorter client deadline wins.
    #[serde(serialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Limit on one message in either direction.
    pub max_message_size: usize,
    /// TLS towards `https` endpoints.
    pub tls: ClientTls,
    /// How JSON callers reach this upstream.
    pub json: JsonConfig,
    /// Serve `google.api.http` rules of its schema as REST.
    pub rest: bool,
    /// Path of the generated OpenAPI document; not served when absent.
    pub openapi: Option<String>,
    /// DNS servers to resolve endpoint names with instead of the system resolver (tests
    /// point this at a server of their own; not a YAML key).
    #[serde(skip)]
    pub dns_servers: Vec<std::net::SocketAddr>,
}

impl Upstream {
    /// An upstream with every setting at its default.
    pub fn new(name: impl Into<String>, endpoints: Vec<Endpoint>) -> Upstream {
        Upstream {
            name: name.into(),
            endpoints,
            dns_refresh: Duration::from_secs(10),
            balance: Balance::RoundRobin,
            connect_timeout: Duration::from_secs(5),
            keepalive: Keepalive::default(),
            health_check: None,
            outlier: Some(Outlier::default()),
            timeout: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            tls: ClientTls::default(),
            json: JsonConfig::default(),
            rest: true,
            openapi: None,
            dns_servers: Vec::new(),
        }
    }

    /// Whether its schema's `google.api.http` rules are served: `rest`, a schema source, and
    /// JSON that is transcoded (not passed through).
    pub fn serves_rest(&self) -> bool {
        self.rest
            && !self.json.passthrough
            && (self.json.descriptors.is_some() || self.json.reflection != Reflection::Off)
    }
}

/// Load balancing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// In turn.
    RoundRobin,
    /// The less busy of two random picks.
    LeastRequest,
}

/// HTTP/2 keepalive towards an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Keepalive {
    /// A PING after this long without traffic, while streams are open.
    #[serde(serialize_with = "duration")]
    pub interval: Duration,
    /// A PING unanswered this long closes the connection.
    #[serde(serialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Keepalive {
        // gRPC servers count PINGs more frequent than every 5 minutes (without data in
        // between) as abuse and answer GOAWAY (grpc-go and grpc-core's default policy).
        Keepalive {
            interval: Duration::from_secs(300),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Active health checking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    /// Between checks of one endpoint.
    #[serde(serialize_with = "duration")]
    pub interval: Duration,
    /// A check unanswered this long counts as NOT_SERVING.
    #[serde(serialize_with = "duration")]
    pub timeout: Duration,
    /// The `service` asked about (empty: the whole server).
    pub service: String,
}

/// Outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Outlier {
    /// Failures in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// First ejection; each further one doubles.
    #[serde(serialize_with = "duration")]
    pub base_ejection: Duration,
    /// Longest ejection.
    #[serde(serialize_with = "duration")]
    pub max_ejection: Duration,
}

impl Default for Outlier {
    fn default() -> Outlier {
        Outlier {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
        }
    }
}

/// TLS towards an upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClientTls {
    /// Extra roots (PEM); the web PKI roots are always trusted.
    pub ca: Option<PathBuf>,
    /// Client certificate chain for mTLS (PEM).
    pub cert: Option<PathBuf>,
    /// Client private key for mTLS (PEM).
    #[serde(serialize_with = "opt_redacted")]
    pub key: Option<PathBuf>,
    /// Name to verify instead of the endpoint's host.
    pub server_name: Option<String>,
}

/// Whether schemas come from server reflection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reflection {
    /// Used when the backend offers it; JSON passes through when it does not.
    Auto,
    /// Required: a backend without it fails JSON calls.
    On,
    /// Never asked.
    Off,
}

/// Where the schemas for JSON transcoding come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JsonConfig {
    /// A descriptor set file (`protoc --include_imports --descriptor_set_out`, `buf build -o`).
    pub descriptors: Option<PathBuf>,
    /// Server reflection.
    pub reflection: Reflection,
    /// How often reflection descriptors are fetched again.
    #[serde(serialize_with = "duration")]
    pub refresh: Duration,
    /// Send JSON unchanged as `application/grpc+json` (the backend has a JSON codec).
    pub passthrough: bool,
    /// Accept JSON fields the schema does not know instead of rejecting the call.
    pub ignore_unknown_fields: bool,
}

impl Default for JsonConfig {
    fn default() -> JsonConfig {
        JsonConfig {
            descriptors: None,
            reflection: Reflection::Auto,
            refresh: DEFAULT_REFLECTION_REFRESH,
            passthrough: false,
            ignore_unknown_fields: false,
        }
    }
}

/// One backend address as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` (h2c) or `https` (TLS with ALPN h2).
    pub scheme: Scheme,
    /// `host:port`; the host may be a DNS name.
    pub authority: Authority,
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}://{}", self.scheme, self.authority))
    }
}

/// How a route matches a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    /// `/pkg.Service/Method`, exactly.
    Method(String),
    /// `pkg.Service`: every method of it.
    Service(String),
    /// Any path starting with this.
    Prefix(String),
}

/// A route: which calls go to which upstream, with optional overrides and policies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// Path rule.
    pub kind: MatchKind,
    /// Host (`:authority`/`Host`) the call must carry, without port; any when absent.
    pub host: Option<String>,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Overrides the upstream's timeout.
    #[serde(serialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Overrides the upstream's limit.
    pub max_message_size: Option<usize>,
    /// A descriptor set for JSON transcoding of this route's calls (overrides the upstream's).
    pub descriptors: Option<PathBuf>,
    /// Who may call.
    pub auth: Option<Auth>,
    /// How often.
    pub rate_limit: Option<RateLimit>,
    /// Retries of unary calls on these codes.
    pub retry: Option<Retry>,
    /// Overrides the upstream's `rest`.
    pub rest: Option<bool>,
}

impl Route {
    /// A route with no overrides and no policies.
    pub fn new(kind: MatchKind, upstream: usize) -> Route {
        Route {
            kind,
            host: None,
            upstream,
            timeout: None,
            max_message_size: None,
            descriptors: None,
            auth: None,
            rate_limit: None,
            retry: None,
            rest: None,
        }
    }
}

/// Authentication of a route's calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    /// A signed JWT.
    Jwt(Jwt),
    /// A key whose SHA-256 is listed.
    ApiKey(ApiKey),
}

impl Auth {
    /// The request header the credential travels in (for CORS preflights), if a header.
    pub fn header(&self) -> Option<&HeaderName> {
        match self {
            Auth::Jwt(j) => match &j.token {
                TokenSource::Bearer => Some(&http::header::AUTHORIZATION),
                TokenSource::Header(h) => Some(h),
                TokenSource::Cookie(_) => None,
            },
            Auth::ApiKey(k) => Some(&k.header),
        }
    }
}

/// Where the keys that verify JWTs come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JwksSource {
    /// A JWKS file, read at load and reload.
    File(PathBuf),
    /// An `https` URL, fetched and cached.
    Url(String),
}

/// Where the token is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// `Authorization: Bearer …`.
    Bearer,
    /// This header, the whole value (a `Bearer ` prefix is accepted).
    Header(#[serde(serialize_with = "header")] HeaderName),
    /// This cookie.
    Cookie(String),
}

/// JWT verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwt {
    /// The keys.
    pub jwks: JwksSource,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Accepted `aud` values (one must match); any when empty.
    pub audiences: Vec<String>,
    /// Where the token is.
    pub token: TokenSource,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(serialize_with = "duration")]
    pub leeway: Duration,
    /// Pass the token's header upstream.
    pub forward_token: bool,
    /// Claims passed upstream as headers (stripped from callers first).
    pub claims_to_headers: Vec<ClaimHeader>,
    /// How long fetched keys are used before they are fetched again.
    #[serde(serialize_with = "duration")]
    pub jwks_cache: Duration,
    /// Bound on one JWKS fetch.
    #[serde(serialize_with = "duration")]
    pub jwks_timeout: Duration,
    /// Extra roots for an `https` JWKS URL (PEM); the web PKI roots are always trusted.
    pub jwks_ca: Option<PathBuf>,
}

/// A claim passed upstream in a header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClaimHeader {
    /// Claim name (top level of the payload).
    pub claim: String,
    /// Header name.
    #[serde(serialize_with = "header")]
    pub header: HeaderName,
}

/// API keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// The header carrying the key.
    #[serde(serialize_with = "header")]
    pub header: HeaderName,
    /// SHA-256 of accepted keys.
    #[serde(serialize_with = "redacted_hashes")]
    pub hashes: Vec<[u8; 32]>,
    /// A file of more hashes (hex, one per line; `#` comments), read at load and reload.
    pub keys_file: Option<PathBuf>,
}

/// A token bucket per key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimit {
    /// Refill rate.
    pub per_second: f64,
    /// Capacity (buckets start full).
    pub burst: u32,
    /// What a bucket belongs to.
    pub key: RateKey,
}

/// The key of a rate-limit bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKey {
    /// The client IP (see `trusted_proxies`).
    ClientIp,
    /// The API key of the route's `api_key` auth (or its header).
    ApiKey,
    /// A request header's value.
    Header(#[serde(serialize_with = "header")] HeaderName),
    /// A claim of the verified JWT.
    Claim(String),
}

/// Retries of unary calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// Codes that are retried.
    #[serde(serialize_with = "codes")]
    pub on: Vec<Code>,
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one, with jitter.
    #[serde(serialize_with = "duration")]
    pub backoff: Duration,
}

fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&super::units::format_duration(*d))
}

fn opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => duration(d, s),
        None => s.serialize_none(),
    }
}

fn redacted<S: Serializer, T>(_: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<redacted>")
}

fn opt_redacted<S: Serializer, T>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

fn redacted_hashes<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("<{} redacted>", v.len()))
}

fn redact_url<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        // Credentials live between the scheme and '@'.
        Some(url) => match (url.find("://"), url.rfind('@')) {
            (Some(i), Some(at)) if at > i => {
                s.collect_str(&format_args!("{}<redacted>{}", &url[..i + 3], &url[at..]))
            }
            _ => s.serialize_str(url),
        },
        None => s.serialize_none(),
    }
}

fn header<S: Serializer>(h: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(h.as_str())
}

fn opt_header<S: Serializer>(h: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        Some(h) => s.serialize_str(h.as_str()),
        None => s.serialize_none(),
    }
}

fn headers<S: Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(HeaderName::as_str))
}

fn opt_headers<S: Serializer>(v: &Option<Vec<HeaderName>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => headers(v, s),
        None => s.serialize_none(),
    }
}

fn display_list<S: Serializer, T: std::fmt::Display>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(ToString::to_string))
}

fn codes<S: Serializer>(v: &[Code], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|c| c.connect_name()))
}
