//! A descriptor pool from encoded file descriptors, in any order, with their options kept:
//! `google.api.http` rules live in method options as an extension, which decoding into
//! `prost_types` would drop. Imports a set leaves out (well-known types, `google/rpc/*`,
//! `google/api/*`) are filled in from bundled copies.

use std::collections::HashSet;
use std::sync::OnceLock;

use bytes::{BufMut as _, Bytes, BytesMut};
use prost::Message as _;
use prost_reflect::DescriptorPool;

/// The `google/api/{http,annotations}.proto` descriptors, compiled by build.rs.
const GOOGLE_API: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/google_api_descriptor.bin"));

/// A `FileDescriptorSet` read as the encoded bytes of each file.
#[derive(Clone, PartialEq, prost::Message)]
struct EncodedSet {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    file: Vec<Bytes>,
}

/// The fields of a `FileDescriptorProto` needed to order files (the rest is skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct FileHead {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, repeated, tag = "3")]
    dependency: Vec<String>,
}

/// One encoded `FileDescriptorProto` with its name and imports.
#[derive(Debug, Clone)]
pub(crate) struct EncodedFile {
    pub(crate) name: String,
    pub(crate) dependency: Vec<String>,
    pub(crate) bytes: Bytes,
}

impl EncodedFile {
    /// Reads the name and imports of an encoded file.
    pub(crate) fn decode(bytes: Bytes) -> Result<EncodedFile, String> {
        let head = FileHead::decode(bytes.clone())
            .map_err(|e| format!("invalid FileDescriptorProto: {e}"))?;
        Ok(EncodedFile {
            name: head.name.unwrap_or_default(),
            dependency: head.dependency,
            bytes,
        })
    }
}

/// Splits an encoded `FileDescriptorSet` into its files.
pub(crate) fn split_set(bytes: &[u8]) -> Result<Vec<EncodedFile>, String> {
    let set = EncodedSet::decode(bytes).map_err(|e| format!("invalid FileDescriptorSet: {e}"))?;
    set.file.into_iter().map(EncodedFile::decode).collect()
}

/// Builds a pool of `files` (first copy of a name wins) plus the bundled files they import.
/// An import nobody provides gets an empty stand-in, so files that import it only for its
/// options (`google/api/field_behavior.proto`, `validate/validate.proto`, …) still load; using
/// one of its types is still an error, which names the missing files. Every bundled file that
/// does not clash with the given ones is added too, so `Any` fields and error details of those
/// types can be shown.
pub(crate) fn build_pool(files: Vec<EncodedFile>) -> Result<DescriptorPool, String> {
    let mut names: HashSet<String> = HashSet::with_capacity(files.len());
    let mut all = Vec::with_capacity(files.len());
    for file in files {
        if names.insert(file.name.clone()) {
            all.push(file);
        }
    }
    let bundled = bundled();
    let mut missing = Vec::new();
    let mut i = 0;
    while i < all.len() {
        let deps = all[i].dependency.clone();
        for dep in deps {
            if names.contains(&dep) {
                continue;
            }
            match bundled.iter().find(|f| f.name == dep) {
                Some(f) => {
                    names.insert(dep);
                    all.push(f.clone());
                }
                None => missing.push((dep, all[i].name.clone())),
            }
        }
        i += 1;
    }
    for (name, _) in &missing {
        if names.insert(name.clone()) {
            all.push(stand_in(name));
        }
    }
    let mut pool = DescriptorPool::new();
    let described: Vec<String> = missing
        .iter()
        .map(|(name, by)| format!("{name:?} (imported by {by:?})"))
        .collect();
    pool.decode_file_descriptor_set(encode_set(&all))
        .map_err(|e| match described.is_empty() {
            true => format!("invalid descriptors: {e}"),
            false => format!("missing proto files: {}: {e}", described.join(", ")),
        })?;
    if !described.is_empty() {
        tracing::warn!(
            missing = %described.join(", "),
            "descriptors import files nobody provides; loaded without them"
        );
    }
    for file in bundled {
        if pool.get_file_by_name(&file.name).is_none() {
            // A file that defines a bundled type under another name keeps its definition.
            let _ = pool.decode_file_descriptor_proto(file.bytes.clone());
        }
    }
    Ok(pool)
}

/// An empty file named `name`.
fn stand_in(name: &str) -> EncodedFile {
    let proto = prost_types::FileDescriptorProto {
        name: Some(name.to_owned()),
        syntax: Some("proto3".to_owned()),
        ..Default::default()
    };
    EncodedFile {
        name: name.to_owned(),
        dependency: Vec::new(),
        bytes: Bytes::from(proto.encode_to_vec()),
    }
}

/// The encoding of a `FileDescriptorSet` of these files (field 1, repeated).
fn encode_set(files: &[EncodedFile]) -> Bytes {
    let len: usize = files.iter().map(|f| f.bytes.len() + 11).sum();
    let mut out = BytesMut::with_capacity(len);
    for f in files {
        out.put_u8(0x0a);
        prost::encoding::encode_varint(f.bytes.len() as u64, &mut out);
        out.extend_from_slice(&f.bytes);
    }
    out.freeze()
}

/// Files bundled with the proxy, each after its imports: the well-known types (from
/// prost-reflect), `google/rpc/*` (from tonic-types) and `google/api/{http,annotations}`.
pub(crate) fn bundled() -> &'static [EncodedFile] {
    static FILES: OnceLock<Vec<EncodedFile>> = OnceLock::new();
    FILES.get_or_init(|| {
        let mut files: Vec<EncodedFile> = DescriptorPool::global()
            .files()
            .map(|f| {
                let proto = f.file_descriptor_proto();
                EncodedFile {
                    name: proto.name().to_owned(),
                    dependency: proto.dependency.clone(),
                    bytes: Bytes::from(proto.encode_to_vec()),
                }
            })
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
                if !files.iter().any(|f| f.name == file.name()) {
                    files.push(EncodedFile {
                        name: file.name().to_owned(),
                        dependency: file.dependency.clone(),
                        bytes: Bytes::from(file.encode_to_vec()),
                    });
                }
            }
        }
        if let Ok(api) = split_set(GOOGLE_API) {
            for file in api {
                if !files.iter().any(|f| f.name == file.name) {
                    files.push(file);
                }
            }
        }
        files
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bundled_files_resolve_and_include_google_api() {
        let names: Vec<&str> = bundled().iter().map(|f| f.name.as_str()).collect();
        for want in [
            "google/protobuf/descriptor.proto",
            "google/protobuf/timestamp.proto",
            "google/rpc/status.proto",
            "google/rpc/error_details.proto",
            "google/api/http.proto",
            "google/api/annotations.proto",
        ] {
            assert!(names.contains(&want), "{want} not bundled: {names:?}");
        }
        let pool = build_pool(vec![]).unwrap();
        assert!(pool.get_extension_by_name("google.api.http").is_some());
        assert!(pool.get_message_by_name("google.rpc.BadRequest").is_some());
    }

    #[test]
    fn set_round_trip_keeps_bytes() {
        let files: Vec<EncodedFile> = bundled().iter().take(3).cloned().collect();
        let back = split_set(&encode_set(&files)).unwrap();
        assert_eq!(back.len(), 3);
        for (a, b) in files.iter().zip(&back) {
            assert_eq!(a.bytes, b.bytes);
            assert_eq!(a.name, b.name);
        }
        assert!(split_set(b"\xff\xff").is_err());
    }
}
