//! Connect unary POST: round trips, headers, errors and their JSON bodies, timeouts.

use super::*;

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
