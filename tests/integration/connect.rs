//! Connect callers (unary POST and GET, enveloped streams, HTTP/1.1 and HTTP/2) through the
//! proxy to the tonic backend. PROTOCOLS.md §3, §5 and the vectors of §8.5–§8.12.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

// --- Unary POST ----------------------------------------------------------------------------

#[tokio::test]
async fn unary_round_trips_with_metadata_over_both_http_versions() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let msg = EchoRequest {
            payload: vec![0, 1, 2, 0xff],
            ..echo(&case)
        };
        let res = unary(
            proxy.addr,
            http,
            &msg,
            &[("x-header-a", "h"), ("x-trailer-a", "t"), ("x-custom", "c")],
        )
        .await;
        let out = res.ok_proto();
        assert_eq!(out.message, case);
        assert_eq!(out.payload, [0, 1, 2, 0xff], "{case}");
        assert_eq!(out.metadata.get("x-custom").map(String::as_str), Some("c"));
        assert!(
            !out.metadata.keys().any(|k| k.starts_with("connect-")),
            "{case}: connect-* headers must not reach the backend: {:?}",
            out.metadata
        );
        // Response headers stay headers; trailers become `trailer-` headers (§3.3).
        assert_eq!(res.header("x-header-a"), Some("h"), "{case}: {res:#?}");
        assert_eq!(
            res.header("trailer-x-trailer-a"),
            Some("t"),
            "{case}: {res:#?}"
        );
        for name in res.headers.keys() {
            let name = name.as_str();
            assert!(
                !name.starts_with("grpc-") && !name.starts_with("trailer-grpc-"),
                "{case}: gRPC protocol header {name} leaked into a Connect response"
            );
        }
        let sent = backend.state.last_headers();
        assert!(
            sent.get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc")),
            "{case}: backend saw {sent:?}"
        );
    }
}

#[tokio::test]
async fn protocol_version_header_absent_is_accepted_and_wrong_is_invalid() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let req = request(
            Method::POST,
            UNARY,
            Some(PROTO),
            &[],
            full(echo("no version").encode_to_vec()),
        );
        assert_eq!(
            send(proxy.addr, http, req).await.ok_proto().message,
            "no version"
        );

        let req = request(
            Method::POST,
            UNARY,
            Some(PROTO),
            &[("connect-protocol-version", "2")],
            full(echo("v2").encode_to_vec()),
        );
        let res = send(proxy.addr, http, req).await;
        res.error(400, "invalid_argument", &format!("unary v2 over {http:?}"));

        let req = request(
            Method::POST,
            SERVER_STREAM,
            Some(CONNECT_PROTO),
            &[("connect-protocol-version", "2")],
            full(frame(&EchoRequest {
                count: 1,
                ..echo("v2")
            })),
        );
        let mut client = Client::connect(proxy.addr, http).await;
        let s = read_stream::<EchoResponse>(client.send(req).await).await;
        s.error("invalid_argument", &format!("stream v2 over {http:?}"));
        assert!(s.messages.is_empty());
    }
    // Only the two accepted calls reached the backend.
    assert_eq!(backend.state.calls.get(), 2);
}

#[tokio::test]
async fn unary_error_codes_map_to_http_status_and_json() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    // PROTOCOLS.md §1.10 / the Connect table, with Connect's code names.
    let table = [
        (Code::Cancelled, 499, "canceled"),
        (Code::Unknown, 500, "unknown"),
        (Code::InvalidArgument, 400, "invalid_argument"),
        (Code::DeadlineExceeded, 504, "deadline_exceeded"),
        (Code::NotFound, 404, "not_found"),
        (Code::AlreadyExists, 409, "already_exists"),
        (Code::PermissionDenied, 403, "permission_denied"),
        (Code::ResourceExhausted, 429, "resource_exhausted"),
        (Code::FailedPrecondition, 400, "failed_precondition"),
        (Code::Aborted, 409, "aborted"),
        (Code::OutOfRange, 400, "out_of_range"),
        (Code::Unimplemented, 501, "unimplemented"),
        (Code::Internal, 500, "internal"),
        (Code::Unavailable, 503, "unavailable"),
        (Code::DataLoss, 500, "data_loss"),
        (Code::Unauthenticated, 401, "unauthenticated"),
    ];
    for http in HTTP_VERSIONS {
        for (code, status, name) in table {
            let case = format!("{code:?} over {http:?}");
            let res = unary(proxy.addr, http, &failing(code, &case, false), &[]).await;
            let json = res.error(status, name, &case);
            assert_eq!(json["message"], case.as_str(), "{case}");
            assert!(json.get("details").is_none(), "{case}: {json}");
        }
    }
}

