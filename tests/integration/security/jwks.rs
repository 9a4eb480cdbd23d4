//! JWKS from an https URL served by the test: fetched once and cached, fetched again on an
//! unknown `kid` (key rotation) within a budget, and on the cache lifetime; a key server that
//! does not answer costs a bounded wait.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::support::jwt::{self, JwksServer, SigningKey};

fn claims() -> serde_json::Value {
    json!({"iss": "https://issuer.test", "sub": "alice", "exp": jwt::now() + 600})
}

async fn proxy(backend: &Backend, url: &str, ca: &std::path::Path, extra: &str) -> Proxy {
    spawn_proxy_yaml(&format!(
        r#"
listeners: [{{ address: 127.0.0.1:0 }}]
upstreams: [{{ name: backend, endpoints: ["{b}"] }}]
routes:
  - match: {{ prefix: / }}
    upstream: backend
    auth: {{ jwt: {{ jwks: "{url}", jwks_ca: "{ca}", issuer: "https://issuer.test"{extra} }} }}
"#,
        b = backend.url,
        ca = ca.display(),
    ))
    .await
}

async fn call(proxy: &Proxy, token: &str) -> Option<i32> {
    let bearer = format!("Bearer {token}");
    web_unary(proxy.addr, UNARY, &echo("x"), &[("authorization", &bearer)])
        .await
        .status()
}

#[tokio::test]
async fn rotation_fetches_unknown_kids_within_a_budget() {
    let cert = crate::support::tls::test_cert("jwks-rotation");
    let (a, b) = (SigningKey::es256("a"), SigningKey::rs256("b"));
    let server = JwksServer::start(&cert, jwt::jwks(&[&a])).await;
    let backend = spawn_backend().await;
    let proxy = proxy(&backend, &server.url, &cert.cert_path, "").await;
    let token_a = a.sign(&claims());
    assert_eq!(call(&proxy, &token_a).await, Some(0));
    assert_eq!(call(&proxy, &token_a).await, Some(0));
    assert_eq!(server.fetches.get(), 1, "fetched once, then cached");

    // The issuer rotates to key b: its first token makes the proxy fetch again.
    server.set(jwt::jwks(&[&b]));
    assert_eq!(call(&proxy, &b.sign(&claims())).await, Some(0));
    assert_eq!(server.fetches.get(), 2);
    // Key a is no longer published: its tokens stop working.
    assert_eq!(call(&proxy, &token_a).await, Some(16));

    // Made-up kids cannot make the proxy hammer the key server.
    let fetched = server.fetches.get();
    for i in 0..20 {
        let forged = b.sign_with(
            &json!({"alg": "RS256", "kid": format!("made-up-{i}")}),
            &claims(),
        );
        assert_eq!(call(&proxy, &forged).await, Some(16));
    }
    let extra = server.fetches.get() - fetched;
    assert!(extra <= 3, "{extra} fetches for 20 unknown kids");
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn keys_are_fetched_again_after_the_cache_lifetime() {
    let cert = crate::support::tls::test_cert("jwks-lifetime");
    let key = SigningKey::eddsa("k");
    let server = JwksServer::start(&cert, jwt::jwks(&[&key])).await;
    let backend = spawn_backend().await;
    let proxy = proxy(&backend, &server.url, &cert.cert_path, ", jwks_cache: 1s").await;
    let token = key.sign(&claims());
    assert_eq!(call(&proxy, &token).await, Some(0));
    assert_eq!(server.fetches.get(), 1);
    // Nothing signals the lifetime's end but time itself.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        call(&proxy, &token).await,
        Some(0),
        "old keys serve meanwhile"
    );
    assert!(
        server.fetches.reaches(2, GUARD).await,
        "no fetch after the cache lifetime"
    );
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn a_silent_key_server_costs_a_bounded_wait() {
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let cert = crate::support::tls::test_cert("jwks-silent");
    let backend = spawn_backend().await;
    let url = format!("https://localhost:{port}/keys.json");
    let proxy = proxy(&backend, &url, &cert.cert_path, ", jwks_timeout: 300ms").await;
    let token = SigningKey::es256("k").sign(&claims());
    let started = Instant::now();
    let bearer = format!("Bearer {token}");
    let web = web_unary(proxy.addr, UNARY, &echo("x"), &[("authorization", &bearer)]).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(web.status(), Some(14), "{web:?}");
    let message = web.message();
    assert!(
        !message.contains(&port.to_string()) && !message.contains("127.0.0.1"),
        "{message}"
    );
    assert_eq!(backend.state.calls.get(), 0);
    proxy.running.shutdown().await;
}
