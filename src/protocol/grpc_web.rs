//! gRPC-Web ⇄ gRPC: content types, the trailer frame, and text mode (base64 in both
//! directions, decoded per 4-character quantum so separately padded chunks work).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::grpc::frame::{self, FLAG_TRAILERS};
use super::grpc::status::{GRPC_MESSAGE, GRPC_STATUS, GRPC_STATUS_DETAILS_BIN};
use super::grpc::Status;
use super::Codec;

const PREFIX: &str = "application/grpc-web";
const TEXT_PREFIX: &str = "application/grpc-web-text";

/// How one gRPC-Web call is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mode {
    /// The request body is base64.
    pub text_request: bool,
    /// The response body is base64.
    pub text_response: bool,
    /// The message codec.
    pub codec: Codec,
    /// The response `content-type`: the request's own, switched to text or binary as needed.
    pub response_content_type: HeaderValue,
}

/// Why a `content-type` that starts like gRPC-Web is not one we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedCodec(pub String);

impl Mode {
    /// Reads the call's mode from its `content-type` (already known to start with
    /// `application/grpc-web`) and `accept`. A response is text when either the request is
    /// text or `accept` asks for text.
    pub fn from_headers(
        content_type: &str,
        accept: Option<&str>,
    ) -> Result<Mode, UnsupportedCodec> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        let unsupported = || UnsupportedCodec(essence.to_ascii_lowercase());
        let (text_request, suffix) =
            if let Some(rest) = strip_prefix_ignore_case(essence, TEXT_PREFIX) {
                (true, rest)
            } else if let Some(rest) = strip_prefix_ignore_case(essence, PREFIX) {
                (false, rest)
            } else {
                return Err(unsupported());
            };
        let codec = if suffix.is_empty() || suffix.eq_ignore_ascii_case("+proto") {
            Codec::Proto
        } else if suffix.eq_ignore_ascii_case("+json") && !text_request {
            Codec::Json
        } else {
            return Err(unsupported());
        };
        let wants_text = accept.is_some_and(|a| {
            a.split(',').any(|item| {
                let item = item.split(';').next().unwrap_or_default().trim();
                item.eq_ignore_ascii_case(TEXT_PREFIX)
                    || item.eq_ignore_ascii_case("application/grpc-web-text+proto")
            })
        });
        let text_response = text_request || (wants_text && codec == Codec::Proto);
        let response_content_type = match (text_response, suffix.is_empty(), codec) {
            (true, true, _) => HeaderValue::from_static(TEXT_PREFIX),
            (true, false, _) => HeaderValue::from_static("application/grpc-web-text+proto"),
            (false, true, _) => HeaderValue::from_static(PREFIX),
            (false, false, Codec::Json) => HeaderValue::from_static("application/grpc-web+json"),
            (false, false, Codec::Proto) => HeaderValue::from_static("application/grpc-web+proto"),
        };
        Ok(Mode {
            text_request,
            text_response,
            codec,
            response_content_type,
        })
    }
}

