//! The context of one call: who called, how, where it went, and how it ended. It is created
//! once when the request arrives and travels with the call (an `Arc`): stages read it instead
//! of deriving the same facts again, and the parts of the proxy that learn something (the
//! endpoint that served it, the status it ended with, the bytes it moved) record it here.
//! When the response body is dropped, the observe stage turns it into metrics and a log line.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method, Uri};

use super::methods::{GrpcType, MethodSeries};
use super::trace::{SpanSlot, TraceIds};
use super::Observer;
use crate::protocol::grpc::Code;

/// The protocol label of a call (the `protocol` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum CallProtocol {
    /// Not an RPC (preflight, static file, refused before classification).
    Http = 0,
    /// gRPC-Web binary.
    GrpcWeb = 1,
    /// gRPC-Web text.
    GrpcWebText = 2,
    /// Connect (unary, GET, streams).
    Connect = 3,
    /// Native gRPC.
    Grpc = 4,
    /// REST from `google.api.http` rules.
    Rest = 5,
    /// improbable-eng's WebSocket transport.
    WebSocket = 6,
}

impl CallProtocol {
    /// How many there are.
    pub(crate) const COUNT: usize = 7;
    /// All of them, in `repr` order.
    pub(crate) const ALL: [CallProtocol; CallProtocol::COUNT] = [
        CallProtocol::Http,
        CallProtocol::GrpcWeb,
        CallProtocol::GrpcWebText,
        CallProtocol::Connect,
        CallProtocol::Grpc,
        CallProtocol::Rest,
        CallProtocol::WebSocket,
    ];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            CallProtocol::Http => "http",
            CallProtocol::GrpcWeb => "grpc_web",
            CallProtocol::GrpcWebText => "grpc_web_text",
            CallProtocol::Connect => "connect",
            CallProtocol::Grpc => "grpc",
            CallProtocol::Rest => "rest",
            CallProtocol::WebSocket => "websocket",
        }
    }

    fn from_u8(n: u8) -> CallProtocol {
        match n {
            1 => CallProtocol::GrpcWeb,
            2 => CallProtocol::GrpcWebText,
            3 => CallProtocol::Connect,
            4 => CallProtocol::Grpc,
            5 => CallProtocol::Rest,
            6 => CallProtocol::WebSocket,
            _ => CallProtocol::Http,
        }
    }
}

/// Facts about the connection a request came on, shared by its requests, and how busy it is.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    /// The TCP peer.
    pub(crate) peer: SocketAddr,
    /// The peer's IP (IPv4-mapped IPv6 as IPv4) as a header value, made once per connection
    /// for `X-Forwarded-For`.
    pub(crate) peer_ip: HeaderValue,
    /// The listener's name (metrics label, log field).
    pub(crate) listener: Arc<str>,
    /// Whether the connection is TLS (for `X-Forwarded-Proto`).
    pub(crate) tls: bool,
    /// The verified client certificate's identity (mTLS), when one was presented.
    pub(crate) client_identity: Option<HeaderValue>,
    /// The header that carries `client_identity` upstream (always stripped from callers).
    pub(crate) identity_header: Option<http::HeaderName>,
    /// Calls in flight (their contexts alive).
    calls: AtomicUsize,
    /// Whether any request has arrived.
    seen: AtomicBool,
    /// When the last call ended, in milliseconds since `opened`.
    idle_since_ms: AtomicU64,
    opened: Instant,
    /// What stays taken while this lives (see [`ConnInfo::hold`]).
    held: OnceLock<Held>,
    /// `peer` as text, made once for the access log of the connection's calls.
    peer_text: OnceLock<Box<str>>,
}

