//! improbable-eng's gRPC-Web WebSocket transport (subprotocol `grpc-websockets`, the wire
//! format of grpcwebproxy's `--use_websockets`), wire rules only:
//!
//! - The upgrade: HTTP/1.1 `GET` with `Upgrade: websocket`, or HTTP/2 extended `CONNECT` with
//!   `:protocol websocket` (RFC 8441), offering the `grpc-websockets` subprotocol. The path is
//!   the method's (`/package.Service/Method`).
//! - Client to proxy, binary messages only: the first is the call's metadata as header lines
//!   (`name: value\r\n`, `content-type: application/grpc-web+proto` among them); every later
//!   one starts with a control byte, `0` followed by bytes of the gRPC-Web request frames, or
//!   the single byte `1` when the client has sent its last message.
//! - Proxy to client, binary messages: the response headers as a gRPC-Web trailer-style frame
//!   (flag `0x80`, length, header lines), then the response exactly as gRPC-Web binary writes it
//!   (frames, then the trailer frame with the status); then the proxy closes the socket.
//!
//! The client's parser stops reading a message at the first `0x80` frame, so the header frame
//! and the trailer frame must each end the message that carries them.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};

use super::grpc::frame::{self, FLAG_TRAILERS};
use super::grpc::{Code, Status};
use super::Rejection;

/// The subprotocol the client offers and the proxy selects.
pub const SUBPROTOCOL: &str = "grpc-websockets";

/// The only WebSocket version (RFC 6455).
const VERSION: &str = "13";

/// First byte of a client message: request frame bytes follow.
pub const CONTROL_DATA: u8 = 0;
/// A client message of this one byte: the client has sent its last message.
pub const CONTROL_FINISH_SEND: u8 = 1;

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
const SEC_WEBSOCKET_PROTOCOL: HeaderName = HeaderName::from_static("sec-websocket-protocol");

/// Headers of the upgrade request that belong to the WebSocket handshake, never metadata.
pub fn is_handshake_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("sec-websocket-")
}

/// Whether a request asks for a WebSocket at all, by HTTP version: `Some(Ok)` when it is an
/// upgrade offering `grpc-websockets`, `Some(Err)` when it is another WebSocket, `None` when
/// it is no upgrade.
pub fn classify<B>(req: &Request<B>) -> Option<Result<(), Rejection>> {
    let asks = if req.method() == Method::CONNECT {
        // RFC 8441: the pseudo-header `:protocol`, which hyper keeps as an extension.
        req.extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
    } else {
        req.method() == Method::GET && has_token(req.headers(), header::UPGRADE, "websocket")
    };
    if !asks {
        return None;
    }
    if has_token(req.headers(), SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL) {
        return Some(Ok(()));
    }
    Some(Err(Rejection {
        status: StatusCode::BAD_REQUEST,
        message: format!("WebSocket upgrades must offer the subprotocol {SUBPROTOCOL:?}"),
        header: None,
    }))
}

/// Whether a comma-separated header (any of its lines) holds `token`, ignoring case.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Checks a classified upgrade and returns the status and headers that accept it: `101` with
/// the `Sec-WebSocket-Accept` key for HTTP/1.1, `200` for HTTP/2's extended CONNECT.
pub fn accept<B>(req: &Request<B>) -> Result<(StatusCode, HeaderMap), Rejection> {
    let version = req.headers().get(SEC_WEBSOCKET_VERSION);
    if version.is_none_or(|v| v.as_bytes().trim_ascii() != VERSION.as_bytes()) {
        return Err(Rejection {
            status: StatusCode::UPGRADE_REQUIRED,
            message: format!("WebSocket version {VERSION} is required"),
            header: Some((SEC_WEBSOCKET_VERSION, VERSION)),
        });
    }
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    if req.method() == Method::CONNECT {
        return Ok((StatusCode::OK, headers));
    }
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return Err(Rejection {
            status: StatusCode::BAD_REQUEST,
            message: "a WebSocket upgrade needs a Sec-WebSocket-Key".into(),
            header: None,
        });
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accept = HeaderValue::from_str(&accept).map_err(|_| Rejection {
        status: StatusCode::BAD_REQUEST,
        message: "invalid Sec-WebSocket-Key".into(),
        header: None,
    })?;
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    Ok((StatusCode::SWITCHING_PROTOCOLS, headers))
}

/// A message from the client, after the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Bytes of request frames (the message without its control byte, not copied).
    Data(Bytes),
    /// The client sent its last message.
    FinishSend,
}

impl ClientMessage {
    /// Reads a binary message by its control byte.
    pub fn parse(message: Bytes) -> Result<ClientMessage, Status> {
        match message.first() {
            Some(&CONTROL_DATA) => Ok(ClientMessage::Data(message.slice(1..))),
            Some(&CONTROL_FINISH_SEND) if message.len() == 1 => Ok(ClientMessage::FinishSend),
            Some(b) => Err(Status::new(
                Code::InvalidArgument,
                format!(
                    "grpc-websockets message with unknown control byte {b} (length {})",
                    message.len()
                ),
            )),
            None => Err(Status::new(
                Code::InvalidArgument,
                "empty grpc-websockets message",
            )),
        }
    }
}

