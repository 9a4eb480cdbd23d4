//! Edge security: mTLS, route auth (JWT, API keys), rate limits (in process and through a
//! real Redis, with two proxy processes), cross-site protection (raw requests and headless
//! Chromium), forwarding headers, and error messages free of addresses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod browser;
mod cross_site;
mod forwarded;
mod interop;
mod jwks;
mod mtls;
mod rate_limit;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use prost::Message as _;

use crate::support::client::full;
use crate::support::*;

/// The origin the test configs allow.
pub(crate) const APP: &str = "https://app.example";

/// A Connect unary reply.
#[derive(Debug)]
pub(crate) struct ConnectReply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl ConnectReply {
    /// The `code` of a Connect error body.
    pub(crate) fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not a Connect error ({e}): {self:?}"));
        v["code"].as_str().unwrap_or_default().to_owned()
    }

    pub(crate) fn message(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        v["message"].as_str().unwrap_or_default().to_owned()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The response message of a successful call.
    pub(crate) fn ok(&self) -> EchoResponse {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        EchoResponse::decode(self.body.clone()).unwrap()
    }
}

/// A Connect unary POST (`application/proto`) of `msg` to `path` with extra headers.
pub(crate) async fn connect_unary(
    addr: SocketAddr,
    http: Http,
    path: &str,
    msg: &EchoRequest,
    headers: &[(&str, &str)],
) -> ConnectReply {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("content-type", "application/proto")
        .header("connect-protocol-version", "1")
        .body(full(Bytes::from(msg.encode_to_vec())))
        .unwrap();
    for (name, value) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let reply = Client::connect(addr, http).await.send(req).await;
    let (status, headers) = (reply.status, reply.headers.clone());
    ConnectReply {
        status,
        headers,
        body: reply.bytes().await,
    }
}

/// A gRPC-Web (binary) unary call of `msg` to `path` with extra headers.
pub(crate) async fn web_unary(
    addr: SocketAddr,
    path: &str,
    msg: &EchoRequest,
    headers: &[(&str, &str)],
) -> WebReply {
    web_call(addr, Http::H1, GRPC_WEB, path, msg, headers).await
}

/// Writes `text` to `name` in a fresh directory and returns the path.
pub(crate) fn write_file(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
