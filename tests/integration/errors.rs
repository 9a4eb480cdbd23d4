//! Failures as a gRPC-Web caller sees them: proxy-made statuses (routing, upstream,
//! malformed requests, limits, deadlines) and backend errors passed through intact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use http::{Method, StatusCode};
use prost::Message as _;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::support::client::full;
use crate::support::fake::{spawn_non_grpc_upstream, FAKE_BODY, FAKE_STATUS_HEADER};
use crate::support::wire::parse_grpc_timeout;
use crate::support::*;

/// After a failure, the proxy must still serve an ordinary call.
async fn assert_still_serves(addr: SocketAddr) {
    for http in HTTP_VERSIONS {
        let reply = web_call(addr, http, GRPC_WEB_PROTO, UNARY, &echo("still here"), &[]).await;
        assert_eq!(reply.ok_response().message, "still here", "{http:?}");
    }
}

/// Sends a raw gRPC-Web body (already encoded for `content_type`).
async fn raw_call(addr: SocketAddr, http: Http, content_type: &str, body: &[u8]) -> WebReply {
    let req = request(
        Method::POST,
        UNARY,
        Some(content_type),
        &[],
        full(body.to_vec()),
    );
    Client::connect(addr, http)
        .await
        .send(req)
        .await
        .web()
        .await
}

/// Asserts a gRPC-Web error: HTTP 200 and `code` in the trailer frame.
fn assert_code(reply: &WebReply, code: Code, case: &str) {
    assert_eq!(reply.http_status, StatusCode::OK, "{case}: {reply:#?}");
    assert!(
        reply.trailers.is_some(),
        "{case}: status must be in a trailer frame: {reply:#?}"
    );
    assert_eq!(reply.code(), code, "{case}: {reply:#?}");
}

// --- Proxy-made statuses -------------------------------------------------------------------

#[tokio::test]
async fn call_without_route_is_unimplemented() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&unary_only_yaml(&backend.url)).await;
    for ct in PROTO_CONTENT_TYPES {
        let reply = web_call(proxy.addr, Http::H1, ct, LOOKUP, &echo("x"), &[]).await;
        assert_code(&reply, Code::Unimplemented, ct);
    }
    assert_eq!(backend.state.calls.get(), 0);
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn unreachable_upstream_is_unavailable_and_named() {
    let proxy = spawn_proxy_yaml(&closed_upstream_yaml()).await;
    for http in HTTP_VERSIONS {
        for ct in PROTO_CONTENT_TYPES {
            let case = format!("{ct} over {http:?}");
            let reply = web_call(proxy.addr, http, ct, UNARY, &echo("x"), &[]).await;
            assert_code(&reply, Code::Unavailable, &case);
            assert!(
                reply.message().contains("closed-backend"),
                "{case}: message should name the upstream: {:?}",
                reply.message()
            );
        }
    }
}

#[tokio::test]
async fn non_grpc_upstream_answer_maps_http_status_to_code() {
    let fake = spawn_non_grpc_upstream().await;
    let proxy = spawn_proxy(&fake.url).await;
    let table = [
        (502, Code::Unavailable),
        (503, Code::Unavailable),
        (504, Code::Unavailable),
        (429, Code::Unavailable),
        (401, Code::Unauthenticated),
        (403, Code::PermissionDenied),
        (404, Code::Unimplemented),
        (400, Code::Internal),
        (500, Code::Unknown),
    ];
    for (status, code) in table {
        for ct in [GRPC_WEB_PROTO, GRPC_WEB_TEXT] {
            let case = format!("upstream HTTP {status}, {ct}");
            let status_text = status.to_string();
            let headers = [(FAKE_STATUS_HEADER, status_text.as_str())];
            let reply = web_call(proxy.addr, Http::H1, ct, UNARY, &echo("x"), &headers).await;
            assert_code(&reply, code, &case);
            // The body may name internal hosts and software: it goes to the log, not to
            // the caller, who learns the upstream's config name and the HTTP status.
            let message = reply.message();
            assert!(
                !message.contains(FAKE_BODY) && message.contains(&format!("HTTP {status}")),
                "{case}: {message:?}"
            );
        }
    }
}

