//! Native gRPC callers (tonic over h2c) through the proxy, and the test backend on its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::support::backend::spawn_backend_with;
use crate::support::pb::test_service_client::TestServiceClient;
use crate::support::*;

async fn client(url: &str) -> TestServiceClient<Channel> {
    guard(
        "connect tonic client",
        TestServiceClient::connect(url.to_owned()),
    )
    .await
    .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// A request carrying `x-header-a: 1` (echoed as a header), `x-trailer-b: 2` (echoed as a
/// trailer) and `x-custom: c` (reported in EchoResponse.metadata).
fn with_metadata<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let md = req.metadata_mut();
    md.insert("x-header-a", "1".parse().unwrap());
    md.insert("x-trailer-b", "2".parse().unwrap());
    md.insert("x-custom", "c".parse().unwrap());
    req
}

/// Checks the BadRequest detail the backend attaches.
fn assert_bad_request(status: &tonic::Status) {
    let bad = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest detail in {status:?}"));
    assert_eq!(bad.field_violations.len(), 1, "{bad:?}");
    assert_eq!(bad.field_violations[0].field, "message");
    assert_eq!(bad.field_violations[0].description, "must not be empty");
}

/// Opens a gated server stream at `url` (the backend or the proxy in front of it), reads
/// its first message, then drops it: the stream's reset must reach `backend` as a
/// cancellation, or the test fails with `failure`.
async fn assert_cancel_reaches(backend: &Backend, url: &str, failure: &str) {
    let mut c = client(url).await;
    let req = EchoRequest {
        count: 100,
        ..echo(GATED)
    };
    let mut stream = guard("server stream", c.server_stream(req))
        .await
        .unwrap()
        .into_inner();
    let first = guard("first message", stream.message()).await.unwrap();
    assert_eq!(first.unwrap().index, 0);
    // Dropping the stream resets it (RST_STREAM CANCEL) on its connection.
    drop(stream);
    assert!(
        backend
            .state
            .cancellations
            .reaches(1, Duration::from_secs(5))
            .await,
        "{failure}"
    );
}

#[tokio::test]
async fn backend_direct() {
    let backend = spawn_backend().await;
    let mut c = client(&backend.url).await;

    let res = c.unary(with_metadata(echo("hi"))).await.unwrap();
    assert_eq!(res.metadata().get("x-header-a").unwrap(), "1");
    assert_eq!(res.metadata().get("x-trailer-b").unwrap(), "2");
    assert_eq!(res.get_ref().message, "hi");
    assert_eq!(res.get_ref().metadata.get("x-custom").unwrap(), "c");

    let mut req = tonic::Request::new(echo("t"));
    req.set_timeout(Duration::from_secs(5));
    let res = c.unary(req).await.unwrap();
    assert!(!res.get_ref().grpc_timeout.is_empty());

    let err = c
        .unary(with_metadata(failing(
            Code::InvalidArgument,
            UNICODE_MESSAGE,
            true,
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), UNICODE_MESSAGE);
    assert_eq!(err.metadata().get("x-trailer-b").unwrap(), "2");
    assert_bad_request(&err);

    let mut stream = c
        .server_stream(EchoRequest {
            count: 3,
            ..echo("s")
        })
        .await
        .unwrap()
        .into_inner();
    let mut indexes = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        indexes.push(m.index);
    }
    assert_eq!(indexes, [0, 1, 2]);
    assert_eq!(backend.state.sent.get(), 3);
    assert_eq!(backend.state.cancellations.get(), 0);
    assert_eq!(backend.state.connections.get(), 1);
}

#[tokio::test]
async fn backend_direct_records_stream_cancellation() {
    let backend = spawn_backend().await;
    assert_cancel_reaches(
        &backend,
        &backend.url,
        "the backend did not see the cancellation",
    )
    .await;
}

#[tokio::test]
async fn native_unary_through_proxy_carries_metadata() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let mut c = client(&proxy.url).await;
    let res = guard("unary", c.unary(with_metadata(echo("hello"))))
        .await
        .unwrap();
    assert_eq!(res.get_ref().message, "hello");
    assert_eq!(res.get_ref().metadata.get("x-custom").unwrap(), "c");
    assert_eq!(res.metadata().get("x-header-a").unwrap(), "1");
    // tonic merges unary trailers into the response metadata.
    assert_eq!(res.metadata().get("x-trailer-b").unwrap(), "2");
}

#[tokio::test]
async fn native_server_stream_through_proxy() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let mut c = client(&proxy.url).await;
    let req = with_metadata(EchoRequest {
        count: 3,
        ..echo("s")
    });
    let res = guard("server stream", c.server_stream(req)).await.unwrap();
    assert_eq!(res.metadata().get("x-header-a").unwrap(), "1");
    let mut stream = res.into_inner();
    let mut indexes = Vec::new();
    while let Some(m) = guard("next message", stream.message()).await.unwrap() {
        assert_eq!(m.message, "s");
        indexes.push(m.index);
    }
    assert_eq!(indexes, [0, 1, 2]);
    let trailers = stream.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers.get("x-trailer-b").unwrap(), "2");
}

