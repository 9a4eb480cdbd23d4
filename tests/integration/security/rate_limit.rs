//! Rate limits: token buckets per route and key, in process and shared through a real Redis
//! by two proxy processes; refusals are `resource_exhausted` with `retry-after`; spoofed
//! forwarding headers do not get a caller a fresh bucket; an unreachable Redis fails open or
//! closed as configured, and says so in the log.

use crate::support::process::ProxyProcess;
use crate::support::redis::Redis;

use super::*;

fn yaml(backend: &str, top: &str, limit: &str, auth: &str) -> String {
    format!(
        r#"
listeners: [{{ address: 127.0.0.1:0 }}]
{top}
upstreams: [{{ name: backend, endpoints: ["{backend}"] }}]
routes:
  - match: {{ method: {UNARY} }}
    upstream: backend
    rate_limit: {limit}
{auth}
  - match: {{ prefix: / }}
    upstream: backend
"#
    )
}

/// The gRPC status of one gRPC-Web Unary call with `headers`, and its `retry-after`.
async fn web(addr: SocketAddr, headers: &[(&str, &str)]) -> (i32, Option<String>) {
    let r = web_unary(addr, UNARY, &echo("x"), headers).await;
    assert_eq!(r.http_status, StatusCode::OK, "{r:?}");
    (
        r.status().unwrap(),
        r.header("retry-after").map(str::to_owned),
    )
}

#[tokio::test]
async fn buckets_refuse_with_retry_after_in_both_protocols() {
    let backend = spawn_backend().await;
    let proxy =
        spawn_proxy_yaml(&yaml(&backend.url, "", "{ per_second: 0.2, burst: 3 }", "")).await;
    for _ in 0..3 {
        assert_eq!(web(proxy.addr, &[]).await.0, 0);
    }
    let (code, retry) = web(proxy.addr, &[]).await;
    assert_eq!(code, 8, "resource_exhausted");
    assert_eq!(retry.as_deref(), Some("5"), "one token per 5 s");
    let c = connect_unary(proxy.addr, Http::H1, UNARY, &echo("x"), &[]).await;
    assert_eq!(c.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(c.code(), "resource_exhausted");
    let secs: u64 = c.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&secs), "{secs}");
    // Claiming to be someone else does not help: the peer is not a trusted proxy.
    for spoof in [
        ("x-forwarded-for", "198.51.100.7"),
        ("x-real-ip", "198.51.100.8"),
        ("forwarded", "for=198.51.100.9"),
    ] {
        assert_eq!(web(proxy.addr, &[spoof]).await.0, 8, "{spoof:?}");
    }
    // Other routes are not limited.
    web_unary(proxy.addr, LOOKUP, &echo("x"), &[])
        .await
        .assert_ok();
    assert_eq!(backend.state.calls.get(), 4);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_have_their_own_buckets() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&yaml(
        &backend.url,
        "trusted_proxies: [127.0.0.0/8]",
        "{ per_second: 0.01, burst: 2, key: client_ip }",
        "",
    ))
    .await;
    let a = [("x-forwarded-for", "203.0.113.10")];
    assert_eq!(web(proxy.addr, &a).await.0, 0);
    assert_eq!(web(proxy.addr, &a).await.0, 0);
    assert_eq!(web(proxy.addr, &a).await.0, 8);
    // Prepending addresses does not move the client: the first untrusted hop from the right.
    assert_eq!(
        web(
            proxy.addr,
            &[("x-forwarded-for", "192.0.2.1, 203.0.113.10")]
        )
        .await
        .0,
        8
    );
    assert_eq!(
        web(proxy.addr, &[("x-forwarded-for", "203.0.113.11")])
            .await
            .0,
        0
    );
    let seen = backend.state.last_headers();
    assert_eq!(seen["x-forwarded-for"], "203.0.113.11, 127.0.0.1");
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn buckets_keyed_by_api_key_and_by_header() {
    let backend = spawn_backend().await;
    let sha = crate::support::jwt::api_key_hash;
    let auth = format!(
        "    auth: {{ api_key: {{ keys: [\"{}\", \"{}\"] }} }}",
        sha("key-a"),
        sha("key-b")
    );
    let proxy = spawn_proxy_yaml(&yaml(
        &backend.url,
        "",
        "{ per_second: 0.01, burst: 1, key: api_key }",
        &auth,
    ))
    .await;
    assert_eq!(web(proxy.addr, &[("x-api-key", "key-a")]).await.0, 0);
    assert_eq!(web(proxy.addr, &[("x-api-key", "key-a")]).await.0, 8);
    assert_eq!(web(proxy.addr, &[("x-api-key", "key-b")]).await.0, 0);
    // A wrong key is refused by auth, before it could use anyone's bucket.
    assert_eq!(web(proxy.addr, &[("x-api-key", "key-c")]).await.0, 16);
    proxy.running.shutdown().await;

    let proxy = spawn_proxy_yaml(&yaml(
        &backend.url,
        "",
        "{ per_second: 0.01, burst: 1, key: \"header:x-tenant\" }",
        "",
    ))
    .await;
    assert_eq!(web(proxy.addr, &[("x-tenant", "t1")]).await.0, 0);
    assert_eq!(web(proxy.addr, &[("x-tenant", "t1")]).await.0, 8);
    assert_eq!(web(proxy.addr, &[("x-tenant", "t2")]).await.0, 0);
    // Leaving the header out falls back to the client's IP, which has a bucket of its own.
    assert_eq!(web(proxy.addr, &[]).await.0, 0);
    assert_eq!(web(proxy.addr, &[]).await.0, 8);
    proxy.running.shutdown().await;
}

