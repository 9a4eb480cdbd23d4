//! Connect callers (PROTOCOLS.md §3, §5, §6): unary POST and GET requests, enveloped
//! streams read one envelope at a time as they arrive, and the assertions on a Connect
//! answer, error and end-stream message, for protobuf and JSON messages alike.

use std::net::SocketAddr;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use prost::Message as _;
use serde_json::Value;

use super::client::{empty, full, request, send, Answer, Client, Http, Reply, ReqBody};
use super::guard;
use super::pb::EchoResponse;
use super::wire::{self, frame_with_flag, split_frame};

/// Unary protobuf.
pub(crate) const PROTO: &str = "application/proto";
/// Unary JSON (and every Connect error body).
pub(crate) const JSON: &str = "application/json";
/// Streaming protobuf.
pub(crate) const CONNECT_PROTO: &str = "application/connect+proto";
/// Streaming JSON.
pub(crate) const CONNECT_JSON: &str = "application/connect+json";
/// Envelope flag: the payload is compressed.
pub(crate) const COMPRESSED: u8 = 0x01;
/// Envelope flag: the end-stream message.
pub(crate) const END_STREAM: u8 = 0x02;

/// The header every Connect request here carries unless a test leaves it out on purpose.
const VERSION: (&str, &str) = ("connect-protocol-version", "1");

// --- Unary ---------------------------------------------------------------------------------

/// A Connect unary POST of `body` as `content_type`, protocol version 1, plus `headers`.
pub(crate) async fn post(
    addr: SocketAddr,
    http: Http,
    path: &str,
    content_type: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut all = vec![VERSION];
    all.extend_from_slice(headers);
    let req = request(
        Method::POST,
        path,
        Some(content_type),
        &all,
        full(body.into()),
    );
    send(addr, http, req).await
}

/// A Connect unary POST of `body` as `application/proto`.
pub(crate) async fn post_proto(
    addr: SocketAddr,
    http: Http,
    path: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Answer {
    post(addr, http, path, PROTO, body, headers).await
}

/// A Connect unary POST of `json` as `application/json`.
pub(crate) async fn post_json(
    addr: SocketAddr,
    http: Http,
    path: &str,
    json: &str,
    headers: &[(&str, &str)],
) -> Answer {
    post(addr, http, path, JSON, json.as_bytes().to_vec(), headers).await
}

/// A GET of `path_and_query` (see [`get_proto_query`], [`get_json_query`]).
pub(crate) async fn get(
    addr: SocketAddr,
    http: Http,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let req = request(Method::GET, path_and_query, None, headers, empty());
    send(addr, http, req).await
}

/// A Connect GET of `path` carrying `message` as unpadded URL-safe base64, optionally
/// compressed with `compression`.
pub(crate) fn get_proto_query(path: &str, message: &[u8], compression: Option<&str>) -> String {
    let compression = compression.map_or(String::new(), |c| format!("compression={c}&"));
    format!(
        "{path}?connect=v1&base64=1&{compression}encoding=proto&message={}",
        URL_SAFE_NO_PAD.encode(message)
    )
}

/// A Connect GET of `path` carrying `json` percent-encoded.
pub(crate) fn get_json_query(path: &str, json: &str) -> String {
    let message = percent_encoding::utf8_percent_encode(json, percent_encoding::NON_ALPHANUMERIC);
    format!("{path}?connect=v1&encoding=json&message={message}")
}

impl Answer {
    /// Asserts a successful `application/proto` answer and decodes it (gunzipping a gzip
    /// body).
    pub(crate) fn ok_proto(&self) -> EchoResponse {
        assert_eq!(self.status, StatusCode::OK, "{self:#?}");
        assert_eq!(self.header("content-type"), Some(PROTO), "{self:#?}");
        let body = self.decoded("a proto answer");
        EchoResponse::decode(&body[..])
            .unwrap_or_else(|e| panic!("not an EchoResponse ({e}): {self:#?}"))
    }

    /// Asserts a 200 `application/json` answer and parses it (gunzipping a gzip body).
    pub(crate) fn ok_json(&self, case: &str) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{case}: {}: {self:#?}",
            self.text()
        );
        assert_eq!(self.header("content-type"), Some(JSON), "{case}: {self:#?}");
        parse_json(&self.decoded(case), case)
    }

    /// Asserts a Connect error with this HTTP status and code; returns the error JSON.
    pub(crate) fn error(&self, http: u16, code: &str, case: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            http,
            "{case}: {}: {self:#?}",
            self.text()
        );
        assert_eq!(
            self.header("content-type"),
            Some(JSON),
            "{case}: errors are always JSON: {self:#?}"
        );
        let json: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{case}: error body is not JSON ({e}): {}", self.text()));
        assert_eq!(json["code"], code, "{case}: {json}");
        json
    }
}

