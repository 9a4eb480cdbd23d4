//! The request message of a REST call, from the body (as the rule says), then the path
//! variables, then the query parameters; and the JSON of a response (or of its
//! `response_body` field).
//!
//! Path variables: a single-segment variable is fully percent-decoded; a multi-segment one
//! (`{name=shelves/*}`, `{path=**}`) is decoded except `%2F`, which would be taken for a
//! separator (google/api/http.proto). Query parameters are form-encoded (`+` is a space);
//! their names are field paths (`filter.author`) by proto or JSON name; a repeated field takes
//! each occurrence; well-known types take their JSON string forms (`2024-01-01T00:00:00Z`,
//! `1.5s`, `a,b`) and wrappers their value.

use base64::Engine as _;
use bytes::Bytes;
use percent_encoding::percent_decode;
use prost::Message as _;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};

use super::rules::find_field;
use super::template::Segment;
use super::{Binding, Body};
use crate::protocol::grpc::{Code, Status};
use crate::protocol::json::{self, write};

fn invalid(message: String) -> Status {
    Status::new(Code::InvalidArgument, message)
}

/// The encoded request message. `segments` are the raw path segments the binding matched;
/// `query` the raw query string.
pub(crate) fn request(
    binding: &Binding,
    segments: &[String],
    query: Option<&str>,
    body: &[u8],
    ignore_unknown_fields: bool,
) -> Result<Bytes, Status> {
    let input = binding.method.input();
    let empty = body.iter().all(u8::is_ascii_whitespace);
    let mut message = match &binding.body {
        Body::None => DynamicMessage::new(input.clone()),
        Body::All | Body::Field(_) if empty => DynamicMessage::new(input.clone()),
        Body::All => {
            json::parse_message(input, body, ignore_unknown_fields, Code::InvalidArgument)?
        }
        Body::Field(field) => {
            // The body is the field's value: parsed as `{"<field>": <body>}`, so every kind of
            // field (messages, lists, maps, well-known types) reads the same way.
            let mut wrapped = Vec::with_capacity(body.len() + field.name().len() + 8);
            wrapped.extend_from_slice(b"{\"");
            wrapped.extend_from_slice(field.name().as_bytes());
            wrapped.extend_from_slice(b"\":");
            wrapped.extend_from_slice(body);
            wrapped.extend_from_slice(b"}");
            json::parse_message(
                input,
                &wrapped,
                ignore_unknown_fields,
                Code::InvalidArgument,
            )?
        }
    };
    for (variable, fields) in binding.template.variables.iter().zip(&binding.variables) {
        let end = if binding.template.segments.get(variable.end - 1) == Some(&Segment::Rest) {
            segments.len()
        } else {
            variable.end
        };
        let raw = segments
            .get(variable.start..end)
            .map(|s| s.join("/"))
            .unwrap_or_default();
        let value = if variable.is_single_segment(&binding.template) {
            decode_all(raw.as_bytes())
        } else {
            decode_keeping_slashes(&raw)
        };
        let name = variable.field_path.join(".");
        let value = String::from_utf8(value)
            .map_err(|_| invalid(format!("path variable {name:?} is not valid UTF-8")))?;
        set_path(&mut message, fields, &value, false)
            .map_err(|e| invalid(format!("path variable {name:?}: {e}")))?;
    }
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        apply_query(binding, &mut message, query, ignore_unknown_fields)?;
    }
    Ok(Bytes::from(message.encode_to_vec()))
}

fn apply_query(
    binding: &Binding,
    message: &mut DynamicMessage,
    query: &str,
    ignore_unknown_fields: bool,
) -> Result<(), Status> {
    let input = binding.method.input().clone();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = String::from_utf8(decode_form(name))
            .map_err(|_| invalid("a query parameter name is not valid UTF-8".to_owned()))?;
        let value = String::from_utf8(decode_form(value))
            .map_err(|_| invalid(format!("query parameter {name:?} is not valid UTF-8")))?;
        let fields = match query_field(binding, &input, &name) {
            Ok(fields) => fields,
            Err(_) if ignore_unknown_fields => continue,
            Err(why) => return Err(invalid(format!("query parameter {name:?}: {why}"))),
        };
        set_path(message, &fields, &value, true)
            .map_err(|e| invalid(format!("query parameter {name:?}: {e}")))?;
    }
    Ok(())
}

/// The fields a query parameter names, or why it names none that the query may set.
fn query_field(
    binding: &Binding,
    input: &MessageDescriptor,
    name: &str,
) -> Result<Vec<FieldDescriptor>, String> {
    if matches!(binding.body, Body::All) {
        return Err("unknown: every field of this call comes from the path and the body".into());
    }
    let mut fields = Vec::new();
    let mut desc = input.clone();
    let parts: Vec<&str> = name.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let field = find_field(&desc, part)
            .ok_or_else(|| format!("unknown: {} has no field {part:?}", desc.full_name()))?;
        let last = i + 1 == parts.len();
        if !last {
            match field.kind() {
                Kind::Message(m) if !field.is_list() && !field.is_map() && !is_scalar_wkt(&m) => {
                    desc = m
                }
                _ => return Err(format!("unknown: {:?} has no fields to set", field.name())),
            }
        }
        fields.push(field);
    }
    let numbers: Vec<u32> = fields.iter().map(FieldDescriptor::number).collect();
    if let Body::Field(body) = &binding.body {
        if numbers.first() == Some(&body.number()) {
            return Err(format!("{:?} comes from the request body", body.name()));
        }
    }
    for bound in &binding.variables {
        let bound: Vec<u32> = bound.iter().map(FieldDescriptor::number).collect();
        if numbers.starts_with(&bound) || bound.starts_with(&numbers) {
            return Err("that field comes from the path".to_owned());
        }
    }
    Ok(fields)
}

