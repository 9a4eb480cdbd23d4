//! Bad JSON requests, accepted ProtoJSON input forms, unknown fields and methods.

use super::*;

// --- Request errors -------------------------------------------------------------------------

#[tokio::test]
async fn bad_json_requests_are_invalid_argument_and_never_forwarded() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_json(&backend.url, &descriptors()).await;
    let cases = [
        ("{", "invalid JSON"),
        (r#"{"message":"a",}"#, "invalid JSON"),
        ("[]", "invalid JSON"),
        ("", "empty"),
        (r#"{"count":"abc"}"#, r#"field "count""#),
        (r#"{"message":5}"#, r#"field "message""#),
        (r#"{"error":{"code":"x"}}"#, r#"field "error.code""#),
        (r#"{"payload":"%%%"}"#, r#"field "payload""#),
        (r#"{"bogus":1}"#, "bogus"),
    ];
    for http in HTTP_VERSIONS {
        for (body, want) in cases {
            let case = format!("{body:?} over {http:?}");
            let calls = backend.state.calls.get();
            let res = post_json(proxy.addr, http, UNARY, body, &[]).await;
            let error = res.error(400, "invalid_argument", &case);
            let message = error["message"].as_str().unwrap();
            assert!(
                message.contains(want) && message.contains("switchboard.testing.v1.EchoRequest"),
                "{case}: want {want:?} in {message:?}"
            );
            assert_eq!(backend.state.calls.get(), calls, "{case}: forwarded");
        }
        // Invalid UTF-8 inside a string.
        let req = request(
            Method::POST,
            UNARY,
            Some(JSON),
            &[],
            full(b"{\"message\":\"\xff\"}".to_vec()),
        );
        let res = send(proxy.addr, http, req).await;
        let error = res.error(400, "invalid_argument", "invalid UTF-8");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(r#"field "message""#),
            "{error}"
        );
    }
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn protojson_input_forms_are_accepted() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_json(&backend.url, &descriptors()).await;
    let cases = [
        // Integers as strings and in exponent form; null means unset.
        (
            r#"{"message":"n","responseSize":"2","count":1e0}"#,
            json!({"message": "n", "payload": "eHg="}),
        ),
        (r#"{"message":null,"error":null}"#, json!({})),
        // URL-safe, unpadded base64 for bytes; output is standard and padded.
        (
            r#"{"message":"b","payload":"-_8"}"#,
            json!({"message": "b", "payload": "+/8="}),
        ),
        // Whitespace around the object.
        ("  {\"message\":\"ws\"}\n", json!({"message": "ws"})),
    ];
    for (body, want) in cases {
        let res = post_json(proxy.addr, Http::H1, UNARY, body, &[]).await;
        assert_eq!(res.ok_json(body), want, "{body}");
    }
    // A charset parameter on the content type is fine; the answer is plain application/json.
    let req = request(
        Method::POST,
        UNARY,
        Some("application/json; charset=utf-8"),
        &[],
        full(br#"{"message":"cs"}"#.to_vec()),
    );
    let res = send(proxy.addr, Http::H2, req).await;
    assert_eq!(res.ok_json("charset"), json!({"message": "cs"}));
}

/// PROTOCOLS.md §6: with the schema known, the method's streaming kind is known, so a Connect
/// unary content type on a streaming method is refused (415, as connect-go does) instead of
/// being sent to the backend.
#[tokio::test]
async fn unary_json_on_a_streaming_method_is_refused() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_json(&backend.url, &descriptors()).await;
    let calls = backend.state.calls.get();
    let res = post_json(proxy.addr, Http::H1, SERVER_STREAM, r#"{"count":2}"#, &[]).await;
    assert_eq!(
        res.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}: {res:#?}",
        res.text()
    );
    assert_eq!(backend.state.calls.get(), calls, "the backend got the call");
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn unknown_fields_are_accepted_with_ignore_unknown_fields() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_json(
        &backend.url,
        &format!("{}, ignore_unknown_fields: true", descriptors()),
    )
    .await;
    let body = r#"{"message":"hi","bogus":1,"nested":{"x":[1,2]}}"#;
    let res = post_json(proxy.addr, Http::H1, UNARY, body, &[]).await;
    assert_eq!(res.ok_json("unary"), json!({"message": "hi"}));
    let s = json_stream(
        proxy.addr,
        Http::H2,
        SERVER_STREAM,
        &[r#"{"message":"s","count":1,"extra":true}"#],
    )
    .await;
    assert_eq!(s.ok("stream"), [json!({"message": "s"})]);
    // Wrong types of known fields are still errors.
    let res = post_json(proxy.addr, Http::H1, UNARY, r#"{"count":"abc"}"#, &[]).await;
    res.error(400, "invalid_argument", "wrong type");
}

#[tokio::test]
async fn unknown_method_with_descriptors_is_unimplemented() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_json(&backend.url, &descriptors()).await;
    let calls = backend.state.calls.get();
    for http in HTTP_VERSIONS {
        let res = post_json(proxy.addr, http, NOPE, "{}", &[]).await;
        let error = res.error(404, "unimplemented", &format!("{http:?}"));
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(NOPE)
                && message.contains("no schema")
                && message.contains("descriptor set")
                && message.contains("\"backend\""),
            "{message}"
        );
        // A service the file does not have at all.
        let res = post_json(proxy.addr, http, "/other.v1.Other/Call", "{}", &[]).await;
        res.error(404, "unimplemented", "other service");
    }
    assert_eq!(backend.state.calls.get(), calls, "forwarded to the backend");
    // Proto callers of unknown methods still reach the backend, which answers.
    let req = request(Method::POST, NOPE, Some(PROTO), &[], full(Vec::new()));
    let res = send(proxy.addr, Http::H2, req).await;
    assert_eq!(res.status, StatusCode::NOT_IMPLEMENTED, "{res:#?}");
    assert_eq!(backend.state.calls.get(), calls + 1);
    assert_still_serves(proxy.addr).await;
}
