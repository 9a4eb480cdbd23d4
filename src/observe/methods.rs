//! Which calls get series of their own. A method is counted under its own name only once it is
//! known to exist on its upstream: a call to it ended with something other than UNIMPLEMENTED,
//! or sent a response message. Calls no route matches, calls to methods the backend does not
//! implement, malformed paths, and methods past the cap of an upstream all share
//! `grpc_service="unknown", grpc_method="unknown"`, so a caller inventing paths cannot grow
//! the label sets.
//!
//! The table keeps each known method's series handles, so a call does one lookup and then
//! only atomic adds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

use prometheus::{Histogram, IntCounter};

use super::context::CallProtocol;
use super::metrics::Metrics;
use crate::protocol::grpc::Code;

/// The table's maps: a fast hasher (keys are looked up on every call; they are only names of
/// methods shown to exist, so a caller cannot fill them with colliding keys).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The shared label value of calls whose method is not counted by name.
pub(crate) const UNKNOWN: &str = "unknown";

/// Methods counted by name per upstream; calls to further ones count as `unknown`. With 6
/// protocols, 5 types and 17 codes this bounds an upstream's label sets of the handled family
/// to a few hundred thousand in the very worst case, and in practice to the methods it has.
pub(crate) const MAX_METHODS_PER_UPSTREAM: usize = 1000;

/// The kind of a method (the `grpc_type` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum GrpcType {
    /// One request, one response.
    Unary,
    /// A request stream, one response.
    ClientStream,
    /// One request, a response stream.
    ServerStream,
    /// Streams both ways.
    BidiStream,
    /// Not known: no schema describes the method, and the protocol does not tell.
    Unknown,
}

impl GrpcType {
    /// From a method's streaming flags.
    pub(crate) fn of(client_streaming: bool, server_streaming: bool) -> GrpcType {
        match (client_streaming, server_streaming) {
            (false, false) => GrpcType::Unary,
            (true, false) => GrpcType::ClientStream,
            (false, true) => GrpcType::ServerStream,
            (true, true) => GrpcType::BidiStream,
        }
    }

    fn from_u8(n: u8) -> GrpcType {
        match n {
            0 => GrpcType::Unary,
            1 => GrpcType::ClientStream,
            2 => GrpcType::ServerStream,
            3 => GrpcType::BidiStream,
            _ => GrpcType::Unknown,
        }
    }

    /// The label value (grpc-prometheus's names).
    pub(crate) fn label(self) -> &'static str {
        match self {
            GrpcType::Unary => "unary",
            GrpcType::ClientStream => "client_stream",
            GrpcType::ServerStream => "server_stream",
            GrpcType::BidiStream => "bidi_stream",
            GrpcType::Unknown => "unknown",
        }
    }
}

/// Splits `/package.Service/Method` into service and method; none for any other shape.
pub(crate) fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| NAME_BYTES[usize::from(b)]);
    (ok(service) && ok(method)).then_some((service, method))
}

/// The bytes of a service or method name.
static NAME_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'.';
        b += 1;
    }
    t
};

/// The series of one method of one upstream (or of its `unknown` calls).
#[derive(Debug)]
pub(crate) struct MethodSeries {
    upstream: Arc<str>,
    service: Box<str>,
    method: Box<str>,
    /// The method's kind as far as known; a protocol's series take it when first made.
    grpc_type: AtomicU8,
    /// Whether this is a method's own series (not its upstream's `unknown` one).
    named: bool,
    by_protocol: [OnceLock<ProtocolSeries>; CallProtocol::COUNT],
}

/// The handles of one method called in one protocol.
#[derive(Debug)]
pub(crate) struct ProtocolSeries {
    request_bytes: IntCounter,
    response_bytes: IntCounter,
    started: IntCounter,
    handling: Histogram,
    handled: [OnceLock<IntCounter>; 17],
    labels: [String; 5],
}

