//! CORS: answers preflights itself (a gRPC backend cannot) and decorates actual responses so
//! scripts can read statuses and metadata.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::config::{AllowOrigins, Config, Cors, RateKey};

/// Always exposed: the status of a trailers-only response lives in these headers.
const ALWAYS_EXPOSED: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// What gRPC-Web and Connect clients send (connect-web, grpc-web, improbable-eng), always
/// allowed in preflights.
const PROTOCOL_HEADERS: [&str; 11] = [
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "grpc-accept-encoding",
    "grpc-encoding",
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-accept-encoding",
    "connect-content-encoding",
    "x-request-id",
];

/// The policy from config, with header values prepared once.
#[derive(Debug)]
pub(crate) struct CorsPolicy {
    config: Cors,
    max_age: HeaderValue,
    /// The methods callers use with this config, as the preflight's allow list.
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    /// Request headers always allowed: the protocols' and every header the config reads (auth
    /// headers by name: `*` would not cover `authorization`), plus `cors.allow_headers`.
    allow_headers: Vec<HeaderName>,
}

/// The HTTP methods calls arrive with under `config`: POST for every protocol, GET for
/// Connect GET, and the verbs of `google.api.http` rules when an upstream serves REST.
fn methods(config: &Config) -> Vec<Method> {
    let mut out = vec![Method::POST, Method::GET];
    if config.upstreams.iter().any(|u| u.serves_rest()) {
        out.extend([Method::PUT, Method::PATCH, Method::DELETE]);
    }
    out
}

/// Request headers the config itself reads: credentials and rate-limit keys.
fn config_headers(config: &Config) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for route in &config.routes {
        if let Some(h) = route.auth.as_ref().and_then(|a| a.header()) {
            out.push(h.clone());
        }
        if let Some(RateKey::Header(h)) = route.rate_limit.as_ref().map(|r| &r.key) {
            out.push(h.clone());
        }
    }
    out
}

impl CorsPolicy {
    pub(crate) fn new(config: &Config) -> CorsPolicy {
        let cors = config.cors.clone();
        let max_age = HeaderValue::from(cors.max_age.as_secs());
        let methods = methods(config);
        let allow_methods = join(methods.iter().map(Method::as_str));
        let mut allow_headers: Vec<HeaderName> = Vec::new();
        let names = PROTOCOL_HEADERS
            .iter()
            .map(|n| HeaderName::from_static(n))
            .chain(config_headers(config))
            .chain(cors.allow_headers.iter().flatten().cloned());
        for name in names {
            if !allow_headers.contains(&name) {
                allow_headers.push(name);
            }
        }
        CorsPolicy {
            config: cors,
            max_age,
            methods,
            allow_methods,
            allow_headers,
        }
    }

    /// Whether `origin` may call (and read answers).
    pub(crate) fn allows(&self, origin: &HeaderValue) -> bool {
        match &self.config.allow_origins {
            AllowOrigins::Any => true,
            AllowOrigins::List(list) => list.iter().any(|o| o.as_bytes() == origin.as_bytes()),
        }
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        // `*` cannot be combined with credentials (config validation refuses that pair); echo
        // the origin when credentials are allowed.
        if self.config.allow_origins == AllowOrigins::Any && !self.config.allow_credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// Whether a request is a CORS preflight.
    pub(crate) fn is_preflight<B>(req: &Request<B>) -> bool {
        req.method() == http::Method::OPTIONS
            && req.headers().contains_key(header::ORIGIN)
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The `Access-Control-Allow-Headers` of a preflight: the fixed list, and without
    /// `cors.allow_headers` also whatever else the preflight asks for (RPC metadata is
    /// open-ended). Always names, never `*`.
    fn allowed_headers(&self, requested: Option<&HeaderValue>) -> HeaderValue {
        let fixed = self.allow_headers.iter().map(HeaderName::as_str);
        let asked = requested
            .filter(|_| self.config.allow_headers.is_none())
            .and_then(|r| r.to_str().ok())
            .into_iter()
            .flat_map(|r| r.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty() && HeaderName::from_bytes(n.as_bytes()).is_ok());
        let mut names: Vec<String> = Vec::new();
        for name in fixed
            .map(str::to_owned)
            .chain(asked.map(str::to_ascii_lowercase))
        {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        join(names.iter().map(String::as_str))
    }

    /// Answers a preflight for an allowed origin and method; anything else gets no CORS
    /// headers, and the browser refuses the call.
    pub(crate) fn preflight<B>(&self, req: &Request<B>) -> Response<()> {
        let mut res = Response::new(());
        let h = res.headers_mut();
        h.insert(
            header::VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        );
        let origin = req.headers().get(header::ORIGIN);
        let method = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD);
        let method_ok =
            method.is_some_and(|m| self.methods.iter().any(|k| k.as_str().as_bytes() == m));
        match origin {
            Some(origin) if self.allows(origin) && method_ok => {
                *res.status_mut() = StatusCode::NO_CONTENT;
                let requested = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS);
                let h = res.headers_mut();
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    self.allow_origin_value(origin),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    self.allow_methods.clone(),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    self.allowed_headers(requested),
                );
                h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
                if self.config.allow_credentials {
                    h.insert(
                        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        HeaderValue::from_static("true"),
                    );
                }
            }
            _ => {
                *res.status_mut() = StatusCode::FORBIDDEN;
            }
        }
        res
    }

