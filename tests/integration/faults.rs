//! Fault classes on the caller side and from misbehaving upstreams: each test reproduces one
//! (it failed before the fix), and checks the caller gets a protocol-correct answer and the
//! proxy keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic::Code;

use crate::support::client::full;
use crate::support::fake::{
    spawn_misbehaving_upstream, spawn_non_grpc_upstream, FAKE_STATUS_HEADER, MISBEHAVE_HEADER,
};
use crate::support::*;

/// A proxy in front of `url` with short caller-side limits.
async fn proxy_with_limits(url: &str, limits: &str) -> Proxy {
    let yaml = one_upstream_yaml(url, &[], &[])
        .replace("listeners:", &format!("limits: {{ {limits} }}\nlisteners:"));
    spawn_proxy_yaml(&yaml).await
}

/// Splits a Connect stream body into (flags, payload) envelopes; fails on a partial one.
fn connect_envelopes(body: &[u8]) -> Vec<(u8, Bytes)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        assert!(body.len() - at >= 5, "partial envelope header: {body:02x?}");
        let len = u32::from_be_bytes(body[at + 1..at + 5].try_into().unwrap()) as usize;
        assert!(
            body.len() - at - 5 >= len,
            "partial envelope: {len} announced, {} there",
            body.len() - at - 5
        );
        out.push((
            body[at],
            Bytes::copy_from_slice(&body[at + 5..at + 5 + len]),
        ));
        at += 5 + len;
    }
    out
}

#[tokio::test]
async fn a_frame_cut_short_upstream_never_reaches_the_caller() {
    let upstream = spawn_misbehaving_upstream().await;
    let proxy = spawn_proxy(&upstream.url).await;
    for how in ["trailers", "reset", "eof"] {
        for ct in PROTO_CONTENT_TYPES {
            for http in HTTP_VERSIONS {
                let case = format!("{how} {ct} {http:?}");
                // `web()` parses every frame and fails on a partial one.
                let reply = web_call(
                    proxy.addr,
                    http,
                    ct,
                    SERVER_STREAM,
                    &echo("x"),
                    &[(MISBEHAVE_HEADER, how)],
                )
                .await;
                assert_eq!(reply.code(), Code::Internal, "{case}: {reply:#?}");
                // A reset may make the peer's HTTP/2 stack drop data it had buffered, so only
                // the other cases must deliver the whole message.
                if how != "reset" {
                    assert_eq!(
                        reply.responses().len(),
                        1,
                        "{case}: the whole message first"
                    );
                    assert_eq!(reply.responses()[0].message, "whole", "{case}");
                }
                if how != "reset" {
                    assert!(
                        reply.message().contains("mid-message"),
                        "{case}: {reply:#?}"
                    );
                }
            }
        }
        // Connect streams: the whole message, then the end-stream message with the error.
        let req = Request::builder()
            .method(Method::POST)
            .uri(SERVER_STREAM)
            .header("content-type", "application/connect+proto")
            .header(MISBEHAVE_HEADER, how)
            .body(full(frame(&echo("x"))))
            .unwrap();
        let mut client = Client::connect(proxy.addr, Http::H1).await;
        let reply = client.send(req).await;
        assert_eq!(reply.status, StatusCode::OK);
        let envelopes = connect_envelopes(&reply.bytes().await);
        let (last, messages) = envelopes.split_last().unwrap();
        if how != "reset" {
            assert_eq!(messages.len(), 1, "{how}: {envelopes:?}");
        }
        for (flags, payload) in messages {
            assert_eq!(*flags, 0);
            assert_eq!(
                EchoResponse::decode(payload.clone()).unwrap().message,
                "whole"
            );
        }
        assert_eq!(last.0, 0x02, "{how}: end-stream flag");
        let end: serde_json::Value = serde_json::from_slice(&last.1).unwrap();
        assert_eq!(end["error"]["code"], "internal", "{how}: {end}");
    }
}

#[tokio::test]
async fn headers_named_in_connection_stay_on_their_hop() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let reply = web_call(
        proxy.addr,
        Http::H1,
        GRPC_WEB_PROTO,
        UNARY,
        &echo("hop"),
        &[
            ("connection", "keep-alive, x-hop-secret"),
            ("connection", "x-other-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop-secret", "1"),
            ("x-other-hop", "2"),
            ("x-end-to-end", "3"),
        ],
    )
    .await;
    reply.assert_ok();
    let seen = backend.state.last_headers();
    for name in ["x-hop-secret", "x-other-hop", "keep-alive", "connection"] {
        assert!(
            !seen.contains_key(name),
            "{name} reached the backend: {seen:?}"
        );
    }
    assert_eq!(seen["x-end-to-end"], "3");
}

