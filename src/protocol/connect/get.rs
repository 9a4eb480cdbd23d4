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

/// The `key=value` pairs of a query, in order; a pair without `=` has an empty value.
fn params(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// A form-encoded query value: `+` is a space, then percent-decoding, as UTF-8.
fn form_value(raw: &str) -> Option<String> {
    percent_decode_str(&raw.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// The codec named by the `encoding` parameter, if it names a known one. It reads the
/// parameter exactly as [`parse`] does (the first one, form-decoded), so the protocol
/// detection and the call agree on the codec.
pub fn codec(query: &str) -> Option<Codec> {
    let (_, raw) = params(query).find(|(key, _)| *key == "encoding")?;
    codec_from_name(&form_value(raw)?)
}

/// Parses and decodes the query of a Connect GET. Unknown parameters are ignored.
pub fn parse(query: &str, limit: usize) -> Result<GetRequest, Status> {
    let mut connect = None;
    let mut encoding = None;
    let mut message = None;
    let mut base64 = false;
    let mut compression = None;
    // A repeated parameter counts once, by its first value, as connect-go reads queries
    // (Go's `url.Values.Get`).
    let mut base64_seen = false;
    for (key, raw) in params(query) {
        // `+` is a space in form encoding; base64url never contains it, JSON text may.
        let value = || {
            form_value(raw)
                .ok_or_else(|| invalid(format!("query parameter {key} is not valid UTF-8")))
        };
        match key {
            "connect" if connect.is_none() => connect = Some(value()?),
            "encoding" if encoding.is_none() => encoding = Some(value()?),
            "message" if message.is_none() => message = Some(raw),
            "base64" if !base64_seen => {
                base64_seen = true;
                base64 = raw == "1";
            }
            "compression" if compression.is_none() => compression = Some(value()?),
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

    /// Found by the `connect_get` fuzz target: the protocol detection took the first
    /// `encoding=` prefix as it stood while the parse took the last value, decoded, so a
    /// query could be detected as one codec and read as another.
    #[test]
    fn detection_and_parse_read_the_same_encoding() {
        let found: &[u8] = &[
            0x63, 0x6f, 0x6e, 0x6e, 0x65, 0x63, 0x74, 0x3d, 0x76, 0x31, 0x26, 0x65, 0x6e, 0x63,
            0x6f, 0x64, 0x69, 0x6e, 0x67, 0x3d, 0x70, 0x65, 0x6e, 0x63, 0x6f, 0x64, 0x69, 0x6e,
            0x67, 0x3d, 0x70, 0x72, 0x6f, 0x74, 0x6f, 0x26, 0x62, 0x31, 0x26, 0x65, 0x6e, 0x63,
            0x6f, 0x64, 0x69, 0x6e, 0x67, 0x3d, 0x70, 0x72, 0x6f, 0x74, 0x6f, 0x26, 0x62, 0x61,
            0x73, 0x65, 0x43, 0x5f, 0x2d, 0x4e, 0x69, 0x64, 0x69, 0x70, 0x4e, 0x41, 0x77, 0x41,
            0x69, 0x55, 0x4b, 0x41, 0x62, 0x42, 0x51, 0x41, 0x41, 0x26, 0x6d, 0x65, 0x73, 0x73,
            0x61, 0x67, 0x65, 0x26, 0x26, 0x26, 0x3d, 0x49, 0x34, 0x26,
        ];
        let found = std::str::from_utf8(found).unwrap_or_default();
        for query in [
            found,
            "encoding=json&encoding=proto&message=x",
            "encoding=%6Ason&message=%7B%7D",
            "encoding&encoding=json&message=x",
        ] {
            let detected = codec(query);
            let parsed = parse(query, 100).map(|r| r.codec);
            assert!(
                parsed.is_err() || detected == parsed.clone().ok(),
                "{query}: detected {detected:?}, parsed {parsed:?}"
            );
        }
        assert_eq!(
            parse("encoding=json&encoding=proto&message=%7B%7D", 100).map(|r| r.codec),
            Ok(Codec::Json),
            "the first value counts"
        );
        assert_eq!(codec("encoding=%6Ason&message=x"), Some(Codec::Json));
    }
}
