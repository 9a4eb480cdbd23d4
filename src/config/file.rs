//! The YAML file as written by users. The only file that knows serde_yaml; everything is
//! checked while parsing so that errors carry a line and column.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::units;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub(super) listeners: Vec<Listener>,
    #[serde(default)]
    pub(super) cors: Option<Cors>,
    pub(super) upstreams: Vec<Upstream>,
    pub(super) routes: Vec<Route>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Listener {
    pub(super) address: Addr,
    #[serde(default)]
    pub(super) tls: Option<ServerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Upstream {
    pub(super) name: String,
    pub(super) endpoints: Vec<String>,
    #[serde(default)]
    pub(super) timeout: Option<Dur>,
    #[serde(default)]
    pub(super) max_message_size: Option<Size>,
    #[serde(default)]
    pub(super) tls: Option<ClientTls>,
    #[serde(default)]
    pub(super) json: Option<Json>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Json {
    #[serde(default)]
    pub(super) descriptors: Option<PathBuf>,
    #[serde(default)]
    pub(super) reflection: bool,
    #[serde(default)]
    pub(super) refresh: Option<Dur>,
    #[serde(default)]
    pub(super) passthrough: bool,
    #[serde(default)]
    pub(super) ignore_unknown_fields: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClientTls {
    #[serde(default)]
    pub(super) ca: Option<PathBuf>,
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
