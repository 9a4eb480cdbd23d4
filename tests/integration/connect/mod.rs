//! Connect callers (unary POST and GET, enveloped streams, HTTP/1.1 and HTTP/2) through the
//! proxy to the tonic backend. PROTOCOLS.md §3, §5 and the vectors of §8.5–§8.12.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod get;
mod limits;
mod streams;
mod unary;

use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use prost::Message as _;
use serde_json::{json, Value};
use tonic::Code;

use crate::support::client::{empty, full};
use crate::support::connect::*;
use crate::support::wire::{frame_with_flag, parse_grpc_timeout};
use crate::support::*;

/// A Connect unary POST of `msg` to the Unary method.
async fn unary(
    addr: SocketAddr,
    http: Http,
    msg: &EchoRequest,
    headers: &[(&str, &str)],
) -> Answer {
    post_proto(addr, http, UNARY, msg.encode_to_vec(), headers).await
}

/// The query of a Connect GET of Lookup carrying `message`.
fn get_url(message: &[u8], compression: Option<&str>) -> String {
    get_proto_query(LOOKUP, message, compression)
}

async fn assert_still_serves(addr: SocketAddr) {
    let res = unary(addr, Http::H1, &echo("still here"), &[]).await;
    assert_eq!(res.ok_proto().message, "still here");
}

// --- Routing, rejection, upstream failures, CORS -------------------------------------------

#[tokio::test]
async fn call_without_route_is_404_unimplemented() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&unary_only_yaml(&backend.url)).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let res = post_proto(proxy.addr, http, LOOKUP, echo("x").encode_to_vec(), &[]).await;
        res.error(404, "unimplemented", &case);
        let res = get(
            proxy.addr,
            http,
            &get_url(&echo("x").encode_to_vec(), None),
            &[],
        )
        .await;
        res.error(404, "unimplemented", &format!("GET over {http:?}"));
        // The routed method works.
        assert_eq!(
            unary(proxy.addr, http, &echo("routed"), &[])
                .await
                .ok_proto()
                .message,
            "routed"
        );
    }
    assert_eq!(backend.state.calls.get(), 2);
}

#[tokio::test]
async fn unsupported_content_types_and_methods_are_rejected() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let body = echo("x").encode_to_vec();
    let cases = [
        (Method::POST, "application/connect+xml", 415),
        (Method::POST, "application/xml", 415),
        (Method::PUT, PROTO, 405),
        (Method::DELETE, CONNECT_PROTO, 405),
    ];
    for http in HTTP_VERSIONS {
        for (method, ct, status) in &cases {
            let case = format!("{method} {ct} over {http:?}");
            let req = request(
                method.clone(),
                UNARY,
                Some(ct),
                &[("connect-protocol-version", "1")],
                full(body.clone()),
            );
            let res = send(proxy.addr, http, req).await;
            assert_eq!(res.status.as_u16(), *status, "{case}: {res:#?}");
            if *status == 405 {
                assert_eq!(res.header("allow"), Some("POST"), "{case}");
            }
        }
    }
    assert_eq!(backend.state.calls.get(), 0);
}

#[tokio::test]
async fn unreachable_upstream_is_unavailable_and_named() {
    let proxy = spawn_proxy_yaml(&closed_upstream_yaml()).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let res = unary(proxy.addr, http, &echo("x"), &[]).await;
        let json = res.error(503, "unavailable", &case);
        assert!(
            json["message"]
                .as_str()
                .is_some_and(|m| m.contains("closed-backend")),
            "{case}: message should name the upstream: {json}"
        );
        let req = EchoRequest {
            count: 1,
            ..echo("x")
        };
        let s = proto_stream(proxy.addr, http, SERVER_STREAM, frame(&req), &[]).await;
        let error = s.error("unavailable", &case);
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("closed-backend")),
            "{case}: {error}"
        );
    }
}

#[tokio::test]
async fn cors_preflight_and_exposed_trailer_headers() {
    const APP: &str = "https://app.example.com";
    const REQUESTED: &str = "content-type,connect-protocol-version,connect-timeout-ms";
    let backend = spawn_backend().await;
    let yaml =
        one_upstream_yaml(&backend.url, &[], &[]).replace("[\"*\"]", &format!("[\"{APP}\"]"));
    let proxy = spawn_proxy_yaml(&yaml).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let calls_before = backend.state.calls.get();
        for method in ["POST", "GET"] {
            let req = request(
                Method::OPTIONS,
                UNARY,
                None,
                &[
                    ("origin", APP),
                    ("access-control-request-method", method),
                    ("access-control-request-headers", REQUESTED),
                ],
                empty(),
            );
            let res = send(proxy.addr, http, req).await;
            assert_eq!(res.status, StatusCode::NO_CONTENT, "{case}: {res:#?}");
            assert_eq!(
                res.header("access-control-allow-origin"),
                Some(APP),
                "{case}"
            );
            let allowed = header_list(&res.headers, "access-control-allow-headers");
            for name in REQUESTED.split(',') {
                assert!(
                    allowed.iter().any(|a| a == name || a == "*"),
                    "{case}: {name} not allowed by {allowed:?}"
                );
            }
            let methods = header_list(&res.headers, "access-control-allow-methods");
            assert!(
                methods.iter().any(|m| m == &method.to_ascii_lowercase()),
                "{case}"
            );
        }
        assert_eq!(
            backend.state.calls.get(),
            calls_before,
            "preflights never reach the backend"
        );

        let res = unary(
            proxy.addr,
            http,
            &echo("cors"),
            &[("origin", APP), ("x-trailer-a", "t"), ("x-header-b", "h")],
        )
        .await;
        assert_eq!(res.ok_proto().message, "cors");
        assert_eq!(
            res.header("access-control-allow-origin"),
            Some(APP),
            "{case}"
        );
        let exposed = header_list(&res.headers, "access-control-expose-headers");
        for name in ["trailer-x-trailer-a", "x-header-b"] {
            assert!(
                exposed.iter().any(|e| e == name),
                "{case}: {name} not exposed in {exposed:?}"
            );
        }
        // Errors made by the proxy carry CORS headers too.
        let res = post_proto(
            proxy.addr,
            http,
            UNARY,
            Bytes::new(),
            &[("origin", APP), ("connect-timeout-ms", "abc")],
        )
        .await;
        res.error(400, "invalid_argument", &case);
        assert_eq!(
            res.header("access-control-allow-origin"),
            Some(APP),
            "{case}"
        );
    }
}