/// `s` without `prefix`, compared ignoring ASCII case.
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Builds the trailer frame: `0x80`, length, then `name:value\r\n` lines with the status first
/// and the other trailers after it. Names are lower-case (HeaderMap guarantees it).
pub fn trailer_frame(status: &Status, metadata: &HeaderMap) -> Bytes {
    let mut fields: [Option<(HeaderName, HeaderValue)>; 3] = [None, None, None];
    let mut n = 0;
    status.each_header(|name, value| {
        if let Some(slot) = fields.get_mut(n) {
            *slot = Some((name, value));
            n += 1;
        }
    });
    let status_fields = || fields.iter().flatten().map(|(n, v)| (n, v));
    let others = || {
        metadata.iter().filter(|(name, _)| {
            *name != GRPC_STATUS && *name != GRPC_MESSAGE && *name != GRPC_STATUS_DETAILS_BIN
        })
    };
    let line_len = |(n, v): (&HeaderName, &HeaderValue)| n.as_str().len() + v.len() + 3;
    let len: usize = status_fields().chain(others()).map(line_len).sum();
    // Sized exactly: a full buffer becomes `Bytes` without another allocation.
    let mut out = BytesMut::with_capacity(frame::HEADER_LEN + len);
    out.put_slice(&frame::header(FLAG_TRAILERS, len));
    for (name, value) in status_fields().chain(others()) {
        out.put_slice(name.as_str().as_bytes());
        out.put_u8(b':');
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.freeze()
}

/// Encodes one flushed chunk of a text-mode response as complete, padded base64 (SIMD where
/// the CPU has it; the output buffer becomes the `Bytes` without a copy).
pub fn encode_text(chunk: &[u8]) -> Bytes {
    Bytes::from(base64_simd::STANDARD.encode_type::<Vec<u8>>(chunk))
}

/// Standard alphabet; canonical padding inside each 4-char quantum; lenient about trailing bits
/// (some encoders leave them set).
const QUANTUM_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Invalid base64 in a text-mode body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid base64 in grpc-web-text body: {0}")]
pub struct TextError(pub String);

/// Streaming decoder for text-mode bodies. The body is a concatenation of independently padded
/// base64 strings, so each 4-character quantum is decoded on its own terms: a run of quanta
/// ending at a padded one is decoded in one call, and an incomplete quantum waits for the next
/// chunk. Whitespace is ignored.
#[derive(Debug, Default)]
pub struct TextDecoder {
    pending: Vec<u8>,
}

impl TextDecoder {
    /// Decodes what `chunk` completes.
    pub fn decode(&mut self, chunk: &[u8]) -> Result<Bytes, TextError> {
        // Usually nothing is pending and there is no whitespace (every base64 character is
        // above b' '): the chunk is decoded where it is, without a copy.
        let joined;
        let input: &[u8] = if self.pending.is_empty() && !has_space_or_control(chunk) {
            chunk
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.reserve(chunk.len());
            buf.extend(chunk.iter().copied().filter(|b| !b.is_ascii_whitespace()));
            joined = buf;
            &joined
        };
        let whole = input.len() / 4 * 4;
        let mut out = Vec::with_capacity(whole / 4 * 3);
        // A run of quanta ends at the first one holding padding (or at the end), and is
        // decoded in one call.
        let mut start = 0;
        while start < whole {
            let end = match memchr::memchr(b'=', &input[start..whole]) {
                Some(i) => ((start + i) / 4 + 1) * 4,
                None => whole,
            };
            decode_run(&input[start..end], &mut out)?;
            start = end;
        }
        self.pending = input[whole..].to_vec();
        Ok(Bytes::from(out))
    }

    /// Checks that no incomplete quantum is left at the end of the body.
    pub fn finish(&self) -> Result<(), TextError> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(TextError(format!(
                "the body ends with an incomplete base64 group of {} characters",
                self.pending.len()
            )))
        }
    }
}

/// Whether `data` holds a byte at or below b' ' (whitespace, or a control character). Scanned
/// in blocks without an early exit inside them, so the compiler can vectorize it.
fn has_space_or_control(data: &[u8]) -> bool {
    data.chunks(64)
        .any(|block| block.iter().fold(false, |seen, &b| seen | (b <= b' ')))
}