#[tokio::test]
async fn unary_error_details_and_metadata() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let res = unary(
            proxy.addr,
            http,
            &failing(Code::InvalidArgument, "name is required", true),
            &[("x-trailer-a", "t")],
        )
        .await;
        let json = res.error(400, "invalid_argument", &case);
        assert_eq!(json["message"], "name is required", "{case}");
        assert_bad_request_detail(&json, &case);
        // A Trailers-Only error cannot tell headers from trailers: either form is fine.
        assert!(
            res.header("trailer-x-trailer-a") == Some("t")
                || res.header("x-trailer-a") == Some("t"),
            "{case}: error metadata lost: {res:#?}"
        );
    }
}

#[tokio::test]
async fn unicode_and_percent_in_error_messages_round_trip() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let messages = [
        UNICODE_MESSAGE,
        "100% done",
        "50%",
        "%zz",
        "\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\n",
    ];
    for http in HTTP_VERSIONS {
        for message in messages {
            let case = format!("{message:?} over {http:?}");
            let res = unary(
                proxy.addr,
                http,
                &failing(Code::NotFound, message, false),
                &[],
            )
            .await;
            let json = res.error(404, "not_found", &case);
            assert_eq!(json["message"], message, "{case}");
        }
        let req = EchoRequest {
            count: 1,
            ..failing(Code::Aborted, UNICODE_MESSAGE, false)
        };
        let s = proto_stream(proxy.addr, http, SERVER_STREAM, frame(&req), &[]).await;
        assert_eq!(s.error("aborted", "stream")["message"], UNICODE_MESSAGE);
        assert_eq!(s.messages.len(), 1);
    }
}

// --- Timeouts ------------------------------------------------------------------------------

#[tokio::test]
async fn connect_timeout_becomes_a_deadline() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        // Propagated: the backend sees a grpc-timeout no longer than the caller's budget.
        let res = unary(
            proxy.addr,
            http,
            &echo("t"),
            &[("connect-timeout-ms", "5000")],
        )
        .await;
        let seen = res.ok_proto().grpc_timeout;
        let parsed = parse_grpc_timeout(&seen)
            .unwrap_or_else(|| panic!("{case}: backend saw grpc-timeout {seen:?}"));
        assert!(
            !parsed.is_zero() && parsed <= Duration::from_secs(5),
            "{case}: backend saw {seen}"
        );

        // No timeout, no grpc-timeout.
        let res = unary(proxy.addr, http, &echo("none"), &[]).await;
        assert_eq!(res.ok_proto().grpc_timeout, "", "{case}");

        // Enforced: a slow backend ends in deadline_exceeded (504).
        let slow = EchoRequest {
            delay_ms: 3000,
            ..echo("slow")
        };
        let cancelled = backend.state.cancellations.get();
        let res = unary(proxy.addr, http, &slow, &[("connect-timeout-ms", "200")]).await;
        res.error(504, "deadline_exceeded", &case);
        // ... and the upstream call is cancelled rather than left running.
        assert!(
            backend
                .state
                .cancellations
                .reaches(cancelled + 1, GUARD)
                .await,
            "{case}: the backend call was not cancelled"
        );

        // Zero is already expired (§4).
        let res = unary(
            proxy.addr,
            http,
            &echo("zero"),
            &[("connect-timeout-ms", "0")],
        )
        .await;
        res.error(504, "deadline_exceeded", &format!("0 ms over {http:?}"));
    }
}

