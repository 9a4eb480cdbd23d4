//! JSON over Connect GET, Connect streams and gRPC-Web.

use super::*;

// --- Connect GET ----------------------------------------------------------------------------

#[tokio::test]
async fn get_with_json_encoding_and_405_for_side_effects() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_json(&backend.url, &descriptors()).await;
    let json = r#"{"message":"café 100% 😈","responseSize":2}"#;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let res = get(proxy.addr, http, &get_json_query(LOOKUP, json), &[]).await;
        assert_eq!(
            res.ok_json(&case),
            json!({"message": "café 100% 😈", "payload": "eHg="}),
            "{case}"
        );
        assert!(
            res.header("vary")
                .is_some_and(|v| v.contains("accept-encoding")),
            "{case}: {res:#?}"
        );
        assert_eq!(backend_content_type(&backend), "application/grpc");

        // The same JSON as base64 in the query.
        let url = format!(
            "{LOOKUP}?connect=v1&encoding=json&base64=1&message={}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        );
        let res = get(proxy.addr, http, &url, &[]).await;
        assert_eq!(res.ok_json(&case)["message"], "café 100% 😈", "{case}");
        // And gzipped.
        let url = format!(
            "{LOOKUP}?connect=v1&encoding=json&base64=1&compression=gzip&message={}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(gzip(json.as_bytes()))
        );
        let res = get(proxy.addr, http, &url, &[]).await;
        assert_eq!(res.ok_json(&case)["message"], "café 100% 😈", "{case}");

        // Unary has side effects: GET is refused, whatever the encoding, before any call.
        let calls = backend.state.calls.get();
        let res = get(proxy.addr, http, &get_json_query(UNARY, json), &[]).await;
        assert_eq!(
            res.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{case}: {res:#?}"
        );
        assert_eq!(res.header("allow"), Some("POST"), "{case}");
        assert!(
            res.text().contains("NO_SIDE_EFFECTS"),
            "{case}: {}",
            res.text()
        );
        let url = format!(
            "{UNARY}?connect=v1&encoding=proto&base64=1&message={}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(echo("p").encode_to_vec())
        );
        let res = get(proxy.addr, http, &url, &[]).await;
        assert_eq!(
            res.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{case}: {res:#?}"
        );
        assert_eq!(
            backend.state.calls.get(),
            calls,
            "{case}: refused GETs reached the backend"
        );

        // A bad JSON query is invalid_argument.
        let res = get(
            proxy.addr,
            http,
            &get_json_query(LOOKUP, r#"{"count":"abc"}"#),
            &[],
        )
        .await;
        let error = res.error(400, "invalid_argument", &case);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(r#"field "count""#),
            "{case}: {error}"
        );
    }
    assert_still_serves(proxy.addr).await;
}

// --- Connect streams ------------------------------------------------------------------------

#[tokio::test]
async fn server_stream_of_json_envelopes() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_json(&backend.url, &descriptors()).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let s = json_stream(
            proxy.addr,
            http,
            SERVER_STREAM,
            &[r#"{"message":"s","count":3,"responseSize":1}"#],
        )
        .await;
        assert_eq!(
            s.ok(&case),
            [
                json!({"message": "s", "payload": "eA=="}),
                json!({"message": "s", "payload": "eA==", "index": 1}),
                json!({"message": "s", "payload": "eA==", "index": 2}),
            ],
            "{case}"
        );
        assert_eq!(s.end, json!({}), "{case}");
        assert_eq!(backend_content_type(&backend), "application/grpc", "{case}");

        // A gzip-compressed request envelope is decompressed before transcoding.
        let body = frame_with_flag(0x01, &gzip(br#"{"message":"z","count":2}"#));
        let req = request(
            Method::POST,
            SERVER_STREAM,
            Some(CONNECT_JSON),
            &[
                ("connect-protocol-version", "1"),
                ("connect-content-encoding", "gzip"),
            ],
            full(body),
        );
        let mut client = Client::connect(proxy.addr, http).await;
        let reply = client.send(req).await;
        let s = read_stream::<Value>(reply).await;
        assert_eq!(
            s.ok(&case),
            [json!({"message": "z"}), json!({"message": "z", "index": 1})],
            "{case}"
        );
    }
}

#[tokio::test]
async fn client_stream_and_bidi_of_json_over_http2() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_json(&backend.url, &descriptors()).await;
    for http in HTTP_VERSIONS {
        let case = format!("client stream over {http:?}");
        let mut client = Client::connect(proxy.addr, http).await;
        let (tx, body) = streaming_body();
        let req = stream_request(CLIENT_STREAM, CONNECT_JSON, &[], body);
        let call = tokio::spawn(async move { read_stream::<Value>(client.send(req).await).await });
        for (m, p) in [("a", "YQ=="), ("b", "Yg=="), ("c", "Yw")] {
            tx.send(json_envelope(&format!(
                r#"{{"message":"{m}","payload":"{p}"}}"#
            )))
            .await;
        }
        drop(tx);
        let s = guard(&case, call).await.unwrap();
        assert_eq!(
            s.ok(&case),
            [json!({"message": "a,b,c", "payload": "YWJj"})],
            "{case}"
        );
        assert_eq!(s.end, json!({}), "{case}");
    }

    // Bidi: each answer arrives before the next message is sent.
    let mut client = Client::connect(proxy.addr, Http::H2).await;
    let (tx, body) = streaming_body();
    let req = stream_request(BIDI, CONNECT_JSON, &[], body);
    let head = tokio::spawn(async move {
        let reply = client.send(req).await;
        (client, reply)
    });
    tx.send(json_envelope(r#"{"message":"one"}"#)).await;
    let (_client, reply) = guard("bidi response head", head).await.unwrap();
    let (status, headers) = (reply.status, reply.headers.clone());
    let mut envelopes = Envelopes::new(reply.body);
    let mut got = Vec::new();
    for (i, m) in ["one", "two", "three"].into_iter().enumerate() {
        if i > 0 {
            tx.send(json_envelope(&format!(r#"{{"message":"{m}"}}"#)))
                .await;
        }
        let (flag, payload) = envelopes.next().await.expect("bidi answer");
        assert_eq!(flag, 0);
        let res = parse_json(&payload, "bidi answer");
        assert_eq!(res["message"], m);
        assert_eq!(res["index"].as_u64().unwrap_or(0), i as u64, "{res}");
        got.push(res);
    }
    drop(tx);
    let s = finish_stream(status, headers, &mut envelopes, got).await;
    assert_eq!(s.ok("bidi").len(), 3);
    assert_eq!(s.end, json!({}));
}

#[tokio::test]
async fn stream_errors_are_in_the_end_stream_with_details() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_json(&backend.url, &descriptors()).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let s = json_stream(
            proxy.addr,
            http,
            SERVER_STREAM,
            &[r#"{"message":"e","count":2,"error":{"code":10,"message":"stream broke","withDetails":true}}"#],
        )
        .await;
        assert_eq!(s.messages.len(), 2, "{case}: {s:#?}");
        let error = s.error("aborted", &case);
        assert_eq!(error["message"], "stream broke", "{case}");
        assert_bad_request_detail(error, &case);

        // A request message that is not valid JSON for the method fails the stream.
        let s = json_stream(proxy.addr, http, SERVER_STREAM, &[r#"{"count":"abc"}"#]).await;
        assert!(s.messages.is_empty(), "{case}: {s:#?}");
        let error = s.error("invalid_argument", &case);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(r#"field "count""#),
            "{case}: {error}"
        );
        let s = json_stream(proxy.addr, http, SERVER_STREAM, &["{"]).await;
        s.error("invalid_argument", &case);

        // Unknown method: answered like an unknown path, 404 with the Connect error JSON.
        let req = request(
            Method::POST,
            NOPE,
            Some("application/connect+json"),
            &[],
            full(b"\x00\x00\x00\x00\x02{}".to_vec()),
        );
        let res = send(proxy.addr, http, req).await;
        let error = res.error(404, "unimplemented", &case);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("descriptor set"),
            "{case}: {error}"
        );
    }
    assert_still_serves(proxy.addr).await;
}

// --- gRPC-Web JSON --------------------------------------------------------------------------

#[tokio::test]
async fn grpc_web_json_unary_and_server_stream() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_json(&backend.url, &descriptors()).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let reply = web_json(
            proxy.addr,
            http,
            UNARY,
            &[r#"{"message":"web","responseSize":3}"#],
        )
        .await;
        reply.assert_ok();
        assert_eq!(reply.header("content-type"), Some(GRPC_WEB_JSON), "{case}");
        assert_eq!(
            web_messages(&reply),
            [json!({"message": "web", "payload": "eHh4"})],
            "{case}"
        );
        assert_eq!(backend_content_type(&backend), "application/grpc", "{case}");

        let reply = web_json(
            proxy.addr,
            http,
            SERVER_STREAM,
            &[r#"{"message":"ws","count":3}"#],
        )
        .await;
        reply.assert_ok();
        assert_eq!(
            web_messages(&reply),
            [
                json!({"message": "ws"}),
                json!({"message": "ws", "index": 1}),
                json!({"message": "ws", "index": 2}),
            ],
            "{case}"
        );

        // Errors: the trailer frame as usual, details as grpc-status-details-bin.
        let reply = web_json(
            proxy.addr,
            http,
            UNARY,
            &[r#"{"error":{"code":3,"message":"bad input","withDetails":true}}"#],
        )
        .await;
        assert_eq!(reply.code(), tonic::Code::InvalidArgument, "{case}");
        assert_eq!(reply.message(), "bad input", "{case}");
        assert!(
            reply.trailer("grpc-status-details-bin").is_some(),
            "{case}: {reply:#?}"
        );

        let reply = web_json(proxy.addr, http, UNARY, &[r#"{"count":"abc"}"#]).await;
        assert_eq!(
            reply.code(),
            tonic::Code::InvalidArgument,
            "{case}: {reply:#?}"
        );
        assert!(
            reply.message().contains(r#"field "count""#),
            "{case}: {reply:#?}"
        );

        let reply = web_json(proxy.addr, http, NOPE, &["{}"]).await;
        assert_eq!(
            reply.code(),
            tonic::Code::Unimplemented,
            "{case}: {reply:#?}"
        );
        assert!(reply.message().contains("no schema"), "{case}: {reply:#?}");
    }
    assert_still_serves(proxy.addr).await;
}
