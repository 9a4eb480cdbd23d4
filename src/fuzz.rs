//! Entry points of the fuzz targets (`fuzz/`, cargo-fuzz): each takes bytes as a caller, an
//! upstream or an operator could send them, drives the parser that reads them as the proxy
//! does, and asserts what must hold whatever the input. A failed assertion or a panic is a
//! finding. Not part of the API: it exists so the targets reach crate-private stages without
//! making them public, and so `cargo test` replays the seed corpus (see the tests below).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::body::{request_frame_status, End, Recode};
use crate::config::Config;
use crate::protocol::compression::Encoding;
use crate::protocol::connect::{error, get};
use crate::protocol::grpc::frame::{self, FrameDecoder, FrameScanner, FLAG_COMPRESSED};
use crate::protocol::grpc::timeout::{
    encode_grpc_timeout, parse_connect_timeout, parse_grpc_timeout,
};
use crate::protocol::grpc::Code;
use crate::protocol::grpc_web::{encode_text, TextDecoder};
use crate::protocol::json::{Method, Schema};

/// Cuts `data` into chunks whose sizes follow from `seed`, so one input also explores where
/// the network splits it: every parser here reads bodies that arrive in arbitrary pieces.
fn chunks(seed: u8, mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut state = u32::from(seed);
    while !data.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        // Mostly short chunks (1..=16 bytes) so boundaries land inside headers; sometimes
        // long ones.
        let len = if state >> 28 == 0 {
            64 + (state >> 16) as usize % 512
        } else {
            1 + (state >> 16) as usize % 16
        };
        let (chunk, rest) = data.split_at(len.min(data.len()));
        out.push(chunk);
        data = rest;
    }
    out
}

/// gRPC frames (the 5-byte envelope of gRPC, gRPC-Web and Connect) read by both readers the
/// proxy has: the scanner that follows boundaries of passed-through bodies and the decoder
/// that yields whole messages. Input: a limit byte, a chunking seed, then the body.
///
/// Both must agree on every boundary, error and frame count; decoded frames re-encode to
/// exactly the bytes read; no frame exceeds the limit.
pub fn grpc_frames(data: &[u8]) {
    let [limit, seed, body @ ..] = data else {
        return;
    };
    // Small limits (0..=1020) make the size check reachable.
    let limit = usize::from(*limit) * 4;
    let mut scanner = FrameScanner::new(limit, 0xff);
    let mut decoder = FrameDecoder::new(limit);
    let (mut scanned, mut decoded) = (Ok(()), Ok(()));
    let mut frames = Vec::new();
    for chunk in chunks(*seed, body) {
        if scanned.is_ok() {
            scanned = scanner.scan(chunk);
        }
        if decoded.is_ok() {
            decoder.push(chunk);
            decoded = loop {
                match decoder.next_frame() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
        }
    }
    assert_eq!(scanned, decoded, "scanner and decoder disagree");
    for f in &frames {
        assert!(f.payload.len() <= limit, "frame over the limit");
    }
    if scanned.is_err() {
        return;
    }
    assert_eq!(scanner.finish(), decoder.finish(), "disagree at the end");
    if scanner.finish().is_ok() {
        assert_eq!(scanner.frames(), frames.len() as u64);
        let again: Vec<u8> = frames
            .iter()
            .flat_map(|f| frame::encode(f.flags, &f.payload))
            .collect();
        assert_eq!(again, body, "decoded frames do not re-encode to the body");
    }
}

/// gRPC-Web text mode: a base64 body decoded as it arrives. Input: a chunking seed, then the
/// body.
///
/// The result must not depend on how the body is cut; whatever decodes must equal a plain
/// per-quantum reference decoding; and encoding any bytes decodes back to them.
pub fn grpc_web_text(data: &[u8]) {
    let [seed, body @ ..] = data else {
        return;
    };
    let whole = decode_text(&[body]);
    let cut = decode_text(&chunks(*seed, body));
    // An error may word its offset from the chunk it was found in; the outcome may not vary.
    assert_eq!(whole.is_ok(), cut.is_ok(), "{whole:?} whole, {cut:?} cut");
    assert_eq!(
        whole.as_ref().ok(),
        cut.as_ref().ok(),
        "the result depends on the chunking"
    );
    if let Ok(decoded) = &whole {
        assert_eq!(Some(decoded), text_reference(body).as_ref());
    }
    let encoded = encode_text(body);
    assert_eq!(
        decode_text(&chunks(*seed, &encoded)).as_deref(),
        Ok(body),
        "encode then decode is not the identity"
    );
}

fn decode_text(parts: &[&[u8]]) -> Result<Vec<u8>, String> {
    let mut decoder = TextDecoder::default();
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(&decoder.decode(part).map_err(|e| e.0)?);
    }
    decoder.finish().map_err(|e| e.0)?;
    Ok(out)
}

