//! Configuration: the YAML file model (`file.rs`), its validation into the typed runtime
//! model (`validate.rs`, `model.rs`), and human units (`units.rs`). Every error names the
//! file, the line and column when known, and the key. This module is data only: runtime
//! objects are built from it by the modules that own them.

mod file;
mod model;
pub mod units;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::uri::Scheme;
use http::Uri;

pub use model::*;
pub use validate::code_by_name;
pub use validate::parse_key_hashes;

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

impl Config {
    /// The config as YAML, secrets and key paths redacted (the admin `/config` page).
    pub fn to_yaml(&self) -> Result<String, String> {
        file::to_yaml(self)
    }

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
        let mut config = Config::from_yaml(&text, &origin)?;
        config.source = Some(path.to_owned());
        Ok(config)
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
        validate::Validator { text, origin }.validate(parsed)
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
        let mut config = Config {
            admin: None,
            access_log: AccessLog {
                enabled: false,
                format: LogFormat::Text,
            },
            tracing: Tracing {
                enabled: false,
                otlp_endpoint: None,
                sample_ratio: 1.0,
                service_name: "switchboard".into(),
            },
            shutdown: Shutdown {
                delay: std::time::Duration::ZERO,
                drain_timeout: std::time::Duration::from_secs(30),
            },
            limits: Limits::default(),
            watch: false,
            trusted_proxies: Vec::new(),
            rate_limit_store: None,
            rate_limit_store_failure: FailMode::Open,
            websocket: WebSocket {
                enabled: true,
                ping_interval: std::time::Duration::from_secs(30),
                idle_timeout: std::time::Duration::from_secs(300),
            },
            listeners: vec![Listener {
                name: listen.to_string(),
                address: listen,
                tls: None,
            }],
            cors,
            upstreams: vec![Arc::new(Upstream::new("default", vec![endpoint]))],
            routes: vec![Route::new(MatchKind::Prefix("/".to_owned()), 0)],
            assets: None,
            source: None,
        };
        // Quick mode serves the generated OpenAPI document of the upstream's schema.
        if let Some(u) = config.upstreams.first_mut() {
            Arc::make_mut(u).openapi = Some("/openapi.json".to_owned());
        }
        Ok(config)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
                .starts_with("test.yaml:16:5: routes[1].upstream: "),
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
