//! Connect ⇄ gRPC: unary POST and GET (bare messages, HTTP status + JSON errors, `trailer-`
//! headers) and streams (envelopes, end-stream message).

pub mod error;
pub mod get;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::grpc::{Code, Status};
use super::Codec;

/// `connect-protocol-version`.
pub const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("connect-protocol-version");
/// `connect-timeout-ms`.
pub const TIMEOUT_MS: HeaderName = HeaderName::from_static("connect-timeout-ms");
/// Streaming request compression.
pub const CONTENT_ENCODING: HeaderName = HeaderName::from_static("connect-content-encoding");
/// Streaming response compression the client accepts.
pub const ACCEPT_ENCODING: HeaderName = HeaderName::from_static("connect-accept-encoding");
/// End-stream flag of a streaming envelope.
pub const FLAG_END_STREAM: u8 = 0x02;

/// How a Connect call is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Unary POST with a bare message body.
    Unary,
    /// Unary GET with the message in the query.
    Get,
    /// Enveloped stream (client, server or bidi).
    Stream,
}

/// One Connect call's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Unary POST, GET or stream.
    pub kind: Kind,
    /// The message codec.
    pub codec: Codec,
}

impl Mode {
    /// The response `content-type` for successful responses.
    pub fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match (self.kind, self.codec) {
            (Kind::Stream, Codec::Proto) => "application/connect+proto",
            (Kind::Stream, Codec::Json) => "application/connect+json",
            (_, Codec::Proto) => "application/proto",
            (_, Codec::Json) => "application/json",
        })
    }
}

/// Parses a codec name (`proto`, `json`) as found after `application/` or `+`, ignoring
/// `; charset=utf-8`-style parameters.
pub fn codec_from_name(name: &str) -> Option<Codec> {
    let essence = name.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("proto") {
        Some(Codec::Proto)
    } else if essence.eq_ignore_ascii_case("json") {
        Some(Codec::Json)
    } else {
        None
    }
}

/// Checks `connect-protocol-version`: absent is accepted; any value other than `1` is an
/// invalid argument.
pub fn check_version(headers: &HeaderMap) -> Result<(), Status> {
    match headers.get(PROTOCOL_VERSION) {
        None => Ok(()),
        Some(v) if v == "1" => Ok(()),
        Some(v) => Err(Status::new(
            Code::InvalidArgument,
            format!(
                "connect-protocol-version must be \"1\", got {:?}",
                String::from_utf8_lossy(v.as_bytes())
            ),
        )),
    }
}

/// Reads `connect-timeout-ms`; a malformed value is an invalid argument.
pub fn timeout(headers: &HeaderMap) -> Result<Option<std::time::Duration>, Status> {
    match headers.get(TIMEOUT_MS) {
        None => Ok(None),
        Some(v) => super::grpc::timeout::parse_connect_timeout(v.as_bytes())
            .map(Some)
            .ok_or_else(|| {
                Status::new(
                    Code::InvalidArgument,
                    format!(
                        "invalid connect-timeout-ms {:?}: expected 1 to 10 digits",
                        String::from_utf8_lossy(v.as_bytes())
                    ),
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let mut h = HeaderMap::new();
        assert!(check_version(&h).is_ok());
        h.insert(PROTOCOL_VERSION, HeaderValue::from_static("1"));
        assert!(check_version(&h).is_ok());
        h.insert(PROTOCOL_VERSION, HeaderValue::from_static("2"));
        assert_eq!(
            check_version(&h).err().map(|s| s.code),
            Some(Code::InvalidArgument)
        );
    }

    #[test]
    fn codecs() {
        assert_eq!(codec_from_name("proto"), Some(Codec::Proto));
        assert_eq!(codec_from_name("json; charset=utf-8"), Some(Codec::Json));
        assert_eq!(codec_from_name("xml"), None);
    }
}
