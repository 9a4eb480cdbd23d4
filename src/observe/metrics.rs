//! Prometheus metrics: one registry for the life of the process (it outlives reloads), the
//! grpc-prometheus families with the proxy's `protocol` and `upstream` labels, and the
//! `switchboard_*` series. Rendered as Prometheus text by the `prometheus` crate.
//!
//! Label values stay bounded: a method is counted under its own name only once it is known
//! to exist (see [`super::methods`]); everything else shares `unknown`.

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use super::context::CallProtocol;
use super::methods::MethodTable;

/// The label names of the per-method families, in order (`grpc_code` follows for
/// `grpc_server_handled_total`).
pub(crate) const METHOD_LABELS: [&str; 5] = [
    "grpc_type",
    "grpc_service",
    "grpc_method",
    "protocol",
    "upstream",
];

/// grpc-prometheus's (and Prometheus's) default latency buckets, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every series the proxy records.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) started: IntCounterVec,
    pub(crate) handled: IntCounterVec,
    pub(crate) handling: HistogramVec,
    in_flight: [IntGauge; CallProtocol::COUNT],
    pub(crate) request_bytes: IntCounterVec,
    pub(crate) response_bytes: IntCounterVec,
    connections_open: IntGaugeVec,
    connections_accepted: IntCounterVec,
    connections_rejected: IntCounterVec,
    reloads: IntCounterVec,
    config_errors: IntCounter,
    cors_refusals: IntCounterVec,
    policy_refusals: IntCounterVec,
    transcoding_errors: IntCounterVec,
    pub(crate) access_log_dropped: IntCounter,
    /// Methods known to exist, per upstream, with their series.
    pub(crate) methods: MethodTable,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The series of one listener's connections, looked up once when it is bound.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionMetrics {
    /// Open now.
    pub(crate) open: IntGauge,
    /// Accepted.
    pub(crate) accepted: IntCounter,
    /// Closed at once because the listener was at `limits.max_connections`.
    pub(crate) rejected: IntCounter,
}