/// Sends a request whose body stops after `sent` bytes of a longer announced length, and
/// returns the response status and body.
async fn stalled_request(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    sent: &[u8],
    announced: usize,
) -> (u16, String, Duration) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {announced}\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(sent).await.unwrap();
    let started = Instant::now();
    let (status, body) = read_response(&mut tcp).await;
    (status, body, started.elapsed())
}

/// Reads one HTTP/1.1 response (content-length or chunked) and returns status and body text.
async fn read_response(tcp: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = guard("response bytes", tcp.read(&mut chunk))
            .await
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if response_complete(&buf) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn response_complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let head = head.to_ascii_lowercase();
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= len;
    }
    head.contains("transfer-encoding: chunked") && body.ends_with("0\r\n\r\n")
}

#[tokio::test]
async fn connect_unary_reads_its_body_within_the_deadline() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_limits(&backend.url, "body_timeout: 30s").await;
    let (status, body, took) = stalled_request(
        proxy.addr,
        UNARY,
        &[
            ("content-type", "application/proto"),
            ("connect-timeout-ms", "300"),
        ],
        b"\x0a",
        100,
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("deadline_exceeded"), "{body}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(
        backend.state.calls.get(),
        0,
        "a stalled body must not reach the backend"
    );
}

#[tokio::test]
async fn stalled_request_bodies_end_at_the_body_timeout() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_limits(&backend.url, "body_timeout: 300ms").await;
    // Connect unary without a deadline.
    let (status, body, took) = stalled_request(
        proxy.addr,
        UNARY,
        &[("content-type", "application/proto")],
        b"\x0a",
        100,
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("stalled"), "{body}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // gRPC-Web over HTTP/1.1 without a deadline: the status comes in the trailer frame.
    let (status, body, took) = stalled_request(
        proxy.addr,
        UNARY,
        &[("content-type", "application/grpc-web-text")],
        b"AAAAAA",
        100,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let decoded = String::from_utf8_lossy(&base64_decode_chunks(&body)).into_owned();
    assert!(decoded.contains("grpc-status:4"), "{decoded:?}");
    assert!(decoded.contains("stalled"), "{decoded:?}");
    // The proxy keeps serving.
    let reply = web_call(
        proxy.addr,
        Http::H1,
        GRPC_WEB_PROTO,
        UNARY,
        &echo("ok"),
        &[],
    )
    .await;
    assert_eq!(reply.ok_response().message, "ok");
}

/// Decodes a chunked HTTP/1.1 body of base64 text (each chunk padded on its own).
fn base64_decode_chunks(body: &str) -> Vec<u8> {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut lines = body.split("\r\n");
    while let Some(size) = lines.next() {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 {
            break;
        }
        let data = lines.next().unwrap_or_default();
        for quantum in data.as_bytes().chunks(4) {
            if let Ok(d) = base64::engine::general_purpose::STANDARD.decode(quantum) {
                out.extend_from_slice(&d);
            }
        }
    }
    out
}

/// Writes a whole request (headers and a large body) and only then reads the answer, as
/// simple clients do. The proxy answers early; the caller must still read the answer.
async fn early_answer(
    addr: SocketAddr,
    head: &str,
    body_len: usize,
    prefix: &[u8],
) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!("{head}content-length: {body_len}\r\nconnection: close\r\n\r\n");
    let mut body = prefix.to_vec();
    body.resize(body_len, b'x');
    let write = async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(&body).await
    };
    guard("writing the request", write)
        .await
        .unwrap_or_else(|e| panic!("the request could not be written: {e}"));
    read_response(&mut tcp).await
}

