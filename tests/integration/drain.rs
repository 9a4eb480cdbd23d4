//! Draining with the real binary: on SIGTERM `/readyz` fails at once while new calls are still
//! served for `shutdown.delay`; then listeners stop, HTTP/2 callers get GOAWAY, HTTP/1.1
//! keep-alive connections close after their current response, calls in flight finish (up to
//! `drain_timeout`), and the process exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::support::admin::get;
use crate::support::client::ReqBody;
use crate::support::daemon::Daemon;
use crate::support::wire::parse_web_body;
use crate::support::*;

fn config(backend: &str, delay: &str, drain_timeout: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nshutdown: {{ delay: {delay}, drain_timeout: {drain_timeout} }}\n{}",
        one_upstream_yaml(backend, &[], &[])
    )
}

fn start(name: &str, yaml: &str) -> (Daemon, SocketAddr, SocketAddr) {
    let dir = temp_dir(name);
    let file = dir.join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut proc = Daemon::switchboard(&["--config", file.to_str().unwrap()], &dir);
    let addr = proc.logged_addr("switchboard::server::listener: listening");
    let admin = proc.logged_addr("admin listening");
    (proc, addr, admin)
}

/// A gRPC-Web unary request with an absolute URI (HTTP/2) or a Host header (HTTP/1.1).
fn unary_request(addr: SocketAddr, msg: &EchoRequest, absolute: bool) -> http::Request<ReqBody> {
    let mut req = web_request(UNARY, GRPC_WEB_PROTO, &frame(msg));
    if absolute {
        *req.uri_mut() = format!("http://{addr}{UNARY}").parse().unwrap();
    } else {
        req.headers_mut()
            .insert("host", addr.to_string().parse().unwrap());
    }
    req
}

async fn body_ok(res: http::Response<hyper::body::Incoming>) {
    use http_body_util::BodyExt as _;
    assert_eq!(res.status(), StatusCode::OK);
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let web = parse_web_body(&bytes).unwrap();
    let status = web.trailers.as_ref().and_then(|t| t.get("grpc-status"));
    assert_eq!(status, Some("0"), "{web:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_then_drains_and_exits_zero() {
    let backend = spawn_backend().await;
    let (mut proc, addr, admin) = start("drain", &config(&backend.url, "2s", "20s"));

    // An HTTP/2 caller with a stream in flight, and an HTTP/1.1 keep-alive caller.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut h2, h2_conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    let h2_task = tokio::spawn(h2_conn);
    let gated = EchoRequest {
        count: 2,
        ..echo(GATED)
    };
    let mut req = web_request(SERVER_STREAM, GRPC_WEB_PROTO, &frame(&gated));
    *req.uri_mut() = format!("http://{addr}{SERVER_STREAM}").parse().unwrap();
    let res = guard("stream headers", h2.send_request(req)).await.unwrap();
    let (parts, body) = res.into_parts();
    let mut stream = Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
    .web_stream();
    assert_eq!(guard("first message", stream.next_message()).await.index, 0);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut h1, h1_conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
    let h1_task = tokio::spawn(h1_conn);
    body_ok(
        guard(
            "h1 call",
            h1.send_request(unary_request(addr, &echo("a"), false)),
        )
        .await
        .unwrap(),
    )
    .await;

    // The signal arrives between these two: `kill` may take a while to exit on a busy machine,
    // so the lower bound below is measured from before it, the upper bounds from after it.
    let sending = Instant::now();
    proc.signal("TERM");
    let signalled = Instant::now();
    // Readiness fails at once...
    guard("readyz 503", async {
        while get(admin, "/readyz").await.status != StatusCode::SERVICE_UNAVAILABLE {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "{:?}",
        signalled.elapsed()
    );
    // ...while new connections and calls are still served during the delay.
    web_call(addr, Http::H1, GRPC_WEB_PROTO, UNARY, &echo("late"), &[])
        .await
        .assert_ok();
    body_ok(
        guard(
            "h2 call",
            h2.send_request(unary_request(addr, &echo("b"), true)),
        )
        .await
        .unwrap(),
    )
    .await;
    // A slow call on the HTTP/1.1 connection is in flight when the listeners stop.
    let slow = EchoRequest {
        delay_ms: 2500,
        ..echo("slow")
    };
    let slow_call = h1.send_request(unary_request(addr, &slow, false));
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "too slow to test the delay"
    );

    // After the delay: no new connections.
    guard("listener closed", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        sending.elapsed() >= Duration::from_secs(2),
        "{:?}",
        sending.elapsed()
    );
    // HTTP/2: GOAWAY, so new streams on the open connection are refused...
    guard("h2 refuses new streams", async {
        loop {
            let sent = h2.send_request(unary_request(addr, &echo("c"), true)).await;
            if sent.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // ...while the stream in flight goes on to its end.
    backend.state.open_gate(1);
    assert_eq!(
        guard("second message", stream.next_message()).await.index,
        1
    );
    guard("stream end", stream.finish()).await.assert_ok();
    // HTTP/1.1: the call in flight is answered, then the connection is closed by the proxy.
    body_ok(guard("slow call", slow_call).await.unwrap()).await;
    guard("h1 connection closed", h1_task)
        .await
        .unwrap()
        .unwrap();
    guard("h2 connection closed", h2_task)
        .await
        .unwrap()
        .unwrap();

    let status = tokio::task::spawn_blocking(move || {
        let s = proc.wait_exit(Duration::from_secs(20));
        (s, proc.output())
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0), "{}", status.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_longer_than_the_drain_timeout_does_not_hold_the_exit() {
    let backend = spawn_backend().await;
    let (mut proc, addr, _admin) = start("drain-timeout", &config(&backend.url, "0s", "1s"));
    let mut c = Client::connect(addr, Http::H2).await;
    let req = web_request(
        SERVER_STREAM,
        GRPC_WEB_PROTO,
        &frame(&EchoRequest {
            count: 2,
            ..echo(GATED)
        }),
    );
    let mut stream = c.send(req).await.web_stream();
    assert_eq!(guard("first message", stream.next_message()).await.index, 0);
    proc.signal("TERM");
    let signalled = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let s = proc.wait_exit(Duration::from_secs(20));
        (s, proc.output())
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0), "{}", status.1);
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "{:?}",
        signalled.elapsed()
    );
    assert!(status.1.contains("drain timeout"), "{}", status.1);
}
