//! gRPC-Web callers (binary and text, HTTP/1.1 and HTTP/2) through the proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http::{Method, Request, StatusCode};

use crate::support::client::empty;
use crate::support::wire::{base64, TRAILER_FLAG};
use crate::support::*;

fn is_text(content_type: &str) -> bool {
    content_type.starts_with("application/grpc-web-text")
}

/// One frame as the request body chunk for `content_type` (its own padded base64 in text).
fn chunk(content_type: &str, msg: &EchoRequest) -> bytes::Bytes {
    let f = frame(msg);
    if is_text(content_type) {
        base64(&f).into()
    } else {
        f
    }
}

#[tokio::test]
async fn unary_round_trips_for_every_content_type_and_http_version() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        for ct in PROTO_CONTENT_TYPES {
            let case = format!("{ct} over {http:?}");
            let msg = EchoRequest {
                payload: vec![0, 1, 2, 0xff],
                ..echo(&case)
            };
            let reply = web_call(proxy.addr, http, ct, UNARY, &msg, &[]).await;
            assert_eq!(reply.http_status, StatusCode::OK, "{case}: {reply:#?}");
            let res = reply.ok_response();
            assert_eq!(res.message, case);
            assert_eq!(res.payload, [0, 1, 2, 0xff], "{case}");
            let got = reply.header("content-type").unwrap_or_default();
            if is_text(ct) {
                assert!(is_text(got), "{case}: text request answered with {got:?}");
                assert!(reply.text, "{case}");
            } else {
                assert_eq!(got, ct, "{case}: content-type must mirror the request");
                assert!(!reply.text, "{case}");
            }
            assert_eq!(reply.trailer("grpc-status"), Some("0"), "{case}");
        }
    }
}

#[tokio::test]
async fn json_content_type_is_recognised_and_mirrored() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let reply = web_call(proxy.addr, http, GRPC_WEB_JSON, UNARY, &echo("json"), &[]).await;
        // The payload codec is the backend's business; the proxy must treat the call as
        // gRPC-Web and answer in kind, with the status in a trailer frame.
        assert_eq!(reply.http_status, StatusCode::OK, "{reply:#?}");
        assert_eq!(reply.header("content-type"), Some(GRPC_WEB_JSON));
        assert!(reply.trailers.is_some(), "{reply:#?}");
        assert!(reply.status().is_some(), "{reply:#?}");
    }
}

#[tokio::test]
async fn text_accept_header_turns_a_binary_request_into_a_text_response() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for ct in [GRPC_WEB, GRPC_WEB_PROTO] {
        let reply = web_call(
            proxy.addr,
            Http::H1,
            ct,
            UNARY,
            &echo("accept"),
            &[("accept", GRPC_WEB_TEXT)],
        )
        .await;
        let got = reply.header("content-type").unwrap_or_default();
        assert!(is_text(got), "{ct} + accept text answered with {got:?}");
        assert!(reply.text);
        assert_eq!(reply.ok_response().message, "accept");
    }
}

#[tokio::test]
async fn text_request_made_of_separately_padded_chunks() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    // PROTOCOLS.md §8.4: the frame of EchoRequest{message:"Buf"} as two padded chunks. The
    // body is written in pieces that split it at, and across, the padding.
    let splits: [&[&str]; 4] = [
        &["AAAAAAUKAw==QnVm"],
        &["AAAAAAUKAw==", "QnVm"],
        &["AAAAAAU", "KAw=", "=Qn", "Vm"],
        &["AAAAAAUKA0J1Zg=="],
    ];
    for http in HTTP_VERSIONS {
        for pieces in splits {
            let mut client = Client::connect(proxy.addr, http).await;
            let (tx, stream) = {
                let (tx, body) = streaming_body();
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(UNARY)
                    .header("content-type", GRPC_WEB_TEXT)
                    .body(body)
                    .unwrap();
                let res = tokio::spawn(async move { client.send(req).await.web().await });
                (tx, res)
            };
            for p in pieces {
                tx.send(p.to_owned()).await;
            }
            drop(tx);
            let reply = guard("text call", stream).await.unwrap();
            assert_eq!(
                reply.ok_response().message,
                "Buf",
                "{pieces:?} over {http:?}"
            );
        }
    }
}

#[tokio::test]
async fn methods_other_than_post_are_405() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let req = Request::builder()
                .method(method.clone())
                .uri(UNARY)
                .header("content-type", GRPC_WEB_PROTO)
                .body(empty())
                .unwrap();
            let reply = Client::connect(proxy.addr, http).await.send(req).await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} over {http:?}"
            );
        }
    }
    assert_eq!(backend.state.calls.get(), 0);
}

