//! ProtoJSON ⇄ protobuf transcoding with descriptors, for JSON callers of proto-only
//! upstreams (PROTOCOLS.md §6).
//!
//! A [`Schema`] holds the descriptors of the services behind one upstream, loaded from a
//! `FileDescriptorSet` or fetched by server reflection. Each [`Method`] turns request JSON into
//! protobuf bytes and response bytes into canonical ProtoJSON: lowerCamelCase (or `json_name`)
//! keys, 64-bit integers as strings, enums by name, bytes as padded standard base64, default
//! values omitted and the well-known types in their special forms.
//!
//! Descriptor sets often leave out the well-known types (`google/protobuf/*.proto`),
//! `google/rpc/*.proto` and `google/api/*.proto`; those are filled in from bundled copies
//! (`files`), so imports of them always resolve and error details can be shown as JSON.
//! Files are kept as their encoded bytes until the pool is built, so method options keep their
//! `google.api.http` rules, which the REST router (`protocol::rest`) compiles per schema.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};
use prost_types::method_options::IdempotencyLevel;
use prost_types::FileDescriptorProto;

use crate::protocol::grpc::{Code, Status};

/// Descriptors of the services behind an upstream. Cheap to clone (Arc inside).
#[derive(Clone)]
pub struct Schema {
    inner: Arc<SchemaInner>,
}

struct SchemaInner {
    pool: DescriptorPool,
    /// Keyed by path, `/pkg.Service/Method`.
    methods: HashMap<Box<str>, Method>,
    services: Vec<String>,
    /// The `google.api.http` rules of every method, compiled for matching.
    rest: crate::protocol::rest::Router,
    /// The OpenAPI document, made when first asked for.
    openapi: std::sync::OnceLock<Bytes>,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("services", &self.inner.services)
            .field("methods", &self.inner.methods.len())
            .finish()
    }
}

impl Schema {
    /// Loads a serialized `FileDescriptorSet` (`protoc --include_imports
    /// --descriptor_set_out=…`, `buf build -o …`). Options are kept (REST rules live there).
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Schema, String> {
        Schema::from_encoded_files(files::split_set(bytes)?)
    }

    /// Builds a schema from file descriptors in any order. Imports of well-known types,
    /// `google/rpc/*.proto` and `google/api/*.proto` missing from `files` are filled in from
    /// bundled copies; any other missing import is an error. Extension options were dropped
    /// when these files were decoded, so they carry no REST rules.
    pub fn from_file_protos(files: Vec<FileDescriptorProto>) -> Result<Schema, String> {
        let encoded = files
            .into_iter()
            .map(|f| files::EncodedFile {
                name: f.name().to_owned(),
                dependency: f.dependency.clone(),
                bytes: Bytes::from(f.encode_to_vec()),
            })
            .collect();
        Schema::from_encoded_files(encoded)
    }

    /// Builds a schema from encoded file descriptors in any order (see
    /// [`Schema::from_file_protos`]), keeping their options.
    pub(crate) fn from_encoded_files(files: Vec<EncodedFile>) -> Result<Schema, String> {
        let pool = files::build_pool(files)?;
        let mut methods = HashMap::new();
        let mut services = Vec::new();
        for service in pool.services() {
            services.push(service.full_name().to_owned());
            for m in service.methods() {
                let path = format!("/{}/{}", service.full_name(), m.name());
                let proto = m.method_descriptor_proto();
                let no_side_effects = proto
                    .options
                    .as_ref()
                    .is_some_and(|o| o.idempotency_level() == IdempotencyLevel::NoSideEffects);
                let uri = http::uri::PathAndQuery::try_from(path.as_str())
                    .map_err(|e| format!("method {path:?}: {e}"))?;
                let method = Method {
                    inner: Arc::new(MethodInner {
                        path: path.clone(),
                        uri,
                        input: m.input(),
                        output: m.output(),
                        client_streaming: m.is_client_streaming(),
                        server_streaming: m.is_server_streaming(),
                        no_side_effects,
                        descriptor: m.clone(),
                    }),
                };
                methods.insert(path.into_boxed_str(), method);
            }
        }
        let rest = crate::protocol::rest::Router::from_methods(&pool, &methods);
        Ok(Schema {
            inner: Arc::new(SchemaInner {
                pool,
                methods,
                services,
                rest,
                openapi: std::sync::OnceLock::new(),
            }),
        })
    }

