//! The pool grows with load and shrinks after it: a burst of concurrent calls opens more
//! upstream connections than one, and once the burst is over the surplus connections close
//! (their buffers with them), leaving one. A connection takes no more streams than its
//! server's `SETTINGS_MAX_CONCURRENT_STREAMS`: calls beyond it go to another connection
//! rather than wait inside the full one.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tonic::Code;

use super::{config, Caller};
use crate::support::*;

/// Calls in the burst: more than one upstream connection carries before the pool grows.
const BURST: usize = 300;

/// `switchboard_upstream_connections` of upstream `backend`.
fn connections(text: &str) -> f64 {
    crate::support::admin::count(
        text,
        "switchboard_upstream_connections",
        &[("upstream", "backend")],
    )
}

/// `n` gated server streams through the proxy, each from a caller with a connection of its
/// own: each stays open (its first message sent) until the test opens the backend's gate,
/// however slowly the callers connect. Each handle says whether its stream got both messages.
fn gated_streams(proxy: &Proxy, n: usize) -> Vec<JoinHandle<bool>> {
    (0..n)
        .map(|i| {
            let url = proxy.url.clone();
            tokio::spawn(async move {
                let mut caller = Caller::at(&url).await;
                let req = EchoRequest {
                    count: 2,
                    ..echo(GATED)
                };
                let Ok(res) = caller.client.server_stream(req).await else {
                    return false;
                };
                let mut stream = res.into_inner();
                let mut got = 0;
                while let Ok(Some(_)) = stream.message().await {
                    got += 1;
                }
                assert_eq!(got, 2, "gated stream {i}");
                true
            })
        })
        .collect()
}

/// The most upstream connections seen while sampling, until `enough` is seen or [`GUARD`].
async fn peak_connections(proxy: &Proxy, enough: f64) -> f64 {
    let control = proxy.running.control().clone();
    let mut peak = 0.0f64;
    let deadline = tokio::time::Instant::now() + GUARD;
    while peak < enough && tokio::time::Instant::now() < deadline {
        peak = peak.max(connections(&control.metrics_text()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak
}

/// Opens the gate for `streams`, which must all end well.
async fn release(backend: &Backend, streams: Vec<JoinHandle<bool>>) {
    backend.state.open_gate(streams.len());
    for s in streams {
        assert!(s.await.unwrap(), "a gated stream failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surplus_connections_close_after_a_burst() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&config(&[&backend.url], &[], &[])).await;
    let streams = gated_streams(&proxy, BURST);
    assert!(
        backend.state.sent.reaches(BURST, GUARD).await,
        "{} of the burst's streams opened",
        backend.state.sent.get()
    );
    // The pool grew (hyper's server takes 200 streams on a connection).
    let peak = peak_connections(&proxy, 2.0).await;
    release(&backend, streams).await;
    assert!(peak >= 2.0, "the pool never grew beyond one connection");
    // After the burst: back to one connection, and calls still go through.
    let control = proxy.running.control().clone();
    let after = tokio::time::Instant::now();
    loop {
        let n = connections(&control.metrics_text());
        if n == 1.0 {
            break;
        }
        assert!(
            after.elapsed() < GUARD,
            "{n} connections stay open after the burst"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "pool: {peak} connections in the burst, 1 again {} ms after it",
        after.elapsed().as_millis()
    );
    assert!(Caller::new(&proxy).await.ok(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_takes_few_streams_gets_more_connections_up_to_the_pools_size() {
    let backend = spawn_backend().await;
    backend.state.stream_limit.store(10, Ordering::SeqCst);
    let proxy = spawn_proxy_yaml(&config(&[&backend.url], &[], &[])).await;
    // 40 streams open at once on connections of 10.
    let streams = gated_streams(&proxy, 40);
    assert!(
        backend.state.sent.reaches(40, GUARD).await,
        "{} of 40 streams opened",
        backend.state.sent.get()
    );
    let peak = peak_connections(&proxy, 4.0).await;
    assert!(peak >= 4.0, "{peak} connections for 40 streams");
    release(&backend, streams).await;

    // Beyond the pool's size (8 connections), calls wait for a stream to end instead of
    // opening a connection each.
    let before = backend.state.sent.get();
    let streams = gated_streams(&proxy, 100);
    assert!(
        backend.state.sent.reaches(before + 80, GUARD).await,
        "{} of 80 streams opened",
        backend.state.sent.get() - before
    );
    let control = proxy.running.control().clone();
    let open = connections(&control.metrics_text());
    assert!(open <= 8.0, "{open} connections");
    // Calls that wait behind the full pool and reach their deadline are the proxy's queue,
    // not the server's silence: the endpoint is not ejected for them.
    let mut caller = Caller::new(&proxy).await;
    for _ in 0..8 {
        let e = caller
            .unary(echo("queued"), Duration::from_millis(200))
            .await
            .unwrap_err();
        // The proxy's deadline, or the caller's own timer just before it.
        assert!(
            matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{e:?}"
        );
    }
    let text = control.metrics_text();
    let ejected = crate::support::admin::count(
        &text,
        "switchboard_upstream_ejections_total",
        &[("upstream", "backend")],
    );
    assert_eq!(ejected, 0.0, "ejected for calls it never got");
    // The other 20 open as the first ones end.
    release(&backend, streams).await;
    assert_eq!(backend.state.sent.get(), before + 100 * 2);
}
