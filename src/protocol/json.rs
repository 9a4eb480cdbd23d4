//! ProtoJSON ⇄ protobuf transcoding with descriptors, for JSON callers of proto-only
//! upstreams (PROTOCOLS.md §6).
//!
//! A [`Schema`] holds the descriptors of the services behind one upstream, loaded from a
//! `FileDescriptorSet` or fetched by server reflection. Each [`Method`] turns request JSON into
//! protobuf bytes and response bytes into canonical ProtoJSON: lowerCamelCase (or `json_name`)
//! keys, 64-bit integers as strings, enums by name, bytes as padded standard base64, default
//! values omitted and the well-known types in their special forms.
//!
//! Descriptor sets often leave out the well-known types (`google/protobuf/*.proto`) and
//! `google/rpc/*.proto`; those are filled in from copies bundled with `prost-reflect` and
//! `tonic-types`, so imports of them always resolve and error details can be shown as JSON.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, OnceLock};

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
    /// --descriptor_set_out=…`, `buf build -o …`).
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Schema, String> {
        let set = prost_types::FileDescriptorSet::decode(bytes)
            .map_err(|e| format!("invalid FileDescriptorSet: {e}"))?;
        Schema::from_file_protos(set.file)
    }

    /// Builds a schema from file descriptors in any order. Imports of well-known types and
    /// `google/rpc/*.proto` missing from `files` are filled in from bundled copies; any
    /// other missing import is an error.
    pub fn from_file_protos(files: Vec<FileDescriptorProto>) -> Result<Schema, String> {
        let mut names: HashSet<String> = HashSet::with_capacity(files.len());
        let mut all = Vec::with_capacity(files.len());
        for file in files {
            // The first of several files with one name wins, as in a descriptor pool.
            if names.insert(file.name().to_owned()) {
                all.push(file);
            }
        }

        // Fill in missing imports from the bundled files, transitively.
        let bundled = bundled_files();
        let mut missing = Vec::new();
        let mut i = 0;
        while i < all.len() {
            let deps = all[i].dependency.clone();
            for dep in deps {
                if names.contains(&dep) {
                    continue;
                }
                match bundled.iter().find(|f| f.name() == dep) {
                    Some(f) => {
                        names.insert(dep);
                        all.push(f.clone());
                    }
                    None => missing.push(format!("{dep:?} (imported by {:?})", all[i].name())),
                }
            }
            i += 1;
        }
        if !missing.is_empty() {
            return Err(format!("missing proto files: {}", missing.join(", ")));
        }

        let mut pool = DescriptorPool::new();
        pool.add_file_descriptor_protos(all)
            .map_err(|e| format!("invalid descriptors: {e}"))?;

        // Make every bundled type available to `Any` fields and error details, unless the
        // files define conflicting names (then that bundled file is left out).
        for file in bundled {
            if pool.get_file_by_name(file.name()).is_none() {
                let _ = pool.add_file_descriptor_proto(file.clone());
            }
        }

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
                let method = Method {
                    inner: Arc::new(MethodInner {
                        path: path.clone(),
                        input_has_maps: may_hold_maps(&m.input()),
                        output_has_maps: may_hold_maps(&m.output()),
                        input: m.input(),
                        output: m.output(),
                        client_streaming: m.is_client_streaming(),
                        server_streaming: m.is_server_streaming(),
                        no_side_effects,
                    }),
                };
                methods.insert(path.into_boxed_str(), method);
            }
        }
        Ok(Schema {
            inner: Arc::new(SchemaInner {
                pool,
                methods,
                services,
            }),
        })
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
    input: MessageDescriptor,
    output: MessageDescriptor,
    /// The message may hold protobuf maps (or `Any`s, which may hold maps), whose entries
    /// are sorted for deterministic output.
    input_has_maps: bool,
    output_has_maps: bool,
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
        proto_to_json(
            &self.inner.input,
            self.inner.input_has_maps,
            proto,
            Code::InvalidArgument,
        )
    }

    /// Protobuf response bytes → canonical ProtoJSON. Errors are `Internal`.
    pub fn response_to_json(&self, proto: &[u8]) -> Result<Bytes, Status> {
        proto_to_json(
            &self.inner.output,
            self.inner.output_has_maps,
            proto,
            Code::Internal,
        )
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
    match parsed {
        Ok(message) => Ok(Bytes::from(message.encode_to_vec())),
        Err(e) => Err(Status::new(
            code,
            format!(
                "invalid JSON for {}: {}",
                desc.full_name(),
                describe_json_error(desc, json, &options, &e)
            ),
        )),
    }
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

fn proto_to_json(
    desc: &MessageDescriptor,
    has_maps: bool,
    proto: &[u8],
    code: Code,
) -> Result<Bytes, Status> {
    let message = DynamicMessage::decode(desc.clone(), proto).map_err(|e| {
        Status::new(
            code,
            format!("invalid protobuf for {}: {e}", desc.full_name()),
        )
    })?;
    let mut out = Vec::with_capacity(proto.len().saturating_mul(2).saturating_add(16));
    let mut ser = serde_json::Serializer::new(&mut out);
    let written = if has_maps {
        message.serialize_with_options(sorted::Sorted(&mut ser), &serialize_options())
    } else {
        message.serialize_with_options(&mut ser, &serialize_options())
    };
    written.map_err(|e| {
        Status::new(
            code,
            format!("cannot write {} as JSON: {e}", desc.full_name()),
        )
    })?;
    Ok(Bytes::from(out))
}

/// Whether messages of type `desc` can hold protobuf map fields, directly, nested, or packed
/// in an `Any`.
fn may_hold_maps(desc: &MessageDescriptor) -> bool {
    let mut seen = HashSet::new();
    let mut stack = vec![desc.clone()];
    while let Some(desc) = stack.pop() {
        if desc.full_name() == "google.protobuf.Any" {
            return true;
        }
        if !seen.insert(desc.full_name().to_owned()) {
            continue;
        }
        for field in desc.fields() {
            if field.is_map() {
                return true;
            }
            if let prost_reflect::Kind::Message(m) = field.kind() {
                stack.push(m);
            }
        }
    }
    false
}

/// The well-known types bundled with prost-reflect and the `google.rpc` types bundled with
/// tonic-types, in an order where every file follows its imports.
fn bundled_files() -> &'static [FileDescriptorProto] {
    static FILES: OnceLock<Vec<FileDescriptorProto>> = OnceLock::new();
    FILES.get_or_init(|| {
        let global = DescriptorPool::global();
        let mut files: Vec<FileDescriptorProto> = global
            .files()
            .map(|f| f.file_descriptor_proto().clone())
            .collect();
        if let Ok(set) =
            prost_types::FileDescriptorSet::decode(tonic_types::pb::FILE_DESCRIPTOR_SET)
        {
            // tonic-types names its files `status.proto` and `error_details.proto`; everyone
            // imports them as `google/rpc/…`.
            let rename = |name: &mut String| {
                if !name.contains('/') {
                    *name = format!("google/rpc/{name}");
                }
            };
            for mut file in set.file {
                if file.package() == "google.rpc" {
                    if let Some(name) = file.name.as_mut() {
                        rename(name);
                    }
                    file.dependency.iter_mut().for_each(rename);
                }
                if !files.iter().any(|f| f.name() == file.name()) {
                    files.push(file);
                }
            }
        }
        files
    })
}