    /// Adds CORS headers to an actual response for an allowed origin, exposing the status
    /// headers and every header of this response that scripts could not otherwise read.
    pub(crate) fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
        let Some(origin) = origin.filter(|o| self.allows(o)) else {
            return;
        };
        // Built as one string: names are few, so a linear duplicate check beats a set.
        let mut list = String::with_capacity(96);
        let names = ALWAYS_EXPOSED
            .into_iter()
            .chain(self.config.expose_headers.iter().map(HeaderName::as_str))
            .chain(
                headers
                    .keys()
                    .map(HeaderName::as_str)
                    .filter(|n| !is_safelisted_or_cors(n)),
            );
        for name in names {
            if !list.split(", ").any(|n| n == name) {
                if !list.is_empty() {
                    list.push_str(", ");
                }
                list.push_str(name);
            }
        }
        let allow = self.allow_origin_value(origin);
        if let Ok(v) = HeaderValue::from_str(&list) {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if self.config.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// `a, b, c` as one header value.
fn join<'a>(names: impl Iterator<Item = &'a str>) -> HeaderValue {
    let mut out = String::with_capacity(128);
    for n in names {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(n);
    }
    HeaderValue::from_str(&out).unwrap_or(HeaderValue::from_static(""))
}

/// Response headers scripts can always read, and CORS's own.
fn is_safelisted_or_cors(name: &str) -> bool {
    matches!(
        name,
        "cache-control"
            | "content-language"
            | "content-length"
            | "content-type"
            | "expires"
            | "last-modified"
            | "pragma"
            | "vary"
            | "date"
            | "transfer-encoding"
            | "connection"
    ) || name.starts_with("access-control-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(origins: AllowOrigins, creds: bool) -> CorsPolicy {
        rest_policy(origins, creds, false)
    }

    /// With `rest`, the upstream serves its schema's `google.api.http` rules.
    fn rest_policy(origins: AllowOrigins, creds: bool, rest: bool) -> CorsPolicy {
        let mut config = Config::quick(
            "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
            "http://127.0.0.1:1",
            vec![],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        config.cors = Cors {
            allow_origins: origins,
            allow_credentials: creds,
            max_age: Duration::from_secs(600),
            expose_headers: vec![],
            allow_headers: None,
        };
        for u in &mut config.upstreams {
            std::sync::Arc::make_mut(u).rest = rest;
        }
        CorsPolicy::new(&config)
    }

    fn yaml_policy(extra_cors: &str, route: &str) -> CorsPolicy {
        let yaml = format!(
            "listeners: [{{ address: 127.0.0.1:0 }}]\ncors:\n  allow_origins: [\"https://app.example\"]\n{extra_cors}upstreams: [{{ name: b, endpoints: [\"http://127.0.0.1:1\"] }}]\nroutes:\n  - match: {{ prefix: / }}\n    upstream: b\n{route}"
        );
        let config = Config::from_yaml(&yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        CorsPolicy::new(&config)
    }

    fn allowed(res: &Response<()>) -> Vec<String> {
        res.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap_or_default()
            .split(", ")
            .map(str::to_owned)
            .collect()
    }

    fn preflight_req(origin: &str) -> Request<()> {
        Request::builder()
            .method("OPTIONS")
            .uri("/a.B/C")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-grpc-web,x-user-agent,grpc-timeout,x-custom",
            )
            .body(())
            .unwrap_or_default()
    }

    #[test]
    fn preflight_for_allowed_origin() {
        let p = policy(
            AllowOrigins::List(vec!["https://app.example".into()]),
            false,
        );
        let req = preflight_req("https://app.example");
        assert!(CorsPolicy::is_preflight(&req));
        let res = p.preflight(&req);
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let h = res.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example");
        let allowed = allowed(&res);
        for name in [
            "content-type",
            "x-grpc-web",
            "x-user-agent",
            "grpc-timeout",
            "x-custom",
        ] {
            assert!(allowed.iter().any(|a| a == name), "{name}: {allowed:?}");
        }
        assert_eq!(h["access-control-allow-methods"], "POST, GET");
        assert_eq!(h["access-control-max-age"], "600");
        assert!(!h.contains_key("access-control-allow-credentials"));
        let res = p.preflight(&preflight_req("https://evil.example"));
        assert!(!res.headers().contains_key("access-control-allow-origin"));
    }

    #[test]
    fn rest_verbs_only_when_rest_is_served() {
        let mut req = preflight_req("https://x.example");
        req.headers_mut().insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("PATCH"),
        );
        let rpc_only = policy(AllowOrigins::Any, false);
        assert_eq!(rpc_only.preflight(&req).status(), StatusCode::FORBIDDEN);
        let rest = rest_policy(AllowOrigins::Any, false, true);
        let res = rest.preflight(&req);
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            res.headers()["access-control-allow-methods"],
            "POST, GET, PUT, PATCH, DELETE"
        );
    }

