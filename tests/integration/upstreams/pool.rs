//! The pool grows with load and shrinks after it: a burst of concurrent calls opens more
//! upstream connections than one, and once the burst is over the surplus connections close
//! (their buffers with them), leaving one.

use std::time::Duration;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surplus_connections_close_after_a_burst() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&config(&[&backend.url], &[], &[])).await;
    let mut calls = Vec::new();
    for i in 0..BURST {
        // Callers on a few connections of their own, each call held open for a while.
        let url = proxy.url.clone();
        calls.push(tokio::spawn(async move {
            let mut caller = Caller::at(&url).await;
            let mut msg = echo(&format!("burst {i}"));
            // Held long enough that the first calls are still open when the last callers have
            // connected, even on a busy machine (the pool grows at 200 streams on a connection).
            msg.delay_ms = 4000;
            caller.unary(msg, Duration::from_secs(30)).await.is_ok()
        }));
    }
    let control = proxy.running.control().clone();
    // Sampled while the calls are open: the pool grew.
    let mut peak = 0.0f64;
    let deadline = tokio::time::Instant::now() + GUARD;
    while peak < 2.0 && tokio::time::Instant::now() < deadline {
        peak = peak.max(connections(&control.metrics_text()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in calls {
        assert!(c.await.unwrap(), "a burst call failed");
    }
    assert!(peak >= 2.0, "the pool never grew beyond one connection");
    // After the burst: back to one connection, and calls still go through.
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
