//! What the load generator sends and how it checks what comes back, per caller protocol.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use prost::Message as _;

use crate::pb::EchoRequest;

/// The caller's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Native gRPC (`application/grpc`); over HTTP/1.1 only a bare forwarder takes it.
    Grpc,
    /// gRPC-Web binary (`application/grpc-web+proto`).
    GrpcWeb,
    /// gRPC-Web text (`application/grpc-web-text`, base64).
    GrpcWebText,
    /// Connect with protobuf (`application/proto`, streams `application/connect+proto`).
    ConnectProto,
    /// Connect with JSON (`application/json`, streams `application/connect+json`).
    ConnectJson,
    /// REST from the `google.api.http` rules the bench adds to the test service: `GET
    /// /v1/lookup/{message}?payload=…` (`Lookup`) and `GET /v1/stream/{message}?…`
    /// (`ServerStream`, answered as NDJSON).
    Rest,
}

impl Wire {
    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Wire> {
        Some(match s {
            "grpc" => Wire::Grpc,
            "grpc-web" => Wire::GrpcWeb,
            "grpc-web-text" => Wire::GrpcWebText,
            "connect-proto" => Wire::ConnectProto,
            "connect-json" => Wire::ConnectJson,
            "rest" => Wire::Rest,
            _ => return None,
        })
    }
}

/// Which method is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// `TestService/Unary`.
    Unary,
    /// `TestService/ServerStream`.
    ServerStream,
}

impl Rpc {
    /// The request path.
    pub fn path(self) -> &'static str {
        match self {
            Rpc::Unary => "/switchboard.testing.v1.TestService/Unary",
            Rpc::ServerStream => "/switchboard.testing.v1.TestService/ServerStream",
        }
    }
}

/// One request, built once per run and cloned per call.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The HTTP method.
    pub method: http::Method,
    /// The path (and query).
    pub path: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// A gRPC / gRPC-Web / Connect-envelope frame.
pub fn frame(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(flags);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

fn json_of(msg: &EchoRequest) -> Vec<u8> {
    // ProtoJSON of the fields the harness uses (bytes as standard base64).
    let mut s = format!("{{\"message\":{:?}", msg.message);
    if !msg.payload.is_empty() {
        s.push_str(&format!(
            ",\"payload\":\"{}\"",
            STANDARD.encode(&msg.payload)
        ));
    }
    if msg.response_size > 0 {
        s.push_str(&format!(",\"responseSize\":{}", msg.response_size));
    }
    if msg.delay_ms > 0 {
        s.push_str(&format!(",\"delayMs\":{}", msg.delay_ms));
    }
    if msg.count > 0 {
        s.push_str(&format!(",\"count\":{}", msg.count));
    }
    s.push('}');
    s.into_bytes()
}

fn h(headers: &mut HeaderMap, name: &'static str, value: &'static str) {
    headers.insert(
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    );
}

/// The request for `rpc` with message `msg` in protocol `wire`.
pub fn prepare(wire: Wire, rpc: Rpc, msg: &EchoRequest) -> Prepared {
    let proto = msg.encode_to_vec();
    let mut headers = HeaderMap::new();
    let body = match (wire, rpc) {
        (Wire::Grpc, _) => {
            h(&mut headers, "content-type", "application/grpc");
            h(&mut headers, "te", "trailers");
            frame(0, &proto)
        }
        (Wire::GrpcWeb, _) => {
            h(&mut headers, "content-type", "application/grpc-web+proto");
            h(&mut headers, "accept", "application/grpc-web+proto");
            h(&mut headers, "x-grpc-web", "1");
            frame(0, &proto)
        }
        (Wire::GrpcWebText, _) => {
            h(&mut headers, "content-type", "application/grpc-web-text");
            h(&mut headers, "accept", "application/grpc-web-text");
            h(&mut headers, "x-grpc-web", "1");
            Bytes::from(STANDARD.encode(frame(0, &proto)))
        }
        (Wire::ConnectProto, Rpc::Unary) => {
            h(&mut headers, "content-type", "application/proto");
            h(&mut headers, "connect-protocol-version", "1");
            Bytes::from(proto)
        }
        (Wire::ConnectJson, Rpc::Unary) => {
            h(&mut headers, "content-type", "application/json");
            h(&mut headers, "connect-protocol-version", "1");
            Bytes::from(json_of(msg))
        }
        (Wire::ConnectProto, Rpc::ServerStream) => {
            h(&mut headers, "content-type", "application/connect+proto");
            h(&mut headers, "connect-protocol-version", "1");
            frame(0, &proto)
        }
        (Wire::ConnectJson, Rpc::ServerStream) => {
            h(&mut headers, "content-type", "application/connect+json");
            h(&mut headers, "connect-protocol-version", "1");
            frame(0, &json_of(msg))
        }
        (Wire::Rest, _) => {
            return Prepared {
                method: http::Method::GET,
                path: rest_path(rpc, msg),
                headers,
                body: Bytes::new(),
            };
        }
    };
    Prepared {
        method: http::Method::POST,
        path: rpc.path().to_owned(),
        headers,
        body,
    }
}

/// The REST form of a call: the message in the path, the other fields in the query (bytes as
/// URL-safe base64, so nothing needs percent-encoding).
fn rest_path(rpc: Rpc, msg: &EchoRequest) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let base = match rpc {
        Rpc::Unary => "/v1/lookup",
        Rpc::ServerStream => "/v1/stream",
    };
    let mut query = Vec::new();
    if !msg.payload.is_empty() {
        query.push(format!("payload={}", URL_SAFE_NO_PAD.encode(&msg.payload)));
    }
    for (name, n) in [
        ("responseSize", msg.response_size),
        ("delayMs", msg.delay_ms),
        ("count", msg.count),
    ] {
        if n > 0 {
            query.push(format!("{name}={n}"));
        }
    }
    let mut path = format!("{base}/{}", msg.message);
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    path
}

