//! Raw HTTP clients (hyper's connection-level HTTP/1.1 and HTTP/2 prior-knowledge clients)
//! and gRPC-Web readers that parse the response as it streams in.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::pb::{EchoRequest, EchoResponse};
use super::wire::{self, Base64Quanta, Trailers};
use super::{guard, AbortOnDrop};

/// The request body type of every raw client.
pub(crate) type ReqBody = UnsyncBoxBody<Bytes, Infallible>;

/// A complete request body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into()).boxed_unsync()
}

/// An empty request body.
pub(crate) fn empty() -> ReqBody {
    Empty::new().boxed_unsync()
}

/// The sending half of a streaming request body; dropping it ends the body.
#[derive(Debug, Clone)]
pub(crate) struct BodySender(mpsc::Sender<Result<Frame<Bytes>, Infallible>>);

impl BodySender {
    /// Sends one chunk (one DATA frame on HTTP/2, one chunk on HTTP/1.1).
    pub(crate) async fn send(&self, chunk: impl Into<Bytes>) {
        self.0
            .send(Ok(Frame::data(chunk.into())))
            .await
            .expect("request body receiver is gone");
    }
}

/// A request body the test writes chunk by chunk.
pub(crate) fn streaming_body() -> (BodySender, ReqBody) {
    let (tx, rx) = mpsc::channel(16);
    (
        BodySender(tx),
        StreamBody::new(ReceiverStream::new(rx)).boxed_unsync(),
    )
}

/// HTTP version of a raw client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Http {
    /// HTTP/1.1.
    H1,
    /// HTTP/2 with prior knowledge (cleartext) or ALPN h2.
    H2,
}

/// Both HTTP versions, for table-driven tests.
pub(crate) const HTTP_VERSIONS: [Http; 2] = [Http::H1, Http::H2];

enum Sender {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
}

/// One client connection. Dropping it closes the connection.
pub(crate) struct Client {
    sender: Sender,
    pub(crate) authority: String,
    scheme: &'static str,
    _conn: AbortOnDrop,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("authority", &self.authority)
            .finish()
    }
}

impl Client {
    /// Connects over cleartext TCP.
    pub(crate) async fn connect(addr: SocketAddr, http: Http) -> Client {
        let tcp = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        tcp.set_nodelay(true).unwrap();
        Client::over(tcp, addr.to_string(), "http", http).await
    }

    /// Runs HTTP over an established stream (e.g. TLS).
    pub(crate) async fn over<IO>(
        io: IO,
        authority: String,
        scheme: &'static str,
        http: Http,
    ) -> Client
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        let (sender, conn) = match http {
            Http::H1 => {
                let (s, c) = http1::handshake(io).await.unwrap();
                let task = tokio::spawn(async move {
                    let _ = c.await;
                });
                (Sender::H1(s), task)
            }
            Http::H2 => {
                let (s, c) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
                let task = tokio::spawn(async move {
                    let _ = c.await;
                });
                (Sender::H2(s), task)
            }
        };
        Client {
            sender,
            authority,
            scheme,
            _conn: AbortOnDrop(conn),
        }
    }

    /// Waits until the server closes the connection.
    pub(crate) async fn closed(mut self) {
        let _ = (&mut self._conn.0).await;
    }

    /// Sends a request whose URI is just a path; the client fills in the authority.
    pub(crate) async fn send(&mut self, mut req: Request<ReqBody>) -> Reply {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), ToString::to_string);
        let res = match &mut self.sender {
            Sender::H1(s) => {
                req.headers_mut()
                    .insert(HOST, HeaderValue::from_str(&self.authority).unwrap());
                *req.uri_mut() = path.parse().unwrap();
                guard("HTTP/1.1 connection ready", s.ready())
                    .await
                    .expect("HTTP/1.1 connection closed");
                guard("HTTP/1.1 response headers", s.send_request(req)).await
            }
            Sender::H2(s) => {
                *req.uri_mut() = Uri::builder()
                    .scheme(self.scheme)
                    .authority(self.authority.as_str())
                    .path_and_query(path)
                    .build()
                    .unwrap();
                guard("HTTP/2 connection ready", s.ready())
                    .await
                    .expect("HTTP/2 connection closed");
                guard("HTTP/2 response headers", s.send_request(req)).await
            }
        };
        let res = res.unwrap_or_else(|e| panic!("request failed: {e:?}"));
        let (parts, body) = res.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

/// A response whose body has not been read yet.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Incoming,
}

impl Reply {
    /// A header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Reads the whole body.
    pub(crate) async fn bytes(self) -> Bytes {
        guard("response body", self.body.collect())
            .await
            .unwrap_or_else(|e| panic!("reading the body: {e:?}"))
            .to_bytes()
    }

