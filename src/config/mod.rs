//! Configuration: the YAML file model (`file.rs`), human units (`units.rs`), and the typed
//! runtime model the proxy runs from. Every error names the file, the line when known and
//! the key.

mod file;
pub mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::uri::{Authority, Scheme};
use http::Uri;

/// The default limit on one message, in each direction.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 << 20;

/// The default CORS preflight cache lifetime.
pub const DEFAULT_CORS_MAX_AGE: Duration = Duration::from_secs(7200);

/// A configuration problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}{}: {key}{}{message}", location_suffix(*.line, *.column), if .key.is_empty() { "" } else { ": " })]
pub struct ConfigError {
    /// The file (or `command line`).
    pub origin: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The key path, like `routes[1].upstream`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn location_suffix(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// The runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listeners: Vec<Listener>,
    /// Cross-origin policy.
    pub cors: Cors,
    /// Backends.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Routes, in match order.
    pub routes: Vec<Route>,
    /// Static files served for plain GET requests (the demo page); never from YAML.
    pub assets: Option<crate::assets::Assets>,
}

/// One listening socket.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Address to bind.
    pub address: SocketAddr,
    /// TLS certificate and key (PEM); cleartext when absent.
    pub tls: Option<ServerTls>,
}

/// PEM files for a TLS listener.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Which origins may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowOrigins {
    /// Any origin (`*`).
    Any,
    /// Exactly these origins.
    List(Vec<String>),
}

/// Cross-origin policy.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Allowed origins; an empty list allows no cross-origin call.
    pub allow_origins: AllowOrigins,
    /// Whether to send `Access-Control-Allow-Credentials: true`.
    pub allow_credentials: bool,
    /// Preflight cache lifetime.
    pub max_age: Duration,
    /// Extra response headers always exposed to scripts.
    pub expose_headers: Vec<HeaderName>,
}

impl Default for Cors {
    fn default() -> Cors {
        Cors {
            allow_origins: AllowOrigins::List(Vec::new()),
            allow_credentials: false,
            max_age: DEFAULT_CORS_MAX_AGE,
            expose_headers: Vec::new(),
        }
    }
}

/// A backend: a name and the endpoints that serve it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Name used by routes and in error messages.
    pub name: String,
    /// Endpoints, tried in turn.
    pub endpoints: Vec<Endpoint>,
    /// Cap on the duration of each call; a shorter client deadline wins.
    pub timeout: Option<Duration>,
    /// Limit on one message in either direction.
    pub max_message_size: usize,
    /// Extra roots for `https` endpoints (PEM); the web PKI roots are always trusted.
    pub ca: Option<PathBuf>,
    /// TLS server name to verify instead of the endpoint's host.
    pub server_name: Option<String>,
    /// How JSON callers reach this upstream.
    pub json: JsonConfig,
}

/// Where the schemas for JSON transcoding come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonConfig {
    /// A descriptor set file (`protoc --include_imports --descriptor_set_out`, `buf build -o`).
    pub descriptors: Option<PathBuf>,
    /// Fetch descriptors from the upstream's server reflection.
    pub reflection: bool,
    /// How often reflection descriptors are fetched again.
    pub refresh: Duration,
    /// Send JSON unchanged as `application/grpc+json` (the backend has a JSON codec).
    pub passthrough: bool,
    /// Accept JSON fields the schema does not know instead of rejecting the call.
    pub ignore_unknown_fields: bool,
}

/// The default reflection refresh interval.
pub const DEFAULT_REFLECTION_REFRESH: Duration = Duration::from_secs(300);

impl Default for JsonConfig {
    fn default() -> JsonConfig {
        JsonConfig {
            descriptors: None,
            reflection: false,
            refresh: DEFAULT_REFLECTION_REFRESH,
            passthrough: false,
            ignore_unknown_fields: false,
        }
    }
}

/// One backend address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` (h2c) or `https` (TLS with ALPN h2).
    pub scheme: Scheme,
    /// `host:port`.
    pub authority: Authority,
}

