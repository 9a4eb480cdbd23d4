//! improbable-eng's WebSocket transport (`grpc-websockets`): every call type over HTTP/1.1
//! upgrades and HTTP/2 extended CONNECT, metadata both ways, deadlines, statuses with
//! details, cancellation, the origin check, message limits, backpressure, idle timeout and
//! pings. The client is `support::ws` (tokio-tungstenite, or h2 for RFC 8441); the real
//! `@improbable-eng/grpc-web` client runs in the interop matrix and the browser test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt as _;

use crate::support::ws::{self, WsCall, WsEvent};
use crate::support::{
    self, echo, guard, one_upstream_yaml, spawn_backend, spawn_proxy, spawn_proxy_yaml,
    EchoRequest, ErrorSpec, BIDI, CLIENT_STREAM, SERVER_STREAM, UNARY,
};

async fn open(proxy: &support::Proxy, path: &str) -> WsCall {
    guard("upgrade", ws::connect(proxy.addr, path, None))
        .await
        .unwrap_or_else(|s| panic!("upgrade refused: {s}"))
}

#[tokio::test]
async fn unary_with_metadata_both_ways_over_http1() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let mut call = open(&proxy, UNARY).await;
    call.start(&[
        ("x-header-a", "alpha"),
        ("x-trailer-b", "beta"),
        ("x-custom", "c"),
    ])
    .await;
    call.send(&EchoRequest {
        message: "hello".into(),
        payload: vec![0, 1, 254, 255],
        ..Default::default()
    })
    .await;
    call.finish().await;
    let reply = guard("reply", call.reply()).await;
    reply.assert_ok();
    let [res] = &reply.responses()[..] else {
        panic!("one response expected: {reply:#?}");
    };
    assert_eq!(res.message, "hello");
    assert_eq!(res.payload, [0, 1, 254, 255]);
    assert_eq!(
        res.metadata["x-custom"], "c",
        "the backend saw the metadata"
    );
    assert_eq!(reply.header("x-header-a"), Some("alpha"), "header frame");
    assert_eq!(reply.trailer("x-trailer-b"), Some("beta"), "trailer frame");
    assert!(reply.header("x-request-id").is_some());
    let seen = backend.state.last_headers();
    assert_eq!(seen["content-type"], "application/grpc");
    assert!(!seen.contains_key("sec-websocket-key") && !seen.contains_key("upgrade"));
}

#[tokio::test]
async fn server_stream_client_stream_and_bidi() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;

    let mut call = open(&proxy, SERVER_STREAM).await;
    call.start(&[]).await;
    call.send(&EchoRequest {
        message: "s".into(),
        count: 3,
        ..Default::default()
    })
    .await;
    call.finish().await;
    let reply = guard("server stream", call.reply()).await;
    reply.assert_ok();
    let got: Vec<_> = reply
        .responses()
        .iter()
        .map(|r| (r.message.clone(), r.index))
        .collect();
    assert_eq!(got, [("s".into(), 0), ("s".into(), 1), ("s".into(), 2)]);

    let mut call = open(&proxy, CLIENT_STREAM).await;
    call.start(&[]).await;
    for m in ["one", "two", "three"] {
        call.send(&echo(m)).await;
    }
    call.finish().await;
    let reply = guard("client stream", call.reply()).await;
    reply.assert_ok();
    assert_eq!(reply.responses()[0].message, "one,two,three");
    assert_eq!(backend.state.uploads.get(), 1);

    // Bidi as a conversation: each answer arrives before the next message is sent.
    let mut call = open(&proxy, BIDI).await;
    call.start(&[("x-header-h", "1")]).await;
    call.send(&echo("m0")).await;
    let headers = guard("bidi headers", call.headers()).await;
    assert_eq!(headers["x-header-h"], "1");
    for i in 0..5u32 {
        let res = guard("bidi answer", call.next_message()).await;
        assert_eq!(
            (res.message.as_str(), res.index),
            (format!("m{i}").as_str(), i)
        );
        if i < 4 {
            call.send(&echo(&format!("m{}", i + 1))).await;
        }
    }
    call.finish().await;
    let reply = guard("bidi end", call.reply()).await;
    reply.assert_ok();
    assert!(reply.messages.is_empty());
}

#[tokio::test]
async fn http2_extended_connect_carries_the_same_calls() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let mut call = guard("h2 upgrade", ws::connect_h2(proxy.addr, UNARY)).await;
    call.start(&[]).await;
    call.send(&echo("over h2")).await;
    call.finish().await;
    let reply = guard("h2 reply", call.reply()).await;
    reply.assert_ok();
    assert_eq!(reply.responses()[0].message, "over h2");

    let mut call = guard("h2 upgrade", ws::connect_h2(proxy.addr, BIDI)).await;
    call.start(&[]).await;
    for i in 0..3 {
        call.send(&echo(&format!("b{i}"))).await;
        let res = guard("h2 bidi answer", call.next_message()).await;
        assert_eq!(res.message, format!("b{i}"));
    }
    call.finish().await;
    guard("h2 bidi end", call.reply()).await.assert_ok();
}

