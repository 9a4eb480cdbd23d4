//! Validation of `routes[]`: matchers, auth, rate limits and retries.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;

use super::*;
use crate::config::file;
use crate::config::model::*;

impl Validator<'_> {
    pub(super) fn route(
        &self,
        i: usize,
        r: file::Route,
        upstreams: &[Arc<Upstream>],
    ) -> Result<Route> {
        let key = |k: &str| format!("routes[{i}].{k}");
        let m = r.matcher;
        let kinds = [m.method.is_some(), m.service.is_some(), m.prefix.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(self.error(
                key("match"),
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
                    key("match.method"),
                    Some(&method),
                    format!("invalid method {method:?}: expected /package.Service/Method"),
                ));
            }
            MatchKind::Method(method)
        } else if let Some(service) = m.service {
            if service.is_empty() || service.contains('/') {
                return Err(self.error(
                    key("match.service"),
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
                    key("match.prefix"),
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
                    key("upstream"),
                    Some(&format!("upstream: {}", r.upstream)),
                    format!(
                        "unknown upstream {:?} (known: {})",
                        r.upstream,
                        known.join(", ")
                    ),
                )
            })?;
        let auth = match r.auth {
            None => None,
            Some(a) => Some(self.auth(i, a)?),
        };
        let rate_limit = match r.rate_limit {
            None => None,
            Some(rl) => Some(self.rate_limit(i, rl, auth.as_ref())?),
        };
        let retry = match r.retry {
            None => None,
            Some(rt) => Some(self.retry(i, rt)?),
        };
        Ok(Route {
            kind,
            host: m.host.map(|h| h.to_ascii_lowercase()),
            upstream,
            timeout: r.timeout.map(|d| d.0),
            max_message_size: r.max_message_size.map(|s| s.0),
            descriptors: r.descriptors,
            auth,
            rate_limit,
            retry,
            rest: r.rest,
        })
    }

    pub(super) fn auth(&self, i: usize, a: file::Auth) -> Result<Auth> {
        let key = |k: &str| format!("routes[{i}].auth.{k}");
        match (a.jwt, a.api_key) {
            (Some(j), None) => {
                let jwks = if j.jwks.starts_with("https://") {
                    if j.jwks.parse::<http::Uri>().is_err() {
                        return Err(self.error(
                            key("jwt.jwks"),
                            Some(&j.jwks),
                            format!("invalid URL {:?}", j.jwks),
                        ));
                    }
                    JwksSource::Url(j.jwks)
                } else if j.jwks.starts_with("http://") {
                    return Err(self.error(
                        key("jwt.jwks"),
                        Some(&j.jwks),
                        "a JWKS URL must use https (keys fetched in the clear could be forged)"
                            .into(),
                    ));
                } else {
                    JwksSource::File(j.jwks.into())
                };
                let token = match (j.header, j.cookie) {
                    (Some(_), Some(_)) => {
                        return Err(self.error(
                            key("jwt"),
                            Some("cookie"),
                            "set header or cookie, not both".into(),
                        ))
                    }
                    (Some(h), None) => {
                        let h = self.header(key("jwt.header"), &h)?;
                        if h == http::header::AUTHORIZATION {
                            TokenSource::Bearer
                        } else {
                            TokenSource::Header(h)
                        }
                    }
                    (None, Some(c)) => TokenSource::Cookie(c),
                    (None, None) => TokenSource::Bearer,
                };
                let mut claims_to_headers = Vec::new();
                for (k, c) in j.claims_to_headers.into_iter().enumerate() {
                    let header = self.header(
                        format!("routes[{i}].auth.jwt.claims_to_headers[{k}].header"),
                        &c.header,
                    )?;
                    claims_to_headers.push(ClaimHeader {
                        claim: c.claim,
                        header,
                    });
                }
                Ok(Auth::Jwt(Jwt {
                    jwks,
                    issuer: j.issuer,
                    audiences: j
                        .audience
                        .map(file::OneOrMany::into_vec)
                        .unwrap_or_default(),
                    token,
                    leeway: j.leeway.map_or(Duration::from_secs(60), |d| d.0),
                    forward_token: j.forward_token,
                    claims_to_headers,
                    jwks_cache: j.jwks_cache.map_or(Duration::from_secs(300), |d| d.0),
                    jwks_timeout: j.jwks_timeout.map_or(Duration::from_secs(5), |d| d.0),
                    jwks_ca: j.jwks_ca,
                }))
            }
            (None, Some(k)) => {
                let header = match &k.header {
                    Some(h) => self.header(key("api_key.header"), h)?,
                    None => HeaderName::from_static("x-api-key"),
                };
                let mut hashes = Vec::new();
                for (n, h) in k.keys.iter().enumerate() {
                    hashes.push(parse_sha256(h).ok_or_else(|| {
                        self.error(
                            format!("routes[{i}].auth.api_key.keys[{n}]"),
                            Some(h),
                            "expected a SHA-256 hash: 64 hex digits (e.g. `printf %s KEY | sha256sum`)"
                                .into(),
                        )
                    })?);
                }
                if hashes.is_empty() && k.keys_file.is_none() {
                    return Err(self.error(
                        key("api_key"),
                        Some("api_key"),
                        "give keys (SHA-256 hashes) or keys_file".into(),
                    ));
                }
                Ok(Auth::ApiKey(ApiKey {
                    header,
                    hashes,
                    keys_file: k.keys_file,
                }))
            }
            _ => Err(self.error(
                format!("routes[{i}].auth"),
                Some("auth"),
                "set exactly one of jwt or api_key".into(),
            )),
        }
    }

    pub(super) fn rate_limit(
        &self,
        i: usize,
        rl: file::RateLimit,
        auth: Option<&Auth>,
    ) -> Result<RateLimit> {
        let key = |k: &str| format!("routes[{i}].rate_limit.{k}");
        if !(rl.per_second > 0.0 && rl.per_second.is_finite()) {
            return Err(self.error(
                key("per_second"),
                Some("per_second"),
                "must be a number above 0".into(),
            ));
        }
        let burst = rl
            .burst
            .unwrap_or_else(|| (rl.per_second.ceil() as u32).max(1));
        if burst == 0 {
            return Err(self.error(key("burst"), Some("burst"), "must be at least 1".into()));
        }
        let text = rl.key.unwrap_or_else(|| "client_ip".into());
        let k = match text.as_str() {
            "client_ip" => RateKey::ClientIp,
            "api_key" => {
                if !matches!(auth, Some(Auth::ApiKey(_))) {
                    return Err(self.error(
                        key("key"),
                        Some("api_key"),
                        "key: api_key needs auth: { api_key } on the route".into(),
                    ));
                }
                RateKey::ApiKey
            }
            t => {
                if let Some(h) = t.strip_prefix("header:") {
                    RateKey::Header(self.header(key("key"), h)?)
                } else if let Some(c) = t.strip_prefix("claim:") {
                    if !matches!(auth, Some(Auth::Jwt(_))) || c.trim().is_empty() {
                        return Err(self.error(
                            key("key"),
                            Some("claim:"),
                            "key: claim:NAME needs auth: { jwt } on the route".into(),
                        ));
                    }
                    RateKey::Claim(c.trim().to_owned())
                } else {
                    return Err(self.error(
                        key("key"),
                        Some(t),
                        format!("invalid key {t:?}: expected client_ip, api_key, header:NAME or claim:NAME"),
                    ));
                }
            }
        };
        Ok(RateLimit {
            per_second: rl.per_second,
            burst,
            key: k,
        })
    }

    pub(super) fn retry(&self, i: usize, r: file::Retry) -> Result<Retry> {
        let key = |k: &str| format!("routes[{i}].retry.{k}");
        let mut on = Vec::new();
        for (n, name) in r.on.iter().enumerate() {
            let code = code_by_name(name).ok_or_else(|| {
                self.error(
                    format!("routes[{i}].retry.on[{n}]"),
                    Some(name),
                    format!("unknown status code {name:?}: use names like unavailable or resource_exhausted"),
                )
            })?;
            if code == Code::Ok {
                return Err(self.error(
                    format!("routes[{i}].retry.on[{n}]"),
                    Some(name),
                    "ok is not a failure".into(),
                ));
            }
            on.push(code);
        }
        if on.is_empty() {
            on.push(Code::Unavailable);
        }
        let attempts = r.attempts.unwrap_or(2);
        if !(1..=5).contains(&attempts) {
            return Err(self.error(
                key("attempts"),
                Some("attempts"),
                "must be from 1 to 5 (attempts in all, the first included)".into(),
            ));
        }
        Ok(Retry {
            on,
            attempts,
            backoff: r.backoff.map_or(Duration::from_millis(25), |d| d.0),
        })
    }
}