/// Checks the one detail the backend attaches to a failing request made `with_details`:
/// `google.rpc.BadRequest{message: must not be empty}`, as unpadded standard base64 of the
/// protobuf bytes, in JSON errors too (PROTOCOLS.md §3.4, §6, §8.5).
pub(crate) fn assert_bad_request_detail(error: &Value, case: &str) {
    let details = error["details"]
        .as_array()
        .unwrap_or_else(|| panic!("{case}: no details in {error}"));
    assert_eq!(details.len(), 1, "{case}: {error}");
    assert_eq!(
        details[0]["type"], "google.rpc.BadRequest",
        "{case}: {error}"
    );
    let value = details[0]["value"].as_str().unwrap();
    assert!(
        !value.ends_with('='),
        "{case}: value must be unpadded: {value}"
    );
    let bytes = STANDARD_NO_PAD
        .decode(value)
        .unwrap_or_else(|e| panic!("{case}: value is not standard base64 ({e}): {value}"));
    let detail = tonic_types::pb::BadRequest::decode(&bytes[..])
        .unwrap_or_else(|e| panic!("{case}: value is not a BadRequest ({e})"));
    let expected = tonic_types::pb::BadRequest {
        field_violations: vec![tonic_types::pb::bad_request::FieldViolation {
            field: "message".to_owned(),
            description: "must not be empty".to_owned(),
            ..Default::default()
        }],
    };
    assert_eq!(detail, expected, "{case}");
    assert_eq!(bytes, expected.encode_to_vec(), "{case}");
}

/// Parses JSON, failing the test with `what` and the text when it is not JSON.
pub(crate) fn parse_json(payload: &[u8], what: &str) -> Value {
    serde_json::from_slice(payload).unwrap_or_else(|e| {
        panic!(
            "{what} is not JSON ({e}): {:?}",
            String::from_utf8_lossy(payload)
        )
    })
}

// --- Streams -------------------------------------------------------------------------------

/// A message of a Connect stream: the content type of its stream and how to decode it.
pub(crate) trait StreamMessage: Sized + std::fmt::Debug {
    /// The response content type of a stream of these.
    const CONTENT_TYPE: &'static str;
    /// Decodes one message envelope's payload, failing the test if it cannot.
    fn from_envelope(payload: &[u8]) -> Self;
}

impl StreamMessage for EchoResponse {
    const CONTENT_TYPE: &'static str = CONNECT_PROTO;
    fn from_envelope(payload: &[u8]) -> Self {
        wire::decode_response(payload)
    }
}

impl StreamMessage for Value {
    const CONTENT_TYPE: &'static str = CONNECT_JSON;
    fn from_envelope(payload: &[u8]) -> Self {
        parse_json(payload, "a message envelope")
    }
}

/// A JSON message envelope.
pub(crate) fn json_envelope(json: &str) -> Bytes {
    frame_with_flag(0, json.as_bytes())
}

/// A Connect streaming POST (protocol version 1) of `content_type` with `headers`.
pub(crate) fn stream_request(
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: ReqBody,
) -> Request<ReqBody> {
    let mut all = vec![VERSION];
    all.extend_from_slice(headers);
    request(Method::POST, path, Some(content_type), &all, body)
}

