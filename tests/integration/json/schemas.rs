//! Where the schema comes from: a descriptor set file, server reflection (v1, v1alpha), per-route descriptors.

use super::*;

// --- Descriptor set file --------------------------------------------------------------------

#[tokio::test]
async fn unary_json_is_transcoded_with_a_descriptor_file() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_json(&backend.url, &descriptors()).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let res = post_json(
            proxy.addr,
            http,
            UNARY,
            r#"{"message":"hi","responseSize":3}"#,
            &[],
        )
        .await;
        // Canonical ProtoJSON: bytes as padded base64, default values (index 0) left out.
        assert_eq!(
            res.ok_json(&case),
            json!({"message": "hi", "payload": "eHh4"}),
            "{case}"
        );
        assert_eq!(
            backend_content_type(&backend),
            "application/grpc",
            "{case}: the backend must get protobuf"
        );

        // lowerCamelCase keys out (grpc_timeout → grpcTimeout), maps as objects.
        let res = post_json(
            proxy.addr,
            http,
            UNARY,
            r#"{"message":"camel"}"#,
            &[("connect-timeout-ms", "5000"), ("x-tag", "a")],
        )
        .await;
        let body = res.ok_json(&case);
        assert_eq!(body["message"], "camel", "{case}: {body}");
        let timeout = body["grpcTimeout"].as_str().unwrap_or_else(|| {
            panic!("{case}: no grpcTimeout in {body}");
        });
        assert!(
            crate::support::wire::parse_grpc_timeout(timeout).is_some(),
            "{case}: {body}"
        );
        assert!(body.get("grpc_timeout").is_none(), "{case}: {body}");
        assert_eq!(body["metadata"], json!({"x-tag": "a"}), "{case}: {body}");

        // Proto field names are accepted on input too; bytes in, bytes out.
        let res = post_json(
            proxy.addr,
            http,
            UNARY,
            r#"{"message":"snake","payload":"AAEC/f7/","delay_ms":0}"#,
            &[],
        )
        .await;
        assert_eq!(
            res.ok_json(&case),
            json!({"message": "snake", "payload": "AAEC/f7/"}),
            "{case}"
        );

        // Everything default is `{}` both ways.
        let res = post_json(proxy.addr, http, UNARY, "{}", &[]).await;
        assert_eq!(res.ok_json(&case), json!({}), "{case}");
    }
}

#[tokio::test]
async fn unary_json_errors_keep_details_as_base64_protobuf() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_json(&backend.url, &descriptors()).await;
    let res = post_json(
        proxy.addr,
        Http::H1,
        UNARY,
        r#"{"error":{"code":3,"message":"bad input","withDetails":true}}"#,
        &[],
    )
    .await;
    let error = res.error(400, "invalid_argument", "error with details");
    assert_eq!(error["message"], "bad input");
    assert_bad_request_detail(&error, "unary JSON");

    let res = post_json(
        proxy.addr,
        Http::H2,
        UNARY,
        r#"{"error":{"code":5,"message":"no such thing"}}"#,
        &[],
    )
    .await;
    let error = res.error(404, "not_found", "error without details");
    assert_eq!(error["message"], "no such thing");
    assert!(error.get("details").is_none(), "{error}");
}

#[tokio::test]
async fn gzip_json_requests_and_large_json_responses() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_json(&backend.url, &descriptors()).await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        // A gzip request body is decompressed before transcoding.
        let body = gzip(br#"{"message":"zipped"}"#);
        let req = request(
            Method::POST,
            UNARY,
            Some(JSON),
            &[("content-encoding", "gzip")],
            full(body),
        );
        let res = send(proxy.addr, http, req).await;
        assert_eq!(res.ok_json(&case), json!({"message": "zipped"}), "{case}");

        // 1 MiB down: 1.3 MiB of base64 in JSON, within the default 4 MiB limit; gzipped
        // when the caller accepts it.
        let req = r#"{"message":"big","responseSize":1048576}"#;
        for accept in [None, Some("gzip")] {
            let headers: Vec<(&str, &str)> =
                accept.map(|a| ("accept-encoding", a)).into_iter().collect();
            let res = post_json(proxy.addr, http, UNARY, req, &headers).await;
            let body = res.ok_json(&case);
            assert_eq!(res.header("content-encoding"), accept, "{case}: {accept:?}");
            let payload = base64::engine::general_purpose::STANDARD
                .decode(body["payload"].as_str().unwrap())
                .unwrap();
            assert_eq!(payload.len(), 1 << 20, "{case}");
            assert!(payload.iter().all(|b| *b == b'x'), "{case}");
        }
    }
}