    /// Starts reading the body as gRPC-Web frames (text mode if the response says so).
    pub(crate) fn web_stream(self) -> WebStream {
        let text = self
            .header(CONTENT_TYPE.as_str())
            .is_some_and(|ct| ct.starts_with("application/grpc-web-text"));
        WebStream {
            status: self.status,
            headers: self.headers,
            body: Some(self.body),
            text,
            quanta: Base64Quanta::default(),
            all: Vec::new(),
            pos: 0,
        }
    }

    /// Reads the whole body as a gRPC-Web response.
    pub(crate) async fn web(self) -> WebReply {
        self.web_stream().finish().await
    }
}

/// A gRPC-Web response read incrementally, one frame at a time.
#[derive(Debug)]
pub(crate) struct WebStream {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    body: Option<Incoming>,
    /// The body is base64 (decoded per quantum as it arrives).
    pub(crate) text: bool,
    quanta: Base64Quanta,
    /// Every decoded byte so far.
    all: Vec<u8>,
    /// Start of the first frame not yet returned by `next_frame`.
    pos: usize,
}

impl WebStream {
    /// Reads one more body chunk; false at the end of the body.
    async fn read_chunk(&mut self) -> bool {
        let Some(body) = self.body.as_mut() else {
            return false;
        };
        loop {
            match guard("next response body chunk", body.frame()).await {
                None => {
                    self.body = None;
                    if self.text {
                        self.quanta.finish().unwrap();
                    }
                    return false;
                }
                Some(Err(e)) => panic!("response body failed: {e:?}"),
                Some(Ok(f)) => {
                    let Ok(data) = f.into_data() else {
                        // HTTP trailers: a gRPC-Web response has none that matter.
                        continue;
                    };
                    if self.text {
                        let decoded = self.quanta.push(&data).unwrap();
                        self.all.extend_from_slice(&decoded);
                    } else {
                        self.all.extend_from_slice(&data);
                    }
                    return true;
                }
            }
        }
    }

    /// The next complete frame (flag, payload), or None at the end of the body.
    pub(crate) async fn next_frame(&mut self) -> Option<(u8, Bytes)> {
        loop {
            if let Some((flag, payload, _)) = wire::split_frame(&self.all[self.pos..]) {
                let out = (flag, Bytes::copy_from_slice(payload));
                self.pos += 5 + payload.len();
                return Some(out);
            }
            if !self.read_chunk().await {
                assert_eq!(
                    self.pos,
                    self.all.len(),
                    "body ends inside a frame: {:02x?}",
                    &self.all[self.pos..]
                );
                return None;
            }
        }
    }

    /// The next frame, which must be a data frame holding an `EchoResponse`.
    pub(crate) async fn next_message(&mut self) -> EchoResponse {
        match self.next_frame().await {
            Some((0, payload)) => wire::decode_response(&payload),
            other => panic!("expected a data frame, got {other:02x?}"),
        }
    }

    /// Reads the rest of the body and checks the whole of it.
    pub(crate) async fn finish(mut self) -> WebReply {
        while self.read_chunk().await {}
        let body = wire::parse_web_body(&self.all)
            .unwrap_or_else(|e| panic!("malformed gRPC-Web body: {e}; headers {:?}", self.headers));
        WebReply {
            http_status: self.status,
            headers: self.headers,
            text: self.text,
            messages: body.messages,
            trailers: body.trailers,
        }
    }
}

/// A whole gRPC-Web response.
#[derive(Debug, Clone)]
pub(crate) struct WebReply {
    pub(crate) http_status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// The body was base64.
    pub(crate) text: bool,
    pub(crate) messages: Vec<Bytes>,
    /// The trailer frame, if any.
    pub(crate) trailers: Option<Trailers>,
}

impl WebReply {
    /// A response header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// A status field from the trailer frame, or from the headers when there is no trailer
    /// frame (a Trailers-Only response).
    fn status_field(&self, name: &str) -> Option<String> {
        match &self.trailers {
            Some(t) => t.get(name).map(str::to_owned),
            None => self.header(name).map(str::to_owned),
        }
    }

