//! Bidi echo conversations for the load generator (`bench-load --rpc bidi`): one long-lived
//! `TestService/Bidi` call per worker, one message at a time, each sent when the echo of the
//! previous one is back, so a message's round trip is its latency. Two ways to the proxy:
//!
//! - `ws`: improbable-eng's WebSocket transport (`grpc-websockets`) over an HTTP/1.1 upgrade,
//!   one socket per conversation (as a browser opens one per call);
//! - `connect`: a Connect stream (`application/connect+proto`) over HTTP/2, the request body a
//!   stream, one connection per conversation.

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt as _, StreamExt as _};
use http::Request;
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use crate::pb::EchoRequest;

const PATH: &str = "/switchboard.testing.v1.TestService/Bidi";

/// How a conversation reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// `grpc-websockets` over an HTTP/1.1 upgrade.
    WebSocket,
    /// Connect streaming over HTTP/2.
    ConnectH2,
}

impl Way {
    /// Parses `ws` or `connect`.
    pub fn parse(s: &str) -> Option<Way> {
        match s {
            "ws" => Some(Way::WebSocket),
            "connect" => Some(Way::ConnectH2),
            _ => None,
        }
    }
}

/// One request frame (5-byte envelope and an `EchoRequest` with `size` payload bytes).
fn request_frame(size: usize) -> Bytes {
    let msg = EchoRequest {
        message: "bench".into(),
        payload: Bytes::from(vec![b'p'; size]),
        ..EchoRequest::default()
    }
    .encode_to_vec();
    let mut out = BytesMut::with_capacity(5 + msg.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    out.freeze()
}

/// Collects bytes and takes whole envelopes out: `(flags, payload length)`.
#[derive(Default)]
struct Envelopes(BytesMut);

impl Envelopes {
    fn push(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    fn next(&mut self) -> Option<(u8, usize)> {
        if self.0.len() < 5 {
            return None;
        }
        let len = u32::from_be_bytes([self.0[1], self.0[2], self.0[3], self.0[4]]) as usize;
        if self.0.len() < 5 + len {
            return None;
        }
        let flags = self.0[0];
        self.0.advance(5 + len);
        Some((flags, len))
    }
}

/// Runs one conversation until `go` says stop, calling `echoed` with each round trip.
pub async fn converse(
    way: Way,
    target: &str,
    size: usize,
    go: impl Fn() -> bool,
    mut echoed: impl FnMut(Duration),
) -> Result<(), String> {
    let frame = request_frame(size);
    let tcp = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connection: {target}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    match way {
        Way::WebSocket => {
            let mut req = format!("ws://{target}{PATH}")
                .into_client_request()
                .map_err(|e| e.to_string())?;
            req.headers_mut().insert(
                "sec-websocket-protocol",
                http::HeaderValue::from_static("grpc-websockets"),
            );
            let (mut ws, _) = tokio_tungstenite::client_async(req, tcp)
                .await
                .map_err(|e| format!("connection: upgrade: {e}"))?;
            let send = |m: Bytes| Message::Binary(m);
            ws.send(send(Bytes::from_static(
                b"content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n",
            )))
            .await
            .map_err(|e| e.to_string())?;
            let mut data = BytesMut::with_capacity(1 + frame.len());
            data.extend_from_slice(&[0]);
            data.extend_from_slice(&frame);
            let data = data.freeze();
            let mut env = Envelopes::default();
            while go() {
                let start = Instant::now();
                ws.send(send(data.clone()))
                    .await
                    .map_err(|e| e.to_string())?;
                'echo: loop {
                    match ws.next().await {
                        Some(Ok(Message::Binary(b))) => {
                            env.push(&b);
                            // The header frame comes first; the echo is a message frame.
                            while let Some((flags, _)) = env.next() {
                                if flags == 0 {
                                    break 'echo;
                                }
                            }
                        }
                        Some(Ok(_)) => {}
                        other => return Err(format!("body: socket ended: {other:?}")),
                    }
                }
                echoed(start.elapsed());
            }
            let _ = ws.send(send(Bytes::from_static(&[1]))).await;
            let _ = ws.close(None).await;
            Ok(())
        }
        Way::ConnectH2 => {
            let (mut sender, conn) = http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(crate::h2::STREAM_WINDOW)
                .initial_connection_window_size(crate::h2::CONN_WINDOW)
                .max_frame_size(crate::h2::MAX_FRAME)
                .handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| format!("connection: {e}"))?;
            tokio::spawn(conn);
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
            let body = StreamBody::new(Box::pin(tokio_stream_from(rx)));
            let req = Request::post(PATH)
                .header("content-type", "application/connect+proto")
                .header("connect-protocol-version", "1")
                .body(body)
                .map_err(|e| e.to_string())?;
            // The first message goes with the request: the response head comes after it.
            let start = Instant::now();
            tx.send(Ok(Frame::data(frame.clone())))
                .await
                .map_err(|e| e.to_string())?;
            let res = sender
                .send_request(req)
                .await
                .map_err(|e| format!("request: {e}"))?;
            if res.status() != 200 {
                return Err(format!("HTTP {}", res.status()));
            }
            let mut body = res.into_body();
            let mut env = Envelopes::default();
            let mut start = start;
            loop {
                let Some(f) = body.frame().await else {
                    return Err("body: stream ended".into());
                };
                let f = f.map_err(|e| format!("body: {e}"))?;
                let Ok(data) = f.into_data() else { continue };
                env.push(&data);
                while let Some((flags, len)) = env.next() {
                    if flags != 0 {
                        return Err(format!(
                            "body: end-stream message ({len} bytes) before the end"
                        ));
                    }
                    echoed(start.elapsed());
                    if !go() {
                        drop(tx);
                        return Ok(());
                    }
                    start = Instant::now();
                    tx.send(Ok(Frame::data(frame.clone())))
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
}

/// A receiver as a stream (without tokio-stream).
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}