type Built<T> = prometheus::Result<T>;

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Built<IntCounterVec> {
    register(r, IntCounterVec::new(Opts::new(name, help), labels)?)
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Built<IntGaugeVec> {
    register(r, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

fn counter(r: &Registry, name: &str, help: &str) -> Built<IntCounter> {
    register(r, IntCounter::with_opts(Opts::new(name, help))?)
}

fn register<C: Collector + Clone + 'static>(r: &Registry, c: C) -> Built<C> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// A registry with every family registered. Fails only on an invalid or duplicate
    /// definition below (the unit tests build it).
    pub(crate) fn new() -> Built<Metrics> {
        let r = Registry::new();
        let mut handled_labels = METHOD_LABELS.to_vec();
        handled_labels.push("grpc_code");
        let started = counter_vec(
            &r,
            "grpc_server_started_total",
            "Calls started, by method, protocol and upstream (methods not known to exist share grpc_service=\"unknown\").",
            &METHOD_LABELS,
        )?;
        let handled = counter_vec(
            &r,
            "grpc_server_handled_total",
            "Calls finished, by method, protocol, upstream and gRPC status code.",
            &handled_labels,
        )?;
        let handling = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "grpc_server_handling_seconds",
                    "Time from a call's arrival to its end (last byte of the response), in seconds.",
                )
                .buckets(BUCKETS.to_vec()),
                &METHOD_LABELS,
            )?,
        )?;
        let in_flight_vec = gauge_vec(
            &r,
            "switchboard_calls_in_flight",
            "Calls classified and not yet finished, by protocol.",
            &["protocol"],
        )?;
        let mut in_flight = Vec::with_capacity(CallProtocol::COUNT);
        for p in CallProtocol::ALL {
            in_flight.push(in_flight_vec.get_metric_with_label_values(&[p.label()])?);
        }
        let in_flight = <[IntGauge; CallProtocol::COUNT]>::try_from(in_flight)
            .map_err(|_| prometheus::Error::Msg("protocol count".into()))?;
        Ok(Metrics {
            started,
            handled,
            handling,
            in_flight,
            request_bytes: counter_vec(
                &r,
                "switchboard_request_bytes_total",
                "Request body bytes received from callers (as sent, before decoding), by protocol and upstream.",
                &["protocol", "upstream"],
            )?,
            response_bytes: counter_vec(
                &r,
                "switchboard_response_bytes_total",
                "Response body bytes sent to callers, by protocol and upstream.",
                &["protocol", "upstream"],
            )?,
            connections_open: gauge_vec(
                &r,
                "switchboard_connections_open",
                "Caller connections open, by listener.",
                &["listener"],
            )?,
            connections_accepted: counter_vec(
                &r,
                "switchboard_connections_accepted_total",
                "Caller connections accepted, by listener.",
                &["listener"],
            )?,
            connections_rejected: counter_vec(
                &r,
                "switchboard_connections_rejected_total",
                "Caller connections closed at once because the listener was at limits.max_connections.",
                &["listener"],
            )?,
            reloads: counter_vec(
                &r,
                "switchboard_reloads_total",
                "Config reloads, by result (applied or refused).",
                &["result"],
            )?,
            config_errors: counter(
                &r,
                "switchboard_config_errors_total",
                "Config files refused on reload (invalid YAML, values, references or files).",
            )?,
            cors_refusals: counter_vec(
                &r,
                "switchboard_cors_refusals_total",
                "Requests refused by the cross-origin policy: preflights not allowed, and cross-site calls from origins not allowed.",
                &["reason"],
            )?,
            policy_refusals: counter_vec(
                &r,
                "switchboard_policy_refusals_total",
                "Calls refused by a route's policy: unauthenticated, permission_denied (auth) or resource_exhausted (rate limit).",
                &["reason"],
            )?,
            transcoding_errors: counter_vec(
                &r,
                "switchboard_transcoding_errors_total",
                "Messages that could not be transcoded between JSON and protobuf, by upstream.",
                &["upstream"],
            )?,
            access_log_dropped: counter(
                &r,
                "switchboard_access_log_dropped_total",
                "Access log lines dropped because stderr could not keep up.",
            )?,
            methods: MethodTable::default(),
            registry: r,
        })
    }

    /// The gauge of calls in flight of a protocol.
    pub(crate) fn in_flight(&self, p: CallProtocol) -> &IntGauge {
        &self.in_flight[p as usize]
    }

    /// The series of a listener's connections (none only if a label count were wrong).
    pub(crate) fn connections(&self, listener: &str) -> Option<ConnectionMetrics> {
        let labels = [listener];
        Some(ConnectionMetrics {
            open: self
                .connections_open
                .get_metric_with_label_values(&labels)
                .ok()?,
            accepted: self
                .connections_accepted
                .get_metric_with_label_values(&labels)
                .ok()?,
            rejected: self
                .connections_rejected
                .get_metric_with_label_values(&labels)
                .ok()?,
        })
    }

    /// Counts a reload: applied, or refused (a config error).
    pub(crate) fn reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        if let Ok(c) = self.reloads.get_metric_with_label_values(&[result]) {
            c.inc();
        }
        if !applied {
            self.config_errors.inc();
        }
    }

    /// Counts a request refused by the cross-origin policy.
    pub(crate) fn cors_refusal(&self, reason: &str) {
        if let Ok(c) = self.cors_refusals.get_metric_with_label_values(&[reason]) {
            c.inc();
        }
    }

    /// Counts a call refused by a route's auth or rate limit, by its gRPC code name.
    pub(crate) fn policy_refusal(&self, reason: &str) {
        if let Ok(c) = self.policy_refusals.get_metric_with_label_values(&[reason]) {
            c.inc();
        }
    }

    /// Counts a transcoding failure.
    pub(crate) fn transcoding_error(&self, upstream: &str) {
        if let Ok(c) = self
            .transcoding_errors
            .get_metric_with_label_values(&[upstream])
        {
            c.inc();
        }
    }

    /// Every family, with `extra` (built at scrape time) merged in, in name order.
    pub(crate) fn gather(&self, extra: Vec<MetricFamily>) -> Vec<MetricFamily> {
        let mut families = self.registry.gather();
        families.extend(extra);
        families.sort_by(|a, b| a.name().cmp(b.name()));
        families
    }

    /// The Prometheus text exposition of every family plus `extra`.
    pub(crate) fn render(&self, extra: Vec<MetricFamily>) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&self.gather(extra), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_valid_prometheus_text() {
        let m = Metrics::new().unwrap();
        m.reload(true);
        m.reload(false);
        m.cors_refusal("preflight");
        m.transcoding_error("backend");
        m.connections("main").unwrap().accepted.inc();
        m.in_flight(CallProtocol::Grpc).inc();
        let series = m
            .methods
            .admit("backend", "/a.B/C", super::super::methods::GrpcType::Unary);
        let p = series.protocol(&m, CallProtocol::GrpcWeb).unwrap();
        p.start();
        p.finish(&m, crate::protocol::grpc::Code::Ok, 0.01);
        let text = m.render(Vec::new());
        for family in [
            "grpc_server_started_total",
            "grpc_server_handled_total",
            "grpc_server_handling_seconds",
            "switchboard_calls_in_flight",
            "switchboard_reloads_total",
            "switchboard_config_errors_total",
            "switchboard_connections_accepted_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing:\n{text}"
            );
        }
        assert!(
            text.contains("switchboard_reloads_total{result=\"refused\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"C\",grpc_service=\"a.B\",grpc_type=\"unary\",protocol=\"grpc_web\",upstream=\"backend\"} 1"),
            "{text}"
        );
    }
}
