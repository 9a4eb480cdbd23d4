//! Connect unary GET: the query encoding, caching headers and malformed queries.

use super::*;

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
