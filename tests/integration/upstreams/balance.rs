//! Spreading calls over endpoints, and what a caller learns when no endpoint can take one.

use std::time::Duration;

use tonic::Code;

use super::{config, Caller};
use crate::support::refusing::{spawn_refusing, Misbehaviour};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_each_endpoint_its_turn() {
    let backends = [
        spawn_backend().await,
        spawn_backend().await,
        spawn_backend().await,
    ];
    let urls: Vec<&str> = backends.iter().map(|b| b.url.as_str()).collect();
    let proxy = spawn_proxy_yaml(&config(&urls, &["balance: round_robin"], &[])).await;
    let mut caller = Caller::new(&proxy).await;
    for _ in 0..30 {
        assert!(caller.ok(Duration::from_secs(5)).await);
    }
    let counts: Vec<usize> = backends.iter().map(|b| b.state.calls.get()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 30, "{counts:?}");
    // In turn: every endpoint gets its third, give or take the first round.
    for c in &counts {
        assert!((9..=11).contains(c), "{counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_sends_new_calls_to_the_less_busy_endpoint() {
    // One endpoint never answers, so the calls it gets stay in flight until their deadline.
    let hanging = spawn_refusing(Misbehaviour::Hang).await;
    let quick = spawn_backend().await;
    let yaml = config(
        &[&hanging.url, &quick.url],
        &["balance: least_request", "outlier: { enabled: false }"],
        &[],
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    // Calls until one lands there (a tie between two idle endpoints may go either way).
    let mut held = Vec::new();
    while hanging.requests.get() < 1 {
        let mut c = Caller::new(&proxy).await;
        held.push(tokio::spawn(async move {
            let _ = c.unary(echo("held"), Duration::from_secs(8)).await;
        }));
        assert!(held.len() < 100, "calls never reached the hanging endpoint");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Calls spawned before the first one was seen there may still be on their way (two picked
    // at once between two idle endpoints): wait until every held call has either finished (on
    // the quick endpoint) or reached the hanging one.
    let settle = tokio::time::Instant::now() + GUARD;
    while held.iter().filter(|h| !h.is_finished()).count() != hanging.requests.get() {
        assert!(
            tokio::time::Instant::now() < settle,
            "held calls neither finished nor reached the hanging endpoint"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let on_hanging = hanging.requests.get();
    let mut caller = Caller::new(&proxy).await;
    for _ in 0..20 {
        assert!(caller.ok(Duration::from_secs(5)).await);
    }
    // With a call in flight there and none on the other, the two choices always prefer the
    // other endpoint (round robin would have sent it half of them).
    assert_eq!(hanging.requests.get(), on_hanging);
    for h in held {
        h.abort();
    }
}

#[tokio::test]
async fn errors_name_the_upstream_and_no_address() {
    let closed = closed_port();
    let proxy = spawn_proxy_yaml(&config(&[&format!("http://{closed}")], &[], &[])).await;
    let mut caller = Caller::new(&proxy).await;
    let e = caller
        .unary(echo("hi"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(
        e.message(),
        "upstream \"backend\" is unavailable: connection refused"
    );
    assert!(!e.message().contains(&closed.port().to_string()), "{e:?}");
}

#[tokio::test]
async fn a_name_without_address_fails_at_once_naming_the_upstream() {
    let dns = crate::support::dns::DnsServer::start().await;
    let yaml = config(&["http://nothing.test:50051"], &[], &[]);
    let mut cfg = switchboard::config::Config::from_yaml(&yaml, "test.yaml").unwrap();
    std::sync::Arc::make_mut(&mut cfg.upstreams[0]).dns_servers = vec![dns.addr];
    let proxy = spawn_proxy_config(cfg).await;
    let mut caller = Caller::new(&proxy).await;
    let start = std::time::Instant::now();
    let e = caller
        .unary(echo("hi"), Duration::from_secs(20))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().starts_with("upstream \"backend\""), "{e:?}");
    assert!(!e.message().contains("nothing.test"), "{e:?}");
    // At once: the first lookup's answer (no such name) is all it waits for.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Later calls do not wait at all.
    let start = std::time::Instant::now();
    let e = caller
        .unary(echo("hi"), Duration::from_secs(20))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}