impl Endpoint {
    /// Parses `http://host:port` or `https://host[:port]`.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let uri: Uri = text.parse().map_err(|_| {
            format!("invalid endpoint {text:?}: expected a URL like http://10.0.0.7:50051")
        })?;
        let scheme = uri.scheme().cloned().ok_or_else(|| {
            format!("invalid endpoint {text:?}: add http:// (h2c) or https:// (TLS)")
        })?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(format!(
                "invalid endpoint {text:?}: the scheme must be http or https"
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("invalid endpoint {text:?}: missing host"))?;
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(format!(
                "invalid endpoint {text:?}: a path is not supported"
            ));
        }
        let authority = if authority.port().is_some() {
            authority
        } else {
            let port = if scheme == Scheme::HTTPS { 443 } else { 80 };
            format!("{}:{port}", authority.host())
                .parse()
                .map_err(|_| format!("invalid endpoint {text:?}"))?
        };
        Ok(Endpoint { scheme, authority })
    }
}

/// How a route matches a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchKind {
    /// `/pkg.Service/Method`, exactly.
    Method(String),
    /// `pkg.Service`: every method of it.
    Service(String),
    /// Any path starting with this.
    Prefix(String),
}

/// A route: which calls go to which upstream, with optional overrides.
#[derive(Debug, Clone)]
pub struct Route {
    /// Path rule.
    pub kind: MatchKind,
    /// Host (`:authority`/`Host`) the call must carry, without port; any when absent.
    pub host: Option<String>,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Overrides the upstream's timeout.
    pub timeout: Option<Duration>,
    /// Overrides the upstream's limit.
    pub max_message_size: Option<usize>,
    /// A descriptor set for JSON transcoding of this route's calls (overrides the upstream's).
    pub descriptors: Option<PathBuf>,
}

