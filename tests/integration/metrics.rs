//! Prometheus metrics on the admin port: the grpc-prometheus families with `protocol` and
//! `upstream`, bounded method labels, the `switchboard_*` series, and `promtool check metrics`
//! on the scraped text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use prost::Message as _;
use tonic::Code;

use crate::support::admin::{count, metrics, metrics_until, promtool_check, sample};
use crate::support::client::full;
use crate::support::pb::test_service_client::TestServiceClient;
use crate::support::*;

const SERVICE: &str = "switchboard.testing.v1.TestService";

/// A config with an admin port, a listener named `public`, the upstream `backend` and a route
/// for the test service only (so other services match no route).
fn config(url: &str, extra: &str) -> String {
    format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - address: 127.0.0.1:0
    name: public
cors:
  allow_origins: ["https://app.example"]
upstreams:
  - name: backend
    endpoints: ["{url}"]
routes:
  - match: {{ service: {SERVICE} }}
    upstream: backend
{extra}"#
    )
}

fn failing(code: Code) -> EchoRequest {
    EchoRequest {
        error: Some(ErrorSpec {
            code: code as i32,
            message: "failed on purpose".into(),
            with_details: false,
        }),
        ..echo("x")
    }
}

fn handled(
    service: &str,
    method: &str,
    protocol: &str,
    upstream: &str,
    code: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("grpc_service", service.to_owned()),
        ("grpc_method", method.to_owned()),
        ("protocol", protocol.to_owned()),
        ("upstream", upstream.to_owned()),
        ("grpc_code", code.to_owned()),
    ]
}

fn labels<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn calls_are_counted_by_method_protocol_upstream_and_code() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&config(&backend.url, "")).await;
    let admin = proxy.running.admin_addr().expect("admin address");

    // gRPC-Web binary, twice (the first call shows the method exists, the second is counted
    // as started when it starts); gRPC-Web text failing; native gRPC; Connect unary.
    for http in HTTP_VERSIONS {
        web_call(proxy.addr, http, GRPC_WEB_PROTO, UNARY, &echo("a"), &[])
            .await
            .assert_ok();
    }
    let reply = web_call(
        proxy.addr,
        Http::H1,
        GRPC_WEB_TEXT,
        UNARY,
        &failing(Code::Unavailable),
        &[],
    )
    .await;
    assert_eq!(reply.code(), Code::Unavailable);
    let mut grpc = TestServiceClient::connect(proxy.url.clone()).await.unwrap();
    grpc.unary(echo("native")).await.unwrap();
    let mut c = Client::connect(proxy.addr, Http::H1).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri(UNARY)
        .header("content-type", "application/proto")
        .body(full(Bytes::from(echo("connect").encode_to_vec())))
        .unwrap();
    let res = c.send(req).await;
    assert_eq!(res.status, StatusCode::OK);
    let _ = res.bytes().await;
    // A method the backend does not implement, and a service no route matches.
    let nope = format!("/{SERVICE}/Nope");
    let reply = web_call(proxy.addr, Http::H1, GRPC_WEB_PROTO, &nope, &echo("x"), &[]).await;
    assert_eq!(reply.code(), Code::Unimplemented);
    let reply = web_call(
        proxy.addr,
        Http::H1,
        GRPC_WEB_PROTO,
        "/other.v1.Elsewhere/Do",
        &echo("x"),
        &[],
    )
    .await;
    assert_eq!(reply.code(), Code::Unimplemented);

    let unary_ok = handled(SERVICE, "Unary", "grpc_web", "backend", "OK");
    let text = metrics_until(admin, "every call handled", |t| {
        count(t, "grpc_server_handled_total", &labels(&unary_ok)) == 2.0
            && count(
                t,
                "grpc_server_handled_total",
                &[("grpc_service", "unknown"), ("upstream", "")],
            ) == 1.0
            && count(t, "grpc_server_handled_total", &[("protocol", "connect")]) == 1.0
            && count(t, "grpc_server_handled_total", &[("protocol", "grpc")]) == 1.0
    })
    .await;
    let started = |service: &str, method: &str, protocol: &str, upstream: &str| {
        count(
            &text,
            "grpc_server_started_total",
            &[
                ("grpc_service", service),
                ("grpc_method", method),
                ("protocol", protocol),
                ("upstream", upstream),
            ],
        )
    };
    assert_eq!(
        started(SERVICE, "Unary", "grpc_web", "backend"),
        2.0,
        "{text}"
    );
    assert_eq!(
        count(
            &text,
            "grpc_server_handled_total",
            &labels(&handled(
                SERVICE,
                "Unary",
                "grpc_web_text",
                "backend",
                "UNAVAILABLE"
            ))
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        count(
            &text,
            "grpc_server_handled_total",
            &labels(&handled(SERVICE, "Unary", "grpc", "backend", "OK"))
        ),
        1.0,
        "{text}"
    );
    // Connect unary calls say their method is unary.
    assert_eq!(
        count(
            &text,
            "grpc_server_handled_total",
            &[
                ("protocol", "connect"),
                ("grpc_type", "unary"),
                ("grpc_method", "Unary"),
                ("grpc_code", "OK")
            ]
        ),
        1.0,
        "{text}"
    );
    // Unknown methods share one label set, on their upstream, and no-route calls on none.
    assert_eq!(
        count(
            &text,
            "grpc_server_handled_total",
            &labels(&handled(
                "unknown",
                "unknown",
                "grpc_web",
                "backend",
                "UNIMPLEMENTED"
            ))
        ),
        1.0,
        "{text}"
    );
    assert_eq!(started("unknown", "unknown", "grpc_web", ""), 1.0, "{text}");
    assert!(
        !text.contains("Nope") && !text.contains("other.v1"),
        "{text}"
    );
    // Latency and bytes.
    assert_eq!(
        sample(
            &text,
            "grpc_server_handling_seconds_count",
            &[
                ("grpc_method", "Unary"),
                ("protocol", "grpc_web"),
                ("upstream", "backend")
            ]
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        count(
            &text,
            "switchboard_request_bytes_total",
            &[("protocol", "grpc_web"), ("upstream", "backend")]
        ) > 0.0
    );
    assert!(
        count(
            &text,
            "switchboard_response_bytes_total",
            &[("protocol", "connect"), ("upstream", "backend")]
        ) > 0.0
    );
    // Connections of the listener, calls in flight, upstream state.
    assert!(
        count(
            &text,
            "switchboard_connections_accepted_total",
            &[("listener", "public")]
        ) >= 6.0,
        "{text}"
    );
    assert_eq!(
        count(
            &text,
            "switchboard_calls_in_flight",
            &[("protocol", "grpc_web")]
        ),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "switchboard_upstream_endpoints",
            &[("upstream", "backend"), ("state", "healthy")]
        ),
        Some(1.0),
        "{text}"
    );
    promtool_check(&text);
}

