//! Upstreams: endpoints (literal addresses, or DNS names re-resolved every `dns_refresh`),
//! each with a pool of long-lived, multiplexed HTTP/2 connections; a balancer over the usable
//! ones (outlier ejection, active health checks); safe retries; TLS and mTLS.
//!
//! ```text
//! UpstreamClient::start ─▶ balancer (round robin | least request, lock-free lists)
//!   ─▶ endpoint pool (least busy connection; grows in the background)
//!   ─▶ connection (h2; headers and ready body in one write) ─▶ StreamGuard in the body
//!        reports: response head = success; reset, lost connection, silence until the
//!        deadline = failure (outlier ejection; silence also PINGs the connection)
//! background: DNS refresh, ejection ends, draining; per endpoint: grpc.health.v1 checks
//! ```

mod balancer;
mod client;
mod conn;
mod connect;
mod dns;
mod endpoint;
mod events;
mod health;
mod keepalive;
mod pipe;
mod pool;
pub(crate) mod reflection;
mod retry;
pub(crate) mod schema;
mod shared;
mod stats;
#[cfg(test)]
mod tests;
pub(crate) mod tls;

pub(crate) use client::{Answer, UpstreamClient};
pub(crate) use conn::UpstreamBody;
pub(crate) use retry::RetrySpec;
pub(crate) use stats::{EndpointState, UpstreamStats};
