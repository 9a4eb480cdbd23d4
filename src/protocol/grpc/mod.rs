//! Native gRPC, the hub every caller protocol translates to and from: framing, status,
//! timeouts and metadata rules.

pub mod frame;
pub mod metadata;
pub mod status;
pub mod timeout;

pub use status::{Code, Status};

/// `content-type` of gRPC requests with the proto codec.
pub const CONTENT_TYPE_PROTO: &str = "application/grpc";
/// `content-type` of gRPC requests with the JSON codec.
pub const CONTENT_TYPE_JSON: &str = "application/grpc+json";
/// The compression of a call's messages.
pub(crate) const GRPC_ENCODING: http::HeaderName = http::HeaderName::from_static("grpc-encoding");
/// The compressions a peer accepts.
pub(crate) const GRPC_ACCEPT_ENCODING: http::HeaderName =
    http::HeaderName::from_static("grpc-accept-encoding");
