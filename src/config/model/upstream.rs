//! Upstreams: endpoints, balancing, keepalive, health checks, ejection, TLS, schemas.

use super::ser::*;
use super::*;

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