    /// The numeric `grpc-status`.
    pub(crate) fn status(&self) -> Option<i32> {
        self.status_field("grpc-status").map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("grpc-status is not a number: {s:?}"))
        })
    }

    /// The status code; fails the test if there is none.
    pub(crate) fn code(&self) -> Code {
        let status = self
            .status()
            .unwrap_or_else(|| panic!("no grpc-status in the response: {self:#?}"));
        Code::from_i32(status)
    }

    /// `grpc-message` as sent (percent-encoded).
    pub(crate) fn raw_message(&self) -> Option<String> {
        self.status_field("grpc-message")
    }

    /// `grpc-message`, percent-decoded; empty when absent.
    pub(crate) fn message(&self) -> String {
        self.raw_message()
            .map(|m| wire::percent_decode(&m))
            .unwrap_or_default()
    }

    /// A field of the trailer frame.
    pub(crate) fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.as_ref().and_then(|t| t.get(name))
    }

    /// The data frames decoded as `EchoResponse`s.
    pub(crate) fn responses(&self) -> Vec<EchoResponse> {
        self.messages
            .iter()
            .map(|m| wire::decode_response(m))
            .collect()
    }

    /// Asserts an OK call with exactly one response message and returns it.
    pub(crate) fn ok_response(&self) -> EchoResponse {
        self.assert_ok();
        assert_eq!(self.messages.len(), 1, "one message expected: {self:#?}");
        wire::decode_response(&self.messages[0])
    }

    /// Asserts HTTP 200 and grpc-status 0 in a trailer frame.
    pub(crate) fn assert_ok(&self) {
        assert_eq!(self.http_status, StatusCode::OK, "{self:#?}");
        assert!(self.trailers.is_some(), "no trailer frame: {self:#?}");
        assert_eq!(self.status(), Some(0), "not OK: {self:#?}");
    }

    /// The status as a tonic `Status`, with `grpc-status-details-bin` decoded, so the
    /// `tonic_types::StatusExt` accessors can read the details.
    pub(crate) fn tonic_status(&self) -> tonic::Status {
        let details = self
            .status_field("grpc-status-details-bin")
            .map(|d| {
                use base64::Engine as _;
                let engine = base64::engine::GeneralPurpose::new(
                    &base64::alphabet::STANDARD,
                    base64::engine::GeneralPurposeConfig::new()
                        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
                );
                engine
                    .decode(d.trim())
                    .unwrap_or_else(|e| panic!("grpc-status-details-bin {d:?}: {e}"))
            })
            .unwrap_or_default();
        tonic::Status::with_details(self.code(), self.message(), details.into())
    }
}

/// Builds a gRPC-Web POST of `frames` (binary frames; base64 when `content_type` is text).
pub(crate) fn web_request(path: &str, content_type: &str, frames: &[u8]) -> Request<ReqBody> {
    let body = if content_type.starts_with("application/grpc-web-text") {
        Bytes::from(wire::base64(frames))
    } else {
        Bytes::copy_from_slice(frames)
    };
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(CONTENT_TYPE, content_type)
        .header("x-grpc-web", "1")
        .header("x-user-agent", "switchboard-tests/1")
        .body(full(body))
        .unwrap()
}

/// One gRPC-Web call on a fresh connection: `msg` to `path`, with extra request headers.
pub(crate) async fn web_call(
    addr: SocketAddr,
    http: Http,
    content_type: &str,
    path: &str,
    msg: &EchoRequest,
    headers: &[(&str, &str)],
) -> WebReply {
    let mut req = web_request(path, content_type, &wire::frame(msg));
    for (name, value) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let mut client = Client::connect(addr, http).await;
    client.send(req).await.web().await
}

/// Builds a native gRPC POST (for the raw HTTP/2 client) of `frames`.
pub(crate) fn grpc_request(path: &str, frames: &[u8]) -> Request<ReqBody> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(full(Bytes::copy_from_slice(frames)))
        .unwrap()
}

/// A whole native gRPC response read by the raw client.
#[derive(Debug, Clone)]
pub(crate) struct GrpcReply {
    pub(crate) http_status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) messages: Vec<Bytes>,
    /// HTTP trailers (empty for a Trailers-Only response).
    pub(crate) trailers: HeaderMap,
}

impl GrpcReply {
    /// The status code from the trailers, or from the headers of a Trailers-Only response.
    pub(crate) fn code(&self) -> Code {
        let value = self
            .trailers
            .get("grpc-status")
            .or_else(|| self.headers.get("grpc-status"))
            .unwrap_or_else(|| panic!("no grpc-status: {self:#?}"));
        Code::from_i32(value.to_str().unwrap().parse().unwrap())
    }
}

impl Reply {
    /// Reads the whole body and trailers as a native gRPC response.
    pub(crate) async fn grpc(self) -> GrpcReply {
        let collected = guard("gRPC response body", self.body.collect())
            .await
            .unwrap_or_else(|e| panic!("reading the body: {e:?}"));
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let bytes = collected.to_bytes();
        let body =
            wire::parse_web_body(&bytes).unwrap_or_else(|e| panic!("malformed gRPC body: {e}"));
        assert!(body.trailers.is_none(), "a gRPC body has no trailer frame");
        GrpcReply {
            http_status: self.status,
            headers: self.headers,
            messages: body.messages,
            trailers,
        }
    }
}