#[tokio::test]
async fn statuses_details_and_deadlines() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;

    let mut call = open(&proxy, UNARY).await;
    call.start(&[]).await;
    call.send(&EchoRequest {
        message: "x".into(),
        error: Some(ErrorSpec {
            code: Code::InvalidArgument as i32,
            message: "bad input: 100% wrong".into(),
            with_details: true,
        }),
        ..Default::default()
    })
    .await;
    call.finish().await;
    let reply = guard("error", call.reply()).await;
    assert_eq!(reply.code(), Code::InvalidArgument);
    assert_eq!(reply.message(), "bad input: 100% wrong");
    let details = tonic::Status::with_details(
        reply.code(),
        reply.message(),
        support::wire::base64_decode(reply.trailer("grpc-status-details-bin").unwrap()).into(),
    );
    let bad = details
        .get_details_bad_request()
        .expect("a BadRequest detail");
    assert_eq!(bad.field_violations[0].field, "message");

    // The deadline travels in the metadata, as the improbable client has no option for it.
    let mut call = open(&proxy, UNARY).await;
    call.start(&[("grpc-timeout", "200m")]).await;
    call.send(&EchoRequest {
        message: "slow".into(),
        delay_ms: 3000,
        ..Default::default()
    })
    .await;
    call.finish().await;
    let reply = guard("deadline", call.reply()).await;
    assert_eq!(reply.code(), Code::DeadlineExceeded, "{reply:#?}");

    let mut call = open(&proxy, UNARY).await;
    call.start(&[("grpc-timeout", "5S")]).await;
    call.send(&echo("t")).await;
    call.finish().await;
    let reply = guard("budget", call.reply()).await;
    let sent = &reply.responses()[0].grpc_timeout;
    assert!(
        sent.ends_with('m') || sent.ends_with('u'),
        "remaining budget sent upstream: {sent}"
    );
}

#[tokio::test]
async fn closing_the_socket_cancels_the_upstream_call_and_never_completes_an_upload() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;

    // An upload cut short: two messages reach the backend, then the socket closes without
    // the end-of-send message.
    let mut call = open(&proxy, CLIENT_STREAM).await;
    call.start(&[]).await;
    call.send(&echo("a")).await;
    call.send(&echo("b")).await;
    guard(
        "messages reach the backend",
        backend.state.received.until(2),
    )
    .await;
    drop(call);
    guard(
        "the upload fails upstream",
        backend.state.cancellations.until(1),
    )
    .await;
    assert_eq!(
        backend.state.uploads.get(),
        0,
        "an upload cut short was completed"
    );

    // A server stream the client walks away from.
    let mut call = open(&proxy, SERVER_STREAM).await;
    call.start(&[]).await;
    call.send(&EchoRequest {
        message: support::GATED.into(),
        count: 5,
        ..Default::default()
    })
    .await;
    call.finish().await;
    guard("first message", call.next_message()).await;
    call.ws.close(None).await.unwrap();
    guard(
        "the backend sees the cancel",
        backend.state.cancellations.until(2),
    )
    .await;
}

