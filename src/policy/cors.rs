//! CORS: answers preflights itself (a gRPC backend cannot) and decorates actual responses so
//! scripts can read statuses and metadata.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};

use crate::config::{AllowOrigins, Cors};

/// Always exposed: the status of a trailers-only response lives in these headers.
const ALWAYS_EXPOSED: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// The policy from config, with header values prepared once.
#[derive(Debug)]
pub(crate) struct CorsPolicy {
    config: Cors,
    max_age: HeaderValue,
    /// Methods preflights allow: the RPC protocols' POST and GET, plus REST's verbs when REST
    /// rules are served.
    methods: &'static str,
}

impl CorsPolicy {
    pub(crate) fn new(config: Cors) -> CorsPolicy {
        let max_age = HeaderValue::from(config.max_age.as_secs());
        CorsPolicy {
            config,
            max_age,
            methods: "POST, GET",
        }
    }

    /// Also allows the methods of `google.api.http` rules (PUT, PATCH, DELETE) when `rest`.
    pub(crate) fn with_rest(mut self, rest: bool) -> CorsPolicy {
        if rest {
            self.methods = "POST, GET, PUT, PATCH, DELETE";
        }
        self
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        match &self.config.allow_origins {
            AllowOrigins::Any => true,
            AllowOrigins::List(list) => list.iter().any(|o| o.as_bytes() == origin.as_bytes()),
        }
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        // `*` cannot be combined with credentials: echo the origin then.
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

    /// Answers a preflight: every requested header is allowed (RPC metadata is open-ended).
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
        let method_ok = method.is_some_and(|m| self.methods.split(", ").any(|a| m == a));
        match origin {
            Some(origin) if self.allows(origin) && method_ok => {
                *res.status_mut() = StatusCode::NO_CONTENT;
                let h = res.headers_mut();
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    self.allow_origin_value(origin),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static(self.methods),
                );
                if let Some(requested) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
                }
                h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
                if self.config.allow_credentials {
                    h.insert(
                        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        HeaderValue::from_static("true"),
                    );
                }
            }
            _ => {
                // No CORS headers: the browser refuses the call.
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
        CorsPolicy::new(Cors {
            allow_origins: origins,
            allow_credentials: creds,
            max_age: Duration::from_secs(600),
            expose_headers: vec![],
            allow_headers: None,
        })
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
        assert_eq!(
            h["access-control-allow-headers"],
            "content-type,x-grpc-web,x-user-agent,grpc-timeout,x-custom"
        );
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
        let rest = policy(AllowOrigins::Any, false).with_rest(true);
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
}
