//! Wire helpers: test messages, gRPC frames, gRPC-Web bodies and trailer frames, text-mode
//! base64 decoded per 4-character quantum, gzip, `grpc-message` percent-decoding and
//! `grpc-timeout` parsing.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;

use super::pb::{EchoRequest, EchoResponse, ErrorSpec};

/// Flag byte of a gRPC-Web trailer frame.
pub(crate) const TRAILER_FLAG: u8 = 0x80;

/// One length-prefixed frame: `flag | u32 BE length | payload`.
pub(crate) fn frame_with_flag(flag: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flag);
    out.put_u32(u32::try_from(payload.len()).unwrap());
    out.put_slice(payload);
    out.freeze()
}

/// A data frame (flag 0) carrying `msg`.
pub(crate) fn frame(msg: &EchoRequest) -> Bytes {
    frame_with_flag(0, &msg.encode_to_vec())
}

/// Several data frames back to back.
pub(crate) fn frames(msgs: &[EchoRequest]) -> Bytes {
    let mut out = BytesMut::new();
    for m in msgs {
        out.put_slice(&frame(m));
    }
    out.freeze()
}

/// An `EchoRequest` with just a message.
pub(crate) fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
        ..EchoRequest::default()
    }
}

/// An `EchoRequest` the backend answers with the error `code`, `message` and, when
/// `with_details`, a `google.rpc.BadRequest` detail (field `message`, "must not be empty").
pub(crate) fn failing(code: tonic::Code, message: &str, with_details: bool) -> EchoRequest {
    EchoRequest {
        error: Some(ErrorSpec {
            code: code as i32,
            message: message.to_owned(),
            with_details,
        }),
        ..echo("fail")
    }
}

/// Decodes a response message.
pub(crate) fn decode_response(bytes: &[u8]) -> EchoResponse {
    EchoResponse::decode(bytes)
        .unwrap_or_else(|e| panic!("not an EchoResponse ({e}): {bytes:02x?}"))
}

/// Standard padded base64, as a text-mode client sends it.
pub(crate) fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Gzip at the default level.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Gunzip; fails the test on anything that is not gzip.
pub(crate) fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("not gzip ({e}): {data:02x?}"));
    out
}

/// Decodes a `-bin` metadata value (standard alphabet, padded or not).
pub(crate) fn base64_decode(value: &str) -> Vec<u8> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine
        .decode(value.trim())
        .unwrap_or_else(|e| panic!("invalid base64 {value:?}: {e}"))
}

/// Base64 decoder for gRPC-Web text bodies: a body may be several independently padded
/// chunks, so every 4-character quantum is decoded on its own; a partial quantum waits for
/// the next push.
#[derive(Debug, Default)]
pub(crate) struct Base64Quanta {
    pending: Vec<u8>,
}

impl Base64Quanta {
    /// Decodes every complete quantum in `pending + input`.
    pub(crate) fn push(&mut self, input: &[u8]) -> Result<Vec<u8>, String> {
        self.pending
            .extend(input.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        let whole = self.pending.len() / 4 * 4;
        let mut out = Vec::with_capacity(whole / 4 * 3);
        for quantum in self.pending[..whole].chunks(4) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(quantum)
                .map_err(|e| {
                    format!(
                        "invalid base64 quantum {:?}: {e}",
                        String::from_utf8_lossy(quantum)
                    )
                })?;
            out.extend_from_slice(&decoded);
        }
        self.pending.drain(..whole);
        Ok(out)
    }

    /// Fails if a partial quantum is left over.
    pub(crate) fn finish(&self) -> Result<(), String> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "text body ends with a partial base64 quantum {:?}",
                String::from_utf8_lossy(&self.pending)
            ))
        }
    }
}

/// Decodes a whole text-mode body per quantum.
pub(crate) fn decode_text(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut d = Base64Quanta::default();
    let out = d.push(body)?;
    d.finish()?;
    Ok(out)
}

/// The entries of a trailer frame (or header block), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Trailers(pub(crate) Vec<(String, String)>);