    /// A schema of the bundled files only (well-known types, `google.rpc`, `google.api`), for
    /// error details when no schema is known.
    pub(crate) fn bundled() -> &'static Schema {
        static BUNDLED: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
        BUNDLED.get_or_init(|| {
            Schema::from_encoded_files(Vec::new()).unwrap_or_else(|_| Schema {
                inner: Arc::new(SchemaInner {
                    pool: DescriptorPool::new(),
                    methods: HashMap::new(),
                    services: Vec::new(),
                    rest: crate::protocol::rest::Router::default(),
                    openapi: std::sync::OnceLock::new(),
                }),
            })
        })
    }

    /// The compiled `google.api.http` rules.
    pub(crate) fn rest(&self) -> &crate::protocol::rest::Router {
        &self.inner.rest
    }

    /// The OpenAPI document of the schema (JSON), made once.
    pub(crate) fn openapi(&self) -> Bytes {
        self.inner
            .openapi
            .get_or_init(|| crate::protocol::rest::openapi::document(self))
            .clone()
    }

    /// Every method, in no particular order.
    pub(crate) fn methods(&self) -> impl Iterator<Item = &Method> {
        self.inner.methods.values()
    }

    /// The descriptor pool.
    pub(crate) fn pool(&self) -> &DescriptorPool {
        &self.inner.pool
    }

    /// The method at `path`, `/pkg.Service/Method`.
    pub fn method(&self, path: &str) -> Option<Method> {
        self.inner.methods.get(path).cloned()
    }

    /// Full names of the services, e.g. `pkg.Service`.
    pub fn services(&self) -> Vec<String> {
        self.inner.services.clone()
    }

    /// ProtoJSON of an error detail (a `google.protobuf.Any`'s type URL and value) when its
    /// type is known, for Connect's `debug` field.
    pub fn detail_json(&self, type_url: &str, value: &[u8]) -> Option<serde_json::Value> {
        let name = type_url.rsplit('/').next().unwrap_or(type_url);
        let desc = self.inner.pool.get_message_by_name(name)?;
        let message = DynamicMessage::decode(desc, value).ok()?;
        message
            .serialize_with_options(
                sorted::Sorted(serde_json::value::Serializer),
                &serialize_options(),
            )
            .ok()
    }
}

/// One RPC method's shapes. Cheap to clone (Arc inside).
#[derive(Clone)]
pub struct Method {
    inner: Arc<MethodInner>,
}

struct MethodInner {
    path: String,
    /// `path` parsed once, for upstream requests made from other paths (REST).
    uri: http::uri::PathAndQuery,
    descriptor: prost_reflect::MethodDescriptor,
    input: MessageDescriptor,
    output: MessageDescriptor,
    client_streaming: bool,
    server_streaming: bool,
    no_side_effects: bool,
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.inner;
        f.debug_struct("Method")
            .field("path", &m.path)
            .field("input", &m.input.full_name())
            .field("output", &m.output.full_name())
            .field("client_streaming", &m.client_streaming)
            .field("server_streaming", &m.server_streaming)
            .field("no_side_effects", &m.no_side_effects)
            .finish()
    }
}

impl Method {
    /// `/pkg.Service/Method`.
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// The path as an upstream request URI.
    pub(crate) fn uri(&self) -> http::Uri {
        http::Uri::from(self.inner.uri.clone())
    }

    /// The request message type.
    pub(crate) fn input(&self) -> &MessageDescriptor {
        &self.inner.input
    }

    /// The response message type.
    pub(crate) fn output(&self) -> &MessageDescriptor {
        &self.inner.output
    }

    /// The method's descriptor.
    pub(crate) fn descriptor(&self) -> &prost_reflect::MethodDescriptor {
        &self.inner.descriptor
    }

    /// The caller sends a stream of messages.
    pub fn client_streaming(&self) -> bool {
        self.inner.client_streaming
    }

    /// The server sends a stream of messages.
    pub fn server_streaming(&self) -> bool {
        self.inner.server_streaming
    }

    /// `MethodOptions.idempotency_level == NO_SIDE_EFFECTS` (Connect GET is allowed).
    pub fn no_side_effects(&self) -> bool {
        self.inner.no_side_effects
    }

    /// ProtoJSON request message → protobuf bytes. Errors are `InvalidArgument`.
    pub fn request_to_proto(
        &self,
        json: &[u8],
        ignore_unknown_fields: bool,
    ) -> Result<Bytes, Status> {
        json_to_proto(
            &self.inner.input,
            json,
            ignore_unknown_fields,
            Code::InvalidArgument,
        )
    }

    /// Protobuf request bytes → canonical ProtoJSON. Errors are `InvalidArgument`.
    pub fn request_to_json(&self, proto: &[u8]) -> Result<Bytes, Status> {
        proto_to_json(&self.inner.input, proto, Code::InvalidArgument)
    }

    /// Protobuf response bytes → canonical ProtoJSON. Errors are `Internal`.
    pub fn response_to_json(&self, proto: &[u8]) -> Result<Bytes, Status> {
        proto_to_json(&self.inner.output, proto, Code::Internal)
    }

