//! JSON callers of a proto-only backend (PROTOCOLS.md §6): Connect `application/json` unary
//! POST and GET, `application/connect+json` streams and gRPC-Web `application/grpc-web+json`,
//! transcoded with descriptors from a descriptor set file (per upstream or per route) or from
//! the backend's server reflection (v1, v1alpha fallback), plus passthrough and the errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use base64::Engine as _;
use http::{Method, StatusCode};
use prost::Message as _;
use serde_json::{json, Value};

use crate::support::backend::{
    spawn_backend_with_reflection, Reflection, ReflectionVersion, TESTING_DESCRIPTOR,
};
use crate::support::client::full;
use crate::support::connect::*;
use crate::support::wire::frame_with_flag;
use crate::support::*;

/// A method the test service does not have.
const NOPE: &str = "/switchboard.testing.v1.TestService/Nope";
/// Descriptors of `switchboard.testing.v1.TypesService` only (not TestService).
const TYPES_DESCRIPTOR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/types.binpb");

// --- Proxies -------------------------------------------------------------------------------

/// A proxy whose one upstream has these extra `json:` settings (`{ ... }` body).
async fn proxy_with_json(backend_url: &str, json: &str) -> Proxy {
    let line = format!("json: {{ {json} }}");
    spawn_proxy_yaml(&one_upstream_yaml(backend_url, &[&line], &[])).await
}

/// `descriptors: "<the testing.proto descriptor set>"`.
fn descriptors() -> String {
    format!("descriptors: \"{TESTING_DESCRIPTOR}\"")
}

// --- Requests and answers ------------------------------------------------------------------

/// Asserts that proto and JSON callers are both still served.
async fn assert_still_serves(addr: SocketAddr) {
    let res = post_json(addr, Http::H1, UNARY, r#"{"message":"still here"}"#, &[]).await;
    assert_eq!(res.ok_json("JSON after an error")["message"], "still here");
    let req = request(
        Method::POST,
        UNARY,
        Some(PROTO),
        &[],
        full(echo("proto").encode_to_vec()),
    );
    let res = send(addr, Http::H2, req).await;
    assert_eq!(res.status, StatusCode::OK, "proto after an error: {res:#?}");
    assert_eq!(
        EchoResponse::decode(&res.body[..]).unwrap().message,
        "proto"
    );
}

/// The content type the backend saw on its most recent call.
fn backend_content_type(backend: &Backend) -> String {
    let headers = backend.state.last_headers();
    headers["content-type"].to_str().unwrap().to_owned()
}

/// One gRPC-Web JSON call: `messages` as frames.
async fn web_json(addr: SocketAddr, http: Http, path: &str, messages: &[&str]) -> WebReply {
    let body: Vec<u8> = messages.iter().flat_map(|m| json_envelope(m)).collect();
    let mut client = Client::connect(addr, http).await;
    client
        .send(web_request(path, GRPC_WEB_JSON, &body))
        .await
        .web()
        .await
}

/// The JSON messages of a gRPC-Web reply, each checked for the metadata map the backend
/// echoes (`web_request` sends `x-user-agent`) and without it.
fn web_messages(reply: &WebReply) -> Vec<Value> {
    reply
        .messages
        .iter()
        .map(|m| {
            let mut v = parse_json(m, "a gRPC-Web message");
            let metadata = v.as_object_mut().unwrap().remove("metadata");
            assert_eq!(
                metadata,
                Some(json!({"x-user-agent": "switchboard-tests/1"})),
                "{v}"
            );
            v
        })
        .collect()
}

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

// --- Passthrough ----------------------------------------------------------------------------

#[tokio::test]
async fn passthrough_sends_grpc_json_unchanged() {
    let backend = spawn_backend().await;
    for proxy in [
        proxy_with_json(&backend.url, "passthrough: true").await,
        // No json settings at all: JSON passes through too.
        spawn_proxy(&backend.url).await,
    ] {
        for http in HTTP_VERSIONS {
            let case = format!("{} over {http:?}", proxy.url);
            let _ = post_json(proxy.addr, http, UNARY, r#"{"message":"p"}"#, &[]).await;
            assert_eq!(
                backend_content_type(&backend),
                "application/grpc+json",
                "{case}: Connect unary"
            );
            let _ = json_stream(proxy.addr, http, SERVER_STREAM, &[r#"{"count":1}"#]).await;
            assert_eq!(
                backend_content_type(&backend),
                "application/grpc+json",
                "{case}: Connect stream"
            );
            let _ = web_json(proxy.addr, http, UNARY, &[r#"{"message":"p"}"#]).await;
            assert_eq!(
                backend_content_type(&backend),
                "application/grpc+json",
                "{case}: gRPC-Web"
            );
            // Unknown methods are not checked without a schema: the backend answers.
            let res = post_json(proxy.addr, http, NOPE, "{}", &[]).await;
            res.error(501, "unimplemented", &case);
            // GET is not refused without a schema.
            let res = get(proxy.addr, http, &get_json_query(UNARY, "{}"), &[]).await;
            assert_ne!(res.status, StatusCode::METHOD_NOT_ALLOWED, "{case}");
        }
    }
}