/// Sets the field at the end of `fields` from text, creating the messages on the way.
/// `append`: a repeated field gets one more element (query), else it is an error.
fn set_path(
    message: &mut DynamicMessage,
    fields: &[FieldDescriptor],
    text: &str,
    append: bool,
) -> Result<(), String> {
    let Some((leaf, parents)) = fields.split_last() else {
        return Err("no field".into());
    };
    let mut current = message;
    for parent in parents {
        let Value::Message(next) = current.get_field_mut(parent) else {
            return Err(format!("{:?} is not a message", parent.name()));
        };
        current = next;
    }
    if leaf.is_map() {
        return Err(format!("{:?} is a map", leaf.name()));
    }
    let kind = leaf.kind();
    if leaf.is_list() {
        if !append {
            return Err(format!("{:?} is repeated", leaf.name()));
        }
        if matches!(&kind, Kind::Message(m) if !is_scalar_wkt(m)) {
            return Err(format!("{:?} is a repeated message", leaf.name()));
        }
        let value = parse_value(&kind, text)?;
        if let Value::List(list) = current.get_field_mut(leaf) {
            list.push(value);
        }
        return Ok(());
    }
    let value = parse_value(&kind, text)?;
    current.set_field(leaf, value);
    Ok(())
}

/// Well-known message types written as a JSON string or scalar (so one path or query value
/// sets them).
pub(super) fn is_scalar_wkt(desc: &MessageDescriptor) -> bool {
    matches!(
        desc.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

/// A field value from its text form.
fn parse_value(kind: &Kind, text: &str) -> Result<Value, String> {
    let bad = |what: &str| format!("{text:?} is not {what}");
    Ok(match kind {
        Kind::String => Value::String(text.to_owned()),
        Kind::Bytes => Value::Bytes(Bytes::from(
            decode_base64(text).ok_or_else(|| bad("base64"))?,
        )),
        Kind::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(bad("a boolean")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(text.parse().map_err(|_| bad("a 32-bit integer"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(text.parse().map_err(|_| bad("a 64-bit integer"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => Value::U32(
            text.parse()
                .map_err(|_| bad("an unsigned 32-bit integer"))?,
        ),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(
            text.parse()
                .map_err(|_| bad("an unsigned 64-bit integer"))?,
        ),
        Kind::Float => Value::F32(parse_float(text).ok_or_else(|| bad("a number"))? as f32),
        Kind::Double => Value::F64(parse_float(text).ok_or_else(|| bad("a number"))?),
        Kind::Enum(e) => {
            let number = match e.get_value_by_name(text) {
                Some(v) => v.number(),
                None => text
                    .parse::<i32>()
                    .map_err(|_| format!("{text:?} is not a value of {}", e.full_name()))?,
            };
            Value::EnumNumber(number)
        }
        Kind::Message(m) => Value::Message(parse_wkt(m, text)?),
    })
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        t => t.parse().ok().filter(|f: &f64| f.is_finite()),
    }
}

fn parse_wkt(desc: &MessageDescriptor, text: &str) -> Result<DynamicMessage, String> {
    match desc.full_name() {
        "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask" => {
            DynamicMessage::deserialize(desc.clone(), serde_json::Value::from(text))
                .map_err(|e| format!("{text:?} is not a {}: {e}", desc.name()))
        }
        _ if is_scalar_wkt(desc) => {
            let field = desc
                .get_field_by_name("value")
                .ok_or_else(|| format!("{} has no value field", desc.full_name()))?;
            let value = parse_value(&field.kind(), text)?;
            let mut message = DynamicMessage::new(desc.clone());
            message.set_field(&field, value);
            Ok(message)
        }
        name => Err(format!(
            "{name} is a message: set its fields one by one (field.subfield=value)"
        )),
    }
}

/// Standard or URL-safe base64, padded or not.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let t = text.trim_end_matches('=');
    if t.contains(['-', '_']) {
        URL_SAFE_NO_PAD.decode(t).ok()
    } else {
        STANDARD_NO_PAD.decode(t).ok()
    }
    .or_else(|| STANDARD.decode(text).ok())
    .or_else(|| URL_SAFE.decode(text).ok())
}

fn decode_all(raw: &[u8]) -> Vec<u8> {
    percent_decode(raw).collect()
}

/// Percent-decodes everything but `%2F` / `%2f`.
fn decode_keeping_slashes(raw: &str) -> Vec<u8> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b'/') => {
                out.extend_from_slice(&bytes[i..i + 3]);
                i += 3;
            }
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, then percent escapes.
fn decode_form(raw: &str) -> Vec<u8> {
    if raw.contains('+') {
        decode_all(raw.replace('+', " ").as_bytes())
    } else {
        decode_all(raw.as_bytes())
    }
}

/// The JSON of a response message, or of its `field` when the rule names a `response_body`,
/// appended to `out`.
pub(crate) fn response_json(
    output: &MessageDescriptor,
    field: Option<&FieldDescriptor>,
    proto: Bytes,
    out: &mut Vec<u8>,
) -> Result<(), Status> {
    let message = DynamicMessage::decode(output.clone(), proto).map_err(|e| {
        Status::new(
            Code::Internal,
            format!("invalid protobuf for {}: {e}", output.full_name()),
        )
    })?;
    let written = match field {
        None => write::message(out, &message),
        Some(field) => write::field_value(out, field, &message.get_field(field)),
    };
    written.map_err(|e| {
        Status::new(
            Code::Internal,
            format!("cannot write {} as JSON: {e}", output.full_name()),
        )
    })
}