#[tokio::test]
async fn malformed_connect_timeout_is_invalid_argument() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        for value in ["abc", "-5", "12345678901", "1.5"] {
            let case = format!("connect-timeout-ms {value:?} over {http:?}");
            let res = unary(
                proxy.addr,
                http,
                &echo("t"),
                &[("connect-timeout-ms", value)],
            )
            .await;
            res.error(400, "invalid_argument", &case);
        }
        let req = EchoRequest {
            count: 1,
            ..echo("t")
        };
        let s = proto_stream(
            proxy.addr,
            http,
            SERVER_STREAM,
            frame(&req),
            &[("connect-timeout-ms", "abc")],
        )
        .await;
        s.error("invalid_argument", &format!("stream over {http:?}"));
    }
    assert_eq!(backend.state.calls.get(), 0);
}

// --- Compression and limits ----------------------------------------------------------------

#[tokio::test]
async fn gzip_request_bodies_are_decompressed() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let msg = EchoRequest {
            payload: vec![7; 5000],
            ..echo("zipped")
        };
        let res = post_proto(
            proxy.addr,
            http,
            UNARY,
            gzip(&msg.encode_to_vec()),
            &[("content-encoding", "gzip")],
        )
        .await;
        let out = res.ok_proto();
        assert_eq!(out.message, "zipped", "{http:?}");
        assert_eq!(out.payload, vec![7; 5000], "{http:?}");

        // A zero-length body is the empty message and is never decompressed (§3.2).
        let res = post_proto(
            proxy.addr,
            http,
            UNARY,
            Bytes::new(),
            &[("content-encoding", "gzip")],
        )
        .await;
        assert_eq!(res.ok_proto(), EchoResponse::default(), "{http:?}");

        // Corrupt gzip is the caller's fault (§5: connect-go says invalid_argument).
        let res = post_proto(
            proxy.addr,
            http,
            UNARY,
            &b"definitely not gzip"[..],
            &[("content-encoding", "gzip")],
        )
        .await;
        res.error(
            400,
            "invalid_argument",
            &format!("corrupt gzip over {http:?}"),
        );
        let s = proto_stream(
            proxy.addr,
            http,
            CLIENT_STREAM,
            frame_with_flag(COMPRESSED, b"definitely not gzip"),
            &[("connect-content-encoding", "gzip")],
        )
        .await;
        s.error(
            "invalid_argument",
            &format!("corrupt gzip envelope over {http:?}"),
        );
    }
}

#[tokio::test]
async fn responses_are_gzipped_when_accepted_and_large() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let big = EchoRequest {
            response_size: 10_000,
            ..echo("big")
        };
        let res = unary(proxy.addr, http, &big, &[("accept-encoding", "gzip")]).await;
        assert_eq!(
            res.header("content-encoding"),
            Some("gzip"),
            "{case}: {res:#?}"
        );
        assert!(res.body.len() < 10_000, "{case}: {} bytes", res.body.len());
        let out = res.ok_proto();
        assert_eq!(out.message, "big");
        assert_eq!(out.payload, vec![b'x'; 10_000], "{case}");

        // Browsers list several codings; gzip anywhere in the list counts.
        let res = unary(
            proxy.addr,
            http,
            &big,
            &[("accept-encoding", "br, gzip, deflate")],
        )
        .await;
        assert_eq!(res.header("content-encoding"), Some("gzip"), "{case}");
        assert_eq!(res.ok_proto().payload.len(), 10_000);

        // Small responses stay uncompressed.
        let res = unary(
            proxy.addr,
            http,
            &echo("small"),
            &[("accept-encoding", "gzip")],
        )
        .await;
        assert_eq!(res.header("content-encoding"), None, "{case}: {res:#?}");
        assert_eq!(res.ok_proto().message, "small");

        // Nothing accepted, nothing compressed.
        let res = unary(proxy.addr, http, &big, &[]).await;
        assert_eq!(res.header("content-encoding"), None, "{case}: {res:#?}");
        assert_eq!(res.ok_proto().payload.len(), 10_000);
    }
}

#[tokio::test]
async fn unsupported_request_encoding_is_unimplemented() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let res = post_proto(
            proxy.addr,
            http,
            UNARY,
            echo("br").encode_to_vec(),
            &[("content-encoding", "br")],
        )
        .await;
        let json = res.error(501, "unimplemented", &format!("{http:?}"));
        let message = json["message"].as_str().unwrap_or_default();
        assert!(message.contains("gzip"), "should list supported: {json}");
    }
    assert_eq!(backend.state.calls.get(), 0);
}

