//! Sending a call again: transparently (once, elsewhere) when no endpoint processed it, and
//! by a route's retry policy for unary calls whose answer has not reached the caller.

use std::time::Duration;

use http::Method;
use tonic::Code;

use super::{config, Caller};
use crate::support::refusing::{spawn_refusing, Misbehaviour, Refusing};
use crate::support::*;

/// An endpoint that misbehaves `how`, a good one, and a proxy over both with outlier detection
/// off: every call that lands on the refusing endpoint is retried.
async fn refusing_then_good(how: Misbehaviour) -> (Refusing, Backend, Proxy) {
    let refusing = spawn_refusing(how).await;
    let good = spawn_backend().await;
    let yaml = config(
        &[&refusing.url, &good.url],
        &["outlier: { enabled: false }"],
        &[],
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    (refusing, good, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_streams_are_sent_to_another_endpoint() {
    for how in [Misbehaviour::RefuseStreams, Misbehaviour::GoAwayFirst] {
        let (refusing, good, proxy) = refusing_then_good(how).await;
        let mut caller = Caller::new(&proxy).await;
        for _ in 0..20 {
            let res = caller.unary(echo("hi"), Duration::from_secs(5)).await;
            assert!(res.is_ok(), "{how:?}: {res:?}");
        }
        assert!(
            refusing.requests.get() >= 5,
            "{how:?}: {}",
            refusing.requests.get()
        );
        assert_eq!(good.state.calls.get(), 20, "{how:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_still_arriving_is_sent_elsewhere_whole() {
    // The body's rest comes after the call was sent to an endpoint that refused it: what the
    // proxy had piped there, and the rest, go to the other endpoint.
    for how in [Misbehaviour::RefuseStreams, Misbehaviour::GoAwayFirst] {
        let (refusing, good, proxy) = refusing_then_good(how).await;
        for i in 0..6 {
            let mut client = Client::connect(proxy.addr, Http::H1).await;
            let (tx, body) = streaming_body();
            let req = request(
                Method::POST,
                UNARY,
                Some(GRPC_WEB_PROTO),
                &[("x-grpc-web", "1")],
                body,
            );
            let call = tokio::spawn(async move { client.send(req).await.web().await });
            // The message in two chunks, the second after the upstream refused the call.
            let whole = frame(&echo(&format!("piece {i}")));
            tx.send(whole.slice(..4)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(whole.slice(4..)).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(tx);
            let reply = guard("a call whose body ends late", call).await.unwrap();
            assert_eq!(reply.ok_response().message, format!("piece {i}"), "{how:?}");
        }
        assert!(refusing.requests.get() >= 2, "{how:?}");
        assert_eq!(good.state.calls.get(), 6, "{how:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_refusing_endpoint_is_tried_once_more_then_fails() {
    let refusing = spawn_refusing(Misbehaviour::RefuseStreams).await;
    let proxy = spawn_proxy_yaml(&config(&[&refusing.url], &[], &[])).await;
    let mut caller = Caller::new(&proxy).await;
    let e = caller
        .unary(echo("hi"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("upstream \"backend\""), "{e:?}");
    // The first attempt and one transparent retry.
    assert_eq!(refusing.requests.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_retries_unary_calls_on_listed_codes() {
    let unavailable = spawn_refusing(Misbehaviour::TrailersOnly(14)).await;
    let good = spawn_backend().await;
    let endpoints = [unavailable.url.as_str(), good.url.as_str()];
    let upstream = ["outlier: { enabled: false }"];

    // Without a policy, the calls that land on the failing endpoint fail.
    let proxy = spawn_proxy_yaml(&config(&endpoints, &upstream, &[])).await;
    let mut caller = Caller::new(&proxy).await;
    let mut failed = 0;
    for _ in 0..20 {
        if let Err(e) = caller.unary(echo("hi"), Duration::from_secs(5)).await {
            assert_eq!(e.code(), Code::Unavailable);
            failed += 1;
        }
    }
    assert_eq!(failed, 10);

    // With one, they are sent again (elsewhere) and succeed.
    let retry = ["retry: { on: [unavailable], attempts: 3, backoff: 5ms }"];
    let proxy = spawn_proxy_yaml(&config(&endpoints, &upstream, &retry)).await;
    let mut caller = Caller::new(&proxy).await;
    let before = unavailable.requests.get();
    for _ in 0..20 {
        let res = caller.unary(echo("hi"), Duration::from_secs(5)).await;
        assert!(res.is_ok(), "{res:?}");
    }
    assert!(unavailable.requests.get() > before);

    // A code the route does not list is not retried.
    let internal = spawn_refusing(Misbehaviour::TrailersOnly(13)).await;
    let proxy = spawn_proxy_yaml(&config(&[&internal.url], &upstream, &retry)).await;
    let mut caller = Caller::new(&proxy).await;
    let e = caller
        .unary(echo("hi"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert_eq!(internal.requests.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_never_more_than_double_the_load() {
    let unavailable = spawn_refusing(Misbehaviour::TrailersOnly(14)).await;
    let retry = ["retry: { on: [unavailable], attempts: 5, backoff: 1ms }"];
    let proxy = spawn_proxy_yaml(&config(
        &[&unavailable.url],
        &["outlier: { enabled: false }"],
        &retry,
    ))
    .await;
    let mut caller = Caller::new(&proxy).await;
    let calls = 100;
    for _ in 0..calls {
        let e = caller
            .unary(echo("hi"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
    }
    let attempts = unavailable.requests.get();
    // Five attempts each would be 500; the budget allows one retry per call plus a small
    // reserve.
    assert!(
        attempts <= 2 * calls + 10,
        "{attempts} attempts for {calls} calls"
    );
    assert!(attempts > calls, "no call was retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_request_is_not_retried() {
    use crate::support::pb::test_service_client::TestServiceClient;
    let unavailable = spawn_refusing(Misbehaviour::TrailersOnly(14)).await;
    let retry = ["retry: { on: [unavailable], attempts: 3, backoff: 5ms }"];
    let proxy = spawn_proxy_yaml(&config(
        &[&unavailable.url],
        &["outlier: { enabled: false }"],
        &retry,
    ))
    .await;
    let mut client = TestServiceClient::connect(proxy.url.clone()).await.unwrap();
    // The request body is still arriving when the call goes upstream: it cannot be sent again.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(echo("first")).await.unwrap();
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let call = tokio::spawn(async move { client.client_stream(stream).await });
    let e = guard("the client stream", call).await.unwrap().unwrap_err();
    drop(tx);
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(unavailable.requests.get(), 1);
}