/// Decodes whole quanta, the last of which may be padded. The SIMD decoder takes canonical
/// base64; what it refuses goes to the lenient one, which also accepts set trailing bits (some
/// encoders leave them) and words the error.
fn decode_run(run: &[u8], out: &mut Vec<u8>) -> Result<(), TextError> {
    let start = out.len();
    if base64_simd::STANDARD.decode_append(run, out).is_ok() {
        return Ok(());
    }
    out.truncate(start);
    out.resize(start + run.len() / 4 * 3, 0);
    match QUANTUM_ENGINE.decode_slice(run, &mut out[start..]) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(TextError(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::grpc::Code;

    fn decode_all(parts: &[&str]) -> Result<Vec<u8>, TextError> {
        let mut d = TextDecoder::default();
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(&d.decode(p.as_bytes())?);
        }
        d.finish()?;
        Ok(out)
    }

    const GREET: [u8; 10] = [0x00, 0, 0, 0, 5, 0x0a, 0x03, b'B', b'u', b'f'];

    #[test]
    fn text_request_in_separately_padded_chunks() {
        // PROTOCOLS.md §8.4
        assert_eq!(decode_all(&["AAAAAAUKAw==QnVm"]).ok(), Some(GREET.to_vec()));
        assert_eq!(decode_all(&["AAAAAAUKA0J1Zg=="]).ok(), Some(GREET.to_vec()));
        // Split at every position, including inside quanta and padding.
        let body = "AAAAAAUKAw==QnVm";
        for i in 0..=body.len() {
            assert_eq!(
                decode_all(&[&body[..i], &body[i..]]).ok(),
                Some(GREET.to_vec()),
                "split {i}"
            );
        }
    }

    #[test]
    fn text_matches_the_reference_codec_at_any_size_and_split() {
        use base64::engine::general_purpose::STANDARD;
        // Sizes around the SIMD block widths, and a pseudo-random payload.
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for n in [
            0, 1, 2, 3, 31, 32, 33, 47, 48, 63, 64, 65, 1000, 65_536, 70_000,
        ] {
            let encoded = encode_text(&data[..n]);
            assert_eq!(
                &encoded[..],
                STANDARD.encode(&data[..n]).as_bytes(),
                "encode {n}"
            );
            let text = std::str::from_utf8(&encoded).unwrap_or_default();
            for cut in [0, 1, 5, text.len() / 3, text.len()] {
                let cut = cut.min(text.len());
                let out = decode_all(&[&text[..cut], &text[cut..]]);
                assert_eq!(
                    out.as_deref().ok(),
                    Some(&data[..n]),
                    "decode {n} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn text_with_set_trailing_bits_is_accepted() {
        // "QR==" carries bits after the one byte it encodes (canonical is "QQ==").
        assert_eq!(decode_all(&["QR=="]).ok(), Some(b"A".to_vec()));
        assert_eq!(decode_all(&["QUJD", "QR=="]).ok(), Some(b"ABCA".to_vec()));
    }

    #[test]
    fn text_response_stream_with_padding_inside() {
        // PROTOCOLS.md §8.3
        let body =
            "AAAAAA0KC0hlbGxvLCBCdWYhAAAAABEKD0hlbGxvLCBDb25uZWN0IQ==gAAAAA9ncnBjLXN0YXR1czowDQo=";
        let out = decode_all(&[body]).unwrap_or_default();
        assert_eq!(out.len(), 18 + 22 + 20);
        assert_eq!(&out[40..], b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n");
    }

    #[test]
    fn whitespace_is_ignored_and_garbage_rejected() {
        assert_eq!(
            decode_all(&["AAAA AAUK\r\nAw==", "QnVm\n"]).ok(),
            Some(GREET.to_vec())
        );
        assert!(decode_all(&["AAAA!AAA"]).is_err());
        assert!(
            decode_all(&["AAAAAA"]).is_err(),
            "incomplete quantum at end"
        );
        assert!(decode_all(&["A==="]).is_err());
    }

    #[test]
    fn trailer_frame_vectors() {
        // PROTOCOLS.md §8.2
        let f = trailer_frame(&Status::ok(), &HeaderMap::new());
        assert_eq!(&f[..], b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n");
        // §8.12 body form
        let mut md = HeaderMap::new();
        md.insert("x-request-id", HeaderValue::from_static("42"));
        let f = trailer_frame(&Status::new(Code::NotFound, "user not found"), &md);
        assert_eq!(
            &f[..],
            b"\x80\x00\x00\x00\x3dgrpc-status:5\r\ngrpc-message:user not found\r\nx-request-id:42\r\n"
        );
        assert_eq!(f.len(), 66);
        // Text form of §8.3
        assert_eq!(
            &encode_text(&trailer_frame(&Status::ok(), &HeaderMap::new()))[..],
            b"gAAAAA9ncnBjLXN0YXR1czowDQo="
        );
    }

    #[test]
    fn modes() {
        let m = Mode::from_headers("application/grpc-web+proto", None).unwrap_or_else(|_| {
            Mode::from_headers("application/grpc-web", None).unwrap_or_else(|_| unreachable!())
        });
        assert!(!m.text_request && !m.text_response);
        assert_eq!(m.response_content_type, "application/grpc-web+proto");
        let m = Mode::from_headers("application/grpc-web", Some("application/grpc-web-text"));
        assert_eq!(
            m.map(|m| (m.text_response, m.response_content_type)),
            Ok((true, HeaderValue::from_static("application/grpc-web-text")))
        );
        let m = Mode::from_headers("application/grpc-web-text; charset=utf-8", None);
        assert_eq!(
            m.map(|m| (m.text_request, m.response_content_type)),
            Ok((true, HeaderValue::from_static("application/grpc-web-text")))
        );
        let m = Mode::from_headers("Application/GRPC-Web+JSON", None);
        assert_eq!(m.map(|m| m.codec), Ok(Codec::Json));
        assert!(Mode::from_headers("application/grpc-web+thrift", None).is_err());
        assert!(Mode::from_headers("application/grpc-web-text+json", None).is_err());
    }
}
