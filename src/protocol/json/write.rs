//! Canonical ProtoJSON of a decoded message, written straight into a byte buffer.
//!
//! The output is the same as prost-reflect's serializer with [`super::serialize_options`]
//! and sorted maps (the unit tests compare the two), but large values cost less: `bytes`
//! fields are base64-encoded with SIMD straight into the output, with no escape scan (base64
//! needs no escaping), where prost-reflect encodes them with a scalar encoder through
//! `collect_str`, whose every chunk serde_json scans byte by byte for characters to escape.
//! Well-known types (their special JSON forms) and messages with extension fields are handed
//! to prost-reflect.

use std::cmp::Ordering;

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, ReflectMessage as _, Value};
use serde::Serializer as _;

use super::{serialize_options, sorted};

/// Writes `message` as JSON.
pub(crate) fn message(out: &mut Vec<u8>, message: &DynamicMessage) -> Result<(), String> {
    let desc = message.descriptor();
    if desc.full_name().starts_with("google.protobuf.") || message.extensions().next().is_some() {
        return delegate(out, message);
    }
    out.push(b'{');
    let mut first = true;
    for (field, value) in message.fields() {
        if !first {
            out.push(b',');
        }
        first = false;
        key(out, field.json_name());
        field_value(out, &field, value)?;
    }
    out.push(b'}');
    Ok(())
}

/// Writes the value of `field` (a whole list or map for repeated and map fields).
pub(crate) fn field_value(
    out: &mut Vec<u8>,
    field: &FieldDescriptor,
    value: &Value,
) -> Result<(), String> {
    let kind = field.kind();
    match value {
        Value::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                single(out, &kind, item)?;
            }
            out.push(b']');
            Ok(())
        }
        Value::Map(entries) => {
            let value_kind = match &kind {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                _ => return Err(format!("map field {} without an entry type", field.name())),
            };
            let mut keys: Vec<(String, &Value)> =
                entries.iter().map(|(k, v)| (map_key(k), v)).collect();
            keys.sort_by(|a, b| compare_keys(&a.0, &b.0));
            out.push(b'{');
            for (i, (k, v)) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, k);
                out.push(b':');
                single(out, &value_kind, v)?;
            }
            out.push(b'}');
            Ok(())
        }
        v => single(out, &kind, v),
    }
}

/// One value that is not a list or map.
fn single(out: &mut Vec<u8>, kind: &Kind, value: &Value) -> Result<(), String> {
    match value {
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::I32(n) => number(out, |s| s.serialize_i32(*n)),
        Value::U32(n) => number(out, |s| s.serialize_u32(*n)),
        Value::I64(n) => quoted(out, |s| s.serialize_i64(*n)),
        Value::U64(n) => quoted(out, |s| s.serialize_u64(*n)),
        Value::F32(f) if f.is_finite() => number(out, |s| s.serialize_f32(*f)),
        Value::F64(f) if f.is_finite() => number(out, |s| s.serialize_f64(*f)),
        Value::F32(f) => non_finite(out, f64::from(*f)),
        Value::F64(f) => non_finite(out, *f),
        Value::String(s) => string(out, s),
        Value::Bytes(b) => {
            out.push(b'"');
            base64_simd::STANDARD.encode_append(b, out);
            out.push(b'"');
        }
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) if e.full_name() == "google.protobuf.NullValue" => {
                out.extend_from_slice(b"null")
            }
            Kind::Enum(e) => match e.get_value(*n) {
                Some(v) => string(out, v.name()),
                None => number(out, |s| s.serialize_i32(*n)),
            },
            _ => number(out, |s| s.serialize_i32(*n)),
        },
        Value::Message(m) => message(out, m)?,
        Value::List(_) | Value::Map(_) => {
            return Err("a list or map inside a list or map".to_owned());
        }
    }
    Ok(())
}

/// `"name":`; names that need escaping go through serde_json.
fn key(out: &mut Vec<u8>, name: &str) {
    string(out, name);
    out.push(b':');
}

/// A JSON string; plain text is copied, anything with characters to escape goes through
/// serde_json's escaping.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::Serializer::new(&mut *out).serialize_str(s);
    }
}

/// A number as serde_json writes it (the same digits prost-reflect's output has).
fn number(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut serde_json::Serializer<&mut Vec<u8>>) -> serde_json::Result<()>,
) {
    let _ = write(&mut serde_json::Serializer::new(out));
}

/// A 64-bit integer, as a string.
fn quoted(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut serde_json::Serializer<&mut Vec<u8>>) -> serde_json::Result<()>,
) {
    out.push(b'"');
    number(out, write);
    out.push(b'"');
}

fn non_finite(out: &mut Vec<u8>, f: f64) {
    out.extend_from_slice(if f.is_nan() {
        b"\"NaN\""
    } else if f > 0.0 {
        b"\"Infinity\""
    } else {
        b"\"-Infinity\""
    });
}

fn map_key(k: &MapKey) -> String {
    match k {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

/// The order of map entries: integer keys numerically, everything else by its text (as
/// [`sorted`] orders them).
fn compare_keys(a: &str, b: &str) -> Ordering {
    match (a.parse::<i128>(), b.parse::<i128>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// prost-reflect's serializer, into the same buffer.
fn delegate(out: &mut Vec<u8>, message: &DynamicMessage) -> Result<(), String> {
    let mut ser = serde_json::Serializer::new(out);
    message
        .serialize_with_options(sorted::Sorted(&mut ser), &serialize_options())
        .map_err(|e| e.to_string())
}