impl MethodSeries {
    fn new(upstream: Arc<str>, service: &str, method: &str, grpc_type: GrpcType) -> MethodSeries {
        MethodSeries {
            upstream,
            service: service.into(),
            method: method.into(),
            grpc_type: AtomicU8::new(grpc_type as u8),
            named: !(service == UNKNOWN && method == UNKNOWN),
            by_protocol: Default::default(),
        }
    }

    /// The method's service and name, when this is its own series.
    pub(crate) fn names(&self) -> Option<(&str, &str)> {
        self.named.then_some((&*self.service, &*self.method))
    }

    /// Learns the method's kind from a call that knows it (a schema, a Connect unary call).
    pub(crate) fn learn(&self, kind: Option<GrpcType>) {
        if let Some(k) = kind.filter(|k| *k != GrpcType::Unknown) {
            if self.grpc_type.load(Ordering::Relaxed) != k as u8 {
                self.grpc_type.store(k as u8, Ordering::Relaxed);
            }
        }
    }

    /// The handles for calls in `protocol`, made on first use.
    pub(crate) fn protocol(
        &self,
        metrics: &Metrics,
        protocol: CallProtocol,
    ) -> Option<&ProtocolSeries> {
        let slot = &self.by_protocol[protocol as usize];
        if let Some(s) = slot.get() {
            return Some(s);
        }
        let kind = GrpcType::from_u8(self.grpc_type.load(Ordering::Relaxed));
        let labels = [
            kind.label().to_owned(),
            self.service.to_string(),
            self.method.to_string(),
            protocol.label().to_owned(),
            self.upstream.to_string(),
        ];
        let bytes_labels = [protocol.label(), &*self.upstream];
        let made = ProtocolSeries {
            request_bytes: metrics
                .request_bytes
                .get_metric_with_label_values(&bytes_labels)
                .ok()?,
            response_bytes: metrics
                .response_bytes
                .get_metric_with_label_values(&bytes_labels)
                .ok()?,
            started: metrics.started.get_metric_with_label_values(&labels).ok()?,
            handling: metrics
                .handling
                .get_metric_with_label_values(&labels)
                .ok()?,
            handled: Default::default(),
            labels,
        };
        Some(slot.get_or_init(|| made))
    }
}

impl ProtocolSeries {
    /// Counts a start.
    pub(crate) fn start(&self) {
        self.started.inc();
    }

    /// Counts the bytes of a call.
    pub(crate) fn bytes(&self, bytes_in: u64, bytes_out: u64) {
        if bytes_in > 0 {
            self.request_bytes.inc_by(bytes_in);
        }
        if bytes_out > 0 {
            self.response_bytes.inc_by(bytes_out);
        }
    }

    /// Counts an end with `code` after `seconds`.
    pub(crate) fn finish(&self, metrics: &Metrics, code: Code, seconds: f64) {
        self.handling.observe(seconds);
        let slot = &self.handled[code as usize];
        let counter = match slot.get() {
            Some(c) => c,
            None => {
                let [t, s, m, p, u] = &self.labels;
                let labels = [t.as_str(), s, m, p, u, code_name(code)];
                match metrics.handled.get_metric_with_label_values(&labels) {
                    Ok(c) => slot.get_or_init(|| c),
                    Err(_) => return,
                }
            }
        };
        counter.inc();
    }
}

/// The methods of one upstream. Calls read an immutable snapshot (no lock, no shared write:
/// a call's lookup costs no cache-line ping-pong between cores); adding a method copies it.
#[derive(Debug)]
struct UpstreamMethods {
    unknown: Arc<MethodSeries>,
    methods: ArcSwap<Map<Box<str>, Arc<MethodSeries>>>,
    adding: Mutex<()>,
    /// Whether reaching the cap was logged.
    full_logged: AtomicBool,
}

/// Known methods per upstream name (the empty name: calls no route matched).
#[derive(Debug, Default)]
pub(crate) struct MethodTable {
    upstreams: ArcSwap<Map<Arc<str>, Arc<UpstreamMethods>>>,
    adding: Mutex<()>,
}

