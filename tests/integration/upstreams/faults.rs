//! Endpoints that die, hang, or never finish their handshake.

use std::time::{Duration, Instant};

use tonic::Code;

use super::{config, report, served_by, Caller};
use crate::support::grpcio::{self, GrpcioBackend};
use crate::support::relay::Relay;
use crate::support::*;

/// Calls in a row, a few milliseconds apart, until `until` or `n` calls: (failures, when the
/// last failure happened after `start`).
async fn traffic(
    caller: &mut Caller,
    n: usize,
    timeout: Duration,
    start: Instant,
) -> (usize, Duration) {
    let mut failures = 0;
    let mut last_failure = Duration::ZERO;
    for _ in 0..n {
        if !caller.ok(timeout).await {
            failures += 1;
            last_failure = start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (failures, last_failure)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_costs_no_call() {
    if !grpcio::available() {
        return;
    }
    let tonic = spawn_backend().await;
    let mut python = GrpcioBackend::spawn(&["--name", "grpcio"]).await;
    let yaml = config(
        &[&tonic.url, &python.url],
        &["outlier: { consecutive_failures: 3, base_ejection: 30s }"],
        &[],
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let mut caller = Caller::new(&proxy).await;
    // Both serve.
    let mut on_python = 0;
    for _ in 0..10 {
        let res = caller
            .unary(echo("hi"), Duration::from_secs(5))
            .await
            .unwrap();
        on_python += usize::from(served_by(&res).as_deref() == Some("grpcio"));
    }
    assert!(on_python >= 4, "{on_python} of 10 calls reached grpcio");
    // The process dies: its connections end without GOAWAY, its port refuses.
    python.kill();
    let start = Instant::now();
    let (failures, last) = traffic(&mut caller, 100, Duration::from_secs(5), start).await;
    // A call racing the kernel's news of the death may be lost with its connection; every
    // later one is sent where a connection can be made.
    assert!(failures <= 1, "{failures} calls failed after the kill");
    report("killed endpoint (last failed call after the kill)", last);
    assert!(tonic.state.calls.get() >= 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_endpoint_is_probed_closed_and_ejected() {
    let good = spawn_backend().await;
    let hidden = spawn_backend().await;
    let relay = Relay::start(hidden.addr).await;
    let yaml = config(
        &[&good.url, &relay.url],
        &[
            "keepalive: { interval: 5m, timeout: 1s }",
            "connect_timeout: 200ms",
            "outlier: { consecutive_failures: 3, base_ejection: 30s }",
        ],
        &[],
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let mut caller = Caller::new(&proxy).await;
    for _ in 0..10 {
        assert!(caller.ok(Duration::from_secs(5)).await);
    }
    assert!(hidden.state.calls.get() >= 4);
    relay.black_hole(true);
    let start = Instant::now();
    // Calls sent to the black hole end at their deadline; the first one PINGs the
    // connection, and its unanswered PING closes it within the keepalive timeout.
    let closed = tokio::spawn({
        let closed = relay.closes_within(1, Duration::from_secs(10));
        async move {
            let ok = closed.await;
            (ok, start.elapsed())
        }
    });
    let (failures, last) = traffic(&mut caller, 60, Duration::from_millis(300), start).await;
    let (was_closed, closed_after) = closed.await.unwrap();
    assert!(
        was_closed,
        "the proxy never closed the black-holed connection"
    );
    // Deadline (0.3 s) + PING timeout (1 s), with room for a slow machine.
    assert!(closed_after < Duration::from_secs(5), "{closed_after:?}");
    report("black-holed connection closed after", closed_after);
    // Three silent calls eject it; then nothing fails.
    assert!(failures <= 4, "{failures} calls failed");
    report("black-holed endpoint (last failed call)", last);
    let (later, _) = traffic(&mut caller, 30, Duration::from_millis(300), start).await;
    assert_eq!(later, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_sends_settings_fails_the_connect_within_the_timeout() {
    // Accepts TCP and says nothing: a relay that is a black hole from the start.
    let silent = Relay::start(closed_port()).await;
    silent.black_hole(true);
    let yaml = config(&[&silent.url], &["connect_timeout: 300ms"], &[]);
    let proxy = spawn_proxy_yaml(&yaml).await;
    let mut caller = Caller::new(&proxy).await;
    let start = Instant::now();
    let e = caller
        .unary(echo("hi"), Duration::from_secs(30))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(
        e.message(),
        "upstream \"backend\" is unavailable: no connection within the connect timeout"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    // The abandoned connection is closed, not left hanging.
    assert!(silent.client_closed().reaches(1, GUARD).await);

    // With another endpoint, the call goes there instead (nothing was sent).
    let good = spawn_backend().await;
    let yaml = config(&[&silent.url, &good.url], &["connect_timeout: 300ms"], &[]);
    let proxy = spawn_proxy_yaml(&yaml).await;
    let mut caller = Caller::new(&proxy).await;
    for _ in 0..6 {
        assert!(caller.ok(Duration::from_secs(5)).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_pings_stay_within_grpc_core_ping_policy() {
    if !grpcio::available() {
        return;
    }
    // grpc-core (under grpcio) answers GOAWAY ENHANCE_YOUR_CALM to a client that PINGs more
    // than twice without data from the server in between, sooner than five minutes apart.
    let python = GrpcioBackend::spawn(&[]).await;
    let yaml = config(
        &[&python.url],
        &["keepalive: { interval: 100ms, timeout: 1s }"],
        &[],
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let mut caller = Caller::new(&proxy).await;
    for _ in 0..3 {
        // Two seconds without a byte from the server: twenty keepalive intervals.
        let res = caller
            .unary(
                EchoRequest {
                    delay_ms: 2000,
                    ..echo("slow")
                },
                Duration::from_secs(10),
            )
            .await;
        assert!(res.is_ok(), "{res:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_time_out_waiting_for_a_handshake_eject_the_endpoint() {
    // A new endpoint that accepts TCP and never answers, with calls whose deadline is shorter
    // than the connect timeout (5 s by default): each call that gives up counts.
    let good = spawn_backend().await;
    let silent = Relay::start(closed_port()).await;
    silent.black_hole(true);
    let yaml = config(
        &[&good.url, &silent.url],
        &["outlier: { consecutive_failures: 3, base_ejection: 30s }"],
        &[],
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let mut caller = Caller::new(&proxy).await;
    let start = Instant::now();
    let (failures, last) = traffic(&mut caller, 40, Duration::from_millis(500), start).await;
    assert!(failures <= 3, "{failures} calls failed");
    report("endpoint that never handshakes (last failed call)", last);
    let (later, _) = traffic(&mut caller, 20, Duration::from_millis(500), start).await;
    assert_eq!(later, 0);
}

/// Calls whose caller gives up 10 ms before the deadline it sent, as clients that enforce
/// their deadline do (their clock starts before the proxy's): how many failed.
async fn calls_cancelled_early(caller: &mut Caller, n: usize) -> usize {
    let mut failures = 0;
    for _ in 0..n {
        let mut req = tonic::Request::new(echo("hi"));
        req.set_timeout(Duration::from_millis(400));
        let call = caller.client.unary(req);
        match tokio::time::timeout(Duration::from_millis(390), call).await {
            Ok(Ok(_)) => {}
            _ => failures += 1,
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_cancel_just_before_their_deadline_eject_the_endpoint_too() {
    // Waiting for a handshake that never comes.
    let good = spawn_backend().await;
    let silent = Relay::start(closed_port()).await;
    silent.black_hole(true);
    let outlier = "outlier: { consecutive_failures: 3, base_ejection: 30s }";
    let yaml = config(&[&good.url, &silent.url], &[outlier], &[]);
    let proxy = spawn_proxy_yaml(&yaml).await;
    let mut caller = Caller::new(&proxy).await;
    let failures = calls_cancelled_early(&mut caller, 30).await;
    assert!(failures <= 3, "handshake: {failures} calls failed");

    // Sent on a connection that went silent.
    let hidden = spawn_backend().await;
    let relay = Relay::start(hidden.addr).await;
    let yaml = config(&[&good.url, &relay.url], &[outlier], &[]);
    let proxy = spawn_proxy_yaml(&yaml).await;
    let mut caller = Caller::new(&proxy).await;
    for _ in 0..10 {
        assert!(caller.ok(Duration::from_secs(5)).await);
    }
    relay.black_hole(true);
    let failures = calls_cancelled_early(&mut caller, 30).await;
    assert!(failures <= 3, "silent stream: {failures} calls failed");
}