#[tokio::test]
async fn gzip_bomb_and_oversized_body_are_resource_exhausted() {
    let backend = spawn_backend().await;
    let yaml = one_upstream_yaml(&backend.url, &["max_message_size: 64KiB"], &[]);
    let proxy = spawn_proxy_yaml(&yaml).await;
    // ~1 MiB of zeros is about 1 KiB of gzip: small on the wire, far over the limit inflated.
    let bomb = gzip(
        &EchoRequest {
            payload: vec![0; 1 << 20],
            ..echo("bomb")
        }
        .encode_to_vec(),
    );
    assert!(bomb.len() < 64 << 10);
    let too_big = EchoRequest {
        payload: vec![1; 100 << 10],
        ..echo("too big")
    }
    .encode_to_vec();
    for http in HTTP_VERSIONS {
        let res = post_proto(
            proxy.addr,
            http,
            UNARY,
            bomb.clone(),
            &[("content-encoding", "gzip")],
        )
        .await;
        res.error(429, "resource_exhausted", &format!("bomb over {http:?}"));
        let res = post_proto(proxy.addr, http, UNARY, too_big.clone(), &[]).await;
        res.error(
            429,
            "resource_exhausted",
            &format!("big body over {http:?}"),
        );
        // A response over the limit is refused too.
        let big_answer = EchoRequest {
            response_size: 100 << 10,
            ..echo("big answer")
        };
        let res = unary(proxy.addr, http, &big_answer, &[]).await;
        res.error(
            429,
            "resource_exhausted",
            &format!("big answer over {http:?}"),
        );
    }
    assert_eq!(
        backend.state.calls.get(),
        2,
        "only the big answers were forwarded"
    );
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn stream_messages_over_the_limit_are_resource_exhausted() {
    let backend = spawn_backend().await;
    let yaml = one_upstream_yaml(&backend.url, &["max_message_size: 64KiB"], &[]);
    let proxy = spawn_proxy_yaml(&yaml).await;
    let bomb = frame_with_flag(
        COMPRESSED,
        &gzip(
            &EchoRequest {
                payload: vec![0; 1 << 20],
                ..echo("bomb")
            }
            .encode_to_vec(),
        ),
    );
    let too_big = frame(&EchoRequest {
        payload: vec![1; 100 << 10],
        ..echo("too big")
    });
    let big_answers = frame(&EchoRequest {
        count: 2,
        response_size: 100 << 10,
        ..echo("big answers")
    });
    for http in HTTP_VERSIONS {
        let cases = [
            ("gzip bomb envelope", CLIENT_STREAM, bomb.clone(), "gzip"),
            (
                "oversized envelope",
                CLIENT_STREAM,
                too_big.clone(),
                "identity",
            ),
            (
                "oversized response",
                SERVER_STREAM,
                big_answers.clone(),
                "identity",
            ),
        ];
        for (what, path, body, encoding) in cases {
            let case = format!("{what} over {http:?}");
            let s = proto_stream(
                proxy.addr,
                http,
                path,
                body,
                &[("connect-content-encoding", encoding)],
            )
            .await;
            s.error("resource_exhausted", &case);
            assert!(
                s.messages.is_empty(),
                "{case}: no oversized message may pass"
            );
        }
    }
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn compressed_flag_without_encoding_is_an_error() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    // Flag 0x01 without connect-content-encoding: the message cannot be decoded (§5: INTERNAL).
    let body = frame_with_flag(
        COMPRESSED,
        &gzip(
            &EchoRequest {
                count: 1,
                ..echo("x")
            }
            .encode_to_vec(),
        ),
    );
    for http in HTTP_VERSIONS {
        let s = proto_stream(proxy.addr, http, SERVER_STREAM, body.clone(), &[]).await;
        assert!(s.messages.is_empty(), "{http:?}: {s:#?}");
        s.error("internal", &format!("{http:?}"));
    }
}

// --- Unary GET -----------------------------------------------------------------------------

#[tokio::test]
async fn get_round_trips_with_vary() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    // 0xfb 0xff 0xfe is `-__-` in URL-safe base64: both URL-only characters.
    let msg = EchoRequest {
        payload: vec![0xfb, 0xff, 0xfe],
        ..echo("get")
    };
    let bytes = msg.encode_to_vec();
    for http in HTTP_VERSIONS {
        for compression in [None, Some("gzip")] {
            let case = format!("compression {compression:?} over {http:?}");
            let payload = match compression {
                Some(_) => gzip(&bytes),
                None => bytes.clone(),
            };
            let res = get(
                proxy.addr,
                http,
                &get_url(&payload, compression),
                &[("x-header-a", "h")],
            )
            .await;
            let out = res.ok_proto();
            assert_eq!(out.message, "get", "{case}");
            assert_eq!(out.payload, [0xfb, 0xff, 0xfe], "{case}");
            assert_eq!(res.header("x-header-a"), Some("h"), "{case}");
            let vary: Vec<String> = res
                .headers
                .get_all("vary")
                .iter()
                .flat_map(|v| v.to_str().unwrap().split(','))
                .map(|s| s.trim().to_ascii_lowercase())
                .collect();
            assert!(
                vary.iter().any(|v| v == "accept-encoding"),
                "{case}: vary {vary:?}"
            );
        }
    }
    // `connect=v1` is optional, parameters come in any order, unknown ones are ignored.
    let url = format!(
        "{LOOKUP}?message={}&foo=bar&encoding=proto&base64=1",
        URL_SAFE_NO_PAD.encode(echo("order").encode_to_vec())
    );
    assert_eq!(
        get(proxy.addr, Http::H2, &url, &[])
            .await
            .ok_proto()
            .message,
        "order"
    );
    // §8.9: padded base64 (percent-encoded '=') is accepted as well.
    let padded = base64::engine::general_purpose::URL_SAFE.encode(echo("pad").encode_to_vec());
    let url = format!(
        "{LOOKUP}?connect=v1&base64=1&encoding=proto&message={}",
        padded.replace('=', "%3D")
    );
    assert_eq!(
        get(proxy.addr, Http::H1, &url, &[])
            .await
            .ok_proto()
            .message,
        "pad"
    );
}