/// Decodes each 4-character quantum on its own, whitespace skipped: the definition of a
/// text-mode body (PROTOCOLS.md), without the proxy's fast paths.
fn text_reference(body: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
    );
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::new();
    for quantum in text.chunks(4) {
        out.extend(engine.decode(quantum).ok()?);
    }
    Some(out)
}

/// A Connect streaming request body (`application/connect+proto`, `connect-content-encoding:
/// gzip`) read as the proxy reads it: frames checked against the limit, compressed envelopes
/// decompressed within the limit and forwarded uncompressed. Input: a limit byte, a chunking
/// seed, then the body.
///
/// What goes upstream is a well-formed stream of uncompressed frames within the limit.
pub fn connect_envelopes(data: &[u8]) {
    let [limit, seed, body @ ..] = data else {
        return;
    };
    let limit = 16 + usize::from(*limit) * 16;
    let mut scanner = FrameScanner::new(limit, FLAG_COMPRESSED);
    let mut recode = Recode::new(limit, Encoding::Gzip, None);
    let mut upstream = Vec::new();
    for chunk in chunks(*seed, body) {
        if scanner.scan(chunk).is_err() {
            return;
        }
        match recode.push(chunk, request_frame_status) {
            Ok(out) => upstream.extend_from_slice(&out),
            Err(status) => {
                assert!(
                    matches!(
                        status.code,
                        Code::InvalidArgument | Code::ResourceExhausted | Code::Internal
                    ),
                    "unexpected status {status:?}"
                );
                return;
            }
        }
    }
    let mut check = FrameDecoder::new(limit);
    check.push(&upstream);
    while let Ok(Some(f)) = check.next_frame() {
        assert_eq!(f.flags, 0, "a frame went upstream still flagged");
    }
    assert_eq!(check.finish(), Ok(()), "a partial frame went upstream");
}

/// The end of a call as an upstream's trailers state it, rendered for Connect callers as an
/// end-stream message and a unary error body. Input: trailer lines `name:value\n`.
///
/// Whatever the trailers hold (bad percent-encoding, non-UTF-8, garbage details), both are
/// JSON objects, and the error carries a code exactly when the status is not OK.
pub fn connect_end_stream(data: &[u8]) {
    let mut trailers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            trailers.append(name, value);
        }
    }
    let end = End::from_trailers(trailers, "fuzz");
    let json = error::end_stream_json(&end.status, &end.metadata);
    let parsed: serde_json::Value = match serde_json::from_slice(&json) {
        Ok(v) => v,
        Err(e) => panic!("end-stream is not JSON ({e}): {json:?}"),
    };
    assert!(parsed.is_object(), "end-stream is not an object: {parsed}");
    assert_eq!(
        parsed.get("error").is_some(),
        end.status.code != Code::Ok,
        "{parsed}"
    );
    if end.status.code != Code::Ok {
        let body = error::error_body(&end.status);
        let error: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => panic!("error body is not JSON ({e}): {body:?}"),
        };
        assert_eq!(error["code"], end.status.code.connect_name(), "{error}");
    }
}

/// The query of a Connect unary GET. Input: the query string (after `?`).
///
/// The protocol detection (`is_connect_query`, `codec`) and the full parse agree on the
/// codec, and a decoded message never exceeds the limit, however it was compressed.
pub fn connect_get(data: &[u8]) {
    const LIMIT: usize = 4096;
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let detected = get::is_connect_query(query);
    let codec = get::codec(query);
    if let Ok(request) = get::parse(query, LIMIT) {
        assert!(detected, "parsed, but not detected as Connect GET");
        assert_eq!(codec, Some(request.codec), "detection and parse disagree");
        assert!(request.message.len() <= LIMIT, "message over the limit");
    }
}

/// The methods of a descriptor set, for [`json_transcoding`].
pub struct JsonMethods(Vec<Method>);

impl JsonMethods {
    /// Every method of every service in a serialized `FileDescriptorSet`.
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<JsonMethods, String> {
        let schema = Schema::from_descriptor_set(bytes)?;
        let pool = prost_reflect::DescriptorPool::decode(bytes).map_err(|e| e.to_string())?;
        let methods: Vec<Method> = pool
            .services()
            .flat_map(|s| s.methods().collect::<Vec<_>>())
            .filter_map(|m| {
                schema.method(&format!("/{}/{}", m.parent_service().full_name(), m.name()))
            })
            .collect();
        if methods.is_empty() {
            return Err("no methods in the descriptor set".to_owned());
        }
        Ok(JsonMethods(methods))
    }
}

