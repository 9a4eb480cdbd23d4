//! A plain snapshot of an upstream's state, for metrics and the admin endpoints.

use std::sync::Arc;

/// What the balancer makes of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EndpointState {
    /// Picked by the balancer.
    Healthy,
    /// Taken out by outlier detection for a while.
    Ejected,
    /// Taken out by active health checks (NOT_SERVING, no answer, or not checked yet).
    Unhealthy,
    /// Left the upstream (gone from DNS, or the upstream was rebuilt): finishing its calls.
    Draining,
}

impl EndpointState {
    /// The label value: `healthy`, `ejected`, `unhealthy` or `draining`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EndpointState::Healthy => "healthy",
            EndpointState::Ejected => "ejected",
            EndpointState::Unhealthy => "unhealthy",
            EndpointState::Draining => "draining",
        }
    }
}

/// One endpoint in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointStats {
    /// `address:port` (IPv6 in brackets).
    pub(crate) address: Arc<str>,
    pub(crate) state: EndpointState,
    /// Calls in flight on it.
    pub(crate) in_flight: usize,
    /// Its open HTTP/2 connections.
    pub(crate) connections: usize,
}

/// An upstream's state at one moment; counters are cumulative since the upstream was built
/// (they carry over with it across reloads that leave its config unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamStats {
    /// The configured name.
    pub(crate) upstream: Arc<str>,
    /// Current endpoints, then draining ones.
    pub(crate) endpoints: Vec<EndpointStats>,
    /// Outlier ejections so far.
    pub(crate) ejections_total: u64,
    /// Retries by route retry policies so far.
    pub(crate) retries_total: u64,
    /// Transparent retries (of calls no endpoint processed) so far.
    pub(crate) transparent_retries_total: u64,
    /// Open HTTP/2 connections over all endpoints.
    pub(crate) connections_open: usize,
    /// No endpoint is usable, so calls go to all of them.
    pub(crate) panic: bool,
}

impl UpstreamStats {
    /// Endpoints in `state`.
    pub(crate) fn count(&self, state: EndpointState) -> usize {
        self.endpoints.iter().filter(|e| e.state == state).count()
    }
}
