//! What the backend learns about the caller (`X-Forwarded-For`, `X-Forwarded-Proto`,
//! following `trusted_proxies`), and what callers never learn about the backend: no error
//! they get names an address or a port.

use super::*;

async fn proxy(backend: &Backend, top: &str) -> Proxy {
    spawn_proxy_yaml(&format!(
        "listeners: [{{ address: 127.0.0.1:0 }}]\n{top}\nupstreams: [{{ name: backend, endpoints: [\"{}\"] }}]\nroutes: [{{ match: {{ prefix: / }}, upstream: backend }}]\n",
        backend.url
    ))
    .await
}

#[tokio::test]
async fn forwarding_headers_follow_trusted_proxies() {
    let backend = spawn_backend().await;
    let spoofed = [
        ("x-forwarded-for", "198.51.100.1"),
        ("x-real-ip", "198.51.100.2"),
        ("forwarded", "for=198.51.100.3"),
        ("x-forwarded-proto", "https"),
    ];
    let untrusted = proxy(&backend, "trusted_proxies: [10.0.0.0/8]").await;
    for http in HTTP_VERSIONS {
        web_call(untrusted.addr, http, GRPC_WEB, UNARY, &echo("x"), &spoofed)
            .await
            .assert_ok();
        let h = backend.state.last_headers();
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{http:?}");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(!h.contains_key("x-real-ip") && !h.contains_key("forwarded"));
    }
    untrusted.running.shutdown().await;

    let trusted = proxy(&backend, "trusted_proxies: [127.0.0.1/32, \"::1/128\"]").await;
    web_unary(trusted.addr, UNARY, &echo("x"), &spoofed)
        .await
        .assert_ok();
    let h = backend.state.last_headers();
    assert_eq!(h["x-forwarded-for"], "198.51.100.1, 127.0.0.1");
    assert_eq!(
        h["x-forwarded-proto"], "https",
        "the trusted proxy's scheme"
    );
    assert_eq!(h["x-real-ip"], "198.51.100.2");
    trusted.running.shutdown().await;
}

#[tokio::test]
async fn tls_listeners_say_https() {
    let backend = spawn_backend().await;
    let cert = crate::support::tls::test_cert("forwarded-tls");
    let yaml = format!(
        "listeners: [{{ address: 127.0.0.1:0, tls: {{ cert: \"{}\", key: \"{}\" }} }}]\nupstreams: [{{ name: backend, endpoints: [\"{}\"] }}]\nroutes: [{{ match: {{ prefix: / }}, upstream: backend }}]\n",
        cert.cert_path.display(),
        cert.key_path.display(),
        backend.url
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let tls = crate::support::tls::connect(proxy.addr, &cert, b"h2").await;
    let mut client = Client::over(
        tls,
        format!("localhost:{}", proxy.addr.port()),
        "https",
        Http::H2,
    )
    .await;
    client
        .send(web_request(UNARY, GRPC_WEB, &frame(&echo("x"))))
        .await
        .web()
        .await
        .assert_ok();
    assert_eq!(backend.state.last_headers()["x-forwarded-proto"], "https");
    proxy.running.shutdown().await;
}

/// Asserts `text` names neither the address nor the port of `addr`.
fn assert_no_address(text: &str, addr: SocketAddr, case: &str) {
    assert!(!text.contains(&addr.to_string()), "{case}: {text}");
    assert!(!text.contains(&addr.ip().to_string()), "{case}: {text}");
    assert!(!text.contains(&addr.port().to_string()), "{case}: {text}");
}

#[tokio::test]
async fn errors_name_no_address_or_port_in_quick_mode_too() {
    // Nothing listens there.
    let closed = closed_port();
    let quick = spawn_proxy(&format!("http://{closed}")).await;
    let yaml = spawn_proxy_yaml(&format!(
        "listeners: [{{ address: 127.0.0.1:0 }}]\nupstreams: [{{ name: greeter, endpoints: [\"http://{closed}\"] }}]\nroutes: [{{ match: {{ prefix: / }}, upstream: greeter }}]\n"
    ))
    .await;
    // A TLS backend whose certificate the proxy does not trust.
    let cert = crate::support::tls::test_cert("untrusted-backend");
    let tls_backend = crate::support::backend::spawn_backend_with(Some(
        crate::support::tls::acceptor(&cert, &[b"h2"]),
    ))
    .await;
    let untrusted = spawn_proxy(&format!("https://{}", tls_backend.addr)).await;
    for (name, proxy, target) in [
        ("quick", &quick, closed),
        ("config", &yaml, closed),
        ("tls", &untrusted, tls_backend.addr),
    ] {
        let web = web_unary(proxy.addr, UNARY, &echo("x"), &[]).await;
        assert_eq!(web.status(), Some(14), "{name}: {web:?}");
        assert_no_address(&web.message(), target, name);
        let c = connect_unary(proxy.addr, Http::H1, UNARY, &echo("x"), &[]).await;
        assert_eq!(c.code(), "unavailable", "{name}");
        assert_no_address(&String::from_utf8_lossy(&c.body), target, name);
        let grpc = {
            let mut client = Client::connect(proxy.addr, Http::H2).await;
            client
                .send(grpc_request(UNARY, &frame(&echo("x"))))
                .await
                .grpc()
                .await
        };
        for v in grpc.headers.values().chain(grpc.trailers.values()) {
            assert_no_address(v.to_str().unwrap_or(""), target, name);
        }
        if name == "quick" {
            assert!(web.message().contains("\"default\""), "{}", web.message());
        }
        if name == "tls" {
            assert!(web.message().contains("TLS"), "{}", web.message());
        }
    }
    for p in [quick, yaml, untrusted] {
        p.running.shutdown().await;
    }
}
