//! Connect streams: envelopes, end-stream messages, deadlines and cancellation.

use super::*;

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
