//! REST ⇄ gRPC from `google.api.http` rules (google/api/http.proto): which rule a request
//! matches (`router`, built per schema by `rules` from `template`s), the request message made
//! of its path, query and body (`message`), and the shapes of answers: JSON bodies, errors as
//! `{"code", "message", "details"}` with the usual HTTP statuses, server streams as NDJSON or
//! Server-Sent Events. The OpenAPI document of a schema is in `openapi`.

pub(crate) mod message;
pub(crate) mod openapi;
pub(crate) mod router;
pub(crate) mod rules;
pub(crate) mod template;

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use prost_reflect::{DescriptorPool, FieldDescriptor};
use serde_json::{json, Map, Value};

pub(crate) use router::{Lookup, Router, Verb};

use crate::protocol::grpc::{Code, Status};
use crate::protocol::json::{Method, Schema};

/// `content-type` of JSON answers.
pub const JSON: &str = "application/json";
/// `content-type` of server streams by default: one JSON message per line.
pub const NDJSON: &str = "application/x-ndjson";
/// `content-type` of server streams for callers that accept it.
pub const EVENT_STREAM: &str = "text/event-stream";

/// How a REST call's server stream is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Newline-delimited JSON.
    Ndjson,
    /// Server-Sent Events: `data: <json>` per message.
    EventStream,
}

impl Mode {
    /// Server-Sent Events when the caller's `accept` names `text/event-stream`.
    pub fn from_accept(accept: Option<&HeaderValue>) -> Mode {
        let sse = accept.is_some_and(|v| {
            v.as_bytes()
                .windows(EVENT_STREAM.len())
                .any(|w| w.eq_ignore_ascii_case(EVENT_STREAM.as_bytes()))
        });
        if sse {
            Mode::EventStream
        } else {
            Mode::Ndjson
        }
    }

    /// The streaming `content-type`.
    pub fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Mode::Ndjson => NDJSON,
            Mode::EventStream => EVENT_STREAM,
        })
    }

    /// What goes before each message of a stream.
    pub fn prefix(self) -> &'static [u8] {
        match self {
            Mode::Ndjson => b"",
            Mode::EventStream => b"data: ",
        }
    }

    /// What goes after each message of a stream.
    pub fn suffix(self) -> &'static [u8] {
        match self {
            Mode::Ndjson => b"\n",
            Mode::EventStream => b"\n\n",
        }
    }

    /// The last entry of a stream that failed: `{"error": {…}}` as a line, or as an `error`
    /// event.
    pub(crate) fn error_entry(self, status: &Status, schema: Option<&Schema>) -> Bytes {
        let body = json!({ "error": error_json(status, schema) }).to_string();
        let mut out = Vec::with_capacity(body.len() + 24);
        if self == Mode::EventStream {
            out.extend_from_slice(b"event: error\n");
        }
        out.extend_from_slice(self.prefix());
        out.extend_from_slice(body.as_bytes());
        out.extend_from_slice(self.suffix());
        Bytes::from(out)
    }
}

/// Where the request message's fields come from besides the path.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// No body: the query.
    None,
    /// `body: "*"`: every field not in the path.
    All,
    /// `body: "<field>"`: that top-level field; the rest from the query.
    Field(FieldDescriptor),
}

/// One HTTP binding of a method: a rule or one of its `additional_bindings`.
#[derive(Debug)]
pub(crate) struct Binding {
    pub(crate) method: Method,
    pub(crate) verb: Verb,
    /// The template as written in the rule.
    pub(crate) pattern: String,
    pub(crate) template: template::Template,
    pub(crate) body: Body,
    pub(crate) response_body: Option<FieldDescriptor>,
    /// The fields of the template's variables, in the same order.
    pub(crate) variables: Vec<Vec<FieldDescriptor>>,
    /// 0 for the main rule, then one per additional binding.
    pub(crate) index: usize,
}

impl Router {
    /// Compiles the rules of every method of a schema.
    pub(crate) fn from_methods(
        pool: &DescriptorPool,
        methods: &HashMap<Box<str>, Method>,
    ) -> Router {
        Router::new(rules::bindings(pool, methods))
    }
}

