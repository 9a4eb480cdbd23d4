//! Unit tests across the upstream's parts: picks, ejections, panic mode, stats, carry-over.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use super::client::UpstreamClient;
use super::endpoint::{Endpoint, Failure, Health};
use super::shared::Shared;
use super::stats::EndpointState;
use crate::config::{self, Balance};

fn upstream(endpoints: &[&str], outlier: Option<config::Outlier>) -> Arc<config::Upstream> {
    let endpoints = endpoints
        .iter()
        .map(|e| config::Endpoint::parse(e).unwrap())
        .collect();
    let mut u = config::Upstream::new("backend", endpoints);
    u.outlier = outlier;
    Arc::new(u)
}

fn endpoints(shared: &Shared) -> Vec<Arc<Endpoint>> {
    shared.set.load().all.clone()
}

fn states(shared: &Shared) -> Vec<EndpointState> {
    shared.stats().endpoints.iter().map(|e| e.state).collect()
}

#[test]
fn round_robin_takes_turns_and_avoids_the_last_endpoint_tried() {
    let shared = Shared::new(upstream(
        &[
            "http://127.0.0.1:1",
            "http://127.0.0.2:1",
            "http://127.0.0.3:1",
        ],
        None,
    ))
    .unwrap();
    let set = shared.set.load();
    let next = AtomicUsize::new(0);
    let picks: Vec<String> = (0..6)
        .map(|_| {
            set.pick(Balance::RoundRobin, &next, None)
                .unwrap()
                .label
                .to_string()
        })
        .collect();
    assert_eq!(
        picks,
        [
            "127.0.0.1:1",
            "127.0.0.2:1",
            "127.0.0.3:1",
            "127.0.0.1:1",
            "127.0.0.2:1",
            "127.0.0.3:1"
        ]
    );
    let first = set.all[0].clone();
    for _ in 0..10 {
        let ep = set.pick(Balance::RoundRobin, &next, Some(&first)).unwrap();
        assert!(!Arc::ptr_eq(ep, &first));
        let ep = set
            .pick(Balance::LeastRequest, &next, Some(&first))
            .unwrap();
        assert!(!Arc::ptr_eq(ep, &first));
    }
    // Alone, the avoided endpoint is still better than nothing.
    let single = Shared::new(upstream(&["http://127.0.0.1:1"], None)).unwrap();
    let set = single.set.load();
    let only = set.all[0].clone();
    assert!(set.pick(Balance::RoundRobin, &next, Some(&only)).is_some());
}

#[tokio::test]
async fn failures_in_a_row_eject_for_growing_periods_and_never_take_all() {
    let outlier = config::Outlier {
        consecutive_failures: 3,
        base_ejection: Duration::from_millis(40),
        max_ejection: Duration::from_millis(100),
    };
    let shared = Shared::new(upstream(
        &["http://127.0.0.1:1", "http://127.0.0.2:1"],
        Some(outlier),
    ))
    .unwrap();
    let eps = endpoints(&shared);
    let (a, b) = (eps[0].clone(), eps[1].clone());
    // A success in between starts the count over.
    a.failed(Failure::Connect);
    a.failed(Failure::Connect);
    a.succeeded();
    a.failed(Failure::Stream);
    assert_eq!(states(&shared), [EndpointState::Healthy; 2]);
    a.failed(Failure::Silent);
    a.failed(Failure::Silent);
    assert_eq!(states(&shared)[0], EndpointState::Ejected);
    assert_eq!(shared.set.load().usable.len(), 1);
    let period = |ep: &Endpoint| {
        ep.status()
            .ejected_until
            .unwrap()
            .saturating_duration_since(tokio::time::Instant::now())
    };
    assert!(period(&a) <= Duration::from_millis(40));
    // Ejected endpoints are not picked while another is usable.
    let next = AtomicUsize::new(0);
    for _ in 0..4 {
        let set = shared.set.load();
        assert!(Arc::ptr_eq(
            set.pick(Balance::RoundRobin, &next, None).unwrap(),
            &b
        ));
    }
    // The background task ends ejections when they are due.
    let task = tokio::spawn(shared.clone().run());
    while states(&shared)[0] != EndpointState::Healthy {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Ejected again soon after: twice as long; then capped at the maximum.
    for _ in 0..3 {
        a.failed(Failure::Connect);
    }
    let second = period(&a);
    assert!(second > Duration::from_millis(40) && second <= Duration::from_millis(80));
    while states(&shared)[0] != EndpointState::Healthy {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..3 {
        a.failed(Failure::Connect);
    }
    assert!(period(&a) > Duration::from_millis(80) && period(&a) <= Duration::from_millis(100));
    // The other one too: no endpoint is usable, so calls go to all (panic mode).
    for _ in 0..3 {
        b.failed(Failure::Connect);
    }
    let stats = shared.stats();
    assert!(stats.panic);
    assert_eq!(stats.count(EndpointState::Ejected), 2);
    assert_eq!(stats.ejections_total, 4);
    assert!(shared
        .set
        .load()
        .pick(Balance::RoundRobin, &next, None)
        .is_some());
    task.abort();
}

#[test]
fn health_decides_what_is_usable() {
    let shared = Shared::new(upstream(
        &["http://127.0.0.1:1", "http://127.0.0.2:1"],
        None,
    ))
    .unwrap();
    let eps = endpoints(&shared);
    shared.set_health(&eps[0], Health::NotServing);
    assert_eq!(
        states(&shared),
        [EndpointState::Unhealthy, EndpointState::Healthy]
    );
    assert_eq!(shared.set.load().usable.len(), 1);
    shared.set_health(&eps[1], Health::NotServing);
    assert!(shared.stats().panic);
    shared.set_health(&eps[0], Health::Serving);
    assert!(!shared.stats().panic);
    assert_eq!(shared.set.load().usable.len(), 1);
}

#[tokio::test]
async fn an_unchanged_config_carries_the_client_over() {
    let config = upstream(&["http://127.0.0.1:1"], None);
    let client = Arc::new(UpstreamClient::new(config.clone()).unwrap());
    let same = client.carry_over(&config).unwrap().unwrap();
    assert!(Arc::ptr_eq(&client, &same));
    let mut changed = (*config).clone();
    changed.connect_timeout = Duration::from_secs(1);
    assert!(client.carry_over(&changed).is_none());
    let stats = client.stats();
    assert_eq!(&*stats.upstream, "backend");
    assert_eq!(stats.endpoints.len(), 1);
    assert_eq!(&*stats.endpoints[0].address, "127.0.0.1:1");
}
