//! Callers that stop reading only hurt themselves: 64 HTTP/1.1 callers open 256 MiB server
//! streams and never read them, and other calls on the same upstream connection still
//! answer, while the proxy's memory stays bounded by the per-stream window.
//!
//! The proxy runs as its own process here, so its memory can be read apart from the test's.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::Caller;
use crate::support::process::ProxyProcess;
use crate::support::*;

const STALLED: usize = 64;
const MESSAGE: u32 = 1 << 20;
/// What one stalled stream may hold in the proxy: its HTTP/2 stream window (1 MiB) and what
/// the HTTP/1.1 side buffers before it stops polling (hyper's write buffer, ~400 KiB).
const PER_STREAM_CAP: u64 = 2 << 20;
/// Everything else: runtime, buffers of the connections, allocator slack.
const CONSTANT: u64 = 48 << 20;

/// Opens a gRPC-Web server stream over HTTP/1.1 and never reads the answer.
async fn stalled_stream(proxy: std::net::SocketAddr) -> TcpStream {
    let msg = EchoRequest {
        count: 256,
        response_size: MESSAGE,
        ..echo("stalled")
    };
    let body = frame(&msg);
    let head = format!(
        "POST {SERVER_STREAM} HTTP/1.1\r\nhost: proxy\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body).await.unwrap();
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_do_not_stall_other_calls_and_cost_bounded_memory() {
    let backend = spawn_backend().await;
    let config = temp_dir("stalled").join("switchboard.yaml");
    let yaml = super::config(&[&backend.url], &["max_message_size: 4MiB"], &[]);
    std::fs::write(&config, yaml).unwrap();
    let proxy = ProxyProcess::start(&config);
    let url = format!("http://{}", proxy.addr);
    let mut caller = Caller::at(&url).await;
    for _ in 0..20 {
        assert!(caller.ok(Duration::from_secs(5)).await);
    }
    let before = proxy.rss();
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(stalled_stream(proxy.addr).await);
    }
    // Wait until every window is full: the backend stops being able to send.
    let start = Instant::now();
    let mut last = (backend.state.sent.get(), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = backend.state.sent.get();
        if sent != last.0 {
            last = (sent, Instant::now());
        } else if last.1.elapsed() >= Duration::from_millis(500) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the streams never stalled"
        );
    }
    assert!(
        backend.state.sent.get() >= STALLED,
        "not every stream started"
    );
    // Other calls on the same upstream connection answer as before.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let res = caller
            .unary(echo("still here"), Duration::from_secs(5))
            .await;
        assert!(res.is_ok(), "{res:?}");
        slowest = slowest.max(t.elapsed());
    }
    eprintln!(
        "stalled readers: slowest of 20 other calls: {} ms",
        slowest.as_millis()
    );
    let grown = proxy.rss().saturating_sub(before);
    eprintln!(
        "stalled readers: proxy memory grew by {} MiB for {STALLED} stalled streams",
        grown >> 20
    );
    assert!(
        grown <= STALLED as u64 * PER_STREAM_CAP + CONSTANT,
        "the proxy grew by {} MiB",
        grown >> 20
    );
    drop(stalled);
}