#[tokio::test]
async fn the_origin_must_be_allowed_and_no_origin_is_not_a_browser() {
    let backend = spawn_backend().await;
    let yaml = one_upstream_yaml(&backend.url, &[], &[]).replace(
        "allow_origins: [\"*\"]",
        "allow_origins: [\"https://app.example\"]",
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let refused = ws::connect(proxy.addr, UNARY, Some("https://evil.example")).await;
    assert_eq!(refused.err(), Some(http::StatusCode::FORBIDDEN));
    assert_eq!(backend.state.calls.get(), 0);
    for origin in [Some("https://app.example"), None] {
        let mut call = ws::connect(proxy.addr, UNARY, origin).await.unwrap();
        call.start(&[]).await;
        call.send(&echo("ok")).await;
        call.finish().await;
        guard("allowed", call.reply()).await.assert_ok();
    }
}

#[tokio::test]
async fn routes_and_message_limits_apply_per_message() {
    let backend = spawn_backend().await;
    let yaml = one_upstream_yaml(&backend.url, &["max_message_size: 1KiB"], &[]).replace(
        "match: { prefix: / }",
        "match: { service: switchboard.testing.v1.TestService }",
    );
    let proxy = spawn_proxy_yaml(&yaml).await;

    let mut call = open(&proxy, "/other.v1.Svc/Method").await;
    call.start(&[]).await;
    call.finish().await;
    assert_eq!(
        guard("no route", call.reply()).await.code(),
        Code::Unimplemented
    );

    let mut call = open(&proxy, CLIENT_STREAM).await;
    call.start(&[]).await;
    call.send(&echo("small")).await;
    call.send(&EchoRequest {
        payload: vec![7; 2048],
        ..Default::default()
    })
    .await;
    let reply = guard("too large", call.reply()).await;
    assert_eq!(reply.code(), Code::ResourceExhausted, "{reply:#?}");
    assert_eq!(backend.state.uploads.get(), 0);

    let mut call = open(&proxy, SERVER_STREAM).await;
    call.start(&[]).await;
    call.send(&EchoRequest {
        count: 1,
        response_size: 4096,
        ..Default::default()
    })
    .await;
    call.finish().await;
    assert_eq!(
        guard("large reply", call.reply()).await.code(),
        Code::ResourceExhausted
    );
}

#[tokio::test]
async fn malformed_sockets_get_a_status() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let mut call = open(&proxy, UNARY).await;
    call.start(&[]).await;
    call.send_raw(bytes::Bytes::from_static(&[9, 0])).await;
    assert_eq!(
        guard("bad control byte", call.reply()).await.code(),
        Code::InvalidArgument
    );

    let mut call = open(&proxy, UNARY).await;
    call.send_raw(bytes::Bytes::from_static(b"no colon here"))
        .await;
    assert_eq!(
        guard("bad metadata", call.reply()).await.code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_back_the_upstream() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let mut call = open(&proxy, SERVER_STREAM).await;
    call.start(&[]).await;
    // 100 MiB in 400 messages; nothing buffers it all.
    call.send(&EchoRequest {
        count: 400,
        response_size: 256 << 10,
        ..Default::default()
    })
    .await;
    call.finish().await;
    guard("the stream starts", backend.state.sent.until(1)).await;
    // Every window fills (socket buffers, the upstream stream's window): the backend stops.
    assert!(
        !backend
            .state
            .sent
            .reaches(400, Duration::from_secs(2))
            .await,
        "the whole stream went out while the client read nothing"
    );
    let held_back = backend.state.sent.get();
    let reply = guard("reading it all", call.reply()).await;
    reply.assert_ok();
    assert_eq!(reply.messages.len(), 400);
    assert!(held_back < 400);
}

#[tokio::test]
async fn idle_sockets_close_and_pings_keep_the_line_warm() {
    let backend = spawn_backend().await;
    let yaml = format!(
        "websocket: {{ ping_interval: 100ms, idle_timeout: 600ms }}\n{}",
        one_upstream_yaml(&backend.url, &[], &[])
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let mut call = open(&proxy, BIDI).await;
    call.start(&[]).await;
    call.send(&echo("hi")).await;
    let mut pings = 0;
    let mut frames = Vec::new();
    let close = guard("idle close", async {
        loop {
            match call.next().await {
                WsEvent::Ping => pings += 1,
                WsEvent::Frame(flag, payload) => frames.push((flag, payload)),
                WsEvent::Closed(frame) => break frame,
            }
        }
    })
    .await;
    assert!(pings >= 2, "{pings} pings");
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1000));
    let trailers = String::from_utf8_lossy(&frames.last().unwrap().1).into_owned();
    assert!(trailers.contains("grpc-status:14"), "{trailers}");
    assert!(trailers.contains("idle_timeout"), "{trailers}");
    guard(
        "the backend sees the cancel",
        backend.state.cancellations.until(1),
    )
    .await;
}

#[tokio::test]
async fn disabled_transport_and_other_websockets_are_refused() {
    let backend = spawn_backend().await;
    let yaml = format!(
        "websocket: {{ enabled: false }}\n{}",
        one_upstream_yaml(&backend.url, &[], &[])
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    assert_eq!(
        ws::connect(proxy.addr, UNARY, None).await.err(),
        Some(http::StatusCode::NOT_FOUND)
    );
}

#[tokio::test]
async fn route_auth_and_rate_limits_read_the_first_message_metadata() {
    let backend = spawn_backend().await;
    let hash = support::jwt::api_key_hash("key-alice");
    let yaml = one_upstream_yaml(
        &backend.url,
        &[],
        &[
            &format!("auth: {{ api_key: {{ header: x-api-key, keys: [\"{hash}\"] }} }}"),
            "rate_limit: { per_second: 0.01, burst: 2, key: api_key }",
        ],
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let call = |metadata: Vec<(&'static str, &'static str)>| {
        let proxy = &proxy;
        async move {
            let mut call = open(proxy, UNARY).await;
            call.start(&metadata).await;
            call.send(&echo("ws")).await;
            call.finish().await;
            guard("reply", call.reply()).await
        }
    };
    // A browser's WebSocket cannot set headers on the upgrade: the key travels in the
    // call's metadata (the socket's first message), and is checked there.
    for metadata in [vec![], vec![("x-api-key", "key-eve")]] {
        let reply = call(metadata.clone()).await;
        assert_eq!(reply.code(), Code::Unauthenticated, "{metadata:?}");
    }
    assert_eq!(
        backend.state.calls.get(),
        0,
        "refused calls never go upstream"
    );
    for _ in 0..2 {
        call(vec![("x-api-key", "key-alice")]).await.assert_ok();
        assert!(
            !backend.state.last_headers().contains_key("x-api-key"),
            "the key stays at the proxy"
        );
    }
    let limited = call(vec![("x-api-key", "key-alice")]).await;
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:#?}");
    assert_eq!(backend.state.calls.get(), 2);
}