#[tokio::test]
async fn get_with_json_encoding_is_answered_not_hung() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    // The tonic backend has no JSON codec: only check that the proxy answers in Connect form.
    let url = format!("{LOOKUP}?connect=v1&encoding=json&message=%7B%22message%22%3A%22hi%22%7D");
    for http in HTTP_VERSIONS {
        let res = get(proxy.addr, http, &url, &[]).await;
        assert_eq!(
            res.header("content-type"),
            Some("application/json"),
            "{http:?}: {res:#?}"
        );
        let json: Value = serde_json::from_slice(&res.body).unwrap();
        if res.status != StatusCode::OK {
            assert!(json["code"].is_string(), "{http:?}: {json}");
        }
    }
    let sent = backend.state.last_headers();
    // Today the query's JSON is forwarded as application/grpc+json; once JSON transcoding
    // lands it may become application/grpc. Either way it is gRPC.
    assert!(
        sent["content-type"]
            .as_bytes()
            .starts_with(b"application/grpc"),
        "backend saw {sent:?}"
    );
}

#[tokio::test]
async fn malformed_get_queries_are_invalid_argument() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let good = URL_SAFE_NO_PAD.encode(echo("x").encode_to_vec());
    let cases = [
        (
            "missing message",
            "connect=v1&base64=1&encoding=proto".to_owned(),
        ),
        (
            "invalid base64",
            "connect=v1&base64=1&encoding=proto&message=%21%21%21%21".to_owned(),
        ),
        (
            "connect=v2",
            format!("connect=v2&base64=1&encoding=proto&message={good}"),
        ),
        (
            "missing encoding",
            format!("connect=v1&base64=1&message={good}"),
        ),
    ];
    let unsupported = format!("connect=v1&base64=1&compression=br&encoding=proto&message={good}");
    for http in HTTP_VERSIONS {
        for (what, query) in &cases {
            let case = format!("{what} over {http:?}");
            let res = get(proxy.addr, http, &format!("{LOOKUP}?{query}"), &[]).await;
            res.error(400, "invalid_argument", &case);
        }
        let res = get(proxy.addr, http, &format!("{LOOKUP}?{unsupported}"), &[]).await;
        res.error(
            501,
            "unimplemented",
            &format!("compression=br over {http:?}"),
        );
    }
    assert_eq!(backend.state.calls.get(), 0);
}