/// Writes a config for a proxy process sharing buckets through `redis`.
fn redis_config(
    dir: &std::path::Path,
    backend: &str,
    redis: &str,
    failure: &str,
) -> std::path::PathBuf {
    let text = yaml(
        backend,
        &format!("rate_limit_store: \"{redis}\"\nrate_limit_store_failure: {failure}"),
        "{ per_second: 0.01, burst: 4 }",
        "",
    );
    write_file(dir, &format!("redis-{failure}.yaml"), &text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxy_processes_share_buckets_through_redis() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start();
    let backend = spawn_backend().await;
    let dir = temp_dir("rl-redis");
    let config = redis_config(&dir, &backend.url, &redis.url, "open");
    let (one, two) = (ProxyProcess::start(&config), ProxyProcess::start(&config));
    // Four tokens in all, whichever replica the calls reach.
    let mut codes = Vec::new();
    for i in 0..6 {
        let addr = if i % 2 == 0 { one.addr } else { two.addr };
        codes.push(web(addr, &[]).await);
    }
    let ok = codes.iter().filter(|(c, _)| *c == 0).count();
    assert_eq!(ok, 4, "{codes:?}");
    assert!(
        codes[4..].iter().all(|(c, r)| *c == 8 && r.is_some()),
        "{codes:?}"
    );
    let c = connect_unary(two.addr, Http::H1, UNARY, &echo("x"), &[]).await;
    assert_eq!(c.status, StatusCode::TOO_MANY_REQUESTS, "{c:?}");
    assert_eq!(backend.state.calls.get(), 4);
    // Open routes do not touch Redis.
    web_unary(one.addr, LOOKUP, &echo("x"), &[])
        .await
        .assert_ok();
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_fails_open_or_closed_and_is_logged() {
    if !Redis::available() {
        return;
    }
    let mut redis = Redis::start();
    let backend = spawn_backend().await;
    let dir = temp_dir("rl-redis-down");
    let open = ProxyProcess::start(&redis_config(&dir, &backend.url, &redis.url, "open"));
    let closed = ProxyProcess::start(&redis_config(&dir, &backend.url, &redis.url, "closed"));
    assert_eq!(web(open.addr, &[]).await.0, 0);
    assert_eq!(web(closed.addr, &[]).await.0, 0);
    redis.stop();
    // Open: every call goes through (more than the burst); closed: every call is refused.
    for _ in 0..6 {
        assert_eq!(web(open.addr, &[]).await.0, 0);
        let (code, retry) = web(closed.addr, &[]).await;
        assert_eq!(code, 14, "fail closed");
        assert!(retry.is_some());
    }
    let c = connect_unary(closed.addr, Http::H1, UNARY, &echo("x"), &[]).await;
    let message = c.message();
    assert!(
        !message.contains(&redis.addr.port().to_string()),
        "{message}"
    );
    for (name, p) in [("open", &open), ("closed", &closed)] {
        let log = p.log();
        assert!(
            log.contains("rate limit store unreachable"),
            "{name}:\n{log}"
        );
    }
    assert!(open.log().contains("fail open"));
    assert!(closed.log().contains("fail closed"));
}

/// Metrics are recorded when an admin listener is configured.
const ADMIN: &str = "admin: { address: 127.0.0.1:0 }";

/// Policy refusals and the shared store's failures are counted on `/metrics`: an in-process
/// limit refusing calls, and a Redis store nobody listens on (failing open).
#[tokio::test]
async fn refusals_and_store_errors_are_counted() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&yaml(
        &backend.url,
        ADMIN,
        "{ per_second: 0.01, burst: 1 }",
        "",
    ))
    .await;
    assert_eq!(web(proxy.addr, &[]).await.0, 0);
    for _ in 0..3 {
        assert_eq!(web(proxy.addr, &[]).await.0, 8);
    }
    let text = proxy.running.control().metrics_text();
    let refused = crate::support::admin::count(
        &text,
        "switchboard_policy_refusals_total",
        &[("reason", "RESOURCE_EXHAUSTED")],
    );
    assert_eq!(refused, 3.0, "{text}");
    assert!(!text.contains("switchboard_rate_limit_store_errors_total"));

    let down = closed_port();
    let shared = spawn_proxy_yaml(&yaml(
        &backend.url,
        &format!("{ADMIN}\nrate_limit_store: \"redis://{down}\"\nrate_limit_store_failure: open"),
        "{ per_second: 0.01, burst: 1 }",
        "",
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(web(shared.addr, &[]).await.0, 0, "fails open");
    }
    let text = shared.running.control().metrics_text();
    let errors =
        crate::support::admin::count(&text, "switchboard_rate_limit_store_errors_total", &[]);
    assert!(errors >= 1.0, "{text}");
    crate::support::admin::promtool_check(&text);
}