#[tokio::test]
async fn invented_method_names_do_not_grow_the_label_sets() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&config(&backend.url, "")).await;
    let admin = proxy.running.admin_addr().unwrap();
    let mut c = Client::connect(proxy.addr, Http::H2).await;
    for i in 0..40 {
        let path = format!("/{SERVICE}/Invented{i}");
        let req = web_request(&path, GRPC_WEB_PROTO, &frame(&echo("x")));
        assert_eq!(c.send(req).await.web().await.code(), Code::Unimplemented);
        let req = web_request(
            &format!("/made.up{i}.Svc/M"),
            GRPC_WEB_PROTO,
            &frame(&echo("x")),
        );
        assert_eq!(c.send(req).await.web().await.code(), Code::Unimplemented);
    }
    let text = metrics_until(admin, "80 unknown calls", |t| {
        count(
            t,
            "grpc_server_handled_total",
            &[("grpc_service", "unknown"), ("upstream", "backend")],
        ) == 40.0
            && count(
                t,
                "grpc_server_handled_total",
                &[("grpc_service", "unknown"), ("upstream", "")],
            ) == 40.0
    })
    .await;
    assert!(
        !text.contains("Invented") && !text.contains("made.up"),
        "{text}"
    );
    let series = text
        .lines()
        .filter(|l| l.starts_with("grpc_server_started_total{"))
        .count();
    assert_eq!(series, 2, "{text}");
    promtool_check(&text);
}

#[tokio::test]
async fn streams_in_flight_and_cors_refusals_are_seen() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&config(&backend.url, "")).await;
    let admin = proxy.running.admin_addr().unwrap();
    let mut c = Client::connect(proxy.addr, Http::H2).await;
    let req = web_request(
        SERVER_STREAM,
        GRPC_WEB_PROTO,
        &frame(&EchoRequest {
            count: 2,
            ..echo(GATED)
        }),
    );
    let mut stream = c.send(req).await.web_stream();
    assert_eq!(guard("first message", stream.next_message()).await.index, 0);
    let text = metrics(admin).await;
    assert_eq!(
        count(
            &text,
            "switchboard_calls_in_flight",
            &[("protocol", "grpc_web")]
        ),
        1.0,
        "{text}"
    );
    backend.state.open_gate(1);
    guard("stream end", stream.finish()).await.assert_ok();
    metrics_until(admin, "the stream finished", |t| {
        count(
            t,
            "switchboard_calls_in_flight",
            &[("protocol", "grpc_web")],
        ) == 0.0
            && count(
                t,
                "grpc_server_handled_total",
                &[("grpc_method", "ServerStream"), ("grpc_code", "OK")],
            ) == 1.0
    })
    .await;

    // A preflight from an origin not allowed.
    let pre = Request::builder()
        .method(Method::OPTIONS)
        .uri(UNARY)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .body(crate::support::client::empty())
        .unwrap();
    assert_eq!(c.send(pre).await.status, StatusCode::FORBIDDEN);
    let text = metrics(admin).await;
    assert_eq!(
        count(
            &text,
            "switchboard_cors_refusals_total",
            &[("reason", "preflight")]
        ),
        1.0,
        "{text}"
    );
    promtool_check(&text);
}
