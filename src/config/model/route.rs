//! Routes: what they match and the policies (auth, rate limit, retry) they apply.

use super::ser::*;
use super::*;

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
