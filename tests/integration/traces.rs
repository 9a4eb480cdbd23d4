//! W3C trace context through the proxy, and the proxy's span exported over OTLP to a trace
//! receiver started in the test (a tonic server of opentelemetry-proto's TraceService).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;

use crate::support::*;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn caller_traceparent() -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
}

/// (trace id, parent id, flags) of the `traceparent` the backend received; none without one.
fn upstream_traceparent(backend: &Backend) -> Option<(String, String, String)> {
    let headers = backend.state.last_headers();
    let v = headers.get("traceparent")?.to_str().unwrap().to_owned();
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!((parts.len(), parts[0]), (4, "00"), "{v}");
    Some((
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    ))
}

#[tokio::test]
async fn a_caller_trace_continues_with_the_proxy_span() {
    let backend = spawn_backend().await;
    // No tracing section: callers' traces are still continued.
    let proxy = spawn_proxy_yaml(&one_upstream_yaml(&backend.url, &[], &[])).await;
    let tp = caller_traceparent();
    let headers = [("traceparent", tp.as_str()), ("tracestate", "vendor=abc")];
    for http in HTTP_VERSIONS {
        web_call(
            proxy.addr,
            http,
            GRPC_WEB_PROTO,
            UNARY,
            &echo("x"),
            &headers,
        )
        .await
        .assert_ok();
        let (trace, parent, flags) = upstream_traceparent(&backend).unwrap();
        assert_eq!(trace, CALLER_TRACE);
        assert_ne!(
            parent, CALLER_SPAN,
            "the proxy's span is the upstream's parent"
        );
        assert_eq!(parent.len(), 16);
        assert_eq!(flags, "01");
        assert_eq!(backend.state.last_headers()["tracestate"], "vendor=abc");
    }
    // Without a caller trace and without tracing configured, nothing is added.
    web_call(proxy.addr, Http::H1, GRPC_WEB_PROTO, UNARY, &echo("x"), &[])
        .await
        .assert_ok();
    assert_eq!(upstream_traceparent(&backend), None);
}

#[tokio::test]
async fn with_tracing_configured_a_call_without_a_trace_starts_one() {
    let backend = spawn_backend().await;
    let yaml = format!(
        "tracing: {{ sample_ratio: 1.0 }}\n{}",
        one_upstream_yaml(&backend.url, &[], &[])
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        web_call(proxy.addr, Http::H1, GRPC_WEB_PROTO, UNARY, &echo("x"), &[])
            .await
            .assert_ok();
        let (trace, parent, flags) = upstream_traceparent(&backend).unwrap();
        assert_eq!((trace.len(), flags.as_str()), (32, "01"));
        assert_ne!(trace, "0".repeat(32));
        seen.push((trace, parent));
    }
    assert_ne!(seen[0], seen[1], "each call starts its own trace");
}

/// An OTLP/gRPC trace receiver: every export request goes to the channel.
struct Receiver(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn spawn_receiver() -> (
    String,
    mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
    AbortOnDrop,
) {
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(tx)))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    (format!("http://{addr}"), rx, AbortOnDrop(task))
}

/// The next exported span (with its resource's `service.name`).
async fn next_span(rx: &mut mpsc::UnboundedReceiver<ExportTraceServiceRequest>) -> (String, Span) {
    loop {
        let req = tokio::time::timeout(Duration::from_secs(15), rx.recv())
            .await
            .expect("no span exported within 15 s")
            .expect("receiver gone");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            if let Some(span) = rs.scope_spans.into_iter().flat_map(|s| s.spans).next() {
                return (service, span);
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(|v| format!("{:?}", v.value))
}

#[tokio::test]
async fn sampled_spans_are_exported_over_otlp() {
    let backend = spawn_backend().await;
    let (endpoint, mut spans, _receiver) = spawn_receiver().await;
    let yaml = format!(
        "tracing:\n  otlp: {{ endpoint: \"{endpoint}\" }}\n  sample_ratio: 1.0\n  service_name: edge-proxy\n{}",
        one_upstream_yaml(&backend.url, &[], &[])
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let tp = caller_traceparent();
    web_call(
        proxy.addr,
        Http::H1,
        GRPC_WEB_PROTO,
        UNARY,
        &echo("x"),
        &[("traceparent", tp.as_str()), ("x-request-id", "trace-me")],
    )
    .await
    .assert_ok();
    let (_, upstream_parent, _) = upstream_traceparent(&backend).unwrap();

    let (service, span) = next_span(&mut spans).await;
    assert!(service.contains("edge-proxy"), "{service}");
    assert_eq!(hex(&span.trace_id), CALLER_TRACE);
    assert_eq!(hex(&span.parent_span_id), CALLER_SPAN);
    assert_eq!(
        hex(&span.span_id),
        upstream_parent,
        "the upstream's parent is the exported span"
    );
    assert_eq!(span.name, "switchboard.testing.v1.TestService/Unary");
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    for (key, want) in [
        ("rpc.service", "switchboard.testing.v1.TestService"),
        ("rpc.method", "Unary"),
        ("switchboard.protocol", "grpc_web"),
        ("switchboard.upstream", "backend"),
        ("switchboard.request_id", "trace-me"),
    ] {
        let got = attr(&span, key).unwrap_or_else(|| panic!("no {key}: {span:?}"));
        assert!(got.contains(want), "{key}: {got}");
    }
    assert!(attr(&span, "rpc.grpc.status_code").unwrap().contains('0'));

    // A new trace (no caller's), sampled at 1.0, is exported as a root span.
    web_call(proxy.addr, Http::H1, GRPC_WEB_PROTO, UNARY, &echo("x"), &[])
        .await
        .assert_ok();
    let (trace, parent, _) = upstream_traceparent(&backend).unwrap();
    let (_, root) = next_span(&mut spans).await;
    assert_eq!((hex(&root.trace_id), hex(&root.span_id)), (trace, parent));
    assert!(root.parent_span_id.is_empty(), "{root:?}");
}

#[tokio::test]
async fn unsampled_caller_traces_are_followed_and_not_exported() {
    let backend = spawn_backend().await;
    let (endpoint, mut spans, _receiver) = spawn_receiver().await;
    let yaml = format!(
        "tracing: {{ otlp: {{ endpoint: \"{endpoint}\" }}, sample_ratio: 1.0 }}\n{}",
        one_upstream_yaml(&backend.url, &[], &[])
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let unsampled = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-00");
    web_call(
        proxy.addr,
        Http::H1,
        GRPC_WEB_PROTO,
        UNARY,
        &echo("x"),
        &[("traceparent", unsampled.as_str())],
    )
    .await
    .assert_ok();
    let (trace, _, flags) = upstream_traceparent(&backend).unwrap();
    assert_eq!((trace.as_str(), flags.as_str()), (CALLER_TRACE, "00"));
    // A sampled call after it is the first (and only) span exported.
    let tp = caller_traceparent();
    web_call(
        proxy.addr,
        Http::H1,
        GRPC_WEB_PROTO,
        UNARY,
        &echo("y"),
        &[("traceparent", tp.as_str())],
    )
    .await
    .assert_ok();
    let (_, parent, _) = upstream_traceparent(&backend).unwrap();
    let (_, span) = next_span(&mut spans).await;
    assert_eq!(hex(&span.span_id), parent);
}