/// One `application/connect+proto` streaming call with a complete request body.
pub(crate) async fn proto_stream(
    addr: SocketAddr,
    http: Http,
    path: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Streamed<EchoResponse> {
    let req = stream_request(path, CONNECT_PROTO, headers, full(body.into()));
    let mut client = Client::connect(addr, http).await;
    read_stream(client.send(req).await).await
}

/// One `application/connect+json` streaming call whose request body is `messages`, each
/// in its own envelope.
pub(crate) async fn json_stream(
    addr: SocketAddr,
    http: Http,
    path: &str,
    messages: &[&str],
) -> Streamed<Value> {
    let body: Vec<u8> = messages.iter().flat_map(|m| json_envelope(m)).collect();
    let req = stream_request(path, CONNECT_JSON, &[], full(body));
    let mut client = Client::connect(addr, http).await;
    read_stream(client.send(req).await).await
}

/// A streaming response read one envelope at a time, as it arrives.
pub(crate) struct Envelopes {
    body: Option<Incoming>,
    buf: Vec<u8>,
}

impl Envelopes {
    pub(crate) fn new(body: Incoming) -> Envelopes {
        Envelopes {
            body: Some(body),
            buf: Vec::new(),
        }
    }

    /// The next whole envelope (flags, payload); None at the end of the body.
    pub(crate) async fn next(&mut self) -> Option<(u8, Bytes)> {
        loop {
            if let Some((flag, payload, rest)) = split_frame(&self.buf) {
                let out = (flag, Bytes::copy_from_slice(payload));
                self.buf = rest.to_vec();
                return Some(out);
            }
            let body = self.body.as_mut()?;
            match guard("next response envelope", body.frame()).await {
                None => {
                    self.body = None;
                    assert!(
                        self.buf.is_empty(),
                        "body ends inside an envelope: {:02x?}",
                        self.buf
                    );
                    return None;
                }
                Some(Err(e)) => panic!("response body failed: {e:?}"),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// A whole Connect streaming response: message envelopes, then the end-stream message.
#[derive(Debug)]
pub(crate) struct Streamed<M> {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) messages: Vec<M>,
    /// The end-stream message.
    pub(crate) end: Value,
}

impl<M: StreamMessage> Streamed<M> {
    /// Asserts HTTP 200 with the stream's content type.
    pub(crate) fn assert_shape(&self, case: &str) {
        assert_eq!(self.status, StatusCode::OK, "{case}: {self:#?}");
        assert_eq!(
            self.headers
                .get("content-type")
                .map(|v| v.to_str().unwrap()),
            Some(M::CONTENT_TYPE),
            "{case}: {self:#?}"
        );
    }

    /// Asserts success: HTTP 200 and an end-stream without error; returns the messages.
    pub(crate) fn ok(&self, case: &str) -> &[M] {
        self.assert_shape(case);
        assert!(
            self.end.get("error").is_none(),
            "{case}: unexpected error {}",
            self.end
        );
        &self.messages
    }

    /// Asserts an end-stream error with `code` (HTTP 200 all the same); returns the error.
    pub(crate) fn error(&self, code: &str, case: &str) -> &Value {
        self.assert_shape(case);
        let error = &self.end["error"];
        assert_eq!(error["code"], code, "{case}: end-stream {}", self.end);
        error
    }
}

/// Reads a whole streaming response.
pub(crate) async fn read_stream<M: StreamMessage>(reply: Reply) -> Streamed<M> {
    let mut envelopes = Envelopes::new(reply.body);
    finish_stream(reply.status, reply.headers, &mut envelopes, Vec::new()).await
}

/// Reads the rest of a stream after `messages`: message envelopes, then exactly one
/// end-stream envelope (a JSON object), last.
pub(crate) async fn finish_stream<M: StreamMessage>(
    status: StatusCode,
    headers: HeaderMap,
    envelopes: &mut Envelopes,
    mut messages: Vec<M>,
) -> Streamed<M> {
    let mut end = None;
    while let Some((flag, payload)) = envelopes.next().await {
        assert!(
            end.is_none(),
            "envelope (flag {flag:#04x}) after the end-stream message"
        );
        match flag {
            0x00 => messages.push(M::from_envelope(&payload)),
            END_STREAM => end = Some(parse_json(&payload, "the end-stream message")),
            other => panic!("unexpected envelope flag {other:#04x}"),
        }
    }
    let end = end.unwrap_or_else(|| {
        panic!("no end-stream message (status {status}, {messages:?}, {headers:?})")
    });
    assert!(end.is_object(), "end-stream must be an object: {end}");
    Streamed {
        status,
        headers,
        messages,
        end,
    }
}
