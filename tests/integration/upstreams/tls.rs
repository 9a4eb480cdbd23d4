//! TLS and mTLS to backends that require client certificates (rcgen certificates), with the
//! tonic backend and the grpcio one.

use std::time::Duration;

use tonic::Code;

use super::{config, Caller};
use crate::support::backend::spawn_backend_with;
use crate::support::grpcio::{self, GrpcioBackend};
use crate::support::tls::{mtls_acceptor, test_pki, TestPki};
use crate::support::*;

fn tls_line(pki: &TestPki, client_cert: bool) -> String {
    let mut line = format!(
        "tls: {{ ca: \"{}\", server_name: localhost",
        pki.ca_path.display()
    );
    if client_cert {
        line.push_str(&format!(
            ", cert: \"{}\", key: \"{}\"",
            pki.client.cert_path.display(),
            pki.client.key_path.display()
        ));
    }
    line.push_str(" }");
    line
}

/// `https://localhost:port` of a backend listening on 127.0.0.1.
fn https(addr: std::net::SocketAddr) -> String {
    format!("https://127.0.0.1:{}", addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_to_a_tonic_backend_that_requires_client_certificates() {
    let pki = test_pki("mtls-tonic");
    let backend = spawn_backend_with(Some(mtls_acceptor(&pki))).await;
    let url = https(backend.addr);

    let with_cert = tls_line(&pki, true);
    let proxy = spawn_proxy_yaml(&config(&[&url], &[&with_cert], &[])).await;
    let mut caller = Caller::new(&proxy).await;
    let res = caller
        .unary(echo("over mTLS"), Duration::from_secs(5))
        .await;
    assert_eq!(res.unwrap().into_inner().message, "over mTLS");

    // Without a client certificate the backend refuses the handshake; the caller learns
    // only that (the certificate details go to the proxy's log).
    let without = tls_line(&pki, false);
    let proxy = spawn_proxy_yaml(&config(&[&url], &[&without], &[])).await;
    let mut caller = Caller::new(&proxy).await;
    let e = caller
        .unary(echo("hi"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message()
            .starts_with("upstream \"backend\" is unavailable:"),
        "{e:?}"
    );
    assert!(!e.message().contains("127.0.0.1"), "{e:?}");
    assert!(!e.message().to_lowercase().contains("certificate"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_to_a_grpcio_backend_that_requires_client_certificates() {
    if !grpcio::available() {
        return;
    }
    let pki = test_pki("mtls-grpcio");
    let python = GrpcioBackend::spawn(&[
        "--tls-cert",
        pki.server.cert_path.to_str().unwrap(),
        "--tls-key",
        pki.server.key_path.to_str().unwrap(),
        "--client-ca",
        pki.ca_path.to_str().unwrap(),
    ])
    .await;
    let url = https(python.addr);
    let with_cert = tls_line(&pki, true);
    let proxy = spawn_proxy_yaml(&config(&[&url], &[&with_cert], &[])).await;
    let mut caller = Caller::new(&proxy).await;
    let res = caller
        .unary(echo("over mTLS"), Duration::from_secs(10))
        .await;
    assert_eq!(res.unwrap().into_inner().message, "over mTLS");

    let without = tls_line(&pki, false);
    let proxy = spawn_proxy_yaml(&config(&[&url], &[&without], &[])).await;
    let mut caller = Caller::new(&proxy).await;
    let e = caller
        .unary(echo("hi"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}