/// The HTTP status of an error (the mapping of `google.rpc.Code`, as grpc-gateway and Envoy's
/// transcoder use it).
pub fn http_status(code: Code) -> StatusCode {
    crate::protocol::connect::error::http_status(code)
}

/// The error object: `{"code": <number>, "message": …, "details": [Any…]}`. Details of types
/// the schema (or the bundled `google.rpc` and well-known types) knows are shown as ProtoJSON
/// `Any`s; others as `{"@type": …, "value": "<base64>"}`.
pub(crate) fn error_json(status: &Status, schema: Option<&Schema>) -> Value {
    let details: Vec<Value> = status
        .rpc_status()
        .map(|rpc| {
            rpc.details
                .iter()
                .map(|any| detail(&any.type_url, &any.value, schema))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "code": status.code.as_i32(),
        "message": status.message,
        "details": details,
    })
}

fn detail(type_url: &str, value: &[u8], schema: Option<&Schema>) -> Value {
    let known = schema
        .and_then(|s| s.detail_json(type_url, value))
        .or_else(|| Schema::bundled().detail_json(type_url, value));
    let mut obj = Map::new();
    obj.insert("@type".into(), Value::from(type_url));
    match known {
        Some(Value::Object(fields)) => obj.extend(fields),
        // Types with a special JSON form (Duration, wrappers…) sit under "value".
        Some(special) => {
            obj.insert("value".into(), special);
        }
        None => {
            obj.insert("value".into(), Value::from(STANDARD.encode(value)));
        }
    }
    Value::Object(obj)
}

/// The whole error body.
pub(crate) fn error_body(status: &Status, schema: Option<&Schema>) -> Bytes {
    Bytes::from(error_json(status, schema).to_string())
}

#[cfg(test)]
mod tests_rules;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::protocol::grpc::status::{details_bytes, prost_types_any::Any};

    fn with_details(details: Vec<Any>) -> Status {
        Status {
            code: Code::InvalidArgument,
            message: "bad".into(),
            details: Some(details_bytes(Code::InvalidArgument, "bad", details)),
        }
    }

    #[test]
    fn errors_show_known_details_as_json_and_others_as_base64() {
        let bad_request: Vec<u8> = {
            let mut v = vec![0x0a, 0x19, 0x0a, 0x04];
            v.extend_from_slice(b"name");
            v.extend_from_slice(&[0x12, 0x11]);
            v.extend_from_slice(b"must not be empty");
            v
        };
        let status = with_details(vec![
            Any {
                type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
                value: Bytes::from(bad_request),
            },
            Any {
                type_url: "type.googleapis.com/no.Such".into(),
                value: Bytes::from_static(&[1, 2, 3]),
            },
            Any {
                type_url: "type.googleapis.com/google.protobuf.Duration".into(),
                value: Bytes::from_static(&[0x08, 0x02]),
            },
        ]);
        let v = error_json(&status, None);
        assert_eq!(
            v,
            json!({
                "code": 3,
                "message": "bad",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.BadRequest",
                     "fieldViolations": [{"field": "name", "description": "must not be empty"}]},
                    {"@type": "type.googleapis.com/no.Such", "value": "AQID"},
                    {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "2s"},
                ]
            })
        );
        let plain = error_json(&Status::new(Code::NotFound, "gone"), None);
        assert_eq!(plain, json!({"code": 5, "message": "gone", "details": []}));
    }

    #[test]
    fn stream_modes() {
        assert_eq!(Mode::from_accept(None), Mode::Ndjson);
        let sse = HeaderValue::from_static("text/event-stream");
        assert_eq!(Mode::from_accept(Some(&sse)), Mode::EventStream);
        let both = HeaderValue::from_static("application/json, Text/Event-Stream;q=0.5");
        assert_eq!(Mode::from_accept(Some(&both)), Mode::EventStream);
        let e = Mode::EventStream.error_entry(&Status::new(Code::Aborted, "x"), None);
        assert_eq!(
            &e[..],
            b"event: error\ndata: {\"error\":{\"code\":10,\"message\":\"x\",\"details\":[]}}\n\n"
        );
        let e = Mode::Ndjson.error_entry(&Status::new(Code::Aborted, "x"), None);
        assert_eq!(
            &e[..],
            b"{\"error\":{\"code\":10,\"message\":\"x\",\"details\":[]}}\n"
        );
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
    }
}
