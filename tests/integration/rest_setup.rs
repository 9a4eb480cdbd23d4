//! REST and schemas in a proxy's setup: which protocol wins a path, CORS preflights,
//! `rest: false`, routes seeing the method, the OpenAPI document, and schemas by default
//! (reflection when the backend has it, JSON passed through when not, never a wait for calls
//! that need no schema).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use serde_json::json;

use crate::rest::{curl, get, send};
use crate::support::backend::{spawn_backend_with_reflection, ReflectionVersion};
use crate::support::client::{empty, full};
use crate::support::{
    self, guard, spawn_backend, spawn_proxy, spawn_proxy_yaml, Client, Http, HTTP_VERSIONS,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_content_types_win_over_rest_rules() {
    let (backend, _reflection) = spawn_backend_with_reflection(ReflectionVersion::V1).await;
    let proxy = spawn_proxy(&backend.url).await;
    // Warm the schema so REST could claim the path.
    get(proxy.addr, Http::H1, "/v1/shelves/s1").await.ok("warm");
    for http in HTTP_VERSIONS {
        // gRPC-Web on a REST path: a gRPC-Web call to a method nobody serves.
        let req = support::web_request("/v1/shelves/s1/books", support::GRPC_WEB, &[]);
        let mut client = Client::connect(proxy.addr, http).await;
        let reply = client.send(req).await.web().await;
        assert_eq!(reply.http_status, StatusCode::OK);
        assert_eq!(reply.code(), tonic::Code::Unimplemented, "{http:?}");
        // Connect (with its version header) on a REST path: a Connect call, not REST.
        let a = curl(
            proxy.addr,
            http,
            "POST",
            "/v1/shelves/s1/books",
            &[("connect-protocol-version", "1")],
            Some("{}"),
        )
        .await;
        assert_ne!(a.status, StatusCode::OK, "{http:?}");
        assert_eq!(a.json()["code"], "unimplemented", "{:?}", a.body);
        // Connect JSON without the header, to a method path, stays Connect.
        let a = curl(
            proxy.addr,
            http,
            "POST",
            "/switchboard.testing.v1.LibraryService/GetShelf",
            &[],
            Some(r#"{"name":"shelves/c"}"#),
        )
        .await;
        let v = a.ok("connect json");
        assert_eq!(v["name"], "shelves/c");
        // And REST with the same JSON content type works on REST paths.
        let a = curl(
            proxy.addr,
            http,
            "POST",
            "/v1/shelves/s1/books",
            &[],
            Some("{}"),
        )
        .await;
        assert_eq!(a.ok("rest post")["name"], "shelves/s1/books/");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_allow_rest_verbs() {
    let (backend, _reflection) = spawn_backend_with_reflection(ReflectionVersion::V1).await;
    let proxy = spawn_proxy(&backend.url).await;
    for verb in ["PUT", "PATCH", "DELETE", "GET", "POST"] {
        let req = Request::builder()
            .method("OPTIONS")
            .uri("/v1/shelves/s1/books/b1")
            .header("origin", "https://app.example")
            .header("access-control-request-method", verb)
            .header("access-control-request-headers", "content-type")
            .body(empty())
            .unwrap();
        let a = send(proxy.addr, Http::H1, req).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{verb}");
        let allowed = a.header("access-control-allow-methods").unwrap();
        assert!(allowed.split(", ").any(|m| m == verb), "{verb}: {allowed}");
    }
    // Actual responses carry CORS headers too.
    let a = curl(
        proxy.addr,
        Http::H1,
        "DELETE",
        "/v1/shelves/s1/books/b1",
        &[("origin", "https://app.example")],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_can_be_turned_off_per_upstream_and_route() {
    let (backend, _reflection) = spawn_backend_with_reflection(ReflectionVersion::V1).await;
    let off = spawn_proxy_yaml(&support::one_upstream_yaml(
        &backend.url,
        &["rest: false"],
        &[],
    ))
    .await;
    let a = get(off.addr, Http::H1, "/v1/shelves/s1").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // Connect JSON still transcodes with the reflected schema.
    let a = curl(
        off.addr,
        Http::H1,
        "POST",
        "/switchboard.testing.v1.LibraryService/GetShelf",
        &[],
        Some(r#"{"name":"shelves/c"}"#),
    )
    .await;
    assert_eq!(a.ok("connect json")["name"], "shelves/c");

    // Per route: GetShelf off, the rest of the service on.
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  - name: backend\n    endpoints: [\"{}\"]\nroutes:\n  - match: {{ method: /switchboard.testing.v1.LibraryService/GetShelf }}\n    upstream: backend\n    rest: false\n  - match: {{ prefix: / }}\n    upstream: backend\n",
        backend.url
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let a = get(proxy.addr, Http::H2, "/v1/shelves/s1").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = get(proxy.addr, Http::H2, "/v1/authors/a1").await;
    assert_eq!(a.ok("route allows REST")["authorId"], "a1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_see_the_method_of_a_rest_call() {
    let (backend, _reflection) = spawn_backend_with_reflection(ReflectionVersion::V1).await;
    // Only GetAuthor is routed (with a timeout of its own); other methods have no route.
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  - name: backend\n    endpoints: [\"{}\"]\nroutes:\n  - match: {{ method: /switchboard.testing.v1.LibraryService/GetAuthor }}\n    upstream: backend\n    timeout: 1s\n",
        backend.url
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let a = get(proxy.addr, Http::H1, "/v1/authors/a1").await;
    assert_eq!(a.ok("routed")["authorId"], "a1");
    let headers = backend.state.last_headers();
    let t = headers["grpc-timeout"].to_str().unwrap();
    assert!(t.ends_with('m') || t.ends_with('u'), "{t}");
    // A rule whose method no route serves is not served.
    let a = get(proxy.addr, Http::H1, "/v1/shelves/s1").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_in_quick_mode() {
    let (backend, _reflection) =
        spawn_backend_with_reflection(ReflectionVersion::V1AlphaOnly).await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let a = get(proxy.addr, http, "/openapi.json").await;
        let doc = a.ok("openapi");
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths["/v1/{name}"]["get"].is_object());
        assert!(paths["/v1/{parent}/books"]["post"]["requestBody"].is_object());
        assert!(paths["/switchboard.testing.v1.LibraryService/Ping"]["post"].is_object());
        assert!(paths["/switchboard.testing.v1.TestService/Unary"]["post"].is_object());
    }
    // Without reflection there is no document, and the reason is given.
    let plain = spawn_backend().await;
    let proxy = spawn_proxy(&plain.url).await;
    let a = get(proxy.addr, Http::H1, "/openapi.json").await;
    let v = a.error(503, 14, "no schema");
    assert!(v["message"].as_str().unwrap().contains("reflection"), "{v}");
}

/// Quick mode against a backend with reflection: Connect JSON transcodes with no flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_json_uses_reflection_by_default() {
    let (backend, reflection) = spawn_backend_with_reflection(ReflectionVersion::V1AlphaOnly).await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let a = curl(
            proxy.addr,
            http,
            "POST",
            support::UNARY,
            &[("connect-protocol-version", "1")],
            Some(r#"{"message":"hi","responseSize":3}"#),
        )
        .await;
        let v = a.ok("connect json");
        assert_eq!(v, json!({"message": "hi", "payload": "eHh4"}));
    }
    assert!(reflection.calls.get() > 0);
    assert_eq!(backend.state.calls.get(), 2);
}

/// A backend without reflection: JSON passes through after one attempt (not one per call),
/// and REST finds no rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reflection_json_passes_through() {
    let (backend, reflection) = spawn_backend_with_reflection(ReflectionVersion::V1).await;
    reflection.set_enabled(false);
    let proxy = spawn_proxy(&backend.url).await;
    for _ in 0..3 {
        let a = curl(
            proxy.addr,
            Http::H1,
            "POST",
            support::UNARY,
            &[("connect-protocol-version", "1")],
            Some(r#"{"message":"hi"}"#),
        )
        .await;
        // Passed through as application/grpc+json, which the proto-only backend cannot read.
        assert_ne!(a.status, StatusCode::OK);
        let headers = backend.state.last_headers();
        assert_eq!(headers["content-type"], "application/grpc+json");
        let a = get(proxy.addr, Http::H1, "/v1/shelves/s1").await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
    }
    // v1 then v1alpha, once.
    assert_eq!(reflection.calls.get(), 2, "{:?}", reflection.paths());
}

/// Calls that need no schema never wait for one, even while a fetch hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proto_calls_never_wait_for_a_schema() {
    let (backend, reflection) = spawn_backend_with_reflection(ReflectionVersion::V1).await;
    reflection.hang.store(true, Ordering::SeqCst);
    let proxy = spawn_proxy(&backend.url).await;
    // A REST request starts a fetch, which hangs.
    let addr = proxy.addr;
    let waiting = tokio::spawn(async move { get(addr, Http::H1, "/v1/shelves/s1").await });
    guard("the fetch starts", reflection.calls.until(1)).await;
    for http in HTTP_VERSIONS {
        let started = Instant::now();
        let frame = support::frame(&support::pb::EchoRequest {
            message: "quick".into(),
            ..Default::default()
        });
        let req = support::web_request(support::UNARY, support::GRPC_WEB, &frame);
        let mut client = Client::connect(proxy.addr, http).await;
        let reply = client.send(req).await.web().await;
        reply.assert_ok();
        // Connect proto, unary.
        let req = Request::post(support::LOOKUP)
            .header("content-type", "application/proto")
            .body(full(prost::Message::encode_to_vec(
                &support::pb::EchoRequest {
                    message: "p".into(),
                    ..Default::default()
                },
            )))
            .unwrap();
        let a = send(proxy.addr, http, req).await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{http:?} waited"
        );
    }
    assert!(!waiting.is_finished());
    waiting.abort();
}
