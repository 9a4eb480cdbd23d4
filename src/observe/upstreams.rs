//! Upstream state as metrics, read at scrape time: endpoints by state, ejections, retries and
//! open connections per upstream. The upstream client gives a plain snapshot
//! ([`UpstreamStats`]); this module only turns it into metric families.

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

pub(crate) use crate::upstream::{EndpointState, UpstreamStats};

/// Every state an endpoint can be in, in label order.
const STATES: [EndpointState; 4] = [
    EndpointState::Healthy,
    EndpointState::Unhealthy,
    EndpointState::Ejected,
    EndpointState::Draining,
];

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

/// `switchboard_rate_limit_store_errors_total`, when a shared store is configured.
pub(crate) fn store_errors(errors: Option<u64>) -> Option<MetricFamily> {
    let errors = errors?;
    Some(family(
        "switchboard_rate_limit_store_errors_total",
        "Failures of the shared rate-limit store (rate_limit_store): connect errors, error answers and answers too late; rate_limit_store_failure decided those calls.",
        MetricType::COUNTER,
        vec![counter(Vec::new(), errors as f64)],
    ))
}

/// The families of `upstreams`' state.
pub(crate) fn families(upstreams: &[UpstreamStats]) -> Vec<MetricFamily> {
    let mut endpoints = Vec::new();
    let mut ejections = Vec::new();
    let mut retries = Vec::new();
    let mut transparent = Vec::new();
    let mut connections = Vec::new();
    let mut panic = Vec::new();
    for u in upstreams {
        let name = &*u.upstream;
        for state in STATES {
            endpoints.push(gauge(
                vec![label("upstream", name), label("state", state.as_str())],
                u.count(state) as f64,
            ));
        }
        ejections.push(counter(
            vec![label("upstream", name)],
            u.ejections_total as f64,
        ));
        retries.push(counter(
            vec![label("upstream", name)],
            u.retries_total as f64,
        ));
        transparent.push(counter(
            vec![label("upstream", name)],
            u.transparent_retries_total as f64,
        ));
        connections.push(gauge(
            vec![label("upstream", name)],
            u.connections_open as f64,
        ));
        panic.push(gauge(
            vec![label("upstream", name)],
            f64::from(u8::from(u.panic)),
        ));
    }
    vec![
        family(
            "switchboard_upstream_endpoints",
            "Upstream endpoints by state (healthy, unhealthy, ejected, draining).",
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
            "Calls retried by a route's retry policy, by upstream.",
            MetricType::COUNTER,
            retries,
        ),
        family(
            "switchboard_upstream_transparent_retries_total",
            "Calls no endpoint had processed, sent again to another, by upstream.",
            MetricType::COUNTER,
            transparent,
        ),
        family(
            "switchboard_upstream_panic",
            "1 while no endpoint of the upstream is usable and calls go to all of them.",
            MetricType::GAUGE,
            panic,
        ),
        family(
            "switchboard_upstream_connections",
            "HTTP/2 connections open to upstream endpoints, by upstream.",
            MetricType::GAUGE,
            connections,
        ),
    ]
}