#[tokio::test]
async fn truncated_request_frame_is_invalid_argument() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    // The header promises 10 bytes; only 3 follow before the body ends.
    let truncated = [0u8, 0, 0, 0, 10, 0x0a, 0x01, b'x'];
    for http in HTTP_VERSIONS {
        for ct in [GRPC_WEB_PROTO, GRPC_WEB_TEXT] {
            let body = if ct == GRPC_WEB_TEXT {
                wire::base64(&truncated).into_bytes()
            } else {
                truncated.to_vec()
            };
            let reply = guard("truncated call", raw_call(proxy.addr, http, ct, &body)).await;
            assert_code(
                &reply,
                Code::InvalidArgument,
                &format!("{ct} over {http:?}"),
            );
        }
    }
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn invalid_base64_in_text_request_is_invalid_argument() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let bodies: [&[u8]; 3] = [
        b"AAAA!!!!",
        b"AAAAAAUKAw==Qn@m",
        // Ends with a partial quantum.
        b"AAAAAAUKAw",
    ];
    for http in HTTP_VERSIONS {
        for body in bodies {
            let case = format!("{:?} over {http:?}", String::from_utf8_lossy(body));
            let reply = guard(
                "bad base64",
                raw_call(proxy.addr, http, GRPC_WEB_TEXT, body),
            )
            .await;
            assert_code(&reply, Code::InvalidArgument, &case);
        }
    }
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn messages_over_the_size_limit_are_resource_exhausted() {
    let backend = spawn_backend().await;
    // The limit set on the route, then on the upstream.
    let configs = [
        one_upstream_yaml(&backend.url, &[], &["max_message_size: 1KiB"]),
        one_upstream_yaml(&backend.url, &["max_message_size: 1024"], &[]),
    ];
    for yaml in configs {
        let proxy = spawn_proxy_yaml(&yaml).await;
        let too_big_request = EchoRequest {
            payload: vec![1; 2048],
            ..echo("big request")
        };
        let too_big_response = EchoRequest {
            response_size: 4096,
            ..echo("big response")
        };
        let too_big_stream_message = EchoRequest {
            response_size: 4096,
            count: 2,
            ..echo("big stream")
        };
        let cases = [
            (UNARY, too_big_request),
            (UNARY, too_big_response),
            (SERVER_STREAM, too_big_stream_message),
        ];
        for (path, msg) in cases {
            for ct in [GRPC_WEB_PROTO, GRPC_WEB_TEXT] {
                let case = format!("{} ({ct}) with {yaml}", msg.message);
                let reply = web_call(proxy.addr, Http::H1, ct, path, &msg, &[]).await;
                assert_code(&reply, Code::ResourceExhausted, &case);
                assert!(
                    reply.messages.is_empty(),
                    "{case}: no oversized message may be delivered"
                );
            }
        }
        // Just under the limit still works.
        let fits = EchoRequest {
            response_size: 800,
            ..echo("fits")
        };
        let reply = web_call(proxy.addr, Http::H1, GRPC_WEB_PROTO, UNARY, &fits, &[]).await;
        assert_eq!(reply.ok_response().payload.len(), 800);
        assert_still_serves(proxy.addr).await;
    }
}