#[tokio::test]
async fn early_answers_reach_http1_callers_that_are_still_sending() {
    let backend = spawn_backend().await;
    let yaml = one_upstream_yaml(&backend.url, &["max_message_size: 1KiB"], &[]);
    let proxy = spawn_proxy_yaml(&yaml).await;
    let big = 8 << 20;
    for round in 0..3 {
        // Unsupported content type: 415 before the body is read.
        let (status, body) = early_answer(
            proxy.addr,
            "POST /a.B/C HTTP/1.1\r\nhost: t\r\ncontent-type: text/plain\r\n",
            big,
            b"",
        )
        .await;
        assert_eq!(status, 415, "round {round}: {body}");
        // Wrong method for an RPC: 405.
        let (status, body) = early_answer(
            proxy.addr,
            "PUT /a.B/C HTTP/1.1\r\nhost: t\r\ncontent-type: application/proto\r\n",
            big,
            b"",
        )
        .await;
        assert_eq!(status, 405, "round {round}: {body}");
        // A gRPC-Web message over the size limit: the status in the trailer frame.
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&u32::try_from(big - 5).unwrap().to_be_bytes());
        let (status, body) = early_answer(
            proxy.addr,
            &format!(
                "POST {UNARY} HTTP/1.1\r\nhost: t\r\ncontent-type: application/grpc-web+proto\r\n"
            ),
            big,
            &prefix,
        )
        .await;
        assert_eq!(status, 200, "round {round}");
        assert!(body.contains("grpc-status:8"), "round {round}: {body:?}");
        // Connect unary with a compression the proxy does not support.
        let (status, body) = early_answer(
            proxy.addr,
            &format!("POST {UNARY} HTTP/1.1\r\nhost: t\r\ncontent-type: application/proto\r\ncontent-encoding: br\r\n"),
            big,
            b"",
        )
        .await;
        assert_eq!(status, 501, "round {round}: {body}");
        assert!(body.contains("unimplemented"), "round {round}: {body}");
    }
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_limits(&backend.url, "header_timeout: 300ms, idle_timeout: 400ms").await;
    // A connection that never sends a byte (HTTP/1.1 or HTTP/2 alike).
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = guard("silent connection closed", silent.read(&mut buf)).await;
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Connections that made a call and then went quiet.
    for http in HTTP_VERSIONS {
        let mut client = Client::connect(proxy.addr, http).await;
        let before = Instant::now();
        let reply = client
            .send(web_request(UNARY, GRPC_WEB_PROTO, &frame(&echo("idle"))))
            .await
            .web()
            .await;
        reply.assert_ok();
        guard("idle connection closed", client.closed()).await;
        let took = before.elapsed();
        // HTTP/1.1 waits for the next request's headers at most header_timeout.
        assert!(
            took >= Duration::from_millis(250),
            "{http:?}: closed after {took:?}"
        );
    }
}

/// One gRPC-Web call on a fresh HTTP/1.1 connection; `None` when the connection is closed
/// before an answer.
async fn raw_unary(addr: SocketAddr) -> Option<u16> {
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    let body = frame(&echo("raw"));
    let head = format!(
        "POST {UNARY} HTTP/1.1\r\nhost: t\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.ok()?;
    tcp.write_all(&body).await.ok()?;
    let mut buf = Vec::new();
    guard("raw call", tcp.read_to_end(&mut buf)).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.split(' ').nth(1).and_then(|s| s.parse().ok())
}

#[tokio::test]
async fn the_connection_limit_closes_extra_connections_only() {
    let backend = spawn_backend().await;
    let proxy = proxy_with_limits(&backend.url, "max_connections: 2").await;
    let mut a = Client::connect(proxy.addr, Http::H2).await;
    let mut b = Client::connect(proxy.addr, Http::H2).await;
    for c in [&mut a, &mut b] {
        c.send(web_request(UNARY, GRPC_WEB_PROTO, &frame(&echo("in"))))
            .await
            .web()
            .await
            .assert_ok();
    }
    // The third connection is closed at once.
    assert_eq!(raw_unary(proxy.addr).await, None);
    // The two keep working.
    b.send(web_request(UNARY, GRPC_WEB_PROTO, &frame(&echo("still"))))
        .await
        .web()
        .await
        .assert_ok();
    // Once one leaves, there is room again (its slot frees when the proxy sees it close).
    drop(a);
    let mut answered = None;
    for _ in 0..100 {
        answered = raw_unary(proxy.addr).await;
        if answered.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answered, Some(200), "no room after a connection closed");
    drop(b);
}

#[tokio::test]
async fn an_upstream_404_is_a_connect_404() {
    let upstream = spawn_non_grpc_upstream().await;
    let proxy = spawn_proxy(&upstream.url).await;
    for http in HTTP_VERSIONS {
        let req = Request::builder()
            .method(Method::POST)
            .uri(UNARY)
            .header("content-type", "application/proto")
            .header(FAKE_STATUS_HEADER, "404")
            .body(full(echo("x").encode_to_vec()))
            .unwrap();
        let mut client = Client::connect(proxy.addr, http).await;
        let reply = client.send(req).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{http:?}");
        let body: serde_json::Value = serde_json::from_slice(&reply.bytes().await).unwrap();
        assert_eq!(body["code"], "unimplemented", "{http:?}: {body}");
        let msg = body["message"].as_str().unwrap_or_default();
        assert!(!msg.contains("127.0.0.1"), "{msg}");
    }
}