// --- Streams -------------------------------------------------------------------------------

#[tokio::test]
async fn server_stream_delivers_messages_then_end_stream() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let req = EchoRequest {
            count: 3,
            ..echo("s")
        };
        let s = proto_stream(proxy.addr, http, SERVER_STREAM, frame(&req), &[]).await;
        let messages = s.ok(&case);
        assert_eq!(
            messages.iter().map(|m| m.index).collect::<Vec<_>>(),
            [0, 1, 2],
            "{case}"
        );
        assert!(messages.iter().all(|m| m.message == "s"), "{case}");
        // §8.6: success is exactly `{}`.
        assert_eq!(s.end, json!({}), "{case}");
        assert!(
            s.headers.get("content-encoding").is_none(),
            "{case}: no HTTP compression on streams"
        );

        // Trailers become end-stream metadata; headers stay headers.
        let s = proto_stream(
            proxy.addr,
            http,
            SERVER_STREAM,
            frame(&req),
            &[("x-trailer-a", "v"), ("x-header-b", "w")],
        )
        .await;
        assert_eq!(s.ok(&case).len(), 3);
        assert_eq!(s.end, json!({"metadata": {"x-trailer-a": ["v"]}}), "{case}");
        assert_eq!(
            s.headers.get("x-header-b").map(|v| v.to_str().unwrap()),
            Some("w"),
            "{case}"
        );

        // Repeated and binary metadata: arrays of values, `-bin` values stay base64 (§3.7).
        let s = proto_stream(
            proxy.addr,
            http,
            SERVER_STREAM,
            frame(&req),
            &[
                ("x-trailer-a", "1"),
                ("x-trailer-a", "2"),
                ("x-trailer-data-bin", "AAEC/v8"),
            ],
        )
        .await;
        assert_eq!(s.ok(&case).len(), 3);
        assert_eq!(
            s.end,
            json!({"metadata": {"x-trailer-a": ["1", "2"], "x-trailer-data-bin": ["AAEC/v8"]}}),
            "{case}"
        );

        // Zero messages is a valid stream.
        let s = proto_stream(proxy.addr, http, SERVER_STREAM, frame(&echo("none")), &[]).await;
        assert!(s.ok(&case).is_empty());
        assert_eq!(s.end, json!({}));
    }
}

#[tokio::test]
async fn server_stream_messages_are_not_buffered() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let sent_before = backend.state.sent.get();
        let req = EchoRequest {
            count: 3,
            ..echo(GATED)
        };
        let mut client = Client::connect(proxy.addr, http).await;
        let reply = client
            .send(stream_request(
                SERVER_STREAM,
                CONNECT_PROTO,
                &[],
                full(frame(&req)),
            ))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{case}");
        let (status, headers) = (reply.status, reply.headers.clone());
        let mut envelopes = Envelopes::new(reply.body);
        // The backend holds the rest of the stream until the gate opens, so the first message
        // can only arrive here if the proxy forwards it while the stream is still open.
        let (flag, payload) = envelopes.next().await.expect("first envelope");
        assert_eq!(flag, 0, "{case}: the first envelope must be a message");
        let first = EchoResponse::decode(&payload[..]).unwrap();
        assert_eq!(first.index, 0, "{case}");
        assert_eq!(backend.state.sent.get(), sent_before + 1, "{case}");
        backend.state.open_gate(2);
        let s = finish_stream(status, headers, &mut envelopes, vec![first]).await;
        assert_eq!(s.ok(&case).len(), 3, "{case}");
        assert_eq!(s.end, json!({}));
    }
}

