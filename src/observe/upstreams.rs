//! Upstream state as metrics, read at scrape time: endpoints by state, ejections, retries and
//! open connections per upstream. The upstream client gives a plain snapshot
//! ([`UpstreamStats`]); this module only turns it into metric families.

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// The state of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndpointState {
    /// In rotation.
    Healthy,
    /// Failing its active health checks.
    Unhealthy,
    /// Ejected by outlier detection for a while.
    Ejected,
}

impl EndpointState {
    const ALL: [EndpointState; 3] = [
        EndpointState::Healthy,
        EndpointState::Unhealthy,
        EndpointState::Ejected,
    ];

    fn label(self) -> &'static str {
        match self {
            EndpointState::Healthy => "healthy",
            EndpointState::Unhealthy => "unhealthy",
            EndpointState::Ejected => "ejected",
        }
    }
}

/// What metrics need of one upstream at a moment.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamStats {
    /// The configured name.
    pub(crate) name: String,
    /// Each endpoint's state (one per resolved address).
    pub(crate) endpoints: Vec<EndpointState>,
    /// Ejections since the client was made.
    pub(crate) ejections: u64,
    /// Retried attempts since the client was made.
    pub(crate) retries: u64,
    /// HTTP/2 connections open now.
    pub(crate) connections: u64,
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value.to_owned());
    l
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn gauge(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_gauge(g);
    m.set_label(labels);
    m
}

fn counter(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut m = Metric::default();
    m.set_counter(c);
    m.set_label(labels);
    m
}

/// The families of `upstreams`' state.
pub(crate) fn families(upstreams: &[UpstreamStats]) -> Vec<MetricFamily> {
    let mut endpoints = Vec::new();
    let mut ejections = Vec::new();
    let mut retries = Vec::new();
    let mut connections = Vec::new();
    for u in upstreams {
        for state in EndpointState::ALL {
            let n = u.endpoints.iter().filter(|s| **s == state).count();
            endpoints.push(gauge(
                vec![label("upstream", &u.name), label("state", state.label())],
                n as f64,
            ));
        }
        ejections.push(counter(
            vec![label("upstream", &u.name)],
            u.ejections as f64,
        ));
        retries.push(counter(vec![label("upstream", &u.name)], u.retries as f64));
        connections.push(gauge(
            vec![label("upstream", &u.name)],
            u.connections as f64,
        ));
    }
    vec![
        family(
            "switchboard_upstream_endpoints",
            "Upstream endpoints by state (healthy, unhealthy, ejected).",
            MetricType::GAUGE,
            endpoints,
        ),
        family(
            "switchboard_upstream_ejections_total",
            "Endpoints ejected by outlier detection, by upstream.",
            MetricType::COUNTER,
            ejections,
        ),
        family(
            "switchboard_upstream_retries_total",
            "Calls retried on another attempt, by upstream.",
            MetricType::COUNTER,
            retries,
        ),
        family(
            "switchboard_upstream_connections",
            "HTTP/2 connections open to upstream endpoints, by upstream.",
            MetricType::GAUGE,
            connections,
        ),
    ]
}