#[tokio::test]
async fn native_client_stream_through_proxy() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let mut c = client(&proxy.url).await;
    let msgs: Vec<EchoRequest> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, m)| EchoRequest {
            payload: vec![b'0' + i as u8],
            ..echo(m)
        })
        .collect();
    let res = guard("client stream", c.client_stream(tokio_stream::iter(msgs)))
        .await
        .unwrap();
    assert_eq!(res.get_ref().message, "a,b,c");
    assert_eq!(res.get_ref().payload, b"012");
}

#[tokio::test]
async fn native_bidi_through_proxy_interleaves() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let mut c = client(&proxy.url).await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(echo("one")).await.unwrap();
    let mut responses = guard("bidi", c.bidi(ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    // Each answer arrives before the next request is sent: the call is truly interactive.
    for (i, word) in ["one", "two", "three"].iter().enumerate() {
        if i > 0 {
            tx.send(echo(word)).await.unwrap();
        }
        let m = guard("bidi answer", responses.message())
            .await
            .unwrap()
            .expect("an answer");
        assert_eq!((m.message.as_str(), m.index), (*word, i as u32));
    }
    drop(tx);
    assert!(guard("bidi end", responses.message())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn native_error_code_message_details_and_trailers_pass_through() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let mut c = client(&proxy.url).await;
    let err = guard(
        "failing unary",
        c.unary(with_metadata(failing(
            Code::InvalidArgument,
            UNICODE_MESSAGE,
            true,
        ))),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(err.message(), UNICODE_MESSAGE);
    assert_eq!(err.metadata().get("x-trailer-b").unwrap(), "2");
    assert_bad_request(&err);
}

#[tokio::test]
async fn native_stream_error_after_messages() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let mut c = client(&proxy.url).await;
    let req = EchoRequest {
        count: 2,
        ..failing(Code::Aborted, "stop", false)
    };
    let mut stream = guard("server stream", c.server_stream(req))
        .await
        .unwrap()
        .into_inner();
    for i in 0..2 {
        let m = guard("message", stream.message()).await.unwrap().unwrap();
        assert_eq!(m.index, i);
    }
    let err = guard("error", stream.message()).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Aborted, "stop"));
}

#[tokio::test]
async fn native_client_deadline_is_enforced_by_the_proxy() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    // A raw HTTP/2 client: tonic's channel would enforce the deadline itself, and the
    // backend does not enforce grpc-timeout, so only the proxy can end this call.
    let msg = EchoRequest {
        delay_ms: 3000,
        ..echo("slow")
    };
    let mut req = grpc_request(UNARY, &frame(&msg));
    req.headers_mut()
        .insert("grpc-timeout", "200m".parse().unwrap());
    let mut c = Client::connect(proxy.addr, Http::H2).await;
    let reply = c.send(req).await.grpc().await;
    assert_eq!(reply.code(), Code::DeadlineExceeded, "{reply:#?}");
    assert!(reply.messages.is_empty());
}

#[tokio::test]
async fn native_stream_cancel_reaches_the_backend() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    assert_cancel_reaches(
        &backend,
        &proxy.url,
        "the proxy did not cancel the upstream stream",
    )
    .await;
}

#[tokio::test]
async fn native_call_without_route_is_unimplemented() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&unary_only_yaml(&backend.url)).await;
    let mut c = client(&proxy.url).await;
    assert_eq!(
        c.unary(echo("routed")).await.unwrap().get_ref().message,
        "routed"
    );
    let err = guard("unrouted", c.lookup(echo("x"))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert_eq!(
        backend.state.calls.get(),
        1,
        "the unrouted call reached the backend"
    );
}

#[tokio::test]
async fn https_upstream_with_configured_ca() {
    let cert = tls::test_cert("https-upstream");
    let backend = spawn_backend_with(Some(tls::acceptor(&cert, &[b"h2"]))).await;
    assert!(backend.url.starts_with("https://"));
    let yaml = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
upstreams:
  - name: secure
    endpoints: ["{}"]
    tls: {{ ca: "{}", server_name: localhost }}
routes:
  - match: {{ prefix: / }}
    upstream: secure
"#,
        backend.url,
        cert.cert_path.display()
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let mut c = client(&proxy.url).await;
    let res = guard("unary over TLS upstream", c.unary(echo("tls")))
        .await
        .unwrap();
    assert_eq!(res.get_ref().message, "tls");
    let web = web_call(
        proxy.addr,
        Http::H1,
        GRPC_WEB_PROTO,
        UNARY,
        &echo("web"),
        &[],
    )
    .await;
    assert_eq!(web.ok_response().message, "web");
}