/// Splits a stream of bytes into frames (5-byte header + payload) without buffering data
/// frames: only counts them. Non-data frames (trailers, end-stream) are kept whole.
#[derive(Debug, Default)]
struct Frames {
    header: [u8; 5],
    header_len: usize,
    /// Payload bytes still to come of the current frame; `None` between frames.
    remaining: Option<usize>,
    flags: u8,
    /// Completed data frames.
    messages: u64,
    /// The last non-data frame (its flags and payload).
    control: Option<(u8, Vec<u8>)>,
    control_buf: Vec<u8>,
}

impl Frames {
    /// Feeds bytes; returns the number of data frames completed.
    fn push(&mut self, mut data: &[u8], control_mask: u8) -> u64 {
        let before = self.messages;
        loop {
            match self.remaining {
                None => {
                    if data.is_empty() {
                        break;
                    }
                    let n = (5 - self.header_len).min(data.len());
                    self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
                    self.header_len += n;
                    data = &data[n..];
                    if self.header_len == 5 {
                        self.header_len = 0;
                        self.flags = self.header[0];
                        let len = u32::from_be_bytes([
                            self.header[1],
                            self.header[2],
                            self.header[3],
                            self.header[4],
                        ]) as usize;
                        self.control_buf.clear();
                        self.remaining = Some(len);
                    }
                }
                Some(rem) => {
                    let n = rem.min(data.len());
                    if self.flags & control_mask != 0 {
                        self.control_buf.extend_from_slice(&data[..n]);
                    }
                    data = &data[n..];
                    if rem - n == 0 {
                        self.remaining = None;
                        if self.flags & control_mask != 0 {
                            self.control =
                                Some((self.flags, std::mem::take(&mut self.control_buf)));
                        } else {
                            self.messages += 1;
                        }
                    } else {
                        self.remaining = Some(rem - n);
                        break;
                    }
                }
            }
        }
        self.messages - before
    }