/// JSON transcoding of a caller's request JSON and of an upstream's protobuf reply. Input: a
/// method selector byte, a flags byte, then the message.
///
/// Request JSON that is accepted becomes protobuf whose canonical JSON is a fixed point
/// (it transcodes back to the same protobuf and JSON); an upstream reply that renders as JSON
/// renders the same after a round trip through protobuf.
pub fn json_transcoding(methods: &JsonMethods, data: &[u8]) {
    let [select, flags, message @ ..] = data else {
        return;
    };
    let method = &methods.0[usize::from(*select) % methods.0.len()];
    let ignore_unknown = flags & 1 != 0;
    if flags & 2 == 0 {
        let Ok(proto) = method.request_to_proto(message, ignore_unknown) else {
            return;
        };
        let json = match method.request_to_json(&proto) {
            Ok(j) => j,
            Err(s) => panic!("accepted JSON does not render back: {s:?}"),
        };
        assert_fixed_point(
            &json,
            |j| method.request_to_proto(j, false),
            |p| method.request_to_json(p),
        );
    } else {
        let Ok(json) = method.response_to_json(message) else {
            return;
        };
        assert_fixed_point(
            &json,
            |j| method.response_to_proto(j, false),
            |p| method.response_to_json(p),
        );
    }
}

/// Canonical JSON → protobuf → JSON gives the same JSON.
fn assert_fixed_point<E: std::fmt::Debug>(
    json: &Bytes,
    to_proto: impl Fn(&[u8]) -> Result<Bytes, E>,
    to_json: impl Fn(&[u8]) -> Result<Bytes, E>,
) {
    let proto = match to_proto(json) {
        Ok(p) => p,
        Err(e) => panic!("canonical JSON {json:?} is refused: {e:?}"),
    };
    match to_json(&proto) {
        Ok(again) => assert_eq!(again, json, "canonical JSON is not a fixed point"),
        Err(e) => panic!("protobuf from canonical JSON {json:?} does not render: {e:?}"),
    }
}

/// `grpc-timeout` and `connect-timeout-ms` header values.
///
/// A parsed `grpc-timeout` re-encodes (as the proxy sends it upstream) to a value that
/// parses to at least as much, within one unit of the encoding; `connect-timeout-ms` stays
/// within its 10 digits.
pub fn timeouts(data: &[u8]) {
    if let Some(d) = parse_grpc_timeout(data) {
        let encoded = encode_grpc_timeout(d);
        let Some(again) = parse_grpc_timeout(encoded.as_bytes()) else {
            panic!("{encoded:?} does not parse");
        };
        let max = Duration::from_secs(99_999_999 * 3600);
        if d <= max {
            assert!(again >= d, "{d:?} re-encoded as {encoded:?} shrank");
        } else {
            assert_eq!(again, max, "{d:?} re-encoded as {encoded:?}");
        }
    }
    if let Some(d) = parse_connect_timeout(data) {
        assert!(d.as_millis() <= 9_999_999_999, "{d:?}");
    }
}

/// A config file. Input: YAML text.
///
/// Parsing and validation never panic, and every error names the file.
pub fn config_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::from_yaml(text, "fuzz.yaml") {
        let shown = e.to_string();
        assert!(shown.starts_with("fuzz.yaml"), "{shown}");
    }
}

#[cfg(test)]
mod tests {
    //! The seed corpus of every target, replayed on every `cargo test` (findings are kept as
    //! byte-vector tests beside their parsers).
    use std::path::Path;

    use super::*;

    fn replay(target: &str, run: impl Fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut seen = 0;
        let entries = std::fs::read_dir(&dir).into_iter().flatten().flatten();
        for entry in entries {
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            run(&bytes);
            seen += 1;
        }
        assert!(seen > 0, "no seeds in {}", dir.display());
    }

    #[test]
    fn seed_corpus_holds_every_property() {
        replay("grpc_frames", grpc_frames);
        replay("grpc_web_text", grpc_web_text);
        replay("connect_envelopes", connect_envelopes);
        replay("connect_end_stream", connect_end_stream);
        replay("connect_get", connect_get);
        replay("timeouts", timeouts);
        replay("config_yaml", config_yaml);
        let types =
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/types.binpb"))
                .unwrap_or_default();
        match JsonMethods::from_descriptor_set(&types) {
            Ok(methods) => replay("json_transcoding", |d| json_transcoding(&methods, d)),
            Err(e) => panic!("tests/data/types.binpb: {e}"),
        }
    }
}
