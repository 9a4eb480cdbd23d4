//! CORS: preflights answered by the proxy, and the headers on actual responses that let a
//! browser script read statuses and metadata.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use http::{HeaderMap, Method, Request};
use switchboard::config::Config;

use crate::support::client::empty;
use crate::support::*;

const APP: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example.net";
/// What connect-web and grpc-web ask for, plus a custom header.
const REQUESTED: &str = "x-grpc-web,x-user-agent,grpc-timeout,content-type,connect-protocol-version,connect-timeout-ms,x-custom-thing";

fn yaml(backend_url: &str, origins: &str, credentials: bool, extra: &str) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
cors:
  allow_origins: {origins}
  allow_credentials: {credentials}
  max_age: 10m
{extra}
upstreams:
  - name: backend
    endpoints: ["{backend_url}"]
routes:
  - match: {{ prefix: / }}
    upstream: backend
"#
    )
}

async fn preflight(addr: SocketAddr, http: Http, origin: &str) -> Reply {
    let req = Request::builder()
        .method(Method::OPTIONS)
        .uri(UNARY)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", REQUESTED)
        .body(empty())
        .unwrap();
    Client::connect(addr, http).await.send(req).await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// Asserts a successful preflight for `origin`; `allow_origin` is what must come back.
fn assert_preflight_allows(reply: &Reply, allow_origin: &str, credentials: bool, case: &str) {
    let h = &reply.headers;
    assert!(
        reply.status.is_success(),
        "{case}: preflight answered {}",
        reply.status
    );
    assert_eq!(
        header(h, "access-control-allow-origin"),
        Some(allow_origin),
        "{case}: {h:?}"
    );
    let allowed = header_list(h, "access-control-allow-headers");
    for wanted in REQUESTED.split(',') {
        let wildcard = !credentials && allowed.iter().any(|a| a == "*");
        assert!(
            wildcard || allowed.iter().any(|a| a == wanted),
            "{case}: {wanted} not allowed by {allowed:?}"
        );
    }
    let methods = header_list(h, "access-control-allow-methods");
    assert!(
        methods.iter().any(|m| m == "post"),
        "{case}: methods {methods:?}"
    );
    assert_eq!(
        header(h, "access-control-max-age"),
        Some("600"),
        "{case}: max_age 10m"
    );
    assert!(
        header_list(h, "vary").iter().any(|v| v == "origin"),
        "{case}: vary {:?}",
        header_list(h, "vary")
    );
    if credentials {
        assert_eq!(
            header(h, "access-control-allow-credentials"),
            Some("true"),
            "{case}"
        );
    } else {
        assert_eq!(
            header(h, "access-control-allow-credentials"),
            None,
            "{case}"
        );
    }
}

#[tokio::test]
async fn preflight_for_a_listed_origin() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&yaml(&backend.url, &format!("[\"{APP}\"]"), false, "")).await;
    for http in HTTP_VERSIONS {
        let reply = preflight(proxy.addr, http, APP).await;
        assert_preflight_allows(&reply, APP, false, &format!("{http:?}"));
    }
    assert_eq!(
        backend.state.calls.get(),
        0,
        "preflights never reach the backend"
    );
}

#[tokio::test]
async fn preflight_with_wildcard_and_no_credentials_answers_star() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&yaml(&backend.url, "[\"*\"]", false, "")).await;
    for http in HTTP_VERSIONS {
        let reply = preflight(proxy.addr, http, APP).await;
        assert_preflight_allows(&reply, "*", false, &format!("{http:?}"));
    }
}

#[test]
fn credentials_with_any_origin_is_a_config_error() {
    let yaml = yaml("http://127.0.0.1:1", "[\"*\"]", true, "");
    let e = switchboard::config::Config::from_yaml(&yaml, "test.yaml")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("cors.allow_credentials"), "{e}");
}

#[tokio::test]
async fn credentials_echo_the_origin_never_star() {
    let backend = spawn_backend().await;
    for origins in [
        format!("[\"{APP}\"]"),
        format!("[\"https://other.example\", \"{APP}\"]"),
    ] {
        let proxy = spawn_proxy_yaml(&yaml(&backend.url, &origins, true, "")).await;
        let case = format!("allow_origins {origins} with credentials");
        let reply = preflight(proxy.addr, Http::H1, APP).await;
        assert_preflight_allows(&reply, APP, true, &case);

        let mut req = web_request(UNARY, GRPC_WEB_PROTO, &frame(&echo("c")));
        req.headers_mut().insert("origin", APP.parse().unwrap());
        let reply = Client::connect(proxy.addr, Http::H1)
            .await
            .send(req)
            .await
            .web()
            .await;
        reply.assert_ok();
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some(APP),
            "{case}"
        );
        assert_eq!(
            reply.header("access-control-allow-credentials"),
            Some("true"),
            "{case}"
        );
    }
}

