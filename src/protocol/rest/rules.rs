//! Reading `google.api.http` rules from method options (with prost-reflect: the rule is an
//! extension of `google.protobuf.MethodOptions`) and checking them against the messages.
//! A rule that does not fit its method is left out with a warning; the others still serve.

use std::collections::HashMap;

use prost::Message as _;
use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor, Value};

use super::router::Verb;
use super::template;
use super::{Binding, Body};
use crate::protocol::json::Method;

/// The extension's full name.
const HTTP_EXTENSION: &str = "google.api.http";

/// `google.api.HttpRule`, as much as is served.
#[derive(Clone, PartialEq, prost::Message)]
struct HttpRule {
    #[prost(oneof = "Pattern", tags = "2, 3, 4, 5, 6, 8")]
    pattern: Option<Pattern>,
    #[prost(string, tag = "7")]
    body: String,
    #[prost(message, repeated, tag = "11")]
    additional_bindings: Vec<HttpRule>,
    #[prost(string, tag = "12")]
    response_body: String,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Pattern {
    #[prost(string, tag = "2")]
    Get(String),
    #[prost(string, tag = "3")]
    Put(String),
    #[prost(string, tag = "4")]
    Post(String),
    #[prost(string, tag = "5")]
    Delete(String),
    #[prost(string, tag = "6")]
    Patch(String),
    #[prost(message, tag = "8")]
    Custom(CustomPattern),
}

#[derive(Clone, PartialEq, prost::Message)]
struct CustomPattern {
    #[prost(string, tag = "1")]
    kind: String,
    #[prost(string, tag = "2")]
    path: String,
}

/// The bindings of every method of a schema, methods in path order, each method's main rule
/// before its additional bindings.
pub(crate) fn bindings(pool: &DescriptorPool, methods: &HashMap<Box<str>, Method>) -> Vec<Binding> {
    let Some(extension) = pool.get_extension_by_name(HTTP_EXTENSION) else {
        return Vec::new();
    };
    let mut sorted: Vec<&Method> = methods.values().collect();
    sorted.sort_by(|a, b| a.path().cmp(b.path()));
    let mut out = Vec::new();
    for method in sorted {
        let options = method.descriptor().options();
        if !options.has_extension(&extension) {
            continue;
        }
        let Value::Message(rule) = options.get_extension(&extension).into_owned() else {
            continue;
        };
        let Ok(rule) = HttpRule::decode(rule.encode_to_vec().as_slice()) else {
            continue;
        };
        let mut rules = vec![rule.clone()];
        // Nested bindings may not nest further; deeper ones are ignored.
        rules.extend(rule.additional_bindings.iter().cloned());
        for (index, r) in rules.into_iter().enumerate() {
            match binding(method, &r, index) {
                Ok(b) => out.push(b),
                Err(e) => tracing::warn!(
                    method = method.path(),
                    error = %e,
                    "google.api.http rule left out"
                ),
            }
        }
    }
    out
}

fn binding(method: &Method, rule: &HttpRule, index: usize) -> Result<Binding, String> {
    let (verb, pattern) = match &rule.pattern {
        Some(Pattern::Get(p)) => (Verb::One(http::Method::GET), p),
        Some(Pattern::Put(p)) => (Verb::One(http::Method::PUT), p),
        Some(Pattern::Post(p)) => (Verb::One(http::Method::POST), p),
        Some(Pattern::Delete(p)) => (Verb::One(http::Method::DELETE), p),
        Some(Pattern::Patch(p)) => (Verb::One(http::Method::PATCH), p),
        Some(Pattern::Custom(c)) if c.kind == "*" => (Verb::Any, &c.path),
        Some(Pattern::Custom(c)) => {
            let m = http::Method::from_bytes(c.kind.as_bytes())
                .map_err(|_| format!("invalid custom method {:?}", c.kind))?;
            (Verb::One(m), &c.path)
        }
        None => return Err("no pattern".to_owned()),
    };
    let template = template::parse(pattern)?;
    let input = method.input();
    let variables = template
        .variables
        .iter()
        .map(|v| {
            let path = field_path(input, &v.field_path)?;
            match path.last() {
                Some(f) if f.is_list() || f.is_map() => Err(format!(
                    "path variable {:?} is a repeated or map field",
                    v.field_path.join(".")
                )),
                Some(f) if matches!(f.kind(), Kind::Message(_)) => Err(format!(
                    "path variable {:?} is a message field",
                    v.field_path.join(".")
                )),
                _ => Ok(path),
            }
        })
        .collect::<Result<Vec<_>, String>>()?;
    let body = match rule.body.as_str() {
        "" => Body::None,
        "*" => Body::All,
        name => Body::Field(top_level(input, name, "body")?),
    };
    let response_body = match rule.response_body.as_str() {
        "" => None,
        name => Some(top_level(method.output(), name, "response_body")?),
    };
    Ok(Binding {
        method: method.clone(),
        verb,
        pattern: pattern.clone(),
        template,
        body,
        response_body,
        variables,
        index,
    })
}

/// Resolves `a.b.c` through singular message fields (proto or JSON names).
pub(crate) fn field_path(
    desc: &MessageDescriptor,
    names: &[String],
) -> Result<Vec<FieldDescriptor>, String> {
    let mut out = Vec::with_capacity(names.len());
    let mut current = desc.clone();
    for (i, name) in names.iter().enumerate() {
        let field = find_field(&current, name).ok_or_else(|| {
            format!(
                "{} has no field {name:?} (in {:?})",
                current.full_name(),
                names.join(".")
            )
        })?;
        if i + 1 < names.len() {
            match field.kind() {
                Kind::Message(m) if !field.is_list() && !field.is_map() => current = m,
                _ => {
                    return Err(format!(
                        "{:?} is not a singular message field (in {:?})",
                        field.name(),
                        names.join(".")
                    ))
                }
            }
        }
        out.push(field);
    }
    Ok(out)
}

/// A field by proto name or JSON name.
pub(crate) fn find_field(desc: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    desc.get_field_by_name(name)
        .or_else(|| desc.get_field_by_json_name(name))
}

fn top_level(desc: &MessageDescriptor, name: &str, what: &str) -> Result<FieldDescriptor, String> {
    desc.get_field_by_name(name)
        .ok_or_else(|| format!("{what}: {} has no field {name:?}", desc.full_name()))
}
