//! JSON callers of a proto-only backend (PROTOCOLS.md §6): Connect `application/json` unary
//! POST and GET, `application/connect+json` streams and gRPC-Web `application/grpc-web+json`,
//! transcoded with descriptors from a descriptor set file (per upstream or per route) or from
//! the backend's server reflection (v1, v1alpha fallback), plus passthrough and the errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod errors;
mod schemas;
mod streams;

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