/// Something kept alive with a connection's info.
struct Held(#[allow(dead_code)] Box<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

impl ConnInfo {
    pub(crate) fn new(
        peer: SocketAddr,
        listener: Arc<str>,
        tls: bool,
        client_identity: Option<HeaderValue>,
        identity_header: Option<http::HeaderName>,
    ) -> ConnInfo {
        let ip = peer.ip().to_canonical();
        ConnInfo {
            peer,
            peer_ip: HeaderValue::from_str(&ip.to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            listener,
            tls,
            client_identity,
            identity_header,
            calls: AtomicUsize::new(0),
            seen: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            opened: Instant::now(),
            held: OnceLock::new(),
            peer_text: OnceLock::new(),
        }
    }

    /// The TCP peer as `ip:port`.
    pub(crate) fn peer_text(&self) -> &str {
        self.peer_text.get_or_init(|| self.peer.to_string().into())
    }

    /// Keeps `guard` until the connection's info is dropped: after its HTTP server and its
    /// last call (every call's context holds the info). An upgraded connection (a WebSocket)
    /// outlives its HTTP server, and stays counted as open while its call goes on.
    pub(crate) fn hold(&self, guard: impl std::any::Any + Send + Sync) {
        let _ = self.held.set(Held(Box::new(guard)));
    }

    /// Whether a request has arrived on the connection.
    pub(crate) fn has_seen_request(&self) -> bool {
        self.seen.load(Ordering::Relaxed)
    }

    /// Since when no call has been in flight; none while one is.
    pub(crate) fn idle_since(&self) -> Option<tokio::time::Instant> {
        if self.calls.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.idle_since_ms.load(Ordering::Relaxed);
        Some(tokio::time::Instant::from_std(
            self.opened + std::time::Duration::from_millis(ms),
        ))
    }

    fn call_started(&self) {
        crate::activity::mark();
        self.seen.store(true, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::AcqRel);
    }

    fn call_ended(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.idle_since_ms.store(ms, Ordering::Relaxed);
        self.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

const NO_CODE: u8 = u8::MAX;

/// One call's context. See the module doc.
#[derive(Debug)]
pub(crate) struct CallContext {
    /// The `x-request-id` (the caller's when it sent one).
    pub(crate) request_id: HeaderValue,
    /// When the request arrived.
    pub(crate) start: Instant,
    /// The same moment on the wall clock, for the log.
    pub(crate) wall: SystemTime,
    /// The connection.
    pub(crate) conn: Arc<ConnInfo>,
    /// The client's address (after `trusted_proxies`).
    pub(crate) client_ip: IpAddr,
    /// The HTTP method.
    pub(crate) http_method: Method,
    /// The request URI (path and query; cheap to clone).
    pub(crate) uri: Uri,
    /// The caller's `user-agent`.
    pub(crate) user_agent: Option<HeaderValue>,
    protocol: AtomicU8,
    code: AtomicU8,
    http_status: AtomicU16,
    /// Request body bytes received from the caller.
    pub(crate) bytes_in: AtomicU64,
    /// Response body bytes sent to the caller.
    pub(crate) bytes_out: AtomicU64,
    /// The route's upstream (config name), once routed.
    pub(crate) upstream: OnceLock<Arc<str>>,
    /// The endpoint that served the call, once known.
    pub(crate) endpoint: OnceLock<Arc<str>>,
    /// The `/package.Service/Method` the call is for, when it differs from the URI path (REST,
    /// WebSocket); the URI path otherwise.
    pub(crate) rpc_path: OnceLock<Arc<str>>,
    /// The method's kind, when a schema or the protocol tells.
    pub(crate) grpc_type: OnceLock<GrpcType>,
    /// The span being recorded for export, ended when the call finishes.
    span: Option<Box<SpanSlot>>,
    /// The observe stage of the snapshot the call started on; it sees the call end when the
    /// context is dropped (every holder is done with the call).
    observer: Arc<Observer>,
    /// Set once the observe stage has seen the call start (it was classified).
    pub(crate) observed: AtomicBool,
    /// The method's series, when its start was counted under its own name.
    pub(crate) series: OnceLock<Arc<MethodSeries>>,
    /// Whether a response message reached the caller (the method exists).
    answered: AtomicBool,
    /// Whether a message failed to transcode between JSON and protobuf.
    transcoding_failed: AtomicBool,
}

impl CallContext {
    /// A context for a request that just arrived.
    pub(crate) fn new(
        request_id: HeaderValue,
        conn: Arc<ConnInfo>,
        client_ip: IpAddr,
        parts: &http::request::Parts,
        observer: Arc<Observer>,
        trace: Option<(TraceIds, Option<Box<SpanSlot>>)>,
        wall: SystemTime,
    ) -> CallContext {
        conn.call_started();
        // The ids travel in the headers already; the span (when exported) keeps its own.
        let span = trace.and_then(|(_, span)| span);
        CallContext {
            grpc_type: OnceLock::new(),
            span,
            observer,
            observed: AtomicBool::new(false),
            series: OnceLock::new(),
            answered: AtomicBool::new(false),
            transcoding_failed: AtomicBool::new(false),
            request_id,
            start: Instant::now(),
            wall,
            client_ip,
            conn,
            http_method: parts.method.clone(),
            uri: parts.uri.clone(),
            user_agent: parts.headers.get(http::header::USER_AGENT).cloned(),
            protocol: AtomicU8::new(CallProtocol::Http as u8),
            code: AtomicU8::new(NO_CODE),
            http_status: AtomicU16::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            upstream: OnceLock::new(),
            endpoint: OnceLock::new(),
            rpc_path: OnceLock::new(),
        }
    }

    /// Records the protocol, once classified.
    pub(crate) fn set_protocol(&self, p: CallProtocol) {
        self.protocol.store(p as u8, Ordering::Relaxed);
    }

    /// The protocol.
    pub(crate) fn protocol(&self) -> CallProtocol {
        CallProtocol::from_u8(self.protocol.load(Ordering::Relaxed))
    }

    /// Records the status the call ended with (the first one recorded wins).
    pub(crate) fn set_code(&self, code: Code) {
        let _ =
            self.code
                .compare_exchange(NO_CODE, code as u8, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The status the call ended with, when one was recorded.
    pub(crate) fn code(&self) -> Option<Code> {
        match self.code.load(Ordering::Relaxed) {
            NO_CODE => None,
            n => Some(Code::from_i32(i32::from(n))),
        }
    }

    /// Records the response's HTTP status.
    pub(crate) fn set_http_status(&self, status: http::StatusCode) {
        self.http_status.store(status.as_u16(), Ordering::Relaxed);
    }

    /// The response's HTTP status (0 before there is one).
    pub(crate) fn http_status(&self) -> u16 {
        self.http_status.load(Ordering::Relaxed)
    }

    /// The `/package.Service/Method` path of the call.
    pub(crate) fn rpc_path(&self) -> &str {
        self.rpc_path
            .get()
            .map(|p| &**p)
            .unwrap_or_else(|| self.uri.path())
    }

    /// Adds to the request bytes.
    pub(crate) fn add_bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Records that a response message reached the caller.
    pub(crate) fn set_answered(&self) {
        if !self.answered.load(Ordering::Relaxed) {
            self.answered.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a response message reached the caller.
    pub(crate) fn answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    /// Records that a message failed to transcode.
    pub(crate) fn set_transcoding_failed(&self) {
        self.transcoding_failed.store(true, Ordering::Relaxed);
    }

    /// Whether a message failed to transcode.
    pub(crate) fn transcoding_failed(&self) -> bool {
        self.transcoding_failed.load(Ordering::Relaxed)
    }
}

impl Drop for CallContext {
    fn drop(&mut self) {
        let span = self.span.take();
        self.observer.finished(self, span);
        self.conn.call_ended();
    }
}