impl Trailers {
    /// The first value of `name` (names are compared case-insensitively).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parses the payload of a trailer frame: `name:value\r\n` lines. Insists on lower-case
    /// names and CRLF line ends, as the proxy must write them.
    pub(crate) fn parse(block: &[u8]) -> Result<Trailers, String> {
        let text = std::str::from_utf8(block)
            .map_err(|_| format!("trailer frame is not UTF-8: {block:02x?}"))?;
        if !text.ends_with("\r\n") {
            return Err(format!("trailer block does not end with CRLF: {text:?}"));
        }
        let mut out = Vec::new();
        for line in text.trim_end_matches("\r\n").split("\r\n") {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("trailer line without ':': {line:?} in {text:?}"))?;
            if name.is_empty() || name != name.to_ascii_lowercase() {
                return Err(format!(
                    "trailer name is not lower-case: {name:?} in {text:?}"
                ));
            }
            out.push((name.to_owned(), value.trim().to_owned()));
        }
        Ok(Trailers(out))
    }
}

/// A gRPC-Web response body split into its parts.
#[derive(Debug, Clone, Default)]
pub(crate) struct WebBody {
    /// Payloads of the data frames, in order.
    pub(crate) messages: Vec<Bytes>,
    /// The trailer frame, when there is one.
    pub(crate) trailers: Option<Trailers>,
}

/// Splits a whole binary gRPC-Web body, enforcing the framing rules: complete frames, data
/// frames uncompressed, at most one trailer frame, never empty, and nothing after it.
pub(crate) fn parse_web_body(mut body: &[u8]) -> Result<WebBody, String> {
    let mut out = WebBody::default();
    while !body.is_empty() {
        let (flag, payload, rest) = split_frame(body)
            .ok_or_else(|| format!("truncated frame at the end of the body: {body:02x?}"))?;
        body = rest;
        if out.trailers.is_some() {
            return Err(format!(
                "a frame (flag {flag:#04x}) follows the trailer frame"
            ));
        }
        match flag {
            0x00 => out.messages.push(Bytes::copy_from_slice(payload)),
            TRAILER_FLAG => {
                if payload.is_empty() {
                    return Err("empty trailer frame (80 00 00 00 00)".to_owned());
                }
                out.trailers = Some(Trailers::parse(payload)?);
            }
            other => return Err(format!("unexpected frame flag {other:#04x}")),
        }
    }
    Ok(out)
}

/// Splits one frame off the front into (flag, payload, rest); None when `buf` holds only
/// part of one.
pub(crate) fn split_frame(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    Some((buf[0], &buf[5..5 + len], &buf[5 + len..]))
}

/// Lenient `grpc-message` decoding: `%XX` becomes a byte, anything else stays as it is.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a `grpc-timeout` value (`200m`, `5S`, ...).
pub(crate) fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quanta_decoder_handles_padding_inside_the_body() {
        // PROTOCOLS.md §8.3 and §8.4.
        let body =
            b"AAAAAA0KC0hlbGxvLCBCdWYhAAAAABEKD0hlbGxvLCBDb25uZWN0IQ==gAAAAA9ncnBjLXN0YXR1czowDQo=";
        let parsed = parse_web_body(&decode_text(body).unwrap()).unwrap();
        assert_eq!(parsed.messages.len(), 2);
        assert_eq!(
            parsed.trailers.unwrap().get("grpc-status"),
            Some("0"),
            "§8.3 trailer"
        );
        assert_eq!(
            decode_text(b"AAAAAAUKAw==QnVm").unwrap(),
            [0, 0, 0, 0, 5, 0x0a, 3, b'B', b'u', b'f']
        );
        let mut d = Base64Quanta::default();
        let mut out = d.push(b"AAAAAAU").unwrap();
        out.extend(d.push(b"KAw==QnVm").unwrap());
        d.finish().unwrap();
        assert_eq!(out, frame(&echo("Buf")).to_vec());
        assert!(decode_text(b"AAAAAAUKA").is_err());
    }

    #[test]
    fn body_parser_enforces_framing() {
        let data = frame_with_flag(0, b"hi");
        let trailer = frame_with_flag(TRAILER_FLAG, b"grpc-status:0\r\n");
        let ok = [data.clone(), trailer.clone()].concat();
        let parsed = parse_web_body(&ok).unwrap();
        assert_eq!(parsed.messages, vec![Bytes::from_static(b"hi")]);
        assert!(parse_web_body(&[trailer.clone(), data.clone()].concat()).is_err());
        assert!(parse_web_body(&[trailer.clone(), trailer.clone()].concat()).is_err());
        assert!(parse_web_body(&[0x80, 0, 0, 0, 0]).is_err());
        assert!(parse_web_body(&ok[..ok.len() - 1]).is_err());
        assert!(Trailers::parse(b"Grpc-Status:0\r\n").is_err());
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode("caf%C3%A9 100%25"), "caf\u{e9} 100%");
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(parse_grpc_timeout("200m"), Some(Duration::from_millis(200)));
    }
}
