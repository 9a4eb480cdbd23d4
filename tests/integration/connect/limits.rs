//! Connect compression (gzip both ways, unsupported encodings) and size limits.

use super::*;

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