#[tokio::test]
async fn disallowed_origin_gets_no_allow_origin() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&yaml(&backend.url, &format!("[\"{APP}\"]"), false, "")).await;
    for http in HTTP_VERSIONS {
        let reply = preflight(proxy.addr, http, EVIL).await;
        assert_eq!(
            header(&reply.headers, "access-control-allow-origin"),
            None,
            "{http:?} preflight: {:?}",
            reply.headers
        );
        let reply = web_call(
            proxy.addr,
            http,
            GRPC_WEB_PROTO,
            UNARY,
            &echo("x"),
            &[("origin", EVIL)],
        )
        .await;
        assert_eq!(
            reply.header("access-control-allow-origin"),
            None,
            "{http:?} call: {:?}",
            reply.headers
        );
    }
}

#[tokio::test]
async fn quick_mode_without_allow_origin_allows_no_cross_origin_call() {
    let backend = spawn_backend().await;
    let config = Config::quick(loopback(), &backend.url, Vec::new()).unwrap();
    let proxy = spawn_proxy_config(config).await;
    for origin in [APP, EVIL, "null"] {
        let reply = preflight(proxy.addr, Http::H1, origin).await;
        assert_eq!(
            header(&reply.headers, "access-control-allow-origin"),
            None,
            "preflight from {origin}: {:?}",
            reply.headers
        );
        let reply = web_call(
            proxy.addr,
            Http::H1,
            GRPC_WEB_PROTO,
            UNARY,
            &echo("x"),
            &[("origin", origin)],
        )
        .await;
        assert_eq!(
            reply.header("access-control-allow-origin"),
            None,
            "{origin}"
        );
    }
    // Same-origin (no Origin header) calls still work.
    let reply = web_call(proxy.addr, Http::H1, GRPC_WEB_PROTO, UNARY, &echo("x"), &[]).await;
    reply.assert_ok();
}

#[tokio::test]
async fn actual_response_exposes_status_and_custom_headers() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&yaml(&backend.url, &format!("[\"{APP}\"]"), false, "")).await;
    for http in HTTP_VERSIONS {
        for ct in [GRPC_WEB_PROTO, GRPC_WEB_TEXT] {
            let case = format!("{ct} over {http:?}");
            let reply = web_call(
                proxy.addr,
                http,
                ct,
                UNARY,
                &echo("x"),
                &[("origin", APP), ("x-header-thing", "42")],
            )
            .await;
            reply.assert_ok();
            assert_eq!(reply.header("x-header-thing"), Some("42"), "{case}");
            assert_eq!(
                reply.header("access-control-allow-origin"),
                Some(APP),
                "{case}"
            );
            assert!(
                header_list(&reply.headers, "vary")
                    .iter()
                    .any(|v| v == "origin"),
                "{case}: {:?}",
                reply.headers
            );
            let exposed = header_list(&reply.headers, "access-control-expose-headers");
            for name in [
                "grpc-status",
                "grpc-message",
                "grpc-status-details-bin",
                "x-header-thing",
            ] {
                assert!(
                    exposed.iter().any(|e| e == name),
                    "{case}: {name} not in {exposed:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn configured_expose_headers_are_always_exposed() {
    let backend = spawn_backend().await;
    let extra = "  expose_headers: [x-request-id, x-trace-bin]";
    let proxy = spawn_proxy_yaml(&yaml(&backend.url, &format!("[\"{APP}\"]"), false, extra)).await;
    let reply = web_call(
        proxy.addr,
        Http::H1,
        GRPC_WEB_PROTO,
        UNARY,
        &echo("x"),
        &[("origin", APP)],
    )
    .await;
    reply.assert_ok();
    let exposed = header_list(&reply.headers, "access-control-expose-headers");
    for name in ["x-request-id", "x-trace-bin", "grpc-status"] {
        assert!(
            exposed.iter().any(|e| e == name),
            "{name} not in {exposed:?}"
        );
    }
}

#[tokio::test]
async fn proxy_made_errors_carry_cors_headers() {
    let yaml = yaml(
        &format!("http://{}", closed_port()),
        &format!("[\"{APP}\"]"),
        false,
        "",
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let reply = web_call(
        proxy.addr,
        Http::H1,
        GRPC_WEB_PROTO,
        UNARY,
        &echo("x"),
        &[("origin", APP)],
    )
    .await;
    assert_eq!(reply.code(), tonic::Code::Unavailable, "{reply:#?}");
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
    let exposed = header_list(&reply.headers, "access-control-expose-headers");
    assert!(exposed.iter().any(|e| e == "grpc-status"), "{exposed:?}");
}
