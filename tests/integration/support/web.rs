//! gRPC-Web and native gRPC requests, and readers of their responses: gRPC-Web frames read
//! as they stream in (text mode decoded per base64 quantum), whole gRPC-Web replies with
//! their status, and whole native gRPC replies with HTTP trailers.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tonic::Code;

use super::client::{full, request, Client, Http, Reply, ReqBody};
use super::guard;
use super::pb::{EchoRequest, EchoResponse};
use super::wire::{self, Base64Quanta, Trailers};

impl Reply {
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
    web_request_with(path, content_type, frames, &[])
}

/// [`web_request`] with `headers` appended.
pub(crate) fn web_request_with(
    path: &str,
    content_type: &str,
    frames: &[u8],
    headers: &[(&str, &str)],
) -> Request<ReqBody> {
    let body = if content_type.starts_with("application/grpc-web-text") {
        Bytes::from(wire::base64(frames))
    } else {
        Bytes::copy_from_slice(frames)
    };
    let mut all = vec![("x-grpc-web", "1"), ("x-user-agent", "switchboard-tests/1")];
    all.extend_from_slice(headers);
    request(Method::POST, path, Some(content_type), &all, full(body))
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
    let req = web_request_with(path, content_type, &wire::frame(msg), headers);
    let mut client = Client::connect(addr, http).await;
    client.send(req).await.web().await
}

/// Builds a native gRPC POST (for the raw HTTP/2 client) of `frames`.
pub(crate) fn grpc_request(path: &str, frames: &[u8]) -> Request<ReqBody> {
    request(
        Method::POST,
        path,
        Some("application/grpc"),
        &[("te", "trailers")],
        full(Bytes::copy_from_slice(frames)),
    )
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