#[tokio::test]
async fn upstream_connection_loss_mid_stream_ends_with_unavailable() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for ct in [GRPC_WEB_PROTO, GRPC_WEB_TEXT] {
        let msg = EchoRequest {
            count: 5,
            ..echo(GATED)
        };
        let mut client = Client::connect(proxy.addr, Http::H1).await;
        let mut stream = client
            .send(web_request(SERVER_STREAM, ct, &frame(&msg)))
            .await
            .web_stream();
        assert_eq!(stream.next_message().await.index, 0, "{ct}");
        backend.state.kill_connections();
        // The caller still gets a proper end: the message it had, then a status.
        let reply = stream.finish().await;
        assert_code(
            &reply,
            Code::Unavailable,
            &format!("{ct}: backend died mid-stream"),
        );
        assert_eq!(reply.messages.len(), 1, "{ct}");
        assert_still_serves(proxy.addr).await;
    }
}

#[tokio::test]
async fn upstream_connection_loss_during_unary_is_unavailable() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for (i, http) in HTTP_VERSIONS.into_iter().enumerate() {
        let addr = proxy.addr;
        let call =
            tokio::spawn(
                async move { web_call(addr, http, GRPC_WEB_PROTO, UNARY, &slow(), &[]).await },
            );
        // Every earlier call (assert_still_serves makes two) has finished.
        let before = i * 3;
        assert!(
            backend.state.calls.reaches(before + 1, GUARD).await,
            "{http:?}: the call never reached the backend"
        );
        backend.state.kill_connections();
        let reply = guard("call after backend died", call).await.unwrap();
        assert_code(
            &reply,
            Code::Unavailable,
            &format!("{http:?}: backend died"),
        );
        assert_still_serves(proxy.addr).await;
    }
}

// --- Backend errors pass through ----------------------------------------------------------

#[tokio::test]
async fn backend_error_code_and_message_pass_through() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let stream_error = EchoRequest {
        count: 0,
        ..failing(Code::FailedPrecondition, UNICODE_MESSAGE, false)
    };
    for http in HTTP_VERSIONS {
        for ct in PROTO_CONTENT_TYPES {
            for (path, msg) in [
                (
                    UNARY,
                    failing(Code::FailedPrecondition, UNICODE_MESSAGE, false),
                ),
                (SERVER_STREAM, stream_error.clone()),
            ] {
                let case = format!("{path} {ct} over {http:?}");
                let reply = web_call(proxy.addr, http, ct, path, &msg, &[]).await;
                assert_code(&reply, Code::FailedPrecondition, &case);
                assert_eq!(reply.message(), UNICODE_MESSAGE, "{case}");
                let raw = reply.raw_message().unwrap();
                assert!(
                    raw.bytes().all(|b| (0x20..=0x7e).contains(&b)),
                    "{case}: grpc-message must be percent-encoded: {raw:?}"
                );
                assert!(
                    raw.contains("100%25"),
                    "{case}: a literal '%' must be sent as %25: {raw:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn backend_error_details_pass_through() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for ct in PROTO_CONTENT_TYPES {
        let msg = failing(Code::InvalidArgument, "message is required", true);
        let reply = web_call(proxy.addr, Http::H1, ct, UNARY, &msg, &[]).await;
        assert_code(&reply, Code::InvalidArgument, ct);
        let raw = reply
            .trailer("grpc-status-details-bin")
            .unwrap_or_else(|| panic!("{ct}: no details in the trailer frame: {reply:#?}"));
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let proto = tonic_types::Status::decode(engine.decode(raw).unwrap().as_slice()).unwrap();
        assert_eq!(proto.code, Code::InvalidArgument as i32, "{ct}");
        assert_eq!(proto.message, "message is required", "{ct}");
        let status = reply.tonic_status();
        let bad = status
            .get_details_bad_request()
            .unwrap_or_else(|| panic!("{ct}: no BadRequest in {proto:?}"));
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "message");
        assert_eq!(bad.field_violations[0].description, "must not be empty");
    }
}

#[tokio::test]
async fn backend_error_metadata_lands_in_the_trailer_frame() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let headers = [("x-header-a", "1"), ("x-trailer-b", "2")];
    for ct in [GRPC_WEB_PROTO, GRPC_WEB_TEXT] {
        // The backend answers Trailers-Only: status and metadata in one header block.
        let msg = failing(Code::NotFound, "user not found", false);
        let reply = web_call(proxy.addr, Http::H1, ct, UNARY, &msg, &headers).await;
        assert_code(&reply, Code::NotFound, ct);
        assert_eq!(reply.message(), "user not found");
        assert_eq!(reply.trailer("x-trailer-b"), Some("2"), "{ct}: {reply:#?}");
        // Trailers-Only cannot say which fields were headers; either place is fine.
        assert!(
            reply.trailer("x-header-a") == Some("1") || reply.header("x-header-a") == Some("1"),
            "{ct}: x-header-a lost: {reply:#?}"
        );
    }
}