    fn complete(&self) -> bool {
        self.remaining.is_none() && self.header_len == 0
    }
}

/// Decodes gRPC-Web text bodies whose chunks may each be padded base64.
#[derive(Debug, Default)]
struct Base64Stream {
    pending: Vec<u8>,
}

impl Base64Stream {
    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        // SIMD decoding and padding found with memchr, so that the load generator is not what
        // limits a text stream.
        self.pending.extend_from_slice(data);
        let whole = self.pending.len() / 4 * 4;
        let mut start = 0;
        while start < whole {
            let end = match memchr::memchr(b'=', &self.pending[start..whole]) {
                Some(i) => ((start + i) / 4 + 1) * 4,
                None => whole,
            };
            decode_into(&self.pending[start..end], out)?;
            start = end;
        }
        self.pending.drain(..whole);
        Ok(())
    }

    fn finish(&self) -> Result<(), String> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} stray base64 characters at the end",
                self.pending.len()
            ))
        }
    }
}

fn decode_into(text: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    base64_simd::STANDARD
        .decode_append(text, out)
        .map_err(|e| format!("bad base64 in response: {e}"))
}

/// Checks one response as it streams in, and counts its messages.
#[derive(Debug)]
pub struct Reader {
    wire: Wire,
    rpc: Rpc,
    http1: bool,
    text: Option<Base64Stream>,
    frames: Frames,
    decoded: Vec<u8>,
    body_len: u64,
    trailer_status: Option<String>,
    wire_bytes: u64,
    /// REST streams: lines seen, and whether one was an error.
    rest_lines: u64,
    rest_error: bool,
}

impl Reader {
    /// A reader for a response to a `wire`/`rpc` request over HTTP/1.1 (`http1`) or HTTP/2.
    pub fn new(wire: Wire, rpc: Rpc, http1: bool) -> Reader {
        Reader {
            wire,
            rpc,
            http1,
            text: (wire == Wire::GrpcWebText).then(Base64Stream::default),
            frames: Frames::default(),
            decoded: Vec::new(),
            body_len: 0,
            trailer_status: None,
            wire_bytes: 0,
            rest_lines: 0,
            rest_error: false,
        }
    }

    fn framed(&self) -> bool {
        !(matches!(self.wire, Wire::ConnectProto | Wire::ConnectJson) && self.rpc == Rpc::Unary)
            && self.wire != Wire::Rest
    }

    fn control_mask(&self) -> u8 {
        match self.wire {
            Wire::Grpc => 0,
            Wire::GrpcWeb | Wire::GrpcWebText => 0x80,
            Wire::ConnectProto | Wire::ConnectJson => 0x02,
            Wire::Rest => 0,
        }
    }

    /// Checks the response head.
    pub fn head(&mut self, status: StatusCode, headers: &HeaderMap) -> Result<(), String> {
        if status != StatusCode::OK {
            return Err(format!("HTTP {status}"));
        }
        if let Some(s) = headers.get("grpc-status") {
            // Trailers-Only (native gRPC).
            self.trailer_status = Some(String::from_utf8_lossy(s.as_bytes()).into_owned());
        }
        Ok(())
    }

    /// Feeds body bytes; returns the number of messages completed by them.
    pub fn data(&mut self, data: &[u8]) -> Result<u64, String> {
        self.wire_bytes += data.len() as u64;
        if self.wire == Wire::Rest && self.rpc == Rpc::ServerStream {
            // NDJSON: one message per line; the last line must not be an error.
            self.body_len += data.len() as u64;
            let lines = memchr::memchr_iter(b'\n', data).count() as u64;
            self.rest_lines += lines;
            if data.starts_with(b"{\"error\"")
                || memchr::memmem::find(data, b"\n{\"error\"").is_some()
            {
                self.rest_error = true;
            }
            return Ok(lines);
        }
        if !self.framed() {
            self.body_len += data.len() as u64;
            return Ok(0);
        }
        let mask = self.control_mask();
        match &mut self.text {
            Some(b64) => {
                self.decoded.clear();
                b64.push(data, &mut self.decoded)?;
                Ok(self.frames.push(&self.decoded, mask))
            }
            None => Ok(self.frames.push(data, mask)),
        }
    }