#[tokio::test]
async fn stream_error_after_messages_is_in_the_end_stream() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let req = EchoRequest {
            count: 2,
            ..failing(Code::Unavailable, "overloaded", true)
        };
        let s = proto_stream(
            proxy.addr,
            http,
            SERVER_STREAM,
            frame(&req),
            &[("x-trailer-cost", "237")],
        )
        .await;
        assert_eq!(s.messages.len(), 2, "{case}");
        let error = s.error("unavailable", &case);
        assert_eq!(error["message"], "overloaded", "{case}");
        assert_bad_request_detail(error, &case);
        assert_eq!(
            s.end["metadata"],
            json!({"x-trailer-cost": ["237"]}),
            "{case}: {}",
            s.end
        );
    }
}

#[tokio::test]
async fn stream_error_before_any_message_is_http_200() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        for (code, name) in [
            (Code::NotFound, "not_found"),
            (Code::PermissionDenied, "permission_denied"),
            (Code::Internal, "internal"),
        ] {
            let case = format!("{code:?} over {http:?}");
            let s = proto_stream(
                proxy.addr,
                http,
                SERVER_STREAM,
                frame(&failing(code, "nope", false)),
                &[("x-trailer-a", "v")],
            )
            .await;
            assert!(s.messages.is_empty(), "{case}");
            assert_eq!(s.error(name, &case)["message"], "nope", "{case}");
            // §8.12: Trailers-Only metadata goes to the end-stream metadata or the headers.
            let in_end = s.end["metadata"]["x-trailer-a"] == json!(["v"]);
            let in_headers = s.headers.get("x-trailer-a").is_some_and(|v| v == "v");
            assert!(in_end || in_headers, "{case}: metadata lost: {s:#?}");
        }
    }
}

#[tokio::test]
async fn client_stream_joins_messages() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let mut client = Client::connect(proxy.addr, http).await;
        let (tx, body) = streaming_body();
        let req = stream_request(CLIENT_STREAM, CONNECT_PROTO, &[], body);
        let call =
            tokio::spawn(async move { read_stream::<EchoResponse>(client.send(req).await).await });
        for m in ["a", "b", "c"] {
            tx.send(frame(&EchoRequest {
                payload: vec![1; 10],
                ..echo(m)
            }))
            .await;
        }
        drop(tx);
        let s = guard("client stream", call).await.unwrap();
        let messages = s.ok(&case);
        assert_eq!(messages.len(), 1, "{case}");
        assert_eq!(messages[0].message, "a,b,c", "{case}");
        assert_eq!(messages[0].payload.len(), 30, "{case}");
        assert_eq!(s.end, json!({}));
    }
}

#[tokio::test]
async fn bidi_over_http2_answers_each_message_as_it_arrives() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let mut client = Client::connect(proxy.addr, Http::H2).await;
    let (tx, body) = streaming_body();
    let req = stream_request(BIDI, CONNECT_PROTO, &[("x-trailer-z", "end")], body);
    let head = tokio::spawn(async move {
        let reply = client.send(req).await;
        (client, reply)
    });
    // Each answer is read before the next request message is written: full duplex.
    tx.send(frame(&echo("one"))).await;
    let (_client, reply) = guard("bidi response head", head).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let (status, headers) = (reply.status, reply.headers.clone());
    let mut envelopes = Envelopes::new(reply.body);
    let mut got = Vec::new();
    for (i, m) in ["one", "two", "three"].into_iter().enumerate() {
        if i > 0 {
            tx.send(frame(&echo(m))).await;
        }
        let (flag, payload) = envelopes.next().await.expect("bidi answer");
        assert_eq!(flag, 0);
        let res = EchoResponse::decode(&payload[..]).unwrap();
        assert_eq!((res.message.as_str(), res.index), (m, i as u32));
        got.push(res);
    }
    drop(tx);
    let s = finish_stream(status, headers, &mut envelopes, got).await;
    assert_eq!(s.ok("bidi").len(), 3);
    assert_eq!(s.end, json!({"metadata": {"x-trailer-z": ["end"]}}));
}

