//! A `grpc-websockets` client (improbable-eng's WebSocket transport, written from its wire
//! format) over a real WebSocket: tokio-tungstenite on HTTP/1.1 (`Upgrade`), or on an HTTP/2
//! extended CONNECT stream (RFC 8441) opened with the h2 crate.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt as _, StreamExt as _};
use http::HeaderMap;
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tonic::Code;

use super::pb::{EchoRequest, EchoResponse};
use super::wire;

/// Any byte stream a socket runs on.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One call's socket.
pub(crate) struct WsCall {
    pub(crate) ws: WebSocketStream<Box<dyn Io>>,
    buf: BytesMut,
    /// Frames parsed and not handed out yet.
    pending: std::collections::VecDeque<(u8, Bytes)>,
    /// Whether the header frame was handed out.
    headers_seen: bool,
}

/// What the client sees, in order.
#[derive(Debug)]
pub(crate) enum WsEvent {
    /// A frame: flag `0x80` for the header and trailer frames, 0 for messages.
    Frame(u8, Bytes),
    /// A PING from the proxy.
    Ping,
    /// The socket closed (with the proxy's close frame, if it sent one).
    Closed(Option<CloseFrame>),
}

/// Opens a `grpc-websockets` socket over HTTP/1.1 to `path`, with an `Origin` when given.
/// `Err` carries the HTTP status of a refused upgrade.
pub(crate) async fn connect(
    addr: SocketAddr,
    path: &str,
    origin: Option<&str>,
) -> Result<WsCall, http::StatusCode> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_static("grpc-websockets"),
    );
    if let Some(o) = origin {
        req.headers_mut()
            .insert("origin", http::HeaderValue::from_str(o).unwrap());
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    let io: Box<dyn Io> = Box::new(tcp);
    match tokio_tungstenite::client_async(req, io).await {
        Ok((ws, res)) => {
            assert_eq!(res.headers()["sec-websocket-protocol"], "grpc-websockets");
            Ok(WsCall::new(ws))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status()),
        Err(e) => panic!("WebSocket handshake failed: {e}"),
    }
}

/// Opens a `grpc-websockets` socket as an HTTP/2 extended CONNECT stream on a new h2c
/// connection.
pub(crate) async fn connect_h2(addr: SocketAddr, path: &str) -> WsCall {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, mut conn) = h2::client::handshake(tcp).await.unwrap();
    let mut ping = conn.ping_pong().unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // The server's SETTINGS come before its answer to a PING: after it, they are known.
    ping.ping(h2::Ping::opaque()).await.unwrap();
    let mut client = client.ready().await.unwrap();
    assert!(
        client.is_extended_connect_protocol_enabled(),
        "the proxy does not offer SETTINGS_ENABLE_CONNECT_PROTOCOL"
    );
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}{path}"))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "grpc-websockets")
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (response, send) = client.send_request(req, false).unwrap();
    let res = response.await.unwrap();
    assert_eq!(res.status(), http::StatusCode::OK);
    assert_eq!(res.headers()["sec-websocket-protocol"], "grpc-websockets");
    let io: Box<dyn Io> = Box::new(H2Io {
        send,
        recv: res.into_body(),
        buf: Bytes::new(),
    });
    WsCall::new(WebSocketStream::from_raw_socket(io, Role::Client, None).await)
}

impl WsCall {
    fn new(ws: WebSocketStream<Box<dyn Io>>) -> WsCall {
        WsCall {
            ws,
            buf: BytesMut::new(),
            pending: Default::default(),
            headers_seen: false,
        }
    }

    /// Sends the call's metadata (with the content type the improbable client always sets).
    pub(crate) async fn start(&mut self, metadata: &[(&str, &str)]) {
        let mut block =
            String::from("content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n");
        for (n, v) in metadata {
            block.push_str(&format!("{n}: {v}\r\n"));
        }
        self.send_raw(Bytes::from(block)).await;
    }

    /// Sends one request message (control byte 0, then its frame).
    pub(crate) async fn send(&mut self, msg: &EchoRequest) {
        let mut m = vec![0u8];
        m.extend_from_slice(&wire::frame(msg));
        self.send_raw(Bytes::from(m)).await;
    }

    /// Sends the end-of-send message.
    pub(crate) async fn finish(&mut self) {
        self.send_raw(Bytes::from_static(&[1])).await;
    }

    pub(crate) async fn send_raw(&mut self, bytes: Bytes) {
        self.ws.send(Message::Binary(bytes)).await.unwrap();
    }