#[tokio::test]
async fn trailer_frame_carries_no_http_protocol_headers() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    // PROTOCOLS.md §1.9: HTTP-level fields of the upstream response (hyper's backend adds
    // `date`) are not metadata; a Trailers-Only block must be filtered before it becomes the
    // trailer frame.
    let protocol = [
        "content-type",
        "content-length",
        "date",
        "transfer-encoding",
        "connection",
        "te",
        "trailer",
        "grpc-encoding",
        "grpc-accept-encoding",
        "grpc-timeout",
    ];
    let ok_stream = EchoRequest {
        count: 1,
        ..echo("s")
    };
    let cases = [
        (
            "trailers-only error",
            UNARY,
            failing(Code::NotFound, "gone", false),
        ),
        ("ok unary", UNARY, echo("u")),
        ("ok stream", SERVER_STREAM, ok_stream),
    ];
    for (case, path, msg) in cases {
        let reply = web_call(proxy.addr, Http::H1, GRPC_WEB_PROTO, path, &msg, &[]).await;
        let trailers = reply
            .trailers
            .as_ref()
            .unwrap_or_else(|| panic!("{case}: no trailer frame"));
        for (name, value) in &trailers.0 {
            assert!(
                !protocol.contains(&name.as_str()),
                "{case}: trailer frame carries the protocol header {name}: {value}"
            );
        }
    }
}

#[tokio::test]
async fn stream_error_after_messages_delivers_them_then_the_status() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let msg = EchoRequest {
        count: 3,
        ..failing(Code::Aborted, "stopped after 3", false)
    };
    for http in HTTP_VERSIONS {
        for ct in [GRPC_WEB_PROTO, GRPC_WEB_TEXT] {
            let case = format!("{ct} over {http:?}");
            let reply = web_call(proxy.addr, http, ct, SERVER_STREAM, &msg, &[]).await;
            assert_code(&reply, Code::Aborted, &case);
            assert_eq!(reply.message(), "stopped after 3", "{case}");
            let indexes: Vec<u32> = reply.responses().iter().map(|r| r.index).collect();
            assert_eq!(indexes, [0, 1, 2], "{case}");
        }
    }
}

// --- Deadlines ------------------------------------------------------------------------------

fn slow() -> EchoRequest {
    EchoRequest {
        delay_ms: 3000,
        ..echo("slow")
    }
}

#[tokio::test]
async fn client_deadline_is_deadline_exceeded() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        for ct in [GRPC_WEB_PROTO, GRPC_WEB_TEXT] {
            let case = format!("{ct} over {http:?}");
            let reply = web_call(
                proxy.addr,
                http,
                ct,
                UNARY,
                &slow(),
                &[("grpc-timeout", "200m")],
            )
            .await;
            assert_code(&reply, Code::DeadlineExceeded, &case);
        }
    }
}

#[tokio::test]
async fn deadline_cancels_the_upstream_call() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let reply = web_call(
        proxy.addr,
        Http::H1,
        GRPC_WEB_PROTO,
        UNARY,
        &slow(),
        &[("grpc-timeout", "200m")],
    )
    .await;
    assert_code(&reply, Code::DeadlineExceeded, "200m deadline");
    assert!(
        backend
            .state
            .cancellations
            .reaches(1, Duration::from_secs(5))
            .await,
        "the backend kept working after the deadline"
    );
}

