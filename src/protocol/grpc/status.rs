//! gRPC status: codes, `grpc-status` / `grpc-message` / `grpc-status-details-bin`, and the
//! tables that turn HTTP statuses and HTTP/2 resets into codes.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{percent_decode_str, AsciiSet, CONTROLS};
use prost::Message as _;

use super::metadata::{decode_binary_header, encode_binary_header};

pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub(crate) const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub(crate) const GRPC_STATUS_DETAILS_BIN: HeaderName =
    HeaderName::from_static("grpc-status-details-bin");

/// A gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    /// 0
    Ok = 0,
    /// 1
    Cancelled = 1,
    /// 2
    Unknown = 2,
    /// 3
    InvalidArgument = 3,
    /// 4
    DeadlineExceeded = 4,
    /// 5
    NotFound = 5,
    /// 6
    AlreadyExists = 6,
    /// 7
    PermissionDenied = 7,
    /// 8
    ResourceExhausted = 8,
    /// 9
    FailedPrecondition = 9,
    /// 10
    Aborted = 10,
    /// 11
    OutOfRange = 11,
    /// 12
    Unimplemented = 12,
    /// 13
    Internal = 13,
    /// 14
    Unavailable = 14,
    /// 15
    DataLoss = 15,
    /// 16
    Unauthenticated = 16,
}

const ALL_CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl Code {
    /// The code for a number; numbers outside 0..=16 are `Unknown`.
    pub fn from_i32(n: i32) -> Code {
        usize::try_from(n)
            .ok()
            .and_then(|i| ALL_CODES.get(i).copied())
            .unwrap_or(Code::Unknown)
    }

    /// The number on the wire.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The `grpc-status` value (static: no allocation per call).
    pub fn header_value(self) -> HeaderValue {
        const VALUES: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        HeaderValue::from_static(VALUES[self as usize])
    }

    /// The Connect name of the code (`canceled` has one L).
    pub fn connect_name(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Cancelled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The code a gRPC client reports for a response that has an HTTP status but no
    /// `grpc-status` (grpc `http-grpc-status-mapping.md`; 431 follows connect-go: unknown).
    pub fn from_http_status(status: http::StatusCode) -> Code {
        match status.as_u16() {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }

    /// The code for an HTTP/2 RST_STREAM or GOAWAY reason (gRPC over HTTP/2, "Errors").
    pub fn from_h2_reason(reason: h2::Reason) -> Code {
        match reason {
            h2::Reason::REFUSED_STREAM => Code::Unavailable,
            h2::Reason::CANCEL => Code::Cancelled,
            h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
            h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
            _ => Code::Internal,
        }
    }
}

/// A status as it travels between the protocols: code, decoded message and the serialized
/// `google.rpc.Status` from `grpc-status-details-bin`, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The code.
    pub code: Code,
    /// The message, already percent-decoded.
    pub message: String,
    /// A serialized `google.rpc.Status` whose code and message agree with the two fields above.
    pub details: Option<Bytes>,
}

/// `google.rpc.Status`, the payload of `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// The code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// The details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types_any::Any>,
}

/// `google.protobuf.Any`, kept local so the crate needs no generated well-known types.
pub mod prost_types_any {
    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        /// The type URL, e.g. `type.googleapis.com/google.rpc.BadRequest`.
        #[prost(string, tag = "1")]
        pub type_url: String,
        /// The serialized message.
        #[prost(bytes = "bytes", tag = "2")]
        pub value: bytes::Bytes,
    }
}

impl Status {
    /// A status without details.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// OK.
    pub fn ok() -> Status {
        Status::new(Code::Ok, "")
    }

    /// Reads the status fields of a trailer block (or a Trailers-Only header block).
    /// `None` when there is no `grpc-status`; a non-numeric `grpc-status` is `Unknown`.
    pub fn from_headers(headers: &HeaderMap) -> Option<Status> {
        let raw = headers.get(GRPC_STATUS)?;
        let code = raw
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .map(Code::from_i32);
        let Some(code) = code else {
            return Some(Status::new(
                Code::Unknown,
                format!(
                    "upstream sent an invalid grpc-status: {:?}",
                    String::from_utf8_lossy(raw.as_bytes())
                ),
            ));
        };
        let message = headers
            .get(GRPC_MESSAGE)
            .map(|v| decode_message(v.as_bytes()))
            .unwrap_or_default();
        let details = headers
            .get(GRPC_STATUS_DETAILS_BIN)
            .and_then(|v| decode_binary_header(v.as_bytes()).ok());
        let mut status = Status {
            code,
            message,
            details: None,
        };
        if let Some(details) = details {
            status.details = normalize_details(&details, code, &status.message);
        }
        Some(status)
    }