#[tokio::test]
async fn unknown_content_types_are_415() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        for ct in ["text/plain", "application/octet-stream", "application/xml"] {
            let req = web_request(UNARY, ct, &frame(&echo("x")));
            let reply = Client::connect(proxy.addr, http).await.send(req).await;
            assert_eq!(
                reply.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{ct} over {http:?}"
            );
        }
    }
    assert_eq!(backend.state.calls.get(), 0);
}

#[tokio::test]
async fn server_stream_messages_arrive_before_the_stream_ends() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        for ct in [GRPC_WEB_PROTO, GRPC_WEB_TEXT] {
            let case = format!("{ct} over {http:?}");
            let sent_before = backend.state.sent.get();
            // A gated stream: the backend sends message 0, then waits for the test before
            // each further message. The first message can only reach us if the proxy
            // forwards it while the stream is still open.
            let msg = EchoRequest {
                count: 3,
                ..echo(GATED)
            };
            let req = web_request(SERVER_STREAM, ct, &frame(&msg));
            let mut client = Client::connect(proxy.addr, http).await;
            let mut stream = client.send(req).await.web_stream();
            assert_eq!(stream.status, StatusCode::OK, "{case}");
            let first = stream.next_message().await;
            assert_eq!(first.index, 0, "{case}");
            assert_eq!(
                backend.state.sent.get() - sent_before,
                1,
                "{case}: the stream must still be open"
            );
            backend.state.open_gate(2);
            assert_eq!(stream.next_message().await.index, 1, "{case}");
            assert_eq!(stream.next_message().await.index, 2, "{case}");
            let (flag, _) = stream.next_frame().await.expect("trailer frame");
            assert_eq!(flag, TRAILER_FLAG, "{case}");
            let reply = stream.finish().await;
            assert_eq!(reply.status(), Some(0), "{case}: {reply:#?}");
            assert_eq!(reply.messages.len(), 3, "{case}");
        }
    }
}

#[tokio::test]
async fn client_stream_over_http2() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for ct in [GRPC_WEB_PROTO, GRPC_WEB_TEXT] {
        let mut client = Client::connect(proxy.addr, Http::H2).await;
        let (tx, body) = streaming_body();
        let req = Request::builder()
            .method(Method::POST)
            .uri(CLIENT_STREAM)
            .header("content-type", ct)
            .body(body)
            .unwrap();
        let call = tokio::spawn(async move { client.send(req).await.web().await });
        for (i, word) in ["a", "b", "c"].iter().enumerate() {
            let msg = EchoRequest {
                payload: vec![b'0' + i as u8],
                ..echo(word)
            };
            tx.send(chunk(ct, &msg)).await;
        }
        drop(tx);
        let reply = guard("client stream", call).await.unwrap();
        let res = reply.ok_response();
        assert_eq!(res.message, "a,b,c", "{ct}");
        assert_eq!(res.payload, b"012", "{ct}");
    }
}

#[tokio::test]
async fn bidi_over_http2_interleaves() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for ct in [GRPC_WEB_PROTO, GRPC_WEB_TEXT] {
        let mut client = Client::connect(proxy.addr, Http::H2).await;
        let (tx, body) = streaming_body();
        let req = Request::builder()
            .method(Method::POST)
            .uri(BIDI)
            .header("content-type", ct)
            .body(body)
            .unwrap();
        tx.send(chunk(ct, &echo("one"))).await;
        let mut stream = client.send(req).await.web_stream();
        // Each answer is read before the next request is written.
        for (i, word) in ["one", "two", "three"].iter().enumerate() {
            if i > 0 {
                tx.send(chunk(ct, &echo(word))).await;
            }
            let m = stream.next_message().await;
            assert_eq!((m.message.as_str(), m.index), (*word, i as u32), "{ct}");
        }
        drop(tx);
        let reply = stream.finish().await;
        assert_eq!(reply.status(), Some(0), "{ct}: {reply:#?}");
    }
}