#[tokio::test]
async fn json_messages_over_the_limit_are_resource_exhausted() {
    let backend = spawn_backend().await;
    let line = format!("json: {{ {} }}", descriptors());
    let yaml = one_upstream_yaml(&backend.url, &[&line, "max_message_size: 64KiB"], &[]);
    let proxy = spawn_proxy_yaml(&yaml).await;
    let calls = backend.state.calls.get();

    // A JSON request body over the limit never reaches the backend.
    let big = format!(r#"{{"message":"{}"}}"#, "a".repeat(70 * 1024));
    let res = post_json(proxy.addr, Http::H1, UNARY, &big, &[]).await;
    let error = res.error(429, "resource_exhausted", "large JSON request");
    assert!(
        error["message"].as_str().unwrap().contains("limit"),
        "{error}"
    );
    assert_eq!(backend.state.calls.get(), calls, "the backend got the call");

    // A response over the limit.
    let res = post_json(
        proxy.addr,
        Http::H2,
        UNARY,
        r#"{"responseSize":100000}"#,
        &[],
    )
    .await;
    res.error(429, "resource_exhausted", "large response");

    // Within the limit both ways.
    let res = post_json(
        proxy.addr,
        Http::H2,
        UNARY,
        r#"{"message":"fits","responseSize":30000}"#,
        &[],
    )
    .await;
    let body = res.ok_json("a response within the limit");
    assert_eq!(body["payload"].as_str().unwrap().len(), 40_000);
    assert_still_serves(proxy.addr).await;
}

// --- Server reflection -------------------------------------------------------------------------

/// One JSON unary call through `proxy` that must succeed.
async fn json_round_trip(proxy: &Proxy, http: Http, case: &str) {
    let res = post_json(
        proxy.addr,
        http,
        UNARY,
        r#"{"message":"reflected","responseSize":2}"#,
        &[],
    )
    .await;
    assert_eq!(
        res.ok_json(case),
        json!({"message": "reflected", "payload": "eHg="}),
        "{case}"
    );
}

#[tokio::test]
async fn reflection_v1_supplies_the_schema_and_is_cached() {
    let (backend, reflection) = spawn_backend_with_reflection(ReflectionVersion::V1).await;
    let proxy = proxy_with_json(&backend.url, "reflection: true").await;
    assert_eq!(
        reflection.calls.get(),
        0,
        "nothing is fetched before a JSON call"
    );

    json_round_trip(&proxy, Http::H1, "first call").await;
    assert_eq!(backend_content_type(&backend), "application/grpc");
    let fetched = reflection.calls.get();
    assert!(fetched > 0, "no reflection call");
    let paths = reflection.paths();
    assert!(
        paths
            .iter()
            .all(|p| p == "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
        "{paths:?}"
    );

    // Cached: more JSON calls (every shape) and proto calls ask nothing more.
    json_round_trip(&proxy, Http::H2, "second call").await;
    let s = json_stream(
        proxy.addr,
        Http::H2,
        SERVER_STREAM,
        &[r#"{"message":"r","count":2}"#],
    )
    .await;
    assert_eq!(s.ok("stream").len(), 2);
    let reply = web_json(proxy.addr, Http::H1, LOOKUP, &[r#"{"message":"w"}"#]).await;
    reply.assert_ok();
    assert_eq!(web_messages(&reply), [json!({"message": "w"})]);
    assert_still_serves(proxy.addr).await;
    assert_eq!(reflection.calls.get(), fetched, "{:?}", reflection.paths());

    // A method the reflected schema lacks.
    let res = post_json(proxy.addr, Http::H1, NOPE, "{}", &[]).await;
    let error = res.error(404, "unimplemented", "unknown method");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(NOPE) && message.contains("server reflection"),
        "{message}"
    );
}

#[tokio::test]
async fn reflection_falls_back_to_v1alpha() {
    let (backend, reflection) = spawn_backend_with_reflection(ReflectionVersion::V1AlphaOnly).await;
    let proxy = proxy_with_json(&backend.url, "reflection: true").await;
    for http in HTTP_VERSIONS {
        json_round_trip(&proxy, http, &format!("{http:?}")).await;
    }
    let paths = reflection.paths();
    assert_eq!(
        paths.first().map(String::as_str),
        Some("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
        "{paths:?}"
    );
    assert!(paths.len() >= 2, "{paths:?}");
    assert!(
        paths[1..]
            .iter()
            .all(|p| p == "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
        "after v1 is refused, only v1alpha: {paths:?}"
    );
    // Lookup's NO_SIDE_EFFECTS comes through v1alpha too: GET allowed, Unary refused.
    let res = get(
        proxy.addr,
        Http::H1,
        &get_json_query(LOOKUP, r#"{"message":"g"}"#),
        &[],
    )
    .await;
    assert_eq!(res.ok_json("GET Lookup"), json!({"message": "g"}));
    let res = get(
        proxy.addr,
        Http::H1,
        &get_json_query(UNARY, r#"{"message":"g"}"#),
        &[],
    )
    .await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED, "{}", res.text());
}

#[tokio::test]
async fn reflection_is_fetched_again_on_the_refresh_interval() {
    let (backend, reflection) = spawn_backend_with_reflection(ReflectionVersion::V1).await;
    let proxy = proxy_with_json(&backend.url, "reflection: true, refresh: 0s").await;
    json_round_trip(&proxy, Http::H1, "first call").await;
    let after_first = reflection.calls.get();
    // With a zero interval the schema is always due: the next call is answered from the
    // cache and starts a fetch in the background.
    json_round_trip(&proxy, Http::H1, "second call").await;
    assert!(
        reflection.calls.reaches(after_first + 1, GUARD).await,
        "no refresh after the interval: {:?}",
        reflection.paths()
    );
    json_round_trip(&proxy, Http::H2, "after the refresh").await;
}

#[tokio::test]
async fn missing_reflection_is_unavailable_and_proto_calls_still_work() {
    // The plain backend has no reflection service.
    let backend = spawn_backend().await;
    let proxy = proxy_with_json(&backend.url, "reflection: true").await;
    for http in HTTP_VERSIONS {
        let case = format!("{http:?}");
        let res = post_json(proxy.addr, http, UNARY, r#"{"message":"x"}"#, &[]).await;
        let error = res.error(503, "unavailable", &case);
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("server reflection") && message.contains("\"backend\""),
            "{case}: the message must say what failed and where: {message}"
        );

        let s = json_stream(proxy.addr, http, SERVER_STREAM, &[r#"{"count":1}"#]).await;
        assert!(s.messages.is_empty(), "{case}");
        let error = s.error("unavailable", &case);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("server reflection"),
            "{case}: {error}"
        );

        let reply = web_json(proxy.addr, http, UNARY, &[r#"{"message":"x"}"#]).await;
        assert_eq!(reply.http_status, StatusCode::OK, "{case}");
        assert_eq!(reply.code(), tonic::Code::Unavailable, "{case}: {reply:#?}");
        assert!(reply.message().contains("server reflection"), "{case}");

        // Proto callers do not need a schema.
        let res = web_call(proxy.addr, http, GRPC_WEB, UNARY, &echo("proto"), &[]).await;
        assert_eq!(res.ok_response().message, "proto", "{case}");
        let req = request(
            Method::POST,
            UNARY,
            Some(PROTO),
            &[],
            full(echo("connect proto").encode_to_vec()),
        );
        let res = send(proxy.addr, http, req).await;
        assert_eq!(res.status, StatusCode::OK, "{case}: {res:#?}");
    }
}

#[tokio::test]
async fn reflection_is_retried_after_a_failure() {
    let (backend, reflection) = spawn_backend_with_reflection(ReflectionVersion::V1).await;
    reflection.set_enabled(false);
    let proxy = proxy_with_json(&backend.url, "reflection: true").await;
    let res = post_json(proxy.addr, Http::H1, UNARY, r#"{"message":"x"}"#, &[]).await;
    res.error(503, "unavailable", "reflection switched off");
    assert!(reflection.calls.get() > 0);
    // Nothing cached yet, so the next JSON call asks again (no waiting for an interval).
    reflection.set_enabled(true);
    json_round_trip(&proxy, Http::H1, "reflection switched on").await;
}

fn assert_reflection_unused(reflection: &Reflection) {
    assert_eq!(reflection.calls.get(), 0, "{:?}", reflection.paths());
}

#[tokio::test]
async fn descriptor_file_is_used_before_reflection() {
    let (backend, reflection) = spawn_backend_with_reflection(ReflectionVersion::V1).await;
    let proxy = proxy_with_json(
        &backend.url,
        &format!("{}, reflection: true", descriptors()),
    )
    .await;
    json_round_trip(&proxy, Http::H2, "file and reflection").await;
    assert_reflection_unused(&reflection);
}

// --- Per-route descriptors ------------------------------------------------------------------

#[tokio::test]
async fn route_descriptors_override_the_upstream() {
    let backend = spawn_backend().await;
    // The upstream passes JSON through; the TestService route transcodes with its own file;
    // the Lookup route has a file that does not describe TestService at all.
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:0
upstreams:
  - name: backend
    endpoints: ["{url}"]
    json: {{ passthrough: true }}
routes:
  - match: {{ method: {LOOKUP} }}
    upstream: backend
    descriptors: "{TYPES_DESCRIPTOR}"
  - match: {{ service: switchboard.testing.v1.TestService }}
    upstream: backend
    descriptors: "{TESTING_DESCRIPTOR}"
  - match: {{ prefix: / }}
    upstream: backend
"#,
        url = backend.url
    );
    let proxy = spawn_proxy_yaml(&yaml).await;

    let res = post_json(
        proxy.addr,
        Http::H1,
        UNARY,
        r#"{"message":"routed","responseSize":1}"#,
        &[],
    )
    .await;
    assert_eq!(
        res.ok_json("TestService route"),
        json!({"message": "routed", "payload": "eA=="})
    );
    assert_eq!(backend_content_type(&backend), "application/grpc");

    let calls = backend.state.calls.get();
    let res = post_json(proxy.addr, Http::H2, LOOKUP, r#"{"message":"x"}"#, &[]).await;
    let error = res.error(404, "unimplemented", "Lookup route");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(LOOKUP) && message.contains("descriptor set of its route"),
        "{message}"
    );
    assert_eq!(backend.state.calls.get(), calls, "the backend got the call");

    // The route without its own file uses the upstream's setting: passthrough.
    let _ = post_json(proxy.addr, Http::H1, "/other.v1.Other/Call", "{}", &[]).await;
    assert_eq!(backend_content_type(&backend), "application/grpc+json");
}