impl Config {
    /// Loads a YAML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: None,
            column: None,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        })?;
        Config::from_yaml(&text, &origin)
    }

    /// Parses YAML text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let parsed = file::parse(text).map_err(|(key, loc, message)| ConfigError {
            origin: origin.to_owned(),
            line: loc.map(|l| l.0),
            column: loc.map(|l| l.1),
            key: if key == "." { String::new() } else { key },
            message,
        })?;
        Validator { text, origin }.validate(parsed)
    }

    /// Quick mode: one listener, every call to one upstream.
    pub fn quick(
        listen: SocketAddr,
        upstream: &str,
        allow_origins: Vec<String>,
    ) -> Result<Config, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            origin: "command line".to_owned(),
            line: None,
            column: None,
            key: key.to_owned(),
            message,
        };
        let endpoint = Endpoint::parse(upstream).map_err(|m| err("--upstream", m))?;
        let cors = Cors {
            allow_origins: origins(allow_origins).map_err(|m| err("--allow-origin", m))?,
            ..Cors::default()
        };
        Ok(Config {
            listeners: vec![Listener {
                address: listen,
                tls: None,
            }],
            cors,
            upstreams: vec![Arc::new(Upstream {
                name: "default".to_owned(),
                endpoints: vec![endpoint],
                timeout: None,
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                ca: None,
                server_name: None,
                json: JsonConfig::default(),
            })],
            routes: vec![Route {
                kind: MatchKind::Prefix("/".to_owned()),
                host: None,
                upstream: 0,
                timeout: None,
                max_message_size: None,
                descriptors: None,
            }],
            assets: None,
        })
    }

    /// Checks the files the config names (TLS material), as `switchboard check` does.
    pub fn check_files(&self) -> Result<(), String> {
        for l in &self.listeners {
            if let Some(tls) = &l.tls {
                crate::server::tls::load_server_config(tls)
                    .map_err(|e| format!("listener {}: {e}", l.address))?;
            }
        }
        for u in &self.upstreams {
            crate::upstream::tls::client_config(u.ca.as_deref())
                .map_err(|e| format!("upstream {:?}: {e}", u.name))?;
            if let Some(path) = &u.json.descriptors {
                crate::upstream::schema::load(path)
                    .map_err(|e| format!("upstream {:?}: json.descriptors: {e}", u.name))?;
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            if let Some(path) = &r.descriptors {
                crate::upstream::schema::load(path)
                    .map_err(|e| format!("routes[{i}].descriptors: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Reads a descriptor set file and checks that it parses.
pub fn load_descriptors(path: &Path) -> Result<Vec<u8>, String> {
    use prost::Message as _;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    prost_types::FileDescriptorSet::decode(bytes.as_slice())
        .map_err(|e| format!("{} is not a descriptor set: {e}", path.display()))?;
    Ok(bytes)
}

fn origins(list: Vec<String>) -> Result<AllowOrigins, String> {
    if list.iter().any(|o| o == "*") {
        return Ok(AllowOrigins::Any);
    }
    for o in &list {
        let ok = (o.starts_with("http://") || o.starts_with("https://"))
            && !o.ends_with('/')
            && o.parse::<Uri>().is_ok();
        if !ok {
            return Err(format!(
                "invalid origin {o:?}: expected scheme://host[:port] without a path, or \"*\""
            ));
        }
    }
    Ok(AllowOrigins::List(list))
}

struct Validator<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Validator<'_> {
    fn error(&self, key: String, needle: Option<&str>, message: String) -> ConfigError {
        // Values checked after parsing have no position from the parser: find the line by text.
        let line =
            needle.and_then(|n| self.text.lines().position(|l| l.contains(n)).map(|i| i + 1));
        ConfigError {
            origin: self.origin.to_owned(),
            line,
            column: None,
            key,
            message,
        }
    }

    fn validate(&self, f: file::File) -> Result<Config, ConfigError> {
        if f.listeners.is_empty() {
            return Err(self.error(
                "listeners".into(),
                Some("listeners"),
                "at least one listener is required".into(),
            ));
        }
        let listeners = f
            .listeners
            .into_iter()
            .map(|l| Listener {
                address: l.address.0,
                tls: l.tls.map(|t| ServerTls {
                    cert: t.cert,
                    key: t.key,
                }),
            })
            .collect();

        let cors = match f.cors {
            None => Cors::default(),
            Some(c) => {
                let allow_origins = origins(c.allow_origins).map_err(|m| {
                    self.error("cors.allow_origins".into(), Some("allow_origins"), m)
                })?;
                let mut expose_headers = Vec::new();
                for (i, h) in c.expose_headers.iter().enumerate() {
                    let name = HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                        self.error(
                            format!("cors.expose_headers[{i}]"),
                            Some(h),
                            format!("invalid header name {h:?}"),
                        )
                    })?;
                    expose_headers.push(name);
                }
                Cors {
                    allow_origins,
                    allow_credentials: c.allow_credentials,
                    max_age: c.max_age.map_or(DEFAULT_CORS_MAX_AGE, |d| d.0),
                    expose_headers,
                }
            }
        };

        let mut upstreams: Vec<Arc<Upstream>> = Vec::new();
        for (i, u) in f.upstreams.into_iter().enumerate() {
            let key = |k: &str| format!("upstreams[{i}].{k}");
            if u.name.is_empty() {
                return Err(self.error(key("name"), None, "must not be empty".into()));
            }
            if upstreams.iter().any(|o| o.name == u.name) {
                return Err(self.error(
                    key("name"),
                    Some(&u.name),
                    format!("duplicate upstream name {:?}", u.name),
                ));
            }
            if u.endpoints.is_empty() {
                return Err(self.error(
                    key("endpoints"),
                    Some(&u.name),
                    "at least one endpoint is required".into(),
                ));
            }
            let mut endpoints = Vec::new();
            for (j, e) in u.endpoints.iter().enumerate() {
                endpoints.push(Endpoint::parse(e).map_err(|m| {
                    self.error(format!("upstreams[{i}].endpoints[{j}]"), Some(e), m)
                })?);
            }
            let size = u.max_message_size.map_or(DEFAULT_MAX_MESSAGE_SIZE, |s| s.0);
            let tls = u.tls.unwrap_or(file::ClientTls {
                ca: None,
                server_name: None,
            });
            let json = match u.json {
                None => JsonConfig::default(),
                Some(j) => {
                    if j.passthrough && (j.descriptors.is_some() || j.reflection) {
                        return Err(self.error(
                            key("json"),
                            Some("passthrough"),
                            "passthrough sends JSON unchanged, so it cannot be combined with descriptors or reflection".into(),
                        ));
                    }
                    JsonConfig {
                        descriptors: j.descriptors,
                        reflection: j.reflection,
                        refresh: j.refresh.map_or(DEFAULT_REFLECTION_REFRESH, |d| d.0),
                        passthrough: j.passthrough,
                        ignore_unknown_fields: j.ignore_unknown_fields,
                    }
                }
            };
            upstreams.push(Arc::new(Upstream {
                name: u.name,
                endpoints,
                timeout: u.timeout.map(|d| d.0),
                max_message_size: size,
                ca: tls.ca,
                server_name: tls.server_name,
                json,
            }));
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
            let m = r.matcher;
            let kinds = [m.method.is_some(), m.service.is_some(), m.prefix.is_some()];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(self.error(
                    format!("routes[{i}].match"),
                    None,
                    "set exactly one of method, service or prefix".into(),
                ));
            }
            let kind = if let Some(method) = m.method {
                let parts: Vec<&str> = method.split('/').collect();
                if parts.len() != 3
                    || !parts[0].is_empty()
                    || parts[1].is_empty()
                    || parts[2].is_empty()
                {
                    return Err(self.error(
                        format!("routes[{i}].match.method"),
                        Some(&method),
                        format!("invalid method {method:?}: expected /package.Service/Method"),
                    ));
                }
                MatchKind::Method(method)
            } else if let Some(service) = m.service {
                if service.is_empty() || service.contains('/') {
                    return Err(self.error(
                        format!("routes[{i}].match.service"),
                        Some(&service),
                        format!(
                            "invalid service {service:?}: expected package.Service without slashes"
                        ),
                    ));
                }
                MatchKind::Service(service)
            } else {
                let prefix = m.prefix.unwrap_or_default();
                if !prefix.starts_with('/') {
                    return Err(self.error(
                        format!("routes[{i}].match.prefix"),
                        Some(&prefix),
                        format!("invalid prefix {prefix:?}: must start with /"),
                    ));
                }
                MatchKind::Prefix(prefix)
            };
            let upstream = upstreams
                .iter()
                .position(|u| u.name == r.upstream)
                .ok_or_else(|| {
                    let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                    self.error(
                        format!("routes[{i}].upstream"),
                        Some(&format!("upstream: {}", r.upstream)),
                        format!(
                            "unknown upstream {:?} (known: {})",
                            r.upstream,
                            known.join(", ")
                        ),
                    )
                })?;
            routes.push(Route {
                kind,
                host: m.host.map(|h| h.to_ascii_lowercase()),
                upstream,
                timeout: r.timeout.map(|d| d.0),
                max_message_size: r.max_message_size.map(|s| s.0),
                descriptors: r.descriptors,
            });
        }
        if routes.is_empty() {
            return Err(self.error(
                "routes".into(),
                Some("routes"),
                "at least one route is required".into(),
            ));
        }
        Ok(Config {
            listeners,
            cors,
            upstreams,
            routes,
            assets: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listeners:
  - address: 127.0.0.1:8080
cors:
  allow_origins: ["https://app.example.com"]
  max_age: 10m
upstreams:
  - name: greeter
    endpoints: ["http://10.0.0.7:50051"]
    timeout: 30s
    max_message_size: 4MiB
routes:
  - match: { service: acme.greeter.v1.GreeterService }
    upstream: greeter
  - match: { prefix: / }
    upstream: greeter
    timeout: 250ms
"#;

    fn err(text: &str) -> ConfigError {
        match Config::from_yaml(text, "test.yaml") {
            Ok(_) => ConfigError {
                origin: String::new(),
                line: None,
                column: None,
                key: String::new(),
                message: "parsed".into(),
            },
            Err(e) => e,
        }
    }

    #[test]
    fn parses_the_design_example() {
        let c = Config::from_yaml(GOOD, "test.yaml");
        let c = c.as_ref().map_err(|e| e.to_string());
        let Ok(c) = c else {
            panic!("{c:?}");
        };
        assert_eq!(c.listeners[0].address.port(), 8080);
        assert_eq!(c.cors.max_age, Duration::from_secs(600));
        assert_eq!(c.upstreams[0].timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[1].timeout, Some(Duration::from_millis(250)));
        assert_eq!(
            c.upstreams[0].endpoints[0].authority.as_str(),
            "10.0.0.7:50051"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err(&GOOD.replace("    timeout: 30s", "    timeout: 30s\n    retries: 3"));
        let s = e.to_string();
        assert!(s.starts_with("test.yaml:"), "{s}");
        assert_eq!(e.line, Some(11), "{s}");
        assert!(s.contains("retries"), "{s}");
        assert!(s.contains("upstreams[0]"), "{s}");
    }

    #[test]
    fn bad_duration_size_and_address_are_located() {
        let e = err(&GOOD.replace("timeout: 30s", "timeout: soon"));
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(10), "upstreams[0].timeout"),
            "{e}"
        );
        assert!(e.message.contains("invalid duration"), "{e}");
        let e = err(&GOOD.replace("4MiB", "4 bananas"));
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(11), "upstreams[0].max_message_size"),
            "{e}"
        );
        let e = err(&GOOD.replace("127.0.0.1:8080", "localhost"));
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(3), "listeners[0].address"),
            "{e}"
        );
        assert!(e.message.contains("invalid address"), "{e}");
    }

    #[test]
    fn unknown_upstream_is_located() {
        let e = err(&GOOD.replace(
            "    upstream: greeter\n    timeout",
            "    upstream: nope\n    timeout",
        ));
        assert_eq!(e.key, "routes[1].upstream", "{e}");
        assert_eq!(e.line, Some(16), "{e}");
        assert!(e.message.contains("unknown upstream \"nope\""), "{e}");
        assert!(
            e.to_string()
                .starts_with("test.yaml:16: routes[1].upstream: "),
            "{e}"
        );
    }

    #[test]
    fn other_mistakes() {
        let e = err(&GOOD.replace("http://10.0.0.7:50051", "10.0.0.7:50051"));
        assert_eq!(e.key, "upstreams[0].endpoints[0]", "{e}");
        let e = err(&GOOD.replace("{ prefix: / }", "{ prefix: /, service: a.B }"));
        assert_eq!(e.key, "routes[1].match", "{e}");
        let e = err(&GOOD.replace("https://app.example.com", "app.example.com"));
        assert_eq!(e.key, "cors.allow_origins", "{e}");
        let e = err("listeners: [");
        assert!(e.to_string().starts_with("test.yaml:"), "{e}");
    }

    #[test]
    fn quick_mode() {
        let c = Config::quick(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            "http://127.0.0.1:50051",
            vec!["*".into()],
        );
        assert!(matches!(
            c.map(|c| c.cors.allow_origins),
            Ok(AllowOrigins::Any)
        ));
        assert!(Config::quick(SocketAddr::from(([127, 0, 0, 1], 0)), "ftp://x", vec![]).is_err());
        let e = Config::quick(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            "http://x:1",
            vec!["nope".into()],
        );
        assert!(e.is_err());
    }
}

#[cfg(test)]
mod shipped_configs {
    use super::*;

    /// Every config under config/ must load.
    #[test]
    fn every_example_config_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                if let Err(e) = Config::load(&path) {
                    panic!("{e}");
                }
                seen += 1;
            }
        }
        assert!(seen >= 2, "expected example configs in {}", dir.display());
    }
}
