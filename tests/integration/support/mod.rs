//! Shared helpers for the integration tests: the in-process test backend, the proxy under
//! test, raw HTTP/1.1 and HTTP/2 clients, gRPC-Web wire helpers, Connect callers and
//! third-party programs run as child processes.
//!
//! Everything binds `127.0.0.1:0` before it is used, so a returned address is ready to take
//! connections; no test sleeps to wait for a server.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Each test module uses its own subset of these helpers.
#![allow(dead_code)]

pub(crate) mod admin;
pub(crate) mod backend;
pub(crate) mod client;
pub(crate) mod connect;
pub(crate) mod daemon;
pub(crate) mod dns;
pub(crate) mod fake;
pub(crate) mod grpcio;
pub(crate) mod jwt;
pub(crate) mod library;
pub(crate) mod pki;
pub(crate) mod process;
pub(crate) mod redis;
pub(crate) mod refusing;
pub(crate) mod relay;
pub(crate) mod tls;
pub(crate) mod web;
pub(crate) mod wire;
pub(crate) mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use switchboard::config::Config;

// The support API, re-exported whole for every test module (interop.rs included).
#[allow(unused_imports)]
pub(crate) use backend::{spawn_backend, Backend, BackendState, Counter, GATED};
#[allow(unused_imports)]
pub(crate) use client::{
    header_list, request, send, streaming_body, Answer, Client, Http, Reply, HTTP_VERSIONS,
};
#[allow(unused_imports)]
pub(crate) use web::{
    grpc_request, web_call, web_request, web_request_with, GrpcReply, WebReply, WebStream,
};
#[allow(unused_imports)]
pub(crate) use wire::{echo, failing, frame, frames, gunzip, gzip};

/// The generated test service (client and server).
pub(crate) mod pb {
    #![allow(unreachable_pub, clippy::all, clippy::unwrap_used, clippy::expect_used)]
    tonic::include_proto!("switchboard.testing.v1");
}

#[allow(unused_imports)]
pub(crate) use pb::{EchoRequest, EchoResponse, ErrorSpec};

/// Method paths of the test service.
pub(crate) const UNARY: &str = "/switchboard.testing.v1.TestService/Unary";
pub(crate) const LOOKUP: &str = "/switchboard.testing.v1.TestService/Lookup";
pub(crate) const SERVER_STREAM: &str = "/switchboard.testing.v1.TestService/ServerStream";
pub(crate) const CLIENT_STREAM: &str = "/switchboard.testing.v1.TestService/ClientStream";
pub(crate) const BIDI: &str = "/switchboard.testing.v1.TestService/Bidi";

/// gRPC-Web request content types.
pub(crate) const GRPC_WEB: &str = "application/grpc-web";
pub(crate) const GRPC_WEB_PROTO: &str = "application/grpc-web+proto";
pub(crate) const GRPC_WEB_JSON: &str = "application/grpc-web+json";
pub(crate) const GRPC_WEB_TEXT: &str = "application/grpc-web-text";
pub(crate) const GRPC_WEB_TEXT_PROTO: &str = "application/grpc-web-text+proto";

/// Every protobuf gRPC-Web content type, binary and text.
pub(crate) const PROTO_CONTENT_TYPES: [&str; 4] =
    [GRPC_WEB, GRPC_WEB_PROTO, GRPC_WEB_TEXT, GRPC_WEB_TEXT_PROTO];

/// The message no test can get right by accident: non-ASCII, a `%` and a non-BMP character.
pub(crate) const UNICODE_MESSAGE: &str = "caf\u{e9} 100% \u{1F608}";

/// A hang guard: how long any single step of a test may take before it fails.
pub(crate) const GUARD: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test with `what` if it takes longer than [`GUARD`].
pub(crate) async fn guard<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(GUARD, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {GUARD:?}: {what}"),
    }
}

/// The proxy under test, serving on an ephemeral loopback port.
#[derive(Debug)]
pub(crate) struct Proxy {
    /// The first listener's address.
    pub(crate) addr: SocketAddr,
    /// `http://127.0.0.1:port`.
    pub(crate) url: String,
    /// The running proxy (all listeners).
    pub(crate) running: switchboard::Running,
}

/// Starts the proxy in quick mode: everything to `upstream_url`, any origin allowed.
pub(crate) async fn spawn_proxy(upstream_url: &str) -> Proxy {
    let config = Config::quick(loopback(), upstream_url, vec!["*".to_owned()])
        .unwrap_or_else(|e| panic!("quick config: {e}"));
    spawn_proxy_config(config).await
}

/// Starts the proxy from YAML (use `127.0.0.1:0` listeners).
pub(crate) async fn spawn_proxy_yaml(yaml: &str) -> Proxy {
    let config = Config::from_yaml(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    spawn_proxy_config(config).await
}

/// Starts the proxy from a ready config.
pub(crate) async fn spawn_proxy_config(config: Config) -> Proxy {
    let running = switchboard::spawn(config)
        .await
        .unwrap_or_else(|e| panic!("spawn proxy: {e:#}"));
    let addr = running.addrs()[0];
    Proxy {
        addr,
        url: format!("http://{addr}"),
        running,
    }
}

/// A config with one loopback listener, one upstream named `backend` at `url` and one route
/// for everything. `upstream` and `route` are extra YAML lines (already indented by the
/// caller's choice of `key: value`, one per line) added to the upstream and the route.
pub(crate) fn one_upstream_yaml(url: &str, upstream: &[&str], route: &[&str]) -> String {
    let mut yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\ncors:\n  allow_origins: [\"*\"]\nupstreams:\n  - name: backend\n    endpoints: [\"{url}\"]\n"
    );
    for line in upstream {
        yaml.push_str(&format!("    {line}\n"));
    }
    yaml.push_str("routes:\n  - match: { prefix: / }\n    upstream: backend\n");
    for line in route {
        yaml.push_str(&format!("    {line}\n"));
    }
    yaml
}

/// A config whose one route matches [`UNARY`] only, to the upstream `backend` at `url`: every
/// other method has no route.
pub(crate) fn unary_only_yaml(url: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  - name: backend\n    endpoints: [\"{url}\"]\nroutes:\n  - match: {{ method: {UNARY} }}\n    upstream: backend\n"
    )
}

/// A config whose one upstream, `closed-backend`, is a loopback port nothing listens on.
pub(crate) fn closed_upstream_yaml() -> String {
    one_upstream_yaml(&format!("http://{}", closed_port()), &[], &[])
        .replace("name: backend", "name: closed-backend")
        .replace("upstream: backend", "upstream: closed-backend")
}

/// `127.0.0.1:0`.
pub(crate) fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// An address nothing listens on: bound once, then released.
pub(crate) fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind(loopback()).unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// A fresh, empty directory for files a test writes (configs, certificates).
pub(crate) fn temp_dir(name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Aborts a task when dropped, so servers die with the value that owns them.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