    #[test]
    fn wildcard_and_credentials() {
        let p = policy(AllowOrigins::Any, false);
        let res = p.preflight(&preflight_req("https://x.example"));
        assert_eq!(res.headers()["access-control-allow-origin"], "*");
        let p = policy(AllowOrigins::Any, true);
        let res = p.preflight(&preflight_req("https://x.example"));
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "https://x.example"
        );
        assert_eq!(res.headers()["access-control-allow-credentials"], "true");
    }

    #[test]
    fn actual_responses_expose_their_own_headers() {
        let p = policy(AllowOrigins::Any, false);
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/grpc-web"),
        );
        h.insert("x-header-a", HeaderValue::from_static("1"));
        p.decorate(Some(&HeaderValue::from_static("https://x.example")), &mut h);
        assert_eq!(
            h["access-control-expose-headers"],
            "grpc-status, grpc-message, grpc-status-details-bin, x-header-a"
        );
        assert_eq!(h["vary"], "origin");
        let mut h = HeaderMap::new();
        policy(AllowOrigins::List(vec![]), false)
            .decorate(Some(&HeaderValue::from_static("https://x.example")), &mut h);
        assert!(!h.contains_key("access-control-allow-origin"));
    }

    #[test]
    fn auth_headers_are_named_and_allow_headers_limits_the_rest() {
        let route = "    auth: { api_key: { header: x-api-key, keys: [\"0000000000000000000000000000000000000000000000000000000000000000\"] } }\n    rate_limit: { per_second: 1, key: \"header:x-tenant\" }\n";
        let p = yaml_policy("", route);
        let mut req = preflight_req("https://app.example");
        req.headers_mut().remove("access-control-request-headers");
        let names = allowed(&p.preflight(&req));
        assert!(names.iter().any(|n| n == "x-api-key"), "{names:?}");
        assert!(names.iter().any(|n| n == "x-tenant"), "{names:?}");
        let jwt = "    auth: { jwt: { jwks: /nonexistent.json } }\n";
        let p = yaml_policy("  allow_headers: [x-app-thing]\n", jwt);
        let names = allowed(&p.preflight(&preflight_req("https://app.example")));
        assert!(names.iter().any(|n| n == "authorization"), "{names:?}");
        assert!(names.iter().any(|n| n == "x-app-thing"), "{names:?}");
        assert!(names.iter().any(|n| n == "content-type"), "{names:?}");
        assert!(
            !names.iter().any(|n| n == "x-custom"),
            "not listed: {names:?}"
        );
        assert!(!names.iter().any(|n| n == "*"), "{names:?}");
    }

    #[test]
    fn unused_methods_are_refused() {
        let p = policy(AllowOrigins::Any, false);
        let mut req = preflight_req("https://x.example");
        req.headers_mut().insert(
            "access-control-request-method",
            HeaderValue::from_static("DELETE"),
        );
        assert_eq!(p.preflight(&req).status(), StatusCode::FORBIDDEN);
    }
}