#[tokio::test]
async fn custom_metadata_travels_both_ways() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let headers = [("x-header-a", "1"), ("x-trailer-b", "2"), ("x-custom", "c")];
    for ct in [GRPC_WEB_PROTO, GRPC_WEB_TEXT] {
        let unary = web_call(proxy.addr, Http::H1, ct, UNARY, &echo("m"), &headers).await;
        let stream_msg = EchoRequest {
            count: 2,
            ..echo("m")
        };
        let stream = web_call(
            proxy.addr,
            Http::H1,
            ct,
            SERVER_STREAM,
            &stream_msg,
            &headers,
        )
        .await;
        for (name, reply) in [("unary", unary), ("stream", stream)] {
            reply.assert_ok();
            let res = &reply.responses()[0];
            assert_eq!(
                res.metadata.get("x-custom").map(String::as_str),
                Some("c"),
                "{ct} {name}: request metadata must reach the backend"
            );
            assert_eq!(
                reply.header("x-header-a"),
                Some("1"),
                "{ct} {name}: {reply:#?}"
            );
            assert_eq!(
                reply.trailer("x-trailer-b"),
                Some("2"),
                "{ct} {name}: {reply:#?}"
            );
        }
    }
}

#[tokio::test]
async fn upstream_request_is_native_grpc() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for ct in PROTO_CONTENT_TYPES {
        web_call(proxy.addr, Http::H1, ct, UNARY, &echo("x"), &[])
            .await
            .assert_ok();
        let h = backend.state.last_headers();
        let upstream_ct = h.get("content-type").unwrap().to_str().unwrap();
        assert!(
            upstream_ct.starts_with("application/grpc") && !upstream_ct.contains("web"),
            "{ct} went upstream as {upstream_ct:?}"
        );
        assert_eq!(h.get("te").map(|v| v.to_str().unwrap()), Some("trailers"));
    }
}

#[tokio::test]
async fn large_messages_within_the_limit_pass_in_both_modes() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        for ct in [GRPC_WEB_PROTO, GRPC_WEB_TEXT] {
            let msg = EchoRequest {
                payload: vec![7; 1 << 20],
                response_size: 2 << 20,
                ..echo("big")
            };
            let reply = web_call(proxy.addr, http, ct, UNARY, &msg, &[]).await;
            let res = reply.ok_response();
            assert_eq!(res.payload.len(), 2 << 20, "{ct} over {http:?}");
            assert!(res.payload.iter().all(|b| *b == b'x'));
        }
    }
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for (i, http) in HTTP_VERSIONS.into_iter().enumerate() {
        let msg = EchoRequest {
            count: 1000,
            ..echo(GATED)
        };
        let mut client = Client::connect(proxy.addr, http).await;
        let mut stream = client
            .send(web_request(SERVER_STREAM, GRPC_WEB_PROTO, &frame(&msg)))
            .await
            .web_stream();
        assert_eq!(stream.next_message().await.index, 0);
        // Going away: the connection closes with the stream half-way.
        drop(stream);
        drop(client);
        assert!(
            backend
                .state
                .cancellations
                .reaches(i + 1, Duration::from_secs(5))
                .await,
            "{http:?}: the backend never saw the call cancelled"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_share_few_upstream_connections() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let addr = proxy.addr;
            tokio::spawn(async move {
                let msg = EchoRequest {
                    delay_ms: 50,
                    ..echo(&format!("call {i}"))
                };
                let reply = web_call(addr, Http::H1, GRPC_WEB_PROTO, UNARY, &msg, &[]).await;
                assert_eq!(reply.ok_response().message, format!("call {i}"));
            })
        })
        .collect();
    for c in calls {
        guard("concurrent call", c).await.unwrap();
    }
    assert_eq!(backend.state.calls.get(), 50);
    let conns = backend.state.connections.get();
    assert!(
        (1..=4).contains(&conns),
        "50 calls used {conns} upstream connections"
    );
}

#[tokio::test]
async fn tls_listener_serves_http1_and_h2() {
    let backend = spawn_backend().await;
    let cert = tls::test_cert("tls-listener");
    let yaml = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
    tls: {{ cert: "{}", key: "{}" }}
upstreams:
  - name: backend
    endpoints: ["{}"]
routes:
  - match: {{ prefix: / }}
    upstream: backend
"#,
        cert.cert_path.display(),
        cert.key_path.display(),
        backend.url
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    for (alpn, http) in [(&b"http/1.1"[..], Http::H1), (&b"h2"[..], Http::H2)] {
        let io = tls::connect(proxy.addr, &cert, alpn).await;
        assert_eq!(io.get_ref().1.alpn_protocol(), Some(alpn));
        let mut client = Client::over(
            io,
            format!("localhost:{}", proxy.addr.port()),
            "https",
            http,
        )
        .await;
        let reply = client
            .send(web_request(UNARY, GRPC_WEB_PROTO, &frame(&echo("secure"))))
            .await
            .web()
            .await;
        assert_eq!(reply.ok_response().message, "secure", "{http:?}");
    }
}