#[tokio::test]
async fn compressed_request_envelopes() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        // Compressed and uncompressed envelopes may mix (§5).
        let mut body = Vec::new();
        body.extend_from_slice(&frame_with_flag(
            COMPRESSED,
            &gzip(&echo("zipped").encode_to_vec()),
        ));
        body.extend_from_slice(&frame(&echo("plain")));
        body.extend_from_slice(&frame_with_flag(
            COMPRESSED,
            &gzip(
                &EchoRequest {
                    payload: vec![3; 4000],
                    ..echo("big")
                }
                .encode_to_vec(),
            ),
        ));
        let s = proto_stream(
            proxy.addr,
            http,
            CLIENT_STREAM,
            body,
            &[("connect-content-encoding", "gzip")],
        )
        .await;
        let messages = s.ok(&case);
        assert_eq!(messages.len(), 1, "{case}");
        assert_eq!(messages[0].message, "zipped,plain,big", "{case}");
        assert_eq!(messages[0].payload.len(), 4000, "{case}");

        let s = proto_stream(
            proxy.addr,
            http,
            CLIENT_STREAM,
            frame(&echo("x")),
            &[("connect-content-encoding", "br")],
        )
        .await;
        s.error("unimplemented", &format!("br over {http:?}"));
        assert!(s.messages.is_empty());
    }
}

#[tokio::test]
async fn malformed_request_envelopes_are_invalid_argument() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let msg = EchoRequest {
        count: 1,
        ..echo("m")
    };
    let whole = frame(&msg);
    let cases: [(&str, Vec<u8>); 5] = [
        (
            "end-stream flag in a request",
            frame_with_flag(END_STREAM, &msg.encode_to_vec()).to_vec(),
        ),
        (
            "reserved flag 0x04",
            frame_with_flag(0x04, &msg.encode_to_vec()).to_vec(),
        ),
        (
            "gRPC-Web trailer flag 0x80",
            frame_with_flag(0x80, &msg.encode_to_vec()).to_vec(),
        ),
        ("truncated envelope", whole[..whole.len() - 1].to_vec()),
        ("truncated header", whole[..3].to_vec()),
    ];
    for http in HTTP_VERSIONS {
        for (what, body) in &cases {
            let case = format!("{what} over {http:?}");
            let s = proto_stream(proxy.addr, http, SERVER_STREAM, body.clone(), &[]).await;
            s.error("invalid_argument", &case);
            assert!(s.messages.is_empty(), "{case}: {s:#?}");
        }
    }
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn stream_deadline_is_deadline_exceeded_in_the_end_stream() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let req = EchoRequest {
            count: 1,
            delay_ms: 2000,
            ..echo("slow")
        };
        let s = proto_stream(
            proxy.addr,
            http,
            SERVER_STREAM,
            frame(&req),
            &[("connect-timeout-ms", "200")],
        )
        .await;
        s.error("deadline_exceeded", &format!("{http:?}"));
        assert!(s.messages.is_empty());
    }
}

#[tokio::test]
async fn deadline_covers_the_whole_stream_not_just_its_head() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let cancelled = backend.state.cancellations.get();
        // The first message comes at once; the gate never opens, so the stream stalls until
        // the caller's deadline ends it.
        let req = EchoRequest {
            count: 3,
            ..echo(GATED)
        };
        let s = proto_stream(
            proxy.addr,
            http,
            SERVER_STREAM,
            frame(&req),
            &[("connect-timeout-ms", "300")],
        )
        .await;
        assert_eq!(s.messages.len(), 1, "{case}: {s:#?}");
        s.error("deadline_exceeded", &case);
        assert!(
            backend
                .state
                .cancellations
                .reaches(cancelled + 1, GUARD)
                .await,
            "{case}: the stalled backend stream was not cancelled"
        );
    }
}

#[tokio::test]
async fn caller_going_away_cancels_the_backend_stream() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let cancelled = backend.state.cancellations.get();
        let req = EchoRequest {
            count: 3,
            ..echo(GATED)
        };
        let mut client = Client::connect(proxy.addr, http).await;
        let reply = client
            .send(stream_request(
                SERVER_STREAM,
                CONNECT_PROTO,
                &[],
                full(frame(&req)),
            ))
            .await;
        let mut envelopes = Envelopes::new(reply.body);
        let (flag, _) = envelopes.next().await.expect("first envelope");
        assert_eq!(flag, 0, "{case}");
        drop(envelopes);
        drop(client);
        assert!(
            backend
                .state
                .cancellations
                .reaches(cancelled + 1, GUARD)
                .await,
            "{case}: the backend stream outlived its caller"
        );
    }
    assert_still_serves(proxy.addr).await;
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
