//! Cross-site request protection (Fetch Metadata and `Origin`), before any call reaches a
//! backend.
//!
//! CORS only decides whether a script may *read* an answer; a cross-site request that needs no
//! preflight (a Connect GET, a form-like POST, an `<img>`, a no-cors `fetch`) still reaches the
//! server with the user's cookies. So browsers' own marks decide, in this order:
//!
//! 1. `Sec-Fetch-Site: same-origin` or `none` (the user typed the URL): passes.
//! 2. Any other `Sec-Fetch-Site` (`cross-site`, `same-site`): passes only with an `Origin` the
//!    CORS policy allows. A no-cors request carries no `Origin` and is refused.
//! 3. No `Sec-Fetch-Site` but an `Origin` (older browsers): passes when the origin is allowed or
//!    is the request's own origin.
//! 4. Neither (not a browser): passes.

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Uri};

use super::cors::CorsPolicy;

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
const SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");

/// Refuses browser requests the browser marks cross-site unless their origin is allowed; the
/// error says why. Runs after the forwarding stage, so `x-forwarded-proto` is the scheme the
/// caller used (ours, or a trusted proxy's).
pub(crate) fn check(cors: &CorsPolicy, headers: &HeaderMap, uri: &Uri) -> Result<(), String> {
    let origin = headers.get(header::ORIGIN);
    match headers.get(SEC_FETCH_SITE).map(HeaderValue::as_bytes) {
        Some(b"same-origin" | b"none") => Ok(()),
        Some(site) => match origin {
            Some(o) if cors.allows(o) => Ok(()),
            Some(_) => Err("cross-site request from an origin that is not allowed".into()),
            None => Err(format!(
                "cross-site request (sec-fetch-site: {}) without an allowed origin",
                String::from_utf8_lossy(site)
            )),
        },
        None => match origin {
            None => Ok(()),
            Some(o) if cors.allows(o) || is_own_origin(o, headers, uri) => Ok(()),
            Some(_) => Err("cross-origin request from an origin that is not allowed".into()),
        },
    }
}

/// Whether the request is a top-level navigation (a link followed, a URL opened): a page the
/// proxy serves may be opened from anywhere; calls may not.
pub(crate) fn is_navigation(headers: &HeaderMap) -> bool {
    headers.get(SEC_FETCH_MODE).is_some_and(|m| m == "navigate")
        && headers.get(SEC_FETCH_DEST).is_none_or(|d| d == "document")
}

/// Whether `origin` is `scheme://host[:port]` of the request itself (default ports ignored).
fn is_own_origin(origin: &HeaderValue, headers: &HeaderMap, uri: &Uri) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some((scheme, host)) = origin.split_once("://") else {
        return false;
    };
    let ours = uri.scheme_str().or_else(|| {
        headers
            .get("x-forwarded-proto")
            .and_then(|p| p.to_str().ok())
    });
    if ours.is_none_or(|s| !s.eq_ignore_ascii_case(scheme)) {
        return false;
    }
    let authority = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()));
    let Some(authority) = authority else {
        return false;
    };
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        ":443"
    } else {
        ":80"
    };
    let strip = |a: &str| -> String {
        a.strip_suffix(default_port)
            .unwrap_or(a)
            .to_ascii_lowercase()
    };
    strip(host) == strip(authority)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::{AllowOrigins, Config};

    fn cors(origins: AllowOrigins) -> CorsPolicy {
        let mut config =
            Config::quick("127.0.0.1:0".parse().unwrap(), "http://127.0.0.1:1", vec![]).unwrap();
        config.cors.allow_origins = origins;
        CorsPolicy::new(&config)
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn fetch_metadata_rules() {
        let c = cors(AllowOrigins::List(vec!["https://app.example".into()]));
        let uri: Uri = "/a.B/C".parse().unwrap();
        let ok = |pairs: &[(&str, &str)]| check(&c, &h(pairs), &uri).is_ok();
        assert!(ok(&[]), "not a browser");
        assert!(ok(&[("sec-fetch-site", "same-origin")]));
        assert!(ok(&[("sec-fetch-site", "none")]));
        assert!(
            !ok(&[("sec-fetch-site", "cross-site")]),
            "no-cors: no origin"
        );
        assert!(!ok(&[("sec-fetch-site", "same-site")]));
        assert!(ok(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://app.example")
        ]));
        assert!(!ok(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example")
        ]));
        assert!(!ok(&[("origin", "https://evil.example")]), "old browser");
        assert!(ok(&[("origin", "https://app.example")]));
        assert!(!ok(&[("origin", "null")]));
        // An old browser on the proxy's own origin.
        assert!(ok(&[
            ("origin", "http://api.example:8080"),
            ("host", "api.example:8080"),
            ("x-forwarded-proto", "http")
        ]));
        assert!(ok(&[
            ("origin", "https://api.example"),
            ("host", "api.example:443"),
            ("x-forwarded-proto", "https")
        ]));
        assert!(!ok(&[
            ("origin", "http://api.example"),
            ("host", "api.example"),
            ("x-forwarded-proto", "https")
        ]));
    }

    #[test]
    fn any_origin_still_refuses_requests_without_one() {
        let c = cors(AllowOrigins::Any);
        let uri: Uri = "/a.B/C".parse().unwrap();
        assert!(check(
            &c,
            &h(&[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://x.example")
            ]),
            &uri
        )
        .is_ok());
        assert!(check(&c, &h(&[("sec-fetch-site", "cross-site")]), &uri).is_err());
    }

    #[test]
    fn navigations() {
        assert!(is_navigation(&h(&[
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document")
        ])));
        assert!(!is_navigation(&h(&[
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "iframe")
        ])));
        assert!(!is_navigation(&h(&[("sec-fetch-mode", "no-cors")])));
    }
}
