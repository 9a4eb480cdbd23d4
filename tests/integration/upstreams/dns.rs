//! Endpoints named by DNS: one endpoint per address, re-resolved every `dns_refresh`, with a
//! DNS server of the test's own on loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{config, report, Caller};
use crate::support::backend::{spawn_backend_on, Backend};
use crate::support::dns::DnsServer;
use crate::support::*;

fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// Three backends on one port, on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (as a headless Service's
/// pods all listen on the same port).
async fn three_backends() -> (Backend, Backend, Backend, u16) {
    loop {
        let a = spawn_backend().await;
        let port = a.addr.port();
        let free = |n| std::net::TcpListener::bind(SocketAddr::new(lo(n), port)).is_ok();
        if free(2) && free(3) {
            let b = spawn_backend_on(SocketAddr::new(lo(2), port), None).await;
            let c = spawn_backend_on(SocketAddr::new(lo(3), port), None).await;
            return (a, b, c, port);
        }
    }
}

async fn proxy_for(dns: &DnsServer, endpoint: &str, upstream: &[&str]) -> Proxy {
    let yaml = config(&[endpoint], upstream, &[]);
    let mut cfg = switchboard::config::Config::from_yaml(&yaml, "test.yaml").unwrap();
    Arc::make_mut(&mut cfg.upstreams[0]).dns_servers = vec![dns.addr];
    spawn_proxy_config(cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_becomes_one_endpoint_per_address_and_follows_dns() {
    let mut dns = DnsServer::start().await;
    let (a, b, c, port) = three_backends().await;
    dns.set("svc.test.", &[lo(1), lo(2)]).await;
    let proxy = proxy_for(
        &dns,
        &format!("http://svc.test:{port}"),
        &["dns_refresh: 200ms"],
    )
    .await;
    let mut caller = Caller::new(&proxy).await;
    for _ in 0..20 {
        assert!(caller.ok(Duration::from_secs(5)).await);
    }
    assert_eq!(a.state.calls.get(), 10);
    assert_eq!(b.state.calls.get(), 10);
    assert_eq!(c.state.calls.get(), 0);

    // 127.0.0.2 leaves, 127.0.0.3 comes: within a refresh the new one gets calls and the old
    // one none, although it still answers.
    dns.set("svc.test.", &[lo(1), lo(3)]).await;
    let start = Instant::now();
    while c.state.calls.get() == 0 {
        assert!(caller.ok(Duration::from_secs(5)).await);
        assert!(start.elapsed() < GUARD, "the new address never got a call");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    report("DNS change: added address gets calls", start.elapsed());
    let on_b = b.state.calls.get();
    for _ in 0..20 {
        assert!(caller.ok(Duration::from_secs(5)).await);
    }
    assert_eq!(
        b.state.calls.get(),
        on_b,
        "a removed address still got calls"
    );
    // Within one refresh (200 ms), give or take the calls in flight.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    // The DNS server stops answering: the last answer stays in use.
    dns.stop().await;
    let (a0, c0) = (a.state.calls.get(), c.state.calls.get());
    let until = Instant::now() + Duration::from_millis(800);
    while Instant::now() < until {
        assert!(caller.ok(Duration::from_secs(5)).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.state.calls.get() > a0 && c.state.calls.get() > c0);
    assert_eq!(b.state.calls.get(), on_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_address_finishes_the_calls_in_flight() {
    let dns = DnsServer::start().await;
    let (a, b, _c, port) = three_backends().await;
    dns.set("svc.test.", &[lo(2)]).await;
    let proxy = proxy_for(
        &dns,
        &format!("http://svc.test:{port}"),
        &["dns_refresh: 200ms"],
    )
    .await;
    let mut caller = Caller::new(&proxy).await;
    assert!(caller.ok(Duration::from_secs(5)).await);
    assert_eq!(b.state.calls.get(), 1);
    // A slow call is in flight on 127.0.0.2 when it leaves DNS.
    let mut slow_caller = Caller::new(&proxy).await;
    let slow = tokio::spawn(async move {
        slow_caller
            .unary(
                EchoRequest {
                    delay_ms: 1500,
                    ..echo("slow")
                },
                Duration::from_secs(10),
            )
            .await
    });
    assert!(b.state.calls.reaches(2, GUARD).await);
    dns.set("svc.test.", &[lo(1)]).await;
    let start = Instant::now();
    while a.state.calls.get() == 0 {
        assert!(caller.ok(Duration::from_secs(5)).await);
        assert!(start.elapsed() < GUARD);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The call in flight finishes normally.
    let res = slow.await.unwrap();
    assert!(res.is_ok(), "{res:?}");
    assert_eq!(b.state.cancellations.get(), 0);
}
