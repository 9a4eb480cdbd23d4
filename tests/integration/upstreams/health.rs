//! Active health checks (grpc.health.v1): NOT_SERVING or no answer takes an endpoint out of
//! the balancer until it is SERVING again; with every endpoint out, calls go to all.

use std::time::{Duration, Instant};

use super::{config, report, served_by, Caller};
use crate::support::grpcio::{self, GrpcioBackend};
use crate::support::relay::Relay;
use crate::support::*;

const CHECKS: &str = "health_check: { interval: 100ms, timeout: 300ms }";

/// Whether `n` calls in a row all avoid `backend`.
async fn none_reach(caller: &mut Caller, backend: &BackendState, n: usize) -> bool {
    let before = backend.calls.get();
    for _ in 0..n {
        assert!(caller.ok(Duration::from_secs(5)).await);
    }
    backend.calls.get() == before
}

/// Calls until `backend` gets one; how long that took.
async fn until_reached(caller: &mut Caller, backend: &BackendState) -> Duration {
    let before = backend.calls.get();
    let start = Instant::now();
    while backend.calls.get() == before {
        assert!(caller.ok(Duration::from_secs(5)).await);
        assert!(start.elapsed() < GUARD, "the endpoint never got a call");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// Calls until `backend` gets none of ten in a row; how long that took.
async fn until_avoided(caller: &mut Caller, backend: &BackendState) -> Duration {
    let start = Instant::now();
    while !none_reach(caller, backend, 10).await {
        assert!(start.elapsed() < GUARD, "the endpoint kept getting calls");
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_serving_endpoint_gets_no_calls_until_it_serves_again() {
    let a = spawn_backend().await;
    let b = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&config(&[&a.url, &b.url], &[CHECKS], &[])).await;
    let mut caller = Caller::new(&proxy).await;
    until_reached(&mut caller, &b.state).await;
    b.state.set_serving(false).await;
    let took = until_avoided(&mut caller, &b.state).await;
    report("NOT_SERVING endpoint (tonic) out of the balancer", took);
    assert!(none_reach(&mut caller, &b.state, 30).await);
    b.state.set_serving(true).await;
    let took = until_reached(&mut caller, &b.state).await;
    report("SERVING endpoint back in the balancer", took);
}

/// One call; whether the grpcio backend answered it.
async fn from_grpcio(caller: &mut Caller) -> bool {
    let res = caller
        .unary(echo("hi"), Duration::from_secs(5))
        .await
        .unwrap();
    served_by(&res).as_deref() == Some("grpcio")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_serving_grpcio_endpoint_gets_no_calls() {
    if !grpcio::available() {
        return;
    }
    let a = spawn_backend().await;
    let mut python = GrpcioBackend::spawn(&["--health", "--name", "grpcio"]).await;
    let proxy = spawn_proxy_yaml(&config(&[&a.url, &python.url], &[CHECKS], &[])).await;
    let mut caller = Caller::new(&proxy).await;
    let start = Instant::now();
    while !from_grpcio(&mut caller).await {
        assert!(start.elapsed() < GUARD, "grpcio never got a call");
    }
    python.set_serving(false).await;
    let start = Instant::now();
    let mut in_a_row = 0;
    while in_a_row < 10 {
        if from_grpcio(&mut caller).await {
            in_a_row = 0;
        } else {
            in_a_row += 1;
        }
        assert!(start.elapsed() < GUARD, "grpcio kept getting calls");
    }
    report(
        "NOT_SERVING endpoint (grpcio) out of the balancer",
        start.elapsed(),
    );
    for _ in 0..20 {
        assert!(!from_grpcio(&mut caller).await);
    }
    python.set_serving(true).await;
    let start = Instant::now();
    while !from_grpcio(&mut caller).await {
        assert!(start.elapsed() < GUARD, "grpcio never came back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_without_answer_counts_as_not_serving() {
    let a = spawn_backend().await;
    let b = spawn_backend().await;
    let relay = Relay::start(b.addr).await;
    // Only health checks decide here: no outlier detection.
    let yaml = config(
        &[&a.url, &relay.url],
        &[CHECKS, "outlier: { enabled: false }"],
        &[],
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let mut caller = Caller::new(&proxy).await;
    until_reached(&mut caller, &b.state).await;
    relay.black_hole(true);
    let start = Instant::now();
    // Calls to it meanwhile end at their (short) deadline.
    loop {
        let before = b.state.calls.get();
        let mut all_ok = true;
        for _ in 0..10 {
            all_ok &= caller.ok(Duration::from_millis(400)).await;
        }
        if all_ok && b.state.calls.get() == before {
            break;
        }
        assert!(
            start.elapsed() < GUARD,
            "the silent endpoint stayed in the balancer"
        );
    }
    report(
        "health check timeout: endpoint out of the balancer",
        start.elapsed(),
    );
    relay.black_hole(false);
    // The black-holed connection was PINGed closed; checks on a new one answer again.
    let took = until_reached(&mut caller, &b.state).await;
    report("health check answered again: endpoint back", took);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_endpoint_not_serving_calls_go_to_all() {
    let a = spawn_backend().await;
    let b = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&config(&[&a.url, &b.url], &[CHECKS], &[])).await;
    let mut caller = Caller::new(&proxy).await;
    until_reached(&mut caller, &b.state).await;
    a.state.set_serving(false).await;
    until_avoided(&mut caller, &a.state).await;
    // The last one too: rather than failing every call, the proxy tries them all.
    b.state.set_serving(false).await;
    let start = Instant::now();
    until_reached(&mut caller, &a.state).await;
    let (a0, b0) = (a.state.calls.get(), b.state.calls.get());
    for _ in 0..20 {
        assert!(caller.ok(Duration::from_secs(5)).await);
    }
    assert!(a.state.calls.get() > a0 && b.state.calls.get() > b0);
    report(
        "every endpoint NOT_SERVING: calls spread over all",
        start.elapsed(),
    );
}