impl MethodTable {
    fn upstream(&self, name: &str) -> Arc<UpstreamMethods> {
        if let Some(u) = self.upstreams.load().get(name) {
            return u.clone();
        }
        let _one = self.adding.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.upstreams.load_full();
        if let Some(u) = current.get(name) {
            return u.clone();
        }
        let name: Arc<str> = Arc::from(name);
        let u = Arc::new(UpstreamMethods {
            unknown: Arc::new(MethodSeries::new(
                name.clone(),
                UNKNOWN,
                UNKNOWN,
                GrpcType::Unknown,
            )),
            methods: ArcSwap::default(),
            adding: Mutex::new(()),
            full_logged: AtomicBool::new(false),
        });
        let mut next = (*current).clone();
        next.insert(name, u.clone());
        self.upstreams.store(Arc::new(next));
        u
    }

    /// The series of `path` on `upstream` when the method is known to exist.
    pub(crate) fn known(&self, upstream: &str, path: &str) -> Option<Arc<MethodSeries>> {
        let upstreams = self.upstreams.load();
        let u = upstreams.get(upstream)?;
        let methods = u.methods.load();
        methods.get(path).cloned()
    }

    /// The shared series of `upstream`'s calls that are not counted by name.
    pub(crate) fn unknown(&self, upstream: &str) -> Arc<MethodSeries> {
        self.upstream(upstream).unknown.clone()
    }

    /// The series of a method just shown to exist, added to the table; the `unknown` series
    /// when the path is not a method path or the upstream has [`MAX_METHODS_PER_UPSTREAM`].
    pub(crate) fn admit(
        &self,
        upstream: &str,
        path: &str,
        grpc_type: GrpcType,
    ) -> Arc<MethodSeries> {
        let u = self.upstream(upstream);
        let Some((service, method)) = split_path(path) else {
            return u.unknown.clone();
        };
        if let Some(m) = u.methods.load().get(path) {
            return m.clone();
        }
        let _one = u.adding.lock().unwrap_or_else(|p| p.into_inner());
        let current = u.methods.load_full();
        if let Some(m) = current.get(path) {
            return m.clone();
        }
        if current.len() >= MAX_METHODS_PER_UPSTREAM {
            if !u.full_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    upstream,
                    max = MAX_METHODS_PER_UPSTREAM,
                    "metrics: too many distinct methods; further ones are counted as \"unknown\""
                );
            }
            return u.unknown.clone();
        }
        let series = Arc::new(MethodSeries::new(
            u.unknown.upstream.clone(),
            service,
            method,
            grpc_type,
        ));
        let mut next = (*current).clone();
        next.insert(path.into(), series.clone());
        u.methods.store(Arc::new(next));
        series
    }
}

/// The code's name as grpc-prometheus writes it (`OK`, `UNAVAILABLE`, …).
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn method_paths_split_and_others_do_not() {
        assert_eq!(split_path("/a.b.C/D"), Some(("a.b.C", "D")));
        for bad in ["", "/", "/a", "/a/", "//b", "/a/b/c", "/a b/c", "a/b"] {
            assert_eq!(split_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_table_is_capped_per_upstream() {
        let t = MethodTable::default();
        for i in 0..MAX_METHODS_PER_UPSTREAM + 10 {
            let s = t.admit("u", &format!("/s.S/M{i}"), GrpcType::Unary);
            let want = if i < MAX_METHODS_PER_UPSTREAM {
                format!("M{i}")
            } else {
                UNKNOWN.to_owned()
            };
            assert_eq!(&*s.method, want);
        }
        assert!(t.known("u", "/s.S/M1").is_some());
        assert!(t.known("u", "/s.S/M5000").is_none());
        // Another upstream has room of its own.
        assert_eq!(&*t.admit("v", "/s.S/M0", GrpcType::Unary).method, "M0");
        assert_eq!(
            &*t.admit("v", "/not a method", GrpcType::Unary).method,
            UNKNOWN
        );
    }

    #[test]
    fn codes_are_named_like_grpc_prometheus() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
        assert_eq!(code_name(Code::from_i32(16)), "UNAUTHENTICATED");
    }
}