/// Parses the first client message, the call's metadata: `name: value` lines separated by
/// CRLF (a bare LF is accepted too). Names are lower-cased; a name sent twice keeps both.
pub fn parse_metadata(block: &[u8]) -> Result<HeaderMap, Status> {
    let bad = |why: String| {
        Status::new(
            Code::InvalidArgument,
            format!("grpc-websockets metadata: {why}"),
        )
    };
    let mut headers = HeaderMap::new();
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.trim_ascii().is_empty() {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(bad(format!(
                "line without a colon: {:?}",
                String::from_utf8_lossy(line)
            )));
        };
        let name = line[..colon].trim_ascii();
        let name = HeaderName::from_bytes(&name.to_ascii_lowercase())
            .map_err(|_| bad(format!("invalid name {:?}", String::from_utf8_lossy(name))))?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii())
            .map_err(|_| bad(format!("invalid value for {name}")))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// The response headers as the frame the client reads them from: flag `0x80`, length, then
/// `name: value\r\n` lines.
pub fn header_frame(headers: &HeaderMap) -> Bytes {
    let len: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    let mut out = BytesMut::with_capacity(frame::HEADER_LEN + len);
    out.put_slice(&frame::header(FLAG_TRAILERS, len));
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.freeze()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn upgrade(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/a.B/C");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    const H1: [(&str, &str); 5] = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-version", "13"),
        // RFC 6455 §1.3's example key and its accept value.
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-protocol", "chat, grpc-websockets"),
    ];

    #[test]
    fn accepts_an_http1_upgrade_with_the_rfc_key() {
        let req = upgrade(Method::GET, &H1);
        assert_eq!(classify(&req), Some(Ok(())));
        let (status, headers) = accept(&req).unwrap();
        assert_eq!(status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            headers["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(headers["sec-websocket-protocol"], SUBPROTOCOL);
    }

    #[test]
    fn accepts_an_http2_extended_connect() {
        let mut req = upgrade(
            Method::CONNECT,
            &[
                ("sec-websocket-version", "13"),
                ("sec-websocket-protocol", SUBPROTOCOL),
            ],
        );
        assert_eq!(classify(&req), None, "CONNECT without :protocol");
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        assert_eq!(classify(&req), Some(Ok(())));
        let (status, headers) = accept(&req).unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(!headers.contains_key("sec-websocket-accept"));
    }

    #[test]
    fn refuses_other_websockets_and_bad_handshakes() {
        assert_eq!(classify(&upgrade(Method::GET, &[])), None);
        let other = upgrade(
            Method::GET,
            &[("upgrade", "websocket"), ("sec-websocket-protocol", "chat")],
        );
        assert_eq!(
            classify(&other).map(|r| r.map_err(|e| e.status)),
            Some(Err(StatusCode::BAD_REQUEST))
        );
        let old = upgrade(
            Method::GET,
            &[("upgrade", "websocket"), ("sec-websocket-version", "8")],
        );
        assert_eq!(
            accept(&old).map_err(|e| e.status).err(),
            Some(StatusCode::UPGRADE_REQUIRED)
        );
        let keyless = upgrade(
            Method::GET,
            &[("upgrade", "websocket"), ("sec-websocket-version", "13")],
        );
        assert_eq!(
            accept(&keyless).map_err(|e| e.status).err(),
            Some(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn reads_the_metadata_block_the_client_sends() {
        // What the TS transport's headersToBytes writes: "key: v1, v2\r\n" per name.
        let block = b"content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\nX-Custom: a, b\r\nx-custom: c\r\n";
        let h = parse_metadata(block).unwrap();
        assert_eq!(h["content-type"], "application/grpc-web+proto");
        let custom: Vec<_> = h.get_all("x-custom").iter().collect();
        assert_eq!(custom, ["a, b", "c"]);
        assert!(parse_metadata(b"").unwrap().is_empty());
        assert_eq!(
            parse_metadata(b"no colon\r\n").unwrap_err().code,
            Code::InvalidArgument
        );
        assert_eq!(
            parse_metadata(b"bad name: x\r\n").unwrap_err().code,
            Code::InvalidArgument
        );
    }

    #[test]
    fn control_bytes() {
        assert_eq!(
            ClientMessage::parse(Bytes::from_static(&[0, 0, 0, 0, 0, 1, 7])),
            Ok(ClientMessage::Data(Bytes::from_static(&[0, 0, 0, 0, 1, 7])))
        );
        assert_eq!(
            ClientMessage::parse(Bytes::from_static(&[1])),
            Ok(ClientMessage::FinishSend)
        );
        assert!(ClientMessage::parse(Bytes::from_static(&[1, 0])).is_err());
        assert!(ClientMessage::parse(Bytes::from_static(&[2])).is_err());
        assert!(ClientMessage::parse(Bytes::new()).is_err());
    }

    #[test]
    fn header_frame_is_a_0x80_frame_of_lines() {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/grpc-web+proto"),
        );
        h.insert("x-a", HeaderValue::from_static("1"));
        let f = header_frame(&h);
        let body = b"content-type: application/grpc-web+proto\r\nx-a: 1\r\n";
        assert_eq!(f[0], 0x80);
        assert_eq!(&f[1..5], &(body.len() as u32).to_be_bytes());
        assert_eq!(&f[5..], body);
        assert_eq!(&header_frame(&HeaderMap::new())[..], &[0x80, 0, 0, 0, 0]);
    }
}
