//! Switchboard lets browsers and other HTTP/1.1 clients call gRPC services.
//!
//! ```text
//! TCP accept ─▶ (TLS, ALPN h2/http1.1) ─▶ hyper-util auto server (HTTP/1.1 + HTTP/2)
//!   ─▶ CORS preflight? ─▶ protocol::detect ─▶ routing ─▶ forward::{grpc_web, grpc}
//!   ─▶ upstream pool (HTTP/2 on the h2 crate, h2c or TLS, multiplexed)
//!   ◀─ messages passed through as they arrive; the end re-encoded for the caller
//! ```
//!
//! Every caller protocol translates to and from native gRPC ([`protocol::grpc`]): framing,
//! status, deadlines and metadata rules live there once. Bodies stream: message bytes are
//! forwarded in the chunks they arrived in and only frame headers are read, to enforce the
//! message size limit.
//!
//! # Limitations
//! - Native gRPC callers must use HTTP/2 (HTTP/1.1 cannot carry trailers to them).

// In the order a request meets them.
mod admin;
mod body;
mod forward;
mod gated;
mod observe;
mod policy;
pub mod protocol;
mod routing;
pub mod server;
mod upstream;

pub mod activity;
pub mod assets;
pub mod cli;
pub mod config;
pub mod demo;
#[doc(hidden)]
pub mod fuzz;
pub mod healthcheck;

pub use server::{spawn, Running};

/// The access log's hooks for the binary's runtime: a worker hands its batch of lines to the
/// writer before it parks, and what is still queued is written before the process exits.
pub mod access_log {
    pub use crate::observe::access_log::{flush as flush_all, flush_thread as on_worker_park};
}
