//! Connect errors: code ⇄ HTTP status, the JSON error body and the end-stream message.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use crate::protocol::grpc::{Code, Status};

/// The HTTP status of a unary Connect error (the 2024 table).
pub fn http_status(code: Code) -> StatusCode {
    let n = match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unauthenticated => 401,
    };
    StatusCode::from_u16(n).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The Connect error object for a status: `{code, message?, details?}`. Details carry the
/// type name without its URL prefix and the value as unpadded base64.
pub fn error_json(status: &Status) -> Value {
    let mut obj = Map::new();
    obj.insert("code".into(), Value::from(status.code.connect_name()));
    if !status.message.is_empty() {
        obj.insert("message".into(), Value::from(status.message.clone()));
    }
    if let Some(rpc) = status.rpc_status() {
        let details: Vec<Value> = rpc
            .details
            .iter()
            .map(|any| {
                let ty = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
                json!({"type": ty, "value": STANDARD_NO_PAD.encode(&any.value)})
            })
            .collect();
        if !details.is_empty() {
            obj.insert("details".into(), Value::Array(details));
        }
    }
    Value::Object(obj)
}

/// The unary error body.
pub fn error_body(status: &Status) -> Bytes {
    Bytes::from(error_json(status).to_string())
}

/// Metadata as the JSON object `{name: [values…]}` used by end-stream messages.
pub fn metadata_json(metadata: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for name in metadata.keys() {
        let values: Vec<Value> = metadata
            .get_all(name)
            .iter()
            .map(|v| Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        out.insert(name.as_str().to_owned(), Value::Array(values));
    }
    out
}

/// The JSON of the end-stream message: `{}` on success, `{"error": …, "metadata": …}`.
pub fn end_stream_json(status: &Status, metadata: &HeaderMap) -> Bytes {
    let mut obj = Map::new();
    if status.code != Code::Ok {
        obj.insert("error".into(), error_json(status));
    }
    if !metadata.is_empty() {
        obj.insert("metadata".into(), Value::Object(metadata_json(metadata)));
    }
    Bytes::from(Value::Object(obj).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::grpc::status::{details_bytes, prost_types_any::Any};
    use http::HeaderValue;

    #[test]
    fn http_status_table() {
        let table = [
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn error_json_vector() {
        // PROTOCOLS.md §8.5 without debug
        let bad_request: Vec<u8> = {
            let mut v = vec![0x0a, 0x19, 0x0a, 0x04];
            v.extend_from_slice(b"name");
            v.extend_from_slice(&[0x12, 0x11]);
            v.extend_from_slice(b"must not be empty");
            v
        };
        let status = Status {
            code: Code::InvalidArgument,
            message: "name is required".into(),
            details: Some(details_bytes(
                Code::InvalidArgument,
                "name is required",
                vec![Any {
                    type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
                    value: Bytes::from(bad_request),
                }],
            )),
        };
        assert_eq!(
            &error_body(&status)[..],
            br#"{"code":"invalid_argument","message":"name is required","details":[{"type":"google.rpc.BadRequest","value":"ChkKBG5hbWUSEW11c3Qgbm90IGJlIGVtcHR5"}]}"#
        );
    }

    #[test]
    fn end_stream_vectors() {
        // PROTOCOLS.md §8.6
        assert_eq!(
            &end_stream_json(&Status::ok(), &HeaderMap::new())[..],
            b"{}"
        );
        let mut md = HeaderMap::new();
        md.insert("acme-operation-cost", HeaderValue::from_static("237"));
        let body = end_stream_json(&Status::new(Code::Unavailable, "overloaded"), &md);
        assert_eq!(
            &body[..],
            br#"{"error":{"code":"unavailable","message":"overloaded"},"metadata":{"acme-operation-cost":["237"]}}"#
        );
        assert_eq!(body.len(), 0x62);
    }
}