    /// Records HTTP trailers.
    pub fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(s) = trailers.get("grpc-status") {
            self.trailer_status = Some(String::from_utf8_lossy(s.as_bytes()).into_owned());
        }
    }

    /// Bytes received on the wire (body only).
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes
    }

    /// Messages received so far.
    pub fn messages(&self) -> u64 {
        if self.wire == Wire::Rest && self.rpc == Rpc::ServerStream {
            return self.rest_lines;
        }
        if self.framed() {
            self.frames.messages
        } else {
            u64::from(self.body_len > 0)
        }
    }

    /// Checks the whole response once the body ended; returns its message count.
    pub fn finish(&self) -> Result<u64, String> {
        if let Some(b64) = &self.text {
            b64.finish()?;
        }
        if self.wire == Wire::Rest && self.rpc == Rpc::ServerStream {
            return if self.rest_error {
                Err("the stream ended with an error line".to_owned())
            } else {
                Ok(self.rest_lines)
            };
        }
        if !self.framed() {
            return if self.body_len > 0 {
                Ok(1)
            } else {
                Err("empty unary response".to_owned())
            };
        }
        if !self.frames.complete() {
            return Err("response ended mid-frame".to_owned());
        }
        let status = match self.wire {
            Wire::Grpc => match &self.trailer_status {
                Some(s) => Some(s.clone()),
                // A bare HTTP/1.1 forwarder drops trailers: accept a complete body.
                None if self.http1 => Some("0".to_owned()),
                None => None,
            },
            Wire::GrpcWeb | Wire::GrpcWebText => self.frames.control.as_ref().and_then(|(_, t)| {
                let text = String::from_utf8_lossy(t);
                text.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("grpc-status")
                        .then(|| v.trim().to_owned())
                })
            }),
            Wire::Rest => Some("0".to_owned()),
            Wire::ConnectProto | Wire::ConnectJson => {
                self.frames.control.as_ref().map(|(_, end)| {
                    if String::from_utf8_lossy(end).contains("\"error\"") {
                        format!("error end-stream {}", String::from_utf8_lossy(end))
                    } else {
                        "0".to_owned()
                    }
                })
            }
        };
        match status.as_deref() {
            Some("0") => Ok(self.frames.messages),
            Some(other) => Err(format!("grpc-status {other}")),
            None => Err("no status at the end of the response".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_across_chunks() {
        let mut body = Vec::new();
        body.extend_from_slice(&frame(0, b"hello"));
        body.extend_from_slice(&frame(0, b""));
        body.extend_from_slice(&frame(0x80, b"grpc-status:0\r\n"));
        for split in 0..body.len() {
            let mut r = Reader::new(Wire::GrpcWeb, Rpc::Unary, true);
            r.data(&body[..split]).unwrap();
            r.data(&body[split..]).unwrap();
            assert_eq!(r.finish().unwrap(), 2, "split at {split}");
        }
    }

    #[test]
    fn text_chunks_each_padded() {
        let a = STANDARD.encode(frame(0, b"hello!!"));
        let b = STANDARD.encode(frame(0x80, b"grpc-status:0\r\n"));
        let mut r = Reader::new(Wire::GrpcWebText, Rpc::Unary, true);
        let all = format!("{a}{b}");
        r.data(&all.as_bytes()[..7]).unwrap();
        r.data(&all.as_bytes()[7..]).unwrap();
        assert_eq!(r.finish().unwrap(), 1);
    }

    #[test]
    fn failed_status() {
        let mut r = Reader::new(Wire::GrpcWeb, Rpc::Unary, false);
        r.data(&frame(0x80, b"grpc-status:14\r\ngrpc-message:x\r\n"))
            .unwrap();
        assert!(r.finish().is_err());
    }
}