    /// Protobuf response bytes → canonical ProtoJSON, appended to `out`; `bytes` fields are
    /// read without copying and written straight into `out`. Errors are `Internal`.
    pub(crate) fn response_json_into(&self, proto: Bytes, out: &mut Vec<u8>) -> Result<(), Status> {
        let desc = &self.inner.output;
        let message = DynamicMessage::decode(desc.clone(), proto).map_err(|e| {
            Status::new(
                Code::Internal,
                format!("invalid protobuf for {}: {e}", desc.full_name()),
            )
        })?;
        write::message(out, &message).map_err(|e| {
            Status::new(
                Code::Internal,
                format!("cannot write {} as JSON: {e}", desc.full_name()),
            )
        })
    }

    /// ProtoJSON response message → protobuf bytes. Errors are `Internal`.
    pub fn response_to_proto(
        &self,
        json: &[u8],
        ignore_unknown_fields: bool,
    ) -> Result<Bytes, Status> {
        json_to_proto(
            &self.inner.output,
            json,
            ignore_unknown_fields,
            Code::Internal,
        )
    }
}

/// The options that give canonical ProtoJSON.
fn serialize_options() -> SerializeOptions {
    SerializeOptions::new()
        .stringify_64_bit_integers(true)
        .use_enum_numbers(false)
        .use_proto_field_name(false)
        .skip_default_fields(true)
}

fn json_to_proto(
    desc: &MessageDescriptor,
    json: &[u8],
    ignore_unknown_fields: bool,
    code: Code,
) -> Result<Bytes, Status> {
    parse_message(desc, json, ignore_unknown_fields, code)
        .map(|message| Bytes::from(message.encode_to_vec()))
}

/// Parses ProtoJSON into a message of type `desc`; errors (with code `code`) name the field.
pub(crate) fn parse_message(
    desc: &MessageDescriptor,
    json: &[u8],
    ignore_unknown_fields: bool,
    code: Code,
) -> Result<DynamicMessage, Status> {
    if json.is_empty() {
        return Err(Status::new(
            code,
            format!(
                "invalid JSON for {}: empty body is not a JSON object",
                desc.full_name()
            ),
        ));
    }
    let options = DeserializeOptions::new().deny_unknown_fields(!ignore_unknown_fields);
    let mut de = serde_json::Deserializer::from_slice(json);
    let parsed = DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &options)
        .and_then(|message| de.end().map(|()| message));
    parsed.map_err(|e| {
        Status::new(
            code,
            format!(
                "invalid JSON for {}: {}",
                desc.full_name(),
                describe_json_error(desc, json, &options, &e)
            ),
        )
    })
}

/// Describes a parse error, naming the field. Tracking paths costs an allocation per key, so
/// it is done only here, by parsing the input a second time.
fn describe_json_error(
    desc: &MessageDescriptor,
    json: &[u8],
    options: &DeserializeOptions,
    error: &serde_json::Error,
) -> String {
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(&mut de, &mut track);
    let failed = DynamicMessage::deserialize_with_options(desc.clone(), tracked, options).is_err();
    let path = if failed {
        Some(track.path().to_string()).filter(|p| !p.is_empty() && p != "." && !p.contains('?'))
    } else {
        None
    };
    let text = error.to_string();
    match path {
        // The field names the place well enough; drop serde_json's position.
        Some(path) => {
            let suffix = format!(" at line {} column {}", error.line(), error.column());
            let text = text.strip_suffix(&suffix).unwrap_or(&text);
            format!("field {path:?}: {}", tidy_error(text))
        }
        None => tidy_error(&text),
    }
}

/// Rewords the less helpful serde and `std` parse messages.
fn tidy_error(text: &str) -> String {
    // "invalid type: string \"x\", expected a map" → "expected a map, found string \"x\""
    if let Some(rest) = text.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return format!("expected {expected}, found {found}");
        }
    }
    let replacements = [
        ("invalid digit found in string", "expected an integer"),
        (
            "cannot parse integer from empty string",
            "expected an integer, found \"\"",
        ),
        (
            "number too large to fit in target type",
            "integer out of range",
        ),
        (
            "number too small to fit in target type",
            "integer out of range",
        ),
        (
            "out of range integral type conversion attempted",
            "integer out of range",
        ),
        (
            "expected integer value",
            "expected an integer, found a fractional number",
        ),
    ];
    for (from, to) in replacements {
        if let Some(rest) = text.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    text.to_owned()
}

fn proto_to_json(desc: &MessageDescriptor, proto: &[u8], code: Code) -> Result<Bytes, Status> {
    let message = DynamicMessage::decode(desc.clone(), proto).map_err(|e| {
        Status::new(
            code,
            format!("invalid protobuf for {}: {e}", desc.full_name()),
        )
    })?;
    let mut out = Vec::with_capacity(proto.len().saturating_mul(2).saturating_add(16));
    write::message(&mut out, &message).map_err(|e| {
        Status::new(
            code,
            format!("cannot write {} as JSON: {e}", desc.full_name()),
        )
    })?;
    Ok(Bytes::from(out))
}

mod files;

pub(crate) use files::EncodedFile;
mod sorted;
pub(crate) mod write;

#[cfg(test)]
mod tests;
