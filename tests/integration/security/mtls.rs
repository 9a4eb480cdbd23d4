//! mTLS on listeners: client certificates required or optional, verified against
//! `client_ca`; the verified identity goes upstream in `identity_header`, which callers can
//! never set themselves; CAs are re-read on reload.

use std::net::SocketAddr;
use std::path::Path;

use switchboard::config::Config;

use super::*;
use crate::support::pki::{self, Issued, TestCa};

const FORGED: &str = "Hash=00;Subject=\"CN=admin\"";

fn yaml(dir: &Path, ca: &Path, server: &Issued, backend: &str) -> std::path::PathBuf {
    let (cert, key) = (server.cert_path.display(), server.key_path.display());
    let ca = ca.display();
    let text = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
    name: required
    tls: {{ cert: "{cert}", key: "{key}", client_ca: "{ca}", client_auth: required, identity_header: x-client-cert }}
  - address: 127.0.0.1:0
    name: optional
    tls: {{ cert: "{cert}", key: "{key}", client_ca: "{ca}", client_auth: optional, identity_header: x-client-cert }}
  - address: 127.0.0.1:0
    name: plain
upstreams:
  - name: backend
    endpoints: ["{backend}"]
routes:
  - match: {{ prefix: / }}
    upstream: backend
"#
    );
    write_file(dir, "mtls.yaml", &text)
}

/// A gRPC-Web call over TLS (presenting `client`) carrying a forged identity header; returns
/// the identity header values the backend received.
async fn call_with(addr: SocketAddr, ca: &TestCa, client: Option<&Issued>) -> Vec<String> {
    let tls = pki::connect(addr, ca, client, b"h2").await.unwrap();
    let mut c = Client::over(tls, format!("localhost:{}", addr.port()), "https", Http::H2).await;
    let mut req = web_request(UNARY, GRPC_WEB, &frame(&echo("hi")));
    req.headers_mut()
        .insert("x-client-cert", FORGED.parse().unwrap());
    let reply = c.send(req).await.web().await;
    reply.assert_ok();
    let r = reply.ok_response();
    r.metadata
        .get("x-client-cert")
        .map(|v| vec![v.clone()])
        .unwrap_or_default()
}

#[tokio::test]
async fn client_certificates_required_optional_and_forged_identities() {
    let dir = temp_dir("mtls");
    let ca = TestCa::new(&dir, "clients");
    let other_ca = TestCa::new(&dir, "other");
    let server = ca.server(&dir);
    let alice = ca.client(&dir, "alice", false);
    let expired = ca.client(&dir, "old", true);
    let mallory = other_ca.client(&dir, "mallory", false);
    let backend = spawn_backend().await;
    let path = yaml(&dir, &ca.path, &server, &backend.url);
    let proxy = spawn_proxy_config(Config::load(&path).unwrap()).await;
    let addrs = proxy.running.addrs().to_vec();
    let (required, optional, plain) = (addrs[0], addrs[1], addrs[2]);

    // Required: a valid certificate passes, and its identity (not the forged one) goes up.
    let ids = call_with(required, &ca, Some(&alice)).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = &ids[0];
    assert!(id.contains("Subject=\""), "{id}");
    assert!(id.contains("CN=alice"), "{id}");
    assert!(id.contains("DNS=alice.clients.test"), "{id}");
    assert!(id.contains("URI=spiffe://tests/alice"), "{id}");
    assert!(!id.contains("admin"), "{id}");
    // No certificate, one from another CA, an expired one: refused in the handshake.
    assert!(pki::refused(required, &ca, None).await, "no certificate");
    assert!(
        pki::refused(required, &ca, Some(&mallory)).await,
        "wrong CA"
    );
    assert!(pki::refused(required, &ca, Some(&expired)).await, "expired");

    // Optional: no certificate is served without an identity; a forged one never passes.
    assert_eq!(call_with(optional, &ca, None).await, Vec::<String>::new());
    let ids = call_with(optional, &ca, Some(&alice)).await;
    assert!(ids[0].contains("CN=alice"), "{ids:?}");
    assert!(
        pki::refused(optional, &ca, Some(&mallory)).await,
        "a bad certificate is still refused"
    );
    assert!(pki::refused(optional, &ca, Some(&expired)).await);

    // A listener without TLS strips the header too.
    let reply = web_unary(plain, UNARY, &echo("hi"), &[("x-client-cert", FORGED)]).await;
    let r = reply.ok_response();
    assert!(
        !r.metadata.contains_key("x-client-cert"),
        "{:?}",
        r.metadata
    );
    assert!(!backend.state.last_headers().contains_key("x-client-cert"));
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn client_cas_are_read_again_on_reload() {
    let dir = temp_dir("mtls-reload");
    let first = TestCa::new(&dir, "first");
    let second = TestCa::new(&dir, "second");
    let server = first.server(&dir);
    let alice = first.client(&dir, "alice", false);
    let bob = second.client(&dir, "bob", false);
    let ca_file = dir.join("client-ca.pem");
    std::fs::copy(&first.path, &ca_file).unwrap();
    let backend = spawn_backend().await;
    let path = yaml(&dir, &ca_file, &server, &backend.url);
    let proxy = spawn_proxy_config(Config::load(&path).unwrap()).await;
    let required = proxy.running.addrs()[0];
    assert!(call_with(required, &first, Some(&alice)).await[0].contains("CN=alice"));
    assert!(pki::refused(required, &first, Some(&bob)).await);

    std::fs::copy(&second.path, &ca_file).unwrap();
    proxy.running.control().reload().await.unwrap();
    assert!(
        pki::refused(required, &first, Some(&alice)).await,
        "the old CA is gone"
    );
    assert!(call_with(required, &first, Some(&bob)).await[0].contains("CN=bob"));
    proxy.running.shutdown().await;
}
