//! One endpoint of an upstream: an address, its connection pool, and what decides whether
//! the balancer may pick it (outlier ejection, active health, draining).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;
use rustls::pki_types::ServerName;
use tokio::time::Instant;

use super::pool::Pool;
use super::shared::Shared;
use super::stats::EndpointState;

/// Why a call counted against an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection could be made (refused, timed out, TLS or HTTP/2 handshake failed).
    Connect,
    /// The stream was reset or its connection lost.
    Stream,
    /// The call ended at its deadline without a byte from the endpoint.
    Silent,
}

impl Failure {
    /// Whether a call that got nothing from the endpoint and ends now ended at its deadline,
    /// so the endpoint failed it. Callers enforce their deadline too (grpc-go, tonic, grpc-js)
    /// and their clock started before the request reached the proxy, so their cancel arrives
    /// a little before the proxy's own timer fires (by their network and scheduling delay,
    /// which grows on a busy machine): a call ending within 50 ms of its deadline timed out.
    pub(crate) fn timed_out(deadline: Instant) -> bool {
        Instant::now() + std::time::Duration::from_millis(50) >= deadline
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect failures",
            Failure::Stream => "reset or lost streams",
            Failure::Silent => "calls timed out without an answer",
        }
    }
}

/// What active health checks last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// No check configured, or the last check answered SERVING.
    Serving,
    /// Checks are configured and none has answered yet.
    Unknown,
    /// The last check answered something else, or nothing in time.
    NotServing,
}

/// The slowly changing state of an endpoint, changed under its lock (never on the per-call
/// path: a call only reads the published endpoint lists).
#[derive(Debug)]
pub(crate) struct Status {
    /// Ejected by outlier detection until then.
    pub(crate) ejected_until: Option<Instant>,
    /// Ejections in a row: each one lasts twice the one before, up to the maximum.
    pub(crate) ejections: u32,
    /// When the last ejection ended (a long healthy spell forgets earlier ejections).
    pub(crate) restored_at: Option<Instant>,
    pub(crate) health: Health,
    /// No longer in DNS (or the upstream is gone): takes no new call.
    pub(crate) draining: bool,
}

impl Status {
    /// Whether the balancer may pick it (outside panic mode).
    pub(crate) fn usable(&self) -> bool {
        !self.draining && self.ejected_until.is_none() && self.health == Health::Serving
    }

    pub(crate) fn state(&self) -> EndpointState {
        if self.draining {
            EndpointState::Draining
        } else if self.ejected_until.is_some() {
            EndpointState::Ejected
        } else if self.health != Health::Serving {
            EndpointState::Unhealthy
        } else {
            EndpointState::Healthy
        }
    }
}

/// One address of an upstream.
pub(crate) struct Endpoint {
    /// `address:port`, as logs, stats and the access log name it.
    pub(crate) label: Arc<str>,
    pub(crate) addr: SocketAddr,
    /// `http` or `https`.
    pub(crate) scheme: Scheme,
    /// The `:authority` requests carry: the endpoint as configured (a DNS name stays a name).
    pub(crate) authority: Authority,
    /// The name its TLS certificate must have (`https` only).
    pub(crate) tls_name: Option<ServerName<'static>>,
    pub(crate) pool: Pool,
    /// The upstream; weak, as the upstream holds its endpoints.
    pub(crate) shared: Weak<Shared>,
    /// Failures since the last success.
    failures: AtomicU32,
    status: Mutex<Status>,
    /// Set once it left the upstream: its health checks stop.
    removed: AtomicBool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("label", &self.label)
            .finish()
    }
}

impl Endpoint {
    pub(crate) fn new(
        addr: SocketAddr,
        scheme: Scheme,
        authority: Authority,
        tls_name: Option<ServerName<'static>>,
        shared: Weak<Shared>,
        health: Health,
    ) -> Endpoint {
        Endpoint {
            label: Arc::from(addr.to_string()),
            addr,
            scheme,
            authority,
            tls_name,
            pool: Pool::default(),
            shared,
            failures: AtomicU32::new(0),
            status: Mutex::new(Status {
                ejected_until: None,
                ejections: 0,
                restored_at: None,
                health,
                draining: false,
            }),
            removed: AtomicBool::new(false),
        }
    }

    /// The absolute URI of a request to `path` on this endpoint.
    pub(crate) fn uri(&self, path: &PathAndQuery) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path.clone());
        Uri::from_parts(parts).unwrap_or_default()
    }

    pub(crate) fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A response head arrived. Usually the count is already zero: then this only reads it.
    pub(crate) fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A call failed here; enough failures in a row eject the endpoint.
    pub(crate) fn failed(self: &Arc<Self>, why: Failure) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        if let Some(outlier) = shared.config.outlier {
            if n >= outlier.consecutive_failures {
                self.failures.store(0, Ordering::Relaxed);
                shared.eject(self, why, n);
            }
        }
    }

    /// Calls in flight on it.
    pub(crate) fn in_flight(&self) -> usize {
        self.pool.in_flight()
    }

    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
}
