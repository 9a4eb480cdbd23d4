//! A fake upstream that speaks HTTP/2 but not gRPC, like a load balancer's error page.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::AbortOnDrop;

/// The HTML body every answer carries.
pub(crate) const FAKE_BODY: &str = "<html>bad gateway from lb</html>";

/// Request header that picks the HTTP status of the answer (default 502).
pub(crate) const FAKE_STATUS_HEADER: &str = "x-fake-status";

/// A running fake upstream.
#[derive(Debug)]
pub(crate) struct FakeUpstream {
    pub(crate) addr: SocketAddr,
    /// `http://127.0.0.1:port`.
    pub(crate) url: String,
    pub(crate) task: AbortOnDrop,
}

/// Starts an h2c server that answers every request with an HTML error page: status 502, or
/// the status named by the `x-fake-status` request header.
pub(crate) async fn spawn_non_grpc_upstream() -> FakeUpstream {
    let listener = TcpListener::bind(super::loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service_fn(answer))
                    .await;
            });
        }
    });
    FakeUpstream {
        addr,
        url: format!("http://{addr}"),
        task: AbortOnDrop(task),
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = req
        .headers()
        .get(FAKE_STATUS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|v| StatusCode::from_u16(v).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut res = Response::new(Full::new(Bytes::from_static(FAKE_BODY.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut()
        .insert("content-type", "text/html".parse().unwrap());
    Ok(res)
}