/// A serializer wrapper that writes the entries of protobuf maps sorted by key (numerically
/// for integer keys), as Go's protojson does; prost-reflect keeps maps in a `HashMap`, whose
/// order changes from one message to the next.
///
/// prost-reflect serializes a message with `serialize_map(None)` and everything map-like
/// with a length: protobuf maps, `Struct` (already sorted) and `Any`'s `{"@type", "value"}`
/// (already in key order). Maps with a length are buffered as `serde_json::Value`s, sorted and
/// written; messages pass through in field order.
mod sorted {
    use std::cmp::Ordering;
    use std::fmt::Display;

    use serde::ser::{
        Error as _, Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant,
        SerializeTuple, SerializeTupleStruct, SerializeTupleVariant, Serializer,
    };
    use serde_json::Value;

    /// Wraps a serializer.
    pub(super) struct Sorted<S>(pub(super) S);

    /// Wraps a value so that it is serialized through [`Sorted`].
    struct Wrap<'a, T: ?Sized>(&'a T);

    impl<T: ?Sized + Serialize> Serialize for Wrap<'_, T> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            self.0.serialize(Sorted(serializer))
        }
    }

    macro_rules! forward {
        ($($method:ident($ty:ty)),* $(,)?) => {
            $(
                fn $method(self, v: $ty) -> Result<S::Ok, S::Error> {
                    self.0.$method(v)
                }
            )*
        };
    }

    impl<S: Serializer> Serializer for Sorted<S> {
        type Ok = S::Ok;
        type Error = S::Error;
        type SerializeSeq = Sorted<S::SerializeSeq>;
        type SerializeTuple = Sorted<S::SerializeTuple>;
        type SerializeTupleStruct = Sorted<S::SerializeTupleStruct>;
        type SerializeTupleVariant = Sorted<S::SerializeTupleVariant>;
        type SerializeMap = SortedMap<S::SerializeMap>;
        type SerializeStruct = Sorted<S::SerializeStruct>;
        type SerializeStructVariant = Sorted<S::SerializeStructVariant>;

        forward!(
            serialize_bool(bool),
            serialize_i8(i8),
            serialize_i16(i16),
            serialize_i32(i32),
            serialize_i64(i64),
            serialize_i128(i128),
            serialize_u8(u8),
            serialize_u16(u16),
            serialize_u32(u32),
            serialize_u64(u64),
            serialize_u128(u128),
            serialize_f64(f64),
            serialize_char(char),
            serialize_str(&str),
            serialize_bytes(&[u8]),
            serialize_unit_struct(&'static str),
        );

        fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
            // A buffered `Value` holds an f64: go through the shortest decimal of the f32 so
            // that 0.1f32 is still written as 0.1.
            match v.to_string().parse::<f64>() {
                Ok(d) if v.is_finite() => self.0.serialize_f64(d),
                _ => self.0.serialize_f32(v),
            }
        }

        fn serialize_none(self) -> Result<S::Ok, S::Error> {
            self.0.serialize_none()
        }

        fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<S::Ok, S::Error> {
            self.0.serialize_some(&Wrap(v))
        }

        fn serialize_unit(self) -> Result<S::Ok, S::Error> {
            self.0.serialize_unit()
        }

        fn serialize_unit_variant(
            self,
            name: &'static str,
            index: u32,
            variant: &'static str,
        ) -> Result<S::Ok, S::Error> {
            self.0.serialize_unit_variant(name, index, variant)
        }

        fn serialize_newtype_struct<T: ?Sized + Serialize>(
            self,
            name: &'static str,
            v: &T,
        ) -> Result<S::Ok, S::Error> {
            self.0.serialize_newtype_struct(name, &Wrap(v))
        }

        fn serialize_newtype_variant<T: ?Sized + Serialize>(
            self,
            name: &'static str,
            index: u32,
            variant: &'static str,
            v: &T,
        ) -> Result<S::Ok, S::Error> {
            self.0
                .serialize_newtype_variant(name, index, variant, &Wrap(v))
        }

        fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
            self.0.serialize_seq(len).map(Sorted)
        }

        fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
            self.0.serialize_tuple(len).map(Sorted)
        }

        fn serialize_tuple_struct(
            self,
            name: &'static str,
            len: usize,
        ) -> Result<Self::SerializeTupleStruct, S::Error> {
            self.0.serialize_tuple_struct(name, len).map(Sorted)
        }

        fn serialize_tuple_variant(
            self,
            name: &'static str,
            index: u32,
            variant: &'static str,
            len: usize,
        ) -> Result<Self::SerializeTupleVariant, S::Error> {
            self.0
                .serialize_tuple_variant(name, index, variant, len)
                .map(Sorted)
        }

        fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
            Ok(SortedMap {
                buffer: len.map(Vec::with_capacity),
                key: None,
                inner: self.0.serialize_map(len)?,
            })
        }

        fn serialize_struct(
            self,
            name: &'static str,
            len: usize,
        ) -> Result<Self::SerializeStruct, S::Error> {
            self.0.serialize_struct(name, len).map(Sorted)
        }

        fn serialize_struct_variant(
            self,
            name: &'static str,
            index: u32,
            variant: &'static str,
            len: usize,
        ) -> Result<Self::SerializeStructVariant, S::Error> {
            self.0
                .serialize_struct_variant(name, index, variant, len)
                .map(Sorted)
        }

        fn collect_str<T: ?Sized + Display>(self, v: &T) -> Result<S::Ok, S::Error> {
            self.0.collect_str(v)
        }

        fn is_human_readable(&self) -> bool {
            self.0.is_human_readable()
        }
    }

    impl<S: SerializeSeq> SerializeSeq for Sorted<S> {
        type Ok = S::Ok;
        type Error = S::Error;

        fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), S::Error> {
            self.0.serialize_element(&Wrap(v))
        }

        fn end(self) -> Result<S::Ok, S::Error> {
            self.0.end()
        }
    }

    impl<S: SerializeTuple> SerializeTuple for Sorted<S> {
        type Ok = S::Ok;
        type Error = S::Error;

        fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), S::Error> {
            self.0.serialize_element(&Wrap(v))
        }

        fn end(self) -> Result<S::Ok, S::Error> {
            self.0.end()
        }
    }

    impl<S: SerializeTupleStruct> SerializeTupleStruct for Sorted<S> {
        type Ok = S::Ok;
        type Error = S::Error;

        fn serialize_field<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), S::Error> {
            self.0.serialize_field(&Wrap(v))
        }

        fn end(self) -> Result<S::Ok, S::Error> {
            self.0.end()
        }
    }

    impl<S: SerializeTupleVariant> SerializeTupleVariant for Sorted<S> {
        type Ok = S::Ok;
        type Error = S::Error;

        fn serialize_field<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), S::Error> {
            self.0.serialize_field(&Wrap(v))
        }

        fn end(self) -> Result<S::Ok, S::Error> {
            self.0.end()
        }
    }

    impl<S: SerializeStruct> SerializeStruct for Sorted<S> {
        type Ok = S::Ok;
        type Error = S::Error;

        fn serialize_field<T: ?Sized + Serialize>(
            &mut self,
            key: &'static str,
            v: &T,
        ) -> Result<(), S::Error> {
            self.0.serialize_field(key, &Wrap(v))
        }

        fn end(self) -> Result<S::Ok, S::Error> {
            self.0.end()
        }
    }

    impl<S: SerializeStructVariant> SerializeStructVariant for Sorted<S> {
        type Ok = S::Ok;
        type Error = S::Error;

        fn serialize_field<T: ?Sized + Serialize>(
            &mut self,
            key: &'static str,
            v: &T,
        ) -> Result<(), S::Error> {
            self.0.serialize_field(key, &Wrap(v))
        }

        fn end(self) -> Result<S::Ok, S::Error> {
            self.0.end()
        }
    }

    /// A map: entries pass through (`buffer` is `None`) or are buffered to be sorted.
    pub(super) struct SortedMap<M> {
        inner: M,
        buffer: Option<Vec<(Value, Value)>>,
        key: Option<Value>,
    }

    impl<M: SerializeMap> SerializeMap for SortedMap<M> {
        type Ok = M::Ok;
        type Error = M::Error;

        fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), M::Error> {
            if self.buffer.is_none() {
                return self.inner.serialize_key(&Wrap(key));
            }
            let key = key
                .serialize(Sorted(serde_json::value::Serializer))
                .map_err(M::Error::custom)?;
            self.key = Some(key);
            Ok(())
        }

        fn serialize_value<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), M::Error> {
            let Some(buffer) = &mut self.buffer else {
                return self.inner.serialize_value(&Wrap(v));
            };
            let v = v
                .serialize(Sorted(serde_json::value::Serializer))
                .map_err(M::Error::custom)?;
            let key = self
                .key
                .take()
                .ok_or_else(|| M::Error::custom("map value without a key"))?;
            buffer.push((key, v));
            Ok(())
        }

        fn end(mut self) -> Result<M::Ok, M::Error> {
            if let Some(mut entries) = self.buffer.take() {
                entries.sort_by(|a, b| compare_keys(&a.0, &b.0));
                for (key, value) in &entries {
                    self.inner.serialize_entry(key, value)?;
                }
            }
            self.inner.end()
        }
    }

    /// Integer keys numerically, everything else by its text.
    fn compare_keys(a: &Value, b: &Value) -> Ordering {
        match (a, b) {
            (Value::String(a), Value::String(b)) => match (a.parse::<i128>(), b.parse::<i128>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => a.cmp(b),
            },
            _ => a.to_string().cmp(&b.to_string()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const TESTING: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/testing_descriptor.bin"));
    const TYPES: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/types.binpb"
    ));

    fn testing() -> Schema {
        Schema::from_descriptor_set(TESTING).unwrap()
    }

    fn types() -> Schema {
        Schema::from_descriptor_set(TYPES).unwrap()
    }

    fn echo() -> Method {
        types()
            .method("/switchboard.testing.v1.TypesService/Echo")
            .unwrap()
    }

    fn unary() -> Method {
        testing()
            .method("/switchboard.testing.v1.TestService/Unary")
            .unwrap()
    }

    /// JSON → proto → canonical JSON.
    fn canonical(m: &Method, json: &str) -> String {
        let proto = m.request_to_proto(json.as_bytes(), false).unwrap();
        String::from_utf8(m.request_to_json(&proto).unwrap().to_vec()).unwrap()
    }

    fn parse_error(m: &Method, json: &str) -> Status {
        m.request_to_proto(json.as_bytes(), false).unwrap_err()
    }

    #[test]
    fn bundled_files_cover_wkt_and_google_rpc() {
        let names: Vec<&str> = bundled_files().iter().map(|f| f.name()).collect();
        for name in [
            "google/protobuf/any.proto",
            "google/protobuf/timestamp.proto",
            "google/protobuf/struct.proto",
            "google/protobuf/descriptor.proto",
            "google/rpc/status.proto",
            "google/rpc/error_details.proto",
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
    }

    #[test]
    fn methods_and_services() {
        let s = testing();
        assert_eq!(s.services(), vec!["switchboard.testing.v1.TestService"]);
        let u = s
            .method("/switchboard.testing.v1.TestService/Unary")
            .unwrap();
        assert!(!u.client_streaming() && !u.server_streaming() && !u.no_side_effects());
        let l = s
            .method("/switchboard.testing.v1.TestService/Lookup")
            .unwrap();
        assert!(l.no_side_effects());
        let ss = s
            .method("/switchboard.testing.v1.TestService/ServerStream")
            .unwrap();
        assert!(!ss.client_streaming() && ss.server_streaming());
        let cs = s
            .method("/switchboard.testing.v1.TestService/ClientStream")
            .unwrap();
        assert!(cs.client_streaming() && !cs.server_streaming());
        let b = s
            .method("/switchboard.testing.v1.TestService/Bidi")
            .unwrap();
        assert!(b.client_streaming() && b.server_streaming());
        assert!(s
            .method("/switchboard.testing.v1.TestService/Nope")
            .is_none());
        assert!(s
            .method("switchboard.testing.v1.TestService/Unary")
            .is_none());
        assert!(s.method("/other.Service/Unary").is_none());
        assert!(format!("{s:?}").contains("TestService"));
        assert!(format!("{u:?}").contains("EchoRequest"));

        let t = types();
        assert_eq!(t.services(), vec!["switchboard.testing.v1.TypesService"]);
        let w = t
            .method("/switchboard.testing.v1.TypesService/Watch")
            .unwrap();
        assert!(w.server_streaming() && w.no_side_effects());
        let up = t
            .method("/switchboard.testing.v1.TypesService/Upload")
            .unwrap();
        assert!(up.client_streaming());
        assert_eq!(
            &up.request_to_proto(b"{}", false).unwrap()[..],
            b"",
            "Empty"
        );
    }

    #[test]
    fn echo_request_round_trip() {
        let m = unary();
        let json = r#"{"message":"hi","payload":"AAEC/w==","responseSize":3,"delayMs":4,"count":5,"error":{"code":3,"message":"bad","withDetails":true}}"#;
        assert_eq!(canonical(&m, json), json);
        // Response direction, with a map.
        let resp = r#"{"message":"m","index":2,"grpcTimeout":"1S","metadata":{"x-a":"1"}}"#;
        let proto = m.response_to_proto(resp.as_bytes(), false).unwrap();
        let back = m.response_to_json(&proto).unwrap();
        assert_eq!(std::str::from_utf8(&back).unwrap(), resp);
        // Default values are omitted.
        assert_eq!(canonical(&m, r#"{"message":"","count":0}"#), "{}");
        // The proto bytes are what a generated encoder writes.
        let proto = m.request_to_proto(br#"{"message":"Buf"}"#, false).unwrap();
        assert_eq!(&proto[..], &[0x0a, 0x03, b'B', b'u', b'f']);
    }

    #[test]
    fn canonical_scalars() {
        let m = echo();
        assert_eq!(
            canonical(
                &m,
                r#"{"anInt64":123,"aUint64":"18446744073709551615","aSint64":-5,"aFixed64":"7","anInt32":-3}"#
            ),
            r#"{"anInt64":"123","aUint64":"18446744073709551615","aSint64":"-5","aFixed64":"7","anInt32":-3}"#
        );
        assert_eq!(canonical(&m, r#"{"anInt64":1e3}"#), r#"{"anInt64":"1000"}"#);
        assert_eq!(
            canonical(&m, r#"{"aDouble":"NaN","aBool":true,"aString":"é\"\n"}"#),
            r#"{"aDouble":"NaN","aBool":true,"aString":"é\"\n"}"#
        );
        assert_eq!(
            canonical(&m, r#"{"aDouble":"-Infinity"}"#),
            r#"{"aDouble":"-Infinity"}"#
        );
        assert_eq!(canonical(&m, r#"{"aDouble":1.5}"#), r#"{"aDouble":1.5}"#);
        // Enums by name, accepted as names or numbers.
        assert_eq!(
            canonical(&m, r#"{"color":"COLOR_RED","colors":[2,"COLOR_RED"]}"#),
            r#"{"color":"COLOR_RED","colors":["COLOR_GREEN","COLOR_RED"]}"#
        );
        assert_eq!(canonical(&m, r#"{"color":1}"#), r#"{"color":"COLOR_RED"}"#);
        // Bytes: padded standard base64 out; URL-safe and unpadded in.
        assert_eq!(
            canonical(&m, r#"{"blobs":["-_8","AQ==",""]}"#),
            r#"{"blobs":["+/8=","AQ==",""]}"#
        );
        // Maps with int64 values; oneofs; json_name; explicit presence.
        assert_eq!(
            canonical(
                &m,
                r#"{"counts":{"a":1,"b":"2"},"choiceText":"x","customName":"r","maybe":0}"#
            ),
            r#"{"counts":{"a":"1","b":"2"},"choiceText":"x","customName":"r","maybe":0}"#
        );
        assert_eq!(
            canonical(&m, r#"{"choiceNested":{"note":"n","values":[1,2]}}"#),
            r#"{"choiceNested":{"note":"n","values":[1,2]}}"#
        );
    }

    /// Found by the `json_transcoding` fuzz target: a double written as its shortest decimal
    /// (here 1.0943814619208204e-303) read back one unit in the last place off, because
    /// serde_json parses floats exactly only with its `float_roundtrip` feature. A JSON
    /// caller's double must reach the backend as the same bits.
    #[test]
    fn doubles_survive_json_exactly() {
        // The fuzzer's input: method selector, flags (2: an upstream reply), then protobuf.
        let found: &[u8] = &[
            0x00, 0x02, 0x08, 0x96, 0x01, 0x42, 0x02, 0x68, 0x69, 0x5a, 0x05, 0x0a, 0x01, 0x6b,
            0x10, 0x05, 0x31, 0x40, 0x00, 0x00, 0xa2, 0x01, 0x04, 0x08, 0x01, 0x10, 0x02,
        ];
        let m = echo();
        let json = m.response_to_json(&found[2..]).unwrap();
        let proto = m.response_to_proto(&json, false).unwrap();
        assert_eq!(m.response_to_json(&proto).unwrap(), json);

        for text in [
            "1.0943814619208204e-303",
            "2.2250738585072014e-308",
            "5e-324",
            "0.1",
        ] {
            let want: f64 = text.parse().unwrap();
            let proto = m
                .request_to_proto(format!(r#"{{"aDouble":{text}}}"#).as_bytes(), false)
                .unwrap();
            // Field 6, fixed64: tag 0x31, then the little-endian bits.
            let at = proto.iter().position(|&b| b == 0x31).unwrap();
            let bits = u64::from_le_bytes(proto[at + 1..at + 9].try_into().unwrap());
            assert_eq!(f64::from_bits(bits), want, "{text}");
        }
    }

    #[test]
    fn maps_are_written_sorted() {
        let m = echo();
        let keys: Vec<String> = (0..40).map(|i| format!("k{i:02}")).collect();
        let input = format!(
            "{{\"counts\":{{{}}}}}",
            keys.iter()
                .rev()
                .map(|k| format!("\"{k}\":1"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let want = format!(
            "{{\"counts\":{{{}}}}}",
            keys.iter()
                .map(|k| format!("\"{k}\":\"1\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(canonical(&m, &input), want);
        // Nested in a message, packed in an Any, and in responses.
        let nested = format!(
            r#"{{"anInt64":"1","nested":{{"note":"n"}},"packed":{{"@type":"type.googleapis.com/switchboard.testing.v1.AllTypes","counts":{}}}}}"#,
            &want[10..want.len() - 1]
        );
        assert_eq!(canonical(&m, &nested), nested);
        let proto = m.response_to_proto(nested.as_bytes(), false).unwrap();
        let out = m.response_to_json(&proto).unwrap();
        assert_eq!(std::str::from_utf8(&out).unwrap(), nested);

        let u = unary();
        let resp = r#"{"message":"m","metadata":{"x-a":"1","x-b":"2","x-c":"3","x-d":"4"}}"#;
        for _ in 0..8 {
            let proto = u.response_to_proto(resp.as_bytes(), false).unwrap();
            assert_eq!(&u.response_to_json(&proto).unwrap()[..], resp.as_bytes());
        }
        assert!(u.inner.output_has_maps && !u.inner.input_has_maps);
    }

    #[test]
    fn sorted_writer_keeps_floats_and_integer_key_order() {
        use serde::Serialize as _;
        let mut out = Vec::new();
        let mut map = std::collections::HashMap::new();
        map.insert("10", 0.1f32);
        map.insert("9", 1e-30f32);
        map.insert("-1", 3.0f32);
        map.insert("100", 16_777_216f32);
        map.serialize(sorted::Sorted(&mut serde_json::Serializer::new(&mut out)))
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"-1":3.0,"9":1e-30,"10":0.1,"100":16777216.0}"#
        );
    }

    #[test]
    fn canonical_well_known_types() {
        let m = echo();
        let cases = [
            (
                r#"{"when":"2024-01-02T03:04:05.500Z"}"#,
                r#"{"when":"2024-01-02T03:04:05.500Z"}"#,
            ),
            (
                r#"{"when":"2024-01-02T04:04:05+01:00"}"#,
                r#"{"when":"2024-01-02T03:04:05Z"}"#,
            ),
            (r#"{"howLong":"1.5s"}"#, r#"{"howLong":"1.500s"}"#),
            (r#"{"howLong":"-0.000001s"}"#, r#"{"howLong":"-0.000001s"}"#),
            (r#"{"howLong":"3s"}"#, r#"{"howLong":"3s"}"#),
            (r#"{"mask":"fooBar,baz"}"#, r#"{"mask":"fooBar,baz"}"#),
            (
                r#"{"attributes":{"a":[1,"x",null,{"b":true}]}}"#,
                r#"{"attributes":{"a":[1.0,"x",null,{"b":true}]}}"#,
            ),
            (r#"{"anything":null}"#, r#"{"anything":null}"#),
            (r#"{"anything":"s"}"#, r#"{"anything":"s"}"#),
            (r#"{"list":[1,[]]}"#, r#"{"list":[1.0,[]]}"#),
            (
                r#"{"wrappedInt64":"5","wrappedString":"w"}"#,
                r#"{"wrappedInt64":"5","wrappedString":"w"}"#,
            ),
            (r#"{"wrappedInt64":0}"#, r#"{"wrappedInt64":"0"}"#),
            (r#"{"nothing":{}}"#, r#"{"nothing":{}}"#),
            (
                r#"{"packed":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"2s"}}"#,
                r#"{"packed":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"2s"}}"#,
            ),
            (
                r#"{"packed":{"@type":"type.googleapis.com/switchboard.testing.v1.Nested","note":"n"}}"#,
                r#"{"packed":{"@type":"type.googleapis.com/switchboard.testing.v1.Nested","note":"n"}}"#,
            ),
            // Like Go's protojson (and unlike PROTOCOLS.md's note), Empty counts as special.
            (
                r#"{"packed":{"@type":"type.googleapis.com/google.protobuf.Empty","value":{}}}"#,
                r#"{"packed":{"@type":"type.googleapis.com/google.protobuf.Empty","value":{}}}"#,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(canonical(&m, input), want, "{input}");
        }
        // Null means unset.
        assert_eq!(canonical(&m, r#"{"when":null,"anInt64":null}"#), "{}");
    }

    #[test]
    fn accepts_proto_names_and_camel_case() {
        let m = echo();
        assert_eq!(
            canonical(&m, r#"{"an_int64":"1","a_string":"s","renamed":"r"}"#),
            r#"{"anInt64":"1","aString":"s","customName":"r"}"#
        );
        let m = unary();
        assert_eq!(
            canonical(&m, r#"{"delay_ms":1,"responseSize":2}"#),
            r#"{"responseSize":2,"delayMs":1}"#
        );
    }

    #[test]
    fn unknown_fields_are_rejected_unless_ignored() {
        let m = unary();
        let e = parse_error(&m, r#"{"message":"a","bogus":1}"#);
        assert_eq!(e.code, Code::InvalidArgument);
        assert!(e.message.contains("bogus"), "{}", e.message);
        assert!(
            e.message
                .starts_with("invalid JSON for switchboard.testing.v1.EchoRequest: "),
            "{}",
            e.message
        );
        let p = m
            .request_to_proto(br#"{"message":"a","bogus":{"x":[1]}}"#, true)
            .unwrap();
        assert_eq!(&p[..], &[0x0a, 0x01, b'a']);
        // Unknown enum names too.
        let t = echo();
        assert!(t
            .request_to_proto(br#"{"color":"COLOR_BLUE"}"#, false)
            .is_err());
        let p = t
            .request_to_proto(br#"{"color":"COLOR_BLUE"}"#, true)
            .unwrap();
        assert!(p.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let m = unary();
        let e = parse_error(&m, r#"{"count":"abc"}"#);
        assert_eq!(e.code, Code::InvalidArgument);
        assert_eq!(
            e.message,
            r#"invalid JSON for switchboard.testing.v1.EchoRequest: field "count": expected an integer"#
        );
        let e = parse_error(&m, r#"{"message":5}"#);
        assert_eq!(
            e.message,
            r#"invalid JSON for switchboard.testing.v1.EchoRequest: field "message": expected a string, found integer `5`"#
        );
        let e = parse_error(&m, r#"{"error":{"code":"x"}}"#);
        assert!(
            e.message
                .ends_with(r#"field "error.code": expected an integer"#),
            "{}",
            e.message
        );
        let e = parse_error(&m, r#"{"error":{"bogus":1}}"#);
        assert!(
            e.message.contains(r#"field "error": "#) && e.message.contains("'bogus'"),
            "{}",
            e.message
        );
        let t = echo();
        let cases = [
            (
                r#"{"nested":{"values":[1,"z"]}}"#,
                r#"field "nested.values[1]": expected an integer"#,
            ),
            (
                r#"{"anInt32":1.5}"#,
                r#"field "anInt32": expected an integer, found a fractional number"#,
            ),
            (
                r#"{"anInt32":4294967296}"#,
                r#"field "anInt32": integer out of range"#,
            ),
            (r#"{"aUint64":-1}"#, r#"field "aUint64": "#),
            (
                r#"{"anInt64":"9223372036854775808"}"#,
                r#"field "anInt64": integer out of range"#,
            ),
            (r#"{"when":"yesterday"}"#, r#"field "when": "#),
            (r#"{"howLong":"1.5"}"#, r#"field "howLong": "#),
            (
                r#"{"blobs":["%%%"]}"#,
                r#"field "blobs[0]": invalid base64"#,
            ),
            (
                r#"{"counts":{"a":"x"}}"#,
                r#"field "counts.a": expected an integer"#,
            ),
            (
                r#"{"colors":[null]}"#,
                r#"field "colors[0]": expected a string or integer, found null"#,
            ),
            (
                r#"{"packed":{"@type":"type.googleapis.com/no.Such","a":1}}"#,
                r#"field "packed": message 'no.Such' not found"#,
            ),
            (
                r#"{"choiceText":"a","choiceNested":{}}"#,
                "multiple fields provided for oneof 'choice'",
            ),
        ];
        for (input, want) in cases {
            let e = parse_error(&t, input);
            assert!(e.message.contains(want), "{input}: {}", e.message);
        }
    }

    #[test]
    fn malformed_input() {
        let m = unary();
        let e = parse_error(&m, "");
        assert_eq!(e.code, Code::InvalidArgument);
        assert_eq!(
            e.message,
            "invalid JSON for switchboard.testing.v1.EchoRequest: empty body is not a JSON object"
        );
        for bad in [
            "{} x",
            "{}{}",
            "{",
            "  ",
            "[]",
            "null",
            "\"s\"",
            r#"{"message":"a",}"#,
            r#"{"message":"\ud800"}"#,
        ] {
            let e = parse_error(&m, bad);
            assert_eq!(e.code, Code::InvalidArgument, "{bad}");
        }
        // Whitespace around the object is fine.
        assert!(m.request_to_proto(b" {} \n", false).is_ok());
        let e = m.response_to_proto(b"{", false).unwrap_err();
        assert_eq!(e.code, Code::Internal);
        // Deep nesting is an error, not a stack overflow.
        let deep = format!(
            "{{\"attributes\":{}{}}}",
            "{\"a\":".repeat(10_000),
            "}".repeat(10_000)
        );
        assert!(echo().request_to_proto(deep.as_bytes(), false).is_err());
    }

    #[test]
    fn invalid_protobuf() {
        let m = unary();
        let e = m.response_to_json(&[0x0a, 0x05, b'a']).unwrap_err();
        assert_eq!(e.code, Code::Internal);
        assert!(e.message.contains("EchoResponse"), "{}", e.message);
        let e = m.request_to_json(&[0xff]).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        assert_eq!(&m.response_to_json(&[]).unwrap()[..], b"{}");
        // Unknown fields in responses are dropped.
        assert_eq!(
            &m.response_to_json(&[0x0a, 0x01, b'a', 0xf8, 0x01, 0x01])
                .unwrap()[..],
            br#"{"message":"a"}"#
        );
    }

    #[test]
    fn any_with_unknown_type_fails_on_output() {
        let m = echo();
        // packed = Any{type_url: "type.googleapis.com/no.Such", value: ""}
        let url = b"type.googleapis.com/no.Such";
        let mut any = vec![0x0a, url.len() as u8];
        any.extend_from_slice(url);
        let mut msg = vec![0xca, 0x01, any.len() as u8];
        msg.extend_from_slice(&any);
        let e = m.response_to_json(&msg).unwrap_err();
        assert_eq!(e.code, Code::Internal);
    }

    #[test]
    fn error_details_as_json() {
        let s = testing();
        // google.rpc.BadRequest{field_violations: [{field: "name", description: "must not be empty"}]}
        let mut v = vec![0x0a, 0x19, 0x0a, 0x04];
        v.extend_from_slice(b"name");
        v.extend_from_slice(&[0x12, 0x11]);
        v.extend_from_slice(b"must not be empty");
        let json = s
            .detail_json("type.googleapis.com/google.rpc.BadRequest", &v)
            .unwrap();
        assert_eq!(
            json.to_string(),
            r#"{"fieldViolations":[{"field":"name","description":"must not be empty"}]}"#
        );
        assert!(s.detail_json("type.googleapis.com/no.Such", &v).is_none());
        assert!(s
            .detail_json("type.googleapis.com/google.rpc.BadRequest", &[0xff])
            .is_none());
        let d = s
            .detail_json("google.protobuf.Duration", &[0x08, 0x02])
            .unwrap();
        assert_eq!(d, serde_json::json!("2s"));
        let e = s
            .detail_json(
                "type.googleapis.com/switchboard.testing.v1.ErrorSpec",
                &[0x08, 0x03],
            )
            .unwrap();
        assert_eq!(e, serde_json::json!({"code": 3}));
    }

    #[test]
    fn schema_from_files_in_any_order_with_missing_wkt() {
        let set = prost_types::FileDescriptorSet::decode(TYPES).unwrap();
        // Drop the well-known types and reverse: they come from the bundled copies.
        let mut files: Vec<_> = set
            .file
            .into_iter()
            .filter(|f| !f.name().starts_with("google/"))
            .collect();
        assert_eq!(files.len(), 1);
        let dep = FileDescriptorProto {
            name: Some("dep.proto".into()),
            package: Some("dep".into()),
            message_type: vec![prost_types::DescriptorProto {
                name: Some("D".into()),
                ..Default::default()
            }],
            syntax: Some("proto3".into()),
            ..Default::default()
        };
        let user = FileDescriptorProto {
            name: Some("user.proto".into()),
            package: Some("user".into()),
            dependency: vec!["dep.proto".into(), "google/protobuf/empty.proto".into()],
            service: vec![prost_types::ServiceDescriptorProto {
                name: Some("S".into()),
                method: vec![prost_types::MethodDescriptorProto {
                    name: Some("M".into()),
                    input_type: Some(".dep.D".into()),
                    output_type: Some(".google.protobuf.Empty".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            syntax: Some("proto3".into()),
            ..Default::default()
        };
        files.insert(0, user.clone());
        files.push(dep.clone());
        let s = Schema::from_file_protos(files).unwrap();
        let mut services = s.services();
        services.sort();
        assert_eq!(
            services,
            vec!["switchboard.testing.v1.TypesService", "user.S"]
        );
        assert!(s.method("/user.S/M").is_some());
        let m = s
            .method("/switchboard.testing.v1.TypesService/Echo")
            .unwrap();
        assert_eq!(
            canonical(&m, r#"{"when":"1970-01-01T00:00:01Z"}"#),
            r#"{"when":"1970-01-01T00:00:01Z"}"#
        );

        // A missing import that is not bundled is named.
        let e = Schema::from_file_protos(vec![user]).unwrap_err();
        assert!(e.contains("dep.proto") && e.contains("user.proto"), "{e}");
        assert!(Schema::from_descriptor_set(b"\xff\xff").is_err());

        // A file that defines a bundled type under another name keeps its own definition.
        let own = FileDescriptorProto {
            name: Some("mine/status.proto".into()),
            package: Some("google.rpc".into()),
            message_type: vec![prost_types::DescriptorProto {
                name: Some("BadRequest".into()),
                ..Default::default()
            }],
            syntax: Some("proto3".into()),
            ..Default::default()
        };
        let s = Schema::from_file_protos(vec![own]).unwrap();
        assert_eq!(
            s.detail_json("type.googleapis.com/google.rpc.BadRequest", &[]),
            Some(serde_json::json!({}))
        );
        assert!(s
            .detail_json(
                "type.googleapis.com/google.protobuf.Duration",
                &[0x08, 0x01]
            )
            .is_some());
        assert_eq!(
            Schema::from_file_protos(vec![dep])
                .unwrap()
                .services()
                .len(),
            0
        );
    }
}
