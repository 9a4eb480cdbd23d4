//! Connect unary GET: the message, codec and compression travel in the query string.

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use percent_encoding::percent_decode_str;

use super::codec_from_name;
use crate::protocol::compression::{self, Encoding};
use crate::protocol::grpc::{Code, Status};
use crate::protocol::Codec;

/// A decoded GET request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRequest {
    /// The codec named by `encoding`.
    pub codec: Codec,
    /// The message, decoded from base64 / percent-encoding and decompressed.
    pub message: Bytes,
}

fn invalid(msg: impl Into<String>) -> Status {
    Status::new(Code::InvalidArgument, msg)
}

/// Whether a query looks like a Connect GET (`connect=v1`, or `encoding` and `message`).
pub fn is_connect_query(query: &str) -> bool {
    let mut enc = false;
    let mut msg = false;
    for pair in query.split('&') {
        let key = pair.split('=').next().unwrap_or("");
        match key {
            "connect" => return true,
            "encoding" => enc = true,
            "message" => msg = true,
            _ => {}
        }
    }
    enc && msg
}

/// The codec named by the `encoding` parameter, if it names a known one.
pub fn codec(query: &str) -> Option<Codec> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("encoding="))
        .and_then(codec_from_name)
}

/// Parses and decodes the query of a Connect GET. Unknown parameters are ignored.
pub fn parse(query: &str, limit: usize) -> Result<GetRequest, Status> {
    let mut connect = None;
    let mut encoding = None;
    let mut message = None;
    let mut base64 = false;
    let mut compression = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        // `+` is a space in form encoding; base64url never contains it, JSON text may.
        let value = || {
            percent_decode_str(&raw.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| invalid(format!("query parameter {key} is not valid UTF-8")))
        };
        match key {
            "connect" => connect = Some(value()?),
            "encoding" => encoding = Some(value()?),
            "message" => message = Some(raw),
            "base64" => base64 = raw == "1",
            "compression" => compression = Some(value()?),
            _ => {}
        }
    }
    if let Some(v) = connect {
        if v != "v1" {
            return Err(invalid(format!(
                "connect query parameter must be \"v1\", got {v:?}"
            )));
        }
    }
    let encoding = encoding.ok_or_else(|| invalid("missing encoding query parameter"))?;
    let codec = codec_from_name(&encoding).ok_or_else(|| {
        invalid(format!(
            "unsupported encoding {encoding:?}; supported: proto, json"
        ))
    })?;
    let raw = message.ok_or_else(|| invalid("missing message query parameter"))?;
    let bytes: Vec<u8> = if base64 {
        let text = percent_decode_str(raw).collect::<Vec<u8>>();
        let text = text.trim_ascii();
        let decoded = if text.len() % 4 == 0 {
            URL_SAFE.decode(text)
        } else {
            URL_SAFE_NO_PAD.decode(text)
        };
        decoded.map_err(|e| {
            invalid(format!(
                "message query parameter is not valid base64url: {e}"
            ))
        })?
    } else {
        percent_decode_str(&raw.replace('+', " ")).collect()
    };
    let enc = match compression.as_deref() {
        None => Encoding::Identity,
        Some(name) => Encoding::parse(name).ok_or_else(|| compression::unsupported(name))?,
    };
    if enc == Encoding::Identity && bytes.len() > limit {
        return Err(Status::new(
            Code::ResourceExhausted,
            format!(
                "request message of {} bytes exceeds the limit of {limit} bytes",
                bytes.len()
            ),
        ));
    }
    let message = compression::decompress(enc, &bytes, limit)?;
    Ok(GetRequest { codec, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREET: [u8; 5] = [0x0a, 0x03, b'B', b'u', b'f'];

    #[test]
    fn vectors_8_9() {
        let p = parse("connect=v1&base64=1&encoding=proto&message=CgNCdWY", 100);
        assert_eq!(p.map(|r| r.message), Ok(Bytes::from_static(&GREET)));
        let p = parse(
            "connect=v1&encoding=json&message=%7B%22name%22%3A%22Buf%22%7D",
            100,
        );
        assert_eq!(
            p.map(|r| (r.codec, r.message)),
            Ok((Codec::Json, Bytes::from_static(br#"{"name":"Buf"}"#)))
        );
        let p = parse(
            "connect=v1&base64=1&compression=gzip&encoding=proto&message=H4sIAAAAAAACA-NidipNAwAiUKAbBQAAAA",
            100,
        );
        assert_eq!(p.map(|r| r.message), Ok(Bytes::from_static(&GREET)));
        // Padded base64url, percent-encoded '=' accepted; any order.
        let p = parse(
            "message=CgNCdWY%3D&encoding=proto&base64=1&extra=ignored",
            100,
        );
        assert_eq!(p.map(|r| r.message), Ok(Bytes::from_static(&GREET)));
    }

    #[test]
    fn errors() {
        let code = |q: &str| parse(q, 100).err().map(|s| s.code);
        assert_eq!(code("encoding=proto"), Some(Code::InvalidArgument));
        assert_eq!(code("message=abc"), Some(Code::InvalidArgument));
        assert_eq!(code("encoding=xml&message=a"), Some(Code::InvalidArgument));
        assert_eq!(
            code("connect=v2&encoding=proto&message=a"),
            Some(Code::InvalidArgument)
        );
        assert_eq!(
            code("encoding=proto&base64=1&message=!!!!"),
            Some(Code::InvalidArgument)
        );
        assert_eq!(
            code("encoding=proto&base64=1&compression=snappy&message=CgNCdWY"),
            Some(Code::Unimplemented)
        );
        assert_eq!(
            parse("encoding=proto&base64=1&message=CgNCdWY", 4)
                .err()
                .map(|s| s.code),
            Some(Code::ResourceExhausted)
        );
        assert!(is_connect_query("connect=v1&encoding=proto&message=x"));
        assert!(is_connect_query("encoding=proto&message=x"));
        assert!(!is_connect_query("foo=bar"));
    }
}
