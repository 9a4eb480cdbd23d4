//! Errors callers see name an upstream by its config name only: never an address, a port, a
//! DNS name or a certificate detail (those go to the log with the request id).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tonic::Code;

use crate::support::backend::spawn_backend_with;
use crate::support::*;

/// Calls through a proxy whose one upstream (`default`) is `url`, in every gRPC-Web mode and
/// HTTP version, and checks the caller learns the name and none of `secrets`.
async fn assert_private(url: &str, secrets: &[&str]) {
    let proxy = spawn_proxy(url).await;
    for http in HTTP_VERSIONS {
        for ct in [GRPC_WEB_PROTO, GRPC_WEB_TEXT] {
            let reply = web_call(proxy.addr, http, ct, UNARY, &echo("x"), &[]).await;
            assert_eq!(reply.code(), Code::Unavailable, "{url} {ct}");
            let message = reply.message();
            assert!(message.contains("\"default\""), "{url}: {message}");
            for secret in secrets {
                assert!(
                    !message.contains(secret),
                    "{url}: {secret:?} in {message:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_refused_connection_does_not_show_the_address() {
    let addr = closed_port();
    let port = addr.port().to_string();
    assert_private(&format!("http://{addr}"), &["127.0.0.1", &port]).await;
}

#[tokio::test]
async fn an_unknown_dns_name_is_not_shown() {
    assert_private(
        "http://backend.internal.invalid:50051",
        &["backend.internal.invalid", "50051", "lookup"],
    )
    .await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_not_described() {
    let cert = tls::test_cert("private-tls");
    let backend = spawn_backend_with(Some(tls::acceptor(&cert, &[b"h2"]))).await;
    let port = backend.addr.port().to_string();
    assert_private(
        &backend.url,
        &[
            "127.0.0.1",
            &port,
            "certificate",
            "Certificate",
            "UnknownIssuer",
        ],
    )
    .await;
}