    /// Writes `grpc-status`, `grpc-message` (strictly percent-encoded, omitted when empty) and
    /// `grpc-status-details-bin` (unpadded base64).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        self.each_header(|name, value| {
            headers.insert(name, value);
        });
    }

    /// Calls `f` with each status header (`grpc-status` first), encoded for the wire.
    pub(crate) fn each_header(&self, mut f: impl FnMut(HeaderName, HeaderValue)) {
        f(GRPC_STATUS, self.code.header_value());
        if !self.message.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&encode_message(&self.message)) {
                f(GRPC_MESSAGE, v);
            }
        }
        if let Some(details) = &self.details {
            if let Ok(v) = HeaderValue::from_str(&encode_binary_header(details)) {
                f(GRPC_STATUS_DETAILS_BIN, v);
            }
        }
    }

    /// The decoded `google.rpc.Status`, when details are present and parse.
    pub fn rpc_status(&self) -> Option<RpcStatus> {
        self.details
            .as_ref()
            .and_then(|d| RpcStatus::decode(d.clone()).ok())
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// Makes the details agree with the status headers: clients disagree on which wins, so every
/// caller is shown one status. Unparseable details are dropped.
fn normalize_details(raw: &[u8], code: Code, message: &str) -> Option<Bytes> {
    if code == Code::Ok {
        return None;
    }
    let mut proto = RpcStatus::decode(raw).ok()?;
    if proto.code == code.as_i32() && proto.message == message {
        return Some(Bytes::copy_from_slice(raw));
    }
    proto.code = code.as_i32();
    proto.message = message.to_owned();
    Some(Bytes::from(proto.encode_to_vec()))
}

/// Bytes that `grpc-message` may carry raw: 0x20..=0x7E except `%`.
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// Percent-encodes a status message exactly as the gRPC spec says (controls, `%` and
/// non-ASCII bytes escaped; everything else, spaces included, raw).
pub fn encode_message(message: &str) -> String {
    percent_encoding::utf8_percent_encode(message, MESSAGE_ESCAPES).to_string()
}

/// Decodes `grpc-message` leniently: valid `%XX` escapes are decoded, broken ones kept as they
/// are, and invalid UTF-8 becomes U+FFFD. Never fails.
pub fn decode_message(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    percent_decode_str(&text).decode_utf8_lossy().into_owned()
}

/// Builds a `google.rpc.Status` payload for a status that carries details.
pub fn details_bytes(code: Code, message: &str, details: Vec<prost_types_any::Any>) -> Bytes {
    Bytes::from(
        RpcStatus {
            code: code.as_i32(),
            message: message.to_owned(),
            details,
        }
        .encode_to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_out_of_range_is_unknown() {
        for n in 0..=16 {
            assert_eq!(Code::from_i32(n).as_i32(), n);
        }
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
        assert_eq!(Code::Cancelled.connect_name(), "canceled");
    }

    #[test]
    fn http_status_table() {
        let table = [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (431, Code::Unknown),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (500, Code::Unknown),
            (200, Code::Unknown),
        ];
        for (http, code) in table {
            let s = http::StatusCode::from_u16(http).unwrap_or(http::StatusCode::OK);
            assert_eq!(Code::from_http_status(s), code, "HTTP {http}");
        }
    }

    #[test]
    fn h2_reason_table() {
        assert_eq!(
            Code::from_h2_reason(h2::Reason::REFUSED_STREAM),
            Code::Unavailable
        );
        assert_eq!(Code::from_h2_reason(h2::Reason::CANCEL), Code::Cancelled);
        assert_eq!(
            Code::from_h2_reason(h2::Reason::ENHANCE_YOUR_CALM),
            Code::ResourceExhausted
        );
        assert_eq!(
            Code::from_h2_reason(h2::Reason::INADEQUATE_SECURITY),
            Code::PermissionDenied
        );
        assert_eq!(
            Code::from_h2_reason(h2::Reason::PROTOCOL_ERROR),
            Code::Internal
        );
        assert_eq!(Code::from_h2_reason(h2::Reason::NO_ERROR), Code::Internal);
    }

    #[test]
    fn message_encoding_vectors() {
        // PROTOCOLS.md §8.8
        let conformance = "\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\n";
        assert_eq!(
            encode_message(conformance),
            "%0Atest with whitespace%0D%0Aand Unicode BMP %E2%98%BA and non-BMP %F0%9F%98%88%0A"
        );
        assert_eq!(encode_message("100% done"), "100%25 done");
        assert_eq!(encode_message("café"), "caf%C3%A9");
        assert_eq!(encode_message("name is required"), "name is required");
        assert_eq!(
            decode_message(b"%0Atest%20with%20whitespace%0D%0Aand%20Unicode%20BMP%20%E2%98%BA%20and%20non-BMP%20%F0%9F%98%88%0A"),
            conformance
        );
    }

    #[test]
    fn message_decoding_is_lenient() {
        assert_eq!(decode_message(b"50%"), "50%");
        assert_eq!(decode_message(b"%zz"), "%zz");
        assert_eq!(decode_message(b"%E2%98"), "\u{FFFD}");
        assert_eq!(decode_message(b"user%20not%20found"), "user not found");
    }

    fn bad_request_status() -> Vec<u8> {
        // PROTOCOLS.md §8.5, the 94-byte google.rpc.Status.
        let mut v = vec![0x08, 0x03, 0x12, 0x10];
        v.extend_from_slice(b"name is required");
        v.extend_from_slice(&[0x1a, 0x48, 0x0a, 0x29]);
        v.extend_from_slice(b"type.googleapis.com/google.rpc.BadRequest");
        v.extend_from_slice(&[0x12, 0x1b, 0x0a, 0x19, 0x0a, 0x04]);
        v.extend_from_slice(b"name");
        v.extend_from_slice(&[0x12, 0x11]);
        v.extend_from_slice(b"must not be empty");
        v
    }

    #[test]
    fn details_vector_parses() {
        let raw = bad_request_status();
        assert_eq!(raw.len(), 94);
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_STATUS, HeaderValue::from_static("3"));
        headers.insert(GRPC_MESSAGE, HeaderValue::from_static("name is required"));
        headers.insert(
            GRPC_STATUS_DETAILS_BIN,
            HeaderValue::from_static("CAMSEG5hbWUgaXMgcmVxdWlyZWQaSAopdHlwZS5nb29nbGVhcGlzLmNvbS9nb29nbGUucnBjLkJhZFJlcXVlc3QSGwoZCgRuYW1lEhFtdXN0IG5vdCBiZSBlbXB0eQ"),
        );
        let status = Status::from_headers(&headers).unwrap_or_else(Status::ok);
        assert_eq!(status.code, Code::InvalidArgument);
        assert_eq!(status.details.as_deref(), Some(&raw[..]));
        let rpc = status.rpc_status().unwrap_or_default();
        assert_eq!(rpc.details.len(), 1);
        assert_eq!(
            rpc.details[0].type_url,
            "type.googleapis.com/google.rpc.BadRequest"
        );
        let mut out = HeaderMap::new();
        status.write_headers(&mut out);
        assert_eq!(
            out.get(GRPC_STATUS_DETAILS_BIN).map(|v| v.as_bytes()),
            headers.get(GRPC_STATUS_DETAILS_BIN).map(|v| v.as_bytes())
        );
    }

    #[test]
    fn details_that_contradict_the_status_are_rewritten() {
        let raw = bad_request_status();
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_STATUS, HeaderValue::from_static("5"));
        headers.insert(GRPC_MESSAGE, HeaderValue::from_static("gone"));
        let v = encode_binary_header(&raw);
        headers.insert(
            GRPC_STATUS_DETAILS_BIN,
            HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("")),
        );
        let status = Status::from_headers(&headers).unwrap_or_else(Status::ok);
        let rpc = status.rpc_status().unwrap_or_default();
        assert_eq!(rpc.code, 5);
        assert_eq!(rpc.message, "gone");
        assert_eq!(rpc.details.len(), 1);
    }

    #[test]
    fn garbage_details_and_status_do_not_fail() {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_STATUS, HeaderValue::from_static("abc"));
        let status = Status::from_headers(&headers).unwrap_or_else(Status::ok);
        assert_eq!(status.code, Code::Unknown);
        headers.insert(GRPC_STATUS, HeaderValue::from_static("13"));
        headers.insert(GRPC_STATUS_DETAILS_BIN, HeaderValue::from_static("!!!"));
        let status = Status::from_headers(&headers).unwrap_or_else(Status::ok);
        assert_eq!(status.code, Code::Internal);
        assert_eq!(status.details, None);
        assert!(Status::from_headers(&HeaderMap::new()).is_none());
    }

    #[test]
    fn ok_status_never_carries_details() {
        let raw = bad_request_status();
        assert_eq!(normalize_details(&raw, Code::Ok, ""), None);
    }
}
