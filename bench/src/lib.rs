//! Shared parts of the benchmark programs: the test service (for the backend and the tonic-web
//! peer), wire helpers for the load generator, /proc readers, and the report.

pub mod bidi;
pub mod procfs;
pub mod service;
pub mod wire;

/// Generated code of `switchboard.testing.v1` (server side only; `bytes` fields are `Bytes`).
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("switchboard.testing.v1");
}

/// The FileDescriptorSet of testing.proto.
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/testing_descriptor.bin"));

/// The FileDescriptorSet of testing.proto with the bench's `google.api.http` rules (see
/// build.rs), for Switchboard's JSON transcoding and REST.
pub const REST_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/testing_rest_descriptor.bin"));

/// HTTP/2 settings every server and client of the harness uses: the same as Switchboard's, so
/// flow control windows are never what a comparison measures.
pub mod h2 {
    /// Initial stream window.
    pub const STREAM_WINDOW: u32 = 4 << 20;
    /// Initial connection window.
    pub const CONN_WINDOW: u32 = 16 << 20;
    /// Max frame size.
    pub const MAX_FRAME: u32 = 64 << 10;
    /// Max concurrent streams a baseline server accepts per connection (Switchboard: 1000).
    pub const MAX_STREAMS: u32 = 1000;
}

/// Tokio runtime for a server: one worker per core this process may run on (with `taskset
/// -c N` that is one), like Switchboard's own `new_multi_thread()`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