#[tokio::test]
async fn backend_sees_a_deadline_no_longer_than_the_callers() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for (header, limit) in [
        ("5S", Duration::from_secs(5)),
        ("1500m", Duration::from_millis(1500)),
        ("1M", Duration::from_secs(60)),
    ] {
        let reply = web_call(
            proxy.addr,
            Http::H1,
            GRPC_WEB_PROTO,
            UNARY,
            &echo("t"),
            &[("grpc-timeout", header)],
        )
        .await;
        let seen = reply.ok_response().grpc_timeout;
        let parsed = parse_grpc_timeout(&seen)
            .unwrap_or_else(|| panic!("client sent {header}, backend saw {seen:?}"));
        assert!(
            parsed <= limit && !parsed.is_zero(),
            "client sent {header}, backend saw {seen}"
        );
    }
}

#[tokio::test]
async fn configured_timeout_caps_calls_without_a_client_deadline() {
    let backend = spawn_backend().await;
    let configs = [
        (
            "route",
            one_upstream_yaml(&backend.url, &[], &["timeout: 300ms"]),
        ),
        (
            "upstream",
            one_upstream_yaml(&backend.url, &["timeout: 300ms"], &[]),
        ),
    ];
    for (level, yaml) in configs {
        let proxy = spawn_proxy_yaml(&yaml).await;
        let reply = web_call(proxy.addr, Http::H1, GRPC_WEB_PROTO, UNARY, &slow(), &[]).await;
        assert_code(&reply, Code::DeadlineExceeded, level);
        // The cap travels upstream as grpc-timeout.
        let fast = web_call(proxy.addr, Http::H1, GRPC_WEB_PROTO, UNARY, &echo("f"), &[]).await;
        let seen = fast.ok_response().grpc_timeout;
        let parsed = parse_grpc_timeout(&seen)
            .unwrap_or_else(|| panic!("{level}: backend saw grpc-timeout {seen:?}"));
        assert!(parsed <= Duration::from_millis(300), "{level}: {seen}");
    }
}

#[tokio::test]
async fn shorter_client_deadline_beats_the_configured_timeout() {
    let backend = spawn_backend().await;
    let yaml = one_upstream_yaml(&backend.url, &["timeout: 1h"], &["timeout: 10m"]);
    let proxy = spawn_proxy_yaml(&yaml).await;
    let headers = [("grpc-timeout", "200m")];
    let reply = web_call(
        proxy.addr,
        Http::H1,
        GRPC_WEB_PROTO,
        UNARY,
        &slow(),
        &headers,
    )
    .await;
    assert_code(&reply, Code::DeadlineExceeded, "client 200m, route 10m");
    let fast = web_call(
        proxy.addr,
        Http::H1,
        GRPC_WEB_PROTO,
        UNARY,
        &echo("f"),
        &headers,
    )
    .await;
    let seen = fast.ok_response().grpc_timeout;
    let parsed = parse_grpc_timeout(&seen).unwrap_or_else(|| panic!("backend saw {seen:?}"));
    assert!(parsed <= Duration::from_millis(200), "backend saw {seen}");
}

#[tokio::test]
async fn stream_without_timeout_runs_to_completion() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let msg = EchoRequest {
        count: 5,
        delay_ms: 300,
        ..echo("slow stream")
    };
    let reply = web_call(
        proxy.addr,
        Http::H1,
        GRPC_WEB_PROTO,
        SERVER_STREAM,
        &msg,
        &[],
    )
    .await;
    reply.assert_ok();
    let indexes: Vec<u32> = reply.responses().iter().map(|r| r.index).collect();
    assert_eq!(indexes, [0, 1, 2, 3, 4]);
}
