//! Upstreams: a pool of long-lived, multiplexed HTTP/2 connections per endpoint.

mod conn;
mod pool;
pub(crate) mod reflection;
pub(crate) mod schema;
pub(crate) mod tls;

pub(crate) use conn::UpstreamBody;
pub(crate) use pool::{SendError, StreamGuard, UpstreamClient};