    /// The next event. Every WebSocket message must hold whole frames only at its end: the
    /// improbable client stops parsing a message at a `0x80` frame.
    pub(crate) async fn next(&mut self) -> WsEvent {
        loop {
            if let Some((flag, payload)) = self.pending.pop_front() {
                if flag & 0x80 != 0 {
                    self.headers_seen = true;
                }
                return WsEvent::Frame(flag, payload);
            }
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    self.buf.extend_from_slice(&b);
                    while self.buf.len() >= 5 {
                        let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                        if self.buf.len() < 5 + len {
                            break;
                        }
                        let flag = self.buf[0];
                        self.buf.advance(5);
                        let payload = self.buf.split_to(len).freeze();
                        if flag & 0x80 != 0 {
                            assert!(
                                self.buf.is_empty(),
                                "bytes follow a 0x80 frame in the same message"
                            );
                        }
                        self.pending.push_back((flag, payload));
                    }
                }
                Some(Ok(Message::Ping(_))) => return WsEvent::Ping,
                Some(Ok(Message::Close(frame))) => return WsEvent::Closed(frame),
                Some(Ok(other)) => panic!("unexpected message {other:?}"),
                None | Some(Err(_)) => return WsEvent::Closed(None),
            }
        }
    }

    /// The next response message (skipping PINGs); panics on anything else.
    pub(crate) async fn next_message(&mut self) -> EchoResponse {
        loop {
            let headers_seen = self.headers_seen;
            match self.next().await {
                WsEvent::Frame(0, m) => return wire::decode_response(&m),
                WsEvent::Frame(0x80, _) if !headers_seen => {}
                WsEvent::Ping => {}
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// The header frame (skipping PINGs).
    pub(crate) async fn headers(&mut self) -> HeaderMap {
        loop {
            match self.next().await {
                WsEvent::Frame(0x80, h) => return parse_lines(&h),
                WsEvent::Ping => {}
                other => panic!("expected the header frame, got {other:?}"),
            }
        }
    }

    /// Reads to the end: header frame, messages, trailer frame, close.
    pub(crate) async fn reply(mut self) -> WsReply {
        let mut reply = WsReply::default();
        loop {
            let headers_seen = self.headers_seen;
            match self.next().await {
                WsEvent::Frame(0x80, block) if !headers_seen => reply.headers = parse_lines(&block),
                WsEvent::Frame(0x80, block) => reply.trailers = Some(parse_lines(&block)),
                WsEvent::Frame(_, m) => {
                    assert!(reply.trailers.is_none(), "a message after the trailers");
                    reply.messages.push(m);
                }
                WsEvent::Ping => {}
                WsEvent::Closed(frame) => {
                    reply.close = frame;
                    return reply;
                }
            }
        }
    }
}

/// A whole reply.
#[derive(Debug, Default)]
pub(crate) struct WsReply {
    pub(crate) headers: HeaderMap,
    pub(crate) messages: Vec<Bytes>,
    pub(crate) trailers: Option<HeaderMap>,
    pub(crate) close: Option<CloseFrame>,
}

impl WsReply {
    pub(crate) fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .map(|v| v.to_str().unwrap())
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub(crate) fn code(&self) -> Code {
        let s = self
            .trailer("grpc-status")
            .unwrap_or_else(|| panic!("no grpc-status in the trailer frame: {self:#?}"));
        Code::from_i32(s.parse().unwrap())
    }

    pub(crate) fn message(&self) -> String {
        wire::percent_decode(self.trailer("grpc-message").unwrap_or_default())
    }

    pub(crate) fn responses(&self) -> Vec<EchoResponse> {
        self.messages
            .iter()
            .map(|m| EchoResponse::decode(&m[..]).unwrap())
            .collect()
    }

    /// OK, closed with a normal close frame.
    pub(crate) fn assert_ok(&self) {
        assert_eq!(self.code(), Code::Ok, "{self:#?}");
        let close = self.close.as_ref().expect("the proxy sent no close frame");
        assert_eq!(u16::from(close.code), 1000, "{self:#?}");
    }
}

/// `name: value` lines (header frame) or `name:value` lines (trailer frame).
fn parse_lines(block: &[u8]) -> HeaderMap {
    let text = std::str::from_utf8(block).unwrap();
    let mut h = HeaderMap::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let (n, v) = line.split_once(':').unwrap();
        h.append(
            http::HeaderName::from_bytes(n.trim().as_bytes()).unwrap(),
            http::HeaderValue::from_str(v.trim()).unwrap(),
        );
    }
    h
}

/// An HTTP/2 stream as a byte stream.
struct H2Io {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    buf: Bytes,
}

impl AsyncRead for H2Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.buf.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(b)) => {
                    let _ = self.recv.flow_control().release_capacity(b.len());
                    self.buf = b;
                }
                Some(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.buf.len().min(out.remaining());
        out.put_slice(&self.buf[..n]);
        self.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.send.reserve_capacity(data.len());
        let n = match ready!(self.send.poll_capacity(cx)) {
            Some(Ok(n)) => n.min(data.len()),
            Some(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
            None => return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        };
        self.send
            .send_data(Bytes::copy_from_slice(&data[..n]), false)
            .map_err(std::io::Error::other)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let _ = self.send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}
