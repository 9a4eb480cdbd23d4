//! Raw HTTP clients (hyper's connection-level HTTP/1.1 and HTTP/2 prior-knowledge clients),
//! request bodies, a request builder, and responses read whole.

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

use super::wire;
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

/// A request to `path` (path and query; the client adds the authority) with an optional
/// `content-type` and `headers` appended in order (names may repeat).
pub(crate) fn request(
    method: Method,
    path: &str,
    content_type: Option<&str>,
    headers: &[(&str, &str)],
    body: ReqBody,
) -> Request<ReqBody> {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    let mut req = req.body(body).unwrap();
    for (name, value) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    req
}

/// Every value of a comma-separated header, lower-cased, across repeated fields.
pub(crate) fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
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

/// One request on a fresh connection, its whole body read before the connection closes.
pub(crate) async fn send(addr: SocketAddr, http: Http, req: Request<ReqBody>) -> Answer {
    let mut client = Client::connect(addr, http).await;
    client.send(req).await.answer().await
}

/// A whole response: status, headers and the body as it came (still compressed, if it was).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    /// A header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The body as (lossy) text, for failure messages.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body after its `content-encoding` (identity or gzip; anything else fails).
    pub(crate) fn decoded(&self, case: &str) -> Vec<u8> {
        match self.header("content-encoding") {
            None | Some("identity") => self.body.to_vec(),
            Some("gzip") => wire::gunzip(&self.body),
            Some(other) => panic!("{case}: unexpected content-encoding {other}: {self:#?}"),
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

    /// Reads the whole body into an [`Answer`].
    pub(crate) async fn answer(self) -> Answer {
        let (status, headers) = (self.status, self.headers.clone());
        Answer {
            status,
            headers,
            body: self.bytes().await,
        }
    }
}
